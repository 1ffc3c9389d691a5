"""Tests of the objectives beyond the lecture: the IWAE bound, the KL weight, collapse diagnostics.

* IWAE with k = 1 is estimator A on the same noise; with k = K it is log_marginal on the
  same draws; on any fixed pool of draws the average of the bound over k-subsets rises with
  k (Burda et al.'s Theorem 1, exact, no statistics), and the bound over groups never exceeds
  log_marginal over the pooled draws (Jensen, exact);
* its mean over repeats rises with k (4 standard errors of the paired differences; the gap
  measured at over 13 of them for eight model seeds, so no seed makes it flake);
* gradcheck with the noise held fixed, and the gradient is the one Burda et al. derive: the
  normalised weights times each draw's gradient (reference computed by hand);
* beta weights only the training loss; kl_warmup; fit's kl_weight; diagnostics against NumPy.
"""

import itertools
import math

import numpy as np
import pytest

import minivae
from minivae import Tensor, backend, gradcheck, no_grad, train
from minivae.datasets import binarize_static
from minivae.nn import Dense, Flatten, Sequential
from minivae.optim import Adam
from minivae.vae import VAE, collapse_diagnostics, iwae_bound, kl_warmup

SE = 4


def T(a):
    return Tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def num(t):
    return float(minivae.to_numpy(t.data if isinstance(t, Tensor) else t))


def tiny_vae(D=6, l=2, hidden=5):
    encoder = Sequential([Flatten(), Dense(hidden, "tanh"), Dense(2 * l)])
    decoder = Sequential([Dense(hidden, "tanh"), Dense(D)])
    return VAE(encoder, decoder, likelihood="bernoulli")


def binary(n=4, D=6, seed=0):
    return T((np.random.default_rng(seed).uniform(size=(n, D)) < 0.5).astype(np.float64))


def noise(k, n=4, l=2, seed=1):
    return T(np.random.default_rng(seed).normal(size=(k, n, l)))


# ---------------------------------------------------------------- the bound's values


def test_iwae_with_one_sample_is_estimator_a_on_the_same_noise():
    vae, x, eps = tiny_vae(), binary(), noise(1)
    a, b = vae.elbo(x, 1, "mc", eps), vae.elbo(x, 1, "iwae", eps)
    np.testing.assert_allclose(num(b["loss"]), num(a["loss"]), rtol=1e-12)
    np.testing.assert_allclose(num(b["nll"] + b["kl"]), num(a["loss"]), rtol=1e-12)


def test_iwae_with_all_samples_is_log_marginal_on_the_same_draws():
    vae, x, eps = tiny_vae(), binary(), noise(30)
    log_px = vae.log_marginal(x, samples=30, chunk=7, eps=eps).numpy()
    np.testing.assert_allclose(
        num(vae.elbo(x, 30, "iwae", eps)["loss"]), -log_px.mean(), rtol=1e-12
    )


def test_iwae_never_exceeds_log_marginal_from_the_same_samples():
    """Groups of k of the K draws: mean_g log mean_{i in g} w_i <= log mean_i w_i (Jensen)."""
    vae, x, eps = tiny_vae(), binary(n=8), noise(60, n=8)
    log_px = vae.log_marginal(x, samples=60, chunk=25, eps=eps).numpy()
    for k in (1, 2, 5, 12):
        groups = [-num(vae.elbo(x, k, "iwae", eps[i : i + k])["loss"]) for i in range(0, 60, k)]
        assert np.mean(groups) <= log_px.mean() + 1e-12, (k, np.mean(groups), log_px.mean())
    # and it is a strict gap unless the weights are all equal
    assert -num(vae.elbo(x, 1, "iwae", eps[:1])["loss"]) < log_px.mean() - 1e-3


def test_subset_average_rises_with_k_on_any_fixed_draws():
    """Burda et al.'s Theorem 1 on one pool of 7 log-weights per point: the mean of L_k over all
    k-subsets is >= that of L_(k-1), exactly, for every pool (weights over 10 orders of size)."""
    rng = np.random.default_rng(0)
    log_w = rng.normal(scale=5.0, size=(7, 3)) - 100.0
    means = []
    for k in range(1, 8):
        subsets = [
            num(iwae_bound(T(log_w[list(s)])).mean()) for s in itertools.combinations(range(7), k)
        ]
        means.append(np.mean(subsets))
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(means)), means
    assert means[-1] - means[0] > 1.0  # a large gap for such spread weights: the check has teeth


def test_mean_over_repeats_does_not_fall_as_k_grows():
    """Each repeat draws 50 fresh noise vectors and scores L_1, L_5, L_50 on its first 1, 5, 50
    (common random numbers: each is still an unbiased draw of its bound, and the paired
    differences are far less noisy), averaged over 40 data points. The mean difference must
    exceed 4 of its standard errors; over model seeds 0-7 it exceeded 13 standard errors."""
    vae, x = tiny_vae(D=5, l=3, hidden=8), binary(n=40, D=5)
    with no_grad():
        vae.elbo(x)
        reps = []
        for _ in range(100):
            eps = Tensor(backend.normal((50, 40, 3), backend.dtype("float64")))
            reps.append([-num(vae.elbo(x, k, "iwae", eps[:k])["loss"]) for k in (1, 5, 50)])
    reps = np.array(reps)
    for small, big in ((0, 1), (1, 2)):
        gaps = reps[:, big] - reps[:, small]
        assert gaps.mean() > SE * gaps.std(ddof=1) / math.sqrt(len(gaps)), (small, big, gaps.mean())


def test_iwae_bound_is_a_stable_logsumexp():
    log_w = T([[-1000.0, 0.0], [-1000.0, -2000.0]])  # exp would underflow to 0 in the naive form
    out = minivae.to_numpy(iwae_bound(log_w).data)
    np.testing.assert_allclose(out, [-1000.0, -math.log(2)], rtol=1e-12)


# ---------------------------------------------------------------- the bound's gradient


def test_gradcheck_iwae_with_noise_held_fixed():
    vae, x, eps = tiny_vae(), binary(), noise(5)
    vae.elbo(x)
    slots = [
        (layer, attr)
        for net in (vae.encoder, vae.decoder)
        for layer in net.layers
        for attr in ("kernel", "bias")
        if getattr(layer, attr, None) is not None
    ]

    def loss(*weights):
        for (layer, attr), w in zip(slots, weights):
            setattr(layer, attr, w)
        return vae.elbo(x, samples=5, estimator="iwae", eps=eps, beta=0.7)["loss"]

    gradcheck(loss, [getattr(layer, attr).data for layer, attr in slots])


def test_gradient_is_the_normalised_weights_times_each_draws_gradient():
    """Burda et al.'s gradient: grad L_k = sum_i w~_i grad log w_i, w~ = softmax(log w). The
    reference takes each draw's gradient separately and weights it by hand; they must agree."""
    vae, x, eps = tiny_vae(), binary(n=1), noise(4, n=1)
    vae.elbo(x)
    weights = vae.parameters()
    for p in weights:
        p.grad = None
    vae.elbo(x, 4, "iwae", eps)["loss"].backward()
    got = [minivae.to_numpy(p.grad).copy() for p in weights]
    log_w, grads = [], []
    for i in range(4):
        for p in weights:
            p.grad = None
        one = -vae.elbo(x, 1, "mc", eps[i : i + 1])["loss"]  # log w_i (one point, one draw)
        one.backward()
        log_w.append(num(one))
        grads.append([minivae.to_numpy(p.grad).copy() for p in weights])
    w = np.exp(np.array(log_w) - max(log_w))
    w /= w.sum()
    for j, g in enumerate(got):
        expected = -sum(w[i] * grads[i][j] for i in range(4))
        np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- beta and warm-up


def test_beta_weights_the_training_loss_only():
    vae, x, eps = tiny_vae(), binary(), noise(3)
    one, half = vae.elbo(x, 3, "mc", eps), vae.elbo(x, 3, "mc", eps, beta=0.5)
    assert num(half["kl"]) == num(one["kl"]) and num(half["nll"]) == num(one["nll"])
    np.testing.assert_allclose(
        num(half["loss"]), num(one["nll"]) + 0.5 * num(one["kl"]), rtol=1e-12
    )
    analytic = vae.elbo(x, 3, "analytic", eps, beta=0.0)
    np.testing.assert_allclose(num(analytic["loss"]), num(analytic["nll"]), rtol=1e-12)
    vae.beta = 0.25  # the default weight, as fit's kl_weight sets it
    np.testing.assert_allclose(
        num(vae.elbo(x, 3, "mc", eps)["loss"]), num(one["nll"]) + 0.25 * num(one["kl"]), rtol=1e-12
    )


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "1", True])
def test_bad_beta_is_refused(bad):
    vae, x = tiny_vae(), binary()
    with pytest.raises(ValueError, match="VAE.elbo: beta"):
        vae.elbo(x, beta=bad)
    with pytest.raises(ValueError, match="kl_warmup"):
        kl_warmup(3, bad)


def test_kl_warmup_rises_linearly_from_zero():
    w = kl_warmup(4, beta=2.0)
    assert [w(e) for e in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    with pytest.raises(ValueError, match="kl_warmup: epochs"):
        kl_warmup(0)


def test_fit_sets_and_records_the_kl_weight():
    vae, x = (
        tiny_vae(D=6),
        (np.random.default_rng(0).uniform(size=(16, 6)) < 0.5).astype(np.float32),
    )
    seen = []

    def loss_fn(b):
        seen.append(vae.beta)
        return vae.elbo(b, estimator="mc")

    vae.elbo(Tensor(backend.asarray(x[:2])))
    history = train.fit(
        vae,
        loss_fn,
        Adam(vae.parameters()),
        x,
        epochs=3,
        batch_size=8,
        verbose=False,
        kl_weight=kl_warmup(2),
    )
    assert history["beta"] == [0.0, 0.5, 1.0]
    assert seen == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]  # two batches per epoch
    assert all(math.isfinite(v) for v in history["loss"])


# ---------------------------------------------------------------- collapse diagnostics


def test_collapse_diagnostics_against_numpy():
    vae, x = tiny_vae(D=6, l=3), binary(n=40)
    d = collapse_diagnostics(vae, [x[:15], x[15:]])
    with no_grad():
        q = vae.encode(x)
        mu, var = minivae.to_numpy(q.loc.data), minivae.to_numpy(q.scale.data) ** 2
    np.testing.assert_allclose(d["mean_variance"], mu.var(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(
        d["kl_per_dim"], (0.5 * (mu**2 + var - 1 - np.log(var))).mean(axis=0), rtol=1e-9
    )
    assert d["active_units"] == int((mu.var(axis=0, ddof=1) > 0.01).sum())
    np.testing.assert_allclose(
        sum(d["kl_per_dim"]), num(vae.elbo(x)["kl"]), rtol=1e-9
    )  # KL sums over units


def test_a_unit_whose_mean_ignores_x_is_inactive():
    vae, x = tiny_vae(D=6, l=3), binary(n=40)
    vae.elbo(x)
    last = vae.encoder.layers[-1]
    kernel = minivae.to_numpy(last.kernel.data).copy()
    kernel[:, 0] = 0.0  # unit 0's mean is its bias alone, the same for every x
    last.kernel.data = backend.asarray(kernel)
    d = collapse_diagnostics(vae, [x])
    assert d["mean_variance"][0] < 1e-20 and d["active_units"] <= 2
    with pytest.raises(ValueError, match="at least 2"):
        collapse_diagnostics(vae, [x[:1]])


# ---------------------------------------------------------------- binarisation


def test_static_binarisation_is_a_seeded_bernoulli_draw():
    x = np.random.default_rng(0).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    a, b = binarize_static(x), binarize_static(x)
    assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    np.testing.assert_array_equal(a, b)  # the documented fixed seed
    assert not np.array_equal(a, binarize_static(x, seed=1))
    assert (a[x == 0] == 0).all() and (a[x == 255] == 1).all()
    p = x / 255  # the frequency of ones follows the intensity: 4 standard errors
    assert abs(a.mean() - p.mean()) < SE * math.sqrt((p * (1 - p)).sum()) / p.size
    with pytest.raises(ValueError, match="binarize_static"):
        binarize_static(x.astype(np.float32))


def test_dynamic_binarisation_draws_afresh_from_the_seeded_generator():
    x = Tensor(backend.asarray(np.full((50, 40), 0.3, dtype=np.float32)))
    minivae.seed(5)
    a = minivae.to_numpy(train.binarize(x).data)
    b = minivae.to_numpy(train.binarize(x).data)
    minivae.seed(5)
    np.testing.assert_array_equal(minivae.to_numpy(train.binarize(x).data), a)  # reseeded: the same
    assert not np.array_equal(a, b)  # the next draw: new images
    assert a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    assert abs(a.mean() - 0.3) < SE * math.sqrt(0.3 * 0.7 / a.size)
