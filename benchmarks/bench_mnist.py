"""pytorch/examples' MNIST VAE recipe: minivae beside PyTorch eager, training and log p(x).

The model is docs/minivae_vae.py's (784-400-20, ReLU, two encoder heads, Bernoulli
pixels, summed BCE + KLD, Adam with lr 1e-3 and PyTorch's eps, batch 128), and the
same layers in PyTorch (docs/pytorch_vae.py's VAE) with the same starting weights.
Two measurements, each side `--repeats` times after a warm-up, medians reported:

* a training step as fit() takes it: move a batch of uint8 images to the device,
  forward, loss, backward, Adam; `--steps` consecutive steps over the first MNIST
  training images, the median time per step scaled to an epoch of 469 steps (60,000
  images in batches of 128);
* VAE.log_marginal, importance-sampled log p(x) with `--samples` draws per image
  (`--chunk` at a time; minivae takes fewer where a chunk would pass vae.BLOCK numbers,
  26 for 100 images, and the PyTorch side takes as many) over the first `--images` test
  images, beside the same estimator written in PyTorch, both on the starting weights
  (timed before training).

PyTorch's side takes the loss from the logits (binary_cross_entropy_with_logits, the
same loss as the recipe's sigmoid + binary_cross_entropy, and no slower), as minivae's
Bernoulli likelihood does.

Both sides use the same number of threads: NumPy's BLAS reads OMP_NUM_THREADS when it
loads, so it is set (default 2) before NumPy is imported; PyTorch gets
torch.set_num_threads(--torch-threads), by default the same number. On a GPU, compare
`--backend cupy` with `--torch-device cuda`; `--json FILE` also writes the numbers.

    MINIVAE_DATA=../shared/data python benchmarks/bench_mnist.py [--steps 50] [--repeats 5]
    OMP_NUM_THREADS=1 MINIVAE_DATA=../shared/data python benchmarks/bench_mnist.py
"""

from __future__ import annotations

import os

THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "2"))  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))
os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))

import importlib.util  # noqa: E402 (the thread count must be set before NumPy is imported)
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import minivae  # noqa: E402
from minivae import backend, cli  # noqa: E402
from minivae.datasets import load_mnist  # noqa: E402
from minivae.files import write_json  # noqa: E402
from minivae.optim import Adam  # noqa: E402
from minivae.train import to_device, train_step  # noqa: E402

BATCH = 128
STEPS_PER_EPOCH = 469  # ceil(60000 / 128)
WARMUP = 3


def load_recipe():
    """docs/minivae_vae.py as a module: the benchmark times exactly the model it trains."""
    path = Path(__file__).resolve().parent.parent / "docs" / "minivae_vae.py"
    spec = importlib.util.spec_from_file_location("minivae_vae", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_minivae(vae, batches, x_test, args):
    """(seconds per training step, one per repeat), (seconds per log_marginal, one per repeat),
    and the mean log p(x) on the starting weights (log_marginal is timed before training, so
    both sides estimate it for the same model: the two means agree up to sampling noise)."""
    optimizer = Adam(vae.parameters(), lr=1e-3, eps=1e-8)  # PyTorch's eps, as the recipe

    def loss_fn(x):
        return vae.elbo(x, reduction="sum")

    def train(chunk):
        for images in chunk:
            parts = train_step(loss_fn, optimizer, to_device(images))
        float(parts["loss"].numpy())  # wait for the device: CuPy runs asynchronously

    def log_marginal():
        log_px = vae.log_marginal(x, samples=args.samples, chunk=args.chunk)
        return float(log_px.mean().numpy())

    x = to_device(x_test)
    log_px = log_marginal()
    marginals = [_seconds(log_marginal) for _ in range(args.repeats)]
    train(batches[:WARMUP])
    steps = [_seconds(train, batches) / len(batches) for _ in range(args.repeats)]
    return steps, marginals, log_px


def torch_model(torch, vae, device):
    """docs/pytorch_vae.py's VAE (fc1, fc21, fc22, fc3, fc4), holding minivae's weights."""
    nn = torch.nn
    layers = {
        "fc1": vae.encoder.fc1,
        "fc21": vae.encoder.fc21,
        "fc22": vae.encoder.fc22,
        "fc3": vae.decoder.layers[0],
        "fc4": vae.decoder.layers[1],
    }
    model = nn.Module()
    for name, dense in layers.items():
        kernel = dense.kernel.numpy()  # (in, out): nn.Linear's weight is its transpose
        linear = nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(dense.bias.numpy().copy()))
        setattr(model, name, linear)
    return model.to(device)


def time_torch(torch, model, batches, x_test, args, device="cpu"):
    """The same measurements in PyTorch eager mode."""
    F = torch.nn.functional
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def encode(x):
        h1 = F.relu(model.fc1(x.view(-1, 784)))
        return model.fc21(h1), model.fc22(h1)

    def decode(z):  # logits; the recipe's sigmoid + binary_cross_entropy is the same loss
        return model.fc4(F.relu(model.fc3(z)))

    def loss_function(x):  # pytorch/examples' BCE + KLD, summed over the batch
        mu, logvar = encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        bce = F.binary_cross_entropy_with_logits(decode(z), x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    def train(chunk):
        for images in chunk:
            x = torch.from_numpy(images).to(device).float() / 255
            optimizer.zero_grad()
            loss = loss_function(x)
            loss.backward()
            optimizer.step()
        loss.item()  # wait for the device, as minivae's side does

    def log_marginal():  # VAE.log_marginal's estimator: log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)
        with torch.no_grad():
            mu, logvar = encode(x)
            std = torch.exp(0.5 * logvar)
            # as many draws at a time as minivae takes, so that both sides stream the same sizes
            draws = max(1, min(args.chunk, minivae.vae.BLOCK // x.numel()))
            per_chunk = []
            for start in range(0, args.samples, draws):
                eps = torch.randn(min(draws, args.samples - start), *mu.shape, device=device)
                z = mu + std * eps
                log_px_z = -F.binary_cross_entropy_with_logits(
                    decode(z), x.view(-1, 784).expand(len(z), -1, -1), reduction="none"
                ).sum(-1)
                log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
                log_qz = (-0.5 * eps**2 - 0.5 * logvar - half_log_2pi).sum(-1)
                per_chunk.append(torch.logsumexp(log_px_z + log_pz - log_qz, dim=0))
            log_px = torch.logsumexp(torch.stack(per_chunk), dim=0) - math.log(args.samples)
            return log_px.mean().item()

    x = torch.from_numpy(x_test).to(device)
    log_px = log_marginal()
    marginals = [_seconds(log_marginal) for _ in range(args.repeats)]
    train(batches[:WARMUP])
    steps = [_seconds(train, batches) / len(batches) for _ in range(args.repeats)]
    return steps, marginals, log_px


def _seconds(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv=None):
    parser = cli.Parser(prog="bench_mnist.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=cli.positive_int, default=50, help="training steps per timing (default 50)"
    )
    parser.add_argument(
        "--repeats",
        type=cli.positive_int,
        default=5,
        help="timings per side (the median is reported; default 5)",
    )
    parser.add_argument(
        "--images",
        type=cli.positive_int,
        default=100,
        help="test images log_marginal is timed on (default 100)",
    )
    parser.add_argument(
        "--samples",
        type=cli.positive_int,
        default=1000,
        help="importance samples per image (default 1000)",
    )
    parser.add_argument(
        "--chunk", type=cli.positive_int, default=100, help="draws at a time (default 100)"
    )
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    parser.add_argument(
        "--torch-threads",
        type=cli.positive_int,
        default=THREADS,
        help="PyTorch's threads (default: OMP_NUM_THREADS, 2 unless set)",
    )
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", help="also write the medians (seconds) to this JSON file")
    args = parser.parse_args(argv)

    minivae.set_backend(args.backend)
    minivae.seed(0)
    (x_train, _), (x_test, _) = load_mnist()
    batches = [x_train[i : i + BATCH] for i in range(0, args.steps * BATCH, BATCH)]
    x_test = (x_test[: args.images] / 255).astype(np.float32)
    vae = load_recipe().make_vae()

    try:
        import torch
    except ImportError:
        torch = None
    else:  # the same starting weights
        torch.set_num_threads(args.torch_threads)
        torch.manual_seed(0)
        model = torch_model(torch, vae, args.torch_device)

    print(
        f"MNIST VAE recipe (784-400-20, Bernoulli, summed loss, Adam), batch {BATCH}, "
        f"{args.steps} steps x {args.repeats} repeats; log_marginal: {args.images} test "
        f"images x {args.samples} samples, chunk {args.chunk}; {THREADS} BLAS thread(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    steps, marginals, log_px = time_minivae(vae, batches, x_test, args)
    medians = {"minivae": (statistics.median(steps), statistics.median(marginals))}
    ours = f"minivae ({args.backend})"
    results = {
        "benchmark": "bench_mnist",
        "threads": THREADS,
        "steps_per_epoch": STEPS_PER_EPOCH,
        "seconds_per_step": {ours: medians["minivae"][0]},
        "seconds_per_log_marginal": {ours: medians["minivae"][1]},
        "mean_log_px": {ours: log_px},
    }
    _report(ours, medians["minivae"], log_px)
    if torch is None:
        print("PyTorch is not installed: no comparison")
    else:
        steps, marginals, log_px = time_torch(
            torch, model, batches, x_test, args, args.torch_device
        )
        theirs = f"PyTorch {args.torch_device.upper()}"
        medians["torch"] = (statistics.median(steps), statistics.median(marginals))
        results["seconds_per_step"][theirs] = medians["torch"][0]
        results["seconds_per_log_marginal"][theirs] = medians["torch"][1]
        results["mean_log_px"][theirs] = log_px
        where = "" if args.torch_device == "cuda" else f" ({args.torch_threads} threads)"
        _report(theirs + where, medians["torch"], log_px)
        (mv_step, mv_marginal), (pt_step, pt_marginal) = medians["minivae"], medians["torch"]
        print(
            f"ratio minivae / PyTorch: epoch {mv_step / pt_step:.2f}, "
            f"log_marginal {mv_marginal / pt_marginal:.2f}  (below 1: minivae faster)"
        )
    if args.json:
        write_json(args.json, results)


def _report(name, medians, log_px):
    step, marginal = medians
    print(
        f"{name + ':':<28} {step * 1e3:6.2f} ms/step, {step * STEPS_PER_EPOCH:6.2f} s/epoch; "
        f"log_marginal {marginal * 1e3:7.1f} ms (mean log p(x) {log_px:.1f})"
    )


if __name__ == "__main__":
    sys.exit(cli.run(main, "bench_mnist.py"))
