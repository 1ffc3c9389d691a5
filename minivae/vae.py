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

from . import backend
from . import functional as F
from .distributions import (
    Bernoulli,
    GaussianLikelihood,
    MultivariateNormalTriL,
    Normal,
    StandardNormal,
    check_count,
    kl_divergence,
)
from .nn.module import Module
from .tensor import Tensor, as_int, as_tensor, lift, no_grad

LIKELIHOODS = ("gaussian", "bernoulli")
POSTERIORS = ("diag", "full")
ESTIMATORS = ("analytic", "mc")
REDUCTIONS = ("mean", "sum")


class VAE(Module):
    """encoder(x) -> posterior parameters, decoder(z) -> likelihood parameters.

    posterior="diag": the encoder returns (N, 2l) = [mu, log_var], log_var a log-variance
        as in the lecture, or the two heads (mu, log_var) as a tuple of (N, l) Tensors
        (PyTorch's fc21/fc22).
    posterior="full": the encoder returns (N, 2l + l(l-1)/2) = [mu, log of the diagonal of L,
        strictly-lower entries of L row by row], Sigma = L L^T, or the tuple
        (mu, log_diag, strictly_lower).
    likelihood="gaussian": the decoder returns (N, 2D) = [mean logits, raw log-std], the mean
        squashed by a sigmoid into [0, 1] and the log-std floored at `log_std_min` (see
        GaussianLikelihood). (The lecture's decoder interleaves the two as a trailing axis
        of size 2; two halves are the same model up to the order of the last Dense layer's units.)
    likelihood="bernoulli": the decoder returns (N, D) logits; x must lie in [0, 1], which
        log_prob checks (one device read per call; validate_data=False skips it).
    D = prod(x.shape[1:]); the VAE reshapes the decoder output to x's shape.
    Data are never rescaled here: a raw integer (uint8) array is refused; scale images
    to [0, 1] first (x / 255), or train with fit(), whose to_device does it.

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
        validate_data: bool = True,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"VAE: unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}"
            )
        if posterior not in POSTERIORS:
            raise ValueError(f"VAE: unknown posterior {posterior!r}; expected one of {POSTERIORS}")
        if log_std_min is not None and not (
            isinstance(log_std_min, (int, float)) and math.isfinite(log_std_min)
        ):
            raise ValueError(
                f"VAE: log_std_min must be a finite number or None, got {log_std_min!r}"
            )
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        self._default_prior = prior is None  # then N(0, I), sized (and typed) by the encoder
        self.likelihood, self.posterior, self.log_std_min = likelihood, posterior, log_std_min
        self.x_shape = None  # one data point's shape, learned from the data
        self.validate_data = validate_data

    def forward(self, x):
        """The decoded mean of one reparameterised draw z ~ q(z|x), as the lecture's call()."""
        return self.decode(self.encode(x).rsample()).mean

    # --- the two halves ------------------------------------------------------------
    def encode(self, x):
        """q(z|x): a Normal ("diag") or a MultivariateNormalTriL ("full"), batch shape (N,)."""
        x = as_tensor(_refuse_integers(x, "VAE.encode"))
        if x.ndim < 2:
            raise ValueError(f"VAE.encode: expected a batch x of shape (N, ...), got {x.shape}")
        if x.shape[0] == 0:  # the means over the batch would be NaN
            raise ValueError(f"VAE.encode: an empty batch (x of shape {x.shape})")
        parts = self._posterior_parts(self.encoder(x), x.shape)
        if self.posterior == "diag":
            mu, log_var = parts
            q = Normal.from_log_var(mu, log_var)
        else:
            mu, log_diag, lower = parts
            q = MultivariateNormalTriL.from_log_diag(mu, log_diag, lower)
        l = mu.shape[-1]
        if self._default_prior and (self.prior is None or self.prior.loc.dtype != mu.dtype):
            self.prior = StandardNormal(l, dtype=backend.float_name(mu.dtype))
        if self.prior.shape[-1] != l:
            raise ValueError(
                f"VAE.encode: the encoder gives a {l}-dimensional latent, the prior has shape "
                f"{self.prior.shape}"
            )
        self.x_shape = x.shape[1:]
        return q

    def _posterior_parts(self, h, x_shape) -> list:
        """The encoder's output as the posterior's parameters, each (N, ...): one (N, k)
        tensor split as laid out in the class docstring, or a tuple of them (two heads)."""
        if isinstance(h, (tuple, list)):
            return self._posterior_heads(list(h), x_shape)
        if h.ndim != 2:
            raise ValueError(
                f"VAE.encode: the encoder must return (N, k), got {h.shape} "
                f"for x of shape {x_shape}"
            )
        k = h.shape[1]
        if self.posterior == "diag":
            if k % 2:
                raise ValueError(
                    "VAE.encode: a 'diag' posterior needs the encoder to return (N, 2l) = "
                    f"[mu, log_var], got {h.shape}"
                )
            return F.split(h, 2, axis=-1)
        l = _full_latent_dim(k)
        if l is None:
            raise ValueError(
                f"VAE.encode: a 'full' posterior needs the encoder to return (N, 2l + l(l-1)/2) = "
                f"[mu, log diag L, strictly-lower L] (l=1: 2, l=2: 5, l=3: 9, ...), got {h.shape}"
            )
        return F.split(h, [l, l, l * (l - 1) // 2], axis=-1)

    def _posterior_heads(self, heads: list, x_shape) -> list:
        """(mu, log_var) for "diag", (mu, log_diag, strictly_lower) for "full", checked."""
        names = "(mu, log_var)" if self.posterior == "diag" else "(mu, log_diag, strictly_lower)"
        shapes = [getattr(t, "shape", type(t).__name__) for t in heads]
        if len(heads) != len(names.split(",")) or not all(isinstance(t, Tensor) for t in heads):
            raise ValueError(
                f"VAE.encode: a {self.posterior!r} posterior's encoder returns one "
                f"(N, k) Tensor or the Tensors {names}; got {shapes}"
            )
        l = heads[0].shape[-1] if heads[0].ndim == 2 else 0
        expected = [(x_shape[0], l), (x_shape[0], l), (x_shape[0], l * (l - 1) // 2)][: len(heads)]
        if l == 0 or [t.shape for t in heads] != expected:
            raise ValueError(
                f"VAE.encode: the encoder's {names} have shapes {shapes}; "
                f"for x of shape {x_shape} expected {expected}"
            )
        return heads

    def decode(self, z, x_shape=None):
        """p(x|z) for z of shape (..., l); px.mean has shape (..., *x_shape)."""
        z = as_tensor(z)
        if x_shape is not None:
            x_shape = tuple(
                as_int(n, "VAE.decode", f"each size in x_shape {x_shape}", 1) for n in x_shape
            )
        x_shape = x_shape if x_shape is not None else self.x_shape
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
            logits = h.reshape(*lead, *x_shape)
            return Bernoulli(logits, event_ndim=event, validate=self.validate_data)
        h1, h2 = F.split(h, 2, axis=-1)
        return GaussianLikelihood(
            h1.reshape(*lead, *x_shape), h2.reshape(*lead, *x_shape), self.log_std_min, event
        )

    # --- the objective -------------------------------------------------------------
    def elbo(
        self, x, samples: int = 1, estimator: str = "analytic", eps=None, reduction: str = "mean"
    ) -> dict:
        """{"loss", "kl", "nll"}: scalar Tensors, loss = nll + kl = -ELBO.

        reduction="mean": means over the batch (the lecture's); "sum": sums over the batch
        (PyTorch's example, BCE(reduction="sum") + KLD). Both average over the L samples.

        estimator="analytic": SGVB estimator B (eq. (4)), kl = the closed-form KL (eq. (24)).
        estimator="mc":       SGVB estimator A (eq. (3)),
                              kl = 1/L sum_j [log q(z^(j)|x) - log p(z^(j))].
        eps: noise of shape (samples, N, l) (or (N, l) for one sample) to hold the draws fixed.
        """
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"VAE.elbo: unknown estimator {estimator!r}; expected one of {ESTIMATORS}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"VAE.elbo: unknown reduction {reduction!r}; expected one of {REDUCTIONS}"
            )
        check_count("VAE.elbo", "samples", samples)
        x = as_tensor(_refuse_integers(x, "VAE.elbo"))
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
        if reduction == "sum":  # the means over the batch times its size
            nll, kl = nll * x.shape[0], kl * x.shape[0]
        return {"loss": nll + kl, "kl": kl, "nll": nll}

    def log_marginal(
        self, x, samples: int = 1000, chunk: int = 100, batch_size: int | None = None
    ) -> Tensor:
        """Importance-sampled log p(x), one value per data point: a Tensor (N,).

        log p(x) = log E_q[p(x|z) p(z) / q(z|x)] ~ log (1/K) sum_k w_k,
        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x).
        By Jensen's inequality its expectation lies between the ELBO (K = 1) and
        log p(x), and it tightens as K grows (Burda et al. 2016). Computed under
        no_grad, `chunk` draws at a time and `batch_size` images at a time (all at
        once by default), so K = 5000 over a whole test set fits in memory.
        x: a Tensor or a host array (moved to the device as Tensor(x) does).
        """
        check_count("VAE.log_marginal", "samples", samples)
        check_count("VAE.log_marginal", "chunk", chunk)
        if batch_size is not None:
            check_count("VAE.log_marginal", "batch_size", batch_size)
        with no_grad():
            x = as_tensor(_refuse_integers(x, "VAE.log_marginal"))
            n = x.shape[0]
            rows = n if batch_size is None else batch_size
            parts = [
                self._log_marginal(x[i : min(i + rows, n)], samples, chunk)
                for i in range(0, n, rows)
            ]
            return parts[0] if len(parts) == 1 else F.concatenate(parts)

    def _log_marginal(self, x: Tensor, samples: int, chunk: int) -> Tensor:
        q = self.encode(x)
        per_chunk = []  # log sum_k w_k over each chunk, (N,) each
        for start in range(0, samples, chunk):
            z = q.sample((min(chunk, samples - start),))
            log_w = self.decode(z).log_prob(x) + self.prior.log_prob(z) - q.log_prob(z)
            per_chunk.append(F.logsumexp(log_w, axis=0))
        return F.logsumexp(F.stack(per_chunk), axis=0) - math.log(samples)

    def sample(self, n: int, x_shape=None) -> Tensor:
        """The decoded means of n draws from the prior, shape (n, *x_shape)."""
        check_count("VAE.sample", "n", n)
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


def _refuse_integers(x, who: str):
    """An integer array would become float 0..255 (Tensor() never rescales): refuse it."""
    name = str(getattr(x, "dtype", "")).split(".")[-1]
    if not isinstance(x, Tensor) and name.startswith(("uint", "int", "bool")):
        raise TypeError(
            f"{who}: x is an array of {name}; scale it to floats in [0, 1] first "
            "(e.g. x / 255 for uint8 pixels), or train with fit(), which does that"
        )
    return x
