"""The variational autoencoder: the ELBO, its two SGVB estimators, and log p(x).

Generative model p(z) p(x|z): prior p(z) = N(0, I), likelihood p(x|z) from the
decoder. Inference model q(z|x) from the encoder. The ELBO (lecture eq. (2)):

    L(theta, phi; x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

It is estimated with z^(j) = g_phi(eps^(j), x) = mu + L eps^(j), the
reparameterisation that lets gradients reach the encoder (eqs. (16)-(19)):

* estimator A (eq. (3)):  1/L sum_j [log p(x, z^(j)) - log q(z^(j)|x)]
* estimator B (eq. (4)):  1/L sum_j log p(x|z^(j)) - KL(q || p), KL in closed form (eq. (24))

Beyond the lecture (docs/beyond.md): the IWAE bound of Burda et al. (2016), a KL weight
beta (Higgins et al. 2017) that a warm-up raises from 0 to 1 (Bowman et al. 2016), and
the per-dimension KL and active units that show posterior collapse.

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
    check_unit_interval,
    kl_divergence,
)
from .nn.module import Module
from .tensor import Tensor, as_int, as_tensor, lift, no_grad

LIKELIHOODS = ("gaussian", "bernoulli")
POSTERIORS = ("diag", "full")
ESTIMATORS = ("analytic", "mc", "iwae")
# log_marginal's most numbers per chunk (draws x N x D): the dozen passes over each chunk's
# arrays (from the decoder's bias to the sum over pixels) then sweep 8 MB of float32, not 31 MB:
# on a CPU ~10% faster for the MNIST recipe's 100 images (26 draws at a time, not 100)
BLOCK = 1 << 21
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
        elbo and log_marginal check where x comes in (one device read per call, not one per
        log_prob; validate_data=False skips it).
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
        self.beta = 1.0  # the KL weight elbo() trains with by default (fit's kl_weight sets it)

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
        """p(x|z) for z of shape (..., l); px.mean has shape (..., *x_shape).

        A Bernoulli p(x|z) does not check its data: elbo and log_marginal check x once as it
        comes in; a direct decode(z).log_prob(x) takes x as given (x must lie in [0, 1])."""
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
            # (x was checked where it came in: elbo, log_marginal)
            return Bernoulli(logits, event_ndim=event, validate=False)
        # (M, 2D) is [mean logits, raw log-std] per row: as (..., 2, *x_shape), two slices
        h1, h2 = F.unstack(h.reshape(*lead, 2, *x_shape), axis=len(lead))
        return GaussianLikelihood(h1, h2, self.log_std_min, event)

    # --- the objective -------------------------------------------------------------
    def elbo(
        self,
        x,
        samples: int = 1,
        estimator: str = "analytic",
        eps=None,
        reduction: str = "mean",
        beta=None,
    ) -> dict:
        """{"loss", "kl", "nll"}: scalar Tensors, loss = nll + beta * kl (-ELBO for beta = 1).

        reduction="mean": means over the batch (the lecture's); "sum": sums over the batch
        (PyTorch's example, BCE(reduction="sum") + KLD). Both average over the L samples.

        estimator="analytic": SGVB estimator B (eq. (4)), kl = the closed-form KL (eq. (24)).
        estimator="mc":       SGVB estimator A (eq. (3)),
                              kl = 1/L sum_j [log q(z^(j)|x) - log p(z^(j))].
        estimator="iwae":     the IWAE bound with k = `samples` (see iwae_bound); kl and nll
                              are estimator A's on the same draws, and loss = -L_k with the
                              log prior ratio weighted by beta.
        nll + kl is always the true -ELBO (beta = 1), whatever beta trains.
        beta: the KL weight; None takes self.beta (1 unless set, e.g. by fit's kl_weight).
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
        beta = check_beta("VAE.elbo", self.beta if beta is None else beta)
        x = self._checked_data(x, "VAE.elbo")
        q = self.encode(x)
        eps = q.noise((samples,), _fixed_noise("VAE.elbo", eps, x, samples, q.shape))
        z = q.rsample(eps=eps)  # (L, N, l): z = mu + L eps
        log_px_z = self.decode(z).log_prob(x)  # (L, N): log p(x|z), summed over pixels
        nll = -log_px_z.mean()
        if estimator == "analytic":
            kl = kl_divergence(q, self.prior).mean()
            loss = nll + beta * kl
        else:
            # (L, N): log q(z|x) - log p(z), log q(z|x) from the noise that drew z
            log_ratio = q.log_prob_of_draw(eps) - self.prior.log_prob(z)
            kl = log_ratio.mean()
            if estimator == "mc":
                loss = nll + beta * kl
            else:
                loss = -iwae_bound(log_px_z - beta * log_ratio).mean()
        if reduction == "sum":  # the means over the batch times its size
            nll, kl, loss = nll * x.shape[0], kl * x.shape[0], loss * x.shape[0]
        return {"loss": loss, "kl": kl, "nll": nll}

    def _checked_data(self, x, who: str) -> Tensor:
        """x as a Tensor, refused if it is an integer array or, for a Bernoulli likelihood,
        if it leaves [0, 1]: checked once here, not again by every log_prob."""
        x = as_tensor(_refuse_integers(x, who))
        if self.likelihood == "bernoulli" and self.validate_data:
            check_unit_interval(x, f"{who} (Bernoulli likelihood)")
        return x

    def log_marginal(
        self, x, samples: int = 1000, chunk: int = 100, batch_size: int | None = None, eps=None
    ) -> Tensor:
        """Importance-sampled log p(x), one value per data point: a Tensor (N,).

        log p(x) = log E_q[p(x|z) p(z) / q(z|x)] ~ log (1/K) sum_k w_k,
        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x).
        By Jensen's inequality its expectation lies between the ELBO (K = 1) and
        log p(x), and it tightens as K grows (Burda et al. 2016). Computed under
        no_grad, at most `chunk` draws at a time (fewer where a chunk's (draws, N, D)
        log-probabilities would pass BLOCK numbers) and `batch_size` images at a time (all
        at once by default), so K = 5000 over a whole test set fits in memory.
        x: a Tensor or a host array (moved to the device as Tensor(x) does).
        eps: noise of shape (samples, N, l) to use these draws (e.g. the IWAE bound's)
        instead of fresh ones.
        """
        check_count("VAE.log_marginal", "samples", samples)
        check_count("VAE.log_marginal", "chunk", chunk)
        if batch_size is not None:
            check_count("VAE.log_marginal", "batch_size", batch_size)
        with no_grad():
            x = self._checked_data(x, "VAE.log_marginal")
            n = x.shape[0]
            if eps is not None:
                eps = _fixed_noise("VAE.log_marginal", eps, x, samples, self.encode(x).shape)
            rows = n if batch_size is None else batch_size
            parts = [
                self._log_marginal(
                    x[i : min(i + rows, n)],
                    samples,
                    chunk,
                    None if eps is None else eps[:, i : min(i + rows, n)],
                )
                for i in range(0, n, rows)
            ]
            return parts[0] if len(parts) == 1 else F.concatenate(parts)

    def _log_marginal(self, x: Tensor, samples: int, chunk: int, eps) -> Tensor:
        q = self.encode(x)
        chunk = max(1, min(chunk, BLOCK // x.size))  # x.size: the numbers of one draw
        per_chunk = []  # log sum_k w_k over each chunk, (N,) each
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            z = q.sample((n,)) if eps is None else q.rsample((n,), eps=eps[start : start + n])
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


def kl_warmup(epochs: int, beta: float = 1.0):
    """The KL weight of epoch e (from 0): beta * min(1, e / epochs), rising linearly from 0.

    Bowman et al. (2016) and Sonderby et al. (2016): with the KL switched off at first, the
    decoder learns to use z before the KL can pull q(z|x) onto the prior. For fit's kl_weight.
    """
    check_count("kl_warmup", "epochs", epochs)
    beta = check_beta("kl_warmup", beta)
    return lambda epoch: beta * min(1.0, epoch / epochs)


def collapse_diagnostics(vae, x_batches, threshold: float = 0.01) -> dict:
    """Per-dimension KL and active units of a VAE with a diagonal posterior, over the data.

    x_batches: an iterable of device batches, each a Tensor x or a tuple of encode()'s arguments
    (a ConditionalVAE's (x, y): encode_given). Returns host floats:
    "kl_per_dim": the mean over the data of KL(q(z_u|x) || N(0, 1)) for each unit u (nats);
    "mean_variance": Cov_x(E_q(z|x)[z_u]), the variance over the data of each posterior mean;
    "active_units": how many units have mean_variance > threshold (Burda et al. 2016:
    a unit whose posterior mean does not move with x carries no information about x).
    """
    xp = backend.xp()
    n, kl_sum, mu_sum, mu_sq = 0, 0, 0, 0
    with no_grad():
        for x in x_batches:
            args = x if isinstance(x, tuple) else (x,)
            q = vae.encode_given(*args) if len(args) == 2 else vae.encode(*args)
            if not isinstance(q, Normal):
                raise ValueError(
                    "collapse_diagnostics: needs a diagonal ('diag') posterior, "
                    f"got {type(q).__name__}"
                )
            mu, var = q.loc.data, q.scale.data**2
            mu64 = xp.astype(mu, xp.float64)
            kl = 0.5 * (mu**2 + var - 1 - xp.log(var))  # eq. (24), one unit at a time
            kl_sum = kl_sum + xp.sum(xp.astype(kl, xp.float64), axis=0)
            mu_sum, mu_sq = mu_sum + xp.sum(mu64, axis=0), mu_sq + xp.sum(mu64**2, axis=0)
            n += mu.shape[0]
    if n < 2:
        raise ValueError(f"collapse_diagnostics: needs at least 2 data points, got {n}")
    mean = mu_sum / n
    variance = (mu_sq - n * mean**2) / (n - 1)  # float64 sums: the cancellation costs ~1e-12
    kl, variance = backend.to_numpy(kl_sum / n), backend.to_numpy(variance)
    return {
        "kl_per_dim": [float(v) for v in kl],
        "mean_variance": [float(v) for v in variance],
        "active_units": int((variance > threshold).sum()),
    }


def iwae_bound(log_w):
    """L_k = log (1/k) sum_i w_i for log-weights log_w of shape (k, N): one value per data point.

    log w_i = log p(x, z_i) - log q(z_i|x), z_i reparameterised (Burda et al. 2016).
    Written as a logsumexp, its gradient is the one the paper derives, sum_i w~_i grad log w_i
    with the normalised weights w~_i = w_i / sum_j w_j: they come out of logsumexp's backward
    (a softmax), so no weight is detached by hand. k = 1 gives the ELBO estimate log w_1.
    """
    return F.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def _fixed_noise(who, eps, x, samples, shape):
    """eps as (samples, *shape) on x's backend, or None to draw fresh noise."""
    if eps is None:
        return None
    eps = lift(eps, x, who)
    if eps.shape == shape and samples == 1:
        eps = eps.reshape(1, *eps.shape)
    if eps.shape != (samples, *shape):
        raise ValueError(
            f"{who}: eps has shape {eps.shape}, expected (samples, N, l) = {(samples, *shape)}"
        )
    return eps


def check_beta(who, beta):
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < math.inf:
        raise ValueError(f"{who}: beta (the KL weight) must be a finite number >= 0, got {beta!r}")
    return float(beta)


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
