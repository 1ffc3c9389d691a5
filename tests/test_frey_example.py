"""examples/frey.py end to end (short runs on a few faces), and the figures of minivae.plots."""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae import backend, plots, train
from minivae.datasets import load_frey_faces
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.tensor import no_grad
from minivae.vae import VAE

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "frey.py"
# 180 faces to train, 20 to validate
QUICK = ["--limit", "200", "--log-px-samples", "10", "--quiet"]
FIGURES = [
    "learning_curves.png",
    "samples.png",
    "reconstructions.png",
    "manifold.png",
    "latent.png",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The subprocess tests run the script, which picks its own backend (--backend), so running
# them once per test backend would only repeat them: they run under "numpy" only.
script = pytest.mark.backends("numpy")


def run_frey(*args, data_dir, **env):
    env = {**os.environ, "MINIVAE_DATA": data_dir, "MPLBACKEND": "Agg", **env}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=300
    )


def read_history(folder):
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in rows[0] if k != "seconds"}


@script
def test_short_run_writes_every_output_and_the_loss_falls(data_dir, tmp_path):
    done = run_frey(*QUICK, "--epochs", "4", "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # --quiet

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    history = read_history(tmp_path)
    assert history["epoch"] == [1, 2, 3, 4] and metrics["epochs"] == 4
    assert history["loss"][-1] < history["loss"][0] - 100  # nats per image
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert metrics["best_val_elbo"] == -min(history["val_loss"])
    for key in ("final_val_loss", "final_val_kl", "final_val_nll", "val_log_px", "sec_per_epoch"):
        assert math.isfinite(metrics[key]), key
    assert metrics["final_val_loss"] == pytest.approx(
        metrics["final_val_kl"] + metrics["final_val_nll"], abs=1e-3
    )
    assert metrics["backend"] == "numpy" and metrics["flags"]["epochs"] == 4
    # the lecture's recipe
    assert metrics["flags"]["latent_dim"] == 2 and metrics["flags"]["lr"] == 1e-3
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    assert (tmp_path / "checkpoint.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@script
def test_resumed_run_equals_uninterrupted_run(data_dir, tmp_path):
    flags = [*QUICK, "--patience", "10", "--seed", "3"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    for args in (
        ["--epochs", "4", "--out", str(whole)],
        ["--epochs", "2", "--out", str(part)],
        ["--epochs", "4", "--out", str(part), "--resume"],
    ):
        done = run_frey(*flags, *args, data_dir=data_dir)
        assert done.returncode == 0, done.stderr
    assert read_history(part) == read_history(whole)  # every metric of every epoch, bit for bit
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (whole, part))
    assert a["best_val_elbo"] == b["best_val_elbo"] and a["final_val_loss"] == b["final_val_loss"]
    changed = run_frey(
        *flags, "--epochs", "5", "--lr", "0.01", "--out", str(part), "--resume", data_dir=data_dir
    )
    assert changed.returncode != 0 and changed.stderr.count("\n") == 1
    assert "--resume: the run in" in changed.stderr and "has lr = 0.001, not 0.01" in changed.stderr


@script
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--posterior", "banana"], "argument --posterior: invalid choice: 'banana'"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--resume"], "--resume: no checkpoint at"),
    ],
)
def test_bad_flags_give_one_line_errors(data_dir, tmp_path, args, expected):
    done = run_frey(*args, "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode != 0
    assert done.stderr.startswith("frey.py: error: ") and expected in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@script
def test_missing_data_gives_one_line_error(tmp_path):
    done = run_frey("--out", str(tmp_path), data_dir=str(tmp_path / "no-such-folder"))
    assert done.returncode != 0
    assert done.stderr.startswith("frey.py: error: MINIVAE_DATA=") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@script
def test_runs_on_the_strict_backend(data_dir, tmp_path):
    # strict refuses implicit host round-trips and device mixing, as CuPy does
    done = run_frey(
        "--limit",
        "60",
        "--epochs",
        "1",
        "--log-px-samples",
        "4",
        "--quiet",
        "--backend",
        "strict",
        "--out",
        str(tmp_path),
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["backend"] == "strict"


@script
def test_help_explains_every_flag(data_dir):
    done = run_frey("--help", data_dir=data_dir)
    assert done.returncode == 0
    for flag in (
        "--epochs",
        "--latent-dim",
        "--hidden",
        "--batch-size",
        "--lr",
        "--estimator",
        "--samples",
        "--posterior",
        "--patience",
        "--seed",
        "--backend",
        "--out",
        "--resume",
        "--quiet",
        "--activation",
        "--log-px-samples",
        "--preset",
        "--limit",
    ):
        assert flag in done.stdout, flag


@script
def test_preset_sets_li_turner_and_explicit_flags_win():
    spec = importlib.util.spec_from_file_location("frey_example", EXAMPLE)
    frey = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frey)
    args = frey.parse_args(["--preset", "li-turner", "--lr", "1e-3"])
    assert (
        args.hidden,
        args.activation,
        args.latent_dim,
        args.batch_size,
        args.log_px_samples,
    ) == (200, "softplus", 20, 100, 5000)
    assert args.lr == 1e-3  # given explicitly: beats the preset's 5e-4
    assert frey.parse_args(["--preset", "li-turner"]).lr == 5e-4
    assert frey.parse_args([]).activation == "relu"


# --- in process, on every backend -------------------------------------------------------


def test_vae_training_on_frey_stays_finite_above_the_log_std_floor(data_dir):
    # 16 faces, one step per epoch, a high learning rate: the decoder overfits and shrinks
    # its per-pixel std as fast as it can (an unbounded Gaussian density on pixel data runs
    # off to infinity given enough epochs). Every number must stay finite, and no pixel's
    # log-std may pass the default floor, -5.
    faces = load_frey_faces()[:20]
    backend.seed(0)
    encoder = Sequential([Flatten(), Dense(50, "relu"), Dense(4)])
    decoder = Sequential([Dense(50, "relu"), Dense(2 * 560)])
    vae = VAE(encoder, decoder)
    encoder.build((28, 20))
    decoder.build((2,))
    history = train.fit(
        vae,
        lambda x: vae.elbo(x),
        Adam(vae.parameters(), lr=2e-2),
        faces[:16],
        faces[16:],
        epochs=40,
        batch_size=16,
        verbose=False,
    )
    assert history.stopped is None and len(history) == 40
    assert all(np.isfinite(v).all() for v in history.metrics.values())
    assert history.metrics["loss"][-1] < history.metrics["loss"][0] - 500
    with no_grad():
        log_std = vae.decode(vae.encode(train.to_device(faces)).loc).log_std.numpy()
    assert -5 <= log_std.min() < -3  # pushed far down from its start near 0, held above the floor


# --- the figures (host arrays only, nothing on a device: numpy only) ---------------------


@pytest.mark.backends("numpy")
def test_normal_quantile_grid_follows_the_inverse_cdf():
    n = 5
    grid = plots.normal_quantile_grid(n)
    assert grid.shape == (n * n, 2)
    q = grid[:n, 0]  # the first row: z1 grows along it
    phi = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in q]
    np.testing.assert_allclose(phi, np.arange(1, n + 1) / (n + 1), atol=1e-12)
    np.testing.assert_array_equal(grid[::n, 1], q[::-1])  # z2 falls down the rows
    # the middle of an odd grid is the prior's median
    assert grid[n * n // 2].tolist() == [0.0, 0.0]


@pytest.mark.backends("numpy")
def test_tile_places_images_row_by_row():
    images = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2) / 12
    out = plots.tile(images, n_cols=2, pad=1)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[0:2, 0:2], images[0])
    np.testing.assert_array_equal(out[0:2, 3:5], images[1])
    np.testing.assert_array_equal(out[3:5, 0:2], images[2])
    assert (out[3:5, 3:5] == 1).all() and (out[2, :] == 1).all()  # an empty cell and a gap: white


@pytest.mark.backends("numpy")
def test_every_figure_is_written_as_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(12, 28, 20))
    plots.learning_curves(
        {"loss": [3.0, 2.0], "kl": [1.0, 1.5], "val_loss": [3.5, 2.5]}, tmp_path / "a" / "c.png"
    )
    plots.image_grid(images, tmp_path / "s.png", n_cols=4)
    plots.reconstructions(images, images[::-1], tmp_path / "r.png")
    plots.manifold(rng.uniform(size=(9, 28, 20)), tmp_path / "m.png", n=3)
    plots.latent_scatter(
        rng.standard_normal((12, 2)), tmp_path / "l.png", color=np.arange(12), color_label="frame"
    )
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["a/c.png", "l.png", "m.png", "r.png", "s.png"]  # and no temporary file
    assert all((tmp_path / p).read_bytes()[:8] == PNG_MAGIC for p in written)
