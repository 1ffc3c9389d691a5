"""Tests of examples/fashion_autoencoder.py: the models, the loss, the denoising
corruption, a short training run, and the command line.

The example is a script, not part of the package, so it is loaded from its path.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minivae
from minivae import backend
from minivae.nn import Module, Sequential
from minivae.optim import Adam
from minivae.train import fit

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "fashion_autoencoder.py"
_spec = importlib.util.spec_from_file_location("fashion_autoencoder", SCRIPT)
fa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fa)


def images(n, seed=0):
    """n random uint8 images shaped like Fashion-MNIST's (N, 28, 28, 1)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def run_script(*args, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MPLBACKEND": "Agg", **(env or {})},
        timeout=300,
    )


# ---------------------------------------------------------------- the models


@pytest.mark.parametrize("variant", ["lecture", "strided"])
def test_autoencoder_shapes(variant):
    encoder, decoder = (
        fa.make_encoder(variant, latent_dim=3),
        fa.make_decoder(variant, latent_dim=3),
    )
    x = minivae.Tensor(backend.asarray(images(2) / np.float32(255)))
    code = encoder(x)
    assert code.shape == (2, 3)
    out = decoder(code)
    assert out.shape == (2, 28, 28, 1)
    assert float(out.numpy().min()) > 0 and float(out.numpy().max()) < 1  # sigmoid output


def test_lecture_parameter_counts_match_the_lectures_summaries():
    # the lecture's Keras summaries: encoder 36,586 parameters, decoder 37,089
    encoder, decoder = fa.make_encoder("lecture"), fa.make_decoder("lecture")
    encoder.build(fa.IMAGE_SHAPE)
    decoder.build((2,))
    assert (encoder.count_params(), decoder.count_params()) == (36_586, 37_089)


def test_strided_encoder_downsamples_with_strides_not_pooling():
    encoder = fa.make_encoder("strided")
    assert not any(type(layer).__name__ == "MaxPool2D" for layer in encoder.layers)
    assert [layer.strides for layer in encoder.layers[:2]] == [(2, 2), (2, 2)]


# ---------------------------------------------------------------- the loss


def test_binary_crossentropy_matches_torch(torch):
    rng = np.random.default_rng(1)
    target, probs = rng.uniform(0, 1, (4, 28, 28, 1)), rng.uniform(0.01, 0.99, (4, 28, 28, 1))
    ours = fa.binary_crossentropy(
        minivae.Tensor(target, dtype="float64"), minivae.Tensor(probs, dtype="float64")
    )
    theirs = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(probs), torch.from_numpy(target)
    )
    np.testing.assert_allclose(float(ours.numpy()), theirs.item(), rtol=1e-12)


def test_binary_crossentropy_gradient():
    rng = np.random.default_rng(2)
    target = minivae.Tensor(rng.uniform(0, 1, (3, 5)), dtype="float64")
    minivae.gradcheck(
        lambda p: fa.binary_crossentropy(target, p), [rng.uniform(0.05, 0.95, (3, 5))]
    )


def test_binary_crossentropy_clips_saturated_probabilities():
    # p = 0 for a white pixel and p = 1 for a black one: log(0) without the clip
    loss = fa.binary_crossentropy(
        minivae.Tensor([[1.0, 0.0]], dtype="float64"), minivae.Tensor([[0.0, 1.0]], dtype="float64")
    )
    np.testing.assert_allclose(float(loss.numpy()), -np.log(fa.EPSILON), rtol=1e-6)


# ---------------------------------------------------------------- the denoising corruption


def test_corrupt_gaussian_noise_has_the_asked_std_and_stays_in_range():
    clean = minivae.Tensor(backend.full((64, 28, 28, 1), 0.5, backend.dtype("float32")))
    noisy = fa.corrupt(clean, noise_std=0.1).numpy()
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() <= 1
    assert abs(np.std(noisy - 0.5) - 0.1) < 0.005  # 0.5 +- 0.1 is almost never clipped
    wide = fa.corrupt(clean, noise_std=2.0).numpy()
    assert wide.min() == 0 and wide.max() == 1  # large noise is clipped to the pixel range


def test_corrupt_masking_zeroes_the_asked_fraction():
    clean = minivae.Tensor(backend.full((64, 28, 28, 1), 0.5, backend.dtype("float32")))
    masked = fa.corrupt(clean, mask_fraction=0.25).numpy()
    assert set(np.unique(masked)) == {0.0, 0.5}
    assert abs(np.mean(masked == 0) - 0.25) < 0.01


class Recorder(Module):
    """Passes its input through, keeping a host copy of each one."""

    def __init__(self):
        self.seen = []

    def forward(self, x):
        self.seen.append(x.numpy().copy())
        return x


def test_denoising_corruption_is_fresh_every_epoch_and_targets_stay_clean():
    # one image, one batch per epoch: each epoch feeds the same clean image as the target
    x = images(1)
    recorder = Recorder()
    autoencoder = Sequential([recorder, fa.make_encoder("denoising"), fa.make_decoder("denoising")])
    autoencoder.build(fa.IMAGE_SHAPE)
    recorder.seen.clear()
    loss_fn = fa.make_loss_fn(autoencoder, "denoising", noise_std=0.3, mask_fraction=0.2)
    targets = []

    def recording_loss_fn(batch):
        parts = loss_fn(batch)
        targets.append(batch.numpy().copy())  # after the loss: corrupt() must not have changed it
        return parts

    fit(
        autoencoder,
        recording_loss_fn,
        Adam(autoencoder.parameters()),
        x,
        epochs=3,
        batch_size=1,
        verbose=False,
    )
    clean = x / np.float32(255)
    assert len(targets) == len(recorder.seen) == 3
    for target, noisy in zip(targets, recorder.seen):
        np.testing.assert_array_equal(target, clean)
        assert not np.array_equal(noisy, clean)
    assert not np.array_equal(recorder.seen[0], recorder.seen[1])
    assert not np.array_equal(recorder.seen[1], recorder.seen[2])


def test_other_variants_feed_the_clean_image():
    recorder = Recorder()
    autoencoder = Sequential([recorder, fa.make_encoder("lecture"), fa.make_decoder("lecture")])
    x = minivae.Tensor(backend.asarray(images(2) / np.float32(255)))
    fa.make_loss_fn(autoencoder, "lecture", noise_std=0.3, mask_fraction=0.2)(x)
    np.testing.assert_array_equal(recorder.seen[0], x.numpy())


# ---------------------------------------------------------------- a short run, in this process


@pytest.mark.parametrize("variant", ["lecture", "denoising"])
def test_short_run_lowers_the_loss_and_writes_its_files(variant, data_dir, tmp_path, backend):
    metrics = fa.main(
        [
            "--variant",
            variant,
            "--limit",
            "128",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--backend",
            backend.name,
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert metrics["test_loss"][1] < metrics["test_loss"][0]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["train_loss"] == metrics["train_loss"] and len(written["test_loss"]) == 2
    assert written["backend"] == backend.name and written["flags"]["variant"] == variant
    assert written["sec_per_epoch"] > 0
    pictures = {"encodings.png", "reconstructions.png"} | (
        {"denoising.png"} if variant == "denoising" else set()
    )
    # no temporary files left
    assert {p.name for p in tmp_path.iterdir()} == pictures | {"metrics.json"}
    for name in pictures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the command line


@pytest.mark.backends("numpy")  # a subprocess: the in-process fixture's backend does not reach it
def test_script_prints_both_summaries_and_the_epochs(data_dir, tmp_path):
    result = run_script("--limit", "64", "--epochs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "36,586" in result.stdout and "37,089" in result.stdout  # the two summaries' totals
    assert "Epoch 1/1" in result.stdout
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.backends("numpy")  # subprocesses
@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs must be positive"),
        (["--variant", "bogus"], "invalid choice"),
        (["--latent-dim", "1"], "--latent-dim must be at least 2"),
        (["--mask-fraction", "1.5"], "--mask-fraction"),
    ],
)
def test_bad_flags_give_one_line_and_no_traceback(args, message):
    result = run_script(*args)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.backends("numpy")  # a subprocess
@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cupy_without_cupy_gives_one_line():
    result = run_script("--backend", "cupy", "--limit", "64")
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "CuPy" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.backends("numpy")  # a subprocess
def test_missing_data_gives_one_line(tmp_path):
    result = run_script("--limit", "64", env={"MINIVAE_DATA": str(tmp_path / "nowhere")})
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "MINIVAE_DATA" in result.stderr and "Traceback" not in result.stderr
