"""Median epoch time of the Frey Face VAE: minivae beside PyTorch eager.

The model and recipe are examples/frey.py's defaults: encoder Flatten-Dense(200,
relu)-Dense(4), decoder Dense(200, relu)-Dense(1120) (sigmoid mean, floored
log-std), standard normal prior, diagonal posterior, estimator B with L = 1,
Adam lr 1e-3, batch 100, float32, 1768 faces to train and 197 to validate. An
epoch is what fit() times: the shuffled training steps and the validation pass.
The two run in turns, one epoch each, so both see the same load on the machine.
PyTorch runs on --torch-threads threads (default 2); NumPy's BLAS takes its thread
count from OPENBLAS_NUM_THREADS, so compare like with like. On a GPU, compare
`--backend cupy` with `--torch-device cuda`; `--json FILE` also writes the numbers there.

    MINIVAE_DATA=../shared/data python benchmarks/bench_frey.py [--epochs 20] [--backend numpy]
    OPENBLAS_NUM_THREADS=1 MINIVAE_DATA=../shared/data \
        python benchmarks/bench_frey.py --torch-threads 1
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import numpy as np

from minivae import backend, cli, train
from minivae.datasets import load_frey_faces, split_train_val
from minivae.files import write_json
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.vae import VAE

LATENT, HIDDEN, BATCH, LR, LOG_STD_MIN = 2, 200, 100, 1e-3, -5.0


def minivae_runner(x_train, x_val, seed=0):
    """One epoch of fit() per call; returns its seconds, the validation pass included as on
    PyTorch's side (fit's own history.seconds leaves it out)."""
    backend.seed(seed)
    encoder = Sequential([Flatten(), Dense(HIDDEN, "relu"), Dense(2 * LATENT)])
    decoder = Sequential([Dense(HIDDEN, "relu"), Dense(2 * 560)])
    encoder.build((28, 20))
    decoder.build((LATENT,))
    vae = VAE(encoder, decoder, log_std_min=LOG_STD_MIN)
    optimizer = Adam(vae.parameters(), lr=LR)
    history = train.History(seed=seed)

    def epoch() -> float:
        start = time.perf_counter()
        train.fit(
            vae,
            lambda x: vae.elbo(x),
            optimizer,
            x_train,
            x_val,
            epochs=len(history) + 1,
            batch_size=BATCH,
            seed=seed,
            verbose=False,
            history=history,
        )
        return time.perf_counter() - start  # fit read the metrics back: the device is done

    return epoch, history


def torch_runner(torch, x_train, x_val, seed=0, device="cpu"):
    """The same model and epoch in PyTorch eager mode."""
    nn = torch.nn
    torch.manual_seed(seed)
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(560, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT)
    )
    decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * 560))
    encoder, decoder = encoder.to(device), decoder.to(device)
    for layer in [*encoder, *decoder]:
        # glorot-uniform kernels, zero biases, as minivae and Keras
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR, eps=1e-7)  # Keras's (and minivae's) eps
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    xt, xv = torch.from_numpy(x_train).to(device), torch.from_numpy(x_val).to(device)

    def elbo(x):
        mu, log_var = encoder(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        h1, h2 = decoder(z).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + nn.functional.softplus(h2 - LOG_STD_MIN)
        flat = x.reshape(len(x), -1)
        log_px = (
            -0.5 * ((flat - torch.sigmoid(h1)) / torch.exp(log_std)) ** 2 - log_std - half_log_2pi
        ).sum(-1)
        kl = 0.5 * (mu**2 + torch.exp(log_var) - 1 - log_var).sum(-1)
        return (kl - log_px).mean()

    def epoch() -> float:
        start = time.perf_counter()
        for idx in torch.randperm(len(xt), device=device).split(BATCH):
            optimizer.zero_grad()
            loss = elbo(xt[idx])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val = sum(
                elbo(xv[i : i + BATCH]).item() * len(xv[i : i + BATCH])
                for i in range(0, len(xv), BATCH)
            )
        assert math.isfinite(val)  # .item() waited for the device
        return time.perf_counter() - start

    return epoch


def main(argv=None):
    p = cli.Parser(prog="bench_frey.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=20,
        help="timed epochs of each (default 20), after 2 warm-up epochs",
    )
    p.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    p.add_argument(
        "--torch-threads", type=cli.positive_int, default=2, help="PyTorch's threads (default 2)"
    )
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", help="also write the medians (seconds) to this JSON file")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    backend.set_backend(args.backend)
    faces = load_frey_faces()
    x_train, x_val = split_train_val(faces, val_fraction=0.1, seed=0)
    x_train, x_val = (x_train / 255).astype(np.float32), (x_val / 255).astype(np.float32)

    mv_epoch, history = minivae_runner(x_train, x_val)
    epochs = {"minivae": mv_epoch}
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
        epochs["torch"] = torch_runner(torch, x_train, x_val, device=args.torch_device)
    times = {name: [] for name in epochs}
    for i in range(2 + args.epochs):
        for name, epoch in epochs.items():
            seconds = epoch()
            if i >= 2:
                times[name].append(seconds)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"Frey Face VAE, {len(x_train)} train + {len(x_val)} validation faces, batch {BATCH}, "
        f"{args.epochs} epochs each after 2 warm-up, alternating"
    )
    print(
        f"minivae ({args.backend}) median epoch {1000 * medians['minivae']:7.1f} ms  "
        f"(final train loss {history['loss'][-1]:.1f})"
    )
    results = {
        "benchmark": "bench_frey",
        "median_seconds": {f"minivae ({args.backend})": medians["minivae"]},
    }
    if torch is None:
        print("PyTorch is not installed: no comparison")
    else:
        mv, pt = medians["minivae"], medians["torch"]
        where = "CUDA" if args.torch_device == "cuda" else f"CPU, {args.torch_threads} threads,"
        print(f"PyTorch {torch.__version__} {where} eager, median epoch {1000 * pt:7.1f} ms")
        print(f"minivae / PyTorch = {mv / pt:.2f}  (below 1: minivae faster)")
        results["median_seconds"][f"PyTorch {args.torch_device.upper()}"] = pt
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    sys.exit(cli.run(main, "bench_frey.py"))
