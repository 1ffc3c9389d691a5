"""Elementwise functions, reductions and joins, each backward beside its forward.

Every function takes Tensors (or numbers) and returns a Tensor. The pattern is
the one of ``tensor.py``: compute ``out``, write ``backward(g)`` as the chain
rule (g times the local derivative), record both with ``record``.

Where the textbook formula overflows, the stable form is used and the comment
says why (sigmoid, softplus, log_sigmoid, bernoulli_log_prob, logsumexp).
"""

from __future__ import annotations

import math
import numbers

from . import backend
from .tensor import (
    Tensor,
    as_int,
    as_tensor,
    broadcast_shapes,
    is_int,
    lift,
    normalize_axes,
    record,
    record_outputs,
    unbroadcast,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _xp():
    return backend.xp()


def exp(x):
    return as_tensor(x).exp()


def log(x):
    return as_tensor(x).log()


def log1p(x):
    x = as_tensor(x)

    def backward(g):  # d log(1+x)/dx = 1/(1+x)
        return (g / (1 + x.data),)

    return record(_xp().log1p(x.data), (x,), backward, "log1p")


def sqrt(x):
    x = as_tensor(x)
    out = _xp().sqrt(x.data)

    def backward(g):  # d sqrt(x)/dx = 1/(2 sqrt(x))
        return (g / (2 * out),)

    return record(out, (x,), backward, "sqrt")


def square(x):
    x = as_tensor(x)

    def backward(g):  # d(x^2)/dx = 2x
        return (2 * g * x.data,)

    return record(x.data * x.data, (x,), backward, "square")


def abs(x):  # noqa: A001 - the name learners expect
    x = as_tensor(x)
    xp = _xp()

    def backward(g):  # d|x|/dx = sign(x), taken as 0 at 0
        return (g * xp.sign(x.data),)

    return record(xp.abs(x.data), (x,), backward, "abs")


def tanh(x):
    x = as_tensor(x)
    out = _xp().tanh(x.data)

    def backward(g):  # d tanh(x)/dx = 1 - tanh(x)^2
        return (g * (1 - out * out),)

    return record(out, (x,), backward, "tanh")


def relu(x):
    x = as_tensor(x)
    xp = _xp()

    def backward(g):  # d relu(x)/dx = 1 for x > 0, else 0 (taken as 0 at exactly 0)
        # the slope as a 0/1 mask in x's dtype: a multiply is cheaper than a where over big
        # activations; made here, not in the forward, so a pass without gradients never pays
        return (g * xp.astype(x.data > 0, x.dtype),)

    return record(xp.maximum(x.data, 0.0), (x,), backward, "relu")


def _sigmoid_array(a):
    # 1 / (1 + e^-a), the definition: for very negative a, e^-a overflows to inf and the
    # quotient is 0, less than the dtype's smallest normal number away from sigmoid(a);
    # NumPy's warning about it is silenced. (Stabler-looking forms cost more:
    # e^min(a, 0) / (1 + e^-|a|) takes 7 passes to this one's 4, and a where() picking one
    # of two forms costs more than this whole line on a CPU, as a mask of random signs
    # defeats branch prediction.)
    with backend.overflow_is_expected():
        return 1 / (1 + _xp().exp(-a))


def sigmoid(x):
    x = as_tensor(x)
    out = _sigmoid_array(x.data)

    def backward(g):  # d sigmoid(x)/dx = sigmoid(x) (1 - sigmoid(x))
        return (g * out * (1 - out),)

    return record(out, (x,), backward, "sigmoid")


def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no log(1) for very
    negative x."""
    x = as_tensor(x)
    xp = _xp()
    out = xp.maximum(x.data, 0.0) + xp.log1p(xp.exp(-xp.abs(x.data)))

    def backward(g):  # d softplus(x)/dx = sigmoid(x)
        return (g * _sigmoid_array(x.data),)

    return record(out, (x,), backward, "softplus")


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(e^-|x|), stable for large |x|."""
    x = as_tensor(x)
    xp = _xp()
    out = xp.minimum(x.data, 0.0) - xp.log1p(xp.exp(-xp.abs(x.data)))

    def backward(g):  # d log_sigmoid(x)/dx = sigmoid(-x)
        return (g * _sigmoid_array(-x.data),)

    return record(out, (x,), backward, "log_sigmoid")


def logaddexp(a, b):
    """log(e^a + e^b): a smooth maximum of a and b (about the larger where they are far apart),
    computed without overflow. With a number for b, logaddexp(h, m) is h floored smoothly at
    m: m + softplus(h - m)."""
    a = as_tensor(a)
    b = lift(b, a, "logaddexp")
    broadcast_shapes(a.shape, b.shape, "logaddexp")
    xp = _xp()
    # the larger exponential factored out: max(a, b) + log(1 + e^-|a - b|), and e^-|.| <= 1
    # (written out, as xp.logaddexp is on NumPy in float32 2.6x slower than these passes)
    out = xp.maximum(a.data, b.data) + xp.log1p(xp.exp(-xp.abs(a.data - b.data)))

    def backward(g):  # d/da = e^a / (e^a + e^b) = e^(a - out), the share of a's term; likewise b.
        # a - out <= 0, so exp never overflows
        ga = unbroadcast(g * xp.exp(a.data - out), a.shape) if a.requires_grad else None
        gb = unbroadcast(g * xp.exp(b.data - out), b.shape) if b.requires_grad else None
        return ga, gb

    return record(out, (a, b), backward, "logaddexp")


def bernoulli_log_prob(logits, x):
    """x log p + (1 - x) log(1 - p) with p = sigmoid(logits), elementwise (x broadcast to the
    logits' shape): the Bernoulli log-likelihood, PyTorch's -binary_cross_entropy_with_logits.

    With log p = a - softplus(a) and log(1 - p) = -softplus(a) it is x a - softplus(a): one
    softplus instead of two log_sigmoids, and p is never formed, so logits of +-1000 give
    0 and -1000, not log(0) = -inf or NaN.
    """
    a = as_tensor(logits)
    x = lift(x, a, "bernoulli_log_prob")
    broadcast_shapes(a.shape, x.shape, "bernoulli_log_prob")
    xp = _xp()
    out = x.data * a.data
    out -= xp.maximum(a.data, 0.0)  # (in place on the fresh product: one full-size copy fewer
    out -= xp.log1p(xp.exp(-xp.abs(a.data)))  # each; large: (draws, N, pixels) in log_marginal)

    def backward(g):  # d/da = x - sigmoid(a) (softplus' = sigmoid), d/dx = a
        ga = (
            unbroadcast(g * (x.data - _sigmoid_array(a.data)), a.shape) if a.requires_grad else None
        )
        gx = unbroadcast(g * a.data, x.shape) if x.requires_grad else None
        return ga, gx

    return record(out, (a, x), backward, "bernoulli_log_prob")


def normal_log_prob(x, loc, log_std):
    """log N(x; loc, sigma^2) with sigma = e^log_std, elementwise (the three broadcast):

        -0.5 r^2 - log_std - 0.5 log(2 pi),  r = (x - loc) / sigma

    one op instead of the eight it is made of, with the textbook derivatives beside it.
    """
    x = as_tensor(x)
    loc = lift(loc, x, "normal_log_prob")
    log_std = lift(log_std, x, "normal_log_prob")
    broadcast_shapes(
        broadcast_shapes(x.shape, loc.shape, "normal_log_prob"), log_std.shape, "normal_log_prob"
    )
    xp = _xp()
    scale = xp.exp(log_std.data)
    r = (x.data - loc.data) / scale
    r2 = r * r
    out = -0.5 * r2 - (log_std.data + HALF_LOG_2PI)

    def backward(g):  # d/dloc = r / sigma = -d/dx; d/dlog_std = r^2 - 1 (dr/dlog_std = -r)
        gx = gloc = glog_std = None
        if loc.requires_grad or x.requires_grad:
            g_loc = g * r / scale
            gloc = unbroadcast(g_loc, loc.shape) if loc.requires_grad else None
            gx = unbroadcast(-g_loc, x.shape) if x.requires_grad else None
        if log_std.requires_grad:
            glog_std = unbroadcast(g * (r2 - 1), log_std.shape)
        return gx, gloc, glog_std

    return record(out, (x, loc, log_std), backward, "normal_log_prob")


def normal_kl_to_standard(loc, log_std):
    """KL(N(loc, sigma^2) || N(0, 1)) with sigma = e^log_std, elementwise: the lecture's
    eq. (24) one coordinate at a time, with log sigma^2 = 2 log_std:

        0.5 (loc^2 + sigma^2 - 1) - log_std
    """
    loc = as_tensor(loc)
    log_std = lift(log_std, loc, "normal_kl_to_standard")
    broadcast_shapes(loc.shape, log_std.shape, "normal_kl_to_standard")
    xp = _xp()
    variance = xp.exp(2 * log_std.data)
    out = 0.5 * (loc.data * loc.data + variance) - (log_std.data + 0.5)

    def backward(g):  # d/dloc = loc; d/dlog_std = sigma^2 - 1 (d sigma^2/dlog_std = 2 sigma^2)
        gloc = unbroadcast(g * loc.data, loc.shape) if loc.requires_grad else None
        glog_std = unbroadcast(g * (variance - 1), log_std.shape) if log_std.requires_grad else None
        return gloc, glog_std

    return record(out, (loc, log_std), backward, "normal_kl_to_standard")


def logsumexp(x, axis=-1, keepdims=False):
    """log(sum(exp(x))) over `axis` (an int, a tuple or None for all), shifted by the
    maximum so exp never overflows."""
    x = as_tensor(x)
    xp = _xp()
    axes = normalize_axes(axis, x.ndim, "logsumexp")
    if any(x.shape[a] == 0 for a in axes):  # an empty sum is 0 and log 0 = -inf (as in torch)
        kept_shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        m = backend.full(kept_shape, -float("inf"), x.dtype)
    else:
        m = xp.max(x.data, axis=axes, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))  # an all -inf row stays -inf, not NaN
    shifted = xp.exp(x.data - m)
    total = xp.sum(shifted, axis=axes, keepdims=True)
    kept = xp.log(total) + m

    def backward(g):  # d/dx_i = softmax(x)_i, as shifted / total: exp(x_i - logsumexp) would
        # lose digits when logsumexp is large
        return (xp.reshape(g, kept.shape) * (shifted / total),)

    out = (
        kept
        if keepdims
        else xp.reshape(kept, tuple(n for i, n in enumerate(x.shape) if i not in axes))
    )
    return record(out, (x,), backward, "logsumexp")


def maximum(a, b):
    """Elementwise maximum; at a tie the gradient goes to `a`, and a NaN in either wins.

    It is a `where` (below), so its backward is where's: g to the winner, 0 to the other.
    """
    a = as_tensor(a)
    b = lift(b, a, "maximum")
    broadcast_shapes(a.shape, b.shape, "maximum")
    a_wins = (a.data >= b.data) | _xp().isnan(a.data)  # b NaN: a >= b is False, so b (NaN) wins
    return where(a_wins, a, b)


def clip(x, low=None, high=None):
    """Clamp to [low, high]; the gradient passes only where x was inside (boundaries included)."""
    x = as_tensor(x)
    _check_bounds(low, high)
    xp = _xp()
    inside = xp.ones_like(x.data, dtype=xp.bool)
    if low is not None:
        inside = inside & (x.data >= low)
    if high is not None:
        inside = inside & (x.data <= high)
    out = xp.clip(x.data, low, high)

    def backward(g):  # slope 1 inside, 0 where clamped
        return (xp.where(inside, g, xp.zeros_like(g)),)

    return record(out, (x,), backward, "clip")


def _check_bounds(low, high):
    """clip's bounds: numbers, not NaN, low <= high (NumPy would return `high` everywhere)."""
    for name, v in (("low", low), ("high", high)):
        if v is not None and (not isinstance(v, numbers.Real) or v != v):
            raise ValueError(f"clip: {name} must be a number or None, got {v!r}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"clip: low {low} is above high {high}")


def where(condition, a, b):
    """`a` where `condition` holds, else `b`; `condition` is a boolean array (no gradient)."""
    a = as_tensor(a)
    b = lift(b, a, "where")
    condition = condition.data if isinstance(condition, Tensor) else condition
    dtype = getattr(condition, "dtype", None)
    if str(dtype).split(".")[-1] != "bool":  # NumPy would take any truthy value
        raise TypeError(
            f"where: condition must be a boolean array (e.g. x > 0), got "
            f"{type(condition).__name__} of dtype {dtype}"
        )
    broadcast_shapes(broadcast_shapes(a.shape, b.shape, "where"), tuple(condition.shape), "where")
    xp = _xp()

    def backward(g):  # g to the element picked, 0 to the other
        zero = xp.zeros_like(g)
        ga = unbroadcast(xp.where(condition, g, zero), a.shape) if a.requires_grad else None
        gb = unbroadcast(xp.where(condition, zero, g), b.shape) if b.requires_grad else None
        return ga, gb

    return record(xp.where(condition, a.data, b.data), (a, b), backward, "where")


# --- joining and splitting ---------------------------------------------------


def _same_backend(tensors, op):
    """The inputs as Tensors, refusing a mix of backends (checked against the first)."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors, got {tensors!r}")
    first = as_tensor(tensors[0])
    return [first] + [lift(t, first, op) for t in tensors[1:]]


def _axis(axis, ndim: int, op: str) -> int:
    """One axis in range(ndim) (negatives count from the end), or an error naming the op."""
    return normalize_axes(as_int(axis, op, "axis"), ndim, op)[0]


def concatenate(tensors, axis=0):
    """Join along an existing axis; backward hands each input its slice of g."""
    tensors = _same_backend(tensors, "concatenate")
    xp = _xp()
    axis = _axis(axis, tensors[0].ndim, "concatenate")
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
            n != m for i, (n, m) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis
        ):
            raise ValueError(
                f"concatenate: shapes {[t.shape for t in tensors]} differ outside axis {axis}"
            )
    bounds = [0]
    for t in tensors:
        bounds.append(bounds[-1] + t.shape[axis])

    def backward(g):
        lead = (slice(None),) * axis
        return tuple(g[lead + (slice(lo, hi), ...)] for lo, hi in zip(bounds[:-1], bounds[1:]))

    return record(
        xp.concat([t.data for t in tensors], axis=axis), tuple(tensors), backward, "concatenate"
    )


def stack(tensors, axis=0):
    """Join along a new axis; backward hands input i the i-th slice of g."""
    tensors = _same_backend(tensors, "stack")
    if len({t.shape for t in tensors}) != 1:
        raise ValueError(f"stack: all shapes must be equal, got {[t.shape for t in tensors]}")
    xp = _xp()
    axis = _axis(axis, tensors[0].ndim + 1, "stack")

    def backward(g):
        lead = (slice(None),) * axis
        return tuple(g[lead + (i, ...)] for i in range(len(tensors)))

    return record(xp.stack([t.data for t in tensors], axis=axis), tuple(tensors), backward, "stack")


def split(x, sections, axis=-1):
    """Split into `sections` equal parts (an int) or at the given sizes (a list).

    One op with several outputs (record_outputs): its backward puts the parts' gradients
    side by side again, one concat, zeros for a part the loss does not use.
    """
    x = as_tensor(x)
    xp = _xp()
    axis = _axis(axis, x.ndim, "split")
    n = x.shape[axis]
    if not isinstance(sections, (list, tuple)):
        sections = as_int(sections, "split", "sections (a number of parts or a list of sizes)", 1)
        if n % sections:
            raise ValueError(
                f"split: axis {axis} of shape {x.shape} does not split into {sections} equal parts"
            )
        sizes = [n // sections] * sections
    else:
        sizes = [as_int(size, "split", f"each size in {list(sections)}", 0) for size in sections]
        if sum(sizes) != n:
            raise ValueError(
                f"split: sizes {sizes} do not add up to {n}, axis {axis} of shape {x.shape}"
            )
    lead, start, parts = (slice(None),) * axis, 0, []
    for size in sizes:
        parts.append(x.data[lead + (slice(start, start + size), ...)])
        start += size

    def backward(gs):
        return (xp.concat([_or_zeros(g, part) for g, part in zip(gs, parts)], axis=axis),)

    return record_outputs(parts, (x,), backward, "split")


def unstack(x, axis=0):
    """The slices along `axis`, that axis removed (the inverse of stack): one op with several
    outputs, whose backward stacks their gradients again."""
    x = as_tensor(x)
    xp = _xp()
    axis = _axis(axis, x.ndim, "unstack")
    lead = (slice(None),) * axis
    parts = [x.data[lead + (i, ...)] for i in range(x.shape[axis])]

    def backward(gs):
        return (xp.stack([_or_zeros(g, part) for g, part in zip(gs, parts)], axis=axis),)

    return record_outputs(parts, (x,), backward, "unstack")


def _or_zeros(g, part):
    """An output's gradient, or zeros shaped like it where the loss does not depend on it."""
    return g if g is not None else _xp().zeros_like(part)


def pad(x, pad_width, value=0.0):
    """Pad with a constant: `pad_width` is one (before, after) pair per axis.

    The standard array API has no pad, so: fill a bigger array, write x into its
    middle; backward reads the middle back out.
    """
    x = as_tensor(x)
    if len(pad_width) != x.ndim or any(
        not (is_int(lo) and is_int(hi) and lo >= 0 and hi >= 0) for lo, hi in pad_width
    ):
        raise ValueError(
            f"pad: need {x.ndim} non-negative (before, after) pairs for shape {x.shape}, got "
            f"{pad_width}"
        )
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pad_width))
    middle = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, pad_width))
    out = backend.full(shape, value, x.dtype)
    out[middle] = x.data

    def backward(g):  # the padding is constant: only the middle has a gradient
        return (g[middle],)

    return record(out, (x,), backward, "pad")
