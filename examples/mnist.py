"""VAE and IWAE on binarised MNIST, as Burda, Grosse & Salakhutdinov (2016), in minivae.

Read it top to bottom: 1. the data (binarised afresh every epoch), 2. the model,
3. the objective (ELBO or IWAE bound, KL weight and warm-up), 4. Burda et al.'s schedule,
5. training with the collapse diagnostics each epoch, 6. the test log-likelihood,
7. the figures. docs/beyond.md explains every piece.

    python examples/mnist.py --objective iwae -k 5 --stages 2      # stages 0-1 of the recipe
    python examples/mnist.py --objective vae -k 1 --kl-warmup 3 --epochs 10
    python examples/mnist.py --limit 500 --epochs 2 --test-limit 100 --test-samples 50  # a quick try
    python examples/mnist.py --dataset fashion --epochs 5

The recipe (batch 20, Adam with eps 1e-4, stage i of 3^i epochs at lr 0.001 * 10^(-i/7),
i = 0..7, 3,280 epochs) is Burda et al.'s; --stages N runs its first N stages, --epochs E
one stage of E epochs at lr 0.001. Everything is written to --out: metrics.json,
history.csv, learning_curves.png, collapse.png, samples.png, reconstructions.png.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from minivae import backend, files, plots, train
from minivae.backend import BackendError
from minivae.datasets import (TEST_BINARIZATION_SEED, DataError, binarize_static, load_fashion_mnist,
                              load_mnist)
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE, collapse_diagnostics, kl_warmup

IMAGE_SHAPE = (28, 28)
STAGES = 8  # Burda et al.'s full schedule: 3^0 + ... + 3^7 = 3,280 epochs
DIAGNOSTIC_IMAGES = 1000  # test images whose posteriors give the per-epoch active units


def schedule(args) -> list[tuple[int, float]]:
    """(epochs, learning rate) of each stage: Burda et al.'s 3^i epochs at 0.001 * 10^(-i/7)."""
    if args.epochs is not None:
        return [(args.epochs, args.lr)]
    return [(3 ** i, args.lr * 10 ** (-i / 7)) for i in range(args.stages)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    started = time.perf_counter()
    backend.set_backend(args.backend)
    backend.seed(args.seed)  # the initial weights; each epoch then draws from (seed, epoch)

    # --- 1. Data: intensities as uint8; training images binarised on the device every epoch --
    (x_train, _), (x_test, _) = (load_fashion_mnist if args.dataset == "fashion" else load_mnist)()
    x_train, x_test = x_train[:args.limit], binarize_static(x_test[:args.test_limit])  # test: once, fixed seed
    if args.binarization == "static":  # one draw for the whole run instead of one per epoch
        x_train = binarize_static(x_train, seed=args.seed)
    x_test = x_test.astype(np.float32)  # 0/1
    say(f"{args.dataset}: {len(x_train)} training images ({args.binarization} binarisation), "
        f"{len(x_test)} test images (binarised once, seed {TEST_BINARIZATION_SEED})")

    # --- 2. The model: Burda et al.'s one stochastic layer, 784-200-200-50, tanh -------------
    l = args.latent_dim
    encoder = Sequential([Flatten(), Dense(200, "tanh"), Dense(200, "tanh"), Dense(2 * l)])
    encoder.build(IMAGE_SHAPE)
    decoder = Sequential([Dense(200, "tanh"), Dense(200, "tanh"), Dense(28 * 28)])  # Bernoulli logits
    decoder.build((l,))
    vae = VAE(encoder, decoder, likelihood="bernoulli")
    say(f"encoder: {encoder.count_params():,} parameters, decoder: {decoder.count_params():,}")

    # --- 3. The objective: -ELBO (k draws averaged) or -L_k; loss weights the KL by beta ------
    estimator = "iwae" if args.objective == "iwae" else "mc"

    def loss_fn(x):
        parts = vae.elbo(x, samples=args.k, estimator=estimator)
        parts["neg_elbo"] = parts["nll"] + parts["kl"]  # the true -ELBO (beta = 1), as reported
        return parts

    optimizer = Adam(vae.parameters(), lr=args.lr, beta1=0.9, beta2=0.999, eps=args.adam_eps)

    def step(x):
        if args.binarization == "dynamic":
            x = train.binarize(x)  # a fresh draw from the generator fit() seeds each epoch
        return train.train_step(loss_fn, optimizer, x)

    weight = kl_warmup(args.kl_warmup, args.beta) if args.kl_warmup else args.beta

    # --- 4-5. Burda et al.'s stages, with the collapse diagnostics after every epoch ---------
    diagnostic_batches = [Tensor(backend.asarray(x_test[i:i + 500]))
                          for i in range(0, min(DIAGNOSTIC_IMAGES, len(x_test)), 500)]
    per_epoch = {"kl_per_dim": [], "mean_variance": []}

    def diagnose(history):
        d = collapse_diagnostics(vae, diagnostic_batches)
        history.metrics.setdefault("active_units", []).append(d["active_units"])
        for key in per_epoch:
            per_epoch[key].append(d[key])

    history, total = None, 0
    for i, (epochs, lr) in enumerate(schedule(args)):
        optimizer.lr, total = lr, total + epochs
        say(f"stage {i}: {epochs} epochs at lr {lr:.6g}")
        history = train.fit(vae, loss_fn, optimizer, x_train, epochs=total, batch_size=args.batch_size,
                            seed=args.seed, verbose=not args.quiet, history=history, step=step,
                            kl_weight=weight, on_epoch_end=diagnose)
        if history.stopped:
            break
    if len(history) == 0:
        raise RuntimeError(f"training stopped before its first epoch finished: {history.stopped}")
    train_seconds = time.perf_counter() - started

    # --- 6. Test: the ELBO, the training bound, and log p(x) with K importance samples -------
    backend.seed(args.seed)  # the same draws however training went
    vae.beta = 1.0  # the true bound on the test set, whatever weight trained
    chunk_start = time.perf_counter()
    test = train.evaluate(vae, loss_fn, x_test, batch_size=100)
    log_px = np.concatenate([
        backend.to_numpy(vae.log_marginal(Tensor(backend.asarray(x_test[i:i + args.test_batch])),
                                          samples=args.test_samples, chunk=args.test_chunk))
        for i in range(0, len(x_test), args.test_batch)])
    test_seconds = time.perf_counter() - chunk_start
    final = collapse_diagnostics(vae, [Tensor(backend.asarray(x_test[i:i + 500]))
                                       for i in range(0, len(x_test), 500)])
    metrics = {
        "test_nll": float(-log_px.mean()),  # nats, lower is better: -log p(x), K importance samples
        "test_nll_stderr": float(log_px.std(ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else None,
        "test_samples": args.test_samples, "test_images": len(x_test), "test_seconds": test_seconds,
        "test_neg_elbo": test["neg_elbo"], "test_loss": test["loss"],
        "active_units": final["active_units"], "kl_per_dim": final["kl_per_dim"],
        "mean_variance": final["mean_variance"],
        "epochs": len(history), "stages": None if args.epochs else args.stages, "stopped": history.stopped,
        "train_seconds": train_seconds, "total_seconds": time.perf_counter() - started,
        "history_kl_per_dim": per_epoch["kl_per_dim"], "history_mean_variance": per_epoch["mean_variance"],
        "backend": args.backend, "flags": vars(args),
    }
    files.write_json(os.path.join(args.out, "metrics.json"), metrics)
    files.write_text(os.path.join(args.out, "history.csv"), history.to_csv())

    # --- 7. Figures -----------------------------------------------------------------------
    def out(name):
        return os.path.join(args.out, name)

    curves = {k: v for k, v in history.metrics.items() if k in ("loss", "neg_elbo", "kl", "active_units")}
    plots.learning_curves(curves, out("learning_curves.png"), title=f"{args.objective} k={args.k} on {args.dataset}")
    plots.collapse(per_epoch["mean_variance"], final["kl_per_dim"], out("collapse.png"))
    plots.image_grid(vae.sample(100).numpy(), out("samples.png"), title="decoded means of draws from the prior")
    with no_grad():
        n = min(20, len(x_test))
        q = vae.encode(Tensor(backend.asarray(x_test[:n])))
        plots.reconstructions(x_test[:n], vae.decode(q.loc).mean.numpy(), out("reconstructions.png"))
    say(f"test NLL {metrics['test_nll']:.2f} nats (K={args.test_samples}, {len(x_test)} images, "
        f"{test_seconds:.0f} s), test -ELBO {test['neg_elbo']:.2f}, {final['active_units']} active units; "
        f"wrote {args.out}")
    return metrics


# --- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other error of this script
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="mnist.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist", help="default mnist")
    p.add_argument("--objective", choices=("vae", "iwae"), default="vae",
                   help="vae: the ELBO averaged over k draws; iwae: the k-sample IWAE bound (default vae)")
    p.add_argument("-k", "--k", type=int, default=1, help="samples per image in the objective (default 1)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight of the training loss (default 1)")
    p.add_argument("--kl-warmup", type=int, default=0,
                   help="raise the KL weight linearly from 0 to --beta over this many epochs (default 0: off)")
    p.add_argument("--stages", type=int, default=STAGES,
                   help=f"run the first N stages of Burda et al.'s schedule (default {STAGES}: all)")
    p.add_argument("--epochs", type=int, help="instead of the stages: one stage of this many epochs at --lr")
    p.add_argument("--lr", type=float, default=1e-3, help="the first stage's learning rate (default 0.001)")
    p.add_argument("--batch-size", type=int, default=20, help="images per step (default 20)")
    p.add_argument("--adam-eps", type=float, default=1e-4, help="Adam's epsilon (default 1e-4)")
    p.add_argument("--latent-dim", type=int, default=50, help="dimensions of z (default 50)")
    p.add_argument("--binarization", choices=("dynamic", "static"), default="dynamic",
                   help="training images: a fresh draw every epoch, or one draw (default dynamic)")
    p.add_argument("--test-samples", type=int, default=5000, help="importance samples K for log p(x) (default 5000)")
    p.add_argument("--test-chunk", type=int, default=500, help="draws per chunk of that estimate (default 500)")
    p.add_argument("--test-batch", type=int, default=20, help="test images per chunk (default 20)")
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and every draw (default 0)")
    p.add_argument("--backend", choices=("numpy", "cupy", "strict"), default="numpy", help="default numpy")
    p.add_argument("--out", default=os.path.join("runs", "mnist"), help="folder for every output (default runs/mnist)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    for name in ("k", "stages", "batch_size", "latent_dim", "test_samples", "test_chunk", "test_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("epochs", "limit", "test_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.test_limit is not None and args.test_limit < 2:
        p.error(f"--test-limit must be at least 2 (active units need a variance), got {args.test_limit}")
    if args.kl_warmup < 0:
        p.error(f"--kl-warmup must be 0 or more, got {args.kl_warmup}")
    for name in ("lr", "adam_eps"):
        if not 0 < getattr(args, name) < float("inf"):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.beta < float("inf"):
        p.error(f"--beta must be 0 or more, got {args.beta}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} exists and is not a folder")
    return args


if __name__ == "__main__":
    debug = "--debug" in sys.argv[1:] or os.environ.get("MINIVAE_DEBUG") == "1"
    try:
        main()
    except (DataError, ValueError, BackendError, RuntimeError, OSError) as e:
        if debug:
            raise
        sys.exit(f"mnist.py: error: {' '.join(str(e).split())}")
