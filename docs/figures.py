"""Draw the figures of docs/ from the real code.

layers.md: im2col and col2im run on a small image whose pixels hold their own index
(0, 1, 2, ...), so what a cell shows is where that number was gathered from.
autodiff.md and backprop-through-sampling.md: the graphs minivae.graph captures from a
small expression, the Frey VAE's -ELBO and the lecture's CNN autoencoder (drawn by
Graphviz's `dot`, which must be installed).

    python docs/figures.py          # rewrites every figure below (FIGURES)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import minivae
from minivae import graph
from minivae.files import atomic_write
from minivae.nn import (
    Conv2D,
    Conv2DTranspose,
    Dense,
    Flatten,
    MaxPool2D,
    Module,
    Reshape,
    Sequential,
    UpSampling2D,
)
from minivae.nn.im2col import col2im, conv_output_length, im2col, window_offsets

H = W = 5  # the example image
K, S = 3, 2  # a 3x3 kernel at stride 2: 2x2 windows that overlap by one row and column
COLOURS = colormaps["tab10"].colors


def _save(fig: Figure, path, dpi: int) -> None:
    with atomic_write(path) as f:  # a crash never leaves half a picture in docs/
        fig.savefig(f, format="png", dpi=dpi)


def index_image(h: int, w: int) -> np.ndarray:
    """(1, h, w, 1) whose pixel (r, c) holds r * w + c."""
    return np.arange(h * w, dtype=np.float64).reshape(1, h, w, 1)


def gather(h=H, w=W, k=K, s=S):
    """im2col of the index image: (oh, ow) and the (oh*ow, k*k) matrix of gathered indices."""
    oh, ow = conv_output_length(h, k, s, "valid"), conv_output_length(w, k, s, "valid")
    cols = im2col(index_image(h, w), (k, k), (s, s), (oh, ow))  # (1, oh, ow, k*k, 1)
    return (oh, ow), cols.reshape(oh * ow, k * k).astype(int)


def draw_image(ax, h, w, shade=None, title=""):
    """The index image as a grid of numbered cells; `shade` maps index -> colour."""
    shade = shade or {}
    for r in range(h):
        for c in range(w):
            i = r * w + c
            ax.add_patch(
                Rectangle((c, r), 1, 1, facecolor=shade.get(i, "white"), edgecolor="0.6", lw=0.8)
            )
            ax.text(c + 0.5, r + 0.5, str(i), ha="center", va="center", fontsize=9)
    ax.set(xlim=(-0.1, w + 0.1), ylim=(h + 0.1, -0.1), aspect="equal")
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def figure_gather(path: Path) -> None:
    """Left: the windows on the image. Right: the matrix im2col builds, one row per window."""
    (oh, ow), rows = gather()
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    image, matrix = fig.subplots(1, 2, width_ratios=[1, 1.9])
    draw_image(image, H, W, title=f"{H}x{W} image, {K}x{K} windows at stride {S}")
    for n in range(oh * ow):
        a, b = divmod(n, ow)
        inset = 0.06 * (n + 1)
        image.add_patch(
            Rectangle(
                (b * S + inset, a * S + inset),
                K - 2 * inset,
                K - 2 * inset,
                fill=False,
                edgecolor=COLOURS[n],
                lw=2.2,
            )
        )
    for n, row in enumerate(rows):
        for j, index in enumerate(row):
            matrix.add_patch(
                Rectangle((j, n), 1, 1, facecolor=COLOURS[n], alpha=0.35, edgecolor="0.6", lw=0.8)
            )
            matrix.text(j + 0.5, n + 0.5, str(index), ha="center", va="center", fontsize=9)
        a, b = divmod(n, ow)
        matrix.text(
            -0.2,
            n + 0.5,
            f"window ({a},{b})",
            ha="right",
            va="center",
            fontsize=9,
            color=COLOURS[n],
        )
    for j in range(K * K):
        matrix.text(j + 0.5, -0.25, f"({j // K},{j % K})", ha="center", va="bottom", fontsize=8)
    matrix.set(
        xlim=(-2.6, K * K + 0.1),
        ylim=(oh * ow + 0.1, -0.9),
        aspect="equal",
        title="im2col: one row per window, one column per kernel offset (i, j)",
    )
    matrix.axis("off")
    _save(fig, path, dpi=90)


def figure_offsets(path: Path) -> None:
    """The loop of window_offsets: offset (i, j) is one strided slice, the (i, j)-th number of
    every window."""
    (oh, ow), rows = gather()
    fig = Figure(figsize=(8, 8.4), layout="constrained")
    axes = fig.subplots(K, K)
    keys = window_offsets((K, K), (S, S), (oh, ow))  # the slices col2im and pooling take
    for j, key in enumerate(keys):
        i_, j_ = divmod(j, K)
        # pixel -> the window it serves
        picked = {int(rows[n, j]): COLOURS[n] for n in range(oh * ow)}
        rows_, cols_ = (f"{k.start}:{k.stop}:{k.step}" for k in key[1:3])
        draw_image(
            axes[i_, j_], H, W, picked, title=f"offset ({i_},{j_}): x[:, {rows_}, {cols_}, :]"
        )
    fig.suptitle(
        f"the same windows read by the {K * K} kernel offsets, not by the windows:\n"
        "each offset is one strided slice (coloured by the window it belongs to)"
    )
    _save(fig, path, dpi=80)


def figure_overlaps(path: Path) -> None:
    """col2im of all-ones windows: how many windows add into each pixel (the scatter's +=)."""
    h = w = 7
    fig = Figure(figsize=(9, 4), layout="constrained")
    for ax, s in zip(fig.subplots(1, 2), (1, 2)):
        oh = conv_output_length(h, K, s, "valid")
        # (kh*kw, N, oh, ow, C): col2im takes the offset axis first
        ones = np.ones((K * K, 1, oh, oh, 1))
        counts = col2im(ones, (h, w), (K, K), (s, s))[0, :, :, 0]
        ax.imshow(counts, cmap="Blues", vmin=0, vmax=counts.max() + 1)
        for r in range(h):
            for c in range(w):
                ax.text(c, r, f"{counts[r, c]:.0f}", ha="center", va="center", fontsize=10)
        ax.set(title=f"{K}x{K} windows at stride {s}: {oh}x{oh} of them", xticks=[], yticks=[])
    fig.suptitle("col2im adds each window back where it came from: windows per pixel")
    _save(fig, path, dpi=90)


# --- the graphs (minivae.graph) --------------------------------------------------------------


def worked_example():
    """autodiff.md's f = (x y + x)^2 at x = 2, y = 3: its graph, captured, and the walk's text."""
    x = minivae.Tensor(2.0, requires_grad=True, dtype="float64")
    y = minivae.Tensor(3.0, requires_grad=True, dtype="float64")
    u = x * y
    v = u + x
    f = v**2
    g = graph.capture(f, names={"x": x, "y": y, "u": u, "v": v, "f": f})
    return g, g.backward()


def figure_worked_example(path: Path) -> None:
    g, _ = worked_example()
    g.draw(path, grads=True, title="f = (x y + x)^2 at x = 2, y = 3")


def frey_elbo():
    """The Frey VAE of examples/frey.py (560 -> 200 -> 2 x 2, 2 -> 200 -> 2 x 560), untrained,
    on a batch of 100 random 28 x 20 images: its -ELBO's graph after backward()."""
    minivae.seed(0)
    encoder = Sequential([Flatten(), Dense(200, "relu"), Dense(4)])
    decoder = Sequential([Dense(200, "relu"), Dense(2 * 28 * 20)])
    vae = minivae.VAE(encoder, decoder)
    x = minivae.Tensor(np.random.default_rng(0).random((100, 28, 20), dtype=np.float32))
    g, highlight = graph.elbo_graph(vae, x)
    g.backward()
    return g, highlight


def figure_frey_elbo(path: Path) -> None:
    g, highlight = frey_elbo()
    title = "the Frey VAE's -ELBO (loss = nll + kl) after backward(): what every tensor received"
    g.draw(path, grads=True, highlight=highlight, title=title)


class Autoencoder(Module):
    """examples/fashion_autoencoder.py's Sequential([encoder, decoder]), with named halves."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x):
        return self.decoder(self.encoder(x))


def cnn_autoencoder():
    """The lecture's CNN autoencoder (examples/fashion_autoencoder.py, variant lecture) and its
    binary cross-entropy on 8 random images, captured by layer, after backward()."""
    minivae.seed(0)
    encoder = Sequential(
        [
            Conv2D(16, 5, activation="relu"),
            MaxPool2D(2),
            Conv2D(8, 5, activation="relu"),
            Flatten(),
            Dense(64, activation="relu"),
            Dense(2),
        ]
    )
    decoder = Sequential(
        [
            Dense(64, activation="relu"),
            Dense(512, activation="relu"),
            Reshape((8, 8, 8)),
            Conv2DTranspose(16, 5, activation="relu"),
            UpSampling2D(2),
            Conv2DTranspose(1, 5, activation="sigmoid"),
        ]
    )
    model = Autoencoder(encoder, decoder)
    x = minivae.Tensor(np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32))
    with graph.layers() as calls:
        p = minivae.clip(model(x), 1e-7, 1 - 1e-7)  # the example's binary_crossentropy
        loss = -(x * minivae.log(p) + (1 - x) * minivae.log(1 - p)).mean()
    g = graph.capture(loss, model=model, names={"x": x, "loss": loss}, layers=calls)
    g.backward()
    return g


def figure_cnn_autoencoder(path: Path) -> None:
    title = "the lecture's CNN autoencoder, one box per layer (collapse=True)"
    cnn_autoencoder().draw(path, grads=True, collapse=True, title=title)


FIGURES = {
    "im2col_gather.png": figure_gather,
    "im2col_offsets.png": figure_offsets,
    "col2im_overlaps.png": figure_overlaps,
    "graph_worked_example.svg": figure_worked_example,
    "graph_frey_elbo.svg": figure_frey_elbo,
    "graph_cnn_autoencoder.svg": figure_cnn_autoencoder,
}


def main(out_dir) -> list[str]:
    """Draw every figure into `out_dir`; returns their file names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with minivae.use_backend("numpy"):  # host arrays in, host arrays out
        for name, draw in FIGURES.items():
            draw(out_dir / name)
    return list(FIGURES)


if __name__ == "__main__":
    for name in main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent):
        print("wrote", name)
