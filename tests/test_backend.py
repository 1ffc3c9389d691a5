"""The backend: choosing it, the errors when CuPy cannot run, where arrays are put,
the explicit way back to the host, and the seeded random numbers."""

import os
import platform
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import minivae
from minivae import Tensor, backend
from minivae.backend import Backend, BackendError


def test_set_get_and_use_backend(strict):
    start = backend.get_backend().name
    with minivae.use_backend("numpy"):
        assert backend.xp() is np
        with minivae.use_backend("strict") as b:
            assert b is backend.get_backend() and backend.xp() is strict
        assert backend.get_backend().name == "numpy"
        minivae.set_backend("strict")
        assert backend.get_backend().name == "strict"
    assert backend.get_backend().name == start  # use_backend restores what was there before
    with pytest.raises(ZeroDivisionError):
        with minivae.use_backend("numpy" if start == "strict" else "strict"):
            1 / 0  # noqa: B018 - the exception is the point
    assert backend.get_backend().name == start  # also after an exception


def test_unknown_backend_names_the_choices():
    start = backend.get_backend()
    assert minivae.BackendError is BackendError
    with pytest.raises(
        BackendError, match="unknown backend 'jax'; expected one of numpy, cupy, strict"
    ):
        minivae.set_backend("jax")
    assert backend.get_backend() is start  # a failed switch changes nothing


@pytest.mark.backends("numpy")  # starts a fresh interpreter: once is enough
def test_environment_variable_chooses_the_backend_at_import(strict):
    env = dict(os.environ, MINIVAE_BACKEND="strict")
    out = subprocess.run(
        [sys.executable, "-c", "import minivae; print(minivae.get_backend().name)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "strict"


def test_cupy_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    start = backend.get_backend()
    with pytest.raises(
        BackendError,
        match=r"backend 'cupy' needs CuPy, which is not installed; "
        r"install it with `pip install minivae\[gpu\]`",
    ):
        minivae.set_backend("cupy")
    assert backend.get_backend() is start


@pytest.mark.parametrize(
    "get_device_count, why",
    [
        (lambda: 0, "no CUDA device; check"),
        (
            lambda: (_ for _ in ()).throw(RuntimeError("cudaErrorNoDevice")),
            r"no CUDA device \(RuntimeError: cudaErrorNoDevice\); check",
        ),
    ],
)
def test_cupy_without_a_gpu_says_so(monkeypatch, get_device_count, why):
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(
        BackendError,
        match=rf"backend 'cupy': CuPy is installed but finds {why} the NVIDIA "
        r"driver with `nvidia-smi`, or use backend 'numpy'",
    ):
        Backend("cupy")


# --- a GPU found, but CuPy cannot run on it: faked, as CuPy 14 fails ---------------------
# CuPy's wheels bring no CUDA libraries. Without NVRTC, the first elementwise kernel raises
# cuda.pathfinder's DynamicLibNotFoundError (a RuntimeError) as CuPy loads the library;
# without cuBLAS, the first matmul raises ImportError with the same text. Both texts go on
# to list every folder searched, one per line.


class DynamicLibNotFoundError(RuntimeError):
    pass


DynamicLibNotFoundError.__module__ = "cuda.pathfinder._dynamic_libs.load_dl_common"


def missing(lib, error):
    def fail(*args):
        raise error(
            f'Failure finding "lib{lib}.so": No such file: lib{lib}.so*\n'
            f'  listdir("/usr/lib/python3/site-packages/nvidia/cu12/lib"):\n'
            f"    libcudart.so.12"
        )

    return fail


def fake_cupy(**replaced):
    """Enough of a `cupy` module for choosing the backend, on NumPy, with one GPU; `replaced`
    swaps functions (add, matmul) for broken ones. `.seeds` records the generators made."""
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    cupy.ndarray, cupy.asarray, cupy.asnumpy, cupy.add, cupy.matmul = (
        np.ndarray,
        np.asarray,
        np.asarray,
        np.add,
        np.matmul,
    )
    cupy.seeds = []

    def philox(seed):
        cupy.seeds.append(("Philox4x3210", seed))
        return np.random.Philox(seed)

    def default_rng(seed):
        raise AssertionError("default_rng: XORWOW, whose seeding skips every GPU thread ahead")

    cupy.random = types.SimpleNamespace(
        Philox4x3210=philox, Generator=np.random.Generator, default_rng=default_rng
    )
    for name, function in replaced.items():
        setattr(cupy, name, function)
    return cupy


@pytest.mark.backends("numpy")  # about choosing a backend: once is enough
@pytest.mark.parametrize(
    "broken, what, error",
    [
        (
            {"add": missing("nvrtc", DynamicLibNotFoundError)},
            r"a kernel \(compiled by NVRTC\)",
            "DynamicLibNotFoundError",
        ),
        ({"matmul": missing("cublas", ImportError)}, r"a matrix product \(cuBLAS\)", "ImportError"),
    ],
)
def test_cupy_without_its_cuda_libraries_names_the_fix(monkeypatch, broken, what, error):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(**broken))
    start = backend.get_backend()
    with pytest.raises(BackendError) as caught:
        minivae.set_backend("cupy")
    lib = "nvrtc" if "add" in broken else "cublas"
    assert re.fullmatch(
        rf"backend 'cupy': the GPU is found but {what} fails \({error}: Failure finding "
        rf'"lib{lib}.so": No such file: lib{lib}.so\*\); install the CUDA libraries with '
        r"`pip install minivae\[gpu\]` \(CUDA 12\) or `minivae\[gpu-cuda13\]` \(CUDA 13\), or "
        r"install the CUDA toolkit; a driver older than them fails here too: see `nvidia-smi`",
        str(caught.value),
    )
    assert backend.get_backend() is start


@pytest.mark.backends("numpy")
def test_cupy_giving_wrong_numbers_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(matmul=lambda a, b: a * b))
    wrong = r"\(\[\[1.0, 4.0\], \[9.0, 16.0\]\] instead of \[\[7.0, 10.0\]"
    with pytest.raises(
        BackendError, match=r"a matrix product \(cuBLAS\) gives wrong numbers " + wrong
    ):
        Backend("cupy")


@pytest.mark.backends("numpy")
def test_cupy_that_fails_to_import_is_not_called_missing(monkeypatch):
    class Finder:  # `import cupy` fails inside CuPy, as when a CUDA library cannot load
        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise ImportError("libcudart.so.12: cannot open shared object file\nmore")

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    with pytest.raises(
        BackendError,
        match=(
            r"^backend 'cupy': CuPy is installed but cannot be imported \(libcudart.so.12: cannot "
            r"open shared object file\); install the CUDA libraries with "
            r"`pip install minivae\[gpu\]`"
        ),
    ):
        Backend("cupy")


@pytest.mark.backends("numpy")
def test_cupy_seeds_a_counter_based_generator(monkeypatch):
    """Philox4x3210, not default_rng's XORWOW: fit() reseeds every epoch."""
    cupy = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    b = Backend("cupy")  # the fake's default_rng raises: it is never called
    b.seed(5)
    assert cupy.seeds == [("Philox4x3210", 0), ("Philox4x3210", 5)]
    assert isinstance(b._rng, np.random.Generator)


def test_arrays_are_made_on_the_backend_device():
    f32 = backend.dtype("float32")
    made = [
        backend.asarray([1.0, 2.0], dtype=f32),
        backend.asarray(np.ones(2)),
        backend.full((2, 3), 0.5, f32),
        backend.normal((2,), f32),
        backend.uniform((2,), f32),
        Tensor([1.0]).data,
    ]
    for a in made:
        assert backend.is_array(a)
        if backend.get_backend().name == "strict":
            assert a.device == backend.xp().Device("device1")


def test_is_array_accepts_only_the_current_backends_arrays():
    native = backend.asarray([1.0])
    on_numpy = backend.get_backend().name == "numpy"
    assert backend.is_array(native)
    assert backend.is_array(np.ones(2)) == on_numpy
    assert (
        not backend.is_array(np.float64(1.0))
        and not backend.is_array([1.0])
        and not backend.is_array(Tensor(1.0))
    )


def test_is_array_refuses_arrays_of_another_device(strict):
    assert not backend.is_array(strict.asarray([1.0], device=strict.Device("CPU_DEVICE")))


def test_to_numpy_is_the_explicit_way_to_the_host():
    t = Tensor([1.0, 2.0], requires_grad=True)
    (t * t).sum().backward()
    for x, expected in [(t, [1.0, 2.0]), (t.data, [1.0, 2.0]), (t.grad, [2.0, 4.0])]:
        host = minivae.to_numpy(x)
        assert isinstance(host, np.ndarray)
        np.testing.assert_array_equal(host, expected)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    assert minivae.to_numpy(np.float32(2.0)).dtype == np.float32


# the point of the stand-in: a device refuses implicit conversion
@pytest.mark.backends("strict", "cupy")
def test_a_device_refuses_implicit_conversion_to_numpy():
    t = Tensor([1.0, 2.0])
    refused = "(Can.t convert array|Can not convert array|Implicit conversion)"  # by version
    with pytest.raises((RuntimeError, TypeError), match=refused):
        np.asarray(t.data)


def test_dtype_names():
    for name in ["float32", "float64"]:
        assert backend.dtype(name) == getattr(backend.xp(), name)
        assert Tensor([1.0], dtype=name).dtype == backend.dtype(name)


# --- seeded random numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda: backend.normal((3, 4), backend.dtype("float32")),
        lambda: backend.uniform((5,), backend.dtype("float64"), -2.0, 3.0),
        lambda: backend.permutation(10),
    ],
)
def test_seed_replays_the_same_numbers(draw):
    backend.seed(7)
    first = minivae.to_numpy(draw())
    later = minivae.to_numpy(draw())
    assert not np.array_equal(later, first)  # the stream moves on
    backend.seed(7)
    np.testing.assert_array_equal(minivae.to_numpy(draw()), first)


@pytest.mark.backends("numpy", "strict")  # NumPy's own stream; CuPy's generator draws another
def test_uniform_is_numpys_uniform_drawn_through_random():
    """uniform() uses only Generator.random (CuPy's Generator has no uniform):
    on NumPy it must give exactly Generator.uniform's numbers, so results are unchanged."""
    backend.seed(3)
    ours = minivae.to_numpy(backend.uniform((1000,), backend.dtype("float64"), -0.3, 0.7))
    np.testing.assert_array_equal(ours, np.random.default_rng(3).uniform(-0.3, 0.7, 1000))


def test_shuffled_range_is_a_uniform_permutation():
    """The shuffle CuPy uses (its Generator has no permutation), checked on NumPy's generator:
    a permutation every time, and each position takes each value equally often."""
    rng = np.random.default_rng(0)
    counts = np.zeros((4, 4))
    for _ in range(4000):
        order = backend.shuffled_range(rng, 4)
        assert sorted(order) == [0, 1, 2, 3]
        counts[np.arange(4), order] += 1
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(1000 * 0.75))  # binomial(4000, 1/4), 4 sd


def test_draws_have_the_asked_dtype_shape_and_distribution():
    n = 100_000
    for name in ["float32", "float64"]:
        dtype = backend.dtype(name)
        z = backend.normal((n,), dtype)
        u = backend.uniform((n,), dtype, -2.0, 3.0)
        assert z.dtype == dtype and u.dtype == dtype and z.shape == (n,)
        z, u = minivae.to_numpy(z), minivae.to_numpy(u)
        # 5 standard errors: a correct generator fails this about once in 10^6 runs (fixed seed:
        # never)
        assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1) < 5 * np.sqrt(2 / n)
        assert (
            u.min() >= -2.0 and u.max() <= 3.0 and abs(u.mean() - 0.5) < 5 * (5 / np.sqrt(12 * n))
        )
    p = backend.permutation(10)
    assert isinstance(p, np.ndarray) and sorted(p.tolist()) == list(range(10))


PAGE_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "minivae":
    import minivae  # noqa: F401 (what it does to malloc at import is what is measured)
def step():  # three 16 MB temporaries, freed when it returns, as a training step makes them
    a = np.ones((2_000_000,)); b = a * 2; c = b + a
    return float(c[0])
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.backends("numpy")
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="minivae tunes glibc's malloc only",
)
def test_freed_memory_is_kept_for_the_next_step():
    """Importing minivae keeps freed memory: repeated steps page-fault nothing in again."""

    def faults_per_step(who, **settings):
        # without the environment's own malloc settings, which would decide glibc's default
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
        env.pop("MINIVAE_KEEP_FREED_MEMORY", None)
        env.update(settings)
        run = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS, who],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return float(run.stdout)

    default = faults_per_step("numpy alone")  # glibc's default: ~1,500 here (48 MB anew)
    assert faults_per_step("minivae") < 50
    # the opt-out leaves glibc's default as it is
    assert faults_per_step("minivae", MINIVAE_KEEP_FREED_MEMORY="0") >= 0.5 * default
