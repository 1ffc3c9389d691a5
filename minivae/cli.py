"""What the example scripts share: flags that refuse a bad value by name, and one way to fail.

The rule (docs/errors.md): a script that cannot do what it was asked prints ONE line on stderr,
``<script>: error: <what is wrong>``, and exits with 2 for a bad flag (including a path that
cannot be used) or 1 for a failure while running. No traceback, unless ``--debug`` is given or
MINIVAE_DEBUG=1 is set.

    p = cli.Parser(prog="frey.py", description=...)
    p.add_argument("--lr", type=cli.positive_float)
    sys.exit(cli.run(main, "frey.py"))
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import zipfile

import numpy as np

from . import train
from .backend import BackendError
from .datasets import DataError
from .files import remove_stale_temporaries
from .graph import GraphvizNotFound

MAX_SEED = 2**32 - 1  # the seeds every backend's generator takes


class UsageError(Exception):
    """A flag (or a path given by a flag) the script cannot run with: exit status 2."""


class RunError(Exception):
    """A run that cannot go on (training diverged before its first epoch ended): exit status 1."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (exit 2), with --debug added."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug",
            action="store_true",
            help="on an error, show the full traceback (as MINIVAE_DEBUG=1 does)",
        )

    def error(self, message):  # the same line cli.run prints for a UsageError
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --- flag types: each refuses a bad value with a message that argparse prefixes with the flag ---


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int):
    """A flag type: an integer >= low."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int_at_least({low})"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def seed(text: str) -> int:
    """A flag type: a seed, an integer from 0 to 2**32 - 1."""
    value = _number(text, int)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**32 - 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A flag type: a finite number > 0 (NaN and inf refused)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """A flag type: a finite number >= 0."""
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def fraction(text: str) -> float:
    """A flag type: a finite number in [0, 1)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


# --- paths -----------------------------------------------------------------------------------


def output_folder(path, flag: str = "--out") -> str:
    """Make sure the folder `path` exists and takes new files, before any work is done; remove the
    temporary files that a killed run left there. A folder that cannot be used is a UsageError."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # what atomic_write will do: create a file there
            pass
    except FileExistsError:
        raise UsageError(f"{flag} {path}: is a file, not a folder") from None
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write there ({e.strerror})") from None
    remove_stale_temporaries(path)
    return path


def load_checkpoint(path, model, optimizer):
    """train.load_checkpoint for --resume: a file that is not a whole checkpoint, or whose
    numbers are not all finite, is refused with a ValueError naming it and what is wrong."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        start = f.read(4)
    if start != b"PK\x03\x04":  # every .npz is a zip archive
        what = (
            "is empty"
            if not start
            else f"is not a checkpoint (an .npz archive); it starts with {start!r}"
        )
        raise ValueError(f"--resume: {path} {what}")
    try:
        history = train.load_checkpoint(path, model, optimizer)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError) as e:
        why = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
        why = why.removeprefix(f"{path}: ")  # (the library's message names the file too)
        raise ValueError(f"--resume: {path} is damaged or incomplete ({why})") from e
    metrics = {k: np.asarray(v, dtype=float) for k, v in history.metrics.items()}
    for part, state in (
        ("weights", model.state_dict()),
        ("optimiser state", optimizer.state_dict()),
        ("best weights", history.best_weights or {}),
        ("history", metrics),
    ):
        for name, value in state.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(
                    f"--resume: {path} holds NaN or infinite {part} ({name!r}); "
                    "it cannot continue a run"
                )
    return history


# --- running a script ------------------------------------------------------------------------


# the failures a script reports as they are: their messages say what is wrong
EXPECTED = (UsageError, RunError, DataError, BackendError, GraphvizNotFound, OSError, ValueError)


def describe(e: BaseException) -> str:
    """An exception as one line; one of a kind the scripts do not expect says its kind and how to
    see where it came from."""
    if isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = str(e)
    if not isinstance(e, EXPECTED):
        text = f"{type(e).__name__}: {text} (--debug shows the traceback)"
    return " ".join(text.split())


def run(main, prog: str, argv=None) -> int:
    """main(argv) under the rule above; returns the exit status for sys.exit."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MINIVAE_DEBUG") == "1"
    try:
        if debug:
            main(argv)
        else:  # a blow-up is reported once, by fit (then here), not by NumPy per operation
            with np.errstate(all="ignore"):
                main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"{prog}: error: {describe(e)}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    return 0
