"""`python -m toy.figures --quick` writes every figure and table, with real content."""

import json

import matplotlib.image as mpimg
import numpy as np

from toy import claims as C
from toy.claims import VERDICTS
from toy.figures import IMAGE_FIGURES, TOY_FIGURES, Settings, main
from toy.guidance import EXACT_METHODS, METHODS
from toy.metrics import METRICS

PNGS = ["fig3_1d", "fig3_2d", "fig3_2d4", "fig9_trajectories_1d", "fig10_naive_vs_single", "fig8_num_passes", "fig7_ablations",
        "fig_tree2d_all_methods", "fig_s2_mechanism", "fig_s2_ideal", "fig_s2_regimes", "fig_s2_transformer"]


def test_quick_figures(cache_dir, trained, tmp_path, capsys):
    for preset in ("gmm1d", "gmm2d", "gmm2d4", "tree2d"):
        trained(preset)
    # the image pipeline's figures (fig4_tsne, fig15_fixed_block_grid, images_results) are tested in
    # test_images.py; the claims need fig_s2_transformer (the DiT depth sweep, on shipped weights)
    assert not set(TOY_FIGURES) & set(IMAGE_FIGURES)
    assert main(["--quick", "--out", str(tmp_path), "--only", *TOY_FIGURES]) == 0
    for name in PNGS:
        img = mpimg.imread(tmp_path / f"{name}.png")
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert img.shape[1] < 3.2 * img.shape[0], name        # a grid, readable at the README's width, not one long row
        assert img[..., :3].std() > 0.05                     # not blank
    md = (tmp_path / "toy_results.md").read_text()
    res = json.loads((tmp_path / "toy_results.json").read_text())
    rows = set(METHODS) | {f"{m}[exact]" for m in EXACT_METHODS} | {"truth"}
    for preset in ("gmm1d", "gmm2d", "gmm2d4", "tree2d"):
        assert f"## {preset}" in md
        assert set(res[preset]["methods"]) | set(res[preset].get("errors", {})) == rows
        for name, ms in res[preset]["methods"].items():
            assert set(ms) == set(METRICS)
    for row in ("| CFG |", "| S² |", "| naive S² |", "| CFG (exact) |", "| S² (exact) |", "| Autoguidance (exact) |"):
        assert row in md
    # the Markdown table is the JSON's numbers, under the metrics' display names
    assert "| method | W1 ↓ | MMD ↓ |" in md
    cfg = res["gmm1d"]["methods"]["cfg"]
    row = next(line for line in md.split("## gmm1d")[1].splitlines() if line.startswith("| CFG |"))
    assert row == "| CFG | " + " | ".join(f"{cfg[k]['mean']:.3f} ± {cfg[k]['std']:.3f}" for k in METRICS) + " |"
    claims = json.loads((tmp_path / "claims.json").read_text())
    # each verdict is computed from the table's numbers (the first two claims, recomputed here)
    for fn, entry in zip((C.cfg_shifts_modes, C.autoguidance_helps), claims[:2]):
        claim, evidence, verdict = fn(res, 2)
        assert (claim, evidence, verdict) == (entry["claim"], entry["evidence"], entry["verdict"])
    assert len(claims) == 12
    # the new rows, their verdicts recomputed from the tables they cite
    assert claims[9] == dict(zip(("claim", "evidence", "verdict"), C.mode_preference(res, 2)))
    tr = json.loads((tmp_path / "transformer.json").read_text())
    dit = tr["dit"]
    assert dit["depths"] == [4, 28] and dit["blocks_dropped"] == [1, 3]      # about 10% of 3 and 27 (quick: two depths)
    assert claims[10] == dict(zip(("claim", "evidence", "verdict"), C.dit_weak_model(
        dit["depths"], [m["interval_medians"] for m in dit["mechanism"]],
        {f"MLP {p} depth {r['depths'][-1]}": r["interval_medians"][-1] for p, r in tr["mlp"].items()})))
    for m in dit["mechanism"]:
        assert {"sigmas", "alpha", "beta", "r2", "ratio", "cos_ref"} <= set(m)
    assert "At the paper's depth" in claims[11]["claim"] and "DiT on digits, depth 28" in " ".join(claims[11]["evidence"])
    assert "| DiT | 28 | 3 |" in (tmp_path / "transformer.md").read_text()
    assert all(c["verdict"] in VERDICTS and c["evidence"] for c in claims)
    assert any("ideal weak sub-network" in c["claim"] for c in claims)
    assert any("Block-dropout" in c["claim"] for c in claims)
    assert "seeds [0, 1]" in (tmp_path / "claims.md").read_text()
    mech = json.loads((tmp_path / "mechanism.json").read_text())
    for preset in ("gmm1d", "gmm2d"):
        for model in ("main", "blockdrop", "ideal"):
            series = mech["mechanism"]["series"][preset][model]
            assert {"sigmas", "alpha", "beta", "r2", "cos_error", "ratio"} <= set(series)
            assert ("cos_ref" in series) == (model != "ideal")          # the proxy beside the truth
            assert len(series["alpha"]) == len(series["sigmas"])
        assert mech["mechanism"]["proxy"][preset]["main"]["correlation"] > 0.5
        # quick mode sweeps the axes that keep the main network's shape (no new programs to compile);
        # the full settings add width and depth
        assert set(mech["regimes"][preset]) == {"steps", "block_drop", "sigma_window"}
    assert set(Settings.make(quick=False).regimes) == {"width", "depth", "steps", "block_drop"}
    assert {16, 28} <= set(Settings.make(quick=False).regimes["depth"])       # the paper's depth
    assert "| gmm1d | block-dropout network |" in (tmp_path / "mechanism.md").read_text()


def test_unknown_figure_is_one_line_error(tmp_path, capsys):
    assert main(["--only", "fig99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "fig99" in err and len(err.splitlines()) == 1


def test_train_only_readies_every_network_and_draws_nothing(cache_dir, tmp_path, capsys):
    assert main(["--quick", "--train-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("gmm1d/main", "gmm1d/small", "gmm1d/blockdrop", "tree2d/main", "gmm2d/steps=750", "gmm1d/block_drop=0.1",
                 "images/main", "images/early"):       # the image figures' DiTs too (quick: the early snapshot is weak)
        assert name in out
    assert main(["--quick", "--train-only", "--only", "fig3_1d", "--out", str(tmp_path)]) == 0
    assert "images/" not in capsys.readouterr().out                # no image figure asked for, no DiT
    assert not list(tmp_path.iterdir())


def test_model_flag_guides_the_blockdrop_network(cache_dir, trained, tmp_path, capsys):
    trained("gmm1d")
    for model in ("main", "blockdrop"):
        assert main(["--quick", "--only", "fig3_1d", "--model", model, "--out", str(tmp_path / model)]) == 0
    a, b = (mpimg.imread(tmp_path / m / "fig3_1d.png") for m in ("main", "blockdrop"))
    assert a.shape == b.shape and not np.array_equal(a, b)          # other samples, and the caption names it
    assert main(["--quick", "--model", "small", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--model 'small'" in err and len(err.splitlines()) == 1
