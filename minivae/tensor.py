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
import math
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
        """`data`: a number, a (nested) list, or an array of any backend. Values are never
        rescaled: uint8 pixels 0..255 become float32 0.0..255.0 (``train.to_device``, which
        fit() and evaluate() use, is the one place that maps uint8 images to [0, 1])."""
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

    def item(self) -> float:
        """The value of a one-element tensor as a Python float: one device-to-host read
        (on a GPU it waits for everything queued before it). ``float(t)`` does the same."""
        if self.size != 1:
            raise ValueError(f"item(): a tensor of shape {self.shape} has {self.size} elements, "
                             "not one; index or reduce it first, or use .numpy()")
        return float(backend.to_numpy(self.data).reshape(-1)[0])

    __float__ = item

    def detach(self) -> "Tensor":
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
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, tensor has {self.shape}")
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no leaf of it does)")

        grads = {id(self): grad}
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node.grad_fn is None:  # a leaf: keep (accumulate) its gradient
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node.parents, _one_per_parent(node, node.grad_fn(g))):
                if pg is not None and parent.requires_grad:
                    key = id(parent)
                    grads[key] = grads[key] + pg if key in grads else pg
            node.parents, node.grad_fn = (), _freed  # free the graph behind us

    def _topological_order(self) -> list["Tensor"]:
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
        return record(a.data + b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)), "add")

    def __sub__(self, other):
        a, b = _pair(self, other, "subtract")
        return record(a.data - b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)), "subtract")

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
            raise TypeError("Tensor ** p: p must be a Python number; for a tensor exponent use exp(p * log(x))")
        x, p = self.data, float(p)  # a NumPy scalar would not mix with a device array
        if not math.isfinite(p):
            raise ValueError(f"power: the exponent must be finite, got {p}")

        def backward(g):  # d(x^p)/dx = p x^(p-1)
            return (g * p * x ** (p - 1),)

        return record(x**p, (self,), backward, "power")

    def __matmul__(self, other):
        a, b = _pair(self, other, "matmul", broadcast=False)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape}: a 0-d operand has no matrix axes; use *")
        inner = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if a.shape[-1] != inner:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit ({a.shape[-1]} != {inner})")
        broadcast_shapes(a.shape[:-2], b.shape[:-2], f"matmul of {a.shape} and {b.shape}, batch axes")
        if b.ndim == 1:  # a vector on the right: a one-column matrix, column dropped after
            out = a @ b.reshape(-1, 1)
            return out.reshape(*out.shape[:-1])
        if a.ndim == 1:  # a vector on the left: a one-row matrix, row dropped after
            out = a.reshape(1, -1) @ b
            return out.reshape(*out.shape[:-2], out.shape[-1])
        xp = backend.xp()

        def backward(g):  # C = AB: dA = g B^T, dB = A^T g (summed over broadcast batch axes)
            # skip the product nobody needs, e.g. the gradient of the input data: a whole matmul
            ga = unbroadcast(xp.matmul(g, xp.matrix_transpose(b.data)), a.shape) if a.requires_grad else None
            gb = unbroadcast(xp.matmul(xp.matrix_transpose(a.data), g), b.shape) if b.requires_grad else None
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
            # (added to zeros, not broadcast_to: a leaf's .grad must be a writable array, not a view)
            return (xp.zeros_like(self.data) + xp.reshape(g, kept),)

        return record(xp.sum(self.data, axis=axes, keepdims=keepdims), (self,), backward, "sum")

    def mean(self, axis=None, keepdims=False):
        count = int(np.prod([self.shape[i] for i in normalize_axes(axis, self.ndim, "mean")]))
        if count == 0:  # 0 / 0: an empty batch would give a NaN loss
            raise ValueError(f"mean: over no elements (axis {axis} of shape {self.shape}); "
                             "an empty batch?")
        return self.sum(axis, keepdims) / count

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(as_int(n, "reshape", f"size in {shape}", -1) for n in shape)
        xp = backend.xp()
        try:
            out = xp.reshape(self.data, shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {self.shape} ({self.size} elements) to {shape}") from None
        return record(out, (self,), lambda g: (xp.reshape(g, self.shape),), "reshape")

    def transpose(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the {self.ndim} axes of {self.shape}")
        inverse = tuple(int(i) for i in np.argsort(axes))
        xp = backend.xp()
        return record(xp.permute_dims(self.data, axes), (self,), lambda g: (xp.permute_dims(g, inverse),), "transpose")

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(int(k) if is_int(k) else k for k in key)  # NumPy's integers too, never a bool
        if not all(k is Ellipsis or is_int(k) or _int_slice(k) for k in key):
            raise TypeError(f"Tensor[...]: only basic indexing (ints, slices, ...) is supported, got {key!r}")
        if sum(k is not Ellipsis for k in key) > self.ndim:
            raise IndexError(f"Tensor[...]: {key!r} indexes more axes than the {self.ndim} of shape {self.shape}")
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


def _one_per_parent(node: Tensor, grads) -> tuple:
    """A backward's answer, refused unless it is one gradient (or None) per parent, shaped and
    typed like it: a wrong shape would broadcast silently into the sums, a float64 gradient
    would turn a float32 weight into float64 at the next optimiser step."""
    if not isinstance(grads, (tuple, list)) or len(grads) != len(node.parents):
        is_seq = isinstance(grads, (tuple, list))
        got = f"{len(grads)} gradients" if is_seq else type(grads).__name__
        raise TypeError(f"backward of {node.op!r}: must return a tuple of one gradient (or None) "
                        f"per parent ({len(node.parents)}), got {got}")
    for i, (p, g) in enumerate(zip(node.parents, grads)):
        if g is not None and (tuple(g.shape) != p.shape or g.dtype != p.dtype):
            raise ValueError(f"backward of {node.op!r}: the gradient for parent {i} has shape "
                             f"{tuple(g.shape)} and dtype {_dtype_text(g.dtype)}; the parent has "
                             f"{p.shape} and {_dtype_text(p.dtype)}")
    return grads


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
        if _float_name(x.dtype) is None:  # say what it is, not the float32 it would become
            raise TypeError(f"{op}: mixing {_float_name(like.dtype)} and an array of "
                            f"{_dtype_text(x.dtype)}; convert it explicitly, "
                            f"e.g. Tensor(x, dtype=\"{_float_name(like.dtype)}\")")
        x = Tensor(x)
    if isinstance(x, Tensor):
        if x._backend != like._backend:
            raise TypeError(f"{op}: mixing tensors from backends {like._backend!r} and {x._backend!r}")
        if x.dtype != like.dtype:  # promotion would silently turn a float32 model into float64
            raise TypeError(f"{op}: mixing {_float_name(like.dtype)} and {_float_name(x.dtype)}; "
                            f"convert one explicitly, "
                            f"e.g. Tensor(x, dtype=\"{_float_name(like.dtype)}\")")
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
            raise ValueError(f"{op}: shapes {tuple(s1)} and {tuple(s2)} cannot be broadcast together")
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
    axes = (axis,) if is_int(axis) else axis
    if not isinstance(axes, (tuple, list)) or not all(is_int(a) for a in axes):
        raise TypeError(f"{op}: axis must be None, an int or a tuple of ints, got {axis!r}")
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} axes")
    axes = tuple(int(a) % ndim for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: axis {axis} names an axis twice")
    return axes


def _int_slice(k) -> bool:
    return isinstance(k, slice) and all(v is None or is_int(v) for v in (k.start, k.stop, k.step))


def is_int(x) -> bool:
    """An integer of Python or NumPy (np.int64 from a shape, say), but not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def as_int(value, op: str, what: str, minimum: int | None = None) -> int:
    """`value` as a Python int (at least `minimum`), or an error naming the op: 2.9 is not
    silently 2, True is not 1."""
    if not is_int(value) or (minimum is not None and value < minimum):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise (TypeError if not is_int(value) else ValueError)(
            f"{op}: {what} must be {expected}, got {value!r}")
    return int(value)


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
        data = backend.asarray(_real_host_array(data), dtype=dtype)
    elif not _dtype_text(data.dtype).startswith(("float", "int", "uint", "bool")):  # not complex
        raise TypeError(f"Tensor: expected real numbers, got an array of dtype {data.dtype}")
    return data if data.dtype == dtype else backend.xp().astype(data, dtype)


def _real_host_array(data) -> np.ndarray:
    """`data` on the host, refusing what has no real value: None (NumPy makes it NaN),
    complex numbers (the imaginary part would be dropped), strings and objects."""
    try:
        host = backend.to_numpy(data) if hasattr(data, "dtype") else np.asarray(data)
    except (TypeError, ValueError) as exc:  # ragged lists, say
        raise TypeError(f"Tensor: cannot make an array of {type(data).__name__} data "
                        f"({exc})") from None
    if host.dtype.kind not in "biuf":
        got = "None" if data is None else f"{type(data).__name__} of dtype {host.dtype}"
        raise TypeError(f"Tensor: expected real numbers (a number, a list or an array), got {got}")
    return host


def _dtype_text(dtype) -> str:
    """A dtype's short name on every backend ('int64', not 'array_api_strict.int64')."""
    return str(dtype).split(".")[-1]


def _float_name(dtype):
    """'float32' or 'float64' for such a dtype of any backend (its name, np.float32, np.dtype),
    else None."""
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        dtype = np.dtype(dtype)
    name = str(dtype).split(".")[-1]
    return name if name in ("float32", "float64") else None
