"""Figures for the examples, drawn with matplotlib from host (NumPy) arrays.

Each function draws one PNG and writes it atomically (a temporary file, then a
rename), so a crash never leaves half a picture behind. Figures are built with
matplotlib's object API (``Figure``), not pyplot: no window, no global state, and
nothing to close.

Images are drawn by tiling a batch into one big array and showing it once,
which is much faster than one subplot per image.
"""

from __future__ import annotations

import statistics

import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write


def learning_curves(metrics: dict, path, title: str | None = None) -> None:
    """One panel per metric ("loss" first), training and validation curves over epochs."""
    names = [k for k in metrics if not k.startswith("val_")]
    names = sorted(names, key=lambda k: k != "loss")  # loss first, the rest as given
    fig = Figure(figsize=(5 * len(names), 4), layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        epochs = np.arange(1, len(metrics[name]) + 1)
        ax.plot(epochs, metrics[name], label="train")
        if "val_" + name in metrics:
            ax.plot(epochs, metrics["val_" + name], label="val")
        ax.set(xlabel="epoch", title=f"{name} vs epoch")
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def image_grid(images: np.ndarray, path, n_cols: int = 10, title: str | None = None) -> None:
    """Images (N, H, W) in rows of `n_cols`, grey scale, values in [0, 1]."""
    fig = Figure(
        figsize=(n_cols * 0.9, _rows(len(images), n_cols) * 1.2 + 0.5), layout="constrained"
    )
    _show(fig.add_subplot(), tile(images, n_cols), title)
    save_figure(fig, path)


def reconstructions(
    originals: np.ndarray, reconstructed: np.ndarray, path, n_cols: int = 5
) -> None:
    """Images (N, H, W) beside their reconstructions, as in the lecture's figure."""
    fig = Figure(
        figsize=(n_cols * 1.8, _rows(len(originals), n_cols) * 1.2 + 0.6), layout="constrained"
    )
    _show(fig.add_subplot(1, 2, 1), tile(originals, n_cols), "validation images")
    _show(fig.add_subplot(1, 2, 2), tile(reconstructed, n_cols), "VAE reconstructions")
    save_figure(fig, path)


def normal_quantile_grid(n: int) -> np.ndarray:
    """An (n * n, 2) grid of latent points, row by row, at the standard normal's quantiles.

    As in Kingma & Welling's Figure 4: a uniform grid on (0, 1) pushed through the
    inverse CDF, so the points are spread as the prior spreads its mass. The first
    coordinate grows along a row, the second down the rows.
    """
    inv_cdf = statistics.NormalDist().inv_cdf
    q = np.array([inv_cdf(p) for p in np.linspace(0, 1, n + 2)[1:-1]])  # drop 0 and 1: +-inf
    z1, z2 = np.meshgrid(q, q[::-1])  # z2 decreasing down the rows, as a y axis goes up
    return np.stack([z1.ravel(), z2.ravel()], axis=1)


def manifold(images: np.ndarray, path, n: int) -> None:
    """The decoded means of normal_quantile_grid(n), (n * n, H, W), as one picture."""
    fig = Figure(figsize=(n * 0.45, n * 0.6), layout="constrained")
    _show(fig.add_subplot(), tile(images, n, pad=0), "decoded means over the prior's quantiles")
    save_figure(fig, path)


def latent_scatter(
    z: np.ndarray,
    path,
    color=None,
    color_label: str | None = None,
    title: str = "encodings (posterior means)",
) -> None:
    """Points z (N, 2 or more) in the plane of their first two coordinates, optionally
    coloured by a value per point."""
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    dots = ax.scatter(z[:, 0], z[:, 1], c=color, s=10, cmap="viridis")
    if color is not None:
        fig.colorbar(dots, ax=ax, label=color_label)
    ax.set(xlabel="z1", ylabel="z2", title=title)
    save_figure(fig, path)


def tile(images: np.ndarray, n_cols: int, pad: int = 1) -> np.ndarray:
    """(N, H, W) images as one (rows * (H + pad), n_cols * (W + pad)) array, row by row;
    the gaps and any empty cells are white."""
    n, h, w = images.shape
    rows = _rows(n, n_cols)
    out = np.ones((rows * (h + pad), n_cols * (w + pad)), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, n_cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return out


def _rows(n: int, n_cols: int) -> int:
    return -(-n // n_cols)  # ceiling division


def _show(ax, image: np.ndarray, title: str | None) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def save_figure(fig: Figure, path) -> None:
    """Write `fig` as a PNG through ``atomic_write`` (never a half-written image)."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
