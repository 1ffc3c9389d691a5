"""Layers with Keras's meaning: channels-last images (N, H, W, C), glorot-uniform
kernels, zero biases, weights created on the first call.

Each layer keeps its weights in ``kernel`` and ``bias``, shaped as in Keras, so the
parameter counts of ``summary()`` match a Keras lecture line for line. A Dense kernel
is (in, out), the transpose of PyTorch's nn.Linear weight (out, in); a Conv2D kernel is
(kh, kw, in, out), PyTorch's (out, in, kh, kw) permuted.

Weights are created on the first call, when the input's size is known: build a model
with ``model.build(input_shape)`` before making its optimiser. ``kernel_initializer``
and ``bias_initializer`` choose how: a name from INITIALIZERS, or a function
``init(shape, fan_in, fan_out, dtype) -> array`` (a host or device array, e.g. weights
exported from PyTorch).
"""

from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from ..tensor import Tensor, as_int, as_tensor, lift, record
from .module import Module

ACTIVATIONS = {
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "softplus": F.softplus,
}


def get_activation(activation):
    """An activation by name ('relu', 'sigmoid', 'tanh', 'softplus', None) or a callable."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(map(str, ACTIVATIONS))} "
            "or a callable"
        )
    return ACTIVATIONS[activation]


def glorot_uniform(shape, fan_in: int, fan_out: int, dtype):
    """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010):
    keeps the variance of activations and gradients roughly equal from layer to layer."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return backend.uniform(shape, dtype, -limit, limit)


def pytorch_uniform(shape, fan_in: int, fan_out: int, dtype):
    """PyTorch's default for nn.Linear and nn.Conv2d, weights and biases alike: uniform on
    [-1/sqrt(fan_in), 1/sqrt(fan_in)] (its kaiming_uniform_ with a = sqrt(5))."""
    bound = 1.0 / math.sqrt(fan_in)
    return backend.uniform(shape, dtype, -bound, bound)


def zeros(shape, fan_in: int, fan_out: int, dtype):
    return backend.full(shape, 0.0, dtype)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "pytorch": pytorch_uniform, "zeros": zeros}


def get_initializer(initializer):
    """An initializer by name (see INITIALIZERS) or a callable (shape, fan_in, fan_out, dtype)."""
    if callable(initializer):
        return initializer
    if initializer not in INITIALIZERS:
        raise ValueError(
            f"unknown initializer {initializer!r}; expected one of {sorted(INITIALIZERS)} "
            "or a callable init(shape, fan_in, fan_out, dtype)"
        )
    return INITIALIZERS[initializer]


def make_weights(layer, kernel_shape, outputs: int, dtype) -> tuple[Tensor, Tensor]:
    """The layer's kernel and bias (one per output), from its initializers. Fans as Keras:
    fan_in = prod(kernel_shape[:-1]), fan_out = the receptive field times kernel_shape[-1]
    (for a Dense kernel (in, out): in and out)."""
    fan_in = math.prod(kernel_shape[:-1])
    fan_out = math.prod(kernel_shape[:-2]) * kernel_shape[-1]
    weights = []
    for what, init, shape in [
        ("kernel", layer.kernel_initializer, tuple(kernel_shape)),
        ("bias", layer.bias_initializer, (outputs,)),
    ]:
        w = Tensor(init(shape, fan_in, fan_out, dtype), dtype=backend.float_name(dtype))
        if w.shape != shape:
            raise ValueError(
                f"{layer.name}: the {what} initializer returned shape {w.shape}, expected {shape}"
            )
        weights.append(Tensor(w.data, requires_grad=True))
    return tuple(weights)


def check_input(layer, x: Tensor, rank: int, last: int | None = None) -> None:
    """Refuse an input of the wrong rank or last-axis size, naming the layer and both shapes."""
    if x.ndim != rank or (last is not None and x.shape[-1] != last):
        expected = ", ".join(["N"] + ["?"] * (rank - 2) + [str(last) if last is not None else "?"])
        raise ValueError(f"{layer.name}: expected input of shape ({expected}), got {x.shape}")


class Layer(Module):
    """A module with a display name and an activation. A layer keeps the dtype of its first
    input (that of its weights, if it has any) and refuses another, as an op refuses a mix."""

    input_dtype = None

    def __init__(self, activation=None):
        self.activation = get_activation(activation)

    def __call__(self, x, *args, **kwargs):
        dtype = str(getattr(x, "dtype", None)).split(".")[-1]  # 'float32' on every backend
        if self.input_dtype is not None and dtype != self.input_dtype:
            raise TypeError(
                f"{self.name}: built for {self.input_dtype} input, got {dtype}; convert "
                f'the input explicitly, e.g. Tensor(x, dtype="{self.input_dtype}")'
            )
        out = super().__call__(x, *args, **kwargs)
        # (only after a call that worked: a failed first call fixes nothing)
        self.input_dtype = dtype
        return out

    @property
    def name(self) -> str:
        return type(self).__name__


def dense(x: Tensor, kernel: Tensor, bias: Tensor) -> Tensor:
    """x (..., in) @ kernel (in, out) + bias (out,): Dense's op, as conv2d is Conv2D's. One op
    for the product and the bias: the bias is added in place to the fresh product, so a
    layer makes one (N, out) array, not two."""
    x = as_tensor(x)
    kernel, bias = lift(kernel, x, "dense"), lift(bias, x, "dense")
    xp = backend.xp()
    out = xp.matmul(x.data, kernel.data)
    out += bias.data  # in place: `out` is a fresh array, and this saves a full-size copy

    def backward(g):  # out = x W + b: dx = g W^T, dW = x^T g, db = g summed over the rows
        # rows: all leading axes (reshaped only where there are more than one: a call saved)
        g2 = g if g.ndim == 2 else xp.reshape(g, (-1, g.shape[-1]))
        gx = g @ kernel.data.mT if x.requires_grad else None
        gk = None
        if kernel.requires_grad:
            x2 = x.data if x.ndim == 2 else xp.reshape(x.data, (-1, x.shape[-1]))
            gk = x2.mT @ g2
        gb = sum_rows(g2) if bias.requires_grad else None
        return gx, gk, gb

    return record(out, (x, kernel, bias), backward, "dense")


def sum_rows(g2):
    """A bias gradient: g2 (rows, F) summed over its rows, as the product ones @ g2 (BLAS on
    NumPy: 2x faster than xp.sum over axis 0 for a Dense layer's (100, 200), 10x for a
    convolution's (36864, 16)). The ones are a constant, made once per length."""
    return backend.constant(1.0, g2.dtype, (g2.shape[0],)) @ g2


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel (in, units), applied over the last axis.

    kernel_initializer="pytorch", bias_initializer="pytorch" give nn.Linear's default init.
    """

    def __init__(
        self,
        units: int,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
    ):
        super().__init__(activation)
        self.kernel_initializer = get_initializer(kernel_initializer)
        self.bias_initializer = get_initializer(bias_initializer)
        self.units = as_int(units, "Dense", "units", 1)
        self.kernel = self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel is None:
            if x.ndim < 2:
                raise ValueError(
                    f"Dense: expected input of shape (N, ..., features), got {x.shape}"
                )
            shape = (x.shape[-1], self.units)
            self.kernel, self.bias = make_weights(self, shape, self.units, x.dtype)
        elif x.ndim < 2 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(
                f"Dense: expected input of shape (N, ..., {self.kernel.shape[0]}), got {x.shape}"
            )
        return self.activation(dense(x, self.kernel, self.bias))


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1:
            raise ValueError(f"Flatten: expected input of shape (N, ...), got {x.shape}")
        return x.reshape(x.shape[0], -1)


class Reshape(Layer):
    """(N, ...) -> (N, *shape); the batch axis is kept."""

    def __init__(self, shape):
        super().__init__()
        shape = (shape,) if not isinstance(shape, (tuple, list)) else shape
        self.target = tuple(as_int(n, "Reshape", f"each size in {shape}", 1) for n in shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1:
            raise ValueError(f"Reshape: expected input of shape (N, ...), got {x.shape}")
        if math.prod(x.shape[1:]) != math.prod(self.target):
            raise ValueError(
                f"Reshape: cannot reshape input {x.shape} to (N, "
                f"{', '.join(map(str, self.target))})"
            )
        return x.reshape(x.shape[0], *self.target)


class Sequential(Layer):
    """Layers applied one after the other."""

    def __init__(self, layers=()):
        super().__init__()
        self.layers = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: Module) -> None:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: expected a layer (a Module), got {type(layer).__name__}")
        self.layers.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
