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
from ..backend import check_finite_array
from ..files import atomic_write
from ..tensor import Tensor, as_int, no_grad


class Module:
    training = True
    # while summary() or minivae.graph.layers() runs: (module, inputs, output) of every call,
    # in the order the calls finish (a layer before the Sequential around it)
    call_log = None  # (a list only while recording; minivae.graph.layers() sets it)

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if Module.call_log is not None:
            Module.call_log.append((self, (args, kwargs), out))
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
        shape = (1, *_shape(input_shape, "build"))
        # Tensor would quietly make int32 zeros float32
        if str(dtype) not in ("float32", "float64"):
            raise TypeError(f"build: dtype must be 'float32' or 'float64', got {dtype!r}")
        x = Tensor(backend.full(shape, 0.0, backend.dtype(dtype)))
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
        # (inside graph.layers(), keep its list after)
        previous, Module.call_log = Module.call_log, []
        calls = Module.call_log
        try:
            self.build(input_shape, dtype)
        finally:
            Module.call_log = previous
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for m, _inputs, out in calls:
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
        params = self.check_state_dict(arrays)
        for name, p in params.items():
            p.data = backend.asarray(np.array(arrays[name]), dtype=p.dtype)  # a copy: ours now

    def check_state_dict(self, arrays) -> dict:
        """Refuse `arrays` (host arrays by name) unless load_state_dict could load them all:
        the same names and shapes as the parameters, real numbers, no NaN or inf (the
        weights of a run that blew up). Returns the parameters by name."""
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
            check_finite_array(arrays[name], f"load_weights: weight {name!r}")
        extra = sorted(set(arrays) - set(params))
        if extra:
            raise ValueError(
                f"load_weights: the file has weights the model lacks, first {extra[0]!r}"
            )
        return params

    def save_weights(self, path) -> None:
        """Write all parameters to an ``.npz`` file, atomically (temporary file, then rename)."""
        save_npz(path, self.state_dict())

    def load_weights(self, path) -> None:
        """Load what save_weights wrote; any problem is one ValueError naming the file."""
        arrays = read_npz(path)
        try:
            self.load_state_dict(arrays)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def read_npz(path) -> dict:
    """Every array of an ``.npz`` file, read into memory. A missing file raises
    FileNotFoundError; a damaged one (truncated, empty, text, an ``.npy``) one ValueError
    naming the file, not the zip or pickle error of the layer below."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("an .npy array, not an .npz archive of named arrays")
        with f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # a flipped byte can reach zipfile, zlib, the .npy header parser...
        why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        if "pickled" in str(exc):  # NumPy's guess for bytes that are not an array at all
            why = "not a NumPy file (no .npz/.npy header)"
        raise ValueError(f"{path}: cannot read it as an .npz archive ({why})") from None


def _shape(input_shape, who: str) -> tuple:
    """One example's shape as a tuple of positive ints: build((4,)), not build(4)."""
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(
            f"{who}: input_shape must be a tuple of sizes without the batch axis, "
            f"e.g. ({input_shape!r},), got {input_shape!r}"
        )
    what = f"each size in input_shape {tuple(input_shape)}"
    return tuple(as_int(n, who, what, 1) for n in input_shape)


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
