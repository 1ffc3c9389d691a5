"""The array calls of one training step stay within the targets of issue 15.

On a GPU every array operation is a kernel launch, so for these small models the
number of calls, not the arithmetic, bounds the speed. tests/array_calls.py counts
them on the ``strict`` backend: deterministic, no timing, the same on every machine.
Each test counts the second of two identical steps (the first builds what is built
once: the optimiser's flat arrays, the cached constants).

A failure lists the calls made most often, so a regression can be found by name.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from array_calls import count_array_calls

import minivae
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.train import to_device, train_step
from minivae.vae import VAE

pytest.importorskip("array_api_strict")  # what counts them (a GPU machine may have only CuPy)
pytestmark = pytest.mark.backends("strict")  # counted on strict only: once per run is enough

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fashion_autoencoder.py"


def calls_of_one_step(loss_fn, optimizer, batch):
    """The Counter of array calls of the second of two training steps on `batch`."""
    x = to_device(batch)
    train_step(loss_fn, optimizer, x)
    with count_array_calls() as counts:
        train_step(loss_fn, optimizer, x)
    return counts


def assert_at_most(counts, target, what):
    total = sum(counts.values())
    top = ", ".join(f"{name} {n}" for name, n in counts.most_common(12))
    assert total <= target, f"{what}: {total} array calls per step (target {target}); top: {top}"


def frey_vae(posterior, latent):
    """The Frey Face VAE of the lecture: 560 pixels, one hidden layer of 200 ReLUs each way."""
    minivae.seed(0)
    size = 2 * latent if posterior == "diag" else 2 * latent + latent * (latent - 1) // 2
    encoder = Sequential([Flatten(), Dense(200, "relu"), Dense(size)])
    encoder.build((28, 20))
    decoder = Sequential([Dense(200, "relu"), Dense(2 * 560)])
    decoder.build((latent,))
    return VAE(encoder, decoder, posterior=posterior)


FACES = np.random.default_rng(0).random((100, 28, 20)).astype(np.float32)


# Issue 15's targets: the diagonal Frey step <= 120, full covariance with mc <= 400
@pytest.mark.parametrize(
    "posterior, estimator, latent, most", [("diag", "analytic", 2, 120), ("full", "mc", 20, 400)]
)
def test_frey_vae_step(posterior, estimator, latent, most):
    counts = frey_step_calls(posterior, estimator, latent)
    assert_at_most(counts, most, f"Frey VAE, {posterior} posterior, {estimator}, l={latent}")


def frey_step_calls(posterior, estimator, latent):
    vae = frey_vae(posterior, latent)
    optimizer = Adam(vae.parameters(), lr=1e-3)
    return calls_of_one_step(lambda x: vae.elbo(x, estimator=estimator), optimizer, FACES)


def test_cnn_autoencoder_step():
    spec = importlib.util.spec_from_file_location("fashion_autoencoder", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    minivae.seed(0)
    model = Sequential([example.make_encoder("lecture"), example.make_decoder("lecture")])
    model.build(example.IMAGE_SHAPE)
    optimizer = Adam(model.parameters(), lr=1e-3)
    images = (np.random.default_rng(0).random((64, 28, 28, 1)) * 255).astype(np.uint8)
    counts = calls_of_one_step(
        lambda x: {"loss": example.binary_crossentropy(x, model(x))}, optimizer, images
    )
    assert_at_most(counts, 450, "the lecture's CNN autoencoder, batch 64")
