"""VAE and IWAE on binarised MNIST, as Burda, Grosse & Salakhutdinov (2016), in minivae.

Read it top to bottom: 1. the data (binarised afresh every epoch), 2. the model,
3. the objective (ELBO or IWAE bound, KL weight and warm-up), 4. Burda et al.'s schedule,
5. training with the collapse diagnostics each epoch, 6. the test log-likelihood,
7. the figures. docs/beyond.md explains every piece.

    python examples/mnist.py --objective iwae -k 5 --stages 2      # stages 0-1 of the recipe
    python examples/mnist.py --objective vae -k 1 --kl-warmup 3 --epochs 10
    python examples/mnist.py --limit 500 --epochs 2 --test-limit 100 --test-samples 50  # quick
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
from minivae.conditional import ConditionalVAE
from minivae.datasets import (
    TEST_BINARIZATION_SEED,
    DataError,
    binarize_static,
    load_fashion_mnist,
    load_mnist,
)
from minivae.hierarchical import HierarchicalVAE, layer_diagnostics
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE, collapse_diagnostics, kl_warmup

IMAGE_SHAPE = (28, 28)
STAGES = 8  # Burda et al.'s full schedule: 3^0 + ... + 3^7 = 3,280 epochs
CLASSES = 10
DIAGNOSTIC_IMAGES = 1000  # test images whose posteriors give the per-epoch active units


def schedule(args) -> list[tuple[int, float]]:
    """(epochs, learning rate) of each stage: Burda et al.'s 3^i epochs at 0.001 * 10^(-i/7)."""
    if args.epochs is not None:
        return [(args.epochs, args.lr)]
    return [(3**i, args.lr * 10 ** (-i / 7)) for i in range(args.stages)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    started = time.perf_counter()
    backend.set_backend(args.backend)
    backend.seed(args.seed)  # the initial weights; each epoch then draws from (seed, epoch)
    os.makedirs(args.out, exist_ok=True)  # an unwritable --out fails now, not after training

    # --- 1. Data: intensities as uint8; training images binarised on the device every epoch --
    load = load_fashion_mnist if args.dataset == "fashion" else load_mnist
    (x_train, y_train), (x_test, y_test) = load()
    x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    x_test = binarize_static(x_test)  # once, with the fixed seed: every model sees the same images
    if args.binarization == "static":  # one draw for the whole run instead of one per epoch
        x_train = binarize_static(x_train, seed=args.seed) * np.uint8(255)
    x_test = x_test.astype(np.float32)  # 0/1
    say(
        f"{args.dataset}: {len(x_train)} training images ({args.binarization} binarisation), "
        f"{len(x_test)} test images (binarised once, seed {TEST_BINARIZATION_SEED})"
    )
    if args.conditional:  # fit() hands out rows of one array: each row carries its label at the end
        x_train, x_test = pack(x_train, y_train), pack(x_test, y_test)

    # --- 2. The model: Burda et al.'s architectures, tanh, Bernoulli output -------------------
    vae = build_model(args)
    say(
        f"{args.layers} stochastic layer(s){', conditional' if args.conditional else ''}: "
        f"{sum(int(np.prod(p.shape)) for p in vae.parameters()):,} parameters"
    )

    # --- 3. The objective: -ELBO (k draws averaged) or -L_k; loss weights the KL by beta ------
    estimator = "iwae" if args.objective == "iwae" else "mc"

    def objective(x, y=None):
        labels = () if y is None else (y,)  # a conditional VAE takes the labels too
        parts = vae.elbo(x, *labels, samples=args.k, estimator=estimator)
        parts["neg_elbo"] = parts["nll"] + parts["kl"]  # the true -ELBO (beta = 1), as reported
        return parts

    def loss_fn(batch):
        return objective(*unpack(batch)) if args.conditional else objective(batch)

    optimizer = Adam(vae.parameters(), lr=args.lr, beta1=0.9, beta2=0.999, eps=args.adam_eps)

    def step(batch):
        x, y = unpack(batch) if args.conditional else (batch, None)
        if args.binarization == "dynamic":
            x = train.binarize(x)  # a fresh draw from the generator fit() seeds each epoch
        optimizer.zero_grad()
        parts = objective(x, y)
        parts["loss"].backward()
        optimizer.step()
        return parts

    weight = kl_warmup(args.kl_warmup, args.beta) if args.kl_warmup else args.beta

    # --- 4-5. Burda et al.'s stages, with the collapse diagnostics after every epoch ---------
    diagnostic_batches = batches(x_test[:DIAGNOSTIC_IMAGES], args.conditional)
    per_epoch = {"kl_per_dim": [], "mean_variance": []}

    def diagnose(history):
        d = diagnostics(vae, diagnostic_batches)
        for key, value in d.items():
            if key.startswith("active_units"):
                history.metrics.setdefault(key, []).append(value)
            else:
                per_epoch[key].append(value)

    history, total = None, 0
    for i, (epochs, lr) in enumerate(schedule(args)):
        optimizer.lr, total = lr, total + epochs
        say(f"stage {i}: {epochs} epochs at lr {lr:.6g}")
        history = train.fit(
            vae,
            loss_fn,
            optimizer,
            x_train,
            epochs=total,
            batch_size=args.batch_size,
            seed=args.seed,
            verbose=not args.quiet,
            history=history,
            step=step,
            kl_weight=weight,
            on_epoch_end=diagnose,
        )
        if history.stopped:
            break
    if len(history) == 0:
        raise RuntimeError(f"training stopped before its first epoch finished: {history.stopped}")
    train_seconds = time.perf_counter() - started

    # --- 6. Test: the ELBO, the training bound, and log p(x) with K importance samples -------
    backend.seed(args.seed)  # the same draws however training went
    vae.beta = 1.0  # the true bound on the test set, whatever weight trained
    test = train.evaluate(vae, loss_fn, x_test, batch_size=100)
    test_start = time.perf_counter()
    log_px = np.concatenate(
        [  # a few images at a time: K draws of each must fit in memory
            vae.log_marginal(*batch, samples=args.test_samples, chunk=args.test_chunk).numpy()
            for batch in batches(x_test, args.conditional, args.test_batch)
        ]
    )
    test_seconds = time.perf_counter() - test_start
    final = diagnostics(vae, batches(x_test, args.conditional))
    metrics = {
        "test_nll": float(
            -log_px.mean()
        ),  # nats, lower is better: -log p(x) (-log p(x|y) if conditional)
        "test_nll_stderr": float(log_px.std(ddof=1) / np.sqrt(len(log_px))),
        "test_samples": args.test_samples,
        "test_images": len(x_test),
        "test_seconds": test_seconds,
        "test_neg_elbo": test["neg_elbo"],
        "test_loss": test["loss"],
        **final,
        "epochs": len(history),
        "stages": None if args.epochs else args.stages,
        "stopped": history.stopped,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        **{f"history_{k}": v for k, v in per_epoch.items()},
        "backend": args.backend,
        "flags": vars(args),
    }
    files.write_json(os.path.join(args.out, "metrics.json"), metrics)
    files.write_text(os.path.join(args.out, "history.csv"), history.to_csv())

    # --- 7. Figures -----------------------------------------------------------------------
    def out(name):
        return os.path.join(args.out, name)

    curves = {
        k: v for k, v in history.metrics.items() if k in ("loss", "neg_elbo", "kl") or "active" in k
    }
    plots.learning_curves(
        curves, out("learning_curves.png"), title=f"{args.objective} k={args.k} on {args.dataset}"
    )
    if "kl_per_dim" in final:
        plots.collapse(per_epoch["mean_variance"], final["kl_per_dim"], out("collapse.png"))
    figures(vae, args, x_test, out)
    say(
        f"test NLL {metrics['test_nll']:.2f} nats (K={args.test_samples}, {len(x_test)} images, "
        f"{test_seconds:.0f} s), test -ELBO {test['neg_elbo']:.2f}, "
        f"active units {', '.join(str(v) for k, v in final.items() if k.startswith('active'))}; "
        f"wrote {args.out}"
    )
    return metrics


def build_model(args):
    """Burda et al.'s networks: 784-200-200-50 for one stochastic layer; for two, 784-200-200-100
    in q(z1|x), 100-100-100-50 in q(z2|z1), and the mirror in p. tanh hidden units."""

    def mlp(sizes, out_units, inputs):
        net = Sequential([Flatten()] + [Dense(n, "tanh") for n in sizes] + [Dense(out_units)])
        net.build(inputs)
        return net

    pixels = 28 * 28
    if args.layers == 2:
        return HierarchicalVAE(
            q_z1=mlp([200, 200], 2 * 100, IMAGE_SHAPE),
            q_z2=mlp([100, 100], 2 * 50, (100,)),
            p_z1=mlp([100, 100], 2 * 100, (50,)),
            p_x=mlp([200, 200], pixels, (100,)),
        )
    l = args.latent_dim
    if args.conditional:  # the label joins each network's input
        return ConditionalVAE(
            mlp([200, 200], 2 * l, (pixels + CLASSES,)),
            mlp([200, 200], pixels, (l + CLASSES,)),
            classes=CLASSES,
            likelihood="bernoulli",
        )
    return VAE(
        mlp([200, 200], 2 * l, IMAGE_SHAPE), mlp([200, 200], pixels, (l,)), likelihood="bernoulli"
    )


def pack(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Images (N, 28, 28) and labels (N,) as rows (N, 785): the pixels, then the label / 255 for
    float images or the label itself for uint8 ones (to_device divides those by 255)."""
    label = (
        y[:, None].astype(x.dtype) if x.dtype == np.uint8 else (y[:, None] / 255).astype(x.dtype)
    )
    return np.concatenate([x.reshape(len(x), -1), label], axis=1)


def unpack(batch: Tensor):
    """A device batch of packed rows (values in [0, 1]) -> (images (B, 28, 28), labels (B,))."""
    xp, data = backend.xp(), batch.data
    return Tensor(xp.reshape(data[:, :-1], (-1, *IMAGE_SHAPE))), xp.round(data[:, -1] * 255)


def batches(x: np.ndarray, conditional: bool, size: int = 500) -> list[tuple]:
    """Device batches of a host array, each as the arguments the model's methods take: (x,)
    or (x, y)."""
    out = [Tensor(backend.asarray(x[i : i + size])) for i in range(0, len(x), size)]
    return [unpack(b) if conditional else (b,) for b in out]


def diagnostics(model, batches_) -> dict:
    """Active units (and, for one stochastic layer, each unit's KL and posterior-mean variance)."""
    if isinstance(model, HierarchicalVAE):
        return layer_diagnostics(model, [b[0] for b in batches_])
    return collapse_diagnostics(model, batches_)


def figures(vae, args, x_test, out) -> None:
    """Samples from the prior and reconstructions; for --conditional, a row per class and one
    test image re-drawn under every label."""
    n = min(20, len(x_test))
    with no_grad():
        if args.conditional:
            x, y = batches(x_test[:n], True)[0]
            z = vae.encode_given(x, y).loc
            plots.reconstructions(
                backend.to_numpy(x.data),
                vae.decode_given(z, y).mean.numpy(),
                out("reconstructions.png"),
            )
            labels = np.repeat(np.arange(CLASSES), 10)
            plots.image_grid(
                vae.sample(labels).numpy(),
                out("samples.png"),
                n_cols=10,
                title="a row per class: decoded means of z ~ p(z) under each label",
            )
            one = Tensor(
                backend.xp().concat([z.data[:1, ...]] * CLASSES, axis=0)
            )  # z of image 0, 10 times
            redrawn = vae.decode_given(one, np.arange(CLASSES)).mean.numpy()
            plots.image_grid(
                np.concatenate([backend.to_numpy(x.data)[:1], redrawn]),
                out("relabel.png"),
                n_cols=CLASSES + 1,
                title="test image 0, then its z decoded under labels 0-9",
            )
            return
        plots.image_grid(
            vae.sample(100).numpy(),
            out("samples.png"),
            title="decoded means of draws from the prior",
        )
        x = Tensor(backend.asarray(x_test[:n]))
        if isinstance(vae, HierarchicalVAE):
            recon = vae.reconstruct(x).numpy()
        else:
            recon = vae.decode(vae.encode(x).loc).mean.numpy()
        plots.reconstructions(x_test[:n], recon, out("reconstructions.png"))


# --- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other error of this script
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(
        prog="mnist.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist", help="default mnist")
    p.add_argument(
        "--objective",
        choices=("vae", "iwae"),
        default="vae",
        help="vae: the ELBO averaged over k draws; iwae: the k-sample IWAE bound (default vae)",
    )
    p.add_argument(
        "-k", "--k", type=int, default=1, help="samples per image in the objective (default 1)"
    )
    p.add_argument(
        "--beta", type=float, default=1.0, help="KL weight of the training loss (default 1)"
    )
    p.add_argument(
        "--kl-warmup",
        type=int,
        default=0,
        help="raise the KL weight linearly from 0 to --beta over this many epochs (default 0: off)",
    )
    p.add_argument(
        "--stages",
        type=int,
        default=STAGES,
        help=f"run the first N stages of Burda et al.'s schedule (default {STAGES}: all)",
    )
    p.add_argument(
        "--epochs", type=int, help="instead of the stages: one stage of this many epochs at --lr"
    )
    p.add_argument(
        "--lr", type=float, default=1e-3, help="the first stage's learning rate (default 0.001)"
    )
    p.add_argument("--batch-size", type=int, default=20, help="images per step (default 20)")
    p.add_argument("--adam-eps", type=float, default=1e-4, help="Adam's epsilon (default 1e-4)")
    p.add_argument(
        "--latent-dim", type=int, default=50, help="dimensions of z, one layer (default 50)"
    )
    p.add_argument(
        "--layers",
        type=int,
        choices=(1, 2),
        default=1,
        help="stochastic layers: 1 (z: 50) or 2 (z1: 100, z2: 50), as Burda et al. (default 1)",
    )
    p.add_argument(
        "--conditional",
        action="store_true",
        help="a conditional VAE: encoder and decoder also see the label (one layer only)",
    )
    p.add_argument(
        "--binarization",
        choices=("dynamic", "static"),
        default="dynamic",
        help="training images: a fresh draw every epoch, or one draw (default dynamic)",
    )
    p.add_argument(
        "--test-samples",
        type=int,
        default=5000,
        help="importance samples K for log p(x) (default 5000)",
    )
    p.add_argument(
        "--test-chunk", type=int, default=500, help="draws per chunk of that estimate (default 500)"
    )
    p.add_argument("--test-batch", type=int, default=20, help="test images per chunk (default 20)")
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and every draw (default 0)"
    )
    p.add_argument(
        "--backend", choices=("numpy", "cupy", "strict"), default="numpy", help="default numpy"
    )
    p.add_argument(
        "--out",
        default=os.path.join("runs", "mnist"),
        help="folder for every output (default runs/mnist)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    for name in (
        "k",
        "stages",
        "batch_size",
        "latent_dim",
        "test_samples",
        "test_chunk",
        "test_batch",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("epochs", "limit", "test_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.test_limit is not None and args.test_limit < 2:
        p.error(
            f"--test-limit must be at least 2 (active units need a variance), got {args.test_limit}"
        )
    if args.kl_warmup < 0:
        p.error(f"--kl-warmup must be 0 or more, got {args.kl_warmup}")
    for name in ("lr", "adam_eps"):
        if not 0 < getattr(args, name) < float("inf"):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.beta < float("inf"):
        p.error(f"--beta must be 0 or more, got {args.beta}")
    if args.conditional and args.layers == 2:
        p.error("--conditional works with one stochastic layer only (--layers 1)")
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
