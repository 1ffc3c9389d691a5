"""Optimisers: SGD (with momentum) and Adam, each a transcription of its paper.

An optimiser holds the parameter list and per-parameter state (arrays on the
device). ``step()`` reads each ``p.grad`` and updates ``p.data`` in place of the
old array; no graph is recorded. ``state_dict()`` / ``load_state_dict()`` carry the
state through a checkpoint so training resumes exactly.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import backend
from .backend import check_finite_array


class Optimizer:
    """What SGD and Adam share: the parameter list, the step count, the loop over the
    parameters in step(), and checkpoints. A subclass defines _update and _state."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(
                f"{type(self).__name__}: got an empty parameter list (build the model first): "
                "layers create their weights on the first call; model.build(input_shape) "
                "makes that call on zeros, so the optimiser can be created right after it"
            )
        self.lr = _hyper(self, "lr", lr, 0.0, math.inf)
        self.t = 0  # steps taken

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient (one with ``grad None`` is left alone;
        the step count, and so Adam's bias correction, is shared by all)."""
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                p.data = self._update(i, p.data, p.grad)

    # --- what each optimiser defines ---
    def _update(self, i: int, p, g):
        """The new value of parameter i (array `p`) from its gradient `g`, updating the
        optimiser's state for it (self.t is already this step's count, from 1)."""
        raise NotImplementedError(f"{type(self).__name__} must define _update(i, p, g)")

    def _state(self) -> dict[str, list]:
        """The per-parameter state by name, one array per parameter in each list
        ({"m": [...], "v": [...]} for Adam): what a checkpoint must carry."""
        raise NotImplementedError(f"{type(self).__name__} must define _state()")

    # --- checkpoints: the step count and every state array, as host arrays ---
    def _slots(self):
        """(name, list, index) of every state array: "m.0" is self.m[0], ..."""
        for key, arrays in self._state().items():
            for i in range(len(arrays)):
                yield f"{key}.{i}", arrays, i

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.asarray(self.t)}
        for name, arrays, i in self._slots():
            state[name] = np.array(backend.to_numpy(arrays[i]))  # a copy, even on NumPy
        return state

    def load_state_dict(self, state) -> None:
        """Restore what state_dict() returned. Everything is checked before anything is
        written, so a mismatch (another optimiser, another model) leaves this one as it was."""
        self.check_state_dict(state)
        for key, arrays, i in self._slots():
            arrays[i] = backend.asarray(np.array(state[key]), dtype=arrays[i].dtype)
        self.t = int(state["t"])

    def check_state_dict(self, state) -> None:
        """Refuse a state load_state_dict could not load whole: other entries or shapes, a
        step count that is not a whole number >= 0, NaN or inf in a moment."""
        name = type(self).__name__
        slots = list(self._slots())
        expected = {"t"} | {key for key, _, _ in slots}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"{name}.load_state_dict: the state does not fit this optimiser "
                f"(missing {missing[:3]}, unexpected {extra[:3]}; expected {len(expected)} entries)"
            )
        for key, arrays, i in slots:
            if tuple(state[key].shape) != tuple(arrays[i].shape):
                raise ValueError(
                    f"{name}.load_state_dict: state {key} has shape {tuple(state[key].shape)}, "
                    f"the parameter it belongs to has {tuple(arrays[i].shape)}"
                )
            check_finite_array(state[key], f"{name}.load_state_dict: state {key}")
        t = np.asarray(state["t"])
        if t.shape != () or t.dtype.kind not in "iuf" or not np.isfinite(t) or t < 0 or t != int(t):
            raise ValueError(
                f"{name}.load_state_dict: step count t must be a whole number >= 0, got {t!r}"
            )


class SGD(Optimizer):
    """v <- momentum * v + g;  p <- p - lr * v  (plain SGD when momentum = 0)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _hyper(self, "momentum", momentum, 0.0, 1.0, high_open=True)
        self.velocity = [backend.xp().zeros_like(p.data) for p in self.params]

    def _update(self, i, p, g):
        if self.momentum:
            self.velocity[i] = self.momentum * self.velocity[i] + g
            g = self.velocity[i]
        return p - self.lr * g

    def _state(self):
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam, Kingma & Ba (2015), Algorithm 1, with bias correction:

        m <- beta1 m + (1 - beta1) g            (first moment)
        v <- beta2 v + (1 - beta2) g^2          (second moment)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    eps defaults to Keras's 1e-7 (the paper and PyTorch use 1e-8), placed as in the paper
    and PyTorch, beside sqrt(v_hat); how that differs from Keras: docs/vae.md ("Adam's eps").
    """

    def __init__(
        self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7
    ):
        super().__init__(params, lr)
        self.beta1 = _hyper(self, "beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = _hyper(self, "beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = _hyper(self, "eps", eps, 0.0, math.inf)
        xp = backend.xp()
        self.m = [xp.zeros_like(p.data) for p in self.params]
        self.v = [xp.zeros_like(p.data) for p in self.params]

    def _update(self, i, p, g):
        b1, b2, t = self.beta1, self.beta2, self.t
        self.m[i] = b1 * self.m[i] + (1 - b1) * g
        self.v[i] = b2 * self.v[i] + (1 - b2) * (g * g)
        m_hat = self.m[i] / (1 - b1**t)
        v_hat = self.v[i] / (1 - b2**t)
        return p - self.lr * m_hat / (backend.xp().sqrt(v_hat) + self.eps)

    def _state(self):
        return {"m": self.m, "v": self.v}


def _hyper(optimizer, name: str, value, low: float, high: float, high_open: bool = False) -> float:
    """A hyperparameter as a float in [low, high] (or [low, high)): NaN fails every
    comparison, so `lr <= 0` alone would let it through."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        close = ")" if high_open else "]"
        interval = f"[{low:g}, {high:g}{close}" if math.isfinite(high) else f"[{low:g}, inf)"
        raise ValueError(
            f"{type(optimizer).__name__}: {name} must be a finite number in {interval}, "
            f"got {value!r}"
        )
    return float(value)
