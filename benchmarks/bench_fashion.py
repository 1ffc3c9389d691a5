"""Epoch time of the lecture's Fashion-MNIST autoencoder: minivae beside PyTorch CPU.

One training step is what fit() does per batch: move a batch of uint8 images to the
device, forward, binary cross-entropy, backward, Adam. Each side times `--steps`
consecutive steps over the first Fashion-MNIST images, `--repeats` times after a
warm-up; the median time per step is scaled to an epoch of 938 steps (60,000 images
in batches of 64), so the numbers read like the lecture's "938/938 - 2s".

Both sides use the same number of threads: NumPy's BLAS reads OMP_NUM_THREADS when it
loads, so it is set (default 2, the lecture's comparison) before NumPy is imported;
PyTorch gets torch.set_num_threads with the same number. On a shared, busy machine
multithreaded BLAS slows down badly; compare with OMP_NUM_THREADS=1 there.

    nice python benchmarks/bench_fashion.py [--steps 50] [--repeats 3] [--backend numpy]
    OMP_NUM_THREADS=1 nice python benchmarks/bench_fashion.py
"""

from __future__ import annotations

import os

THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "2"))  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))
os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))

import argparse  # noqa: E402 (the thread count must be set before NumPy is imported)
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import minivae  # noqa: E402
from minivae import backend  # noqa: E402
from minivae.datasets import DataError  # noqa: E402
from minivae.optim import Adam  # noqa: E402
from minivae.train import to_device, train_step  # noqa: E402

STEPS_PER_EPOCH = 938  # ceil(60000 / 64)
WARMUP = 5


def load_example():
    """The example script as a module: the benchmark times exactly the model it trains."""
    path = Path(__file__).resolve().parent.parent / "examples" / "fashion_autoencoder.py"
    spec = importlib.util.spec_from_file_location("fashion_autoencoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_minivae(example, batches, repeats):
    """Seconds per training step, one number per repeat."""
    autoencoder = minivae.nn.Sequential(
        [example.make_encoder("lecture"), example.make_decoder("lecture")]
    )
    autoencoder.build(example.IMAGE_SHAPE)
    optimizer = Adam(autoencoder.parameters(), lr=1e-3)

    def loss_fn(x):
        return {"loss": example.binary_crossentropy(x, autoencoder(x))}

    def run(chunk):
        for images in chunk:
            parts = train_step(loss_fn, optimizer, to_device(images))
        float(parts["loss"].numpy())  # wait for the device: CuPy runs asynchronously

    run(batches[:WARMUP])
    return [_seconds(run, batches) / len(batches) for _ in range(repeats)]


def time_torch(batches, repeats):
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    autoencoder = nn.Sequential(  # the same layers, channels-first as PyTorch wants
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 8, 5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(512, 64),
        nn.ReLU(),
        nn.Linear(64, 2),
        nn.Linear(2, 64),
        nn.ReLU(),
        nn.Linear(64, 512),
        nn.ReLU(),
        nn.Unflatten(1, (8, 8, 8)),
        nn.ConvTranspose2d(8, 16, 5),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.ConvTranspose2d(16, 1, 5),
        nn.Sigmoid(),
    )
    # Keras's eps, as minivae
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=1e-3, eps=1e-7)

    def run(chunk):
        for images in chunk:
            x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
            optimizer.zero_grad()
            p = autoencoder(x).clamp(1e-7, 1 - 1e-7)  # the same clipped cross-entropy as minivae's
            loss = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).mean()
            loss.backward()
            optimizer.step()

    run(batches[:WARMUP])
    return [_seconds(run, batches) / len(batches) for _ in range(repeats)]


def _seconds(fn, arg):
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per timing")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timings per side (the median is reported)"
    )
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive")

    minivae.set_backend(args.backend)
    minivae.seed(0)
    example = load_example()
    (x_train, _), _ = example.load_data(limit=args.steps * 64)
    batches = [x_train[i : i + 64] for i in range(0, len(x_train), 64)]

    print(
        f"lecture CNN autoencoder, batch 64, {args.steps} steps x {args.repeats} repeats, "
        f"{THREADS} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    ours = statistics.median(time_minivae(example, batches, args.repeats))
    print(
        f"minivae ({args.backend}): {ours * 1e3:6.1f} ms/step, {ours * STEPS_PER_EPOCH:6.1f} "
        "s/epoch"
    )
    try:
        theirs = statistics.median(time_torch(batches, args.repeats))
    except ImportError:
        print("PyTorch is not installed: no comparison")
        return
    print(f"PyTorch CPU:     {theirs * 1e3:6.1f} ms/step, {theirs * STEPS_PER_EPOCH:6.1f} s/epoch")
    print(f"ratio minivae / PyTorch: {ours / theirs:.2f} (target <= 2)")


if __name__ == "__main__":
    try:
        main()
    except (DataError, backend.BackendError) as e:
        print(f"bench_fashion: error: {e}", file=sys.stderr)
        sys.exit(1)
