"""A VAE with two stochastic layers, Burda et al. (2016)'s second architecture. Read vae.py first.

The one-layer VAE has q(z|x) and p(z) p(x|z). Here each side is a chain of two:

    inference   q(z1, z2 | x) = q(z1|x) q(z2|z1)
    generative  p(x, z1, z2)  = p(z2) p(z1|z2) p(x|z1),   p(z2) = N(0, I)

q(z1|x), q(z2|z1) and p(z1|z2) are diagonal Gaussians (a network returns [mu, log_var]);
p(x|z1) is a Bernoulli (a network returns logits). A draw is two reparameterised draws in
turn, z1 = mu1(x) + sigma1(x) eps1, then z2 = mu2(z1) + sigma2(z1) eps2, and the log weight

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)

plays the part that log p(x, z) - log q(z|x) plays in the one-layer VAE: the ELBO is its
mean (estimator A), the IWAE bound and log p(x) its log-mean-exp (vae.iwae_bound).
"""

from __future__ import annotations

import math

from . import backend
from . import functional as F
from .distributions import Bernoulli, Normal, StandardNormal, check_count
from .nn.module import Module
from .tensor import Tensor, as_tensor, no_grad
from .vae import check_beta, iwae_bound

ESTIMATORS = ("mc", "iwae")


class HierarchicalVAE(Module):
    """Four networks: q_z1(x), q_z2(z1), p_z1(z2) -> [mu, log_var]; p_x(z1) -> Bernoulli logits.

    The latent sizes are read from the networks' outputs on the first call.
    """

    def __init__(self, q_z1, q_z2, p_z1, p_x):
        self.q_z1, self.q_z2, self.p_z1, self.p_x = q_z1, q_z2, p_z1, p_x
        self.prior, self.x_shape, self.beta = None, None, 1.0

    def forward(self, x):
        return self.log_weights(x)[0]

    @staticmethod
    def _gaussian(net, inputs, who) -> Normal:
        """net(inputs) for inputs (..., d): a diagonal Gaussian, batch shape inputs.shape[:-1]."""
        h = net(inputs.reshape(-1, inputs.shape[-1]))
        if h.ndim != 2 or h.shape[1] % 2:
            raise ValueError(
                f"HierarchicalVAE: {who} must return (M, 2l) = [mu, log_var], got {h.shape}"
            )
        mu, log_var = F.split(h.reshape(*inputs.shape[:-1], h.shape[1]), 2, axis=-1)
        return Normal.from_log_var(mu, log_var)

    def encode(self, x) -> Normal:
        """q(z1|x), batch shape (N,)."""
        x = as_tensor(x)
        if x.ndim < 2:
            raise ValueError(
                f"HierarchicalVAE.encode: expected a batch x of shape (N, ...), got {x.shape}"
            )
        self.x_shape = x.shape[1:]
        return self._gaussian(self.q_z1, x.reshape(x.shape[0], -1), "q_z1")

    def decode(self, z1) -> Bernoulli:
        """p(x|z1) for z1 of shape (..., l1)."""
        h = self.p_x(z1.reshape(-1, z1.shape[-1]))
        D = math.prod(self.x_shape)
        if h.ndim != 2 or h.shape[1] != D:
            raise ValueError(f"HierarchicalVAE: p_x must return (M, {D}) logits, got {h.shape}")
        return Bernoulli(h.reshape(*z1.shape[:-1], *self.x_shape), event_ndim=len(self.x_shape))

    def log_weights(self, x, samples: int = 1, eps=None):
        """(log p(x|z1), log q(z1, z2|x) - log p(z1, z2)), each (samples, N).

        eps: (eps1, eps2) of shapes (samples, N, l1), (samples, N, l2) to hold the draws fixed."""
        x = as_tensor(x)
        eps1, eps2 = (None, None) if eps is None else eps
        q1 = self.encode(x)
        z1 = q1.rsample((samples,), eps=eps1)  # (k, N, l1)
        q2 = self._gaussian(self.q_z2, z1, "q_z2")  # batch (k, N)
        z2 = q2.rsample(eps=eps2)  # (k, N, l2): one draw of z2 for each draw of z1
        if self.prior is None or self.prior.loc.dtype != z2.dtype:
            self.prior = StandardNormal(z2.shape[-1], dtype=str(z2.dtype).split(".")[-1])
        p1 = self._gaussian(self.p_z1, z2, "p_z1")
        log_px_z = self.decode(z1).log_prob(x)
        log_ratio = q1.log_prob(z1) + q2.log_prob(z2) - p1.log_prob(z1) - self.prior.log_prob(z2)
        return log_px_z, log_ratio

    def elbo(self, x, samples: int = 1, estimator: str = "mc", eps=None, beta=None) -> dict:
        """As VAE.elbo: {"loss", "kl", "nll"}, nll + kl = -ELBO (estimator A), loss = nll + beta kl
        ("mc") or -L_k with the log ratio weighted by beta ("iwae"). No closed-form KL here: the
        KL of q(z2|z1) from p(z1|z2) is not one Gaussian against another."""
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"HierarchicalVAE.elbo: unknown estimator {estimator!r}; "
                f"expected one of {ESTIMATORS}"
            )
        check_count("HierarchicalVAE.elbo", "samples", samples)
        beta = check_beta("HierarchicalVAE.elbo", self.beta if beta is None else beta)
        log_px_z, log_ratio = self.log_weights(x, samples, eps)
        nll, kl = -log_px_z.mean(), log_ratio.mean()
        if estimator == "mc":
            return {"loss": nll + beta * kl, "kl": kl, "nll": nll}
        return {"loss": -iwae_bound(log_px_z - beta * log_ratio).mean(), "kl": kl, "nll": nll}

    def log_marginal(self, x, samples: int = 1000, chunk: int = 100) -> Tensor:
        """Importance-sampled log p(x), q(z1, z2|x) the proposal: (N,), as VAE.log_marginal."""
        check_count("HierarchicalVAE.log_marginal", "samples", samples)
        check_count("HierarchicalVAE.log_marginal", "chunk", chunk)
        with no_grad():
            per_chunk = []
            for start in range(0, samples, chunk):
                log_px_z, log_ratio = self.log_weights(x, min(chunk, samples - start))
                per_chunk.append(F.logsumexp(log_px_z - log_ratio, axis=0))
            return F.logsumexp(F.stack(per_chunk), axis=0) - math.log(samples)

    def sample(self, n: int) -> Tensor:
        """Decoded means of z2 ~ p(z2), z1 ~ p(z1|z2): shape (n, *x_shape)."""
        check_count("HierarchicalVAE.sample", "n", n)
        if self.prior is None or self.x_shape is None:
            raise ValueError(
                "HierarchicalVAE.sample: call the model on data first (the sizes are not known)"
            )
        with no_grad():
            z1 = self._gaussian(self.p_z1, self.prior.sample((n,)), "p_z1").sample()
            return self.decode(z1).mean

    def reconstruct(self, x) -> Tensor:
        """The decoded mean at z1 = the mean of q(z1|x)."""
        with no_grad():
            return self.decode(self.encode(x).loc).mean


def layer_diagnostics(
    model: HierarchicalVAE, x_batches, samples: int = 20, threshold: float = 0.01
):
    """Active units of each stochastic layer, as Burda et al. count them.

    Unit u of layer 1 is active when Cov_x(E_q(z1|x)[z1_u]) > threshold; for layer 2 the
    posterior mean E_q(z2|x)[z2] = E_q(z1|x)[mu2(z1)] has no closed form and is estimated
    from `samples` draws of z1 per image. Returns {"active_units_z1", "active_units_z2"}."""
    xp = backend.xp()
    means = {1: [], 2: []}
    with no_grad():
        for x in x_batches:
            q1 = model.encode(x)
            means[1].append(q1.loc.data)
            q2 = model._gaussian(model.q_z2, q1.sample((samples,)), "q_z2")
            means[2].append(xp.mean(q2.loc.data, axis=0))
    out = {}
    for layer, parts in means.items():
        mu = xp.astype(xp.concat(parts, axis=0), xp.float64)
        if mu.shape[0] < 2:
            raise ValueError(f"layer_diagnostics: needs at least 2 data points, got {mu.shape[0]}")
        variance = backend.to_numpy(xp.var(mu, axis=0, correction=1))
        out[f"active_units_z{layer}"] = int((variance > threshold).sum())
    return out
