"""Every notebook runs top to bottom in quick mode."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


NEEDS = {"01": ["gmm1d"], "02": ["gmm2d"], "03": ["gmm1d"], "04": ["images"], "05": ["gmm1d"]}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, cache_dir, trained, monkeypatch):
    for name in NEEDS.get(path.stem[:2], []):     # train under the run's lock; the kernel then loads
        trained(name)
    monkeypatch.setenv("TOY_QUICK", "1")
    monkeypatch.setenv("TOY_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("PYTHONPATH", str(path.parents[1]))
    # Importing streamlit sets MPLBACKEND=Agg in this process; the kernel must draw inline figures.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
