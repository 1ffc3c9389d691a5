"""benchmarks/gpu_check.py without a GPU: it stops at its first GPU step and says so; and,
with the GPU step faked and tiny stand-in steps, it records times, numbers, failures,
time-outs, the suite's failures and the GPU goals in its report."""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

pytestmark = pytest.mark.backends("numpy")  # the check chooses its own backends


def test_without_cupy_it_stops_at_the_first_gpu_step(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises, as where it is absent
    monkeypatch.setenv("CUPY_CACHE_DIR", "unchanged")  # the check sets it; restored afterwards
    monkeypatch.setattr(gpu_check, "STEPS", [("never", "-c pass", 10, None)])  # must not run
    assert gpu_check.main([str(tmp_path / "out")]) == gpu_check.NO_GPU == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "gpu_check: no GPU: backend 'cupy' needs CuPy, which is not installed; install it with"
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "no GPU" and "pip install minivae[gpu]" in report["message"]
    assert report["steps"] == [] and report["versions"]["numpy"]  # nothing ran after the GPU step
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# GPU check: no GPU\n") and report["message"] in md


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_the_command_exits_3_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpu_check: no GPU: ")
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "no GPU"


def test_bad_arguments_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv in ([str(tmp_path / "file")], [str(tmp_path), "--budget", "0"]):
        with pytest.raises(SystemExit) as stop:
            gpu_check.main(argv)
        assert stop.value.code == 2
    assert "OUT" in capsys.readouterr().err


def test_steps_are_timed_recorded_and_cut_off(monkeypatch, tmp_path):
    """The GPU step faked; stand-in steps: two benchmarks writing --json, a failure, a step
    that outlives its limit, and a 'suite' of one passing and one failing test."""
    bench = tmp_path / "bench.py"  # writes bench_fashion's --json: seconds per step
    bench.write_text(
        textwrap.dedent("""
        import json, sys
        seconds = {"cupy": {"minivae (cupy)": 0.004, "PyTorch CUDA": 0.002},
                   "numpy": {"minivae (numpy)": 0.030}}[sys.argv[1]]
        json.dump({"seconds_per_step": seconds}, open(sys.argv[-1], "w"))
    """)
    )
    (tmp_path / "fails.py").write_text("raise SystemExit(4)\n")
    (tmp_path / "sleeps.py").write_text("import time\ntime.sleep(30)\n")
    tests = tmp_path / "test_two.py"
    tests.write_text(
        "def test_passes():\n    pass\n\n\ndef test_fails():\n    assert 1 == 2, 'one is not two'\n"
    )
    monkeypatch.setattr(gpu_check, "_choose_cupy", lambda: {"gpu": "a faked GPU"})
    monkeypatch.setattr(gpu_check.Check, "torch_has_cuda", lambda self: True)
    monkeypatch.setattr(
        gpu_check,
        "STEPS",
        [
            ("bench_fashion (cupy)", f"{bench} cupy TORCH --json", 30, None),
            ("bench_fashion (numpy)", f"{bench} numpy --json", 30, None),
            ("broken", f"{tmp_path / 'fails.py'}", 30, None),
            ("slow", f"{tmp_path / 'sleeps.py'}", 1, None),
            ("needs data", f"{tmp_path / 'fails.py'}", 30, "frey"),
            (
                "suite",
                f"-m pytest -o addopts= -v -p no:cacheprovider --junitxml=OUT/logs/s.xml {tests}",
                None,
                None,
                {"MINIVAE_TEST_BACKENDS": "cupy"},
            ),
        ],
    )
    monkeypatch.setattr(gpu_check.Check, "missing_data", lambda self: {"frey": "no frey_faces.npy"})
    monkeypatch.setenv("CUPY_CACHE_DIR", "unchanged")
    out = tmp_path / "out"
    assert gpu_check.main([str(out), "--budget", "100"]) == 1
    report = json.loads((out / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert report["versions"]["gpu"] == "a faked GPU"
    assert steps["bench_fashion (cupy)"]["command"].endswith(
        f"cupy --torch-device cuda --json {out / 'logs' / 'bench_fashion_cupy.json'}"
    )
    assert steps["bench_fashion (numpy)"]["status"] == "passed"
    assert steps["broken"]["status"] == "failed (exit 4)"
    assert steps["slow"]["status"] == "timed out after 1 s" and steps["slow"]["seconds"] < 10
    assert steps["needs data"]["status"] == "skipped: the frey data are missing: no frey_faces.npy"
    suite = steps["suite"]
    assert suite["status"] == "failed (exit 1)"
    assert suite["tests"]["tests"] == 2 and suite["tests"]["failures"] == 1
    assert len(suite["tests"]["failed"]) == 1 and "test_fails" in suite["tests"]["failed"][0]
    assert "one is not two" in suite["tests"]["failed"][0]
    goals = report["goals"]
    assert goals["cnn_epoch_cupy_over_torch_cuda"]["value"] == pytest.approx(2.0)
    assert goals["cnn_epoch_cupy_over_torch_cuda"]["met"] is False  # 2.0 > 1.5
    assert goals["cnn_speedup_cupy_over_numpy"]["value"] == pytest.approx(7.5)
    assert goals["cnn_speedup_cupy_over_numpy"]["met"] is True  # 7.5 >= 5
    assert report["status"] == "failed: broken, slow, suite; skipped: needs data"
    md = (out / "report.md").read_text()
    assert "| CuPy CNN epoch / PyTorch CUDA's | 2.00 | <= 1.5 | False |" in md
    assert "### slow: timed out after 1 s" in md


def test_a_suite_cut_short_is_summarised_from_its_verbose_lines(tmp_path):
    log = tmp_path / "suite.log"
    log.write_text(
        "============ test session starts ============\n"
        "tests/test_a.py::test_one[cupy] PASSED                    [  1%]\n"
        "tests/test_a.py::test_two[cupy] FAILED                    [  2%]\n"
        "tests/test_b.py::test_three[cupy] SKIPPED (no torch)      [  3%]\n"
        "tests/test_b.py::test_four[cupy] "
    )  # killed while it ran
    assert gpu_check._verbose_summary(log) == {
        "cut short": True,
        "tests": 3,
        "failures": 1,
        "errors": 0,
        "skipped": 1,
        "failed": ["tests/test_a.py::test_two[cupy]"],
    }
