"""The variational autoencoder: the ELBO, its two SGVB estimators, and log p(x).

Generative model p(z) p(x|z): prior p(z) = N(0, I), likelihood p(x|z) from the
decoder. Inference model q(z|x) from the encoder. The ELBO (lecture eq. (2)):

    L(theta, phi; x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

It is estimated with z^(j) = g_phi(eps^(j), x) = mu + L eps^(j), the
reparameterisation that lets gradients reach the encoder (eqs. (16)-(19)):

* estimator A (eq. (3)):  1/L sum_j [log p(x, z^(j)) - log q(z^(j)|x)]
* estimator B (eq. (4)):  1/L sum_j log p(x|z^(j)) - KL(q || p), KL in closed form (eq. (24))

``elbo()`` returns the loss to minimise, -ELBO = nll + kl, with the lecture's
bookkeeping: sums over pixels and latent dimensions, means over the batch (and
over the L samples).
"""

from __future__ import annotations

import math

from . import functional as F
from .distributions import (
    Bernoulli,
    GaussianLikelihood,
    MultivariateNormalTriL,
    Normal,
    StandardNormal,
    kl_divergence,
)
from .nn.module import Module
from .tensor import Tensor, as_tensor, lift, no_grad

LIKELIHOODS = ("gaussian", "bernoulli")
POSTERIORS = ("diag", "full")
ESTIMATORS = ("analytic", "mc")


class VAE(Module):
    """encoder(x) -> posterior parameters, decoder(z) -> likelihood parameters.

    posterior="diag": the encoder returns (N, 2l) = [mu, log_var], log_var a log-variance
        as in the lecture.
    posterior="full": the encoder returns (N, 2l + l(l-1)/2) = [mu, log of the diagonal of L,
        strictly-lower entries of L row by row], Sigma = L L^T.
    likelihood="gaussian": the decoder returns (N, 2D) = [mean logits, raw log-std], the mean
        squashed by a sigmoid into [0, 1] and the log-std floored at `log_std_min` (see
        GaussianLikelihood). (The lecture's decoder interleaves the two as a trailing axis
        of size 2; two halves are the same model up to the order of the last Dense layer's units.)
    likelihood="bernoulli": the decoder returns (N, D) logits.
    D = prod(x.shape[1:]); the VAE reshapes the decoder output to x's shape.

    The prior defaults to StandardNormal(l), l read from the encoder on the first call. The
    parameters are the encoder's and the decoder's (the prior is fixed).
    """

    def __init__(
        self,
        encoder,
        decoder,
        prior=None,
        likelihood: str = "gaussian",
        posterior: str = "diag",
        log_std_min: float | None = -5.0,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"VAE: unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}"
            )
        if posterior not in POSTERIORS:
            raise ValueError(f"VAE: unknown posterior {posterior!r}; expected one of {POSTERIORS}")
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        self._default_prior = prior is None  # then N(0, I), sized (and typed) by the encoder
        self.likelihood, self.posterior, self.log_std_min = likelihood, posterior, log_std_min
        self.x_shape = None  # one data point's shape, learned from the data

    def forward(self, x):
        """The decoded mean of one reparameterised draw z ~ q(z|x), as the lecture's call()."""
        return self.decode(self.encode(x).rsample()).mean

    # --- the two halves ------------------------------------------------------------
    def encode(self, x):
        """q(z|x): a Normal ("diag") or a MultivariateNormalTriL ("full"), batch shape (N,)."""
        x = as_tensor(x)
        if x.ndim < 2:
            raise ValueError(f"VAE.encode: expected a batch x of shape (N, ...), got {x.shape}")
        h = self.encoder(x)
        if h.ndim != 2:
            raise ValueError(
                f"VAE.encode: the encoder must return (N, k), got {h.shape} for x of shape "
                f"{x.shape}"
            )
        k = h.shape[1]
        if self.posterior == "diag":
            if k % 2:
                raise ValueError(
                    "VAE.encode: a 'diag' posterior needs the encoder to return (N, 2l) = [mu, "
                    f"log_var], got {h.shape}"
                )
            l = k // 2
            mu, log_var = F.split(h, 2, axis=-1)
            q = Normal.from_log_var(mu, log_var)
        else:
            l = _full_latent_dim(k)
            if l is None:
                raise ValueError(
                    "VAE.encode: a 'full' posterior needs the encoder to return (N, 2l + "
                    "l(l-1)/2) = "
                    "[mu, log diag L, strictly-lower L] (l=1: 2, l=2: 5, l=3: 9, ...), got "
                    f"{h.shape}"
                )
            mu, log_diag, lower = F.split(h, [l, l, l * (l - 1) // 2], axis=-1)
            q = MultivariateNormalTriL.from_log_diag(mu, log_diag, lower)
        if self._default_prior and (self.prior is None or self.prior.loc.dtype != h.dtype):
            # 'float32' or 'float64'
            self.prior = StandardNormal(l, dtype=str(h.dtype).split(".")[-1])
        if self.prior.shape[-1] != l:
            raise ValueError(
                f"VAE.encode: the encoder gives a {l}-dimensional latent, the prior has shape "
                f"{self.prior.shape}"
            )
        self.x_shape = x.shape[1:]
        return q

    def decode(self, z, x_shape=None):
        """p(x|z) for z of shape (..., l); px.mean has shape (..., *x_shape)."""
        z = as_tensor(z)
        x_shape = tuple(x_shape) if x_shape is not None else self.x_shape
        if x_shape is None:
            raise ValueError(
                "VAE.decode: the data shape is not known yet; call the VAE on data first or pass "
                "x_shape="
            )
        D = math.prod(x_shape)
        lead = z.shape[:-1]
        h = self.decoder(z.reshape(-1, z.shape[-1]))  # the decoder sees one flat batch (M, l)
        need = 2 * D if self.likelihood == "gaussian" else D
        if h.ndim != 2 or h.shape[1] != need:
            what = (
                f"2 x {D} (mean logits, then raw log-std)"
                if self.likelihood == "gaussian"
                else f"{D} logits"
            )
            raise ValueError(
                f"VAE.decode: the decoder returned shape {h.shape}; a {self.likelihood!r} "
                "likelihood for data "
                f"of shape (N, {', '.join(map(str, x_shape))}) needs (M, {need}) = {what}"
            )
        event = len(x_shape)
        if self.likelihood == "bernoulli":
            return Bernoulli(h.reshape(*lead, *x_shape), event_ndim=event)
        h1, h2 = F.split(h, 2, axis=-1)
        return GaussianLikelihood(
            h1.reshape(*lead, *x_shape), h2.reshape(*lead, *x_shape), self.log_std_min, event
        )

    # --- the objective -------------------------------------------------------------
    def elbo(self, x, samples: int = 1, estimator: str = "analytic", eps=None) -> dict:
        """{"loss", "kl", "nll"}: scalar Tensors, loss = nll + kl = -ELBO (means over the batch).

        estimator="analytic": SGVB estimator B (eq. (4)), kl = the closed-form KL (eq. (24)).
        estimator="mc":       SGVB estimator A (eq. (3)), kl = 1/L sum_j [log q(z^(j)|x) - log p(z^(j))].
        eps: noise of shape (samples, N, l) (or (N, l) for one sample) to hold the draws fixed.
        """
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"VAE.elbo: unknown estimator {estimator!r}; expected one of {ESTIMATORS}"
            )
        _check_count("VAE.elbo", "samples", samples)
        x = as_tensor(x)
        q = self.encode(x)
        if eps is not None:
            eps = lift(eps, x, "VAE.elbo")
            if eps.shape == q.shape and samples == 1:
                eps = eps.reshape(1, *eps.shape)
            if eps.shape != (samples, *q.shape):
                raise ValueError(
                    f"VAE.elbo: eps has shape {eps.shape}, expected (samples, N, l) = "
                    f"{(samples, *q.shape)}"
                )
        z = q.rsample((samples,), eps=eps)  # (L, N, l): z = mu + L eps
        log_px_z = self.decode(z).log_prob(x)  # (L, N): log p(x|z), summed over pixels
        nll = -log_px_z.mean()
        if estimator == "analytic":
            kl = kl_divergence(q, self.prior).mean()
        else:
            kl = (q.log_prob(z) - self.prior.log_prob(z)).mean()
        return {"loss": nll + kl, "kl": kl, "nll": nll}

    def log_marginal(self, x, samples: int = 1000, chunk: int = 100):
        """Importance-sampled log p(x), one value per data point (a backend array (N,)).

        log p(x) = log E_q[p(x|z) p(z) / q(z|x)] ~ log (1/K) sum_k w_k,
        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x).
        By Jensen's inequality its expectation lies between the ELBO (K = 1) and
        log p(x), and it tightens as K grows (Burda et al. 2016). Computed under
        no_grad, `chunk` draws at a time, so K = 5000 fits in memory.
        """
        _check_count("VAE.log_marginal", "samples", samples)
        _check_count("VAE.log_marginal", "chunk", chunk)
        with no_grad():
            x = as_tensor(x)
            q = self.encode(x)
            per_chunk = []  # log sum_k w_k over each chunk, (N,) each
            for start in range(0, samples, chunk):
                z = q.sample((min(chunk, samples - start),))
                log_w = self.decode(z).log_prob(x) + self.prior.log_prob(z) - q.log_prob(z)
                per_chunk.append(F.logsumexp(log_w, axis=0))
            return (F.logsumexp(F.stack(per_chunk), axis=0) - math.log(samples)).data

    def sample(self, n: int, x_shape=None) -> Tensor:
        """The decoded means of n draws from the prior, shape (n, *x_shape)."""
        _check_count("VAE.sample", "n", n)
        if self.prior is None:
            raise ValueError(
                "VAE.sample: the latent size is not known yet; call the VAE on data first or pass "
                "prior="
            )
        with no_grad():
            return self.decode(self.prior.sample((n,)), x_shape).mean


def _full_latent_dim(k: int):
    """l with 2l + l(l-1)/2 = l(l+3)/2 = k, or None."""
    l = (math.isqrt(9 + 8 * k) - 3) // 2
    return l if l >= 1 and l * (l + 3) // 2 == k else None


def _check_count(who: str, what: str, n) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{who}: {what} must be a positive integer, got {n!r}")
