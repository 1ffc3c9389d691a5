"""The first run on a GPU, in one command: is CuPy usable, how fast is it, what breaks.

    python benchmarks/gpu_check.py OUT [--budget 465]

Run it from a checkout (minivae is imported from there; nothing is installed, no network
is needed) on a machine with CuPy (`pip install -e ".[gpu]"`, see the README), the Frey
and Fashion-MNIST files (MINIVAE_DATA; a dataset not found skips the steps that need it)
and, if it is there, PyTorch with CUDA.
In order, each step a subprocess with its own time limit, all within --budget seconds:

1. the versions (Python, NumPy, CuPy, PyTorch, the driver from `nvidia-smi`);
2. choosing the cupy backend, which runs a kernel and a matrix product: without a usable
   GPU the check stops here, with one line on stderr, exit status 3 and a report saying so;
3. the benchmarks with `--backend cupy`, beside PyTorch CUDA where it is installed, and
   bench_fashion.py once more on the CPU (NumPy), for the GPU goals below;
4. examples/frey.py (20 epochs) and one epoch of examples/fashion_autoencoder.py, on cupy;
5. the test suite on cupy (MINIVAE_TEST_BACKENDS=cupy), with what time is left.

OUT receives report.md and report.json (the same numbers, versions and failures; rewritten
after every step, so a run that is cut short still leaves one), logs/ (each step's output)
and cupy-cache/ (CuPy's compiled kernels, CUPY_CACHE_DIR: keep it, and a second run into
the same OUT skips the compiling). Exit status: 0 every step passed, 1 a step failed or ran
out of time, 2 bad arguments, 3 no usable GPU. The GPU goals it reports against:
a CuPy CNN autoencoder epoch at most 1.5x PyTorch CUDA's, and at least 5x faster than
minivae's own on the CPU (both from bench_fashion.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # minivae from this checkout, also when run from elsewhere

from minivae import backend, datasets  # noqa: E402 (the checkout first on the path)
from minivae.files import write_json, write_text  # noqa: E402

NO_GPU = 3
# name, arguments of `python` (TORCH: `--torch-device cuda` where PyTorch has CUDA, OUT: the
# report's folder), seconds at most (None: what is left), the dataset it needs, environment
SUITE = {"MINIVAE_TEST_BACKENDS": "cupy"}
STEPS = [
    (
        "bench_fashion (cupy)",  # the first steps on a GPU compile CuPy's kernels: more time
        "benchmarks/bench_fashion.py --backend cupy TORCH --json",
        90,
        "fashion",
    ),
    ("bench_fashion (numpy)", "benchmarks/bench_fashion.py --backend numpy --json", 45, "fashion"),
    ("bench_cnn (cupy)", "benchmarks/bench_cnn.py --backend cupy TORCH --json", 45, None),
    (
        "bench_frey (cupy)",
        "benchmarks/bench_frey.py --backend cupy --epochs 10 TORCH --json",
        45,
        "frey",
    ),
    (
        "examples/frey.py (cupy)",
        "examples/frey.py --backend cupy --epochs 20 --log-px-samples 100 --out OUT/frey",
        45,
        "frey",
    ),
    (
        "examples/fashion_autoencoder.py (cupy)",
        "examples/fashion_autoencoder.py --backend cupy --epochs 1 --out OUT/fashion",
        60,
        "fashion",
    ),
    (
        "test suite (cupy)",
        "-m pytest -o addopts= -v -p no:cacheprovider --junitxml=OUT/logs/suite.xml tests",
        None,
        None,
        SUITE,
    ),
]
GOALS = {  # name: (what, target, "max" or "min")
    "cnn_epoch_cupy_over_torch_cuda": ("CuPy CNN epoch / PyTorch CUDA's", 1.5, "max"),
    "cnn_speedup_cupy_over_numpy": ("minivae CPU (NumPy) CNN epoch / CuPy's", 5.0, "min"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder for the report, the logs and CuPy's kernel cache")
    p.add_argument(
        "--budget", type=float, default=465.0, help="seconds for the whole check (default 465)"
    )
    args = p.parse_args(argv)
    out = Path(args.out).resolve()  # the steps run in the checkout, not here
    if out.exists() and not out.is_dir():
        p.error(f"OUT {out} exists and is not a folder")
    if args.budget <= 0:
        p.error("--budget must be positive")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    return Check(out, time.monotonic() + args.budget).run()


class Check:
    def __init__(self, out: Path, deadline: float):
        self.out, self.deadline = out, deadline
        cache = out / "cupy-cache"
        self.cache_files_before = _count_files(cache)
        os.environ["CUPY_CACHE_DIR"] = str(cache)  # before CuPy is imported, here and in the steps
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=path)
        self.env.pop("CI", None)  # a missing optional thing (PyTorch) skips its tests, not fails
        self.report = {
            "status": "running",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "checkout": _git_commit(),
            "cupy_cache": str(cache),
            "versions": _versions(),
            "steps": [],
            "goals": {},
        }

    def run(self) -> int:
        self.save()
        try:
            self.report["versions"].update(_choose_cupy())
        except backend.BackendError as e:
            self.report.update(status="no GPU", message=str(e))
            self.save()
            print(f"gpu_check: no GPU: {e}", file=sys.stderr)
            return NO_GPU
        torch = "--torch-device cuda" if self.torch_has_cuda() else ""
        missing = self.missing_data()
        for name, command, limit, data, *env in STEPS:
            command = command.replace("TORCH", torch).split()
            command = [a.replace("OUT", str(self.out)) for a in command]
            if data in missing:
                self.skip(name, f"the {data} data are missing: {missing[data]}")
            else:
                self.step(name, command, limit, **(env[0] if env else {}))
        self.goals()
        failed = [s["name"] for s in self.report["steps"] if s["status"] != "passed"]
        skipped = [s["name"] for s in self.report["steps"] if s["status"].startswith("skipped")]
        failed = [name for name in failed if name not in skipped]
        parts = [
            f"{what}: {', '.join(names)}"
            for what, names in [("failed", failed), ("skipped", skipped)]
            if names
        ]
        self.report["status"] = "; ".join(parts) or "passed"
        self.save()
        print(f"gpu_check: {self.report['status']}; report in {self.out / 'report.md'}")
        return 1 if failed or skipped else 0

    # --- the steps ---------------------------------------------------------------

    def torch_has_cuda(self) -> bool:
        """Whether PyTorch with CUDA is here: asked in a subprocess (importing it takes a while)."""
        ask = (
            "import json, torch; print(json.dumps("
            "[torch.__version__, torch.version.cuda, torch.cuda.is_available()]))"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", ask],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=min(60, self.left()),
                check=False,
            )
            version, cuda, available = json.loads(done.stdout)
        except (subprocess.TimeoutExpired, ValueError):
            available = False  # not installed, or not importable
        else:
            self.report["versions"]["torch"] = f"{version} (CUDA {cuda}, usable: {available})"
        return bool(available)

    def missing_data(self) -> dict:
        """The datasets that cannot be loaded here, with why."""
        missing = {}
        for name, load in [
            ("frey", datasets.load_frey_faces),
            ("fashion", datasets.load_fashion_mnist),
        ]:
            try:
                load()
            except datasets.DataError as e:
                missing[name] = str(e)
        return missing

    def step(self, name: str, command: list, limit, **env) -> dict:
        """Run `python command` in the checkout, with `env` added to the environment, for
        `limit` seconds at most (None: what is left of the budget); record its status, time,
        numbers (a --json file, an example's metrics, pytest's --junitxml) and output."""
        log = self.out / "logs" / (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + ".log")
        numbers = log.with_suffix(".json")
        if command[-1] == "--json":
            command = [*command, str(numbers)]
        if self.left() < 5:
            return self.skip(name, "no time left in the budget")
        seconds = self.left() if limit is None else min(limit, self.left())
        xml = [Path(a.split("=", 1)[1]) for a in command if a.startswith("--junitxml=")]
        examples = len(command) > 1 and command[-2] == "--out"
        metrics = [Path(command[-1]) / "metrics.json"] if examples else []
        for old in [numbers, *xml, *metrics]:  # a second run into OUT must not read the first's
            old.unlink(missing_ok=True)
        record = {"name": name, "command": "python " + " ".join(command), "log": str(log)}
        start = time.monotonic()
        returncode = _run([sys.executable, *command], dict(self.env, **env), log, seconds)
        record["seconds"] = round(time.monotonic() - start, 1)
        if returncode is None:
            record["status"] = f"timed out after {seconds:.0f} s"
        else:
            record["status"] = "passed" if returncode == 0 else f"failed (exit {returncode})"
        if returncode != 0:
            record["output_tail"] = log.read_text(errors="replace").splitlines()[-15:]
        if numbers.is_file():
            record["numbers"] = json.loads(numbers.read_text())
        for path in filter(Path.is_file, metrics):
            kept = (
                "sec_per_epoch",
                "best_val_elbo",
                "val_log_px",
                "epochs",
                "train_loss",
                "test_loss",
            )
            record["numbers"] = {k: v for k, v in json.loads(path.read_text()).items() if k in kept}
        for path in xml:  # pytest writes it at the end; cut short, its -v lines tell
            record["tests"] = _junit_summary(path) if path.is_file() else _verbose_summary(log)
        self.report["steps"].append(record)
        self.save()
        return record

    def skip(self, name: str, why: str) -> dict:
        record = {"name": name, "status": f"skipped: {why}"}
        self.report["steps"].append(record)
        self.save()
        return record

    def goals(self):
        """The GPU goals, from bench_fashion's seconds per training step."""
        per_step = {}
        for s in self.report["steps"]:
            if s["name"].startswith("bench_fashion") and "numbers" in s:
                per_step.update(s["numbers"]["seconds_per_step"])
        cupy, numpy, cuda = (
            per_step.get(name) for name in ("minivae (cupy)", "minivae (numpy)", "PyTorch CUDA")
        )
        values = {
            "cnn_epoch_cupy_over_torch_cuda": cupy / cuda if cupy and cuda else None,
            "cnn_speedup_cupy_over_numpy": numpy / cupy if cupy and numpy else None,
        }
        for key, (what, target, kind) in GOALS.items():
            value = values[key]
            met = None if value is None else value <= target if kind == "max" else value >= target
            self.report["goals"][key] = {
                "what": what,
                "value": value,
                "met": met,
                "target": f"{'<=' if kind == 'max' else '>='} {target}",
            }

    # --- bookkeeping -------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self):
        self.report["cupy_cache_files"] = {
            "before": self.cache_files_before,
            "now": _count_files(self.out / "cupy-cache"),
        }
        write_json(self.out / "report.json", self.report)
        write_text(self.out / "report.md", _markdown(self.report))


def _choose_cupy() -> dict:
    """Choose the cupy backend as a run does (BackendError without a usable GPU); its versions."""
    cupy = backend.Backend("cupy").xp
    runtime = cupy.cuda.runtime
    name = runtime.getDeviceProperties(0)["name"]  # bytes in CuPy 14
    return {
        "cupy": cupy.__version__,
        "cuda_runtime": runtime.runtimeGetVersion(),
        "cuda_driver": runtime.driverGetVersion(),
        "gpu": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
    }


def _run(command, env, log: Path, seconds: float):
    """Run `command` with its output to `log`; its return code, or None if it ran past
    `seconds` (then it and every process it started are killed: pytest starts some)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def _junit_summary(xml: Path) -> dict:
    """The suite's counts, and the first line of each failure."""
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = []
    for case in suite.iter("testcase"):
        for bad in case:
            if bad.tag in ("failure", "error"):
                first = (bad.get("message") or "").strip().split("\n")[0][:200]
                counts["failed"].append(f"{case.get('classname')}::{case.get('name')}: {first}")
    return counts


def _verbose_summary(log: Path) -> dict:
    """What a pytest -v run cut short had done: its outcomes so far, and what failed."""
    outcomes = re.findall(
        r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)",
        log.read_text(errors="replace"),
        re.MULTILINE,
    )
    counts = {"cut short": True, "tests": len(outcomes)}
    for kind, key in [("FAILED", "failures"), ("ERROR", "errors"), ("SKIPPED", "skipped")]:
        counts[key] = sum(outcome == kind for _, outcome in outcomes)  # as in _junit_summary
    counts["failed"] = [test for test, outcome in outcomes if outcome in ("FAILED", "ERROR")]
    return counts


def _versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("numpy", "cupy-cuda12x", "cupy-cuda13x", "torch", "pytest", "hypothesis"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        versions["nvidia-smi"] = (smi.stdout or smi.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        versions["nvidia-smi"] = f"not run ({e})"
    return versions


def _git_commit():
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder)) if folder.is_dir() else 0


def _markdown(report: dict) -> str:
    lines = [
        f"# GPU check: {report['status']}",
        "",
        f"Started {report['started']}, checkout {report['checkout']}.",
        "",
    ]
    if "message" in report:
        lines += [report["message"], ""]
    lines += ["## Versions", "", *(f"* {k}: {v}" for k, v in report["versions"].items()), ""]
    if report["goals"]:
        lines += ["## GPU goals", "", "| goal | value | target | met |", "|---|---:|---|---|"]
        for g in report["goals"].values():
            value = "not measured" if g["value"] is None else f"{g['value']:.2f}"
            lines.append(f"| {g['what']} | {value} | {g['target']} | {g['met']} |")
        lines.append("")
    lines += ["## Steps", ""] if report["steps"] else []
    for s in report["steps"]:
        took = f" ({s['seconds']} s)" if "seconds" in s else ""
        lines += [f"### {s['name']}: {s['status']}{took}", ""]
        if "command" in s:
            lines += [f"`{s['command']}` (log: {s['log']})", ""]
        for key in ("numbers", "tests"):
            if key in s:
                lines += ["```json", json.dumps(s[key], indent=2), "```", ""]
        if s.get("output_tail"):
            lines += ["```", *s["output_tail"], "```", ""]
    files = report["cupy_cache_files"]
    lines.append(
        f"CuPy's kernel cache, {report['cupy_cache']}: {files['before']} files before "
        f"this run, {files['now']} now."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
