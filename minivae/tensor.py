"""The Tensor and reverse-mode automatic differentiation.

Read this file first. A ``Tensor`` holds an array (``.data``) and, when it was
made by an operation on tensors that need gradients, remembers

* ``_parents``: the tensors it was computed from, and
* ``_backward``: a small function that turns the gradient of the final loss with
  respect to this tensor (``g``) into the gradients with respect to each parent:
  one application of the chain rule.

``loss.backward()`` lists the graph in topological order (every tensor after
the tensors it was computed from), walks that list in reverse, and hands each
tensor's gradient to its ``_backward``. A tensor used twice receives the sum of
the gradients from both uses. Leaves (the tensors you created, such as weights)
keep their gradient in ``.grad``; everything else is freed as the walk goes, so
memory stays flat over thousands of training steps.

Every op below is written the same way: compute the output array, then define
``backward(g)`` right beside it, then ``record(...)`` records both.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside ``with no_grad():`` operations record no graph (evaluation, optimiser steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _freed(g):
    raise RuntimeError(
        "backward() through this part of the graph a second time: its graph was freed by the "
        "first backward(); run the forward computation again"
    )


class Tensor:
    """An array with an optional gradient and a record of how it was computed."""

    # `numpy_array + tensor` would otherwise make NumPy loop over the tensor's elements;
    # this makes it hand the operation to Tensor.__radd__ and friends instead.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _float_array(data.data if isinstance(data, Tensor) else data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.parents: tuple[Tensor, ...] = ()
        self.grad_fn = None
        self.op = "leaf"
        self._backend = backend.get_backend().name

    # --- a few plain properties -------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(np.prod(self.data.shape)))

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d Tensor")
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, op={self.op}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a host (NumPy) array: the one explicit way off the device.
        (On the numpy backend it is the tensor's own array, not a copy.)"""
        return backend.to_numpy(self.data)

    def detach(self) -> Tensor:
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    # --- backward ----------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Fill ``.grad`` of every leaf this tensor depends on with d(self)/d(leaf).

        Gradients accumulate: call ``zero_grad()`` (or set ``.grad = None``) between steps.
        """
        xp = backend.xp()
        if grad is None:
            if self.size != 1:
                raise ValueError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs `grad`, "
                    "the gradient of the loss with respect to it (or reduce it to a scalar first)"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = lift(grad, self, "backward").data
            if tuple(grad.shape) != self.shape:
                raise ValueError(
                    f"backward(): grad has shape {tuple(grad.shape)}, tensor has {self.shape}"
                )
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad (no leaf of it does)"
            )

        grads = {id(self): grad}
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node.grad_fn is None:  # a leaf: keep (accumulate) its gradient
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node.parents, node.grad_fn(g)):
                if pg is not None and parent.requires_grad:
                    key = id(parent)
                    grads[key] = grads[key] + pg if key in grads else pg
            node.parents, node.grad_fn = (), _freed  # free the graph behind us

    def _topological_order(self) -> list[Tensor]:
        """Depth-first post-order, with an explicit stack (no recursion limit)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in node.parents if p.requires_grad)
        return order

    # --- arithmetic: each forward with its backward ------------------------
    def __add__(self, other):
        a, b = _pair(self, other, "add")
        return record(
            a.data + b.data,
            (a, b),
            lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)),
            "add",
        )

    def __sub__(self, other):
        a, b = _pair(self, other, "subtract")
        return record(
            a.data - b.data,
            (a, b),
            lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)),
            "subtract",
        )

    def __mul__(self, other):
        a, b = _pair(self, other, "multiply")

        def backward(g):  # d(ab)/da = b, d(ab)/db = a
            return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)

        return record(a.data * b.data, (a, b), backward, "multiply")

    def __truediv__(self, other):
        a, b = _pair(self, other, "divide")
        out = a.data / b.data

        def backward(g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -out/b
            return unbroadcast(g / b.data, a.shape), unbroadcast(-g * out / b.data, b.shape)

        return record(out, (a, b), backward, "divide")

    def __neg__(self):
        return record(-self.data, (self,), lambda g: (-g,), "negative")

    def __pow__(self, p):
        if not isinstance(p, numbers.Real):
            raise TypeError(
                "Tensor ** p: p must be a Python number; for a tensor exponent use exp(p * log(x))"
            )
        x, p = self.data, float(p)  # a NumPy scalar would not mix with a device array

        def backward(g):  # d(x^p)/dx = p x^(p-1)
            return (g * p * x ** (p - 1),)

        return record(x**p, (self,), backward, "power")

    def __matmul__(self, other):
        a, b = _pair(self, other, "matmul", broadcast=False)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape}: a 0-d operand has no matrix axes; use *"
            )
        inner = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if a.shape[-1] != inner:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} do not fit ({a.shape[-1]} != {inner})"
            )
        broadcast_shapes(
            a.shape[:-2], b.shape[:-2], f"matmul of {a.shape} and {b.shape}, batch axes"
        )
        if b.ndim == 1:  # a vector on the right: a one-column matrix, column dropped after
            out = a @ b.reshape(-1, 1)
            return out.reshape(*out.shape[:-1])
        if a.ndim == 1:  # a vector on the left: a one-row matrix, row dropped after
            out = a.reshape(1, -1) @ b
            return out.reshape(*out.shape[:-2], out.shape[-1])
        xp = backend.xp()

        def backward(g):  # C = AB: dA = g B^T, dB = A^T g (summed over broadcast batch axes)
            # skip the product nobody needs, e.g. the gradient of the input data: a whole matmul
            ga = (
                unbroadcast(xp.matmul(g, xp.matrix_transpose(b.data)), a.shape)
                if a.requires_grad
                else None
            )
            gb = (
                unbroadcast(xp.matmul(xp.matrix_transpose(a.data), g), b.shape)
                if b.requires_grad
                else None
            )
            return ga, gb

        return record(xp.matmul(a.data, b.data), (a, b), backward, "matmul")

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other):
        return lift(other, self, "subtract") - self

    def __rtruediv__(self, other):
        return lift(other, self, "divide") / self

    def __rmatmul__(self, other):
        return lift(other, self, "matmul") @ self

    # Comparisons give plain boolean arrays: there is no gradient through them.
    # (== and != are left as identity, so tensors can sit in sets and lists.)
    def __lt__(self, other):
        return self.data < lift(other, self, "less").data

    def __le__(self, other):
        return self.data <= lift(other, self, "less_equal").data

    def __gt__(self, other):
        return self.data > lift(other, self, "greater").data

    def __ge__(self, other):
        return self.data >= lift(other, self, "greater_equal").data

    # --- reductions and shape changes --------------------------------------
    def sum(self, axis=None, keepdims=False):
        xp = backend.xp()
        axes = normalize_axes(axis, self.ndim, "sum")
        kept = tuple(1 if i in axes else n for i, n in enumerate(self.shape))

        def backward(g):  # every summed element gets the same gradient
            # (added to zeros, not broadcast_to: a leaf's .grad must be a writable array, not a
            # view)
            return (xp.zeros_like(self.data) + xp.reshape(g, kept),)

        return record(xp.sum(self.data, axis=axes, keepdims=keepdims), (self,), backward, "sum")

    def mean(self, axis=None, keepdims=False):
        count = int(np.prod([self.shape[i] for i in normalize_axes(axis, self.ndim, "mean")]))
        return self.sum(axis, keepdims) / count

    def reshape(self, *shape):
        shape = (
            tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        )
        xp = backend.xp()
        try:
            out = xp.reshape(self.data, shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape {self.shape} ({self.size} elements) to {shape}"
            ) from None
        return record(out, (self,), lambda g: (xp.reshape(g, self.shape),), "reshape")

    def transpose(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(
                f"transpose: axes {axes} are not a permutation of the {self.ndim} axes of "
                f"{self.shape}"
            )
        inverse = tuple(int(i) for i in np.argsort(axes))
        xp = backend.xp()
        return record(
            xp.permute_dims(self.data, axes),
            (self,),
            lambda g: (xp.permute_dims(g, inverse),),
            "transpose",
        )

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if not all(k is Ellipsis or isinstance(k, (int, slice)) for k in key):
            raise TypeError(
                f"Tensor[...]: only basic indexing (ints, slices, ...) is supported, got {key!r}"
            )
        if sum(k is not Ellipsis for k in key) > self.ndim:
            raise IndexError(
                f"Tensor[...]: {key!r} indexes more axes than the {self.ndim} of shape {self.shape}"
            )
        if not any(k is Ellipsis for k in key):
            key = key + (Ellipsis,)  # the array API wants every axis spelled out
        xp = backend.xp()

        def backward(g):  # the picked elements get g, the rest zero
            full = xp.zeros_like(self.data)
            full[key] = g
            return (full,)

        return record(self.data[key], (self,), backward, "getitem")

    # The two elementwise ops every tensor needs as methods; the rest are in functional.py.
    def exp(self):
        out = backend.xp().exp(self.data)
        return record(out, (self,), lambda g: (g * out,), "exp")

    def log(self):
        return record(backend.xp().log(self.data), (self,), lambda g: (g / self.data,), "log")


# --- helpers shared by every op ----------------------------------------------


def record(data, parents, backward, name) -> Tensor:
    """Wrap an op's output, recording `backward` only if some parent needs a gradient."""
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out.op = data, None, name
    out._backend = parents[0]._backend
    out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
    out.parents, out.grad_fn = (parents, backward) if out.requires_grad else ((), None)
    return out


def as_tensor(x) -> Tensor:
    """`x` if it is a Tensor, else a constant Tensor holding it."""
    return x if isinstance(x, Tensor) else Tensor(x)


def lift(x, like: Tensor, op: str) -> Tensor:
    """Turn the other operand of a binary op into a Tensor on `like`'s backend and dtype."""
    if isinstance(x, numbers.Real):  # a Python or NumPy number takes the tensor's dtype
        return Tensor(backend.full((), float(x), like.dtype))
    if backend.is_array(x):
        x = Tensor(x)
    if isinstance(x, Tensor):
        if x._backend != like._backend:
            raise TypeError(
                f"{op}: mixing tensors from backends {like._backend!r} and {x._backend!r}"
            )
        if x.dtype != like.dtype:  # promotion would silently turn a float32 model into float64
            raise TypeError(
                f"{op}: mixing {_float_name(like.dtype)} and {_float_name(x.dtype)}; "
                'convert one explicitly, e.g. Tensor(x, dtype="float32")'
            )
        return x
    raise TypeError(
        f"{op}: cannot combine a Tensor on backend {like._backend!r} with {type(x).__module__}."
        f"{type(x).__name__}; wrap it in Tensor(...) to move it to the device explicitly"
    )


def _pair(a: Tensor, b, op: str, broadcast: bool = True):
    b = lift(b, a, op)
    if broadcast:
        broadcast_shapes(a.shape, b.shape, op)
    return a, b


def broadcast_shapes(s1, s2, op: str = "broadcast") -> tuple:
    """The NumPy broadcasting rule, with an error that names the op and both shapes."""
    out = []
    for i in range(1, max(len(s1), len(s2)) + 1):
        n1 = s1[-i] if i <= len(s1) else 1
        n2 = s2[-i] if i <= len(s2) else 1
        if n1 != n2 and 1 not in (n1, n2):
            raise ValueError(
                f"{op}: shapes {tuple(s1)} and {tuple(s2)} cannot be broadcast together"
            )
        out.append(max(n1, n2) if 1 in (n1, n2) else n1)
    return tuple(reversed(out))


def unbroadcast(g, shape):
    """Undo broadcasting: sum the gradient over every axis the forward stretched."""
    xp = backend.xp()
    extra = g.ndim - len(shape)
    if extra:
        g = xp.sum(g, axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return xp.sum(g, axis=stretched, keepdims=True) if stretched else g


def normalize_axes(axis, ndim, op: str) -> tuple:
    """`axis` (None, an int or a tuple, negatives allowed) as a tuple of axes in range(ndim)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} axes")
    return tuple(a % ndim for a in axes)


def _float_array(data, dtype):
    """A floating-point array on the current device.

    A float32/float64 array keeps its dtype; numbers, lists and integer arrays become
    float32; ``dtype="float32"|"float64"`` forces one. Data from the host, another
    backend or another device is moved here: the one explicit door onto the device.
    """
    if dtype is None:
        dtype = _float_name(getattr(data, "dtype", None)) or "float32"
    elif _float_name(dtype) is None:
        raise TypeError(f"Tensor: dtype must be 'float32' or 'float64', got {dtype!r}")
    dtype = backend.dtype(_float_name(dtype))
    if not backend.is_array(data):
        data = backend.asarray(
            backend.to_numpy(data) if hasattr(data, "dtype") else data, dtype=dtype
        )
    return data if data.dtype == dtype else backend.xp().astype(data, dtype)


def _float_name(dtype):
    """'float32' or 'float64' for such a dtype of any backend (or its name), else None."""
    name = str(dtype).split(".")[-1]
    return name if name in ("float32", "float64") else None
