"""Tests of minivae.distributions and minivae.linalg.

* log_prob and entropy against SciPy's densities (host arrays) and direct transcriptions;
* statistical checks with fixed seeds and honest tolerances (|difference| < 4 standard
  errors, the standard error estimated from the same draws): sample moments of rsample,
  closed-form KL against Monte Carlo E_q[log q - log p];
* every gradient (log_prob, rsample with eps held fixed, entropy, KL, the triangular solve)
  against finite differences in float64;
* bad input gives errors that say what was wrong.
"""

import math

import numpy as np
import pytest
from conftest import need
from hypothesis import given
from hypothesis import strategies as st

import minivae
from minivae import Tensor, gradcheck
from minivae.distributions import (
    Bernoulli,
    GaussianLikelihood,
    MultivariateNormalTriL,
    Normal,
    StandardNormal,
    kl_divergence,
)
from minivae.linalg import diagonal, fill_tril, tril_solve

SE = 4  # statistical checks: allowed |difference| in standard errors


@pytest.fixture
def stats():
    try:
        from scipy import stats
    except ImportError:
        need("SciPy", "it is the reference for the densities: pip install scipy")
    return stats


def T(a):
    """A float64 Tensor on the current backend (an explicit host-to-device move)."""
    return Tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def random_tril(rng, shape, l):
    """Lower-triangular factors with a positive diagonal, shape (*shape, l, l), as host arrays."""
    L = np.tril(rng.normal(size=(*shape, l, l)))
    idx = np.arange(l)
    L[..., idx, idx] = np.abs(L[..., idx, idx]) + 0.5
    return L


def assert_mean_within_se(draws, truth, what):
    """The mean of `draws` (host, first axis = independent draws) is within SE standard errors of
    `truth`."""
    draws = np.asarray(draws)
    se = draws.std(axis=0, ddof=1) / math.sqrt(len(draws))
    err = np.abs(draws.mean(axis=0) - truth)
    assert np.all(err < SE * se), (
        f"{what}: mean {draws.mean(axis=0)} vs {truth}, |diff| {err} vs {SE} SE = {SE * se}"
    )


# ---------------------------------------------------------------- Normal (diagonal)


def test_normal_log_prob_and_entropy_match_scipy(stats):
    rng = np.random.default_rng(1)
    mu, log_std, x = rng.normal(size=(3, 5, 4))
    ref = stats.norm.logpdf(x, mu, np.exp(log_std)).sum(-1)
    for q in (
        Normal(T(mu), T(np.exp(log_std))),
        Normal.from_log_std(T(mu), T(log_std)),
        Normal.from_log_var(T(mu), T(2 * log_std)),
    ):
        np.testing.assert_allclose(q.log_prob(T(x)).numpy(), ref, rtol=1e-12)
        np.testing.assert_allclose(
            q.entropy().numpy(), stats.norm.entropy(mu, np.exp(log_std)).sum(-1), rtol=1e-12
        )
    # event_ndim=0: one value per coordinate; event_ndim=2: one per whole array
    np.testing.assert_allclose(
        Normal(T(mu), T(np.exp(log_std)), event_ndim=0).log_prob(T(x)).numpy(),
        stats.norm.logpdf(x, mu, np.exp(log_std)),
        rtol=1e-12,
    )
    assert Normal(T(mu), T(np.exp(log_std)), event_ndim=2).log_prob(T(x)).shape == ()


@given(st.floats(-5, 5), st.floats(-4, 4), st.floats(-30, 30))
def test_normal_log_prob_is_the_density(mu, log_std, x):
    """A direct transcription of log N(x; mu, sigma^2), sigma = exp(log_std)."""
    sigma = math.exp(log_std)
    expected = -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    got = float(Normal.from_log_std(T([mu]), T([log_std])).log_prob(T([x])).numpy())
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_log_var_is_a_variance_and_log_std_a_std():
    """One name, one meaning: rsample's spread is exp(log_var) as a variance, exp(log_std) as a std.

    (A VAE that samples with exp(log_var) as if it were a std, as DeZero's does, fails this.)
    """
    n = 20000
    mu, log_var = T([0.5, -1.0, 2.0]), T([-1.0, 0.0, 1.5])
    for q in (Normal.from_log_var(mu, log_var), Normal.from_log_std(mu, 0.5 * log_var)):
        z = q.rsample((n,)).numpy()
        var = np.exp(log_var.numpy())
        # sample mean: se sqrt(var/n); sample variance of Gaussian draws: se var * sqrt(2/(n-1))
        assert np.all(np.abs(z.mean(0) - mu.numpy()) < SE * np.sqrt(var / n))
        assert np.all(np.abs(z.var(0, ddof=1) - var) < SE * var * np.sqrt(2 / (n - 1))), (
            z.var(0),
            var,
        )


def test_rsample_shapes_noise_and_dtype():
    q = Normal.from_log_var(
        Tensor(np.zeros((4, 2), np.float32)), Tensor(np.zeros((4, 2), np.float32))
    )
    assert q.shape == (4, 2)
    assert q.rsample().shape == (4, 2)
    assert q.rsample((3,)).shape == (3, 4, 2)
    assert q.sample((5, 3)).shape == (5, 3, 4, 2)
    for t in (
        q.rsample((3,)),
        q.log_prob(q.rsample((3,))),
        q.entropy(),
        kl_divergence(q, StandardNormal(2)),
    ):
        assert str(t.dtype).endswith("float32")  # float32 stays float32
    eps = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    loc, log_std = T(np.ones((4, 2))), T(np.full((4, 2), math.log(2.0)))
    z = Normal.from_log_std(loc, log_std).rsample(eps=T(eps)).numpy()
    np.testing.assert_allclose(z, 1 + 2 * eps, rtol=1e-6)  # z = mu + sigma * eps, eps held fixed
    assert not q.sample().requires_grad


def test_rsample_gradient_flows_and_sample_has_none():
    loc = Tensor(np.zeros(3), requires_grad=True, dtype="float64")
    assert Normal(loc, 1.0).rsample().requires_grad
    assert not Normal(loc, 1.0).sample().requires_grad


# ---------------------------------------------------------------- KL divergence


def test_kl_to_standard_normal_is_the_lecture_eq24():
    rng = np.random.default_rng(2)
    mu, log_var = rng.normal(size=(2, 6, 3))
    q = Normal.from_log_var(T(mu), T(log_var))
    # the lecture's kl_loss line
    lecture = 0.5 * np.sum(np.square(mu) + np.exp(log_var) - 1 - log_var, axis=-1)
    np.testing.assert_allclose(
        kl_divergence(q, StandardNormal(3, "float64")).numpy(), lecture, rtol=1e-12
    )
    general = kl_divergence(q, Normal(T(np.zeros(3)), T(np.ones(3))))  # the Normal/Normal formula
    np.testing.assert_allclose(general.numpy(), lecture, rtol=1e-12)
    np.testing.assert_allclose(kl_divergence(q, q).numpy(), 0, atol=1e-12)


@pytest.mark.parametrize("kind", ["standard", "normal", "mvn-standard", "mvn-normal"])
def test_closed_form_kl_equals_monte_carlo(kind):
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated from 20000 reparameterised draws."""
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(4, 3))
    if kind.startswith("mvn"):
        q = MultivariateNormalTriL(T(mu), T(random_tril(rng, (4,), 3)))
    else:
        q = Normal.from_log_var(T(mu), T(rng.normal(size=(4, 3))))
    p = (
        StandardNormal(3, "float64")
        if kind.endswith("standard")
        else Normal(T(rng.normal(size=3)), T(np.exp(rng.normal(size=3))))
    )
    z = q.rsample((20000,))
    draws = (q.log_prob(z) - p.log_prob(z)).numpy()
    kl = kl_divergence(q, p).numpy()
    assert kl.shape == (4,) and np.all(kl > 0)
    assert_mean_within_se(draws, kl, f"KL {kind}")


def test_kl_mvn_matches_torch(torch):
    rng = np.random.default_rng(4)
    mu, L = rng.normal(size=(5, 3)), random_tril(rng, (5,), 3)
    m, s = rng.normal(size=3), np.exp(rng.normal(size=3))
    ours = kl_divergence(MultivariateNormalTriL(T(mu), T(L)), Normal(T(m), T(s))).numpy()
    D = torch.distributions
    theirs = D.kl_divergence(
        D.MultivariateNormal(torch.tensor(mu), scale_tril=torch.tensor(L)),
        D.MultivariateNormal(torch.tensor(m), scale_tril=torch.diag(torch.tensor(s))),
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10)


def test_kl_of_unsupported_pair_says_what_to_do():
    with pytest.raises(
        NotImplementedError, match=r"no closed form for \(Bernoulli, StandardNormal\).*Monte Carlo"
    ):
        kl_divergence(Bernoulli(T([[0.0]])), StandardNormal(1, "float64"))


# ---------------------------------------------------------------- full covariance


def test_mvn_log_prob_and_entropy_match_scipy(stats):
    rng = np.random.default_rng(5)
    mu, L, x = rng.normal(size=(4, 3)), random_tril(rng, (4,), 3), rng.normal(size=(2, 4, 3))
    q = MultivariateNormalTriL(T(mu), T(L))
    got = q.log_prob(T(x)).numpy()  # (2, 4): two draws for each of 4 distributions
    for i in range(4):
        ref = stats.multivariate_normal(mu[i], L[i] @ L[i].T)
        np.testing.assert_allclose(got[:, i], ref.logpdf(x[:, i]), rtol=1e-10)
        assert float(q.entropy().numpy()[i]) == pytest.approx(ref.entropy(), rel=1e-12)
    np.testing.assert_allclose(q.covariance.numpy(), L @ np.swapaxes(L, -1, -2), rtol=1e-12)


def test_mvn_with_diagonal_factor_is_the_diagonal_normal():
    rng = np.random.default_rng(6)
    mu, log_std, x = rng.normal(size=(3, 4, 2))
    L = np.zeros((4, 2, 2))
    L[:, [0, 1], [0, 1]] = np.exp(log_std)
    mvn = MultivariateNormalTriL.from_log_diag(T(mu), T(log_std), T(np.zeros((4, 1))))
    np.testing.assert_allclose(mvn.scale_tril.numpy(), L, rtol=1e-12)
    diag = Normal.from_log_std(T(mu), T(log_std))
    np.testing.assert_allclose(mvn.log_prob(T(x)).numpy(), diag.log_prob(T(x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        kl_divergence(mvn, StandardNormal(2, "float64")).numpy(),
        kl_divergence(diag, StandardNormal(2, "float64")).numpy(),
        rtol=1e-12,
    )


def test_mvn_rsample_has_the_covariance_L_Lt():
    n = 20000
    L = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-1.2, 0.3, 0.7]])
    sigma = L @ L.T
    z = MultivariateNormalTriL(T([1.0, -2.0, 0.5]), T(L)).rsample((n,)).numpy()
    np.testing.assert_array_less(
        np.abs(z.mean(0) - [1.0, -2.0, 0.5]), SE * np.sqrt(np.diag(sigma) / n)
    )
    # the standard error of a sample covariance of Gaussian draws: sqrt((S_ii S_jj + S_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(z.T) - sigma), SE * se)


def test_from_log_diag_places_entries_row_by_row():
    L = fill_tril(T([[1.0, 2.0, 3.0]]), T([[4.0, 5.0, 6.0]])).numpy()[0]
    np.testing.assert_array_equal(L, [[1, 0, 0], [4, 2, 0], [5, 6, 3]])
    q = MultivariateNormalTriL.from_log_diag(
        T([[0.0, 0.0, 0.0]]), T([[0.0, math.log(2), 1.0]]), T([[4.0, 5.0, 6.0]])
    )
    np.testing.assert_allclose(diagonal(q.scale_tril).numpy(), [[1.0, 2.0, math.e]], rtol=1e-12)


# ---------------------------------------------------------------- triangular algebra


def test_tril_solve_and_log_det_match_numpy():
    rng = np.random.default_rng(7)
    # b broadcasts: 3 right-hand sides per L
    L, b = random_tril(rng, (5,), 4), rng.normal(size=(3, 5, 4))
    y = tril_solve(T(L), T(b)).numpy()
    np.testing.assert_allclose(np.einsum("nij,snj->sni", L, y), b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, np.linalg.solve(L, b[..., None])[..., 0], rtol=1e-10)
    log_det = 2 * np.log(diagonal(T(L)).numpy()).sum(-1)
    np.testing.assert_allclose(
        log_det, np.linalg.slogdet(L @ np.swapaxes(L, -1, -2))[1], rtol=1e-12
    )


def test_tril_solve_reads_only_the_lower_triangle():
    rng = np.random.default_rng(8)
    L, b = random_tril(rng, (), 3), rng.normal(size=3)
    junk = L + np.triu(rng.normal(size=(3, 3)), k=1)
    np.testing.assert_array_equal(tril_solve(T(junk), T(b)).numpy(), tril_solve(T(L), T(b)).numpy())


# ---------------------------------------------------------------- Bernoulli


def test_bernoulli_log_prob_mean_entropy_match_scipy(stats):
    rng = np.random.default_rng(9)
    logits, x = rng.normal(size=(6, 5)), rng.integers(0, 2, size=(6, 5)).astype(float)
    p = 1 / (1 + np.exp(-logits))
    b = Bernoulli(T(logits))
    np.testing.assert_allclose(
        b.log_prob(T(x)).numpy(), stats.bernoulli.logpmf(x, p).sum(-1), rtol=1e-12
    )
    np.testing.assert_allclose(b.mean.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(b.entropy().numpy(), stats.bernoulli.entropy(p).sum(-1), rtol=1e-10)


@given(st.floats(-1e4, 1e4), st.floats(0, 1))
def test_bernoulli_log_prob_is_stable_for_any_logit(a, x):
    """x log p + (1-x) log(1-p) from logits: no overflow, no log(0), no NaN, even at |a| = 1e4."""
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is harmless
        got = float(Bernoulli(T([a])).log_prob(T([x])).numpy())
    # log p = -log(1 + e^-a), log(1 - p) = -log(1 + e^a), written with logaddexp to stay finite
    expected = -x * np.logaddexp(0, -a) - (1 - x) * np.logaddexp(0, a)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bernoulli_samples_have_mean_p_and_no_reparameterisation():
    n = 20000
    p = np.array([0.1, 0.5, 0.9])
    draws = Bernoulli(T(np.log(p / (1 - p)))).sample((n,)).numpy()
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_array_less(np.abs(draws.mean(0) - p), SE * np.sqrt(p * (1 - p) / n))
    with pytest.raises(NotImplementedError, match="no reparameterisation.*score-function"):
        Bernoulli(T(p)).rsample()


# ---------------------------------------------------------------- the lecture's Gaussian likelihood


def test_gaussian_likelihood_is_the_lecture_nll():
    rng = np.random.default_rng(10)
    h1, h2, x = rng.normal(size=(3, 4, 7, 5))
    # the lecture's, unfloored
    px = GaussianLikelihood(T(h1), T(h2), log_std_min=None, event_ndim=2)
    x_mean, x_log_std = 1 / (1 + np.exp(-h1)), h2
    # the lecture: nll = 0.5 * ((data - x_mean) / exp(x_log_std))^2 + x_log_std + log_Z, summed
    # over pixels
    nll = (
        0.5 * np.square((x - x_mean) / np.exp(x_log_std)) + x_log_std + 0.5 * np.log(2 * np.pi)
    ).sum((-1, -2))
    np.testing.assert_allclose(-px.log_prob(T(x)).numpy(), nll, rtol=1e-12)
    np.testing.assert_allclose(px.mean.numpy(), x_mean, rtol=1e-12)


def test_gaussian_likelihood_floor():
    raw = T([-1e4, -20.0, -5.0, 0.0, 3.0, 50.0])
    log_std = GaussianLikelihood(
        T(np.zeros(6)), raw, log_std_min=-5.0, event_ndim=0
    ).log_std.numpy()
    assert np.all(log_std >= -5.0) and np.all(np.isfinite(log_std))  # never below the floor
    np.testing.assert_allclose(log_std[0], -5.0)  # far below: sits on the floor
    np.testing.assert_allclose(log_std[-2:], [3.0, 50.0], atol=1e-3)  # well above: the raw value
    assert np.all(np.diff(log_std) > 0)  # smooth and increasing in between
    # the gradient of the nll w.r.t. the raw log-std stays finite even far below the floor
    raw = T([-1e4])
    raw.requires_grad = True
    (-GaussianLikelihood(T([0.0]), raw).log_prob(T([0.3]))).sum().backward()
    assert np.all(np.isfinite(minivae.to_numpy(raw.grad)))


# ---------------------------------------------------------------- gradients (float64)


def test_gradcheck_normal():
    rng = np.random.default_rng(11)
    mu, log_var, x, eps = rng.normal(size=(4, 3, 2))
    p_mu, p_s = rng.normal(size=2), np.exp(rng.normal(size=2))
    gradcheck(lambda m, lv, x: Normal.from_log_var(m, lv).log_prob(x), [mu, log_var, x])
    gradcheck(lambda m, s, x: Normal(m, s, validate=False).log_prob(x), [mu, np.exp(log_var), x])
    gradcheck(lambda m, lv: Normal.from_log_var(m, lv).rsample(eps=T(eps)), [mu, log_var])
    gradcheck(lambda lv: Normal.from_log_var(T(mu), lv).entropy(), [log_var])
    gradcheck(
        lambda m, lv: kl_divergence(Normal.from_log_var(m, lv), StandardNormal(2, "float64")),
        [mu, log_var],
    )
    gradcheck(
        lambda m, lv, pm, ps: kl_divergence(
            Normal.from_log_var(m, lv), Normal(pm, ps, validate=False)
        ),
        [mu, log_var, p_mu, p_s],
    )


def test_gradcheck_mvn():
    rng = np.random.default_rng(12)
    mu, log_diag, x = rng.normal(size=(3, 4, 3))
    lower, eps = rng.normal(size=(4, 3)), rng.normal(size=(2, 4, 3))
    p_mu, p_s = rng.normal(size=3), np.exp(rng.normal(size=3))
    q = MultivariateNormalTriL.from_log_diag
    gradcheck(lambda m, d, lo, x: q(m, d, lo).log_prob(x), [mu, log_diag, lower, x])
    gradcheck(lambda m, d, lo: q(m, d, lo).rsample(eps=T(eps)), [mu, log_diag, lower])
    gradcheck(lambda d, lo: q(T(mu), d, lo).entropy(), [log_diag, lower])
    gradcheck(
        lambda m, d, lo, pm, ps: kl_divergence(q(m, d, lo), Normal(pm, ps, validate=False)),
        [mu, log_diag, lower, p_mu, p_s],
    )
    L = random_tril(rng, (4,), 3)  # scale_tril given directly: log det from log(diagonal(L))
    gradcheck(lambda L, x: MultivariateNormalTriL(T(mu), L, validate=False).log_prob(x), [L, x])


def test_log_prob_of_draw_is_log_prob_of_the_draw():
    # log q(mu + L eps) = log N(eps; 0, I) - log |det L|: the same function of the parameters as
    # log_prob(rsample(eps=eps)), so the same value and the same gradients
    rng = np.random.default_rng(14)
    mu, log_d = rng.normal(size=(2, 4, 3))
    lower, eps = rng.normal(size=(4, 3)), rng.normal(size=(2, 4, 3))
    mvn = MultivariateNormalTriL.from_log_diag
    for make, args in [(Normal.from_log_std, [mu, log_d]), (mvn, [mu, log_d, lower])]:
        values, grads = [], []
        for log_q in (
            lambda q: q.log_prob(q.rsample(eps=T(eps))),
            lambda q: q.log_prob_of_draw(T(eps)),
        ):
            leaves = [Tensor(T(a), requires_grad=True) for a in args]
            out = log_q(make(*leaves))
            out.sum().backward()
            values.append(out.numpy())
            # (no gradient: the parameter does not enter, e.g. mu into the shortcut)
            grads.append([0.0 if p.grad is None else minivae.to_numpy(p.grad) for p in leaves])
        np.testing.assert_allclose(values[1], values[0], rtol=1e-12, atol=1e-12)
        for shortcut, via_solve in zip(*grads):
            np.testing.assert_allclose(shortcut, via_solve, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"rsample: eps has shape \(4, 2\)"):
        mvn(*map(T, [mu, log_d, lower])).log_prob_of_draw(T(eps[0, :, :2]))


def test_gradcheck_tril_solve_with_broadcasting():
    rng = np.random.default_rng(13)
    gradcheck(tril_solve, [random_tril(rng, (4,), 3), rng.normal(size=(2, 4, 3))])
    gradcheck(tril_solve, [random_tril(rng, (2, 4), 3), rng.normal(size=(4, 3))])


def test_gradcheck_bernoulli_and_gaussian_likelihood():
    rng = np.random.default_rng(14)
    logits, h1, h2 = rng.normal(size=(3, 3, 4))
    x = rng.uniform(size=(3, 4))
    gradcheck(lambda a: Bernoulli(a).log_prob(T(x)), [logits])
    gradcheck(lambda a: Bernoulli(a).entropy(), [logits])
    gradcheck(
        lambda h1, h2: GaussianLikelihood(h1, h2, log_std_min=-5.0).log_prob(T(x)), [h1, h2 - 4.0]
    )


# ---------------------------------------------------------------- bad input


def test_bad_input_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match=r"Normal: scale must be positive, got minimum -1"):
        Normal(T([0.0, 0.0]), T([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"Normal: scale must be positive, got minimum 0"):
        Normal(T([0.0]), 0.0)
    with pytest.raises(ValueError, match=r"Normal: shapes \(3,\) and \(2,\) cannot be broadcast"):
        Normal(T([0.0, 0.0, 0.0]), T([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"Normal: needs scale \(sigma\) or log_std, got neither"):
        Normal(T([0.0]), None)
    with pytest.raises(ValueError, match=r"diagonal of scale_tril must be positive, got minimum 0"):
        MultivariateNormalTriL(T([0.0, 0.0]), T([[1.0, 0.0], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="must be lower triangular"):
        MultivariateNormalTriL(T([0.0, 0.0]), T([[1.0, 0.3], [0.5, 1.0]]))
    with pytest.raises(
        ValueError,
        match=r"expected loc \(\.\.\., l\) and scale_tril \(\.\.\., l, l\), "
        r"got \(3,\) and \(2, 2\)",
    ):
        MultivariateNormalTriL(T([0.0, 0.0, 0.0]), T(np.eye(2)))
    q = Normal(T(np.zeros((4, 2))), 1.0)
    with pytest.raises(
        ValueError,
        match=r"Normal.log_prob: x of shape \(4, 3\) does not end with the event shape \(2,\)",
    ):
        q.log_prob(T(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"Normal.rsample: eps has shape \(3, 4, 3\), expected"):
        q.rsample(eps=T(np.zeros((3, 4, 3))))
    with pytest.raises(ValueError, match=r"eps has shape \(2, 4, 2\), expected \(3, 4, 2\)"):
        q.rsample((3,), eps=T(np.zeros((2, 4, 2))))
    with pytest.raises(
        ValueError, match=r"fill_tril: a 3x3 factor has 3 strictly-lower entries, got 2"
    ):
        fill_tril(T([1.0, 1.0, 1.0]), T([0.0, 0.0]))
    with pytest.raises(
        ValueError,
        match=r"tril_solve: expected L of shape \(\.\.\., l, l\) and b of shape \(\.\.\., l\)",
    ):
        tril_solve(T(np.eye(3)), T([1.0, 2.0]))


def test_kl_to_a_prior_of_another_size_is_refused():
    q = Normal(Tensor(np.zeros((4, 3)), dtype="float64"), Tensor(np.ones((4, 3)), dtype="float64"))
    with pytest.raises(
        ValueError, match=r"kl_divergence: q has event shape \(3,\), p has shape \(2,\)"
    ):
        kl_divergence(q, StandardNormal(2, dtype="float64"))


def test_sigma_from_log_std_is_made_only_when_used():
    """Normal.from_log_std keeps log sigma; sigma = exp(log_std) is made on first use, once,
    and log_prob (all a likelihood needs) never makes it."""
    log_std = Tensor(np.log([0.5, 2.0]), requires_grad=True)
    q = Normal.from_log_std(T([0.0, 1.0]), log_std)
    q.log_prob(T([0.5, 0.5]))
    assert q._scale is None
    np.testing.assert_allclose(q.scale.numpy(), [0.5, 2.0], rtol=1e-6)
    assert q.scale is q.scale
    np.testing.assert_allclose(Normal(T([0.0]), T([2.0])).log_std.numpy(), [np.log(2.0)], rtol=1e-6)
