"""Bad input and faults through the three example scripts: one line, the right exit status, nothing
half-written (docs/errors.md). Most cases run the script's main() under cli.run in this process (the
same code as the command line, without an interpreter start each); a few run it as a subprocess, to
see what a user sees, and the kill -9 tests must. The cases are those of tests/fault_cases.py."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import fault_cases as fc
import numpy as np
import pytest

from minivae import cli, files, train

pytestmark = pytest.mark.backends("numpy")  # the scripts pick their own backend


def load(name):
    spec = importlib.util.spec_from_file_location(f"faults_{name}", fc.SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPTS = {name: load(name) for name in fc.SCRIPTS}
PROG = {name: f"{name}.py" for name in fc.SCRIPTS}
F, A, E = fc.F, fc.A, fc.E


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("MINIVAE_DATA", data_dir)
    monkeypatch.delenv("MINIVAE_DEBUG", raising=False)


def run_here(script, *args, quick=True):
    """(exit status, stderr lines) of `script` run in this process as from the command line."""
    argv = [*(fc.QUICK[script] if quick else []), *map(str, args)]
    try:
        return cli.run(SCRIPTS[script].main, PROG[script], argv)
    except SystemExit as e:  # argparse's errors exit at once, with status 2
        return e.code


def one_line(capsys, script, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{PROG[script]}: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


# --- flags: every bad number refused by name, exit 2 ------------------------------------------


@pytest.mark.parametrize(
    "script, args, words",
    [
        (F, ["--seed", "-1"], ["--seed", "-1"]),
        (A, ["--seed", "-1"], ["--seed"]),
        (E, ["--seed", "-1"], ["--seed"]),
        (E, ["--seed", str(2**32)], ["--seed", "4294967296"]),
        (E, ["--seed", "1.5"], ["--seed", "integer"]),
        (F, ["--hidden", "0"], ["--hidden"]),
        (F, ["--latent-dim", "0"], ["--latent-dim"]),
        (F, ["--samples", "0"], ["--samples"]),
        (F, ["--log-px-samples", "-2"], ["--log-px-samples"]),
        (F, ["--patience", "-1"], ["--patience"]),
        (F, ["--limit", "9"], ["--limit", "at least 10"]),
        (F, ["--batch-size", "2.5"], ["--batch-size", "integer"]),
        (A, ["--batch-size", "0"], ["--batch-size"]),
        (A, ["--latent-dim", "1"], ["--latent-dim"]),
        (A, ["--limit", "0"], ["--limit"]),
        (A, ["--epochs", "-3"], ["--epochs"]),
        *[(F, [f"--lr={v}"], ["--lr", v]) for v in ("nan", "inf", "-inf", "0", "-0.001")],
        *[(A, [f"--lr={v}"], ["--lr", v]) for v in ("nan", "inf")],
        *[
            (A, [f"{flag}={v}"], [flag, v])
            for flag in ("--noise-std", "--mask-fraction")
            for v in ("nan", "inf", "-0.5")
        ],
        (A, ["--mask-fraction", "1"], ["--mask-fraction"]),
    ],
)
def test_a_bad_number_is_refused_by_flag_name(capsys, tmp_path, script, args, words):
    assert run_here(script, *args, "--out", tmp_path / "out") == 2
    one_line(capsys, script, *words)
    assert not (tmp_path / "out").exists()  # refused before anything was made


# --- --out: a file, a folder under a file, a read-only folder: exit 2, nothing written ---------


@pytest.mark.parametrize("script", [F, A, E])
@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_unusable_out_is_refused_before_any_work(capsys, tmp_path, script, where):
    out = tmp_path / "out"
    if where == "read-only":
        out.mkdir()
        if not fc.read_only(out):
            pytest.skip("no read-only bind mount here (needs root); root ignores permission bits")
    else:
        fc.a_file(out)
    try:
        target = out / "sub" if where == "under a file" else out
        start = time.perf_counter()
        assert run_here(script, "--out", target) == 2
        assert time.perf_counter() - start < 5  # before the data, the models and the epochs
        one_line(capsys, script, "--out", str(target))
        if where == "read-only":
            assert list(out.iterdir()) == []
        else:
            assert out.read_text() == "I am a file, not a folder\n"
    finally:
        if where == "read-only":
            subprocess.run(["umount", str(out)], check=True)


# --- a full disk while writing: exit 1, the old file kept whole, no temporary left ---------------


def full_disk(monkeypatch, name, after=0):
    """os.replace fails with ENOSPC for the `after`+1-th and later writes of a file `name`."""
    replace, seen = os.replace, []

    def failing(src, dst):
        if os.path.basename(dst) == name:
            seen.append(dst)
            if len(seen) > after:
                raise OSError(28, "No space left on device", src)
        return replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing)


def test_a_full_disk_keeps_the_last_checkpoint_and_resumes(capsys, tmp_path, monkeypatch):
    full_disk(
        monkeypatch, "checkpoint.npz", after=1
    )  # epoch 1's checkpoint is written, epoch 2's fails
    assert run_here(F, "--epochs", "3", "--out", tmp_path) == 1
    one_line(capsys, F, str(tmp_path / "checkpoint.npz"), "No space left on device")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "metrics.json").exists()
    monkeypatch.undo()
    assert (
        run_here(F, "--epochs", "2", "--resume", "--out", tmp_path) == 0
    )  # from epoch 1's checkpoint
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("script, name", [(A, "metrics.json"), (E, "estimators.png")])
def test_a_full_disk_is_one_line_in_every_script(capsys, tmp_path, monkeypatch, script, name):
    full_disk(monkeypatch, name)
    assert run_here(script, "--out", tmp_path) == 1
    one_line(capsys, script, str(tmp_path / name), "No space left on device")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / name).exists()


# --- --resume from a damaged checkpoint or recipe: exit 1, the file named ----------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch frey run, to copy and damage (MINIVAE_DATA as the data_dir fixture reads it)."""
    if not os.path.isdir(os.environ.get("MINIVAE_DATA", "")):
        pytest.skip("MINIVAE_DATA names no folder of datasets")
    out = tmp_path_factory.mktemp("frey_run")
    done = fc.run(F, [*fc.QUICK[F], "--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize(
    "damage, file, words",
    [
        (fc.truncated, "checkpoint.npz", ["damaged or incomplete"]),
        (fc.empty, "checkpoint.npz", ["is empty"]),
        (fc.bit_flipped, "checkpoint.npz", ["damaged or incomplete"]),
        (fc.a_text_file, "checkpoint.npz", ["is not a checkpoint"]),
        (fc.without_history, "checkpoint.npz", ["history"]),
        (fc.nan_weights, "checkpoint.npz", ["NaN or infinite values", "refusing to load"]),
        (fc.missing, "recipe.json", ["is missing"]),
        (fc.malformed, "recipe.json", ["invalid JSON"]),
        (fc.not_an_object, "recipe.json", ["not an object"]),
        (fc.older, "recipe.json", ["lacks limit", "older frey.py"]),
    ],
)
def test_resume_refuses_a_damaged_run_naming_the_file(
    capsys, tmp_path, finished_run, damage, file, words
):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    damage(out / file)
    assert run_here(F, "--epochs", "2", "--resume", "--out", out) == 1
    one_line(capsys, F, str(out / file), *words)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1  # the old results stand


def test_resume_under_other_flags_is_a_flag_error(capsys, tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    assert run_here(F, "--epochs", "2", "--resume", "--hidden", "9", "--out", out) == 2
    one_line(capsys, F, "has hidden = 8, not 9")


def test_a_new_run_takes_the_old_runs_checkpoint_with_it(capsys, tmp_path, finished_run):
    # else a new run that fails before its first checkpoint leaves its recipe beside the old run's
    # checkpoint, and --resume would continue the old run as if it were the new one
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    assert run_here(F, "--lr", "1e30", "--out", out) == 1
    assert not (out / "checkpoint.npz").exists()
    capsys.readouterr()
    assert run_here(F, "--lr", "1e30", "--resume", "--out", out) == 2
    one_line(capsys, F, "--resume: no checkpoint at")


# --- the smallest data the flags allow ---------------------------------------------------------


@pytest.mark.parametrize(
    "script, args", [(F, ["--limit", "10"]), (A, ["--limit", "1", "--batch-size", "64"])]
)
def test_the_smallest_data_the_flags_allow_runs_to_finite_results(tmp_path, script, args):
    assert run_here(script, *args, "--out", tmp_path) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())  # strict: would refuse NaN
    assert metrics["val_log_px" if script == F else "test_loss"]


# --- NaN in the first epoch -------------------------------------------------------------------


@pytest.mark.parametrize("script", [F, A])
def test_nan_in_the_first_epoch_is_one_line_and_no_results(capsys, tmp_path, script):
    assert run_here(script, "--lr", "1e30", "--out", tmp_path) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(
        f"{PROG[script]}: error: training stopped before its first epoch finished"
    )
    assert "became nan" in err[-1] and "Traceback" not in "".join(err)
    assert len(err) <= 2  # fit's own notice of the stop, then the script's error
    assert not (tmp_path / "metrics.json").exists()


# --- JSON files: never NaN or Infinity ----------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.float64("-inf")])
def test_write_json_refuses_nan_and_infinity_naming_the_key(tmp_path, value):
    with pytest.raises(ValueError, match=r"write_json: .*a\.json: \['loss'\]\[1\] is"):
        files.write_json(tmp_path / "a.json", {"loss": [1.0, value], "name": "x"})
    assert list(tmp_path.iterdir()) == []


def test_every_json_file_of_the_scripts_is_strict_json(tmp_path, finished_run):
    written = [*finished_run.glob("*.json")]
    assert {p.name for p in written} == {"recipe.json", "metrics.json"}
    assert not [p for p in written if fc.holds_nan(p)]


# --- temporaries of a killed run --------------------------------------------------------------


def test_stale_temporaries_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that ran and is gone
    names = [
        f"checkpoint.npz.{dead.pid}.tmp",
        "samples.png.999999999.tmp",
        f"metrics.json.{os.getpid()}.tmp",
        "notes.tmp",
        "checkpoint.npz",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    cli.output_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


@pytest.mark.parametrize("script", [F, E])
def test_a_script_cleans_its_out_folder_of_a_dead_runs_temporaries(tmp_path, script):
    live = subprocess.Popen(["sleep", "60"])  # another process, alive while the script runs
    try:
        (tmp_path / "checkpoint.npz.999999999.tmp").write_bytes(
            b"half"
        )  # no such pid: a dead run's
        (tmp_path / f"samples.png.{live.pid}.tmp").write_bytes(b"being written")
        assert run_here(script, "--out", tmp_path) == 0
        assert [p.name for p in tmp_path.glob("*.tmp")] == [f"samples.png.{live.pid}.tmp"]
    finally:
        live.kill()
        live.wait()


# --- what a user sees: subprocesses -------------------------------------------------------------


@pytest.mark.parametrize("script", [F, A, E])
def test_the_command_line_shows_one_line_and_the_traceback_only_when_asked(tmp_path, script):
    fc.a_file(tmp_path / "out")
    out = ["--out", str(tmp_path / "out")]
    plain = fc.run(script, out)
    assert (
        plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    )
    assert plain.stderr.startswith(f"{PROG[script]}: error: --out ")
    asked = (
        fc.run(script, [*out, "--debug"])
        if script != A
        else fc.run(script, out, env={"MINIVAE_DEBUG": "1"})
    )
    assert asked.returncode != 0 and "Traceback" in asked.stderr and "UsageError" in asked.stderr


# --- kill -9 at random moments, then resume ------------------------------------------------------


def test_killed_runs_never_damage_the_checkpoint_and_resume_completes(tmp_path, data_dir):
    """Three runs killed at seeded random moments after a checkpoint appeared (in training, or in
    the middle of writing the next one); after each, the checkpoint under its real name is whole;
    then a resume finishes the run and clears the killed runs' temporaries. The runs ask for more
    epochs than any machine finishes before the kill; the last resume, two more than were done."""
    checkpoint = tmp_path / "checkpoint.npz"
    args = [*fc.QUICK[F], "--limit", "100", "--hidden", "32", "--out", str(tmp_path)]
    env = {
        **os.environ,
        "MINIVAE_DATA": data_dir,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(fc.ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    rng = np.random.default_rng(11)
    done = 0
    for attempt in range(3):
        command = [
            sys.executable,
            str(fc.SCRIPTS[F]),
            *args,
            "--epochs",
            "100000",
            *(["--resume"] if attempt else []),
        ]
        run = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        deadline = time.monotonic() + 60
        while not checkpoint.exists() or checkpoint.stat().st_mtime_ns == before:
            assert run.poll() is None, run.stderr.read()
            assert time.monotonic() < deadline, "no new checkpoint within 60 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the next epochs and their checkpoint writes
        run.kill()
        run.communicate()
        history = train.load_checkpoint(
            checkpoint, *frey_model(tmp_path)
        )  # whole, wherever it was killed
        assert len(history) > done
        done = len(history)
    resumed = fc.run(
        F, [*args, "--epochs", str(done + 2), "--resume"], env={"MINIVAE_DATA": data_dir}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == done + 2
    assert not list(tmp_path.glob("*.tmp"))


def frey_model(out):
    """A VAE and an Adam shaped as the frey run in `out` (from its recipe.json), to load into."""
    from minivae.nn import Dense, Flatten, Sequential
    from minivae.optim import Adam
    from minivae.vae import VAE

    recipe = json.loads((out / "recipe.json").read_text())
    hidden, latent = recipe["hidden"], recipe["latent_dim"]
    encoder = Sequential([Flatten(), Dense(hidden, "relu"), Dense(2 * latent)])
    encoder.build((28, 20))
    decoder = Sequential([Dense(hidden, "relu"), Dense(2 * 560)])
    decoder.build((latent,))
    vae = VAE(encoder, decoder, likelihood="gaussian")
    return vae, Adam(vae.parameters(), lr=recipe["lr"])


# --- cli.run itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, status, words",
    [
        (cli.UsageError("--x: no"), 2, ["error: --x: no"]),
        (ValueError("bad\nvalue"), 1, ["error: bad value"]),  # one line, whatever the message held
        (
            OSError(28, "No space left on device", "/a/b"),
            1,
            ["error: /a/b: No space left on device"],
        ),
        (
            ZeroDivisionError("division by zero"),
            1,
            ["ZeroDivisionError: division by zero", "--debug"],
        ),
    ],
)
def test_run_reports_every_failure_in_one_line(capsys, monkeypatch, error, status, words):
    def main(argv):
        raise error

    assert cli.run(main, "x.py", []) == status
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and err.startswith("x.py: error: ") and all(w in err for w in words)
    ), err
    with pytest.raises(type(error)):  # asked for the traceback: the exception goes on up
        cli.run(main, "x.py", ["--debug"])
    monkeypatch.setenv("MINIVAE_DEBUG", "1")
    with pytest.raises(type(error)):
        cli.run(main, "x.py", [])


def test_run_reports_an_interrupt_as_one_line(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert cli.run(main, "x.py", []) == 130
    assert capsys.readouterr().err == "x.py: interrupted\n"
