"""The benchmark suite, measured side by side in one run on this machine.

    python -m bench [--quick] [--edm2 PATH] [--edm2-python PY] --json OUT.json [--md OUT.md]

Writes OUT.json and a Markdown table (OUT.md, also printed):
- step_cost_vs_cfg: the cost of one guided sampler step of each method relative to CFG, with the
  shared-prefix sub-passes (the default) and, for the block-dropping methods, with plain recomputation;
- sampling throughput (samples × steps per second) of every method;
- training throughput of the toy trainer (width 64, 4 hidden layers, batch 4096, exact score
  matching on the tree2d preset), and, given --edm2 (a checkout of NVlabs/edm2), of its
  `toy_example.py` trained the same way on the CPU; their ratio is `train_speedup_vs_edm2`;
- the app's slider-to-redraw latency and the full figure regeneration time (skipped with --quick);
- achieved FLOP rate against this CPU's peak, where it applies.
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
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toy.diffusion import SamplerConfig, sample
from toy.guidance import MASK_METHODS, METHODS, GuidanceConfig
from toy.mixtures import ConditionalMixture, GaussianMixture, tree_branches
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


def _flops(fn, *args) -> float:
    """XLA's FLOP count of one call of a jitted function (loops counted once: use loop-free fns)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


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
    x, lab = jnp.zeros((2 * n, 2)), jnp.zeros(2 * n, jnp.int32)
    fwd_flops = _flops(lambda x: main(x, jnp.float32(1.0), lab), x)   # one batched (∅, c) pass
    cfg_gflops = evals * fwd_flops / secs["cfg"] / 1e9
    return {"n": n, "steps": steps, "solver": solver, "seconds": secs,
            "step_cost_vs_cfg": {k: secs[k] / secs["cfg"] for k in methods},
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

    # FLOPs of one step: the same loss and update, without the scan.
    step_flops = _flops(lambda s: run(s, None, 1), state)
    return {"iters": iters, "batch": batch, "seconds": secs, "steps_per_s": iters / secs,
            "samples_per_s": iters * batch / secs, "params": param_count(model),
            "gt_components": int(sum(c.means.shape[0] for c in mix.classes)),
            "gflops": iters * step_flops / secs / 1e9, "step_gflop": step_flops / 1e9,
            "network": "MLPDenoiser width 64, 2 residual blocks (4 hidden 64×64 layers + 2 embedding layers)"}


EDM2_DRIVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch, toy_example
iters, batch = int(sys.argv[2]), int(sys.argv[3])
dev = torch.device('cpu')
gt = toy_example.gt('A', dev)                       # built once (cached), as in do_train
net = toy_example.ToyModel(num_layers=4, hidden_dim=64)
t = time.perf_counter()
toy_example.do_train(classes='A', num_layers=4, hidden_dim=64, batch_size=batch, total_iter=iters,
                     viz_iter=None, pkl_pattern=None, device=dev)
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "params": sum(p.numel() for p in net.parameters()),
                  "gt_components": int(gt.mu.shape[0]), "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


def bench_train_edm2(path: str, python: str, iters: int, batch: int) -> dict:
    """NVlabs/edm2 toy_example.do_train on the CPU, run from the given checkout (never copied)."""
    if not (Path(path) / "toy_example.py").exists():
        raise SystemExit(f"--edm2 {path}: no toy_example.py there; give the path of an NVlabs/edm2 checkout")
    out = subprocess.run([python, "-c", EDM2_DRIVER, str(Path(path).resolve()), str(iters), str(batch)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"edm2 toy_example failed (python {python}):\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(iters=iters, batch=batch, steps_per_s=iters / res["seconds"], samples_per_s=iters * batch / res["seconds"],
               network="ToyModel 4 hidden layers × 64 (score by autograd of a log-density)")
    return res


# -- app and figures ------------------------------------------------------------------------------

def bench_app(repeats: int) -> dict:
    from bench.app_latency import measure
    res = measure(repeats)
    return {"median_s": max(v["median_s"] for v in res["slider_to_rerun"].values()), **res}


def bench_figures() -> dict:
    out = Path("/tmp") / f"bench-figures-{os.getpid()}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toy.figures", "--out", str(out)], check=True)
    return {"seconds": time.perf_counter() - t, "command": "python -m toy.figures", "models": "cached if present"}


# -- report ---------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    m, s = r["machine"], r["sampling"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, fp32 peak ≈ {m['peak_gflops']} GFLOP/s "
             f"({m['cores']} × {m['ghz']} GHz × {m['fp32_flops_per_cycle_per_core']}); JAX {m['jax']} on {m['backend']}.",
             "", f"Sampling: {s['n']} samples × {s['steps']} {s['solver'].capitalize()} steps, 2D, network width 64 × 8 blocks; "
             "block-dropping methods drop at every step.", "",
             "| method | step cost vs CFG (shared prefix) | plain recomputation | samples·steps/s |",
             "|---|---|---|---|"]
    for k in s["step_cost_vs_cfg"]:
        plain = s["step_cost_vs_cfg_plain"].get(k)
        lines.append(f"| {k} | {s['step_cost_vs_cfg'][k]:.2f}× | {f'{plain:.2f}×' if plain else '–'} | "
                     f"{s['samples_steps_per_s'][k]:,.0f} |")
    lines += ["", f"CFG sampling runs at {s['cfg_gflops']:.1f} GFLOP/s "
                  f"({100 * s['cfg_gflops'] / m['peak_gflops']:.0f}% of peak).", ""]
    t = r["train"]["toy"]
    lines += ["| trainer | steps/s | samples/s | params | GT components | GFLOP/s |", "|---|---|---|---|---|---|",
              f"| toy (JAX) | {t['steps_per_s']:.1f} | {t['samples_per_s']:,.0f} | {t['params']:,} | "
              f"{t['gt_components']} | {t['gflops']:.1f} ({100 * t['gflops'] / m['peak_gflops']:.0f}% of peak) |"]
    e = r["train"].get("edm2")
    if e:
        lines.append(f"| edm2 toy_example (PyTorch {e['torch']}) | {e['steps_per_s']:.1f} | {e['samples_per_s']:,.0f} | "
                     f"{e['params']:,} | {e['gt_components']} | – |")
        lines += ["", f"Training speed-up vs edm2: {r['train_speedup_vs_edm2']:.1f}× "
                      f"({t['iters']} iterations of batch {t['batch']} each)."]
    a, f = r.get("app_latency", {}), r.get("figures", {})
    lines += ["", (f"App slider → finished rerun at the app's defaults: {a['median_s']:.2f} s median of the slowest "
               f"slider (λ {a['slider_to_rerun']['lam']['median_s']:.2f} s, ω {a['slider_to_rerun']['omega']['median_s']:.2f} s)")
              if "median_s" in a else f"App latency: {a.get('skipped', '–')}",
              (f"Full figure regeneration: {f['seconds']:.0f} s" + (f" (stored measurement, {f['stored']})" if "stored" in f
                                                                   else "")) if "seconds" in f else
              f"Figure regeneration: {f.get('skipped', '–')}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, no app or figure timing (for the tests)")
    p.add_argument("--edm2", metavar="PATH", help="a checkout of NVlabs/edm2 to run its toy_example.py side by side")
    p.add_argument("--edm2-python", default=sys.executable, metavar="PY",
                   help="the Python with torch, click and matplotlib that runs edm2 (default: this one)")
    p.add_argument("--json", required=True, metavar="OUT.json")
    p.add_argument("--md", metavar="OUT.md", help="default: OUT.json with .md")
    p.add_argument("--skip-figures", action="store_true",
                   help="do not rerun the full figure regeneration (~13 min); report bench/figures_time.json instead")
    a = p.parse_args(argv)
    q = a.quick
    res = {"quick": q, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print("sampling …", flush=True)
    # --quick checks that everything runs: Euler (half the program to compile), few samples and steps
    res["sampling"] = bench_sampling(n=128 if q else 1000, steps=4 if q else 32, repeats=1 if q else 9,
                                     solver="euler" if q else "heun",
                                     methods=("cfg", "s2", "s2-naive") if q else METHODS)
    res["step_cost_vs_cfg"] = res["sampling"]["step_cost_vs_cfg"]
    iters, batch = (8, 512) if q else (256, 4096)
    print("training …", flush=True)
    res["train"] = {"toy": bench_train_toy(iters, batch, repeats=1 if q else 3)}
    if a.edm2:
        print("edm2 toy_example …", flush=True)
        res["train"]["edm2"] = bench_train_edm2(a.edm2, a.edm2_python, iters, batch)
        res["train_speedup_vs_edm2"] = res["train"]["toy"]["samples_per_s"] / res["train"]["edm2"]["samples_per_s"]
    if q:
        res["app_latency"] = {"skipped": "not measured with --quick (python -m bench.app_latency)"}
        res["figures"] = {"skipped": "not measured with --quick (python -m bench.figures_time)"}
    else:
        print("app latency …", flush=True)
        res["app_latency"] = bench_app(repeats=5)
        if a.skip_figures:
            stored = HERE / "figures_time.json"
            res["figures"] = ({**json.loads(stored.read_text()), "stored": str(stored.relative_to(HERE.parent))}
                              if stored.exists() else {"skipped": "--skip-figures and no bench/figures_time.json"})
        else:
            print("figures …", flush=True)
            res["figures"] = bench_figures()
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    Path(a.md or out.with_suffix(".md")).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
