"""Median epoch time of the Frey Face VAE: minivae beside PyTorch CPU eager.

The model and recipe are examples/frey.py's defaults: encoder Flatten-Dense(200,
relu)-Dense(4), decoder Dense(200, relu)-Dense(1120) (sigmoid mean, floored
log-std), standard normal prior, diagonal posterior, estimator B with L = 1,
Adam lr 1e-3, batch 100, float32, 1768 faces to train and 197 to validate. An
epoch is what fit() times: the shuffled training steps and the validation pass.
The two run in turns, one epoch each, so both see the same load on the machine.
PyTorch runs on --torch-threads threads (default 2); NumPy's BLAS takes its thread
count from OPENBLAS_NUM_THREADS, so compare like with like:

    MINIVAE_DATA=../shared/data python benchmarks/bench_frey.py [--epochs 20] [--backend numpy]
    OPENBLAS_NUM_THREADS=1 MINIVAE_DATA=../shared/data python benchmarks/bench_frey.py --torch-threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

from minivae import backend, train
from minivae.datasets import load_frey_faces, split_train_val
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.vae import VAE

LATENT, HIDDEN, BATCH, LR, LOG_STD_MIN = 2, 200, 100, 1e-3, -5.0


def minivae_runner(x_train, x_val, seed=0):
    """One epoch of fit() per call; returns its seconds as fit() measured them."""
    backend.seed(seed)
    encoder = Sequential([Flatten(), Dense(HIDDEN, "relu"), Dense(2 * LATENT)])
    decoder = Sequential([Dense(HIDDEN, "relu"), Dense(2 * 560)])
    encoder.build((28, 20))
    decoder.build((LATENT,))
    vae = VAE(encoder, decoder, log_std_min=LOG_STD_MIN)
    optimizer = Adam(vae.parameters(), lr=LR)
    history = train.History(seed=seed)

    def epoch() -> float:
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
        return history.seconds[-1]

    return epoch, history


def torch_runner(torch, x_train, x_val, seed=0):
    """The same model and epoch in PyTorch eager mode."""
    import time

    nn = torch.nn
    torch.manual_seed(seed)
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(560, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT)
    )
    decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * 560))
    for layer in [*encoder, *decoder]:
        # glorot-uniform kernels, zero biases, as minivae and Keras
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR, eps=1e-7)  # Keras's (and minivae's) eps
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    xt, xv = torch.from_numpy(x_train), torch.from_numpy(x_val)

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
        for idx in torch.randperm(len(xt)).split(BATCH):
            optimizer.zero_grad()
            loss = elbo(xt[idx])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val = sum(
                elbo(xv[i : i + BATCH]).item() * len(xv[i : i + BATCH])
                for i in range(0, len(xv), BATCH)
            )
        assert math.isfinite(val)
        return time.perf_counter() - start

    return epoch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="timed epochs of each (default 20), after 2 warm-up epochs",
    )
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "strict"))
    p.add_argument("--torch-threads", type=int, default=2, help="PyTorch's threads (default 2)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    backend.set_backend(args.backend)
    faces = load_frey_faces()
    x_train, x_val = split_train_val(faces, val_fraction=0.1, seed=0)
    x_train, x_val = (x_train / 255).astype(np.float32), (x_val / 255).astype(np.float32)

    mv_epoch, history = minivae_runner(x_train, x_val)
    pt_epoch = torch_runner(torch, x_train, x_val)
    times = {"minivae": [], "torch": []}
    for i in range(2 + args.epochs):
        for name, epoch in (("minivae", mv_epoch), ("torch", pt_epoch)):
            seconds = epoch()
            if i >= 2:
                times[name].append(seconds)

    mv, pt = statistics.median(times["minivae"]), statistics.median(times["torch"])
    print(
        f"Frey Face VAE, {len(x_train)} train + {len(x_val)} validation faces, batch {BATCH}, "
        f"{args.epochs} epochs each after 2 warm-up, alternating"
    )
    print(
        f"minivae ({args.backend}) median epoch {1000 * mv:7.1f} ms  (final train loss "
        f"{history['loss'][-1]:.1f})"
    )
    print(
        f"PyTorch {torch.__version__} CPU eager, {args.torch_threads} threads, median epoch "
        f"{1000 * pt:7.1f} ms"
    )
    print(f"minivae / PyTorch = {mv / pt:.2f}  (below 1: minivae faster)")


if __name__ == "__main__":
    main()
