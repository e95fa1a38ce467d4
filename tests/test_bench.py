"""`python -m bench --quick` runs end to end and writes its outputs (not a timing test)."""

import json
import subprocess
import sys

import pytest


def test_bench_quick_writes_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], check=True, capture_output=True)
    res = json.loads(out.read_text())
    costs = res["step_cost_vs_cfg"]
    assert set(costs) == {"cfg", "s2", "s2-naive"} and all(v > 0 for v in costs.values())
    assert set(res["sampling"]["step_cost_vs_cfg_plain"]) == {"s2", "s2-naive"}
    t = res["train"]["toy"]
    assert t["gt_components"] == 1020 and t["params"] > 0 and res["machine"]["peak_gflops"] > 0
    md = out.with_suffix(".md").read_text()
    for m, v in costs.items():                          # the table reports the JSON's numbers
        assert f"| {m} | {v:.2f}× |" in md
    assert "speed-up" not in md                         # --quick prints no ratio it cannot measure
    assert res["app_latency"].get("skipped") and res["figures"].get("skipped")
