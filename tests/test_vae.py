"""Tests of minivae.vae: the ELBO and its two estimators, log p(x), sampling, and bad input.

* elbo() against a line-by-line NumPy transcription of the lecture's _get_losses;
* with eps held fixed the reparameterised ELBO is a deterministic function of the
  weights: gradcheck it (float64) for both estimators x both posteriors x both likelihoods;
* log_marginal: exact chunking, >= the ELBO on average and tightening with K, and equal
  to log p(x) from numerical integration when the latent space is one-dimensional.
Statistical checks use fixed seeds and allow 4 standard errors, estimated from the draws.
"""

import math

import numpy as np
import pytest

import minivae
from minivae import Tensor, gradcheck, no_grad
from minivae import functional as F
from minivae.distributions import MultivariateNormalTriL, Normal, StandardNormal
from minivae.nn import Dense, Flatten, Sequential
from minivae.vae import VAE

SE = 4  # statistical checks: allowed |difference| in standard errors


def T(a):
    return Tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def tiny_vae(likelihood="gaussian", posterior="diag", D=6, l=2, hidden=5, **kw):
    """The brief's tiny VAE: Dense layers with tanh (smooth, so finite differences apply)."""
    k = 2 * l if posterior == "diag" else 2 * l + l * (l - 1) // 2
    encoder = Sequential([Flatten(), Dense(hidden, "tanh"), Dense(k)])
    decoder = Sequential([Dense(hidden, "tanh"), Dense(2 * D if likelihood == "gaussian" else D)])
    return VAE(encoder, decoder, likelihood=likelihood, posterior=posterior, **kw)


def data(n=4, shape=(2, 3), seed=0):
    return T(np.random.default_rng(seed).uniform(size=(n, *shape)))


def constant_encoder(h):
    """An 'encoder' that ignores x and returns the fixed output h (N, k)."""
    return lambda x: h


# ---------------------------------------------------------------- API and the lecture's loss


def test_api_shapes_and_parts():
    vae, x = tiny_vae(), data()
    parts = vae.elbo(x)
    assert set(parts) == {"loss", "kl", "nll"} and all(t.shape == () for t in parts.values())
    assert float(parts["loss"].numpy()) == pytest.approx(
        float((parts["nll"] + parts["kl"]).numpy()), rel=1e-14
    )
    assert isinstance(vae.prior, StandardNormal) and vae.prior.shape == (2,)
    assert vae.parameters() == vae.encoder.parameters() + vae.decoder.parameters()
    q = vae.encode(x)
    assert isinstance(q, Normal) and q.shape == (4, 2)
    assert vae.decode(q.rsample((3,))).mean.shape == (3, 4, 2, 3)
    assert vae(x).shape == x.shape
    assert vae.sample(7).shape == (7, 2, 3) and not vae.sample(7).requires_grad
    assert isinstance(tiny_vae(posterior="full").encode(x), MultivariateNormalTriL)
    assert vae.sample(2, x_shape=(3, 2)).shape == (2, 3, 2)  # any shape of D = 6 pixels


@pytest.mark.parametrize("log_std_min", [None, -1.0])
def test_elbo_is_the_lecture_loss(log_std_min):
    """A transcription of the lecture's VAE._get_losses (Keras ops -> NumPy), same eps."""
    rng = np.random.default_rng(1)
    N, l, shape = 5, 2, (3, 4)
    D = math.prod(shape)
    x, h = rng.uniform(size=(N, *shape)), rng.normal(size=(N, 2 * l))
    h_dec = rng.normal(size=(N, 2 * D))
    eps = rng.normal(size=(N, l))
    vae = VAE(constant_encoder(T(h)), lambda z: T(h_dec) + 0 * z.sum(), log_std_min=log_std_min)
    parts = vae.elbo(T(x), eps=T(eps))

    z_mean, z_log_var = np.split(h, 2, axis=-1)
    kl_loss = np.mean(0.5 * np.sum(np.square(z_mean) + np.exp(z_log_var) - 1 - z_log_var, axis=-1))
    h1, h2 = np.split(h_dec, 2, axis=-1)
    x_mean = 1 / (1 + np.exp(-h1.reshape(N, *shape)))
    x_log_std = h2.reshape(N, *shape)
    if log_std_min is not None:  # our documented floor (the lecture has none)
        x_log_std = log_std_min + np.logaddexp(0, x_log_std - log_std_min)
    log_Z = 0.5 * np.log(2 * np.pi)
    nll_loss = 0.5 * np.square((x - x_mean) / np.exp(x_log_std)) + x_log_std + log_Z
    nll_loss = np.mean(np.sum(nll_loss, axis=(-1, -2)))
    assert float(parts["kl"].numpy()) == pytest.approx(kl_loss, rel=1e-12)
    assert float(parts["nll"].numpy()) == pytest.approx(nll_loss, rel=1e-12)
    assert float(parts["loss"].numpy()) == pytest.approx(kl_loss + nll_loss, rel=1e-12)


def test_elbo_bernoulli_and_the_sample_it_decodes():
    """nll = -sum x log p + (1-x) log(1-p), decoded at z = mu + exp(0.5 log_var) eps (eq. (3)/(4)
    with L=2)."""
    rng = np.random.default_rng(2)
    x, h, eps = rng.uniform(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(2, 3, 1))
    W = rng.normal(size=(1, 4))
    vae = VAE(constant_encoder(T(h)), lambda z: z @ T(W), likelihood="bernoulli")
    parts = vae.elbo(T(x), samples=2, eps=T(eps))
    z = h[:, :1] + np.exp(0.5 * h[:, 1:]) * eps  # (2, 3, 1)
    logits = z @ W
    log_p = -x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits)
    assert float(parts["nll"].numpy()) == pytest.approx(-log_p.sum(-1).mean(), rel=1e-12)


def test_full_posterior_with_zero_off_diagonal_is_the_diagonal_one():
    rng = np.random.default_rng(3)
    x, mu, log_std, eps = rng.uniform(size=(4, 6)), *rng.normal(size=(3, 4, 3))
    decoder = Sequential([Dense(5, "tanh"), Dense(12)])
    full = VAE(
        constant_encoder(T(np.concatenate([mu, log_std, np.zeros((4, 3))], -1))),
        decoder,
        posterior="full",
    )
    diag = VAE(constant_encoder(T(np.concatenate([mu, 2 * log_std], -1))), decoder)
    for est in ("analytic", "mc"):
        a, b = (
            full.elbo(T(x), eps=T(eps), estimator=est),
            diag.elbo(T(x), eps=T(eps), estimator=est),
        )
        for key in a:
            assert float(a[key].numpy()) == pytest.approx(float(b[key].numpy()), rel=1e-12), (
                est,
                key,
            )


def test_float32_stays_float32():
    vae = tiny_vae()
    x = Tensor(np.random.default_rng(0).uniform(size=(4, 2, 3)).astype(np.float32))
    loss = vae.elbo(x, samples=2, estimator="mc")["loss"]
    assert str(loss.dtype).endswith("float32")
    loss.backward()
    assert all(str(p.grad.dtype).endswith("float32") for p in vae.parameters())
    assert str(vae.log_marginal(x, samples=4).dtype).endswith("float32")


# ---------------------------------------------------------------- gradients through sampling


@pytest.mark.parametrize("estimator", ["analytic", "mc"])
@pytest.mark.parametrize("posterior", ["diag", "full"])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_gradcheck_elbo_with_noise_held_fixed(estimator, posterior, likelihood):
    """D=6, l=2, hidden 5: every weight of encoder and decoder, coordinate by coordinate."""
    vae, x = tiny_vae(likelihood, posterior), data()
    eps = T(np.random.default_rng(4).normal(size=(3, 4, 2)))  # L=3 samples, held fixed
    vae.elbo(x)  # build the weights (float64, from x)
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
        return vae.elbo(x, samples=3, estimator=estimator, eps=eps)["loss"]

    gradcheck(loss, [getattr(layer, attr).data for layer, attr in slots])


def test_analytic_kl_equals_the_monte_carlo_kl():
    """Same encoder outputs: 'mc' kl (E_q[log q - log p], eq. (3)) averages to the closed form (eq.
    (24))."""
    vae, x = tiny_vae(posterior="full", l=3), data(n=6)
    analytic = vae.elbo(x)
    with no_grad():
        mc = np.array(
            [float(vae.elbo(x, samples=100, estimator="mc")["kl"].numpy()) for _ in range(40)]
        )
    assert float(analytic["kl"].numpy()) > 0
    se = mc.std(ddof=1) / math.sqrt(len(mc))
    assert abs(mc.mean() - float(analytic["kl"].numpy())) < SE * se
    eps = T(np.random.default_rng(5).normal(size=(2, 6, 3)))  # and the nll is the same term in both
    a, m = vae.elbo(x, 2, "analytic", eps), vae.elbo(x, 2, "mc", eps)
    assert float(a["nll"].numpy()) == float(m["nll"].numpy())


# ---------------------------------------------------------------- log p(x)


def one_dim_vae(n=32):
    """l = 1, so log p(x) = log int p(x|z) p(z) dz can be integrated numerically. The encoder's
    log-variance is raised by 1.5, so q(z|x) is wider than the prior and the importance weights
    p(x|z) p(z) / q(z|x) stay bounded (the estimate then converges quickly)."""
    vae, x = tiny_vae(l=1), data(n=n, shape=(6,))
    vae.elbo(x)
    bias = vae.encoder.layers[-1].bias
    bias.data = bias.data + T([0.0, 1.5]).data
    return vae, x


def quadrature_log_px(vae, x):
    """log of the Riemann sum of p(x|z) p(z) over z in [-12, 12] (the prior's tails beyond: <
    e^-72)."""
    z = np.linspace(-12, 12, 4001).reshape(-1, 1, 1)
    with no_grad():
        log_joint = vae.decode(T(z)).log_prob(x) + vae.prior.log_prob(T(z))
        return F.logsumexp(log_joint, axis=0).numpy() + math.log(z[1, 0, 0] - z[0, 0, 0])


def test_log_marginal_matches_numerical_integration():
    vae, x = one_dim_vae()
    exact = quadrature_log_px(vae, x).mean()
    reps = np.array(
        [minivae.to_numpy(vae.log_marginal(x, samples=5000, chunk=1000)).mean() for _ in range(8)]
    )
    se = reps.std(ddof=1) / math.sqrt(len(reps))
    assert abs(reps.mean() - exact) < SE * se, (reps.mean(), exact, se)


def test_log_marginal_is_above_the_elbo_and_tightens_with_K():
    vae, x = one_dim_vae()
    with no_grad():
        elbo = -float(vae.elbo(x, samples=5000)["loss"].numpy())
    means, ses = {}, {}
    for K in (1, 10, 100):
        reps = np.array(
            [minivae.to_numpy(vae.log_marginal(x, samples=K)).mean() for _ in range(64)]
        )
        means[K], ses[K] = reps.mean(), reps.std(ddof=1) / math.sqrt(len(reps))
    print(
        f"ELBO {elbo:.4f}, log p(x) estimates",
        {K: f"{m:.4f} +- {ses[K]:.4f}" for K, m in means.items()},
        f"exact {quadrature_log_px(vae, x).mean():.4f}",
    )
    assert abs(means[1] - elbo) < SE * ses[1]  # K = 1 is estimator A: the ELBO on average
    for small, big in ((1, 10), (10, 100)):
        assert means[big] - means[small] > SE * math.hypot(ses[big], ses[small])


def test_log_marginal_chunks_draw_the_same_numbers():
    vae, x = tiny_vae(), data()
    vae.elbo(x)  # build the weights first: they draw from the same random stream
    minivae.seed(3)
    whole = minivae.to_numpy(vae.log_marginal(x, samples=250, chunk=250))
    minivae.seed(3)
    # 35 chunks of 7, one of 5
    chunked = minivae.to_numpy(vae.log_marginal(x, samples=250, chunk=7))
    assert whole.shape == (4,)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


# ---------------------------------------------------------------- the floor and bad input


def test_likelihood_floor_reaches_the_vae():
    vae = VAE(
        constant_encoder(T(np.zeros((2, 2)))),
        lambda z: T(np.full((2, 6), -100.0)) + 0 * z.sum(),
        log_std_min=-3.0,
    )
    vae.encode(T(np.zeros((2, 3))))
    assert np.all(vae.decode(T(np.zeros((2, 1)))).log_std.numpy() >= -3.0)
    assert np.isfinite(float(vae.elbo(T(np.full((2, 3), 0.5)))["loss"].numpy()))


def test_bad_input_errors_say_what_was_wrong():
    vae, x = tiny_vae(), data()
    with pytest.raises(ValueError, match=r"VAE.sample: the latent size is not known yet"):
        vae.sample(3)
    with pytest.raises(ValueError, match=r"VAE.decode: the data shape is not known yet"):
        vae.decode(T(np.zeros((1, 2))))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            ValueError, match=rf"VAE.elbo: samples must be a positive integer, got {bad!r}"
        ):
            vae.elbo(x, samples=bad)
    with pytest.raises(
        ValueError, match=r"VAE.log_marginal: chunk must be a positive integer, got 0"
    ):
        vae.log_marginal(x, chunk=0)
    with pytest.raises(
        ValueError, match=r"unknown estimator 'B'; expected one of \('analytic', 'mc'\)"
    ):
        vae.elbo(x, estimator="B")
    with pytest.raises(ValueError, match=r"unknown likelihood 'poisson'"):
        tiny_vae(likelihood="poisson")
    with pytest.raises(ValueError, match=r"unknown posterior 'tril'"):
        tiny_vae(posterior="tril")
    with pytest.raises(
        ValueError, match=r"eps has shape \(2, 4, 2\), expected \(samples, N, l\) = \(3, 4, 2\)"
    ):
        vae.elbo(x, samples=3, eps=T(np.zeros((2, 4, 2))))
    with pytest.raises(
        ValueError, match=r"VAE.encode: expected a batch x of shape \(N, \.\.\.\), got \(6,\)"
    ):
        vae.elbo(T(np.zeros(6)))
    # decoder output that does not fit x: 6 pixels need 12 outputs for a Gaussian
    wrong = VAE(Sequential([Flatten(), Dense(4)]), Sequential([Dense(10)]))
    with pytest.raises(
        ValueError,
        match=r"decoder returned shape \(4, 10\); a 'gaussian' likelihood for data of "
        r"shape \(N, 2, 3\) needs \(M, 12\) = 2 x 6",
    ):
        wrong.elbo(x)
    wrong = VAE(Sequential([Flatten(), Dense(4)]), Sequential([Dense(12)]), likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"needs \(M, 6\) = 6 logits"):
        wrong.elbo(x)
    with pytest.raises(
        ValueError, match=r"'diag' posterior needs the encoder to return \(N, 2l\).*got \(4, 3\)"
    ):
        VAE(Sequential([Flatten(), Dense(3)]), Sequential([Dense(12)])).elbo(x)
    with pytest.raises(ValueError, match=r"'full' posterior.*l=2: 5.*got \(4, 4\)"):
        VAE(Sequential([Flatten(), Dense(4)]), Sequential([Dense(12)]), posterior="full").elbo(x)
    with pytest.raises(
        ValueError, match=r"the encoder gives a 2-dimensional latent, the prior has shape \(3,\)"
    ):
        VAE(
            Sequential([Flatten(), Dense(4)]),
            Sequential([Dense(12)]),
            prior=StandardNormal(3, "float64"),
        ).elbo(x)
