"""The VAE with two stochastic layers (minivae.hierarchical) and the conditional VAE
(minivae.conditional).

* HierarchicalVAE: its log weight against a NumPy transcription of
  log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1) on the same noise;
  IWAE k = 1 is estimator A; gradcheck (float64, noise held fixed) of both objectives;
  log_marginal above the ELBO and the IWAE bound rising with k (paired, 4 standard errors).
* ConditionalVAE: the networks see [input, one-hot label]; k draws per image keep their labels
  (the k-sample ELBO is the mean of the one-sample ELBOs on the same noise); gradcheck; the
  label changes the loss; sampling a chosen class; bad labels refused.
"""

import math

import numpy as np
import pytest

import minivae
from minivae import Tensor, gradcheck, no_grad
from minivae.conditional import ConditionalVAE, one_hot
from minivae.hierarchical import HierarchicalVAE, layer_diagnostics
from minivae.nn import Dense, Flatten, Sequential

SE = 4


def T(a):
    return Tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def num(t):
    return float(minivae.to_numpy(t.data))


def mlp(out, hidden=5):
    return Sequential([Flatten(), Dense(hidden, "tanh"), Dense(out)])


def tiny_hvae(D=6, l1=3, l2=2):
    return HierarchicalVAE(mlp(2 * l1), mlp(2 * l2), mlp(2 * l1), mlp(D))


def binary(n=4, D=6, seed=0):
    return T((np.random.default_rng(seed).uniform(size=(n, D)) < 0.5).astype(np.float64))


def noise(shape, seed):
    return T(np.random.default_rng(seed).normal(size=shape))


def weights_of(*nets):
    return [
        (layer, attr)
        for net in nets
        for layer in net.layers
        for attr in ("kernel", "bias")
        if getattr(layer, attr, None) is not None
    ]


# ---------------------------------------------------------------- two stochastic layers


def _np_net(net, h):
    """mlp(): Dense + tanh, then a linear Dense."""
    hidden, last = [layer for layer in net.layers if isinstance(layer, Dense)]
    h = np.tanh(h @ minivae.to_numpy(hidden.kernel.data) + minivae.to_numpy(hidden.bias.data))
    return h @ minivae.to_numpy(last.kernel.data) + minivae.to_numpy(last.bias.data)


def _np_gauss_logpdf(z, h):
    mu, log_var = np.split(h, 2, axis=-1)
    return (-0.5 * ((z - mu) ** 2 / np.exp(log_var) + log_var + math.log(2 * math.pi))).sum(-1)


def test_log_weight_against_numpy():
    m, x = tiny_hvae(), binary()
    e1, e2 = noise((2, 4, 3), 1), noise((2, 4, 2), 2)
    log_px_z, log_ratio = m.log_weights(x, 2, (e1, e2))
    X, E1, E2 = (minivae.to_numpy(t.data) for t in (x, e1, e2))
    h1 = _np_net(m.q_z1, X)
    z1 = h1[:, :3] + np.exp(0.5 * h1[:, 3:]) * E1
    h2 = _np_net(m.q_z2, z1.reshape(-1, 3)).reshape(2, 4, 4)
    z2 = h2[..., :2] + np.exp(0.5 * h2[..., 2:]) * E2
    hp = _np_net(m.p_z1, z2.reshape(-1, 2)).reshape(2, 4, 6)
    logits = _np_net(m.p_x, z1.reshape(-1, 3)).reshape(2, 4, 6)
    log_bern = (X * -np.logaddexp(0, -logits) + (1 - X) * -np.logaddexp(0, logits)).sum(-1)
    log_prior = (-0.5 * (z2**2 + math.log(2 * math.pi))).sum(-1)
    ratio = (
        _np_gauss_logpdf(z1, h1) + _np_gauss_logpdf(z2, h2) - _np_gauss_logpdf(z1, hp) - log_prior
    )
    np.testing.assert_allclose(minivae.to_numpy(log_px_z.data), log_bern, rtol=1e-10)
    np.testing.assert_allclose(minivae.to_numpy(log_ratio.data), ratio, rtol=1e-10, atol=1e-10)


def test_hierarchical_iwae_with_one_sample_is_estimator_a():
    m, x = tiny_hvae(), binary()
    eps = (noise((1, 4, 3), 1), noise((1, 4, 2), 2))
    np.testing.assert_allclose(
        num(m.elbo(x, 1, "iwae", eps)["loss"]), num(m.elbo(x, 1, "mc", eps)["loss"]), rtol=1e-12
    )
    with pytest.raises(ValueError, match="unknown estimator 'analytic'"):
        m.elbo(x, estimator="analytic")


@pytest.mark.parametrize("estimator", ["mc", "iwae"])
def test_gradcheck_hierarchical_with_noise_held_fixed(estimator):
    m, x = tiny_hvae(), binary(n=3)
    eps = (noise((3, 3, 3), 1), noise((3, 3, 2), 2))
    m.elbo(x)
    slots = weights_of(m.q_z1, m.q_z2, m.p_z1, m.p_x)

    def loss(*weights):
        for (layer, attr), w in zip(slots, weights):
            setattr(layer, attr, w)
        return m.elbo(x, 3, estimator, eps, beta=0.8)["loss"]

    gradcheck(loss, [getattr(layer, attr).data for layer, attr in slots])


def test_hierarchical_bounds_rise_with_k_and_stay_below_log_marginal():
    m, x = tiny_hvae(), binary(n=40)
    with no_grad():
        reps = np.array([[-num(m.elbo(x, k, "iwae")["loss"]) for k in (1, 20)] for _ in range(30)])
        log_px = np.array([m.log_marginal(x, 500, chunk=128).numpy().mean() for _ in range(4)])
    gaps = reps[:, 1] - reps[:, 0]
    assert gaps.mean() > SE * gaps.std(ddof=1) / math.sqrt(len(gaps))
    se = math.hypot(reps[:, 1].std(ddof=1) / math.sqrt(30), log_px.std(ddof=1) / 2)
    assert log_px.mean() > reps[:, 1].mean() - SE * se  # K = 500 is at least as tight as k = 20


def test_hierarchical_sample_and_layer_diagnostics():
    m, x = tiny_hvae(), binary(n=30)
    with pytest.raises(ValueError, match="call the model on data first"):
        m.sample(2)
    m.elbo(x)
    assert m.sample(5).shape == (5, 6) and m.reconstruct(x).shape == (30, 6)
    d = layer_diagnostics(m, [x[:10], x[10:]])
    with no_grad():
        mu1 = minivae.to_numpy(m.encode(x).loc.data)
    assert d["active_units_z1"] == int((mu1.var(axis=0, ddof=1) > 0.01).sum())
    assert 0 <= d["active_units_z2"] <= 2


# ---------------------------------------------------------------- the conditional VAE


def tiny_cvae(D=6, l=2, classes=3):
    return ConditionalVAE(mlp(2 * l), mlp(D), classes=classes, likelihood="bernoulli")


def test_k_draws_keep_their_labels():
    """With k = 3 draws per image, the decoder's rows are draw by draw: the 3-sample ELBO on fixed
    noise must be the mean of the three 1-sample ELBOs (a wrong label order would break it)."""
    c, x, y = tiny_cvae(), binary(), np.array([0, 2, 1, 2])
    eps = noise((3, 4, 2), 1)
    whole = num(c.elbo(x, y, 3, "mc", eps)["loss"])
    parts = [num(c.elbo(x, y, 1, "mc", eps[i : i + 1])["loss"]) for i in range(3)]
    np.testing.assert_allclose(whole, np.mean(parts), rtol=1e-12)


def test_the_label_reaches_encoder_and_decoder():
    c, x = tiny_cvae(), binary()
    eps = noise((1, 4, 2), 1)
    a = c.elbo(x, np.array([0, 0, 0, 0]), 1, "mc", eps)
    b = c.elbo(x, np.array([1, 1, 1, 1]), 1, "mc", eps)
    assert num(a["kl"]) != num(b["kl"]) and num(a["nll"]) != num(b["nll"])
    assert c.encoder.net.layers[1].kernel.shape[0] == 6 + 3  # pixels + one-hot
    assert c.decoder.net.layers[1].kernel.shape[0] == 2 + 3  # z + one-hot


def test_gradcheck_conditional_with_noise_held_fixed():
    c, x, y = tiny_cvae(), binary(n=3), np.array([2, 0, 1])
    eps = noise((2, 3, 2), 1)
    c.elbo(x, y)
    slots = weights_of(c.encoder.net, c.decoder.net)

    def loss(*weights):
        for (layer, attr), w in zip(slots, weights):
            setattr(layer, attr, w)
        return c.elbo(x, y, 2, "iwae", eps)["loss"]

    gradcheck(loss, [getattr(layer, attr).data for layer, attr in slots])


def test_conditional_sampling_and_log_marginal():
    c, x, y = tiny_cvae(), binary(), np.array([0, 1, 2, 1])
    c.elbo(x, y)
    assert c.sample(np.array([0, 1, 2, 2, 1])).shape == (5, 6)
    log_px = c.log_marginal(x, y, 50, chunk=20).numpy()
    assert log_px.shape == (4,) and np.isfinite(log_px).all()


@pytest.mark.parametrize(
    "labels, match",
    [
        ([0, 3], "integers 0..2"),
        ([0.5, 1], "integers 0..2"),
        ([-1, 0], "integers 0..2"),
        ([[0, 1]], "shape"),
    ],
)
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ValueError, match=f"one_hot: .*{match}"):
        one_hot(np.array(labels), 3, T([0.0]))


def test_one_hot_values():
    hot = minivae.to_numpy(one_hot(np.array([2, 0], dtype=np.uint8), 3, T([0.0])).data)
    np.testing.assert_array_equal(hot, [[0, 0, 1], [1, 0, 0]])
    assert hot.dtype == np.float64
