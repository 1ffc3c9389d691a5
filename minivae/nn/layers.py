"""Layers with Keras's meaning: channels-last images (N, H, W, C), glorot-uniform
kernels, zero biases, weights created on the first call.

Each layer keeps its weights in ``kernel`` and ``bias``, shaped as in Keras, so the
parameter counts of ``summary()`` match a Keras lecture line for line.
"""

from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from ..tensor import Tensor
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


def glorot_uniform(shape, fan_in: int, fan_out: int, dtype) -> Tensor:
    """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010):
    keeps the variance of activations and gradients roughly equal from layer to layer."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return Tensor(backend.uniform(shape, dtype, -limit, limit), requires_grad=True)


def zeros(shape, dtype) -> Tensor:
    return Tensor(backend.full(shape, 0.0, dtype), requires_grad=True)


def check_input(layer, x: Tensor, rank: int, last: int | None = None) -> None:
    """Refuse an input of the wrong rank or last-axis size, naming the layer and both shapes."""
    if x.ndim != rank or (last is not None and x.shape[-1] != last):
        expected = ", ".join(["N"] + ["?"] * (rank - 2) + [str(last) if last is not None else "?"])
        raise ValueError(f"{layer.name}: expected input of shape ({expected}), got {x.shape}")


class Layer(Module):
    """A module with a display name and an activation."""

    def __init__(self, activation=None):
        self.activation = get_activation(activation)

    @property
    def name(self) -> str:
        return type(self).__name__


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel (in, units), applied over the last axis."""

    def __init__(self, units: int, activation=None):
        super().__init__(activation)
        self.units = int(units)
        self.kernel = self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel is None:
            if x.ndim < 2:
                raise ValueError(
                    f"Dense: expected input of shape (N, ..., features), got {x.shape}"
                )
            n_in = x.shape[-1]
            self.kernel = glorot_uniform((n_in, self.units), n_in, self.units, x.dtype)
            self.bias = zeros((self.units,), x.dtype)
        elif x.ndim < 2 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(
                f"Dense: expected input of shape (N, ..., {self.kernel.shape[0]}), got {x.shape}"
            )
        return self.activation(x @ self.kernel + self.bias)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class Reshape(Layer):
    """(N, ...) -> (N, *shape); the batch axis is kept."""

    def __init__(self, shape):
        super().__init__()
        self.target = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
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
        self.layers = list(layers)

    def add(self, layer: Module) -> None:
        self.layers.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
