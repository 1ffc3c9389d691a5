"""atomic_write: the file appears whole or not at all."""

import os

import pytest

from minivae import files

pytestmark = pytest.mark.backends("numpy")  # plain file I/O: no arrays of the engine


def test_write_creates_folders_and_leaves_no_temporary_file(tmp_path):
    files.write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert (tmp_path / "sub" / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.npz"]


def test_written_files_have_ordinary_permissions(tmp_path):
    files.write_text(tmp_path / "a.txt", "hi")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
