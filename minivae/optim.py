"""Optimisers: SGD (with momentum) and Adam, each a transcription of its paper.

An optimiser holds the parameter list and its state (arrays on the device).
``step()`` reads each ``p.grad`` and moves the parameters; no graph is recorded.
``state_dict()`` / ``load_state_dict()`` carry the state through a checkpoint so
training resumes exactly.

All parameters are updated at once: their arrays are views into one flat array,
their gradients are joined into another, and the paper's formulas run once over
all of them (on a GPU each array operation is a kernel launch; per parameter, a
model with 20 weights would launch 20 times as many). On the CPU they run over
blocks of the flat arrays that fit in its cache (CPU_BLOCK). The state (Adam's m
and v) is flat too, and is saved per parameter.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import backend
from .backend import check_finite_array

# Entries per block of the update on the CPU: Adam's dozen passes over four arrays (parameters,
# gradient, m, v) then stay in the L2 cache (4 x 256 KiB) instead of streaming arrays of
# megabytes through it each time: Adam's step on the MNIST recipe's 652k parameters took
# 1.95 ms in one pass, 1.31 ms in blocks (same-run medians, one thread).
# On a GPU each pass is a kernel launch, so there the update makes one pass over everything.
CPU_BLOCK = 1 << 16


class Optimizer:
    """What SGD and Adam share: the parameter list, the step count, the flat arrays every
    step works on, and checkpoints. A subclass defines _update and names its state."""

    state_names: tuple[str, ...] = ()  # its state arrays, each as long as all parameters

    def __init__(self, params, lr: float):
        self.params = list(params)
        name = type(self).__name__
        if not self.params:
            raise ValueError(
                f"{name}: got an empty parameter list (build the model first): "
                "layers create their weights on the first call; model.build(input_shape) "
                "makes that call on zeros, so the optimiser can be created right after it"
            )
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears twice in the list")
        dtypes = {backend.float_name(p.dtype) for p in self.params}
        if len(dtypes) != 1:  # one flat array holds them all
            raise ValueError(
                f"{name}: the parameters mix dtypes {sorted(dtypes)}; use one optimiser per dtype"
            )
        self.lr = _hyper(self, "lr", lr, 0.0, math.inf)
        self.t = 0  # steps taken
        # parameter i is flat[bounds[i]:bounds[i + 1]]
        self.bounds = np.cumsum([0] + [p.size for p in self.params]).tolist()
        self._flat, self._views = None, []
        n, dtype = self.bounds[-1], self.params[0].dtype
        self.state = {key: backend.full((n,), 0.0, dtype) for key in self.state_names}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient (one with ``grad None`` keeps its value
        and its state; the step count, and so Adam's bias correction, is shared by all)."""
        self.t += 1
        xp = backend.xp()
        flat = self._flat_parameters()  # in place below: every p.data is a view into flat
        g, has_grad = self._flat_gradients()
        if has_grad is None:
            names = list(self.state)
            for part, g_part, *state in self._in_blocks(flat, g, *self.state.values()):
                part -= self._update(g_part, **dict(zip(names, state)))  # (views: in place)
            return
        # some parameter has no gradient: the update runs on copies of the state, and only
        # the entries with a gradient take the change and the new state
        state = {k: xp.asarray(s, copy=True) for k, s in self.state.items()}
        change = self._update(g, **state)
        flat -= xp.where(has_grad, change, xp.zeros_like(change))
        self.state = {k: xp.where(has_grad, state[k], self.state[k]) for k in state}

    def _update(self, g, **state):
        """The change from the flat gradient `g`: the parameters become flat - change
        (self.t is already this step's count, from 1). It moves the flat state arrays in
        place, and may overwrite `g` (the step's own array, joined by _flat_gradients):
        each update is then a few passes over memory, with few temporaries."""
        raise NotImplementedError(f"{type(self).__name__} must define _update(g, **state)")

    def _in_blocks(self, *arrays) -> list:
        """The flat arrays as the update walks them, one list per block: on the CPU views
        of CPU_BLOCK entries each, on a GPU (and on strict, its stand-in) the arrays whole."""
        if backend.get_backend().name != "numpy":
            return [arrays]
        return [
            [a[lo : lo + CPU_BLOCK] for a in arrays] for lo in range(0, self.bounds[-1], CPU_BLOCK)
        ]

    # --- the flat arrays ---
    def _flat_parameters(self):
        """All parameters in one flat array, each p.data a view into it. A parameter whose
        array was replaced since the last step (Module.load_state_dict, load_weights, another
        optimiser) is not a view: then they are all gathered again."""
        if self._flat is None or any(p.data is not v for p, v in zip(self.params, self._views)):
            xp = backend.xp()
            self._flat = xp.concat([p.data for p in self.params], axis=None)  # (each flattened)
            self._views = [self._piece(self._flat, i) for i in range(len(self.params))]
            for p, view in zip(self.params, self._views):
                p.data = view
        return self._flat

    def _flat_gradients(self):
        """All gradients in one flat array, and None, or, when some parameter has no
        gradient, a flat boolean array that is False over its entries (they get zeros)."""
        xp = backend.xp()
        pieces = [p.grad if p.grad is not None else xp.zeros_like(p.data) for p in self.params]
        flat = xp.concat(pieces, axis=None)  # (axis None: each flattened as it is joined)
        if all(p.grad is not None for p in self.params):
            return flat, None
        has_grad = [backend.full((p.size,), p.grad is not None, xp.bool) for p in self.params]
        return flat, xp.concat(has_grad)

    def _piece(self, flat, i: int):
        """Parameter i's part of a flat array, in its shape: a view, not a copy, as a reshape
        of a contiguous slice is on every backend (no copy=False: CuPy 14's reshape lacks it)."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return backend.xp().reshape(flat[lo:hi], self.params[i].shape)

    # --- checkpoints: the step count and every state array, per parameter, as host arrays ---
    def state_dict(self) -> dict[str, np.ndarray]:
        """{"t": the step count, "m.0": m of parameter 0, ...}: copies on the host."""
        state = {"t": np.asarray(self.t)}
        for key, flat in self.state.items():
            host = backend.to_numpy(flat)  # one transfer per state array
            for i, p in enumerate(self.params):
                lo, hi = self.bounds[i], self.bounds[i + 1]
                state[f"{key}.{i}"] = np.array(host[lo:hi].reshape(p.shape))  # a copy
        return state

    def load_state_dict(self, state) -> None:
        """Restore what state_dict() returned. Everything is checked before anything is
        written, so a mismatch (another optimiser, another model) leaves this one as it was."""
        self.check_state_dict(state)
        dtype = self.params[0].dtype
        for key in self.state:
            host = np.concatenate([np.ravel(state[f"{key}.{i}"]) for i in range(len(self.params))])
            self.state[key] = backend.asarray(host, dtype=dtype)
        self.t = int(state["t"])

    def check_state_dict(self, state) -> None:
        """Refuse a state load_state_dict could not load whole: other entries or shapes, a
        step count that is not a whole number >= 0, NaN or inf in a moment."""
        name = type(self).__name__
        slots = [(f"{key}.{i}", p) for key in self.state for i, p in enumerate(self.params)]
        expected = {"t"} | {key for key, _ in slots}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"{name}.load_state_dict: the state does not fit this optimiser "
                f"(missing {missing[:3]}, unexpected {extra[:3]}; expected {len(expected)} entries)"
            )
        for key, p in slots:
            if tuple(state[key].shape) != p.shape:
                raise ValueError(
                    f"{name}.load_state_dict: state {key} has shape {tuple(state[key].shape)}, "
                    f"the parameter it belongs to has {p.shape}"
                )
            check_finite_array(state[key], f"{name}.load_state_dict: state {key}")
        t = np.asarray(state["t"])
        if t.shape != () or t.dtype.kind not in "iuf" or not np.isfinite(t) or t < 0 or t != int(t):
            raise ValueError(
                f"{name}.load_state_dict: step count t must be a whole number >= 0, got {t!r}"
            )


class SGD(Optimizer):
    """v <- momentum * v + g;  p <- p - lr * v  (plain SGD when momentum = 0)."""

    state_names = ("velocity",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _hyper(self, "momentum", momentum, 0.0, 1.0, high_open=True)

    def _update(self, g, velocity):
        if self.momentum:
            velocity *= self.momentum
            velocity += g
            g = velocity
        return self.lr * g


class Adam(Optimizer):
    """Adam, Kingma & Ba (2015), Algorithm 1, with bias correction:

        m <- beta1 m + (1 - beta1) g            (first moment)
        v <- beta2 v + (1 - beta2) g^2          (second moment)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    computed in the order the paper's Section 2 gives for efficiency ("the efficiency of
    algorithm 1 can, at the expense of clarity, be improved upon by changing the order of
    computation"): the bias corrections fold into one number per step,

        alpha_t = lr sqrt(1 - beta2^t) / (1 - beta1^t),  p <- p - alpha_t m / (sqrt(v) + eps_hat)

    and with eps_hat = eps sqrt(1 - beta2^t) this is the same update (multiply the top and
    bottom of m_hat / (sqrt(v_hat) + eps) by sqrt(1 - beta2^t)), with no m_hat or v_hat made.

    eps defaults to Keras's 1e-7 (the paper and PyTorch use 1e-8), placed as in the paper
    and PyTorch, beside sqrt(v_hat); how that differs from Keras: docs/vae.md ("Adam's eps").
    """

    state_names = ("m", "v")

    def __init__(
        self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7
    ):
        super().__init__(params, lr)
        self.beta1 = _hyper(self, "beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = _hyper(self, "beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = _hyper(self, "eps", eps, 0.0, math.inf)

    def _update(self, g, m, v):
        b1, b2, t = self.beta1, self.beta2, self.t
        m *= b1  # m <- beta1 m + (1 - beta1) g, in place
        m += (1 - b1) * g
        g *= g  # v <- beta2 v + (1 - beta2) g^2, in place (g itself becomes (1 - beta2) g^2)
        g *= 1 - b2
        v *= b2
        v += g
        alpha_t = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        eps_hat = self.eps * math.sqrt(1 - b2**t)
        denominator = backend.xp().sqrt(v)
        denominator += eps_hat
        change = alpha_t * m
        change /= denominator
        return change


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
