"""Writing files so that a crash never leaves a half-written one under the real name."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re

_TEMPORARY = re.compile(r"\.(\d+)\.tmp$")  # atomic_write's temporary: <name>.<pid>.tmp


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f:`` writes to a temporary file beside `path` and
    renames it over `path` only when the block succeeds. On any error (even Ctrl-C)
    the temporary file is deleted and whatever was at `path` is left as it was. Only a
    kill -9 can leave the temporary behind; remove_stale_temporaries clears it later."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename == tmp:
            e.filename = path  # the file the caller asked for: the temporary is gone
        raise


def temporary_name(path) -> str:
    """Where atomic_write puts `path` while writing it: beside it (os.replace is atomic only
    within a file system), named after this process, so that a later run can tell whether the
    writer is still alive (remove_stale_temporaries)."""
    return f"{os.fspath(path)}.{os.getpid()}.tmp"


def remove_stale_temporaries(folder) -> list[str]:
    """Delete the temporary files atomic_write left in `folder` when its process was killed.

    A temporary names its writer's process id; only those of processes that no longer run
    are removed (a live one may be writing it). Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(folder)):
        match = _TEMPORARY.search(name)
        if match and not _running(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):  # another run may be cleaning up too
                os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: checks that the process exists, sends nothing
    except (ProcessLookupError, OverflowError):  # no such process; a number no pid can be
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def write_text(path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path, data) -> None:
    """`data` as indented JSON. NaN and infinity are refused, not written: they are not JSON
    (a strict reader rejects the file), and a result that holds one is a result gone wrong."""
    where = _non_finite(data, "")
    if where is not None:
        raise ValueError(
            f"write_json: {os.fspath(path)}: {where[0] or 'the value'} is {where[1]}; "
            "JSON has no NaN or infinity (store None for a missing number)"
        )
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _non_finite(data, where: str):
    """(the key path, the value) of the first NaN or infinity in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return where, data
    if isinstance(data, dict):
        children = data.items()
    elif isinstance(data, (list, tuple)):
        children = enumerate(data)
    else:
        return None
    for key, value in children:
        found = _non_finite(value, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None
