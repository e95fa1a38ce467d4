"""`python -m bench --quick` runs end to end and writes its outputs (not a timing test)."""

import json
import subprocess
import sys

import numpy as np
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


def test_flop_counter_agrees_with_a_hand_count():
    from bench.flops import dot_flops, stage_flops, step_flops
    from toy.guidance import GuidanceConfig
    from toy.nets import LearnedDenoiser, MLPConfig, init_model

    n, d, W, C, F, K = 10, 2, 8, 2, 16, 3
    net = LearnedDenoiser.from_model(init_model(MLPConfig(dim=d, num_classes=C, width=W, num_blocks=K, fourier=F), 0))
    st = stage_flops(net, n)
    # by hand: the input layer; the noise embedding of the C + 1 class rows; per block fc1 and fc2 on n rows and
    # the embedding projection on the C + 1 rows; the output layer
    assert st["stem"] == 2 * n * d * W + 2 * (C + 1) * 2 * F * W
    assert st["blocks"] == [2 * 2 * n * W * W + 2 * (C + 1) * W * W] * K
    assert st["head"] == 2 * n * W * d
    assert dot_flops(lambda a, b: a @ b, np.zeros((7, 5), np.float32), np.zeros((5, 3), np.float32)) == 2 * 7 * 5 * 3
    # S²: the (∅, c) pass on 2n rows plus one sub-pass from the first dropped block (exclude block 0, drop 1 of 2)
    two = stage_flops(net, 2 * n)
    block, head = st["blocks"][0], st["head"]
    sub = ((block * 1 + head) + (0 * block + head)) / 2          # drop block 1 → block 2 and head; drop block 2 → head
    g = GuidanceConfig(num_drop=1)
    assert step_flops("s2", net, net, n, g) == pytest.approx(two["forward"] + sub)
    assert step_flops("s2-naive", net, net, n, g) == pytest.approx(two["forward"] + g.num_masks * sub)
    assert step_flops("cfg", net, net, n, g) == two["forward"] and step_flops("none", net, net, n, g) == st["forward"]


def test_time_to_quality_stops_at_the_first_evaluation_that_reaches_the_threshold():
    from bench.quality import time_to_quality
    curve = iter([0.9, 0.6, 0.41, 0.39, 0.2, 0.1])             # a synthetic W1 curve, one value per evaluation
    ticks = iter(range(100))                                   # a fake clock: each chunk takes exactly 1 s
    calls = {"step": 0}

    def step():
        calls["step"] += 1
    res = time_to_quality(step, lambda: next(curve), 0.4, max_evals=10, clock=lambda: float(next(ticks)))
    assert res["reached"] and res["evals"] == 4 and calls["step"] == 4 and res["value"] == 0.39
    assert res["seconds"] == 4.0                               # training chunks only
    miss = time_to_quality(lambda: None, lambda: 1.0, 0.4, max_evals=3, clock=lambda: 0.0)
    assert not miss["reached"] and miss["evals"] == 3


def test_compile_profile_attributes_compiles_to_tests_and_functions(tmp_path):
    # a tiny suite with one jitted function compiled for two shapes: the profile must count exactly those
    (tmp_path / "test_tiny.py").write_text(
        "import jax, jax.numpy as jnp\n"
        "def double(x):\n    return x * 2\n"
        "def test_one():\n    f = jax.jit(double)\n    f(jnp.ones(3)); f(jnp.ones(4)); f(jnp.ones(3))\n")
    out = tmp_path / "profile.json"
    subprocess.run([sys.executable, "-m", "bench.compile_profile", "--out", str(out), "--",
                    str(tmp_path / "test_tiny.py"), "-p", "no:xdist", "-o", "addopts="], check=True, capture_output=True)
    res = json.loads(out.read_text())
    assert res["pytest_exit_code"] == 0
    assert res["functions"]["jit(double)"]["compile_count"] == 2            # two shapes, the third call reused
    test = next(k for k in res["tests"] if k.endswith("test_tiny.py::test_one"))
    assert res["tests"][test]["compile"] > 0
    assert res["total"]["compile_count"] >= 2 and res["total"]["compile"] >= res["functions"]["jit(double)"]["compile"]


def test_launch_time_is_read_from_the_process_own_report():
    """The app's launch is timed to the page the process reports done, not to its exit: the marker
    is found after whatever else the process printed, and a process that never reports fails."""
    from bench.app_latency import LAUNCH, page_done
    assert page_done("warning: something\npage done at 1234.5\n") == 1234.5
    assert "print('page done at'" in LAUNCH and LAUNCH.index("time.monotonic()") < LAUNCH.index("print(")
    with pytest.raises(ValueError):
        page_done("Traceback: the app failed\n")


def test_rerun_parts_read_the_page_caption():
    """The script's account of a rerun is read from the page's caption, every part named there."""
    from bench.app_latency import rerun_parts
    cap = ("Settings: gmm1d, λ = 3. Rendered in 0.52 s (waiting for the samplers 0.21 s, drawing 0.14 s, "
           "mechanism view 0.18 s; 3 of 3 method(s) sampled anew, the rest reused).")
    assert rerun_parts(cap) == {"rendered": 0.52, "waiting for the samplers": 0.21, "drawing": 0.14,
                                "mechanism view": 0.18}
