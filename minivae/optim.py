"""Optimisers: SGD (with momentum) and Adam, each a transcription of its paper.

An optimiser holds the parameter list and per-parameter state (arrays on the
device). ``step()`` reads each ``p.grad`` and updates ``p.data`` in place of the
old array; no graph is recorded. ``state_dict()`` / ``load_state_dict()`` carry the
state through a checkpoint so training resumes exactly.
"""

from __future__ import annotations

import numpy as np

from . import backend


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(
                f"{type(self).__name__}: got an empty parameter list (build the model first)"
            )
        self.lr = lr
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

    # --- checkpoints: the step count and every state array, as host arrays ---
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.asarray(self.t)}
        for key, arrays in self._state().items():
            for i, a in enumerate(arrays):
                state[f"{key}.{i}"] = np.array(backend.to_numpy(a))  # a copy, even on NumPy
        return state

    def load_state_dict(self, state) -> None:
        """Restore what state_dict() returned. Everything is checked before anything is
        written, so a mismatch (another optimiser, another model) leaves this one as it was."""
        name = type(self).__name__
        own = self._state()
        expected = {"t"} | {f"{key}.{i}" for key, arrays in own.items() for i in range(len(arrays))}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"{name}.load_state_dict: the state does not fit this optimiser "
                f"(missing {missing[:3]}, unexpected {extra[:3]}; expected {len(expected)} entries)"
            )
        for key, arrays in own.items():
            for i, a in enumerate(arrays):
                if tuple(state[f"{key}.{i}"].shape) != tuple(a.shape):
                    raise ValueError(
                        f"{name}.load_state_dict: state {key}.{i} has shape "
                        f"{tuple(state[f'{key}.{i}'].shape)}, "
                        f"the parameter it belongs to has {tuple(a.shape)}"
                    )
        for key, arrays in own.items():
            for i, a in enumerate(arrays):
                arrays[i] = backend.asarray(np.array(state[f"{key}.{i}"]), dtype=a.dtype)
        self.t = int(state["t"])


class SGD(Optimizer):
    """v <- momentum * v + g;  p <- p - lr * v  (plain SGD when momentum = 0)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = momentum
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

    eps defaults to Keras's 1e-7 (the paper and PyTorch use 1e-8). Where eps goes is the
    paper's and PyTorch's: beside sqrt(v_hat). Keras adds its epsilon to sqrt(v) before
    the bias correction (the paper's "epsilon hat" form), which in these terms is an eps
    of 1e-7 / sqrt(1 - beta2^t): about 3e-6 at the first step, tending to 1e-7 later.
    """

    def __init__(
        self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7
    ):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
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
