"""Tests of minivae.datasets: the real data (when MINIVAE_DATA holds it), damaged files,
downloads served by a fake urlopen, the MATLAB reader, and the train/validation split.

No test touches the network or the user's real cache: the autouse fixture `offline`
points the cache at a temporary folder and makes every download fail unless a test serves one.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import re
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import need

from minivae import datasets
from minivae.datasets import (
    FASHION_MNIST_CLASSES,
    DataError,
    load_fashion_mnist,
    load_frey_faces,
    load_mnist,
    read_mat5,
    split_train_val,
)

REAL_DATA = os.environ.get("MINIVAE_DATA")  # read before any test changes it
REAL_FILES = ["frey_faces.npy", "fashion_mnist.npz", "mnist.npz"] + [
    f"fashion-mnist/{name}" for name in datasets._IDX_FILES.values()
]
FREY_FILE_SHA256 = "2177ea074dc1d5ce35294c687dfce79ced65db6d7b745d95a2e1757fcfbe41c0"  # README

pytestmark = pytest.mark.backends("numpy")  # no arrays of the engine here: one run is enough


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Empty cache in tmp_path, no MINIVAE_DATA, and no network; returns the cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINIVAE_CACHE", str(cache))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    serve(monkeypatch, {})
    return cache


@pytest.fixture
def data_dir():
    """The shared real data. Skipped when absent, except on CI (CI=true), where that fails."""
    folder = Path(REAL_DATA).resolve() if REAL_DATA else None
    missing = (
        REAL_FILES if folder is None else [f for f in REAL_FILES if not (folder / f).is_file()]
    )
    if missing:
        reason = (
            f"real datasets not available (MINIVAE_DATA={REAL_DATA!r}; missing "
            f"{', '.join(missing)}); set MINIVAE_DATA to the shared data folder"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def _scipy_io():
    try:
        import scipy.io
    except ImportError:
        need("SciPy", "it writes the reference MATLAB files: pip install scipy")
    return scipy.io


def serve(monkeypatch, files):
    """Make urlopen serve {url: bytes}; any other url fails as if offline. Returns the log."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url not in files:
            raise urllib.error.URLError("network disabled in tests")
        return io.BytesIO(files[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def files_in(folder):
    """Every file under folder (hidden temporary files included), as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def use_data(monkeypatch, folder):
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MINIVAE_DATA", str(folder))
    return folder


def mat5_bytes(variables, order="<"):
    """A minimal uncompressed MATLAB v5 file, written by hand so both byte orders are tested."""

    def element(kind, body):
        return struct.pack(order + "II", kind, len(body)) + body + b"\0" * (-len(body) % 8)

    header = b"MATLAB 5.0 MAT-file, written by a test".ljust(116) + b"\0" * 8
    out = header + struct.pack(order + "HH", 0x0100, 0x4D49)  # version, then 'MI'
    mi_and_mx = {np.dtype("u1"): (2, 9), np.dtype("f8"): (9, 6)}  # storage type, class
    for name, array in variables.items():
        mi, mx = mi_and_mx[array.dtype]
        out += element(
            14,
            element(6, struct.pack(order + "II", mx, 0))
            + element(5, struct.pack(f"{order}{array.ndim}i", *array.shape))
            + element(1, name.encode())
            + element(mi, array.astype(array.dtype.newbyteorder(order)).tobytes(order="F")),
        )
    return out


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def fake_faces(seed=0):
    return np.random.default_rng(seed).integers(8, 239, datasets.FREY_SHAPE, dtype=np.uint8)


def trust(monkeypatch, faces):
    """Accept `faces` as the Frey data: a synthetic array cannot match the real checksum."""
    digest = hashlib.sha256(faces.tobytes()).hexdigest()
    monkeypatch.setattr(datasets, "FREY_SHA256", digest)


def frey_mat(faces, **extra):
    """The bytes of frey_rawface.mat for these faces: ff is (560, 1965), one face a column."""
    return mat5_bytes({**extra, "ff": faces.reshape(len(faces), -1).T})


# ---------------------------------------------------------------- the real data


def test_frey_real(data_dir, monkeypatch):
    use_data(monkeypatch, data_dir)
    faces = load_frey_faces()
    assert faces.shape == (1965, 28, 20) and faces.dtype == np.uint8
    assert (faces.min(), faces.max()) == (8, 238)
    # The README's sha256 is over the whole .npy file; the loader checks the pixels instead.
    file_bytes = (data_dir / "frey_faces.npy").read_bytes()
    assert hashlib.sha256(file_bytes).hexdigest() == FREY_FILE_SHA256


def test_fashion_mnist_real(data_dir, monkeypatch):
    use_data(monkeypatch, data_dir)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert x_train.mean() == pytest.approx(72.94, abs=0.01)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_mnist_real(data_dir, monkeypatch):
    use_data(monkeypatch, data_dir)
    (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (60000, 28, 28) and y_test.shape == (10000,)
    assert x_train.mean() == pytest.approx(33.32, abs=0.01)


def test_fashion_npz_and_idx_files_are_identical(data_dir, monkeypatch, tmp_path):
    npz = use_data(monkeypatch, tmp_path / "npz")
    (npz / "fashion_mnist.npz").symlink_to(data_dir / "fashion_mnist.npz")
    from_npz = load_fashion_mnist()
    idx = use_data(monkeypatch, tmp_path / "idx")
    (idx / "fashion-mnist").symlink_to(data_dir / "fashion-mnist")  # the sub-folder layout
    from_idx = load_fashion_mnist()
    for a, b in zip(sum(from_npz, ()), sum(from_idx, ())):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_fashion_download_of_the_real_files(data_dir, monkeypatch, offline):
    """Checks the published sha256 sums in the module against the real files, too."""
    spec = datasets._FASHION
    served = {
        spec.url + name: (data_dir / "fashion-mnist" / name).read_bytes()
        for name in datasets._IDX_FILES.values()
    }
    log = serve(monkeypatch, served)
    (x_train, y_train), _ = load_fashion_mnist()
    assert sorted(log) == sorted(served) and x_train.shape == (60000, 28, 28)
    assert files_in(offline) == sorted(f"fashion-mnist/{n}" for n in datasets._IDX_FILES.values())


def test_frey_download_of_the_real_data(data_dir, monkeypatch, offline):
    faces = np.load(data_dir / "frey_faces.npy")
    serve(monkeypatch, {datasets.FREY_URL: frey_mat(faces)})
    assert np.array_equal(load_frey_faces(), faces)  # converted, and its checksum passed
    assert files_in(offline) == ["frey_faces.npy"]


# ---------------------------------------------------------------- where the data is looked for


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"MINIVAE_CACHE": "mine"}, "mine"),
        ({"XDG_CACHE_HOME": "xdg"}, "xdg/minivae"),
        ({"HOME": "home"}, "home/.cache/minivae"),
    ],
)
def test_cache_folder(env, expected, monkeypatch, tmp_path):
    for name in ("MINIVAE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    faces = fake_faces()
    trust(monkeypatch, faces)
    (tmp_path / expected).mkdir(parents=True)
    np.save(tmp_path / expected / "frey_faces.npy", faces)
    assert np.array_equal(load_frey_faces(), faces)


def test_minivae_data_comes_before_the_cache(monkeypatch, tmp_path, offline):
    good, bad = fake_faces(1), fake_faces(2)
    trust(monkeypatch, good)
    np.save(use_data(monkeypatch, tmp_path / "data") / "frey_faces.npy", good)
    offline.mkdir()
    np.save(offline / "frey_faces.npy", bad)
    assert np.array_equal(load_frey_faces(), good)
    trust(monkeypatch, bad)  # now the MINIVAE_DATA copy is "damaged": no silent fallback
    with pytest.raises(DataError, match="data/frey_faces.npy: .*checksum"):
        load_frey_faces()


def test_minivae_data_must_be_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="typo is not a folder"):
        load_frey_faces()


@pytest.mark.parametrize(
    "load, wanted, url",
    [
        (load_frey_faces, "frey_faces.npy", datasets.FREY_URL),
        (load_fashion_mnist, "fashion_mnist.npz", datasets._FASHION.url),
        (load_mnist, "mnist.npz", datasets._MNIST.url),
    ],
    ids=["frey", "fashion", "mnist"],
)
def test_missing_data_offline(load, wanted, url, monkeypatch, tmp_path, offline):
    use_data(monkeypatch, tmp_path / "empty")
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message and wanted in message and url in message
    assert "MINIVAE_DATA" in message and str(offline) in message and "network disabled" in message
    assert files_in(offline) == []


# ---------------------------------------------------------------- Frey: damaged files, downloads


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:5000]), "cannot read it as a .npy"),
        (lambda f: f.write_bytes(b"not numpy"), "cannot read it as a .npy"),
        (lambda f: f.write_bytes(npz_bytes(faces=fake_faces())), "not a .npy file"),
        (lambda f: np.save(f, fake_faces()[:100]), r"\(1965, 28, 20\), got uint8 \(100, 28, 20\)"),
        (lambda f: np.save(f, fake_faces().astype(np.float32)), "uint8 array .* got float32"),
        (lambda f: np.save(f, fake_faces(seed=1)), "checksum"),
    ],
    ids=["truncated", "not-npy", "npz", "wrong-shape", "wrong-dtype", "wrong-pixels"],
)
def test_frey_damaged_file(damage, problem, monkeypatch, tmp_path):
    trust(monkeypatch, fake_faces())
    path = use_data(monkeypatch, tmp_path / "data") / "frey_faces.npy"
    np.save(path, fake_faces())
    damage(path)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: .*{problem}.*MINIVAE_DATA"):
        load_frey_faces()


@pytest.mark.parametrize("order", ["<", ">"])
def test_frey_download_and_convert(order, monkeypatch, offline):
    faces = fake_faces()
    trust(monkeypatch, faces)
    mat = mat5_bytes({"x": np.ones((2, 3)), "ff": faces.reshape(1965, -1).T}, order)
    log = serve(monkeypatch, {datasets.FREY_URL: mat})
    assert np.array_equal(load_frey_faces(), faces)
    assert files_in(offline) == ["frey_faces.npy"]  # the .npy only: no .mat, no temporary
    assert np.array_equal(np.load(offline / "frey_faces.npy"), faces)
    assert np.array_equal(load_frey_faces(), faces) and len(log) == 1  # from the cache now


@pytest.mark.parametrize(
    "served, problem",
    [
        (frey_mat(fake_faces()), "checksum"),  # not trusted: the real checksum cannot match
        (frey_mat(fake_faces()[:100]), r"shape \(1965, 28, 20\)"),
        (frey_mat(fake_faces())[:-1000], "cannot read variable ff .*truncated"),
        (mat5_bytes({"gg": np.ones((2, 2))}), "cannot read variable ff"),
        (b"<html>Moved</html>", "cannot read variable ff .*not a MATLAB v5"),
    ],
    ids=["checksum", "wrong-shape", "truncated", "no-ff", "not-mat"],
)
def test_frey_bad_download_leaves_nothing(served, problem, monkeypatch, offline):
    serve(monkeypatch, {datasets.FREY_URL: served})
    with pytest.raises(DataError, match=problem):
        load_frey_faces()
    assert files_in(offline) == []


# ---------------------------------------------------------------- Fashion-MNIST: small fakes


@pytest.fixture
def mini(monkeypatch):
    """Shrink the expected shapes so tiny fake datasets stand in for the real one."""
    sizes = {"train": 20, "t10k": 10}
    for key, name in datasets._IDX_FILES.items():
        n = sizes[name.split("-")[0]]
        monkeypatch.setitem(datasets._SHAPES, key, (n, 28, 28) if key[0] == "x" else (n,))
    rng = np.random.default_rng(0)
    return {
        key: rng.integers(0, 256 if key[0] == "x" else 10, shape, dtype=np.uint8)
        for key, shape in datasets._SHAPES.items()
    }


def idx_bytes(array, type_code=0x08):
    return (
        bytes([0, 0, type_code, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(array.dtype.newbyteorder(">")).tobytes()
    )


def write_idx_files(folder, arrays, **raw):
    """The four .gz files of `arrays`; raw={key: bytes} replaces a file's content."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in datasets._IDX_FILES.items():
        (folder / name).write_bytes(raw.get(key, gzip.compress(idx_bytes(arrays[key]))))


def test_mini_fashion_both_layouts(mini, monkeypatch, tmp_path):
    for folder in (tmp_path / "flat", tmp_path / "sub" / "fashion-mnist"):
        write_idx_files(folder, mini)
    for data in (tmp_path / "flat", tmp_path / "sub"):
        use_data(monkeypatch, data)
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
        assert np.array_equal(x_train, mini["x_train"]) and np.array_equal(y_test, mini["y_test"])
        assert x_train.flags.writeable and x_train.dtype == np.uint8  # a copy, native order


@pytest.mark.parametrize(
    "key, make, problem",
    [
        ("x_train", lambda a: gzip.compress(idx_bytes(a))[:-30], "corrupt or truncated gzip"),
        ("y_test", lambda a: b"plain text", "corrupt or truncated gzip"),
        ("x_test", lambda a: gzip.compress(b"\x00\x01" + idx_bytes(a)[2:]), "not an idx file"),
        ("y_train", lambda a: gzip.compress(idx_bytes(a)[:-3]), "truncated or over-long"),
        ("x_train", lambda a: gzip.compress(idx_bytes(a) + b"!"), "truncated or over-long"),
        ("x_train", lambda a: gzip.compress(idx_bytes(a)[:10]), "truncated or over-long"),
        (
            "x_test",
            lambda a: gzip.compress(idx_bytes(a[:3])),
            r"shape \(10, 28, 28\), got uint8 \(3",
        ),
        ("y_train", lambda a: gzip.compress(idx_bytes(a.astype(">i4"), 0x0C)), "got int32"),
        ("y_test", lambda a: gzip.compress(idx_bytes(a + 10)), "labels above 9"),
    ],
    ids=[
        "truncated-gz",
        "not-gz",
        "bad-magic",
        "short-data",
        "long-data",
        "short-header",
        "wrong-shape",
        "wrong-dtype",
        "bad-label",
    ],
)
def test_damaged_idx_file(key, make, problem, mini, monkeypatch, tmp_path):
    data = use_data(monkeypatch, tmp_path / "data")
    write_idx_files(data / "fashion-mnist", mini, **{key: make(mini[key])})
    path = data / "fashion-mnist" / datasets._IDX_FILES[key]
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: .*{problem}"):
        load_fashion_mnist()


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda a: a.pop("y_test"), "y_test"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float64)), "got float64"),
        (lambda a: a.update(y_train=np.array([None] * 20)), "pickle"),
    ],
    ids=["missing-array", "wrong-dtype", "pickled"],
)
def test_damaged_npz(change, problem, mini, monkeypatch, tmp_path):
    path = use_data(monkeypatch, tmp_path / "data") / "fashion_mnist.npz"
    change(mini)
    np.savez(path, **mini)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: .*{problem}"):
        load_fashion_mnist()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: cannot read arrays"):
        load_fashion_mnist()


def test_mini_fashion_download(mini, monkeypatch, offline):
    spec = datasets._FASHION
    files = {name: gzip.compress(idx_bytes(mini[key])) for key, name in datasets._IDX_FILES.items()}
    sums = tuple(hashlib.sha256(files[name]).hexdigest() for name in datasets._IDX_FILES.values())
    monkeypatch.setattr(datasets, "_FASHION", dataclasses.replace(spec, sha256=sums))
    # The third file is served damaged: the first two stay (complete and verified), no temporary.
    served = {spec.url + name: data for name, data in files.items()}
    served[spec.url + "t10k-images-idx3-ubyte.gz"] = b"garbage"
    serve(monkeypatch, served)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: the downloaded .* sha256"):
        load_fashion_mnist()
    assert files_in(offline) == [
        "fashion-mnist/train-images-idx3-ubyte.gz",
        "fashion-mnist/train-labels-idx1-ubyte.gz",
    ]
    log = serve(monkeypatch, {spec.url + name: data for name, data in files.items()})
    (x_train, _), (_, y_test) = load_fashion_mnist()
    assert len(log) == 2  # only the missing files were fetched
    assert np.array_equal(x_train, mini["x_train"]) and np.array_equal(y_test, mini["y_test"])


# ---------------------------------------------------------------- the MATLAB reader


@pytest.mark.parametrize("compress", [False, True])
def test_read_mat5_matches_scipy(compress):
    scipy_io = _scipy_io()
    variables = {
        "ff": fake_faces()[:50].reshape(50, -1).T,
        "x": np.linspace(0, 1, 6),
        "cube": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        "text": "skipped",
        "nested": {"a": 1.0},
    }
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, variables, do_compression=compress)
    arrays = read_mat5(buffer.getvalue())
    assert sorted(arrays) == ["cube", "ff", "x"]  # text and struct are skipped
    for name in arrays:
        expected = np.atleast_2d(variables[name])  # MATLAB has no 1-D arrays
        assert arrays[name].dtype == expected.dtype and np.array_equal(arrays[name], expected)
    with pytest.raises(ValueError, match="truncated|corrupt"):
        read_mat5(buffer.getvalue()[:-100])


@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mat5_byte_orders(order):
    variables = {"u": np.arange(12, dtype=np.uint8).reshape(3, 4), "d": np.eye(2) * -1.5}
    data = mat5_bytes(variables, order)
    for name, array in read_mat5(data).items():
        assert np.array_equal(array, variables[name]) and array.dtype == variables[name].dtype
    scipy_io = _scipy_io()  # the hand-written test file is a valid one
    assert np.array_equal(scipy_io.loadmat(io.BytesIO(data))["u"], variables["u"])
    with pytest.raises(ValueError, match="not a MATLAB v5"):
        read_mat5(b"MATLAB 7.3" + bytes(200))


# ---------------------------------------------------------------- split_train_val


def test_split_train_val():
    x = np.arange(1965 * 2).reshape(1965, 2)
    train, val = split_train_val(x)
    assert (len(train), len(val)) == (1768, 197)  # the lecture's split
    assert sorted(np.concatenate([train, val])[:, 0]) == list(range(0, 3930, 2))  # rows intact
    again_train, again_val = split_train_val(x)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, split_train_val(x, seed=1)[1])
    assert len(split_train_val(x, val_fraction=0.5)[1]) == 983
    with pytest.raises(ValueError):
        split_train_val(x, val_fraction=1.0)
