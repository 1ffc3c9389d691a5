"""Datasets for the examples: Frey Face, Fashion-MNIST and MNIST, as uint8 NumPy arrays.

Every loader looks for its files in this order, and uses the first place that has them:

1. the folder named by the environment variable ``MINIVAE_DATA`` (CI points it at a shared copy);
2. the user cache folder: ``$MINIVAE_CACHE`` if set, else ``$XDG_CACHE_HOME/minivae``,
   else ``~/.cache/minivae``;
3. the internet: the original files are downloaded into the cache folder, verified, and kept,
   so this happens once.

A file that is found but damaged (truncated, wrong shape or dtype, bad checksum) raises
``DataError``; it is never skipped silently. Downloads go to a temporary file that is renamed
into place only once complete and verified, so nothing half-written is ever left behind.

This module uses only NumPy and the standard library, so it works on its own: it even reads
the MATLAB file of the Frey faces itself (``read_mat5``) instead of requiring SciPy.
"""

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import shutil
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser/pants",
    "Pullover shirt",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FREY_FILE = "frey_faces.npy"
FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FREY_SHAPE = (1965, 28, 20)
# sha256 of the pixels (the array's bytes in C order), not of the .npy file: the file's
# header depends on the NumPy version that wrote it. The shared frey_faces.npy has these
# pixels, and file sha256 2177ea074dc1d5ce35294c687dfce79ced65db6d7b745d95a2e1757fcfbe41c0.
FREY_SHA256 = "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"


class DataError(Exception):
    """A dataset is missing or damaged; the message says which file, what, and what to do."""


@dataclass(frozen=True)
class _Dataset:
    files: str  # what a data folder should hold, for the error messages
    url: str  # where the originals are published
    npz: str = ""  # idx datasets: the one-file form, arrays x_train, y_train, ...
    folder: str = ""  # idx datasets: sub-folder that may hold the four original .gz files
    sha256: tuple = ()  # idx datasets: published checksums, in the order of _IDX_FILES

    def error(self, where, problem):
        problem = " ".join(str(problem).split())  # exception texts may hold newlines: ONE line
        return DataError(
            f"{where}: {problem}. To get the data, set MINIVAE_DATA to a folder "
            f"holding {self.files}, or connect to the internet so it can be "
            f"downloaded from {self.url}"
        )


_FREY = _Dataset(FREY_FILE, FREY_URL)


# ---------------------------------------------------------------- where to look, how to fetch


def _cache_dir():
    if os.environ.get("MINIVAE_CACHE"):
        return Path(os.environ["MINIVAE_CACHE"]).expanduser()
    # The XDG base-directory convention: caches go in $XDG_CACHE_HOME, by default ~/.cache.
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "minivae"


def _search_folders():
    folders = []
    if os.environ.get("MINIVAE_DATA"):
        data = Path(os.environ["MINIVAE_DATA"]).expanduser()
        if not data.is_dir():  # a typo should not silently turn into a download
            raise DataError(
                f"MINIVAE_DATA={os.environ['MINIVAE_DATA']} is not a folder; "
                "point it at the folder holding the datasets, or unset it"
            )
        folders.append(data)
    return folders + [_cache_dir()]


@contextlib.contextmanager
def _atomic_file(dest):
    """Yield a temporary path beside dest; it becomes dest only if the block succeeds.

    os.replace is atomic within a folder, so no reader ever sees a half-written file, and the
    temporary file is deleted whatever goes wrong (a bad checksum, no network, even Ctrl-C).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DataError(
            f"cannot write into {dest.parent} ({e}); set MINIVAE_CACHE to a writable folder"
        ) from e
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a cache can be shared
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download(url, tmp, spec):
    """Stream url into the file tmp; if that fails, say what was looked for and where."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        where = " or ".join(str(p) for p in _search_folders())
        raise spec.error(spec.files, f"not found in {where}, and downloading {url} failed ({e})")


# ---------------------------------------------------------------- Frey faces


def load_frey_faces():
    """The 1965 Frey faces: uint8 array (1965, 28, 20), values 8..238, in the original order."""
    for folder in _search_folders():
        path = folder / FREY_FILE
        if path.is_file():
            try:
                faces = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise _FREY.error(path, f"cannot read it as a .npy file ({e})") from e
            return _check_frey(faces, path)
    # Not found: fetch the original .mat and convert it, all in one temporary file.
    with _atomic_file(_cache_dir() / FREY_FILE) as tmp:
        _download(FREY_URL, tmp, _FREY)
        try:
            ff = read_mat5(tmp.read_bytes())["ff"]
            # ff is (560, 1965): one face per column, its 28 x 20 pixels in row-major order.
            faces = np.ascontiguousarray(ff.T).reshape(-1, 28, 20)
        except (ValueError, KeyError) as e:
            raise _FREY.error(FREY_URL, f"cannot read variable ff ({e})") from e
        _check_frey(faces, FREY_URL)
        with open(tmp, "wb") as f:  # overwrite the .mat with the converted array
            np.save(f, faces)
    return faces


def _check_frey(faces, where):
    if not isinstance(faces, np.ndarray):  # np.load gives an NpzFile for a misnamed .npz
        raise _FREY.error(where, "this is not a .npy file")
    if faces.dtype != np.uint8 or faces.shape != FREY_SHAPE:
        raise _FREY.error(
            where, f"expected a uint8 array of shape {FREY_SHAPE}, got {faces.dtype} {faces.shape}"
        )
    if hashlib.sha256(np.ascontiguousarray(faces).tobytes()).hexdigest() != FREY_SHA256:
        raise _FREY.error(where, "the pixels' sha256 checksum is wrong (damaged or other data)")
    return faces


# ---------------------------------------------------------------- MATLAB v5 files

_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_TYPES = {
    1: "i1",
    2: "u1",
    3: "i2",
    4: "u2",
    5: "i4",
    6: "u4",
    7: "f4",
    9: "f8",
    12: "i8",
    13: "u8",
}  # how the numbers are stored in the file
_MX_CLASSES = {
    6: "f8",
    7: "f4",
    8: "i1",
    9: "u1",
    10: "i2",
    11: "u2",
    12: "i4",
    13: "u4",
    14: "i8",
    15: "u8",
}  # the array's own type (MATLAB may store it in a smaller one)


def read_mat5(data):
    """The real numeric matrices of a MATLAB v5 .mat file (given as bytes), by variable name.

    Handles both byte orders and zlib-compressed variables; other variables (text, cells,
    structs, sparse) are skipped. Raises ValueError for anything malformed.
    """
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])  # 'MI' written as a 16-bit number
    if order is None or data[124:126] != struct.pack(order + "H", 0x0100):  # v7.3 has 0x0200
        raise ValueError("not a MATLAB v5 .mat file (v4 and v7.3 files are not supported)")
    arrays, pos = {}, 128
    while pos < len(data):
        kind, body, pos = _mat5_element(data, pos, order)
        if kind == _MI_COMPRESSED:  # the body is one zlib-compressed element
            try:
                body = zlib.decompress(body)
            except zlib.error as e:
                raise ValueError(f"corrupt compressed variable ({e})") from e
            kind, body, _ = _mat5_element(body, 0, order)
        if kind == _MI_MATRIX:
            name, array = _mat5_matrix(body, order)
            if array is not None:
                arrays[name] = array
    return arrays


def _mat5_element(data, pos, order):
    """The element at pos: (type, body bytes, where the next element starts)."""
    if pos + 8 > len(data):
        raise ValueError(f"truncated at byte {pos}")
    kind, size = struct.unpack_from(order + "II", data, pos)
    if kind >> 16:  # a "small element": size and type share 4 bytes, the body the next 4
        kind, size = kind & 0xFFFF, kind >> 16
        return kind, data[pos + 4 : pos + 4 + size], pos + 8
    start, end = pos + 8, pos + 8 + size
    if end > len(data):
        raise ValueError(f"truncated: an element of {size} bytes at byte {pos}")
    padded = end if kind == _MI_COMPRESSED else start + -(-size // 8) * 8  # 8-byte alignment
    return kind, data[start:end], padded


def _mat5_matrix(body, order):
    """(name, array) of a miMATRIX body; array is None for variables we do not read."""
    _, flags, pos = _mat5_element(body, 0, order)
    _, dims, pos = _mat5_element(body, pos, order)
    _, name, pos = _mat5_element(body, pos, order)
    if len(flags) < 4:
        raise ValueError("truncated array flags")
    name, flags = name.decode("ascii"), struct.unpack_from(order + "I", flags)[0]
    if flags & 0xFF not in _MX_CLASSES:
        return name, None
    if flags & 0x800:
        raise ValueError(f"variable {name} is complex, which is not supported")
    kind, values, _ = _mat5_element(body, pos, order)
    if kind not in _MI_TYPES:
        raise ValueError(f"variable {name} has unknown storage type {kind}")
    shape = tuple(int(d) for d in np.frombuffer(dims, order + "i4"))
    values = np.frombuffer(values, order + _MI_TYPES[kind])
    if values.size != np.prod(shape):
        raise ValueError(f"variable {name} has {values.size} values for shape {shape}")
    # MATLAB stores arrays column by column (Fortran order).
    return name, values.astype(_MX_CLASSES[flags & 0xFF]).reshape(shape, order="F")


# ---------------------------------------------------------------- Fashion-MNIST and MNIST

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_FASHION = _Dataset(
    "fashion_mnist.npz or fashion-mnist/*-ubyte.gz",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "fashion_mnist.npz",
    "fashion-mnist",
    (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
)
_MNIST = _Dataset(
    "mnist.npz or mnist/*-ubyte.gz",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "mnist.npz",
    "mnist",
    (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
)


def load_fashion_mnist():
    """Fashion-MNIST: (x_train, y_train), (x_test, y_test), uint8, images 28 x 28.

    Labels index FASHION_MNIST_CLASSES."""
    return _load_idx_dataset(_FASHION)


def load_mnist():
    """MNIST digits: (x_train, y_train), (x_test, y_test), uint8, images 28 x 28."""
    return _load_idx_dataset(_MNIST)


def _load_idx_dataset(spec):
    for folder in _search_folders():
        if (folder / spec.npz).is_file():
            return _pairs(_read_npz(folder / spec.npz, spec))
        for place in (folder, folder / spec.folder):
            if all((place / name).is_file() for name in _IDX_FILES.values()):
                return _pairs(
                    {key: _read_idx_gz(place / name, key, spec) for key, name in _IDX_FILES.items()}
                )
    target = _cache_dir() / spec.folder
    for name, sha256 in zip(_IDX_FILES.values(), spec.sha256):
        if not (target / name).is_file():  # files kept from an interrupted earlier run are reused
            with _atomic_file(target / name) as tmp:
                _download(spec.url + name, tmp, spec)
                if hashlib.sha256(tmp.read_bytes()).hexdigest() != sha256:
                    raise spec.error(spec.url + name, "the downloaded file's sha256 is wrong")
    return _load_idx_dataset(spec)  # now it is found in the cache


def _pairs(arrays):
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_npz(path, spec):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _IDX_FILES}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise spec.error(path, f"cannot read arrays {', '.join(_IDX_FILES)} ({e!r})") from e
    return {key: _check_array(array, key, path, spec) for key, array in arrays.items()}


def _read_idx_gz(path, key, spec):
    """Read an idx file: bytes 0, 0, a type code, the number of dimensions, each dimension
    as a big-endian uint32, then the values in C order."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise spec.error(path, f"corrupt or truncated gzip file ({e})") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise spec.error(path, f"not an idx file (magic number {data[:4].hex()})")
    start, dtype = 4 + 4 * data[3], np.dtype(_IDX_TYPES[data[2]])
    shape = struct.unpack(f">{data[3]}I", data[4:start]) if len(data) >= start else ()
    if len(data) < start or len(data) != start + int(np.prod(shape)) * dtype.itemsize:
        raise spec.error(
            path, f"truncated or over-long idx data: {len(data)} bytes for shape {shape}"
        )
    array = np.frombuffer(data, dtype, offset=start).reshape(shape)
    return _check_array(array.astype(dtype.newbyteorder("=")), key, path, spec)  # a native copy


def _check_array(array, key, path, spec):
    if array.dtype != np.uint8 or array.shape != _SHAPES[key]:
        raise spec.error(
            path, f"{key} should be uint8 of shape {_SHAPES[key]}, got {array.dtype} {array.shape}"
        )
    if key[0] == "y" and array.max() > 9:
        raise spec.error(path, f"{key} holds labels above 9")
    return array


# ---------------------------------------------------------------- splitting


def split_train_val(x, val_fraction=0.1, seed=0):
    """Shuffle x's first axis with a seeded permutation; return (train, val).

    The validation part has ceil(len(x) * val_fraction) items, as scikit-learn's
    train_test_split(test_size=0.1) in the lecture: 197 of the 1965 Frey faces, 1768 to train."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = math.ceil(len(x) * val_fraction)
    return x[order[n_val:]], x[order[:n_val]]
