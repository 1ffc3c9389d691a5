"""Where a training step's time goes: forward, backward and optimiser, and each op's share.

Times the same training step the benchmarks time (fit()'s: batch to the device, forward,
backward, optimiser), for the lecture's CNN autoencoder (`fashion`), the Frey Face VAE
(`frey`) or pytorch/examples' MNIST VAE recipe (`mnist`), and prints the median of each
phase. Then it runs the steps once more with every op timed: an op's forward time is the
time since the op before it was recorded (its own work and the glue before it), its
backward time that of its backward function. Medians need a quiet machine; one thread
(the default here) is steadier than two.

    MINIVAE_DATA=../shared/data python benchmarks/profile_step.py fashion [--steps 40]
    OMP_NUM_THREADS=2 MINIVAE_DATA=../shared/data python benchmarks/profile_step.py mnist
"""

from __future__ import annotations

import os

THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "1"))  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))

import collections  # noqa: E402 (the thread count must be set before NumPy is imported)
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import minivae  # noqa: E402
from minivae import cli, datasets, functional, linalg, tensor  # noqa: E402
from minivae.nn import Dense, Flatten, Sequential, conv, layers  # noqa: E402
from minivae.optim import Adam  # noqa: E402
from minivae.train import to_device  # noqa: E402
from minivae.vae import VAE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OP_MODULES = (tensor, functional, linalg, conv, layers)  # the modules that record ops


def load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fashion(steps):
    example = load("examples/fashion_autoencoder.py")
    (x, _), _ = example.load_data(limit=steps * 64)
    model = Sequential([example.make_encoder("lecture"), example.make_decoder("lecture")])
    model.build(example.IMAGE_SHAPE)
    return model, lambda xb: {"loss": example.binary_crossentropy(xb, model(xb))}, x, 64, {}


def frey(steps):
    faces = datasets.load_frey_faces()
    encoder = Sequential([Flatten(), Dense(200, "relu"), Dense(4)])
    decoder = Sequential([Dense(200, "relu"), Dense(2 * 560)])
    encoder.build((28, 20))
    decoder.build((2,))
    vae = VAE(encoder, decoder, log_std_min=-5.0)
    return vae, vae.elbo, faces, 100, {}


def mnist(steps):
    (x, _), _ = datasets.load_mnist()
    vae = load("docs/minivae_vae.py").make_vae()
    return vae, lambda xb: vae.elbo(xb, reduction="sum"), x, 128, {"eps": 1e-8}


MODELS = {"fashion": fashion, "frey": frey, "mnist": mnist}


def main(argv=None):
    parser = cli.Parser(prog="profile_step.py", description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--steps", type=cli.positive_int, default=40, help="steps timed")
    args = parser.parse_args(argv)
    minivae.seed(0)
    model, loss_fn, images, batch, adam = MODELS[args.model](args.steps)
    # consecutive batches, round again where the data run out (Frey has 1,965 faces)
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    batches = (batches * args.steps)[: args.steps]
    optimizer = Adam(model.parameters(), lr=1e-3, **adam)

    def step(images):
        start = time.perf_counter()
        x = to_device(images)
        optimizer.zero_grad()
        loss = loss_fn(x)["loss"]
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        return forward - start, backward - forward, time.perf_counter() - backward

    for images in batches[:3]:
        step(images)  # warm-up: caches, the optimiser's flat arrays
    phases = [step(images) for images in batches]
    medians = [statistics.median(p) for p in zip(*phases)]
    total = sum(medians)
    print(f"{args.model}: median step {total * 1e3:.2f} ms ({THREADS} thread(s))")
    for name, t in zip(["forward (and to_device)", "backward", "optimizer.step"], medians):
        print(f"  {name:24} {t * 1e3:6.2f} ms  {100 * t / total:4.1f}%")

    forward, backward, count = collections.Counter(), collections.Counter(), collections.Counter()
    last = [0.0]
    record = tensor.record

    def timed_record(data, parents, op_backward, name):
        now = time.perf_counter()
        forward[name] += now - last[0]
        count[name] += 1

        def timed_backward(g):
            start = time.perf_counter()
            grads = op_backward(g)
            backward[name] += time.perf_counter() - start
            return grads

        out = record(data, parents, timed_backward, name)
        last[0] = time.perf_counter()
        return out

    for module in OP_MODULES:
        module.record = timed_record
    try:
        for images in batches:
            last[0] = time.perf_counter()
            step(images)
    finally:
        for module in OP_MODULES:
            module.record = record
    n = len(batches)
    print("  per op, ms per step:      calls  forward  backward")
    for name in sorted(count, key=lambda k: -(forward[k] + backward[k])):
        print(
            f"    {name:22} {count[name] // n:5d} {forward[name] / n * 1e3:8.3f} "
            f"{backward[name] / n * 1e3:8.3f}"
        )


if __name__ == "__main__":
    sys.exit(cli.run(main, "profile_step.py"))
