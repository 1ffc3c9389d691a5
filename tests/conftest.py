"""Shared test set-up.

* Every test runs once per backend (``numpy`` and ``strict``; set
  ``MINIVAE_TEST_BACKENDS=cupy`` on a GPU machine). A test that only makes sense
  on some backends says so with ``@pytest.mark.backends("numpy")``.
* ``data_dir``: the folder of real datasets (``MINIVAE_DATA``). Absent data skips
  the test, except in CI (``CI=true``), where it fails the run.
* ``torch``: PyTorch for cross-checks; skipped when not installed, except in CI.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import minivae

BACKENDS = os.environ.get("MINIVAE_TEST_BACKENDS", "numpy,strict").split(",")
IN_CI = os.environ.get("CI", "").lower() == "true"

settings.register_profile(
    "default",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): run this test only on these backends")


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request):
    """The backend this test runs on, seeded afresh."""
    with minivae.use_backend(request.param) as b:
        b.seed(0)
        yield b


def pytest_collection_modifyitems(config, items):
    """Drop the runs on backends a test's ``backends`` marker excludes."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("backends")
        name = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        (dropped if marker and name not in marker.args else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def need(what: str, why: str):
    """Skip for a missing optional thing, but fail in CI, where everything must be there."""
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: {why}")
    pytest.skip(f"{what} is missing: {why}")


@pytest.fixture
def data_dir():
    folder = os.environ.get("MINIVAE_DATA")
    if not folder or not os.path.isdir(folder):
        need(
            "the dataset folder",
            "set MINIVAE_DATA to a folder with the datasets (e.g. ../shared/data)",
        )
    return folder


@pytest.fixture
def torch():
    try:
        import torch
    except ImportError:
        need("PyTorch", "install it (CPU build) for the cross-checks: pip install torch")
    torch.set_default_dtype(torch.float64)
    return torch
