"""Score-function vs pathwise gradient estimates, side by side.

The objective is the simplest one with a known answer:

    E_{z ~ N(mu, sigma^2)}[z^2] = mu^2 + sigma^2,   so   d/dmu = 2 mu exactly.

For each number of samples L we draw many independent estimates of d/dmu with

* the score-function (REINFORCE) estimator, lecture eqs. (12)-(13):
      1/L sum_j z_j^2 d/dmu log q(z_j)
* the same with a leave-one-out baseline (subtract the mean of f over the other draws),
* the pathwise (reparameterisation) estimator, lecture eqs. (16)-(19):
      1/L sum_j d/dmu (mu + sigma eps_j)^2

and show how widely they spread around the truth. All three are unbiased; the
pathwise one has the smallest variance, which is why the VAE backpropagates
through z = mu + sigma * eps. Every variance falls as 1/L.

    python examples/estimators.py                 # writes runs/estimators/
    python examples/estimators.py --seed 1 --out /tmp/est

Writes estimators.png (spread and variance against L) and variances.json, and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from matplotlib.figure import Figure

from minivae import backend, files, plots
from minivae.distributions import Normal
from minivae.estimators import pathwise_grad, score_function_grad
from minivae.tensor import Tensor

MU, SIGMA = 1.0, 1.0
EXACT = 2 * MU  # d/dmu E[z^2]
SAMPLES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
REPLICAS = 1000  # independent estimates per estimator and L


def f(z):
    return z * z


def estimates(estimator, samples: int, **kw) -> np.ndarray:
    """REPLICAS independent estimates of d/dmu in one call.

    mu is a vector of REPLICAS identical copies and each copy draws its own z
    (event_ndim=0), so the gradient with respect to copy r is the r-th estimate.
    """
    mu = Tensor(backend.full((REPLICAS,), MU, backend.dtype("float64")), requires_grad=True)
    sigma = Tensor(backend.full((REPLICAS,), SIGMA, backend.dtype("float64")))
    (grad_mu,) = estimator(f, lambda: Normal(mu, sigma, event_ndim=0), [mu], samples, **kw)
    return backend.to_numpy(grad_mu)


def exact_variances() -> dict:
    """The variance of one draw's estimate (L = 1), by Gauss-Hermite quadrature over eps ~ N(0, 1)
    (exact here: the integrands are polynomials). An average of L draws has this / L.

    score function: z^2 d/dmu log q(z) = z^2 (z - mu) / sigma^2;  pathwise: d/dmu (mu + sigma eps)^2 = 2 z.
    """
    eps, w = np.polynomial.hermite_e.hermegauss(20)
    w = w / w.sum()  # weights of the standard normal
    z = MU + SIGMA * eps
    per_draw = {"score function": z**2 * (z - MU) / SIGMA**2, "pathwise": 2 * z}
    return {name: float(w @ g**2 - (w @ g) ** 2) for name, g in per_draw.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)  # before the work, so a bad --out fails at once
    backend.seed(args.seed)
    methods = {
        "score function": lambda L: estimates(score_function_grad, L),
        "score function + baseline": lambda L: (
            estimates(score_function_grad, L, baseline="mean") if L > 1 else None
        ),
        "pathwise": lambda L: estimates(pathwise_grad, L),
    }
    results = {name: {} for name in methods}  # name -> L -> (mean, std, variance)
    print(
        f"d/dmu E[z^2] for z ~ N({MU}, {SIGMA}^2), exact {EXACT}; {REPLICAS} estimates per cell, "
        f"seed {args.seed}"
    )
    print("variance of the estimates:")
    print(f"{'L':>5} " + " ".join(f"{name:>26}" for name in methods))
    for L in SAMPLES:
        cells = []
        for name, method in methods.items():
            g = method(L)
            if g is None:  # the leave-one-out baseline needs two draws
                cells.append(f"{'-':>26}")
                continue
            results[name][L] = (float(g.mean()), float(g.std()), float(g.var()))
            cells.append(f"{g.var():>26.4g}")
        print(f"{L:>5} " + " ".join(cells))
    exact = exact_variances()
    print(
        "exact variance of one draw (L=1), then / L: score function "
        f"{exact['score function']:.4g}, "
        f"pathwise {exact['pathwise']:.4g} (ratio "
        f"{exact['score function'] / exact['pathwise']:.3g})"
    )

    plot(results, exact, os.path.join(args.out, "estimators.png"))
    summary = {
        "objective": "d/dmu E[z^2], z ~ N(mu, sigma^2)",
        "mu": MU,
        "sigma": SIGMA,
        "exact": EXACT,
        "replicas": REPLICAS,
        "seed": args.seed,
        "exact_variance_at_L1": exact,
        "variance": {name: {str(L): v[2] for L, v in r.items()} for name, r in results.items()},
        "mean": {name: {str(L): v[0] for L, v in r.items()} for name, r in results.items()},
    }
    files.write_json(os.path.join(args.out, "variances.json"), summary)
    print(f"wrote {args.out}/estimators.png and {args.out}/variances.json")
    return summary


def plot(results: dict, exact: dict, path: str) -> None:
    """Left: mean +- one standard deviation of the estimates against L. Right: variance against L,
    with the exact variance / L dotted."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    spread, variance = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, r in results.items():
        Ls = np.array(sorted(r))
        mean, std, var = (np.array([r[L][i] for L in Ls]) for i in range(3))
        (line,) = spread.plot(Ls, mean, marker="o", ms=3, label=name)
        spread.fill_between(Ls, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        variance.loglog(Ls, var, marker="o", ms=3, color=line.get_color(), label=name)
        if name in exact:
            variance.loglog(Ls, exact[name] / Ls, color=line.get_color(), lw=1, ls=":")
    spread.axhline(EXACT, color="black", lw=1, ls="--", label=f"exact {EXACT}")
    spread.set(
        xscale="log",
        xlabel="samples L per estimate",
        ylabel="estimate of d/dmu",
        title="spread of the estimates (mean +- 1 std)",
    )
    spread.legend(fontsize=8)
    variance.set(
        xlabel="samples L per estimate",
        ylabel="variance of the estimate",
        title="variance (dotted: exact, falls as 1/L)",
    )
    variance.legend(fontsize=8)
    plots.save_figure(fig, path)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="estimators.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/estimators", help="folder for the figure and the numbers")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        main()
    except OSError as exc:  # e.g. --out not writable: one line, nonzero exit
        sys.exit(f"estimators.py: error: {exc}")
