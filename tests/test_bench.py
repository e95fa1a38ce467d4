"""`python -m bench --quick` runs end to end and writes its outputs (not a timing test)."""

import json
import subprocess
import sys

from toy.guidance import MASK_METHODS, METHODS


def test_bench_quick_writes_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert set(res["step_cost_vs_cfg"]) == set(METHODS)
    assert res["step_cost_vs_cfg"]["cfg"] == 1.0
    assert all(v > 0 for v in res["step_cost_vs_cfg"].values())
    assert set(res["sampling"]["step_cost_vs_cfg_plain"]) == set(MASK_METHODS)
    t = res["train"]["toy"]
    assert t["steps_per_s"] > 0 and abs(t["samples_per_s"] - t["steps_per_s"] * t["batch"]) < 1e-6 * t["samples_per_s"]
    assert t["gt_components"] == 1020 and res["machine"]["peak_gflops"] > 0
    md = out.with_suffix(".md").read_text()
    for m in METHODS:
        assert f"| {m} |" in md
