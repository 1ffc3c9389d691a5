"""Probability distributions: the posterior q(z|x), the prior p(z), the likelihood p(x|z).

Each distribution holds Tensors as parameters, so everything it computes is
differentiable with respect to them:

* ``log_prob(x)``     log density, summed over the event axes (one number per draw);
* ``sample(shape)``   draws with no gradient;
* ``rsample(shape, eps=None)``  the reparameterisation trick of the lecture,
  z = g_phi(eps) = mu + L eps with eps ~ N(0, I): the randomness is in eps, so
  gradients flow from z back to mu and L (eqs. (16)-(19)). Pass ``eps`` to hold
  the noise fixed (then z is a deterministic function of the parameters, and
  gradcheck can test it); ``noise(shape)`` draws it. A leading ``sample_shape`` (L,)
  gives L draws per point;
* ``log_prob_of_draw(eps)``  log q(z) of the draw z = mu + L eps, by the change of
  variables: log N(eps; 0, I) - log |det L| (no triangular solve: L^-1 (z - mu) is eps);
* ``entropy()``, ``mean``, and ``kl_divergence(q, p)`` in closed form (eq. (24)).

Names keep one meaning: ``scale`` is a standard deviation sigma, ``log_std`` is
log sigma, ``log_var`` is log sigma^2 (so sigma = exp(0.5 * log_var)).

Shapes: a draw has shape ``dist.shape`` (batch axes, then ``event_ndim`` event
axes); ``log_prob`` sums over the event axes.
"""

from __future__ import annotations

from . import backend
from . import functional as F
from .functional import HALF_LOG_2PI
from .linalg import diagonal, fill_tril, lower_mask, tril_solve
from .tensor import Tensor, as_int, as_tensor, broadcast_shapes, is_int, lift, no_grad


class Distribution:
    """What every distribution shares: shapes, summing over event axes, sample()."""

    event_ndim = 1
    shape: tuple = ()
    _ref: Tensor  # a parameter: its backend and dtype are the distribution's

    def sample(self, sample_shape=()) -> Tensor:
        """Draws of shape sample_shape + self.shape, cut off from the graph."""
        with no_grad():
            return self.rsample(sample_shape).detach()

    def _set_shape(self, shape: tuple, event_ndim: int, what: str) -> None:
        """The distribution's shape, its last `event_ndim` axes the event (checked)."""
        event_ndim = as_int(event_ndim, type(self).__name__, "event_ndim", 0)
        if not 0 <= event_ndim <= len(shape):
            raise ValueError(
                f"{type(self).__name__}: event_ndim={event_ndim} but {what} have only "
                f"{len(shape)} axes {shape}"
            )
        self.shape, self.event_ndim = shape, event_ndim

    def _sample_shape(self, sample_shape) -> tuple:
        """sample(2) means sample((2,)), as in NumPy; sizes are integers >= 0."""
        shape = (sample_shape,) if not isinstance(sample_shape, (tuple, list)) else sample_shape
        who, what = f"{type(self).__name__}.sample", f"sample_shape {sample_shape!r}"
        return tuple(as_int(n, who, what, 0) for n in shape)

    def _sum_event(self, t: Tensor) -> Tensor:
        return t.sum(axis=tuple(range(-self.event_ndim, 0))) if self.event_ndim else t

    def _check_value(self, x, op: str) -> Tensor:
        """`x` as a Tensor whose trailing axes fit the distribution's shape (batch axes
        broadcast)."""
        x = lift(x, self._ref, f"{type(self).__name__}.{op}")
        event = self.shape[len(self.shape) - self.event_ndim :]
        if x.ndim < self.event_ndim or x.shape[x.ndim - self.event_ndim :] != event:
            raise ValueError(
                f"{type(self).__name__}.{op}: x of shape {x.shape} does not end with the event "
                "shape "
                f"{event} of a distribution of shape {self.shape}"
            )
        broadcast_shapes(x.shape, self.shape, f"{type(self).__name__}.{op}")
        return x

    def noise(self, sample_shape=(), eps=None) -> Tensor:
        """eps ~ N(0, I) of shape sample_shape + self.shape, or the given eps after a shape
        check: what rsample draws z from."""
        sample_shape = self._sample_shape(sample_shape)
        shape = sample_shape + self.shape
        if eps is None:
            return Tensor(backend.normal(shape, self._ref.dtype))
        eps = lift(eps, self._ref, f"{type(self).__name__}.rsample")
        if eps.shape[eps.ndim - len(self.shape) :] != self.shape or (
            sample_shape and eps.shape != shape
        ):
            expected = (
                shape
                if sample_shape
                else "(sample axes..., " + ", ".join(map(str, self.shape)) + ")"
            )
            raise ValueError(
                f"{type(self).__name__}.rsample: eps has shape {eps.shape}, expected {expected}"
            )
        return eps


def check_count(who: str, what: str, n) -> None:
    """Refuse anything but a positive int as a count (samples, chunk sizes, draws)."""
    if not is_int(n) or n < 1:  # (NumPy's integers too, never a bool)
        raise ValueError(f"{who}: {what} must be a positive integer, got {n!r}")


def _check_positive(who: str, what: str, t: Tensor) -> None:
    """Refuse non-positive values. This reads a value back to the host (a sync on a GPU), so it is
    done only on scales a user passes in, never on scales made by exp() inside training."""
    xp = backend.xp()
    if not bool(xp.all(t.data > 0)):
        raise ValueError(
            f"{who}: {what} must be positive, got minimum {float(xp.min(t.data)):.6g} in a {what} "
            f"of shape {t.shape}"
        )


# --- the diagonal Gaussian ------------------------------------------------------


class Normal(Distribution):
    """N(loc, diag(scale^2)): independent Gaussians, scale = sigma (a standard deviation).

    ``Normal.from_log_var(mu, log_var)`` is the lecture's posterior (the encoder
    predicts a log-variance); ``Normal.from_log_std(mu, log_std)`` takes log sigma.
    """

    def __init__(self, loc, scale, event_ndim: int = 1, validate: bool = True, log_std=None):
        """scale = sigma, checked positive unless validate=False; log_std: log(scale), when the
        caller has it already. Or scale=None and log_std: sigma = exp(log_std) is positive by
        construction. Whichever of the two is not given is made when first used (a
        likelihood that is only scored, by log_prob, never needs its sigma)."""
        loc = as_tensor(loc)
        if scale is None and log_std is None:
            raise ValueError("Normal: needs scale (sigma) or log_std, got neither")
        if scale is not None:
            scale = lift(scale, loc, "Normal")  # (refuses a scale of another dtype)
            if validate:
                _check_positive("Normal", "scale", scale)
        if log_std is not None:
            log_std = lift(log_std, loc, "Normal")
        given = scale if scale is not None else log_std
        self.loc, self._scale, self._log_std = loc, scale, log_std
        self._ref = loc
        self._set_shape(broadcast_shapes(loc.shape, given.shape, "Normal"), event_ndim, "loc/scale")

    @property
    def scale(self) -> Tensor:
        if self._scale is None:
            self._scale = F.exp(self._log_std)
        return self._scale

    @property
    def log_std(self) -> Tensor:
        if self._log_std is None:
            self._log_std = F.log(self._scale)
        return self._log_std

    @staticmethod
    def from_log_std(loc, log_std, event_ndim: int = 1) -> Normal:
        """sigma = exp(log_std): positive by construction, so nothing to check (no host sync)."""
        loc = as_tensor(loc)
        return Normal(loc, None, event_ndim, log_std=lift(log_std, loc, "Normal.from_log_std"))

    @staticmethod
    def from_log_var(loc, log_var, event_ndim: int = 1) -> Normal:
        """log_var = log sigma^2, so log sigma = 0.5 * log_var (the lecture's z_std = exp(0.5 *
        z_log_var))."""
        loc = as_tensor(loc)
        return Normal.from_log_std(loc, 0.5 * lift(log_var, loc, "Normal.from_log_var"), event_ndim)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.scale * self.scale

    def rsample(self, sample_shape=(), eps=None) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): the reparameterisation trick (diagonal L =
        diag(sigma))."""
        return self.loc + self.scale * self.noise(sample_shape, eps)

    def log_prob(self, x) -> Tensor:
        # per coordinate: -[0.5 ((x - mu) / sigma)^2 + log sigma + 0.5 log(2 pi)],
        # the negative of the lecture's nll line (its x_log_std is our log_std): one op
        x = self._check_value(x, "log_prob")
        return self._sum_event(F.normal_log_prob(x, self.loc, self.log_std))

    def log_prob_of_draw(self, eps) -> Tensor:
        """log_prob(z) of z = rsample(eps=eps): (z - mu) / sigma is eps, so per coordinate
        -[0.5 eps^2 + log sigma + 0.5 log(2 pi)] (log N(eps; 0, 1) - log sigma)."""
        eps = self.noise((), eps)
        return self._sum_event(-0.5 * F.square(eps) - self.log_std - HALF_LOG_2PI)

    def entropy(self) -> Tensor:
        # -E[log q] = sum_i (0.5 + 0.5 log(2 pi) + log sigma_i)  (+ 0 * loc only gives it loc's
        # batch axes too)
        return self._sum_event(self.log_std + (0.5 + HALF_LOG_2PI) + 0 * self.loc)


class StandardNormal(Normal):
    """The prior p(z) = N(0, I) over a latent space of `dim` dimensions."""

    def __init__(self, dim: int, dtype="float32"):
        dim = as_int(dim, "StandardNormal", "dim", 1)
        zeros = Tensor(backend.full((dim,), 0.0, backend.dtype(dtype)))
        super().__init__(zeros, zeros + 1.0, event_ndim=1, validate=False, log_std=zeros)


class GaussianLikelihood(Normal):
    """The lecture's decoder distribution p(x|z) (Kingma & Welling's Frey Face model):

    * mean = sigmoid(h1), so it lies in [0, 1] like the pixels;
    * a learned per-pixel log-std from h2, floored smoothly:
          log_std = log_std_min + softplus(h2 - log_std_min) = log(e^h2 + e^log_std_min)
      (one F.logaddexp), which is ~h2 when h2 is well above the floor and never below log_std_min.

    The default floor log_std_min = -5 (sigma >= 0.0067 ~ 1.7/255) removes only the
    degenerate sigma -> 0 direction of a Gaussian on 8-bit pixels; why, in
    docs/vae.md ("Why the likelihood's log-std has a floor"). ``log_std_min=None``
    gives the lecture's unconstrained log_std = h2.
    """

    def __init__(
        self, mean_logits, raw_log_std, log_std_min: float | None = -5.0, event_ndim: int = 1
    ):
        mean_logits = as_tensor(mean_logits)
        raw_log_std = lift(raw_log_std, mean_logits, "GaussianLikelihood")
        if log_std_min is None:
            log_std = raw_log_std
        else:
            log_std = F.logaddexp(raw_log_std, log_std_min)
        super().__init__(F.sigmoid(mean_logits), None, event_ndim, log_std=log_std)
        self.log_std_min = log_std_min


# --- the full-covariance Gaussian -------------------------------------------------


class MultivariateNormalTriL(Distribution):
    """N(loc, L L^T) with L = scale_tril lower triangular with a positive diagonal.

    loc (..., l), scale_tril (..., l, l). ``from_log_diag(mu, log_diag, lower)``
    builds L from the log of its diagonal and its strictly-lower entries, which is
    what a "full" encoder predicts (exp keeps the diagonal positive).
    """

    event_ndim = 1

    def __init__(self, loc, scale_tril, validate: bool = True, log_diag=None):
        loc = as_tensor(loc)
        L = lift(scale_tril, loc, "MultivariateNormalTriL")
        l = loc.shape[-1] if loc.ndim else 0
        if loc.ndim < 1 or L.ndim < 2 or L.shape[-2:] != (l, l):
            raise ValueError(
                "MultivariateNormalTriL: expected loc (..., l) and scale_tril (..., l, l), got "
                f"{loc.shape} and {L.shape}"
            )
        if validate:
            xp = backend.xp()
            _check_positive("MultivariateNormalTriL", "diagonal of scale_tril", diagonal(L))
            upper = xp.where(xp.logical_not(lower_mask(l)), L.data, xp.zeros_like(L.data))
            if bool(xp.any(upper != 0)):
                raise ValueError(
                    "MultivariateNormalTriL: scale_tril must be lower triangular; it has non-zero "
                    "entries above the diagonal"
                )
        self.loc, self.scale_tril = loc, L
        self._ref = loc
        self.log_diag = F.log(diagonal(L)) if log_diag is None else log_diag  # log L_ii
        self.shape = broadcast_shapes(loc.shape, L.shape[:-1], "MultivariateNormalTriL")

    @classmethod
    def from_log_diag(cls, loc, log_diag, strictly_lower) -> MultivariateNormalTriL:
        """L with diagonal exp(log_diag) and the strictly-lower entries row by row (see
        linalg.fill_tril)."""
        L = fill_tril(F.exp(log_diag), strictly_lower)
        return cls(loc, L, validate=False, log_diag=as_tensor(log_diag))

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def covariance(self) -> Tensor:
        """Sigma = L L^T."""
        L = self.scale_tril
        return L @ L.transpose(*range(L.ndim - 2), L.ndim - 1, L.ndim - 2)

    def rsample(self, sample_shape=(), eps=None) -> Tensor:
        """z = mu + L eps, eps ~ N(0, I) (the lecture's g_phi(eps, x) = mu_phi(x) + L_phi(x)
        eps)."""
        eps = self.noise(sample_shape, eps)
        return self.loc + (self.scale_tril @ eps.reshape(*eps.shape, 1)).reshape(*eps.shape)

    def log_prob(self, x) -> Tensor:
        # log N(x; mu, L L^T) = -0.5 ||y||^2 - sum_i log L_ii - (l/2) log(2 pi), where L y = x - mu:
        # the Mahalanobis term by forward substitution, log det Sigma = 2 sum_i log L_ii.
        x = self._check_value(x, "log_prob")
        y = tril_solve(self.scale_tril, x - self.loc)
        l = self.shape[-1]
        return -0.5 * F.square(y).sum(axis=-1) - self.log_diag.sum(axis=-1) - l * HALF_LOG_2PI

    def log_prob_of_draw(self, eps) -> Tensor:
        """log_prob(z) of z = rsample(eps=eps), by the change of variables z = mu + L eps:
        log N(eps; 0, I) - log |det L|, the Mahalanobis term with y = L^-1 (z - mu) = eps,
        so no solve. The same function of mu and L as log_prob(z), so the same gradients."""
        eps = self.noise((), eps)
        l = self.shape[-1]
        return -0.5 * F.square(eps).sum(axis=-1) - self.log_diag.sum(axis=-1) - l * HALF_LOG_2PI

    def entropy(self) -> Tensor:
        # 0.5 log det(2 pi e Sigma) = (l/2)(1 + log 2 pi) + sum_i log L_ii
        l = self.shape[-1]
        return self.log_diag.sum(axis=-1) + l * (0.5 + HALF_LOG_2PI) + 0 * self.loc.sum(axis=-1)


# --- Bernoulli ----------------------------------------------------------------------


class Bernoulli(Distribution):
    """Independent Bernoulli(p) with p = sigmoid(logits), the usual likelihood for
    MNIST-like images (the lecture notes it is "incorrect" for grey pixels, but
    common; log_prob accepts x anywhere in [0, 1]).

    validate=True: log_prob refuses x outside [0, 1] (0..255 pixels give impossible
    positive log-probabilities). The check reads one boolean back from the device per
    call (on a GPU a wait for the queued work); pass validate=False to skip it once the
    data are known to lie in [0, 1].
    """

    def __init__(self, logits, event_ndim: int = 1, validate: bool = True):
        self.validate = validate
        self.logits = self._ref = as_tensor(logits)
        self._set_shape(self.logits.shape, event_ndim, "logits")

    @property
    def mean(self) -> Tensor:
        return F.sigmoid(self.logits)

    def log_prob(self, x) -> Tensor:
        # x log p + (1 - x) log(1 - p) = x a - softplus(a) for logits a, computed without
        # forming p (see F.bernoulli_log_prob), so logits of +-1000 give 0 and -1000, not NaN
        x = self._check_value(x, "log_prob")
        if self.validate:
            check_unit_interval(x, "Bernoulli.log_prob")
        return self._sum_event(F.bernoulli_log_prob(self.logits, x))

    def sample(self, sample_shape=()) -> Tensor:
        """1 with probability p, else 0 (u < p for u uniform on [0, 1))."""
        xp = backend.xp()
        dtype = self.logits.dtype
        with no_grad():
            p = self.mean.data
        u = backend.uniform(self._sample_shape(sample_shape) + self.shape, dtype)
        return Tensor(xp.astype(u < p, dtype))

    def rsample(self, sample_shape=(), eps=None):
        raise NotImplementedError(
            "Bernoulli.rsample: a Bernoulli has no reparameterisation (its draws jump between 0 "
            "and 1, "
            "so z does not move smoothly with the logits); use sample() with the score-function "
            "estimator, minivae.estimators.score_function_grad"
        )

    def entropy(self) -> Tensor:
        # -[p log p + (1 - p) log(1 - p)]: minus the log-probability of x = p
        return self._sum_event(-F.bernoulli_log_prob(self.logits, self.mean))


def check_unit_interval(x: Tensor, who: str) -> None:
    """Refuse Bernoulli data outside [0, 1] (NaN too), naming `who` refused it: one read
    from the device."""
    xp = backend.xp()
    if not bool(xp.all((x.data >= 0) & (x.data <= 1))):
        low, high = float(xp.min(x.data)), float(xp.max(x.data))
        hint = (
            " (0..255 pixels? divide by 255, or feed uint8 arrays through fit()/to_device)"
            if high > 1
            else ""
        )
        raise ValueError(f"{who}: x must lie in [0, 1], got values from {low:g} to {high:g}{hint}")


# --- KL divergence in closed form ----------------------------------------------------


def kl_divergence(q, p) -> Tensor:
    """KL(q || p) = E_q[log q(z) - log p(z)] in closed form, one value per batch element.

    Pairs: (Normal, Normal) and (MultivariateNormalTriL, Normal); a StandardNormal
    is a Normal. Anything else: estimate E_q[log q - log p] by Monte Carlo
    (``VAE.elbo(estimator="mc")``).
    """
    if isinstance(q, Normal) and isinstance(p, Normal):
        if q.event_ndim != p.event_ndim:
            raise ValueError(
                f"kl_divergence: q has {q.event_ndim} event axes, p has {p.event_ndim}"
            )
        event = slice(len(q.shape) - q.event_ndim, None)
        if q.shape[event] != p.shape[len(p.shape) - p.event_ndim :]:
            raise ValueError(
                f"kl_divergence: q has event shape {q.shape[event]}, p has shape {p.shape}"
            )
        if isinstance(p, StandardNormal):
            # The lecture's eq. (24), D_KL = 1/2 [mu^T mu + sum_i sigma_i^2 - l - log prod_i
            # sigma_i^2] (its (sigma_q)_i are variances), one coordinate at a time in one op
            return q._sum_event(F.normal_kl_to_standard(q.loc, q.log_std))
        # per coordinate: log(s_p / s_q) + (s_q^2 + (mu_q - mu_p)^2) / (2 s_p^2) - 1/2
        ratio = F.square(q.scale / p.scale) + F.square((q.loc - p.loc) / p.scale)
        return q._sum_event(p.log_std - q.log_std + 0.5 * ratio - 0.5)
    if isinstance(q, MultivariateNormalTriL) and isinstance(p, Normal):
        if p.event_ndim != 1 or p.shape[-1] != q.shape[-1]:
            raise ValueError(
                f"kl_divergence: q is over {q.shape[-1]} dimensions, p has shape {p.shape} "
                f"(event_ndim {p.event_ndim})"
            )
        # 1/2 [tr(S_p^-1 S_q) + (mu_p - mu_q)^T S_p^-1 (mu_p - mu_q) - l + log det S_p - log det
        # S_q],
        # S_q = L L^T, S_p = diag(s^2): tr(S_p^-1 L L^T) = sum_ij L_ij^2 / s_i^2, log det S_q = 2
        # sum log L_ii.
        # With p = N(0, I) this is the full-covariance eq. (24): 1/2 [mu^T mu + tr S_q - l - log
        # det S_q].
        l = q.shape[-1]
        s = p.scale.reshape(*p.scale.shape, 1)  # s_i beside row i of L
        trace = F.square(q.scale_tril / s).sum(axis=(-2, -1))
        mahalanobis = F.square((p.loc - q.loc) / p.scale).sum(axis=-1)
        log_det_ratio = 2 * (p.log_std.sum(axis=-1) - q.log_diag.sum(axis=-1))
        return 0.5 * (trace + mahalanobis - l + log_det_ratio)
    raise NotImplementedError(
        f"kl_divergence: no closed form for ({type(q).__name__}, {type(p).__name__}); estimate "
        "E_q[log q(z) - log p(z)] by Monte Carlo instead (VAE.elbo(estimator='mc'))"
    )
