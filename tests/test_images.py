"""The image experiment end to end at quick size: figures, table, CLI, and clear errors."""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

# The whole module runs in one worker (--dist loadfile): the module fixture runs once.

from toy.__main__ import main as cli
from toy.figures import main as figures
from toy.images.pipeline import FIG4_METHODS

METRIC_KEYS = {"fd", "accuracy", "precision", "recall", "separation"}


@pytest.fixture(scope="module")
def quick_run(cache_dir, trained, tmp_path_factory):
    trained("images")
    out = tmp_path_factory.mktemp("images")
    assert figures(["--quick", "--out", str(out), "--only", "fig4_tsne", "fig15_fixed_block_grid", "images_results"]) == 0
    return out


def test_figures_and_table(quick_run):
    for name in ("fig4_tsne", "fig15_fixed_block_grid"):
        img = mpimg.imread(quick_run / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500 and img[..., :3].std() > 0.05
    res = json.loads((quick_run / "images_results.json").read_text())
    assert set(res["metrics"]) == set(FIG4_METHODS)
    for m, ms in res["metrics"].items():
        assert set(ms) == METRIC_KEYS and all(np.isfinite(v["mean"]) for v in ms.values())
        assert all(0 <= ms[k]["mean"] <= 1 for k in ("accuracy", "precision", "recall"))
    # guidance makes generations more recognisable than none (a weak but real check at quick size)
    assert res["metrics"]["cfg"]["accuracy"]["mean"] >= res["metrics"]["none"]["accuracy"]["mean"]
    md = (quick_run / "images_results.md").read_text()
    assert "| CFG |" in md and "| S² |" in md and "classifier trained on the real images" in md


def test_cli_train_and_sample_reuse_the_models(quick_run, tmp_path, capsys):
    assert cli(["images", "train", "--quick"]) == 0
    assert "loaded" in capsys.readouterr().out
    png = tmp_path / "s.png"
    assert cli(["images", "sample", "--quick", "--method", "s2", "--n", "9", "--label", "1", "--out", str(png)]) == 0
    arr = np.load(png.with_suffix(".npz"))
    assert arr["images"].shape == (9, 8, 8, 1) and arr["images"].dtype == np.uint8 and int(arr["class_id"]) == 1
    pixels = mpimg.imread(png)[..., 0] * 255                                # [24, 24]: the picture is the arrays
    tiles = pixels.reshape(3, 8, 3, 8).transpose(0, 2, 1, 3).reshape(9, 8, 8)
    np.testing.assert_allclose(tiles, arr["images"][..., 0], atol=1.5)      # image i*3 + j at row i, column j


@pytest.mark.parametrize("args,needle", [
    (["images", "sample", "--quick", "--label", "5"], "--label 5"),
    (["images", "train", "--quick", "--data", "cifar10", "--data-dir", "/nonexistent"], "--download"),
    (["images", "train", "--quick", "--download"], "--download works with --data cifar10"),
    (["images", "train", "--quick", "--classes", "1,12"], "class id 12"),
    (["images", "train", "--quick", "--size", "XXL"], "unknown DiT size"),
])
def test_bad_input_is_one_clear_line(args, needle, capsys, cache_dir):
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_cli_mechanism_writes_the_series_against_the_reference(cache_dir, trained, tmp_path, capsys):
    trained("images")
    out = tmp_path / "m.json"
    assert cli(["images", "mechanism", "--quick", "--samples", "20", "--masks", "2", "--sampler-steps", "6",
                "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reference DiT-XS" in text and "medians where S² acts" in text
    res = json.loads(out.read_text())
    for k in ("alpha", "beta", "r2", "ratio", "cos_ref"):
        assert len(res[k]) == len(res["sigmas"]) == 6 and np.isfinite(res["interval_medians"][k])
    assert set(res["per_class"]) == {"7", "1"} and res["settings"]["reference"].startswith("DiT-XS")
    assert cli(["images", "mechanism", "--quick", "--masks", "0"]) == 2
    assert "--masks" in capsys.readouterr().err
