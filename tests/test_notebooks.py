"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, at the small size.

The notebooks are stored as jupytext percent scripts (notebooks/*.py); this test turns each
into a notebook, executes it with nbclient in a fresh ipykernel with MINIVAE_NOTEBOOK_SMALL=1,
and fails on any cell's error. It needs the "notebooks" extra (pip install -e ".[notebooks]");
without it the test skips, except in CI, where it fails.
"""

import os
import time
from pathlib import Path

import pytest
from conftest import need

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


@pytest.mark.backends("numpy")
def test_there_is_a_notebook_per_part_of_the_lecture():
    assert [p.name for p in NOTEBOOKS] == [
        "1_autoencoders.py",
        "2_vae_frey.py",
        "3_backprop_through_sampling.py",
    ]


@pytest.mark.backends("numpy")  # the notebook picks its own backend: one run is enough
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_the_small_size(path, data_dir, tmp_path, monkeypatch):
    try:
        import jupytext
        from nbclient import NotebookClient
    except ImportError:
        need("jupytext and nbclient", 'pip install -e ".[notebooks]"')
    monkeypatch.setenv("MINIVAE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MINIVAE_DATA", data_dir)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the plots
    repo = str(path.parents[1])  # the kernel imports this checkout's minivae
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    )
    notebook = jupytext.read(path)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # raises on a cell's error
    print(f"\n{path.name}: {time.perf_counter() - started:.1f} s at the small size")
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was drawn inline"
