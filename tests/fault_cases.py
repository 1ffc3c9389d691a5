"""Bad inputs and faults for the three example scripts, as a user meets them.

    python tests/fault_cases.py > cases.md   # a row per case: exit code, the last stderr line

Each case runs a script in a fresh folder (a subprocess, as a user would); the tests in
tests/test_faults_scripts.py check the same cases. A case is (name, script, setup, args):
setup(folder) prepares the folder and returns extra environment variables. "{out}" in args is
the run's output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    name: ROOT / "examples" / f"{name}.py" for name in ("frey", "fashion_autoencoder", "estimators")
}
QUICK = {
    "frey": ["--limit", "20", "--epochs", "1", "--log-px-samples", "2", "--hidden", "8", "--quiet"],
    "fashion_autoencoder": ["--limit", "16", "--epochs", "1", "--batch-size", "8", "--quiet"],
    "estimators": [],
}

# A fault injected into a script run: sitecustomize is imported at start-up from PYTHONPATH, and
# makes os.replace fail with "no space left" when it would put a file named MINIVAE_FAULT_FULL in
# place (atomic_write's last step), as a full disk fails a write.
_INJECT = """import errno, os
_replace, _full = os.replace, os.environ.get("MINIVAE_FAULT_FULL")
def _failing_replace(src, dst, *a, **kw):
    if _full and os.path.basename(os.fspath(dst)) == _full:
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(src))
    return _replace(src, dst, *a, **kw)
os.replace = _failing_replace
"""


def injection_dir() -> str:
    folder = Path(tempfile.gettempdir()) / "minivae_fault_injection"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(_INJECT)
    return str(folder)


def run(script: str, args, env=None, timeout=300) -> subprocess.CompletedProcess:
    paths = [str(ROOT), injection_dir(), os.environ.get("PYTHONPATH", "")]
    base = {
        k: v for k, v in os.environ.items() if k != "MINIVAE_DEBUG"
    }  # a case asks for it itself
    env = {
        **base,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPTS[script]), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# --- what a case prepares ------------------------------------------------------------------


def nothing(out: Path):
    return {}


def a_file(out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("I am a file, not a folder\n")
    return {}


def full_disk(name):
    def setup(out: Path):
        return {"MINIVAE_FAULT_FULL": name}

    setup.__name__ = f"full_disk({name})"
    return setup


def a_frey_run(out: Path):
    """A finished one-epoch frey run in `out`, to resume."""
    done = run("frey", [*QUICK["frey"], "--out", str(out)])
    assert done.returncode == 0, done.stderr
    return {}


def a_run_replaced_by_a_failed_one(out: Path):
    """A finished frey run in `out`, then a new run there (--lr 1e30) that fails in epoch 1."""
    a_frey_run(out)
    done = run("frey", [*QUICK["frey"], "--lr", "1e30", "--out", str(out)])
    assert done.returncode == 1, done.stderr
    return {}


def checkpoint(damage):
    def setup(out: Path):
        a_frey_run(out)
        damage(out / "checkpoint.npz")
        return {}

    setup.__name__ = damage.__name__
    return setup


def truncated(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path):
    path.write_bytes(b"")


def bit_flipped(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit in the middle of the weights
    path.write_bytes(bytes(data))


def a_text_file(path: Path):
    path.write_text("epoch 1\n")


def without_history(path: Path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "history"}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def nan_weights(path: Path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    first = next(k for k in arrays if k.startswith("model/"))
    arrays[first] = np.full_like(arrays[first], np.nan)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def recipe(change):
    def setup(out: Path):
        a_frey_run(out)
        change(out / "recipe.json")
        return {}

    setup.__name__ = "recipe_" + change.__name__
    return setup


def missing(path: Path):
    path.unlink()


def malformed(path: Path):
    path.write_text('{"latent_dim": 2, ')


def older(path: Path):
    saved = json.loads(path.read_text())
    del saved["limit"]
    path.write_text(json.dumps(saved))


def not_an_object(path: Path):
    path.write_text("[1, 2]\n")


def stale_temporaries(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.npz.999999999.tmp").write_bytes(b"half")  # no such pid: a dead run's
    (out / f"samples.png.{os.getpid()}.tmp").write_bytes(b"live")  # the driver's own: alive
    return {}


READ_ONLY = "read_only"  # set up by the driver with a read-only bind mount (needs root)


# --- the cases -----------------------------------------------------------------------------

F, A, E = "frey", "fashion_autoencoder", "estimators"
CASES = [
    # 10. OSError: --out naming a file, a folder under a file, an unwritable folder, a full disk
    *[(f"--out names a file ({s})", s, a_file, ["--out", "{out}"]) for s in (F, A, E)],
    *[
        (f"--out is a folder under a file ({s})", s, a_file, ["--out", "{out}/sub"])
        for s in (F, A, E)
    ],
    *[(f"--out is read-only ({s})", s, READ_ONLY, ["--out", "{out}"]) for s in (F, A, E)],
    ("disk full writing checkpoint.npz (frey)", F, full_disk("checkpoint.npz"), ["--out", "{out}"]),
    (
        "disk full writing metrics.json (fashion_autoencoder)",
        A,
        full_disk("metrics.json"),
        ["--out", "{out}"],
    ),
    (
        "disk full writing estimators.png (estimators)",
        E,
        full_disk("estimators.png"),
        ["--out", "{out}"],
    ),
    # 11. --resume from damaged checkpoints and recipes
    *[
        (
            f"--resume, checkpoint {d.__name__}",
            F,
            checkpoint(d),
            ["--resume", "--epochs", "2", "--out", "{out}"],
        )
        for d in (truncated, empty, bit_flipped, a_text_file, without_history, nan_weights)
    ],
    *[
        (
            f"--resume, recipe.json {c.__name__}",
            F,
            recipe(c),
            ["--resume", "--epochs", "2", "--out", "{out}"],
        )
        for c in (missing, malformed, not_an_object, older)
    ],
    # 12. NaN in the first epoch
    (
        "--lr 1e30: NaN in the first epoch (fashion_autoencoder)",
        A,
        nothing,
        ["--lr", "1e30", "--out", "{out}"],
    ),
    ("--lr 1e30: NaN in the first epoch (frey)", F, nothing, ["--lr", "1e30", "--out", "{out}"]),
    # 13. --seed -1 and the other integer flags
    *[(f"--seed -1 ({s})", s, nothing, ["--seed", "-1", "--out", "{out}"]) for s in (F, A, E)],
    ("--seed 2**32 (estimators)", E, nothing, ["--seed", str(2**32), "--out", "{out}"]),
    ("--hidden 0 (frey)", F, nothing, ["--hidden", "0", "--out", "{out}"]),
    ("--patience -1 (frey)", F, nothing, ["--patience", "-1", "--out", "{out}"]),
    ("--limit 9 (frey)", F, nothing, ["--limit", "9", "--out", "{out}"]),
    ("--batch-size 0 (fashion_autoencoder)", A, nothing, ["--batch-size", "0", "--out", "{out}"]),
    ("--latent-dim 1 (fashion_autoencoder)", A, nothing, ["--latent-dim", "1", "--out", "{out}"]),
    ("--limit 0 (fashion_autoencoder)", A, nothing, ["--limit", "0", "--out", "{out}"]),
    # 14. NaN and inf in float flags
    ("--lr nan (frey)", F, nothing, ["--lr", "nan", "--out", "{out}"]),
    ("--lr inf (frey)", F, nothing, ["--lr", "inf", "--out", "{out}"]),
    ("--lr nan (fashion_autoencoder)", A, nothing, ["--lr", "nan", "--out", "{out}"]),
    ("--lr inf (fashion_autoencoder)", A, nothing, ["--lr", "inf", "--out", "{out}"]),
    (
        "--noise-std nan (fashion_autoencoder denoising)",
        A,
        nothing,
        ["--variant", "denoising", "--noise-std", "nan", "--out", "{out}"],
    ),
    (
        "--noise-std inf (fashion_autoencoder denoising)",
        A,
        nothing,
        ["--variant", "denoising", "--noise-std", "inf", "--out", "{out}"],
    ),
    (
        "--mask-fraction nan (fashion_autoencoder denoising)",
        A,
        nothing,
        ["--variant", "denoising", "--mask-fraction", "nan", "--out", "{out}"],
    ),
    # a new run over an old one that stops before its first checkpoint: --resume must not mix them
    (
        "a new run (--lr 1e30) that fails over a finished one, then --resume --lr 1e30 (frey)",
        F,
        a_run_replaced_by_a_failed_one,
        ["--resume", "--epochs", "2", "--lr", "1e30", "--out", "{out}"],
    ),
    # the smallest data the flags allow: one validation face, one training and one test image
    (
        "--limit 10: 9 faces to train, 1 to validate (frey)",
        F,
        nothing,
        ["--limit", "10", "--out", "{out}"],
    ),
    (
        "--limit 1 --batch-size 64 (fashion_autoencoder)",
        A,
        nothing,
        ["--limit", "1", "--batch-size", "64", "--out", "{out}"],
    ),
    # 16. stale temporary files of a dead run
    *[
        (f"stale *.<pid>.tmp in --out ({s})", s, stale_temporaries, ["--out", "{out}"])
        for s in (F, A, E)
    ],
    # the rule: a traceback only when asked for
    ("--out names a file, --debug (frey)", F, a_file, ["--debug", "--out", "{out}"]),
    (
        "--out names a file, MINIVAE_DEBUG=1 (fashion_autoencoder)",
        A,
        lambda out: {**a_file(out), "MINIVAE_DEBUG": "1"},
        ["--out", "{out}"],
    ),
]


def read_only(folder: Path) -> bool:
    """Make `folder` read-only with a bind mount (root ignores permission bits); False where that
    cannot be done. Undo it with umount."""
    for command in (
        ["mount", "--bind", str(folder), str(folder)],
        ["mount", "-o", "remount,bind,ro", str(folder)],
    ):
        if subprocess.run(command, capture_output=True, check=False).returncode != 0:
            return False
    return True


def case_args(script, args, out):
    return [*QUICK[script], *(a.replace("{out}", str(out)) for a in args)]


class NonFinite(ValueError):
    pass


def _refuse(constant):
    raise NonFinite(constant)


def holds_nan(path: Path) -> bool:
    """Whether the JSON file holds NaN or Infinity (which JSON does not allow)."""
    try:
        json.loads(path.read_text(), parse_constant=_refuse)
    except NonFinite:
        return True
    except ValueError:
        return False  # not JSON at all: not this check's business
    return False


def outcome(done: subprocess.CompletedProcess, out: Path, seconds: float) -> dict:
    """What the user sees (exit code, the last line on stderr) and what is left in the folder."""
    lines = done.stderr.strip().splitlines()
    left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    bad_json = [p.name for p in (out.glob("*.json") if out.is_dir() else []) if holds_nan(p)]
    return {
        "rc": done.returncode,
        "last": lines[-1] if lines else "",
        "lines": len(lines),
        "traceback": "Traceback" in done.stderr,
        "seconds": seconds,
        "tmp": [n for n in left if n.endswith(".tmp")],
        "bad_json": bad_json,
    }


def run_case(case, folder: Path) -> dict:
    _, script, setup, args = case
    out = folder / "out"
    if setup == READ_ONLY:
        out.mkdir(parents=True)
        if not read_only(out):
            return {
                "rc": None,
                "last": "(skipped: no read-only bind mount here)",
                "lines": 0,
                "traceback": False,
                "seconds": 0.0,
                "tmp": [],
                "bad_json": [],
            }
        try:
            start = time.perf_counter()
            return outcome(
                run(script, case_args(script, args, out)), out, time.perf_counter() - start
            )
        finally:
            subprocess.run(["umount", str(out)], check=True)
    env = setup(out)
    start = time.perf_counter()
    return outcome(run(script, case_args(script, args, out), env), out, time.perf_counter() - start)


def main():
    print("| case | exit | stderr lines | seconds | last line on stderr |")
    print("|---|---:|---:|---:|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            r = run_case(case, Path(folder))
        notes = [
            w
            for w, on in (
                ("traceback", r["traceback"]),
                (f"left {r['tmp']}", r["tmp"]),
                (f"NaN in {r['bad_json']}", r["bad_json"]),
            )
            if on
        ]
        last = r["last"].replace("|", "\\|")
        print(
            f"| {case[0]} | {r['rc']} | {r['lines']} | {r['seconds']:.1f} | `{last[:200]}` "
            f"{'; '.join(notes)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
