"""Draw the figures of docs/layers.md from the real im2col and col2im.

Every number in the figures comes from running minivae's own code on a small
image whose pixels hold their own index (0, 1, 2, ...), so what a cell shows is
where that number was gathered from.

    python docs/figures.py          # rewrites docs/im2col_gather.png, im2col_offsets.png, col2im_overlaps.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import minivae
from minivae.nn.im2col import col2im, conv_output_length, im2col, window_offsets

H = W = 5  # the example image
K, S = 3, 2  # a 3x3 kernel at stride 2: 2x2 windows that overlap by one row and column
COLOURS = colormaps["tab10"].colors


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
    fig.savefig(path, dpi=90)


def figure_offsets(path: Path) -> None:
    """The loop of window_offsets: offset (i, j) is one strided slice, the (i, j)-th number of
    every window."""
    (oh, ow), rows = gather()
    fig = Figure(figsize=(8, 8.4), layout="constrained")
    axes = fig.subplots(K, K)
    keys = window_offsets((K, K), (S, S), (oh, ow))  # the very slices im2col takes
    for j, key in enumerate(keys):
        i_, j_ = divmod(j, K)
        # pixel -> the window it serves
        picked = {int(rows[n, j]): COLOURS[n] for n in range(oh * ow)}
        rows_, cols_ = (f"{k.start}:{k.stop}:{k.step}" for k in key[1:3])
        draw_image(
            axes[i_, j_], H, W, picked, title=f"offset ({i_},{j_}): x[:, {rows_}, {cols_}, :]"
        )
    fig.suptitle(
        f"the gather loop runs over the {K * K} kernel offsets, not over the windows:\n"
        "each step copies one strided slice (coloured by the window it lands in)"
    )
    fig.savefig(path, dpi=80)


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
    fig.savefig(path, dpi=90)


FIGURES = {
    "im2col_gather.png": figure_gather,
    "im2col_offsets.png": figure_offsets,
    "col2im_overlaps.png": figure_overlaps,
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
