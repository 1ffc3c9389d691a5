"""Time one forward + backward of the lecture's CNN autoencoder, minivae beside PyTorch CPU.

The model is the lecture's (Fashion-MNIST, 28x28x1): encoder Conv2D 16 5x5 relu,
MaxPool 2, Conv2D 8 5x5 relu, Flatten, Dense 64 relu, Dense 2; decoder Dense 64
relu, Dense 512 relu, Reshape (8, 8, 8), Conv2DTranspose 16 5x5 relu, UpSampling 2,
Conv2DTranspose 1 5x5 sigmoid; binary cross-entropy, batch 64, float32.
Both run in this process, on the same random images, in alternating rounds;
PyTorch on 2 threads, NumPy's BLAS on the machine's cores (2 here).

    nice python benchmarks/bench_cnn.py [--repeats 40] [--batch 64] [--backend numpy] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import minivae
from minivae import backend, nn
from minivae import functional as F
from minivae.tensor import Tensor


def minivae_autoencoder():
    encoder = nn.Sequential(
        [
            nn.Conv2D(16, 5, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(8, 5, activation="relu"),
            nn.Flatten(),
            nn.Dense(64, activation="relu"),
            nn.Dense(2),
        ]
    )
    decoder = nn.Sequential(
        [
            nn.Dense(64, activation="relu"),
            nn.Dense(512, activation="relu"),
            nn.Reshape((8, 8, 8)),
            nn.Conv2DTranspose(16, 5, activation="relu"),
            nn.UpSampling2D(2),
            nn.Conv2DTranspose(1, 5, activation="sigmoid"),
        ]
    )
    return nn.Sequential([encoder, decoder])


def bce(p: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy of images x under pixel probabilities p, clipped as Keras does."""
    p = F.clip(p, 1e-7, 1 - 1e-7)
    return -(x * F.log(p) + (1 - x) * F.log(1 - p)).mean()


def minivae_step(images: np.ndarray):
    """A function running one forward + backward of the lecture's autoencoder in minivae."""
    model = minivae_autoencoder()
    model.build(images.shape[1:])
    x = Tensor(backend.asarray(images))

    def step():
        model.zero_grad()
        bce(model(x), x).backward()
        backend.to_numpy(model.parameters()[0].grad)  # waits for the device (CuPy is asynchronous)

    return step


def torch_step(images: np.ndarray, threads: int):
    """The same model, loss and batch in PyTorch (NCHW, so the images are transposed)."""
    import torch
    from torch import nn as tnn

    torch.set_num_threads(threads)
    model = tnn.Sequential(
        tnn.Conv2d(1, 16, 5),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(16, 8, 5),
        tnn.ReLU(),
        tnn.Flatten(),
        tnn.Linear(512, 64),
        tnn.ReLU(),
        tnn.Linear(64, 2),
        tnn.Linear(2, 64),
        tnn.ReLU(),
        tnn.Linear(64, 512),
        tnn.ReLU(),
        tnn.Unflatten(1, (8, 8, 8)),
        tnn.ConvTranspose2d(8, 16, 5),
        tnn.ReLU(),
        tnn.Upsample(scale_factor=2, mode="nearest"),
        tnn.ConvTranspose2d(16, 1, 5),
        tnn.Sigmoid(),
    )
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    loss_fn = tnn.BCELoss()

    def step():
        model.zero_grad()
        loss_fn(model(x), x).backward()

    return step


BLOCK = 10  # steps per engine per round


def timed(step, clock) -> float:
    start = clock()
    step()
    return clock() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed steps per engine")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=2,
        help="PyTorch's threads (NumPy's BLAS takes OPENBLAS_NUM_THREADS from the environment)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or the CPU time of this process (all its threads; "
        "steadier on a machine shared with other jobs)",
    )
    args = parser.parse_args()

    minivae.set_backend(args.backend)
    minivae.seed(0)
    images = np.random.default_rng(0).uniform(0, 1, (args.batch, 28, 28, 1)).astype(np.float32)
    steps = {f"minivae ({args.backend})": minivae_step(images)}
    try:
        steps[f"PyTorch CPU (threads: {args.torch_threads})"] = torch_step(
            images, args.torch_threads
        )
    except ImportError:
        print("PyTorch is not installed: minivae alone")
    # Rounds alternate between the two, so a machine shared with other jobs slows both
    # alike. Each round runs a block of steps and drops the first: after a switch, the
    # other library's idle threads still spin for a moment and would steal a core.
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = {name: [] for name in steps}
    rounds = -(-args.repeats // BLOCK)
    for _ in range(rounds):
        for name, step in steps.items():
            times[name] += [timed(step, clock) for _ in range(BLOCK + 1)][1:]
    for name, ts in times.items():
        print(
            f"{name:<24} forward+backward, batch {args.batch}: median "
            f"{statistics.median(ts) * 1e3:6.1f} ms {args.clock}"
            f"  (min {min(ts) * 1e3:.1f}, {len(ts)} steps)"
        )
    if len(times) == 2:
        ours, theirs = (statistics.median(ts) for ts in times.values())
        print(f"ratio of medians, minivae / PyTorch: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
