"""examples/mnist.py end to end: short runs on a few hundred images (both objectives, two
stochastic layers, conditional, Fashion-MNIST), and its one-line errors."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist.py"
QUICK = [
    "--limit",
    "300",
    "--test-limit",
    "40",
    "--test-samples",
    "20",
    "--test-chunk",
    "7",
    "--batch-size",
    "20",
    "--quiet",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
script = pytest.mark.backends("numpy")  # the script picks its own backend (--backend)


def run_mnist(*args, data_dir, **env):
    env = {
        **os.environ,
        "MINIVAE_DATA": data_dir,
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=300
    )


def read_history(folder):
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


RUNS = {
    "vae": (["--objective", "vae"], ["collapse.png"], "active_units"),
    "iwae": (["--objective", "iwae", "-k", "3"], ["collapse.png"], "active_units"),
    "two-layers": (["--layers", "2", "--objective", "iwae", "-k", "2"], [], "active_units_z2"),
    "conditional": (
        ["--conditional", "--kl-warmup", "2"],
        ["collapse.png", "relabel.png"],
        "active_units",
    ),
    "fashion": (
        ["--dataset", "fashion", "--beta", "0.5", "--binarization", "static"],
        [],
        "active_units",
    ),
}


@script
@pytest.mark.parametrize("name", list(RUNS))
def test_short_run_writes_every_output_and_the_elbo_rises(name, data_dir, tmp_path):
    flags, extra, units = RUNS[name]
    done = run_mnist(*QUICK, "--epochs", "3", *flags, "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    history = read_history(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert history["epoch"] == [1, 2, 3] and metrics["epochs"] == 3
    assert history["neg_elbo"][-1] < history["neg_elbo"][0] - 20  # nats per image
    assert history["loss"][-1] < history["loss"][0]
    # the reported -ELBO is the true one: nll + kl, whatever weight trained
    for ne, nll, kl in zip(history["neg_elbo"], history["nll"], history["kl"]):
        assert ne == pytest.approx(nll + kl, rel=1e-6)
    assert units in history and 0 <= metrics[units] <= 100
    assert metrics["test_images"] == 40 and metrics["test_samples"] == 20
    assert (
        math.isfinite(metrics["test_nll"])
        and 0 < metrics["test_nll"] < metrics["test_neg_elbo"] + 1e-3
    )
    for figure in ["learning_curves.png", "samples.png", "reconstructions.png", *extra]:
        assert (tmp_path / figure).read_bytes()[:8] == PNG_MAGIC, figure
    if name == "conditional":
        assert history["beta"] == [0.0, 0.5, 1.0]  # the warm-up, over 2 epochs
    if name == "fashion":
        assert set(history["beta"]) == {0.5} and metrics["flags"]["dataset"] == "fashion"
        assert history["loss"][0] < history["neg_elbo"][0]  # half the KL trains


@script
def test_burda_schedule_stages(data_dir, tmp_path):
    done = run_mnist(*QUICK, "--stages", "2", "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["stages"] == 2  # 3^0 + 3^1
    assert len(metrics["history_kl_per_dim"]) == 4 and len(metrics["kl_per_dim"]) == 50


@script
@pytest.mark.parametrize(
    "flags", [["--conditional", "--objective", "iwae", "-k", "2"], ["--layers", "2"]]
)
def test_strict_backend_runs(flags, data_dir, tmp_path):
    done = run_mnist(
        *QUICK,
        "--epochs",
        "1",
        *flags,
        "--backend",
        "strict",
        "--out",
        str(tmp_path),
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr


@script
@pytest.mark.parametrize(
    "args, expected",
    [
        (["-k", "0"], "-k must be at least 1"),
        (["--objective", "elbo"], "invalid choice"),
        (["--beta", "-1"], "--beta must be 0 or more"),
        (["--beta", "nan"], "--beta must be 0 or more"),
        (["--kl-warmup", "-2"], "--kl-warmup must be 0 or more"),
        (["--conditional", "--layers", "2"], "--conditional works with one stochastic layer"),
        (["--test-limit", "1"], "--test-limit must be at least 2"),
        (["--adam-eps", "0"], "--adam-eps must be positive"),
        (["--layers", "3"], "invalid choice"),
    ],
)
def test_bad_flags_give_one_line_errors(args, expected, data_dir, tmp_path):
    done = run_mnist(*args, "--out", str(tmp_path), data_dir=data_dir)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "metrics.json").exists()


@script
def test_unwritable_out_fails_before_training(data_dir, tmp_path):
    (tmp_path / "file").write_text("")
    done = run_mnist(
        *QUICK, "--epochs", "1", "--out", str(tmp_path / "file" / "sub"), data_dir=data_dir
    )
    assert done.returncode == 1 and done.stderr.startswith("mnist.py: error:"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@script
def test_missing_data_gives_one_line_error(tmp_path):
    done = run_mnist("--out", str(tmp_path / "out"), data_dir=str(tmp_path / "nowhere"))
    assert done.returncode == 1 and done.stderr.startswith("mnist.py: error: MINIVAE_DATA=")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
