"""The lecture's variational autoencoder on the Frey faces, in minivae.

Read it top to bottom, as the lecture's notebook: 1. the data, 2. the encoder
q(z|x), 3. the decoder p(x|z), 4. the VAE and its ELBO, 5. the training step,
6. fit(), 7. evaluation, 8. the plots.

    python examples/frey.py                       # the lecture's recipe, writes runs/frey/
    python examples/frey.py --limit 300 --epochs 5 --log-px-samples 50 --out /tmp/frey  # quick
    python examples/frey.py --resume              # continue an interrupted run exactly
    python examples/frey.py --preset li-turner    # 20 latent dims, softplus, lr 5e-4

The data are found through MINIVAE_DATA (see minivae/datasets.py). Everything is
written to --out: metrics.json, history.csv, checkpoint.npz, five figures, explorer.html
(a 2-d latent) and, with --graph, elbo_graph.svg.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from minivae import backend, cli, explorer, files, graph, plots, train
from minivae.datasets import load_frey_faces, split_train_val
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
    cli.output_folder(args.out)  # before any work: a folder that cannot be written fails now
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
            raise cli.UsageError(
                f"--resume: no checkpoint at {checkpoint}; run once without --resume first"
            )
        check_recipe(recipe_file, recipe)
        history = cli.load_checkpoint(checkpoint, vae, optimizer)
        say(f"resuming {checkpoint} after epoch {len(history)}")
    else:  # a new run replaces the one in --out: its checkpoint must not outlive its recipe
        if os.path.exists(checkpoint):
            os.unlink(checkpoint)
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
        raise cli.RunError(f"training stopped before its first epoch finished: {history.stopped}")

    # --- 7. Evaluation: the ELBO and the importance-sampled log p(x) on validation ------------
    backend.seed(args.seed)  # the same draws however training got here, fresh or resumed
    final = train.evaluate(vae, loss_fn, x_val, batch_size=args.batch_size)
    # 100 images at a time, so K draws of each fit in memory
    log_px = vae.log_marginal(x_val, samples=args.log_px_samples, batch_size=100)
    val_log_px = float(np.mean(log_px.numpy()))
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
    if args.graph:  # the -ELBO of one validation batch, and what each tensor got from backward()
        batch = train.to_device(x_val[: args.batch_size])
        g, reparameterisation = graph.elbo_graph(vae, batch, args.samples, args.estimator)
        g.backward()
        g.draw(
            out("elbo_graph.svg"),
            grads=True,
            highlight=reparameterisation,
            title="-ELBO of one validation batch: the red box is z = mu + sigma * eps",
        )
        vae.zero_grad()  # after the picture, which shows each weight's .grad

    say(
        f"best validation ELBO {metrics['best_val_elbo']:.1f} nats (epoch "
        f"{metrics['best_epoch']}), "
        f"validation log p(x) {val_log_px:.1f} (K={args.log_px_samples}), "
        f"{metrics['sec_per_epoch']:.2f} s per epoch; wrote {args.out}"
    )
    return metrics


def check_recipe(path, recipe: dict) -> None:
    """Refuse to resume the run whose recipe.json is at `path` under another `recipe`, or when that
    file cannot tell. A recipe.json from an older frey.py that lacks a flag is refused too: the
    default cannot stand in for it (an old run may have used --limit 300), and a resumed run under
    another recipe would silently be another run."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"--resume: {path} is missing, so the run's flags cannot be checked; "
            "start a new run in another --out"
        ) from None
    except ValueError as e:  # not JSON, or not text
        raise ValueError(f"--resume: {path} is not a recipe (invalid JSON: {e})") from None
    if not isinstance(saved, dict):  # a damaged file, not a caller's type mistake
        raise ValueError(  # noqa: TRY004
            f"--resume: {path} is not a recipe (a JSON {type(saved).__name__}, not an object)"
        )
    missing = [k for k in RECIPE if k not in saved]
    if missing:
        raise ValueError(
            f"--resume: {path} lacks {', '.join(missing)} (written by an older "
            "frey.py?), so the run's flags cannot be checked; start a new run in "
            "another --out"
        )
    for k in RECIPE:
        if saved[k] != recipe[k]:
            raise cli.UsageError(
                f"--resume: the run in {os.path.dirname(path)} has {k} = "
                f"{saved[k]!r}, not {recipe[k]!r}; resume with its flags (only "
                "--epochs, --patience and the output flags may change)"
            )


# --- the command line ------------------------------------------------------------------------


def parse_args(argv=None):
    p = cli.Parser(
        prog="frey.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    p.add_argument(
        "--epochs",
        type=cli.positive_int,
        help=f"train for up to this many epochs (default {d['epochs']})",
    )
    p.add_argument(
        "--latent-dim", type=cli.positive_int, help=f"dimensions l of z (default {d['latent_dim']})"
    )
    p.add_argument(
        "--hidden",
        type=cli.positive_int,
        help=f"units of the hidden layer of encoder and decoder (default {d['hidden']})",
    )
    p.add_argument(
        "--activation",
        choices=("relu", "softplus", "tanh"),
        help=f"activation of the hidden layers (default {d['activation']})",
    )
    p.add_argument(
        "--batch-size", type=cli.positive_int, help=f"images per step (default {d['batch_size']})"
    )
    p.add_argument(
        "--lr", type=cli.positive_float, help=f"Adam's learning rate (default {d['lr']})"
    )
    p.add_argument(
        "--estimator",
        choices=("analytic", "mc"),
        help="SGVB estimator: 'analytic' = B, KL in closed form; 'mc' = A, KL sampled too "
        f"(default {d['estimator']})",
    )
    p.add_argument(
        "--samples",
        type=cli.positive_int,
        help=f"draws L of z per image in the ELBO (default {d['samples']})",
    )
    p.add_argument(
        "--posterior",
        choices=("diag", "full"),
        help=f"q(z|x): diagonal or full-covariance Gaussian (default {d['posterior']})",
    )
    p.add_argument(
        "--patience",
        type=cli.nonnegative_int,
        help="stop when the validation loss has not improved for this many epochs and keep the "
        "best weights (default: no early stopping)",
    )
    p.add_argument(
        "--seed",
        type=cli.seed,
        help=f"seed of the split, the weights and every draw (default {d['seed']})",
    )
    p.add_argument(
        "--log-px-samples",
        type=cli.positive_int,
        help=f"importance samples K for the validation log p(x) (default {d['log_px_samples']})",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="li-turner: 200 softplus units, 20 latent dims, lr 5e-4, batch 100, K = 5000 "
        "(flags given explicitly override it)",
    )
    p.add_argument(
        "--limit",
        type=cli.int_at_least(10),
        help="use only the first N faces, N >= 10 (a tenth of them validates; for "
        "tests and quick tries)",
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
    p.add_argument(
        "--graph",
        action="store_true",
        help="also write OUT/elbo_graph.svg, the -ELBO's graph (needs Graphviz's dot)",
    )
    args = p.parse_args(argv)

    preset = PRESETS.get(args.preset, {})
    for name, default in DEFAULTS.items():  # the flag types checked what was given; these are sound
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
    if args.graph:
        graph.find_dot("--graph")  # a missing Graphviz is found out now, not after training
    return args


if __name__ == "__main__":
    sys.exit(cli.run(main, "frey.py"))
