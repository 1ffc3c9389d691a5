"""One gradient checker: backward() against central finite differences, in float64.

For a scalar function f, the derivative along a direction v is

    (f(x + eps v) - f(x - eps v)) / (2 eps)  =  <grad f(x), v> + O(eps^2).

Small inputs are checked along every coordinate (v = one-hot), large ones along
a few random directions, which tests every entry of the gradient at once. A
non-scalar output y is reduced to the scalar <y, r> with a fixed random r, so
one backward pass checks the whole Jacobian-vector product.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor, no_grad

FULL_CHECK_SIZE = 100  # inputs up to this many elements are checked coordinate by coordinate
DIRECTIONS = 8  # random directions for larger inputs


class GradcheckError(AssertionError):
    """backward() disagrees with finite differences."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0) -> bool:
    """Check the gradients of ``fn(*inputs)`` with respect to every input.

    `inputs` are float64 Tensors or arrays (they are not modified). Returns True, or
    raises GradcheckError naming the input, the worst coordinate or direction,
    and the analytic and numeric values.
    """
    xs = [_float64_leaf(x, i) for i, x in enumerate(inputs)]
    rng = np.random.default_rng(seed)
    xp = backend.xp()

    out = fn(*xs)
    # the fixed random projection that turns any output into a scalar
    r = backend.asarray(rng.standard_normal(out.shape)) if out.shape else None

    def scalar(*args) -> float:
        y = fn(*args)
        return float(xp.sum(y.data * r)) if r is not None else float(y.data)

    projected = (out * Tensor(r)).sum() if r is not None else out
    if projected.requires_grad:
        projected.backward()

    for i, x in enumerate(xs):
        analytic = backend.to_numpy(x.grad) if x.grad is not None else np.zeros(x.shape)
        base = backend.to_numpy(x.data)

        def along(v) -> float:  # the central difference along direction v (host array)
            step = backend.asarray(eps * v)
            with no_grad():
                plus = scalar(*_replace(xs, i, x.data + step))
                minus = scalar(*_replace(xs, i, x.data - step))
            return (plus - minus) / (2 * eps)

        if base.size <= FULL_CHECK_SIZE:
            checks = [
                (f"coordinate {idx}", np.eye(1, base.size, k).reshape(base.shape), analytic[idx])
                for k, idx in enumerate(np.ndindex(base.shape))
            ]
        else:
            checks = []
            for d in range(DIRECTIONS):
                v = rng.standard_normal(base.shape)
                checks.append((f"random direction {d}", v, float(np.sum(analytic * v))))

        worst = None
        for where, v, a in checks:
            n = along(v)
            excess = abs(a - n) - (atol + rtol * abs(n))
            if excess > 0 and (worst is None or excess > worst[0]):
                worst = (excess, where, a, n)
        if worst is not None:
            _, where, a, n = worst
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}), worst at {where}: analytic {a:.8g}, "
                f"numeric {n:.8g} (|diff| {abs(a - n):.3g} > atol {atol} + rtol {rtol} * |numeric|)"
            )
    return True


def _float64_leaf(x, i) -> Tensor:
    data = x.data if isinstance(x, Tensor) else x
    if not hasattr(data, "dtype") or str(data.dtype).split(".")[-1] != "float64":
        raise TypeError(
            f"gradcheck: input {i} has dtype {getattr(data, 'dtype', type(data).__name__)}; "
            "finite differences need float64 (in float32 the rounding error of f(x+eps) - f(x-eps) "
            "swamps the derivative)"
        )
    return Tensor(data, requires_grad=True)


def _replace(xs, i, data):
    """The inputs with input i's data swapped for `data` (no graph needed)."""
    return [Tensor(data) if j == i else Tensor(x.data) for j, x in enumerate(xs)]
