"""The command line: compare's table and JSON, and one clear line for every bad value."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toy.__main__ import main
from toy.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args,needle", [
    (["--guidance-scale", "nan"], "guidance scale"),
    (["--guidance-scale", "-1"], "guidance scale"),
    (["--s2-scale", "-0.5"], "S² scale"),
    (["--drop-ratio", "0"], "drop ratio"),
    (["--drop-ratio", "1.5"], "drop ratio"),
    (["--preset", "nowhere"], "unknown preset"),
    (["--methods", "cfg,bogus"], "unknown method"),
    (["--methods", "s2", "--exclude", "0,1,2,3,4,5,6,7"], "no droppable block"),
    (["--seeds", "0"], "seeds"),
    (["--guidance-scale", "abc"], "not a number"),
    (["--interval", "0.8", "0.2"], "interval"),
    (["--label", "5"], "label"),
    (["--weak", "tiny"], "weak"),
])
def test_invalid_values_exit_with_one_line(args, needle, capsys, tmp_path):
    code = main(["compare", "--quick", "--cache-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err
    assert not any(tmp_path.iterdir())             # rejected before any training


def test_module_entry_point_reports_errors():
    r = subprocess.run([sys.executable, "-m", "toy", "compare", "--preset", "nope"], capture_output=True,
                       text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "nope" in r.stderr


def test_compare_writes_table_and_json(gmm1d_models, cache_dir, tmp_path, capsys):
    out = tmp_path / "res.json"
    code = main(["compare", "--preset", "gmm1d", "--quick", "--methods", "none,cfg,autoguidance,s2,s2-naive,fixed-block",
                 "--guidance-scale", "3", "--s2-scale", "0.25", "--seeds", "2", "--samples", "300", "--steps", "16", "--exact",
                 "--json", str(out), "--cache-dir", str(cache_dir)])
    table = capsys.readouterr().out
    assert code == 0
    res = json.loads(out.read_text())
    assert res["preset"] == "gmm1d" and res["settings"]["seeds"] == [0, 1] and res["settings"]["guidance_scale"] == 3
    rows = {"none", "cfg", "autoguidance", "s2", "s2-naive", "fixed-block", "none[exact]", "cfg[exact]",
            "autoguidance[exact]", "s2[exact]", "truth"}
    assert set(res["methods"]) == rows
    for name in rows:
        assert name in table
        for m in METRICS:
            assert set(res["methods"][name][m]) == {"mean", "std"}
    # exact guidance bias, independent of any model: CFG pushes the modes out, plain sampling does not
    shift = {k: res["methods"][k]["mode_shift"]["mean"] for k in ("cfg[exact]", "none[exact]")}
    assert shift["cfg[exact]"] > shift["none[exact]"] + 0.3


def test_train_command_loads_cached_models(gmm1d_models, cache_dir, capsys):
    assert main(["train", "--preset", "gmm1d", "--quick", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("loaded") == 3 and "early" in out and "blockdrop" in out


def test_compare_reports_mode_balance_on_the_four_mode_preset(cache_dir, tmp_path, capsys):
    out = tmp_path / "four.json"
    assert main(["compare", "--preset", "gmm2d4", "--quick", "--methods", "cfg,s2", "--seeds", "1", "--samples", "400",
                 "--steps", "12", "--exact", "--json", str(out)]) == 0
    assert "mode balance" in capsys.readouterr().out
    res = json.loads(out.read_text())
    mb = {k: v["mode_balance"]["mean"] for k, v in res["methods"].items()}
    # the other class sits beside the right-hand modes: exact CFG moves weight to the left-hand ones, far
    # beyond the noise of exact samples
    assert mb["cfg[exact]"] > 0.15 > 0.05 > mb["truth"]
