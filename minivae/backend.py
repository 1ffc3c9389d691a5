"""Where arrays live: the one module that knows NumPy from CuPy.

Every other file does its array work through ``xp()``, the namespace of the
current backend, using only what the Python Array API standard offers (NumPy 2,
CuPy and ``array_api_strict`` all implement it). The few things the standard
lacks live here: seeded random numbers, and moving data to and from the host.

Backends
--------
``numpy``   the default, on the CPU.
``cupy``    the same code on an NVIDIA GPU (``pip install minivae[gpu]``; see the README).
``strict``  ``array_api_strict`` on its non-default device ``device1``: a stand-in
            for a GPU in the tests. Like CuPy it refuses implicit conversion to
            NumPy and refuses to mix arrays from two devices, so code that passes
            on ``strict`` has no hidden conversion to NumPy (``float(x)`` of a
            0-d array is still allowed, as on CuPy, where it waits for the GPU).

Choose with ``set_backend(name)``, the ``use_backend(name)`` context manager, or
the ``MINIVAE_BACKEND`` environment variable (read once, at import).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys

import numpy as np

BACKENDS = ("numpy", "cupy", "strict")


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here."""


class Backend:
    """An array namespace, its array type, the device arrays are placed on, and a seeded
    generator."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            self.xp, self.array_type, self.device = np, np.ndarray, None
        elif name == "strict":
            try:
                import array_api_strict
            except ModuleNotFoundError:
                raise BackendError(
                    "backend 'strict' needs array_api_strict, which is not "
                    "installed: `pip install array-api-strict`"
                ) from None

            self.xp, self.array_type = array_api_strict, type(array_api_strict.asarray(0.0))
            self.device = array_api_strict.Device("device1")
        elif name == "cupy":
            self.xp = _import_cupy()
            self.array_type, self.device = self.xp.ndarray, None
        else:
            raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
        self.seed(0)

    def seed(self, seed: int) -> None:
        """Restart the random stream from `seed`."""
        if self.name == "cupy":
            # Philox is counter-based: seeding only sets counters. default_rng's XORWOW would
            # skip every GPU thread's state ahead, hundreds of thousands of them, each reseed.
            random = self.xp.random
            self._rng = random.Generator(random.Philox4x3210(seed))
        else:
            # strict has no generator of its own: draw on the host, then move the draw.
            self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def _import_cupy():
    """CuPy, checked to run: a GPU is visible, and a kernel and a matrix product work."""
    try:
        import cupy
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "cupy":
            raise BackendError(
                "backend 'cupy' needs CuPy, which is not installed; install it with "
                "`pip install minivae[gpu]` (CUDA 12) or `minivae[gpu-cuda13]` (CUDA 13), "
                "or use backend 'numpy'"
            ) from None
        # CuPy is there, but its own import failed (e.g. on a CUDA library it loads)
        raise BackendError(
            f"backend 'cupy': CuPy is installed but cannot be imported "
            f"({_first_line(exc)}); {_CUDA_FIX}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDA error types
        count, why = 0, f" ({type(exc).__name__}: {exc})"
    else:
        why = ""
    if count == 0:
        raise BackendError(
            f"backend 'cupy': CuPy is installed but finds no CUDA device{why}; "
            "check the NVIDIA driver with `nvidia-smi`, or use backend 'numpy'"
        ) from None
    _check_cupy_runs(cupy)
    return cupy


# CuPy's wheels bring no CUDA libraries of their own: the `[ctk]` extra (in minivae's `gpu`
# extras) installs NVRTC, which compiles every elementwise kernel, and cuBLAS, for matmul.
_CUDA_FIX = (
    "install the CUDA libraries with `pip install minivae[gpu]` (CUDA 12) or "
    "`minivae[gpu-cuda13]` (CUDA 13), or install the CUDA toolkit; a driver older "
    "than them fails here too: see `nvidia-smi`"
)


def _check_cupy_runs(cupy) -> None:
    """Run a tiny elementwise kernel and a matrix product now, so that missing CUDA
    libraries stop the choice of backend with one clear error instead of a raw one mid-run."""
    host = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    for what, run, expected in [
        ("a kernel (compiled by NVRTC)", lambda a: cupy.add(a, a), host + host),
        ("a matrix product (cuBLAS)", lambda a: cupy.matmul(a, a), host @ host),
    ]:
        try:  # what CuPy raises: DynamicLibNotFoundError, ImportError, its CUDA error types
            got = cupy.asnumpy(run(cupy.asarray(host)))
        except Exception as exc:  # noqa: BLE001
            raise BackendError(
                f"backend 'cupy': the GPU is found but {what} fails "
                f"({type(exc).__name__}: {_first_line(exc)}); {_CUDA_FIX}"
            ) from None
        if not np.array_equal(got, expected):
            raise BackendError(
                f"backend 'cupy': {what} gives wrong numbers "
                f"({got.tolist()} instead of {expected.tolist()}); {_CUDA_FIX}"
            )


def _first_line(exc) -> str:
    """An exception's first line: CUDA library errors go on to list every folder searched."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for the next step instead of handing it back.

    A training step allocates and frees the same large temporaries every time. By default
    glibc returns freed memory at the top of its heap to the system (and serves arrays over
    128 KiB from mmap, unmapped on free), so the next step page-faults it all in again: on
    the lecture's CNN that was about 5,800 page faults and 6-7 ms of system time a step
    (22.3 ms a step, against 15.7 ms without them: benchmarks/README.md). Large arrays
    from the heap, and 64 MiB kept at its top, bring that to zero. Only on Linux with
    glibc; elsewhere nothing changes. It is process-wide: MINIVAE_KEEP_FREED_MEMORY=0 in
    the environment leaves glibc as it is.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MINIVAE_KEEP_FREED_MEMORY") == "0":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return
    m_top_pad, m_mmap_threshold = -2, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_top_pad, 64 << 20)


_keep_freed_memory()
_current = Backend(os.environ.get("MINIVAE_BACKEND", "numpy"))


def get_backend() -> Backend:
    return _current


def set_backend(name: str) -> Backend:
    """Switch every new array to backend `name` ('numpy', 'cupy' or 'strict')."""
    global _current
    if name != _current.name:
        _current = Backend(name)
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("strict"): ...`` runs a block on another backend."""
    previous = _current
    try:
        yield set_backend(name)
    finally:
        globals()["_current"] = previous


def xp():
    """The array namespace of the current backend."""
    return _current.xp


def dtype(name):
    """``dtype("float32")`` as the current namespace spells it."""
    return getattr(_current.xp, str(name))


def float_name(dtype) -> str | None:
    """'float32' or 'float64' for such a dtype of any backend (or for its name), else None:
    the one place dtype names are read."""
    # cached: str() of a NumPy dtype takes ~2 us, and most ops ask. Keyed on the type too, so
    # a strict dtype is never compared with NumPy's (equal hashes; strict warns at ==)
    return _float_name(type(dtype), dtype)


@functools.lru_cache(maxsize=64)
def _float_name(kind, dtype) -> str | None:  # (`kind`: only the cache key)
    name = dtype.__name__ if isinstance(dtype, type) else str(dtype)  # np.float32 is a type
    name = name.split(".")[-1]
    return name if name in ("float32", "float64") else None


def asarray(data, dtype=None):
    """Put `data` (nested lists, numbers or host arrays) on the current device.

    The one host-to-device door: Tensor(...) and train.to_device move data through
    it, and nothing in minivae moves data onto the device implicitly.
    """
    b = _current
    if b.name == "cupy" and isinstance(data, np.ndarray):
        return b.xp.asarray(data, dtype=dtype)
    if b.device is not None:
        return b.xp.asarray(data, dtype=dtype, device=b.device)
    return b.xp.asarray(data, dtype=dtype)


def full(shape, value, dtype):
    """An array of `shape` filled with `value`, on the current device."""
    b = _current
    if b.device is not None:
        return b.xp.full(shape, value, dtype=dtype, device=b.device)
    return b.xp.full(shape, value, dtype=dtype)


def constant(value: float, dtype, shape=()):
    """An array of `shape` (by default 0-d) filled with the number `value`, made once per
    backend, value, dtype and shape: the numbers in a model's formulas (0.5, 1, log 2 pi)
    would otherwise be copied to the device at every step. Shared, so never written to."""
    # the sign joins the key: -0.0 == 0.0, but 1 / -0.0 is -inf
    sign = math.copysign(1.0, value)
    return _constant(_current.name, float(value), sign, float_name(dtype), tuple(shape))


@functools.lru_cache(maxsize=1024)
def _constant(backend_name: str, value: float, sign: float, dtype_name: str, shape: tuple):
    return full(shape, value, dtype(dtype_name))  # (`backend_name`, `sign`: only the key)


def overflow_is_expected():
    """A block in which an overflow to inf is the right intermediate (sigmoid's e^-a for very
    negative a): NumPy's warning is silenced (array_api_strict computes with NumPy; CuPy does
    not warn)."""
    return np.errstate(over="ignore")


def to_numpy(x) -> np.ndarray:
    """Bring `x` (a Tensor or a backend array, e.g. a ``.grad``) to the host.

    On the numpy backend this is the array itself, not a copy.
    """
    # a Tensor holds its array in .data (a NumPy array's .data is its buffer)
    if hasattr(x, "requires_grad"):
        x = x.data
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    if hasattr(x, "get"):  # CuPy
        return x.get()
    if hasattr(x, "to_device"):  # array_api_strict: move to its CPU device first
        import array_api_strict

        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)


# --- random numbers: the standard has none, so each backend's generator lives here ---
# Only the two methods that NumPy's and CuPy's Generator both have are used:
# standard_normal and random (CuPy's has no uniform and no permutation).


def normal(shape, dtype):
    """Standard normal draws of `shape` in `dtype`, on the current device."""
    b = _current
    if b.name == "cupy":
        return b._rng.standard_normal(shape, dtype=dtype)
    draw = b._rng.standard_normal(shape, dtype=np.dtype(_known_float(dtype)))
    return draw if b.name == "numpy" else asarray(draw)


def uniform(shape, dtype, low=0.0, high=1.0):
    """Uniform draws between `low` and `high` of `shape` in `dtype`, on the current device.
    (Drawn on [low, high) in float64; rounding to float32 can give `high` itself.)"""
    b = _current
    draw = low + (high - low) * b._rng.random(shape)  # exactly NumPy's Generator.uniform
    if b.name == "cupy":
        return draw.astype(dtype)
    draw = draw.astype(_known_float(dtype))
    return draw if b.name == "numpy" else asarray(draw)


def permutation(n: int) -> np.ndarray:
    """A seeded permutation of range(n), as a host array (used to shuffle batches)."""
    b = _current
    if b.name == "cupy":
        return shuffled_range(b._rng, n).get()
    return b._rng.permutation(n)


def shuffled_range(rng, n: int):
    """A permutation of range(n) from a generator that has only random(): the order
    that sorts n uniform draws (all orders equally likely; ties have probability ~0)."""
    return rng.random(n).argsort()


def seed(s: int) -> None:
    """Restart the current backend's random stream."""
    _current.seed(s)


def _known_float(dtype) -> str:
    name = float_name(dtype)
    if name is None:
        raise TypeError(f"expected a float32 or float64 dtype, got {dtype}")
    return name


def is_array(x) -> bool:
    """True for an array of the current backend on its device (a NumPy array is one only on
    'numpy'; NumPy scalars and arrays of another device are not)."""
    b = _current
    return isinstance(x, b.array_type) and (b.device is None or x.device == b.device)


def check_finite_array(a, what: str) -> None:
    """Refuse a host array that is not real numbers, or holds NaN or inf."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {a.dtype}, expected real numbers")
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ValueError(
            f"{what} holds {bad} NaN or infinite values of {a.size} "
            "(saved from a run that blew up?); refusing to load it"
        )
