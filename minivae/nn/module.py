"""Module: the base of every layer and model.

A Module finds its parameters by looking at its own attributes: a Tensor that
requires grad is a parameter, a Module is searched in turn, and so are the items
of a list or tuple. Names are dotted attribute paths (``"layers.0.kernel"``), in the order the
attributes were set, so they are stable from run to run and fit a checkpoint.

Layers create their weights lazily, on the first call, when the input's shape
is known (as Keras does); ``build(input_shape)`` makes that call on zeros.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..files import atomic_write
from ..tensor import Tensor, no_grad


class Module:
    training = True
    _calls = None  # while summary() runs: the (module, output) of every call, in order

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if Module._calls is not None:
            Module._calls.append((self, out))
        return out

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # --- parameters --------------------------------------------------------
    def _members(self):
        """``(name, value)`` for each Tensor and Module held directly, in the order the
        attributes were set; the items of a list or tuple are named ``name.0``, ``name.1``..."""
        for name, value in vars(self).items():
            items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
            for i, item in items:
                if isinstance(item, (Tensor, Module)):
                    yield (name if i is None else f"{name}.{i}"), item

    def named_parameters(self, prefix: str = ""):
        """Yield ``(dotted_name, tensor)`` for every parameter, depth first."""
        for name, value in self._members():
            if isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif value.requires_grad:
                yield prefix + name, value

    def parameters(self) -> list[Tensor]:
        return [p for _, p in self.named_parameters()]

    def count_params(self) -> int:
        return sum(p.size for p in self.parameters())

    def named_modules(self, prefix: str = ""):
        """Yield ``(dotted_name, module)`` for this module and every module inside it."""
        yield prefix.rstrip("."), self
        for name, value in self._members():
            if isinstance(value, Module):
                yield from value.named_modules(f"{prefix}{name}.")

    def children(self):
        """The modules held directly (not their own children)."""
        return (value for _, value in self._members() if isinstance(value, Module))

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def build(self, input_shape, dtype="float32") -> tuple:
        """Create the weights by running the model once on zeros of shape (1, *input_shape).

        Returns the output shape without the batch axis (a tuple of them for a model
        with several outputs).
        """
        x = Tensor(backend.full((1, *input_shape), 0.0, backend.dtype(dtype)))
        with no_grad():
            out = self(x)
        if isinstance(out, (tuple, list)):
            return tuple(tuple(o.shape[1:]) for o in out)
        return tuple(out.shape[1:])

    def summary(self, input_shape, dtype="float32", print_fn=print) -> None:
        """Print a table of the layers (the innermost modules, in the order they run) with
        their output shapes and parameter counts, as Keras's ``model.summary()`` does.

        Builds the model on zeros of shape (1, *input_shape) if it has no weights yet.
        """
        names = {id(m): name for name, m in self.named_modules()}
        Module._calls = calls = []
        try:
            self.build(input_shape, dtype)
        finally:
            Module._calls = None
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for m, out in calls:
            if next(m.children(), None) is None:  # a layer, not a container of layers
                rows.append(
                    (
                        f"{names.get(id(m), '?')} ({type(m).__name__})",
                        _shape_text(out),
                        f"{m.count_params():,}",
                    )
                )
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
        text = ["".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        rule = "-" * sum(widths)
        for line in (
            f'Model: "{type(self).__name__}"',
            rule,
            text[0],
            rule,
            *text[1:],
            rule,
            f"Total params: {self.count_params():,}",
        ):
            print_fn(line)

    # --- saving and loading --------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of all parameters, by name (copies even on NumPy, so a snapshot
        taken mid-training stays as it was)."""
        return {name: np.array(p.numpy()) for name, p in self.named_parameters()}

    def load_state_dict(self, arrays) -> None:
        """Load parameters by name. Everything is checked before anything is written,
        so a mismatch leaves the model as it was."""
        params = dict(self.named_parameters())
        if not params:
            raise ValueError(
                f"load_weights: {type(self).__name__} has no weights yet; build it first, "
                "e.g. model.build(input_shape), so its layers know their shapes"
            )
        for name, p in params.items():
            if name not in arrays:
                raise ValueError(
                    f"load_weights: the file has no weight {name!r} (expected shape {p.shape})"
                )
            if tuple(arrays[name].shape) != p.shape:
                raise ValueError(
                    f"load_weights: weight {name!r} has shape {tuple(arrays[name].shape)} in the "
                    "file, "
                    f"{p.shape} in the model"
                )
        extra = sorted(set(arrays) - set(params))
        if extra:
            raise ValueError(
                f"load_weights: the file has weights the model lacks, first {extra[0]!r}"
            )
        for name, p in params.items():
            # a copy: the model owns it
            p.data = backend.asarray(np.array(arrays[name]), dtype=p.dtype)

    def save_weights(self, path) -> None:
        """Write all parameters to an ``.npz`` file, atomically (temporary file, then rename)."""
        save_npz(path, self.state_dict())

    def load_weights(self, path) -> None:
        with np.load(path, allow_pickle=False) as f:
            self.load_state_dict({k: f[k] for k in f.files})


def _shape_text(out) -> str:
    """Keras's way of writing an output shape: the batch axis as None."""
    if isinstance(out, (tuple, list)):
        return "[" + ", ".join(_shape_text(o) for o in out) + "]"
    return "(" + ", ".join(["None", *map(str, out.shape[1:])]) + ")"


def save_npz(path, arrays: dict) -> None:
    """``np.savez`` through ``atomic_write``: a crash mid-write never leaves a
    half-written file under the real name."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
