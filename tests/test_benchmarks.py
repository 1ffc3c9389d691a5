"""benchmarks/bench_mnist.py at a tiny size, so it stays runnable: it prints its medians and
ratios, writes them to --json, and its PyTorch side estimates the same log p(x). And
benchmarks/profile_step.py, on each of its models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_MNIST = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mnist.py"
TINY = ["--steps", "2", "--repeats", "1", "--images", "8", "--samples", "40", "--chunk", "16"]
script = pytest.mark.backends("numpy")  # the script picks its own backend (--backend)


def run_bench(*args, data_dir):
    env = {**os.environ, "MINIVAE_DATA": data_dir, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(BENCH_MNIST), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@script
@pytest.mark.parametrize("backend_name", ["numpy", "strict"])
def test_bench_mnist_runs_and_writes_its_medians(backend_name, data_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench(*TINY, "--backend", backend_name, "--json", str(out), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    ours = f"minivae ({backend_name})"
    assert results["benchmark"] == "bench_mnist" and results["threads"] == 1
    assert results["seconds_per_step"][ours] > 0
    assert results["seconds_per_log_marginal"][ours] > 0
    assert f"{ours}:" in done.stdout and "s/epoch; log_marginal" in done.stdout


@script
def test_bench_mnist_pytorch_side_estimates_the_same_log_px(data_dir, tmp_path, torch):
    """Both sides start from the same weights and time log_marginal before training: an
    estimator missing a term (log p(z), log q(z|x)) would be off by tens of nats."""
    out = tmp_path / "bench.json"
    done = run_bench(*TINY, "--json", str(out), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    ours, theirs = json.loads(out.read_text())["mean_log_px"].values()
    assert abs(ours - theirs) < 2.0, (ours, theirs)  # nats per image; both near -550
    assert "ratio minivae / PyTorch: epoch" in done.stdout


@script
@pytest.mark.parametrize(
    "model, ops", [("fashion", "conv2d"), ("frey", "dense"), ("mnist", "dense")]
)
def test_profile_step_times_each_phase_and_op(model, ops, data_dir):
    profile = BENCH_MNIST.parent / "profile_step.py"
    done = subprocess.run(
        [sys.executable, str(profile), model, "--steps", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "MINIVAE_DATA": data_dir},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"{model}: median step" in done.stdout and "optimizer.step" in done.stdout
    assert f"    {ops} " in done.stdout  # a row per op
