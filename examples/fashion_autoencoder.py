"""CNN autoencoders on Fashion-MNIST: the lecture's first example, in minivae.

The script follows the lecture's notebook from top to bottom: load the data, build the
encoder and the decoder, print both summaries, encode test images before training,
train with binary cross-entropy, encode them again, and look at the reconstructions.

Three variants (``--variant``):

* ``lecture``   (default) the lecture's network: convolutions and max-pooling down to a
  2-d code, transposed convolutions and up-sampling back to 28 x 28.
* ``strided``   the lecture's exercise: the encoder downsamples with stride-2 convolutions
  instead of pooling; the decoder is its mirror image (stride-2 transposed convolutions).
* ``denoising`` the lecture's network trained to clean corrupted images (Vincent &
  Larochelle 2010): every training step draws fresh noise for its batch, so each epoch
  sees new corruptions of the same images; the loss compares with the clean image.

    python examples/fashion_autoencoder.py                       # the lecture's run
    python examples/fashion_autoencoder.py --variant denoising --noise-std 0.3 --epochs 5
    python examples/fashion_autoencoder.py --limit 512 --epochs 2   # a quick try

Everything lands in ``--out`` (default ``runs/fashion_<variant>``): ``metrics.json``,
``encodings.png``, ``reconstructions.png`` and, for ``denoising``, ``denoising.png``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

import minivae
from minivae import backend, files, plots
from minivae import functional as F
from minivae.datasets import FASHION_MNIST_CLASSES, DataError, load_fashion_mnist
from minivae.nn import (
    Conv2D,
    Conv2DTranspose,
    Dense,
    Flatten,
    MaxPool2D,
    Reshape,
    Sequential,
    UpSampling2D,
)
from minivae.optim import Adam
from minivae.train import fit, to_device

VARIANTS = ("lecture", "strided", "denoising")
IMAGE_SHAPE = (28, 28, 1)  # channels-last, as Keras
N_ENCODINGS = 1000  # test images in the encodings plot, as in the lecture


class UsageError(Exception):
    """A flag value the script cannot run with."""


# ---------------------------------------------------------------- the data


def load_data(limit=None):
    """Fashion-MNIST images as uint8 (N, 28, 28, 1) host arrays, and their labels.

    The lecture divides by 255 here; we keep the bytes and let ``to_device`` scale each
    batch to [0, 1] in float32 as it moves it to the device (a quarter of the traffic).
    `limit` keeps the first `limit` training and test images (for quick tries and tests).
    """
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    # a channel axis at the end, as Conv2D expects (channels-last, as Keras)
    return (x_train[:limit, ..., None], y_train[:limit]), (
        x_test[:limit, ..., None],
        y_test[:limit],
    )


# ---------------------------------------------------------------- the encoder and the decoder


def make_encoder(variant, latent_dim=2):
    """28 x 28 x 1 image -> `latent_dim` numbers.

    lecture: 28 -conv5-> 24 -pool-> 12 -conv5-> 8, then 8*8*8 = 512 features.
    strided: 28 -conv5/2-> 14 -conv5/2-> 7 ('same' padding halves the size exactly),
             then 7*7*8 = 392 features.
    """
    if variant == "strided":
        convolutions = [
            Conv2D(16, 5, strides=2, padding="same", activation="relu"),
            Conv2D(8, 5, strides=2, padding="same", activation="relu"),
        ]
    else:
        convolutions = [
            Conv2D(16, 5, activation="relu"),
            MaxPool2D(2),
            Conv2D(8, 5, activation="relu"),
        ]
    return Sequential(convolutions + [Flatten(), Dense(64, activation="relu"), Dense(latent_dim)])


def make_decoder(variant, latent_dim=2):
    """`latent_dim` numbers -> 28 x 28 x 1 image of pixel probabilities (sigmoid output).

    Each decoder retraces its encoder backwards: a transposed convolution undoes the
    size change of a convolution with the same kernel and strides.
    """
    if variant == "strided":
        grid = (7, 7, 8)
        # 7 -> 14
        deconvolutions = [
            Conv2DTranspose(16, 5, strides=2, padding="same", activation="relu"),
            # 14 -> 28
            Conv2DTranspose(1, 5, strides=2, padding="same", activation="sigmoid"),
        ]
    else:
        grid = (8, 8, 8)
        deconvolutions = [
            Conv2DTranspose(16, 5, activation="relu"),  # 8 -> 12
            UpSampling2D(2),  # 12 -> 24
            Conv2DTranspose(1, 5, activation="sigmoid"),
        ]  # 24 -> 28
    return Sequential(
        [Dense(64, activation="relu"), Dense(int(np.prod(grid)), activation="relu"), Reshape(grid)]
        + deconvolutions
    )


# ---------------------------------------------------------------- the loss


EPSILON = 1e-7  # Keras's epsilon: its binary cross-entropy clips probabilities to [eps, 1 - eps]


def binary_crossentropy(target, probs):
    """-[x log p + (1 - x) log(1 - p)], averaged over pixels and images (Keras's
    'binary_crossentropy'). The clip keeps log() finite where the sigmoid saturates to 0 or 1.

    The targets are grey levels in [0, 1], not just 0 or 1, so the loss cannot reach 0: its
    floor is the pixels' own entropy.
    """
    p = F.clip(probs, EPSILON, 1 - EPSILON)
    return -(target * F.log(p) + (1 - target) * F.log(1 - p)).mean()


def corrupt(x, noise_std=0.0, mask_fraction=0.0):
    """A freshly corrupted copy of the batch `x` (Vincent & Larochelle 2010's q(x~ | x)).

    Gaussian noise of standard deviation `noise_std`, then clipped back to the pixel range
    [0, 1]; and/or masking noise: each pixel set to 0 with probability `mask_fraction`.
    The noise comes from the backend's seeded generator, so it differs from call to call
    (from step to step and epoch to epoch) but a run is repeatable. `x` is left untouched.
    """
    xp = backend.xp()
    noisy = x.data
    if noise_std > 0:
        noisy = xp.clip(noisy + noise_std * backend.normal(x.shape, x.dtype), 0.0, 1.0)
    if mask_fraction > 0:
        keep = backend.uniform(x.shape, x.dtype) >= mask_fraction
        noisy = xp.where(keep, noisy, xp.zeros_like(noisy))
    return minivae.Tensor(noisy)  # a constant: no gradient flows into the input


def make_loss_fn(autoencoder, variant, noise_std=0.0, mask_fraction=0.0):
    """loss_fn(x) for fit(): the binary cross-entropy of the clean batch x under its reconstruction.

    For 'denoising' the autoencoder sees a corrupted copy of x, drawn afresh at every call,
    so every step and every epoch; fit()'s test-loss pass corrupts the test images too.
    """

    def loss_fn(x):
        inputs = corrupt(x, noise_std, mask_fraction) if variant == "denoising" else x
        return {"loss": binary_crossentropy(x, autoencoder(inputs))}

    return loss_fn


# ---------------------------------------------------------------- looking at the model


def predict(model, x, batch_size=256):
    """`model` applied to the host array `x` in batches, without a graph; a host array."""
    outputs = []
    with minivae.no_grad():
        for start in range(0, len(x), batch_size):
            outputs.append(model(to_device(x[start : start + batch_size])).numpy())
    return np.concatenate(outputs)


def plot_encodings(before, after, labels, path):
    """The lecture's two scatter plots side by side: the codes before and after training."""
    # one colour per class, as the lecture's get_cmap('jet', 10)
    cmap = colormaps["jet"].resampled(10)
    fig = Figure(figsize=(15, 7), layout="constrained")
    for i, (codes, when) in enumerate(((before, "before"), (after, "after"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            chosen = labels == c
            ax.scatter(codes[chosen, 0], codes[chosen, 1], color=cmap(c), label=name, alpha=0.7)
        ax.set_xlabel("$z_1$", fontsize=16)
        ax.set_ylabel("$z_2$", fontsize=16)
        ax.set_title(f"Encodings of example images {when} training")
        ax.legend()
    plots.save_figure(fig, path)


def plot_images(rows, row_titles, column_titles, path):
    """Rows of images, each row (n, 28, 28, 1) in [0, 1] drawn as one strip, a title per column."""
    n = len(column_titles)
    fig = Figure(figsize=(1.2 * n, 1.4 * len(rows) + 0.4), layout="constrained")
    for r, (images, row_title) in enumerate(zip(rows, row_titles)):
        ax = fig.add_subplot(len(rows), 1, r + 1)
        # as the lecture
        ax.imshow(plots.tile(images[:n, ..., 0], n, pad=0), cmap="binary", vmin=0, vmax=1)
        ax.set_xticks(28 * np.arange(n) + 14, column_titles if r == 0 else [], fontsize=8)
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
        ax.set_yticks([])
        ax.set_ylabel(row_title)
    plots.save_figure(fig, path)


# ---------------------------------------------------------------- the run


def parse_args(argv=None):
    p = OneLineErrorParser(
        description="Train a CNN autoencoder on Fashion-MNIST (the lecture's example)."
    )
    p.add_argument("--variant", choices=VARIANTS, default="lecture")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument(
        "--latent-dim", type=int, default=2, help="size of the code (>= 2: the plot shows z_1, z_2)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    p.add_argument("--out", help="output folder (default runs/fashion_<variant>)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--limit", type=int, help="use only the first N training and N test images")
    p.add_argument(
        "--noise-std",
        type=float,
        default=0.3,
        help="denoising: std of the Gaussian noise added to the inputs (0 for none)",
    )
    p.add_argument(
        "--mask-fraction",
        type=float,
        default=0.0,
        help="denoising: fraction of pixels set to 0 in each input (masking noise)",
    )
    args = p.parse_args(argv)
    positive = {
        "--epochs": args.epochs,
        "--batch-size": args.batch_size,
        "--lr": args.lr,
        "--limit": 1 if args.limit is None else args.limit,
    }
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.latent_dim < 2:
        raise UsageError(
            f"--latent-dim must be at least 2 (the encodings are plotted as z_1 against z_2), "
            f"got {args.latent_dim}"
        )
    if args.noise_std < 0 or not 0 <= args.mask_fraction < 1:
        raise UsageError(
            f"need --noise-std >= 0 and 0 <= --mask-fraction < 1, "
            f"got {args.noise_std} and {args.mask_fraction}"
        )
    args.out = args.out or os.path.join("runs", f"fashion_{args.variant}")
    return args


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def main(argv=None):
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else print
    backend.set_backend(args.backend)
    backend.seed(args.seed)  # the weights' initial values; fit() seeds each epoch itself

    # The data (labels only colour the plots).
    (x_train, _), (x_test, y_test) = load_data(args.limit)
    say(
        f"Fashion-MNIST: {len(x_train)} training and {len(x_test)} test images, backend "
        f"{args.backend}"
    )

    # The encoder and the decoder, and their summaries (which build the weights).
    encoder = make_encoder(args.variant, args.latent_dim)
    decoder = make_decoder(args.variant, args.latent_dim)
    autoencoder = Sequential([encoder, decoder])
    autoencoder.build(IMAGE_SHAPE)
    if not args.quiet:
        encoder.summary(IMAGE_SHAPE)
        decoder.summary((args.latent_dim,))

    # Encodings of 1,000 test images before training.
    shown = np.random.default_rng(args.seed).choice(
        len(x_test), min(N_ENCODINGS, len(x_test)), replace=False
    )
    untrained_encodings = predict(encoder, x_test[shown])

    # Training: Adam on binary cross-entropy against the clean image.
    loss_fn = make_loss_fn(autoencoder, args.variant, args.noise_std, args.mask_fraction)
    optimizer = Adam(autoencoder.parameters(), lr=args.lr)
    history = fit(
        autoencoder,
        loss_fn,
        optimizer,
        x_train,
        x_val=x_test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=not args.quiet,
    )

    # Encodings of the same test images after training, beside those before.
    trained_encodings = predict(encoder, x_test[shown])
    plot_encodings(
        untrained_encodings,
        trained_encodings,
        y_test[shown],
        os.path.join(args.out, "encodings.png"),
    )

    # Reconstructions of the first test image of each class.
    firsts = [int(np.argmax(y_test == c)) for c in range(10) if np.any(y_test == c)]
    names = [FASHION_MNIST_CLASSES[y_test[i]] for i in firsts]
    clean = x_test[firsts] / np.float32(255)
    plot_images(
        [clean, predict(autoencoder, x_test[firsts])],
        ["original", "reconstructed"],
        names,
        os.path.join(args.out, "reconstructions.png"),
    )
    if args.variant == "denoising":
        noisy = corrupt(to_device(x_test[firsts]), args.noise_std, args.mask_fraction).numpy()
        plot_images(
            [noisy, clean, predict(autoencoder, noisy)],
            ["noisy", "clean", "denoised"],
            names,
            os.path.join(args.out, "denoising.png"),
        )

    metrics = {
        # each epoch's mean over its batches, as Keras prints
        "train_loss": history.metrics["loss"],
        "test_loss": history.metrics["val_loss"],
        "sec_per_epoch": float(np.median(history.seconds)),  # training and the test-loss pass
        "backend": args.backend,
        "flags": vars(args),
    }
    files.write_json(os.path.join(args.out, "metrics.json"), metrics)
    say(
        f"final train loss {metrics['train_loss'][-1]:.4f}, test loss "
        f"{metrics['test_loss'][-1]:.4f}, "
        f"{metrics['sec_per_epoch']:.1f} s per epoch (median); wrote {args.out}"
    )
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (UsageError, DataError, backend.BackendError, OSError) as e:
        print(f"fashion_autoencoder: error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)
