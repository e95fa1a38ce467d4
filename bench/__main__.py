"""The benchmark suite, measured side by side in one run on this machine.

    python -m bench [--quick] [--edm2 PATH] [--edm2-python PY] [--skip-figures] --json OUT.json [--md OUT.md]
    python -m bench --only app_latency|figures|ci … --json OUT.json

Writes OUT.json and a Markdown table (OUT.md, also printed), every number from this one run (with
--only, the named sections are re-measured into the existing OUT.json, each stamped with its own date
and machine, and the headline says which):
- step_cost_vs_cfg: the wall-clock cost of one guided sampler step of each method relative to CFG,
  and step_flops_vs_cfg, its matrix-product FLOPs relative to CFG's (bench/flops.py), side by side;
  for the block-dropping methods also with plain recomputation instead of the shared prefix;
- train_time_to_quality_vs_edm2 (with --edm2, a checkout of NVlabs/edm2, and a Python with PyTorch):
  the seconds edm2's toy_example.py needs for its quality after a fixed number of iterations, over
  the seconds ours needs to reach it on the same tree and batch (bench/quality.py); beside it each
  trainer's samples/s, which compare two different networks;
- the app in a real browser (Chromium via Playwright against `streamlit run app.py`): the first
  picture from the command with empty caches, a second launch, and each control's input event to the
  page's new picture; beside it the same script through AppTest (`script_*`; bench/app_latency.py);
- the full figure regeneration time with the models cached (skipped with --skip-figures);
- `.ci/run` on a fresh clone: the install from nothing and the test suite.
`--quick` checks that everything runs at tiny sizes and prints no ratio it cannot measure.
Timings are medians of interleaved repeats, so a slow moment of the machine hits every method alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from bench.flops import step_flops
from bench.quality import bench_time_to_quality
from toy import files
from toy.diffusion import SamplerConfig, sample
from toy.guidance import MASK_METHODS, METHODS, GuidanceConfig
from toy.mixtures import ConditionalMixture, GaussianMixture
from toy.presets import tree_branches
from toy.nets import LearnedDenoiser, MLPConfig, init_model, param_count
from toy.train import TrainConfig, chunk_runner, init_state, model_config, optimizer

HERE = Path(__file__).resolve().parent


# -- the machine ----------------------------------------------------------------------------------

def machine() -> dict:
    """CPU model, cores and the fp32 peak: cores × clock × FLOPs per cycle (2 FMA units of 8 fp32
    lanes with AVX2, 16 with AVX-512). The clock is the nominal one from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda k: next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith(k)), "")
    flags = set(field("flags").split())
    ghz = float(field("cpu MHz") or 0) / 1000 or float(field("bogomips") or 0) / 2000
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = os.cpu_count() or 1
    return {"cpu": field("model name") or platform.processor(), "cores": cores, "ghz": round(ghz, 3),
            "fp32_flops_per_cycle_per_core": per_cycle, "peak_gflops": round(cores * ghz * per_cycle, 1),
            "jax": jax.__version__, "backend": jax.default_backend()}


def _interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each fn, timed round-robin after one warm-up call each."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# -- sampling -------------------------------------------------------------------------------------

def bench_sampling(n: int, steps: int, repeats: int, solver: str = "heun", methods=METHODS) -> dict:
    """Every method on the default network (width 64 × 8 blocks) with the weak model of the app
    (width 32 × 4). Block-dropping methods run their sub-passes at every step (interval [0, 1])."""
    main = LearnedDenoiser.from_model(init_model(MLPConfig(dim=2, width=64, num_blocks=8), 0))
    weak = LearnedDenoiser.from_model(init_model(MLPConfig(dim=2, width=32, num_blocks=4), 1))
    scfg = SamplerConfig(steps=steps, solver=solver)
    variants = {m: GuidanceConfig(method=m, interval=(0.0, 1.0)) for m in methods}
    variants.update({f"{m} (plain)": GuidanceConfig(method=m, interval=(0.0, 1.0), shared_prefix=False)
                     for m in MASK_METHODS if m in methods})
    fns = {name: (lambda g=g: sample(main, g, scfg, jax.random.key(0), n, 0, weak=weak).x.block_until_ready())
           for name, g in variants.items()}
    secs = _interleaved(fns, repeats)
    evals = 2 * steps - 1 if solver == "heun" else steps              # Heun: two evaluations but the last
    flops = {m: step_flops(m, main, weak, n) for m in methods}        # one guided evaluation
    cfg_gflops = evals * flops["cfg"] / secs["cfg"] / 1e9
    return {"n": n, "steps": steps, "solver": solver, "seconds": secs,
            "step_cost_vs_cfg": {k: secs[k] / secs["cfg"] for k in methods},
            "step_flops_vs_cfg": {k: flops[k] / flops["cfg"] for k in methods},
            "step_cost_vs_cfg_plain": {m: secs[f"{m} (plain)"] / secs["cfg"] for m in MASK_METHODS if m in methods},
            "samples_steps_per_s": {k: n * steps / v for k, v in secs.items()},
            "cfg_gflops": cfg_gflops}


# -- training -------------------------------------------------------------------------------------

def deep_tree() -> ConditionalMixture:
    """One class: our tree2d recursion taken to depth 7 with 4 pieces a segment (1,020 thin
    Gaussians), so that the exact-score target costs what edm2's 1,016-component tree costs."""
    return ConditionalMixture((GaussianMixture(*tree_branches((0.0, -5.0), np.pi / 2, 4.0, 7, 0.5, 0.12, pieces=4)),),
                              np.array([1.0]), ("tree",), "deep-tree")


def bench_train_toy(iters: int, batch: int, repeats: int) -> dict:
    """The toy trainer at width 64, two blocks (four hidden 64×64 layers on the residual path),
    exact score matching on `deep_tree`: `iters` steps in one jitted scan, compile excluded."""
    mix = deep_tree()
    tcfg = TrainConfig(preset="tree2d", width=64, num_blocks=2, steps=iters, batch=batch, chunk=iters, loss="exact",
                       warmup=0).validate()
    model = init_model(model_config(tcfg, mix), 0)
    graphdef, params = nnx.split(model)
    tx = optimizer(tcfg)
    run = chunk_runner(tcfg, mix, graphdef)
    state = init_state(params, tx)
    secs = _interleaved({"toy": lambda: jax.block_until_ready(run(state, None, iters))}, repeats)["toy"]

    return {"iters": iters, "batch": batch, "seconds": secs, "steps_per_s": iters / secs,
            "samples_per_s": iters * batch / secs, "params": param_count(model),
            "gt_components": int(sum(c.means.shape[0] for c in mix.classes)),
            "network": "MLPDenoiser width 64, 2 residual blocks (4 hidden 64×64 layers + 2 embedding layers)"}


# -- app and figures ------------------------------------------------------------------------------

def bench_app(repeats: int) -> dict:
    """The app in a real browser (first picture, second launch, input event to new picture) and, beside
    it under script_*, the same script through AppTest (bench/app_latency.py)."""
    from bench.app_latency import browser_times, launch_times, measure
    return {**browser_times(repeats), **launch_times(), **measure(repeats)}


def bench_ci() -> dict:
    """`.ci/run` on a fresh clone of this checkout's HEAD: the install from nothing and the test command."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="toy-ci-") as d:
        subprocess.run(["git", "clone", "-q", str(root), f"{d}/p"], check=True)
        t = time.perf_counter()
        r = subprocess.run(["bash", ".ci/run"], cwd=f"{d}/p", capture_output=True, text=True)
        took = time.perf_counter() - t
    last = (r.stdout.strip().splitlines() or [""])[-1]
    return {"seconds": took, "passed": r.returncode == 0, "summary": last, "command": ".ci/run on a fresh clone"}


def bench_figures() -> dict:
    """A full regeneration with the models cached (the shipped ones; the regime variants and the image
    experiment's DiTs trained before by `--train-only`, untimed)."""
    out = Path("/tmp") / f"bench-figures-{os.getpid()}"
    subprocess.run([sys.executable, "-m", "toy.figures", "--out", str(out), "--train-only"], check=True,
                   capture_output=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toy.figures", "--out", str(out)], check=True, capture_output=True)
    took = time.perf_counter() - t
    stages = json.loads((out / "figures_timing.json").read_text())["stages"]        # seconds per figure
    return {"seconds": took, "stages": stages, "command": "python -m toy.figures", "models": "cached"}


# -- report ---------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    m, s = r["machine"], r["sampling"]
    lines = [f"Measured {r['date']} with `python -m bench{' --quick' if r['quick'] else ''}` on {m['cpu']}, "
             f"{m['cores']} cores, fp32 peak ≈ {m['peak_gflops']} GFLOP/s ({m['cores']} × {m['ghz']} GHz × "
             f"{m['fp32_flops_per_cycle_per_core']}); JAX {m['jax']} on {m['backend']}.",
             "", f"Sampling: {s['n']} samples × {s['steps']} {s['solver'].capitalize()} steps, 2D, network width 64 × 8 "
             "blocks; block-dropping methods drop at every step. FLOPs: matrix products of one guided evaluation "
             "(bench/flops.py).", "",
             "| method | wall-clock vs CFG | FLOPs vs CFG | plain recomputation (wall-clock) | samples·steps/s |",
             "|---|---|---|---|---|"]
    for k in s["step_cost_vs_cfg"]:
        plain = s["step_cost_vs_cfg_plain"].get(k)
        lines.append(f"| {k} | {s['step_cost_vs_cfg'][k]:.2f}× | {s['step_flops_vs_cfg'][k]:.2f}× | "
                     f"{f'{plain:.2f}×' if plain else '–'} | {s['samples_steps_per_s'][k]:,.0f} |")
    lines += ["", f"CFG sampling runs at {s['cfg_gflops']:.1f} GFLOP/s of matrix products "
                  f"({100 * s['cfg_gflops'] / m['peak_gflops']:.0f}% of peak).", ""]
    t = r["train"]["toy"]
    lines += ["| trainer | network | steps/s | samples/s | params |", "|---|---|---|---|---|",
              f"| toy (JAX) | {t['network']} | {t['steps_per_s']:.1f} | {t['samples_per_s']:,.0f} | {t['params']:,} |"]
    q = r.get("time_to_quality")
    if q:
        e = q["edm2"]
        lines.append(f"| edm2 toy_example (PyTorch {e['torch']}) | ToyModel, 4 hidden layers × 64, score by autograd "
                     f"of a log-density | {e['iters'] / e['seconds']:.1f} | {e['iters'] * e['batch'] / e['seconds']:,.0f} "
                     f"| {e['params']:,} |")
        lines += ["", "The two trainers' samples/s compare different networks (ours predicts D directly; edm2's "
                      "differentiates a log-density, a double backward), so they say little on their own. Time to quality "
                      f"on edm2's own {q['components']}-component tree at batch {e['batch']}: edm2 reaches W1 = "
                      f"{q['threshold_w1']:.4f} (10,000 unguided samples to exact ones, our metric on its samples) after "
                      f"{e['iters']} iterations, in {e['seconds']:.0f} s of training; ours "
                      + (f"reaches it after {q['toy']['steps']} steps, in {q['toy']['seconds']:.1f} s: "
                         f"**{q['train_time_to_quality_vs_edm2']:.0f}× less time**." if q["toy"]["reached"] else
                         f"does not reach it in {q['toy']['steps']} steps ({q['toy']['seconds']:.1f} s; best W1 "
                         f"{q['toy']['value']:.4f}).")]
    a, f, c = r.get("app_latency", {}), r.get("figures", {}), r.get("ci", {})
    if "slider_to_picture_s" in a:
        b, st_ = a["slider_to_picture_s"], a.get("launch_stages_s", {})
        lines += ["", f"App in Chromium against `streamlit run app.py`{measured_on(a)}: first picture {a['first_render_s']:.1f} s "
                      f"after the command with empty caches (server listening at "
                      f"{st_.get('first_render_s', {}).get('server_listening_s', float('nan')):.1f} s), second launch "
                      f"{a['second_launch_s']:.1f} s; input event → new picture, median: "
                      + ", ".join(f"{k} {v:.2f} s" for k, v in b.items())
                      + (f" (a one-slider Streamlit page answers in {a['streamlit_round_trip_s']:.2f} s)"
                         if "streamlit_round_trip_s" in a else "") + ".",
                  f"The same script through AppTest (no server, browser or transfer): first page "
                  f"{a['script_first_render_s']:.1f} s, second launch {a['script_second_launch_s']:.1f} s; rerun after a "
                  "move, median: " + ", ".join(f"{k} {v['median_s']:.2f} s" for k, v in a["script_slider_to_rerun"].items())
                  + "."]
    else:
        lines += ["", f"App latency: {a.get('skipped', '–')}"]
    lines.append(f"Full figure regeneration, models cached{measured_on(f)}: {f['seconds']:.0f} s." if "seconds" in f else
                 f"Figure regeneration: {f.get('skipped', '–')}")
    if "seconds" in c:
        lines.append(f"`.ci/run` on a fresh clone (install from nothing, then the tests){measured_on(c)}: {c['seconds']:.0f} s"
                     f" ({'passed' if c['passed'] else 'FAILED'}: {c['summary']}).")
    return "\n".join(lines) + "\n"


# (label, where in results.json, format, target as text, met?) for the headline table
HEADLINE = (
    ("S² step cost, against CFG", ("sampling", "step_cost_vs_cfg", "s2"), "{:.2f}×", "≤ 1.2×", lambda v: v <= 1.2),
    ("naive S² (N = 4) step cost, against CFG", ("sampling", "step_cost_vs_cfg", "s2-naive"), "{:.2f}×", "≤ 1.8×",
     lambda v: v <= 1.8),
    ("training time to edm2's quality, edm2's time over ours", ("train_time_to_quality_vs_edm2",), "{:.0f}×", "≥ 20×",
     lambda v: v >= 20),
    ("app in a browser: first picture, empty caches", ("app_latency", "first_render_s"), "{:.1f} s", "< 6 s",
     lambda v: v < 6),
    ("app in a browser: second launch", ("app_latency", "second_launch_s"), "{:.1f} s", "< 3 s", lambda v: v < 3),
    ("app in a browser: λ move to the new picture", ("app_latency", "slider_to_picture_s", "lam"), "{:.2f} s",
     "< 0.3 s", lambda v: v < 0.3),
    ("app in a browser: ω move to the new picture", ("app_latency", "slider_to_picture_s", "omega"), "{:.2f} s",
     "< 0.3 s", lambda v: v < 0.3),
    ("app in a browser: step move to the new picture", ("app_latency", "slider_to_picture_s", "step"), "{:.2f} s",
     "< 0.15 s", lambda v: v < 0.15),
    ("app in a browser: preset change (first visit) to the new picture", ("app_latency", "slider_to_picture_s", "preset"),
     "{:.2f} s", "< 2 s", lambda v: v < 2),
    ("full figure regeneration, models cached", ("figures", "seconds"), "{:.0f} s", "< 300 s", lambda v: v < 300),
    ("`.ci/run` on a fresh clone", ("ci", "seconds"), "{:.0f} s", "< 300 s", lambda v: v < 300),
)


def measured_on(section: dict) -> str:
    """" (DATE, CPU)" for a section measured by a later `--only` run than the file's date; "" otherwise."""
    m = section.get("measured")
    return f" (measured {m['date']} on {m['machine']['cpu']}, {m['machine']['cores']} cores)" if m else ""


def headline(r: dict) -> str:
    """The headline numbers of a bench run against their targets: the table README and
    docs/performance.md quote (a test checks they hold exactly this for bench/results.json)."""
    m = r["machine"]
    later = {k: v["measured"]["date"] for k, v in r.items() if isinstance(v, dict) and "measured" in v}
    rows = [f"`python -m bench`, {r['date']}, {m['cpu']} ({m['cores']} cores, {m['ghz']} GHz), JAX {m['jax']} on "
            f"{m['backend']} (`bench/results.md`)" + ("; " + ", ".join(f"`{k}` re-measured {d} (`--only {k}`)"
                                                                      for k, d in later.items()) if later else "") + ":",
            "", "| measure | measured | target | met |", "|---|---|---|---|"]
    for name, path, fmt, target, ok in HEADLINE:
        v = r
        for k in path:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        if isinstance(v, (int, float)):
            rows.append(f"| {name} | {fmt.format(v)} | {target} | {'yes' if ok(v) else 'no'} |")
        else:
            rows.append(f"| {name} | not measured | {target} | – |")
    return "\n".join(rows)


ONLY = ("app_latency", "figures", "ci")


def only(sections, json_path: str, md_path: str | None) -> int:
    """Re-measure `sections` into the existing results, each with {"measured": {"date", "machine"}}."""
    res = json.loads(Path(json_path).read_text())
    run = {"app_latency": lambda: bench_app(repeats=5), "figures": bench_figures, "ci": bench_ci}
    for k in sections:
        print(f"{k} …", flush=True)
        res[k] = {**run[k](), "measured": {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}}
    files.write_json(json_path, res)
    md = markdown(res)
    files.write_text(md_path or Path(json_path).with_suffix(".md"), md)
    print(md)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, no edm2, app or figure timing (for the tests)")
    p.add_argument("--edm2", metavar="PATH", help="a checkout of NVlabs/edm2 to run its toy_example.py side by side")
    p.add_argument("--edm2-python", default=sys.executable, metavar="PY",
                   help="the Python with torch (and requests, scipy, click) that runs edm2 (default: this one)")
    p.add_argument("--edm2-iters", type=int, default=512, help="edm2 iterations that set the quality threshold (≥ 512)")
    p.add_argument("--json", required=True, metavar="OUT.json")
    p.add_argument("--md", metavar="OUT.md", help="default: OUT.json with .md")
    p.add_argument("--skip-figures", action="store_true", help="do not time the full figure regeneration")
    p.add_argument("--only", nargs="+", choices=ONLY, metavar="SECTION",
                   help=f"re-measure only these sections ({', '.join(ONLY)}) into the existing --json, each stamped "
                        "with its date and machine; the other sections are kept as they were")
    a = p.parse_args(argv)
    if a.only:
        return only(a.only, a.json, a.md)
    q = a.quick
    res = {"quick": q, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print("sampling …", flush=True)
    # --quick checks that everything runs: Euler (half the program to compile), few samples and steps
    res["sampling"] = bench_sampling(n=128 if q else 1000, steps=4 if q else 32, repeats=1 if q else 9,
                                     solver="euler" if q else "heun",
                                     methods=("cfg", "s2", "s2-naive") if q else METHODS)
    res["step_cost_vs_cfg"] = res["sampling"]["step_cost_vs_cfg"]
    res["step_flops_vs_cfg"] = res["sampling"]["step_flops_vs_cfg"]
    iters, batch = (8, 512) if q else (256, 4096)
    print("training …", flush=True)
    res["train"] = {"toy": bench_train_toy(iters, batch, repeats=1 if q else 3)}
    if a.edm2 and not q:
        print("time to quality against edm2 …", flush=True)
        res["time_to_quality"] = bench_time_to_quality(a.edm2, a.edm2_python, iters=a.edm2_iters, batch=4096)
        res["train_time_to_quality_vs_edm2"] = res["time_to_quality"]["train_time_to_quality_vs_edm2"]
    if q:
        res["app_latency"] = {"skipped": "not measured with --quick (python -m bench.app_latency)"}
        res["figures"] = {"skipped": "not measured with --quick"}
    else:
        print("app latency …", flush=True)
        res["app_latency"] = bench_app(repeats=5)
        if a.skip_figures:
            res["figures"] = {"skipped": "--skip-figures"}
        else:
            print("figures …", flush=True)
            res["figures"] = bench_figures()
        print(".ci/run …", flush=True)
        res["ci"] = bench_ci()
    files.write_json(a.json, res)
    md = markdown(res)
    files.write_text(a.md or Path(a.json).with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
