"""The lecture's variational autoencoder on the Frey faces, in minivae.

Read it top to bottom, as the lecture's notebook: 1. the data, 2. the encoder
q(z|x), 3. the decoder p(x|z), 4. the VAE and its ELBO, 5. the training step,
6. fit(), 7. evaluation, 8. the plots.

    python examples/frey.py                       # the lecture's recipe, writes runs/frey/
    python examples/frey.py --limit 300 --epochs 5 --log-px-samples 50 --out /tmp/frey   # a quick try
    python examples/frey.py --resume              # continue an interrupted run exactly
    python examples/frey.py --preset li-turner    # 20 latent dims, softplus, lr 5e-4

The data are found through MINIVAE_DATA (see minivae/datasets.py). Everything is
written to --out: metrics.json, history.csv, checkpoint.npz, five figures and explorer.html.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from minivae import backend, explorer, files, plots, train
from minivae.backend import BackendError
from minivae.datasets import DataError, load_frey_faces, split_train_val
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE

IMAGE_SHAPE = (28, 20)
PIXELS = 28 * 20

# The lecture's recipe; --preset li-turner swaps in the settings of Li & Turner (2016)'s
# Frey Face experiment. A flag given on the command line beats both.
DEFAULTS = dict(
    epochs=200,
    latent_dim=2,
    hidden=200,
    activation="relu",
    batch_size=100,
    lr=1e-3,
    estimator="analytic",
    samples=1,
    posterior="diag",
    patience=None,
    seed=0,
    log_px_samples=1000,
)
PRESETS = {
    "li-turner": dict(
        hidden=200,
        activation="softplus",
        latent_dim=20,
        lr=5e-4,
        batch_size=100,
        log_px_samples=5000,
    )
}


# the flags that define a run: --resume refuses to continue a run under others
RECIPE = (
    "latent_dim",
    "hidden",
    "activation",
    "batch_size",
    "lr",
    "estimator",
    "samples",
    "posterior",
    "seed",
    "limit",
)


def main(argv=None) -> dict:
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else print
    started = time.perf_counter()
    backend.set_backend(args.backend)
    backend.seed(args.seed)  # the initial weights; each epoch then draws from (seed, epoch)

    # --- 1. Data: 90% to train, 10% to validate, pixels scaled to [0, 1] as float32 ---------
    faces = load_frey_faces()[: args.limit]  # uint8 (1965, 28, 20)
    train_frames, val_frames = split_train_val(
        np.arange(len(faces)), val_fraction=0.1, seed=args.seed
    )
    x_train = (faces[train_frames] / 255).astype(np.float32)
    x_val = (faces[val_frames] / 255).astype(np.float32)
    say(
        f"Frey faces: {len(x_train)} to train, {len(x_val)} to validate, "
        f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixels"
    )

    # --- 2. Encoder q(z|x): the mean and log-variance of a Gaussian over z ------------------
    l = args.latent_dim
    # "full": + L's lower triangle
    posterior_size = 2 * l if args.posterior == "diag" else 2 * l + l * (l - 1) // 2
    encoder = Sequential([Flatten(), Dense(args.hidden, args.activation), Dense(posterior_size)])
    encoder.build(IMAGE_SHAPE)

    # --- 3. Decoder p(x|z): per pixel, a sigmoid mean and a log-std ---------------------------
    decoder = Sequential([Dense(args.hidden, args.activation), Dense(2 * PIXELS)])
    decoder.build((l,))
    say(f"encoder: {encoder.count_params():,} parameters, decoder: {decoder.count_params():,}")

    # --- 4. The VAE: prior N(0, I), Gaussian likelihood (log-std floored, see GaussianLikelihood)
    vae = VAE(encoder, decoder, likelihood="gaussian", posterior=args.posterior)

    def loss_fn(x):
        """-ELBO = nll + kl, per image (pixels summed), averaged over the batch."""
        return vae.elbo(x, samples=args.samples, estimator=args.estimator)

    # --- 5. The training step: what fit() runs on every batch ---------------------------------
    optimizer = Adam(vae.parameters(), lr=args.lr)

    def train_step(x):
        optimizer.zero_grad()  # gradients accumulate, so clear the last step's
        parts = loss_fn(x)  # forward: encode, sample z, decode, score
        parts["loss"].backward()  # reverse mode: d(-ELBO)/d(every weight)
        optimizer.step()  # Adam moves every weight against its gradient
        return parts

    # --- 6. fit(): epochs of shuffled batches, validation, a checkpoint after every epoch -----
    checkpoint, recipe_file = (
        os.path.join(args.out, "checkpoint.npz"),
        os.path.join(args.out, "recipe.json"),
    )
    recipe = {k: getattr(args, k) for k in RECIPE}
    history = None
    if args.resume:
        if not os.path.isfile(checkpoint):
            raise ValueError(
                f"--resume: no checkpoint at {checkpoint}; run once without --resume first"
            )
        with open(recipe_file) as f:
            saved = json.load(f)
        for k in RECIPE:  # resuming with another recipe would silently become another run
            if saved[k] != recipe[k]:
                raise ValueError(
                    f"--resume: the run in {args.out} has {k} = {saved[k]!r}, not {recipe[k]!r}; "
                    "resume with its flags (only --epochs, --patience and the output flags may "
                    "change)"
                )
        history = train.load_checkpoint(checkpoint, vae, optimizer)
        say(f"resuming {checkpoint} after epoch {len(history)}")
    else:
        files.write_json(recipe_file, recipe)
    history = train.fit(
        vae,
        loss_fn,
        optimizer,
        x_train,
        x_val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        patience=args.patience,
        verbose=not args.quiet,
        history=history,
        step=train_step,
        on_epoch_end=lambda h: train.save_checkpoint(checkpoint, vae, optimizer, h),
    )
    if len(history) == 0:
        raise ValueError(f"training stopped before its first epoch finished: {history.stopped}")

    # --- 7. Evaluation: the ELBO and the importance-sampled log p(x) on validation ------------
    backend.seed(args.seed)  # the same draws however training got here, fresh or resumed
    final = train.evaluate(vae, loss_fn, x_val, batch_size=args.batch_size)
    # 100 images at a time, so K draws of each fit in memory
    val_log_px = float(
        np.mean(
            np.concatenate(
                [
                    backend.to_numpy(
                        vae.log_marginal(
                            train.to_device(x_val[i : i + 100]), samples=args.log_px_samples
                        )
                    )
                    for i in range(0, len(x_val), 100)
                ]
            )
        )
    )
    best = history.best_epoch("val_loss")
    metrics = {
        "best_val_elbo": -history.metrics["val_loss"][best],  # nats per image, higher is better
        "best_epoch": best + 1,
        "final_val_loss": final["loss"],
        "final_val_kl": final["kl"],
        "final_val_nll": final["nll"],
        "val_log_px": val_log_px,
        "val_log_px_samples": args.log_px_samples,
        "epochs": len(history),
        "stopped": history.stopped,
        "sec_per_epoch": statistics.median(history.seconds),
        "total_seconds": time.perf_counter() - started,  # this invocation only
        "backend": args.backend,
        "flags": vars(args),
    }
    files.write_json(os.path.join(args.out, "metrics.json"), metrics)
    files.write_text(os.path.join(args.out, "history.csv"), history.to_csv())

    # --- 8. Plots ------------------------------------------------------------------------------
    def out(name):
        return os.path.join(args.out, name)

    plots.learning_curves(
        history.metrics, out("learning_curves.png"), title="Frey Face VAE (-ELBO = nll + kl)"
    )
    plots.image_grid(
        vae.sample(40).numpy(), out("samples.png"), title="decoded means of draws from the prior"
    )
    with no_grad():
        n = min(20, len(x_val))
        q = vae.encode(train.to_device(x_val))  # the posterior of every validation image
        plots.reconstructions(
            x_val[:n], vae.decode(q.loc[:n]).mean.numpy(), out("reconstructions.png")
        )
        title = "validation encodings (posterior means)" + ("" if l == 2 else f": z1, z2 of {l}")
        plots.latent_scatter(
            q.loc.numpy(),
            out("latent.png"),
            color=val_frames,
            color_label="video frame",
            title=title,
        )
        if l == 2:  # Kingma & Welling's Figure 4: decode a grid over the prior's quantiles
            z = Tensor(backend.asarray(plots.normal_quantile_grid(20), dtype=q.loc.dtype))
            plots.manifold(vae.decode(z).mean.numpy(), out("manifold.png"), n=20)
            explorer.write_explorer(
                out("explorer.html"),
                decoder,
                q.loc.numpy(),
                x_val,
                image_shape=IMAGE_SHAPE,
                color=val_frames,
                color_label="video frame",
                title="Frey Face VAE: latent explorer",
            )

    say(
        f"best validation ELBO {metrics['best_val_elbo']:.1f} nats (epoch "
        f"{metrics['best_epoch']}), "
        f"validation log p(x) {val_log_px:.1f} (K={args.log_px_samples}), "
        f"{metrics['sec_per_epoch']:.2f} s per epoch; wrote {args.out}"
    )
    return metrics


# --- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other error of this script
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(
        prog="frey.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument(
        "--epochs", type=int, help=f"train for up to this many epochs (default {d['epochs']})"
    )
    p.add_argument("--latent-dim", type=int, help=f"dimensions l of z (default {d['latent_dim']})")
    p.add_argument(
        "--hidden",
        type=int,
        help=f"units of the hidden layer of encoder and decoder (default {d['hidden']})",
    )
    p.add_argument(
        "--activation",
        choices=("relu", "softplus", "tanh"),
        help=f"activation of the hidden layers (default {d['activation']})",
    )
    p.add_argument("--batch-size", type=int, help=f"images per step (default {d['batch_size']})")
    p.add_argument("--lr", type=float, help=f"Adam's learning rate (default {d['lr']})")
    p.add_argument(
        "--estimator",
        choices=("analytic", "mc"),
        help="SGVB estimator: 'analytic' = B, KL in closed form; 'mc' = A, KL sampled too "
        f"(default {d['estimator']})",
    )
    p.add_argument(
        "--samples", type=int, help=f"draws L of z per image in the ELBO (default {d['samples']})"
    )
    p.add_argument(
        "--posterior",
        choices=("diag", "full"),
        help=f"q(z|x): diagonal or full-covariance Gaussian (default {d['posterior']})",
    )
    p.add_argument(
        "--patience",
        type=int,
        help="stop when the validation loss has not improved for this many epochs and keep the "
        "best weights (default: no early stopping)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help=f"seed of the split, the weights and every draw (default {d['seed']})",
    )
    p.add_argument(
        "--log-px-samples",
        type=int,
        help=f"importance samples K for the validation log p(x) (default {d['log_px_samples']})",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="li-turner: 200 softplus units, 20 latent dims, lr 5e-4, batch 100, K = 5000 "
        "(flags given explicitly override it)",
    )
    p.add_argument(
        "--limit", type=int, help="use only the first N faces (for tests and quick tries)"
    )
    p.add_argument(
        "--backend",
        choices=("numpy", "cupy", "strict"),
        default="numpy",
        help="where the arrays live: numpy (CPU), cupy (NVIDIA GPU), strict (the array-API "
        "stand-in for a GPU that the tests use) (default numpy)",
    )
    p.add_argument(
        "--out",
        default=os.path.join("runs", "frey"),
        help="folder for every output (default runs/frey)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.npz, exactly"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = p.parse_args(argv)

    preset = PRESETS.get(args.preset, {})
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
    for name in ("epochs", "latent_dim", "hidden", "batch_size", "samples", "log_px_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if args.patience is not None and args.patience < 0:
        p.error(f"--patience must be 0 or more, got {args.patience}")
    if args.limit is not None and args.limit < 10:
        p.error(f"--limit must be at least 10 (a tenth of it validates), got {args.limit}")
    return args


if __name__ == "__main__":
    try:
        main()
    except (DataError, ValueError, BackendError) as e:
        message = " ".join(str(e).split())  # one line, whatever the exception held
        sys.exit(f"frey.py: error: {message}")
