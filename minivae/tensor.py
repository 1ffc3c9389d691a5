"""The Tensor and reverse-mode automatic differentiation.

Read this file first. A ``Tensor`` holds an array (``.data``) and, when it was
made by an operation on tensors that need gradients, remembers

* ``parents``: the tensors it was computed from, and
* ``grad_fn``: the op's ``backward(g)``, a small function that turns the gradient of
  the final loss with respect to this tensor (``g``) into the gradients with respect
  to each parent: one application of the chain rule;
* ``op``: the op's name ("leaf" for a tensor you created).

``loss.backward()`` lists the graph in topological order (every tensor after
the tensors it was computed from), walks that list in reverse, and hands each
tensor's gradient to its ``grad_fn``. A tensor used twice receives the sum of
the gradients from both uses. Leaves (the tensors you created, such as weights)
keep their gradient in ``.grad``; everything else is freed as the walk goes, so
memory stays flat over thousands of training steps.

Every op below is written the same way: compute the output array, define
``backward(g)`` right beside it, and ``record(...)`` both. ``record`` (and
``record_outputs``, for an op with several outputs), ``lift``, ``unbroadcast`` and
``normalize_axes`` are public: they are all a new op needs (docs/autodiff.md, "Write your
own op").
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
        data = _float_array(data.data if isinstance(data, Tensor) else data, dtype)
        self._set(data, bool(requires_grad), (), None, "leaf", backend.get_backend().name)

    def _set(self, data, requires_grad, parents, grad_fn, op, backend_name) -> None:
        """Every field a Tensor has, set in this one place (by __init__ and by record)."""
        self.data, self.grad, self.requires_grad = data, None, requires_grad
        self.parents: tuple[Tensor, ...] = parents
        self.grad_fn, self.op = grad_fn, op
        self._backend = backend_name

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
        (On the numpy backend it is the tensor's own array, not a copy; an optimiser step
        changes a parameter's array in place, so keep np.array(p.numpy()) as a snapshot.)"""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python float: one device-to-host read
        (on a GPU it waits for everything queued before it). ``float(t)`` does the same."""
        if self.size != 1:
            raise ValueError(
                f"item(): a tensor of shape {self.shape} has {self.size} elements, "
                "not one; index or reduce it first, or use .numpy()"
            )
        return float(backend.to_numpy(self.data).reshape(-1)[0])

    __float__ = item

    def detach(self) -> Tensor:
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    # --- backward ----------------------------------------------------------
    def backward(self, grad=None, visit=None) -> None:
        """Fill ``.grad`` of every leaf this tensor depends on with d(self)/d(leaf).

        Gradients accumulate: call ``zero_grad()`` (or set ``.grad = None``) between steps.
        ``visit(tensor, g)``, if given, is called at each step of the walk with the tensor
        reached and its whole gradient (minivae/graph.py prints the walk with it); for the
        node of an op with several outputs (record_outputs), g is their Slots.
        """
        grad = self._seed_gradient(grad)
        grads = {id(self): grad}
        for node in reversed(self.topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if visit is not None:
                visit(node, g)
            if node.grad_fn is None:  # a leaf: keep (accumulate) its gradient
                node.grad = g if node.grad is None else node.grad + g
                continue
            handed = set()
            for parent, pg in zip(node.parents, _one_per_parent(node, node.grad_fn(g))):
                if pg is not None and parent.requires_grad:
                    # one array to two parents (a + b passes g to both) is copied for the second:
                    # every gradient in the walk, and so every leaf's .grad, is then its own
                    # array, which may be changed in place (gradient clipping)
                    if id(pg) in handed:
                        pg = backend.xp().asarray(pg, copy=True)
                    handed.add(id(pg))
                    key = id(parent)
                    grads[key] = grads[key] + pg if key in grads else pg
            node.parents, node.grad_fn = (), _freed  # free the graph behind us

    def _seed_gradient(self, grad):
        """backward()'s argument, checked: d(self)/d(self) = 1 for a scalar, else `grad`."""
        if grad is None:
            if self.size != 1:
                raise ValueError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs `grad`, "
                    "the gradient of the loss with respect to it (or reduce it to a scalar first)"
                )
            grad = backend.xp().ones_like(self.data)
        else:
            # a copy: the caller's array, or a shared constant for a number, must not become
            # a .grad that is then changed in place
            grad = backend.xp().asarray(lift(grad, self, "backward").data, copy=True)
            if tuple(grad.shape) != self.shape:
                raise ValueError(
                    f"backward(): grad has shape {tuple(grad.shape)}, tensor has {self.shape}"
                )
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad (no leaf of it does)"
            )
        return grad

    def topological_order(self, parents_of=None) -> list[Tensor]:
        """Depth-first post-order, with an explicit stack (no recursion limit): every tensor
        after the ones it was computed from. parents_of(t): the parents to follow; by default
        those that require a gradient (all backward() needs; minivae.graph follows them all)."""
        if parents_of is None:
            parents_of = _gradient_parents
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in parents_of(node))
        return order

    # --- arithmetic: each forward with its backward ------------------------
    # (a backward skips the gradient of an operand that needs none: a constant, the data)
    def __add__(self, other):
        a, b = _operands(self, other, "add")

        def backward(g):  # d(a+b)/da = d(a+b)/db = 1
            ga = unbroadcast(g, a.shape) if a.requires_grad else None
            gb = unbroadcast(g, b.shape) if b.requires_grad else None
            return ga, gb

        return record(a.data + b.data, (a, b), backward, "add")

    def __sub__(self, other):
        a, b = _operands(self, other, "subtract")

        def backward(g):  # d(a-b)/da = 1, d(a-b)/db = -1
            ga = unbroadcast(g, a.shape) if a.requires_grad else None
            gb = unbroadcast(-g, b.shape) if b.requires_grad else None
            return ga, gb

        return record(a.data - b.data, (a, b), backward, "subtract")

    def __mul__(self, other):
        a, b = _operands(self, other, "multiply")

        def backward(g):  # d(ab)/da = b, d(ab)/db = a
            ga = unbroadcast(g * b.data, a.shape) if a.requires_grad else None
            gb = unbroadcast(g * a.data, b.shape) if b.requires_grad else None
            return ga, gb

        return record(a.data * b.data, (a, b), backward, "multiply")

    def __truediv__(self, other):
        a, b = _operands(self, other, "divide")
        out = a.data / b.data

        def backward(g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -out/b
            ga = unbroadcast(g / b.data, a.shape) if a.requires_grad else None
            gb = unbroadcast(-g * out / b.data, b.shape) if b.requires_grad else None
            return ga, gb

        return record(out, (a, b), backward, "divide")

    def __neg__(self):
        def backward(g):  # d(-x)/dx = -1
            return (-g,)

        return record(-self.data, (self,), backward, "negative")

    def __pow__(self, p):
        x, p = self.data, _exponent(p)

        def backward(g):  # d(x^p)/dx = p x^(p-1)
            return (g * p * x ** (p - 1),)

        return record(x**p, (self,), backward, "power")

    def __matmul__(self, other):
        a, b = self, lift(other, self, "matmul")
        _check_matmul(a.shape, b.shape)
        if a.ndim == 1 or b.ndim == 1:
            return _matmul_vector(a, b)
        xp = backend.xp()

        def backward(g):  # C = AB: dA = g B^T, dB = A^T g (summed over broadcast batch axes)
            # skip the product nobody needs, e.g. the gradient of the input data: a whole matmul.
            # (.mT, the matrix transpose, is a view: strides swapped, no data moved)
            ga = gb = None
            if a.requires_grad:
                ga = unbroadcast(xp.matmul(g, b.data.mT), a.shape)
            if b.requires_grad:
                gb = unbroadcast(xp.matmul(a.data.mT, g), b.shape)
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

        def backward(g):  # every summed element gets the same gradient
            return (self._spread(g, axes, keepdims),)

        return record(xp.sum(self.data, axis=axes, keepdims=keepdims), (self,), backward, "sum")

    def mean(self, axis=None, keepdims=False):
        xp = backend.xp()
        axes = normalize_axes(axis, self.ndim, "mean")
        count = math.prod(self.shape[i] for i in axes)
        if count == 0:  # 0 / 0: an empty batch would give a NaN loss
            raise ValueError(
                f"mean: over no elements (axis {axis} of shape {self.shape}); an empty batch?"
            )

        def backward(g):  # every averaged element gets g / count
            return (self._spread(g / count, axes, keepdims),)

        return record(xp.mean(self.data, axis=axes, keepdims=keepdims), (self,), backward, "mean")

    def _spread(self, g, axes, keepdims):
        """The gradient g of a reduction over `axes` of this tensor, copied to every element
        reduced: g repeated along those axes (xp.tile makes a new array, where broadcast_to's
        view could become a leaf's .grad, which may be changed in place)."""
        # reduced over leading axes (all of them, say), g is already the trailing shape, and
        # tile puts the missing axes in front; otherwise g gets its reduced axes back, as 1s
        leading = axes == tuple(range(len(axes)))
        if not (keepdims or leading):
            g = backend.xp().reshape(
                g, tuple(1 if i in axes else n for i, n in enumerate(self.shape))
            )
        return backend.xp().tile(g, tuple(n if i in axes else 1 for i, n in enumerate(self.shape)))

    def reshape(self, *shape):
        shape = (
            tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        )
        shape = tuple(as_int(n, "reshape", f"size in {shape}", -1) for n in shape)
        xp = backend.xp()
        try:
            out = xp.reshape(self.data, shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape {self.shape} ({self.size} elements) to {shape}"
            ) from None

        def backward(g):  # the same numbers, in the input's shape
            return (xp.reshape(g, self.shape),)

        return record(out, (self,), backward, "reshape")

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

        def backward(g):  # the inverse permutation puts every axis back
            return (xp.permute_dims(g, inverse),)

        return record(xp.permute_dims(self.data, axes), (self,), backward, "transpose")

    def __getitem__(self, key):
        key = _basic_index(key, self.shape)
        xp = backend.xp()

        def backward(g):  # the picked elements get g, the rest zero
            full = xp.zeros_like(self.data)
            full[key] = g
            return (full,)

        return record(self.data[key], (self,), backward, "getitem")

    # The two elementwise ops every tensor needs as methods; the rest are in functional.py.
    def exp(self):
        out = backend.xp().exp(self.data)

        def backward(g):  # d(e^x)/dx = e^x
            return (g * out,)

        return record(out, (self,), backward, "exp")

    def log(self):
        def backward(g):  # d(log x)/dx = 1/x
            return (g / self.data,)

        return record(backend.xp().log(self.data), (self,), backward, "log")


# --- helpers shared by every op ----------------------------------------------


def _one_per_parent(node: Tensor, grads) -> tuple:
    """A backward's answer, refused unless it is one gradient (or None) per parent, shaped and
    typed like it: a wrong shape would broadcast silently into the sums, a float64 gradient
    would turn a float32 weight into float64 at the next optimiser step."""
    if not isinstance(grads, (tuple, list)) or len(grads) != len(node.parents):
        is_seq = isinstance(grads, (tuple, list))
        got = f"{len(grads)} gradients" if is_seq else type(grads).__name__
        raise TypeError(
            f"backward of {node.op!r}: must return a tuple of one gradient (or None) "
            f"per parent ({len(node.parents)}), got {got}"
        )
    for i, (p, g) in enumerate(zip(node.parents, grads)):
        if isinstance(g, Slots):  # an output of an op with several, handing over its gradient
            continue
        if g is not None and (tuple(g.shape) != p.shape or g.dtype != p.dtype):
            raise ValueError(
                f"backward of {node.op!r}: the gradient for parent {i} has shape "
                f"{tuple(g.shape)} and dtype {_dtype_text(g.dtype)}; the parent has "
                f"{p.shape} and {_dtype_text(p.dtype)}"
            )
    return grads


def _gradient_parents(t: Tensor):
    return [p for p in t.parents if p.requires_grad]


def record(data, parents, backward, name: str) -> Tensor:
    """The Tensor holding an op's output `data`, remembering how it was computed.

    parents: the Tensors the op read. backward(g): given g, the gradient of the loss with
    respect to the output (an array shaped like `data`), returns one array or None per
    parent, in the order of `parents`, each shaped like its parent (None: no gradient,
    e.g. for an input that does not require one; ``unbroadcast`` sums a gradient back
    to a broadcast parent's shape). name: the op's name, kept in ``out.op``.

    The graph is recorded only if some parent requires a gradient and recording is on
    (not inside ``no_grad()``); otherwise the output is a constant.
    """
    out = Tensor.__new__(Tensor)  # not Tensor(data): an op's output is on the device already
    if _grad_enabled and any(p.requires_grad for p in parents):
        out._set(data, True, tuple(parents), backward, name, parents[0]._backend)
    else:
        out._set(data, False, (), None, name, parents[0]._backend)
    return out


def record_outputs(datas, parents, backward, name: str) -> list[Tensor]:
    """The Tensors holding the outputs of an op with several (split, unstack), as record
    makes the one of an op with one. backward(gs) runs once, with one gradient per output in
    the order of `datas` (None for an output the loss does not depend on), and returns one
    per parent, as for record.

    In the graph the op is a node of its own (its op is `name`; it holds its first parent's
    array), and the outputs are its children. Each output hands its gradient to that node
    as Slots {its index: gradient}, which the walk adds up as it adds any gradients; the node
    comes after all its outputs in the walk, so its backward sees all their gradients. As
    backward() frees every op it passes, a backward() through one output frees the op for
    the others too.
    """
    n = len(datas)
    node = record(parents[0].data, parents, lambda s: backward([s.get(i) for i in range(n)]), name)

    def handing(i):
        def backward_of_output(g):  # this output's gradient, in its slot
            return (Slots({i: g}),)

        return backward_of_output

    return [record(data, (node,), handing(i), name) for i, data in enumerate(datas)]


class Slots(dict):
    """The gradients of an op's several outputs, by output index. Two add up by joining: each
    output hands over its gradient once. (In place: the walk owns both, and a new dict per
    output would make an unstack into n parts cost n^2.)"""

    def __add__(self, other):
        self.update(other)
        return self


def as_tensor(x) -> Tensor:
    """`x` if it is a Tensor, else a constant Tensor holding it."""
    return x if isinstance(x, Tensor) else Tensor(x)


def lift(x, like: Tensor, op: str) -> Tensor:
    """Turn the other operand of a binary op into a Tensor on `like`'s backend and dtype."""
    if isinstance(x, numbers.Real):  # a Python or NumPy number takes the tensor's dtype
        return Tensor(backend.constant(float(x), like.dtype))
    if backend.is_array(x):
        if backend.float_name(x.dtype) is None:  # say what it is, not the float32 it would become
            raise TypeError(
                f"{op}: mixing {backend.float_name(like.dtype)} and an array of "
                f"{_dtype_text(x.dtype)}; convert it explicitly, "
                f'e.g. Tensor(x, dtype="{backend.float_name(like.dtype)}")'
            )
        x = Tensor(x)
    if isinstance(x, Tensor):
        if x._backend != like._backend:
            raise TypeError(
                f"{op}: mixing tensors from backends {like._backend!r} and {x._backend!r}"
            )
        if x.dtype != like.dtype:  # promotion would silently turn a float32 model into float64
            want = backend.float_name(like.dtype)
            raise TypeError(
                f"{op}: mixing {want} and {backend.float_name(x.dtype)}; "
                f'convert one explicitly, e.g. Tensor(x, dtype="{want}")'
            )
        return x
    raise TypeError(
        f"{op}: cannot combine a Tensor on backend {like._backend!r} with {type(x).__module__}."
        f"{type(x).__name__}; wrap it in Tensor(...) to move it to the device explicitly"
    )


# --- argument checks, kept out of the op bodies ---------------------------------


def _operands(a: Tensor, b, op: str):
    """The two operands of an elementwise op: `b` lifted to `a`'s backend and dtype,
    their shapes checked to broadcast."""
    b = lift(b, a, op)
    broadcast_shapes(a.shape, b.shape, op)
    return a, b


def _exponent(p) -> float:
    if not isinstance(p, numbers.Real):
        raise TypeError(
            "Tensor ** p: p must be a Python number; for a tensor exponent use exp(p * log(x))"
        )
    p = float(p)  # a NumPy scalar would not mix with a device array
    if not math.isfinite(p):
        raise ValueError(f"power: the exponent must be finite, got {p}")
    return p


def _check_matmul(s1, s2) -> None:
    if not s1 or not s2:
        raise ValueError(f"matmul: shapes {s1} and {s2}: a 0-d operand has no matrix axes; use *")
    inner = s2[-2] if len(s2) > 1 else s2[0]
    if s1[-1] != inner:
        raise ValueError(f"matmul: shapes {s1} and {s2} do not fit ({s1[-1]} != {inner})")
    broadcast_shapes(s1[:-2], s2[:-2], f"matmul of {s1} and {s2}, batch axes")


def _matmul_vector(a: Tensor, b: Tensor) -> Tensor:
    """A vector operand as a one-column (right) or one-row (left) matrix, that axis dropped
    after: made of reshapes around a matrix product, so it needs no backward of its own."""
    if b.ndim == 1:
        out = a @ b.reshape(-1, 1)
        return out.reshape(*out.shape[:-1])
    out = a.reshape(1, -1) @ b
    return out.reshape(*out.shape[:-2], out.shape[-1])


def _basic_index(key, shape) -> tuple:
    """A Tensor[...] key as a tuple of ints and slices ending in ..., as the array API wants."""
    key = key if isinstance(key, tuple) else (key,)
    key = tuple(int(k) if is_int(k) else k for k in key)  # NumPy's integers too, never a bool
    if not all(k is Ellipsis or is_int(k) or _int_slice(k) for k in key):
        raise TypeError(
            f"Tensor[...]: only basic indexing (ints, slices, ...) is supported, got {key!r}"
        )
    if sum(k is not Ellipsis for k in key) > len(shape):
        raise IndexError(
            f"Tensor[...]: {key!r} indexes more axes than the {len(shape)} of shape {shape}"
        )
    return key if any(k is Ellipsis for k in key) else key + (Ellipsis,)


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
            f"{op}: {what} must be {expected}, got {value!r}"
        )
    return int(value)


def _float_array(data, dtype):
    """A floating-point array on the current device.

    A float32/float64 array keeps its dtype; numbers, lists and integer arrays become
    float32; ``dtype="float32"|"float64"`` forces one. Data from the host, another
    backend or another device is moved here through backend.asarray (the one door).
    """
    if dtype is None:
        dtype = backend.float_name(getattr(data, "dtype", None)) or "float32"
    elif backend.float_name(dtype) is None:
        raise TypeError(f"Tensor: dtype must be 'float32' or 'float64', got {dtype!r}")
    dtype = backend.dtype(backend.float_name(dtype))
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
        raise TypeError(
            f"Tensor: cannot make an array of {type(data).__name__} data ({exc})"
        ) from None
    if host.dtype.kind not in "biuf":
        got = "None" if data is None else f"{type(data).__name__} of dtype {host.dtype}"
        raise TypeError(f"Tensor: expected real numbers (a number, a list or an array), got {got}")
    return host


def _dtype_text(dtype) -> str:
    """A dtype's short name on every backend ('int64', not 'array_api_strict.int64')."""
    return str(dtype).split(".")[-1]
