"""Tests of minivae.estimators: score-function (eqs. (12)-(13)) vs pathwise (eqs. (16)-(19)).

Both are unbiased estimates of the same gradient, so with fixed seeds:
(a) on closed-form objectives each averages to the exact gradient, and they agree;
(b) on a tiny VAE's ELBO they agree on every encoder weight, and the pathwise
    estimate has the lower variance (the lecture's reason for the reparameterisation).
Tolerances are 4 standard errors, estimated from the same draws.

Closed forms, z ~ N(mu, sigma^2):
  E[z^2] = mu^2 + sigma^2:                    d/dmu = 2 mu, d/dsigma = 2 sigma
  E[(z-c)^4] = m^4 + 6 m^2 sigma^2 + 3 sigma^4, m = mu - c:
                                              d/dmu = 4 m^3 + 12 m sigma^2, d/dsigma = 12 m^2 sigma + 12 sigma^3
"""

import math

import numpy as np
import pytest

import minivae
from minivae import Tensor
from minivae.distributions import Bernoulli, Normal, kl_divergence
from minivae.estimators import pathwise_grad, score_function_grad
from minivae.nn import Dense, Sequential
from minivae.vae import VAE

SE = 4  # allowed |difference| in standard errors
MU, SIGMA, C = 0.7, 1.3, 0.2

OBJECTIVES = {
    "z^2": (lambda z: z**2, (2 * MU, 2 * SIGMA)),
    "(z-c)^4": (
        lambda z: (z - C) ** 4,
        (4 * (MU - C) ** 3 + 12 * (MU - C) * SIGMA**2, 12 * (MU - C) ** 2 * SIGMA + 12 * SIGMA**3),
    ),
}
ESTIMATORS = {
    "pathwise": lambda *a: pathwise_grad(*a),
    "score": lambda *a: score_function_grad(*a),
    "score+baseline": lambda *a: score_function_grad(*a, baseline="mean"),
}


def T(a, grad=False):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, dtype="float64")


def replicated_estimates(estimator, f, replicas=2000, samples=10):
    """`replicas` independent estimates in one call: mu and sigma are vectors of identical copies,
    each copy with its own draws (event_ndim=0), and the gradient w.r.t. copy r is estimate r."""
    mu, sigma = T(np.full(replicas, MU), grad=True), T(np.full(replicas, SIGMA), grad=True)
    grads = ESTIMATORS[estimator](f, lambda: Normal(mu, sigma, event_ndim=0), [mu, sigma], samples)
    return [minivae.to_numpy(g) for g in grads]  # d/dmu and d/dsigma, (replicas,) each


def mean_se(draws):
    draws = np.asarray(draws)
    return draws.mean(axis=0), draws.std(axis=0, ddof=1) / math.sqrt(len(draws))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_both_estimators_average_to_the_closed_form_gradient(objective):
    f, exact = OBJECTIVES[objective]
    means = {}
    for name in ESTIMATORS:
        for param, est, truth in zip(("mu", "sigma"), replicated_estimates(name, f), exact):
            m, se = mean_se(est)
            assert abs(m - truth) < SE * se, (
                f"{name} d/d{param} E[{objective}]: {m:.4f} +- {se:.4f}, exact {truth:.4f}"
            )
            means[name, param] = (m, se)
    for param in ("mu", "sigma"):  # and they agree with each other
        (a, sa), (b, sb) = means["pathwise", param], means["score", param]
        assert abs(a - b) < SE * math.hypot(sa, sb)


def test_pathwise_has_lower_variance_on_the_closed_forms():
    for objective, (f, _) in OBJECTIVES.items():
        pw = [np.var(g) for g in replicated_estimates("pathwise", f)]
        sf = [np.var(g) for g in replicated_estimates("score", f)]
        print(
            f"E[{objective}], L=10: variance d/dmu, d/dsigma: pathwise {pw[0]:.4g}, {pw[1]:.4g}; "
            f"score function {sf[0]:.4g}, {sf[1]:.4g}"
        )
        assert pw[0] < sf[0] and pw[1] < sf[1]


# ---------------------------------------------------------------- the lecture's setting: a VAE


def tiny_vae_problem():
    """The lecture's VAE in miniature (Gaussian likelihood, diagonal posterior), D=6, l=2, hidden
    5."""
    vae = VAE(Sequential([Dense(5, "tanh"), Dense(4)]), Sequential([Dense(5, "tanh"), Dense(12)]))
    x = T(np.random.default_rng(0).uniform(size=(8, 6)))
    vae.elbo(x)  # build the weights
    return vae, x


def elbo_gradient_estimates(vae, x, estimator, repeats, samples=1, **kw):
    """`repeats` estimates of grad_phi ELBO (mean over the batch) for the encoder weights phi.

    ELBO = E_q[log p(x|z)] - KL(q || p): the expectation goes to the estimator, with
    f(z) = log p(x|z) / N (the decoder fixed); the KL's gradient is exact and the same for both.
    """
    params = vae.encoder.parameters()
    n = x.shape[0]
    vae.zero_grad()
    (-kl_divergence(vae.encode(x), vae.prior).mean()).backward()
    kl = np.concatenate([minivae.to_numpy(p.grad).ravel() for p in params])

    def f(z):
        return vae.decode(z).log_prob(x) / n

    rows = []
    for _ in range(repeats):
        grads = estimator(f, lambda: vae.encode(x), params, samples, **kw)
        rows.append(np.concatenate([minivae.to_numpy(g).ravel() for g in grads]) + kl)
    return np.array(rows)  # (repeats, number of encoder weights)


def test_vae_elbo_gradients_agree_and_pathwise_has_lower_variance():
    vae, x = tiny_vae_problem()
    pw = elbo_gradient_estimates(vae, x, pathwise_grad, repeats=400)
    sf = elbo_gradient_estimates(vae, x, score_function_grad, repeats=400)
    (m_pw, se_pw), (m_sf, se_sf) = mean_se(pw), mean_se(sf)
    z = np.abs(m_pw - m_sf) / np.hypot(se_pw, se_sf)
    print(
        f"tiny VAE, {pw.shape[1]} encoder weights, L=1: total variance pathwise "
        f"{pw.var(0).sum():.4g}, "
        f"score function {sf.var(0).sum():.4g}; largest |difference of means| {z.max():.2f} SE"
    )
    assert np.all(z < SE)
    assert pw.var(0).sum() < sf.var(0).sum()


def test_a_baseline_lowers_the_score_function_variance():
    vae, x = tiny_vae_problem()
    plain = elbo_gradient_estimates(vae, x, score_function_grad, repeats=200, samples=2)
    loo = elbo_gradient_estimates(
        vae, x, score_function_grad, repeats=200, samples=2, baseline="mean"
    )
    print(
        f"score function, L=2: total variance {plain.var(0).sum():.4g} without a baseline, "
        f"{loo.var(0).sum():.4g} with the leave-one-out mean"
    )
    (m_a, se_a), (m_b, se_b) = mean_se(plain), mean_se(loo)
    assert np.all(np.abs(m_a - m_b) < SE * np.hypot(se_a, se_b))  # still the same gradient
    assert loo.var(0).sum() < plain.var(0).sum()


# ---------------------------------------------------------------- discrete q, bookkeeping, errors


def test_score_function_handles_a_bernoulli_where_pathwise_cannot():
    """d/da E_{z ~ Bernoulli(sigmoid(a))}[f(z)] = sigmoid'(a) (f(1) - f(0))."""
    a0, replicas = 0.4, 4000
    a = T(np.full(replicas, a0), grad=True)
    f = lambda z: 3 * z - 1  # f(1) - f(0) = 3
    (g,) = score_function_grad(
        f, lambda: Bernoulli(a, event_ndim=0), [a], samples=5, baseline="mean"
    )
    p = 1 / (1 + math.exp(-a0))
    m, se = mean_se(minivae.to_numpy(g))
    assert abs(m - p * (1 - p) * 3) < SE * se
    with pytest.raises(NotImplementedError, match="no reparameterisation"):
        pathwise_grad(f, lambda: Bernoulli(a, event_ndim=0), [a])


def test_grad_of_the_parameters_is_left_as_it_was():
    mu = T([0.5], grad=True)
    mu.grad = minivae.backend.asarray(np.array([7.0]))
    for est in (pathwise_grad, score_function_grad):
        (g,) = est(lambda z: z[..., 0] ** 2, lambda: Normal(mu, 1.0), [mu], 3)
        assert g.shape == (1,)
        assert float(minivae.to_numpy(mu.grad)[0]) == 7.0


def test_bad_input_errors():
    mu = T([0.0, 0.0], grad=True)
    q_fn = lambda: Normal(mu, 1.0)  # event_ndim=1: one value of f per draw of the pair
    with pytest.raises(
        ValueError,
        match=r"f\(z\) must return a Tensor of one value per draw, shape \(3,\) "
        r"for z of shape \(3, 2\); got \(3, 2\)",
    ):
        pathwise_grad(lambda z: z * z, q_fn, [mu], 3)
    with pytest.raises(ValueError, match=r"got float"):
        score_function_grad(lambda z: 1.0, q_fn, [mu], 3)
    for est in (pathwise_grad, score_function_grad):
        with pytest.raises(ValueError, match=r"samples must be a positive integer, got 0"):
            est(lambda z: z.sum(axis=-1), q_fn, [mu], 0)
    with pytest.raises(ValueError, match=r"baseline='mean' \(leave-one-out\) needs samples >= 2"):
        score_function_grad(lambda z: z.sum(axis=-1), q_fn, [mu], 1, baseline="mean")
    with pytest.raises(TypeError, match=r"baseline must be None, a number or 'mean', got 'median'"):
        score_function_grad(lambda z: z.sum(axis=-1), q_fn, [mu], 2, baseline="median")


# ---------------------------------------------------------------- examples/estimators.py


def load_example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "estimators.py"
    spec = importlib.util.spec_from_file_location("estimators_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_writes_its_figure_and_numbers(tmp_path, capsys):
    summary = load_example().main(["--out", str(tmp_path), "--seed", "1"])
    assert (tmp_path / "estimators.png").stat().st_size > 0 and (
        tmp_path / "variances.json"
    ).exists()
    var, exact = summary["variance"], summary["exact_variance_at_L1"]
    assert exact["pathwise"] == pytest.approx(4 * summary["sigma"] ** 2)  # Var(2z) = 4 sigma^2
    for L in ("1", "10", "1000"):
        assert var["pathwise"][L] < var["score function"][L]
    assert "score function" in capsys.readouterr().out


@pytest.mark.backends("numpy")  # argument parsing touches no arrays
@pytest.mark.parametrize("argv", [["--seed", "x"], ["--bogus"]])
def test_example_bad_flags_give_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example().main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("estimators.py: error:") and "\n" not in err
