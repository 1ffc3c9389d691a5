"""Two ways to differentiate an expectation, side by side: grad_phi E_{q_phi(z)}[f(z)].

Score function (REINFORCE), lecture eqs. (12)-(13):

    grad_phi E_q[f(z)] = E_q[f(z) grad_phi log q_phi(z)]
                       ~ 1/L sum_j (f(z_j) - b) grad_phi log q_phi(z_j),   z_j ~ q_phi

  needs only log q and plain draws (it works for a Bernoulli too), never the
  derivative of f; its variance is typically high. A baseline b that does not
  depend on z_j leaves it unbiased, because E_q[grad log q] = 0, and can cut
  the variance.

Pathwise (reparameterisation), lecture eqs. (16)-(19):

    grad_phi E_q[f(z)] = E_eps[grad_phi f(g_phi(eps))]
                       ~ 1/L sum_j grad_phi f(mu + L eps_j),   eps_j ~ N(0, I)

  needs a differentiable f and a reparameterisable q; its variance is typically
  much lower (the lecture's reason to use it in the VAE).

Both functions take the same arguments and return one gradient estimate (a
backend array) per parameter:

    f        z (L, *batch, l) -> per-sample values (L, *batch); the objective is
             E_q[f(z)] summed over the batch axes. f may depend on the parameters
             only through z (for the VAE: f = log p(x|z), the KL handled in closed form).
    q_fn     () -> the distribution, built from `params` (called once per estimate,
             because backward() frees the graph it builds).
    params   the leaf Tensors to differentiate with respect to.
    samples  L, the draws per estimate.

Their .grad is left as it was. pathwise_grad's backward() also reaches other
leaves that f uses (e.g. decoder weights), as any backward() does;
score_function_grad evaluates f without a graph (it needs only f's values).
"""

from __future__ import annotations

from . import backend
from .tensor import Tensor, no_grad


def pathwise_grad(f, q_fn, params, samples: int = 1):
    """1/L sum_j grad_phi f(g_phi(eps_j)): backprop through z = mu + L eps (eqs. (16)-(19))."""
    _check_samples("pathwise_grad", samples)
    q = q_fn()
    z = q.rsample((samples,))  # z = mu + L eps: a differentiable function of the parameters
    values = _values("pathwise_grad", f(z), z, q)
    return _gradients(values.sum() / samples, params)


def score_function_grad(f, q_fn, params, samples: int = 1, baseline=None):
    """1/L sum_j (f(z_j) - b_j) grad_phi log q_phi(z_j) (eqs. (12)-(13)).

    baseline: None (b = 0), a number, or "mean": b_j = the mean of f over the other
    L - 1 draws (leave-one-out, so b_j does not depend on z_j and the estimate stays
    unbiased; the plain mean would include f(z_j) itself). "mean" needs L >= 2.
    """
    _check_samples("score_function_grad", samples)
    q = q_fn()
    # plain numbers: no path from phi to z, only log q carries the gradient
    z = q.sample((samples,))
    with no_grad():
        values = _values("score_function_grad", f(z), z, q)
    if baseline == "mean":
        if samples < 2:
            raise ValueError(
                "score_function_grad: baseline='mean' (leave-one-out) needs samples >= 2"
            )
        others = values.sum(axis=0, keepdims=True) - values
        values = values - others / (samples - 1)
    elif baseline is not None:
        if not isinstance(baseline, (int, float)):
            raise TypeError(
                f"score_function_grad: baseline must be None, a number or 'mean', got {baseline!r}"
            )
        values = values - baseline
    # its gradient is the estimate
    surrogate = (Tensor(values.data) * q.log_prob(z)).sum() / samples
    return _gradients(surrogate, params)


def _values(who: str, values, z, q) -> Tensor:
    """f's output, checked to be one value per draw: the shape of z without its event axes."""
    expected = z.shape[: z.ndim - q.event_ndim]
    if not isinstance(values, Tensor) or values.shape != expected:
        got = values.shape if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"{who}: f(z) must return a Tensor of one value per draw, shape {expected} for z of "
            f"shape {z.shape}; got {got}"
        )
    return values


def _check_samples(who: str, samples) -> None:
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"{who}: samples must be a positive integer, got {samples!r}")


def _gradients(objective: Tensor, params) -> list:
    """d objective / d p for each p, leaving each p.grad as it was."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    objective.backward()
    grads = [p.grad if p.grad is not None else backend.xp().zeros_like(p.data) for p in params]
    for p, g in zip(params, saved):
        p.grad = g
    return grads
