"""Every notebook runs top to bottom in quick mode."""

import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client.utils import run_sync
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


NEEDS = {"01": ["gmm1d"], "02": ["gmm2d"], "03": ["gmm1d"], "04": ["images"], "05": ["gmm1d"], "06": ["gmm1d", "gmm2d", "gmm2d4"]}
# Each notebook starts from an empty namespace and no open figure, in one kernel for the module: the
# imports (JAX, the toy package: ~7 s) and compiled programs carry over from one notebook to the next.
FRESH = "import matplotlib.pyplot as plt\nplt.close('all')\n%reset -f"


@pytest.fixture(scope="module")
def kernel():
    box = {}
    yield box
    if "km" in box:
        run_sync(box["km"].shutdown_kernel)(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, cache_dir, trained, kernel):
    for name in NEEDS.get(path.stem[:2], []):     # train under the run's lock; the kernel then loads
        trained(name)
    # Importing streamlit sets MPLBACKEND=Agg in this process; the kernel must draw inline figures.
    env = dict(os.environ, TOY_QUICK="1", TOY_CACHE_DIR=str(cache_dir), PYTHONPATH=str(path.parents[1]),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(FRESH))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", km=kernel.get("km"),
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute(cleanup_kc=False, env=env)
    finally:                                      # a failed notebook still leaves the kernel to shut down
        kernel["km"] = client.km
        if client.kc is not None:
            client.kc.stop_channels()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
