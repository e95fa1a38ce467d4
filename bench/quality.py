"""Time to quality against NVlabs/edm2's `toy_example.py`, on its own ~1,000-component tree.

The quality threshold is what edm2's own run reaches after a fixed number of its iterations: W1 of
10,000 unguided samples to exact samples of the tree, computed by our metric on edm2's samples (its
`do_sample` makes them). Ours trains on the same mixture (edm2's parameters, read from its run, not
copied code) with the same batch, evaluating the same way after every chunk, until it reaches that
threshold. Each side's seconds count training only; evaluations are excluded.

edm2 runs in a subprocess with the Python that has PyTorch (`--edm2-python`), from a checkout the
user gives (`--edm2`); nothing of it is imported here.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

EDM2_DRIVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch, toy_example
iters, batch, n, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = torch.device('cpu')
gt = toy_example.gt('A', dev)
# the exact tree, for the other side to train on and score against
mix = {"weights": gt.phi.tolist(), "means": gt.mu.tolist(), "covs": gt.Sigma.tolist()}
t = time.perf_counter()
net = None
import copy
orig_deepcopy = copy.deepcopy
def keep(obj, *a, **k):
    # do_train's first copy of its network is the EMA it updates in place and does not return: keep it
    global net
    r = orig_deepcopy(obj, *a, **k)
    if net is None and isinstance(obj, toy_example.ToyModel):
        net = r
    return r
copy.deepcopy = keep
toy_example.do_train(classes='A', num_layers=4, hidden_dim=64, batch_size=batch, total_iter=iters,
                     viz_iter=None, pkl_pattern=None, device=dev)
secs = time.perf_counter() - t
copy.deepcopy = orig_deepcopy
g = torch.Generator().manual_seed(0)
x0 = torch.randn([n, 2], generator=g) * 5.0
samples = toy_example.do_sample(net, x0)[-1].detach().numpy()
np.save(out, samples)
print(json.dumps({"seconds": secs, "iters": iters, "batch": batch, "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "mixture": mix,
                  "params": sum(p.numel() for p in net.parameters())}))
"""


def time_to_quality(step: Callable[[], None], evaluate: Callable[[], float], threshold: float, *, max_evals: int,
                    clock: Callable[[], float] = time.perf_counter) -> dict:
    """Alternate one training chunk (`step`) and one evaluation until an evaluation is at or below
    `threshold`; the seconds are the training chunks' alone (evaluations excluded)."""
    trained, history = 0.0, []
    for k in range(1, max_evals + 1):
        t = clock()
        step()
        trained += clock() - t
        value = float(evaluate())
        history.append((trained, value))
        if value <= threshold:
            return {"reached": True, "evals": k, "seconds": trained, "value": value, "history": history}
    return {"reached": False, "evals": max_evals, "seconds": trained, "value": history[-1][1], "history": history}


def run_edm2(path: str, python: str, iters: int, batch: int, n: int, workdir: Path) -> dict:
    if not (Path(path) / "toy_example.py").exists():
        raise SystemExit(f"--edm2 {path}: no toy_example.py there; give the path of an NVlabs/edm2 checkout")
    out = workdir / "edm2_samples.npy"
    r = subprocess.run([python, "-c", EDM2_DRIVER, str(Path(path).resolve()), str(iters), str(batch), str(n), str(out)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"edm2 toy_example failed (python {python}):\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["samples"] = np.load(out)
    return res


def edm2_tree(mix: dict):
    """edm2's tree as our ConditionalMixture (one class), from the parameters its run printed."""
    from toy.presets import from_dict
    return from_dict({"classes": [mix], "class_names": ["tree"], "name": "edm2-tree"}, name="edm2-tree")


def bench_time_to_quality(edm2: str, python: str, iters: int = 512, batch: int = 4096, n: int = 10_000,
                          chunk: int = 32, workdir: Path = Path("/tmp")) -> dict:
    """edm2 for `iters` iterations sets the threshold; ours trains on the same tree and batch until it reaches it."""
    from flax import nnx

    from toy.diffusion import SamplerConfig, sample
    from toy.guidance import GuidanceConfig
    from toy.metrics import wasserstein
    from toy.nets import LearnedDenoiser
    from toy.train import TrainConfig, chunk_runner, init_state, model_config

    e = run_edm2(edm2, python, iters, batch, n, workdir)
    mix = edm2_tree(e.pop("mixture"))
    target = mix.cond(0)
    ref = np.asarray(target.sample(jax.random.key(1), n))                                   # [n, 2]
    threshold = wasserstein(e.pop("samples"), ref)
    # The EMA as long, relative to the step budget, as edm2's (its power-function EMA has ema_std = 0.010):
    # a half-life of 1% of the 4 × iters budget. The default 4% made ours average over ~80 steps of a run
    # that reaches the threshold within a few hundred, so its EMA lagged its weights.
    tcfg = TrainConfig(preset="edm2-tree", width=64, num_blocks=2, steps=4 * iters, batch=batch, chunk=chunk,
                       loss="exact", warmup=0, ema_halflife=0.01).validate()
    mcfg = model_config(tcfg, mix)
    graphdef, params = nnx.split(mcfg.build(0))
    from toy.train import optimizer
    tx = optimizer(tcfg)
    run = chunk_runner(tcfg, mix, graphdef)
    box = {"state": init_state(params, tx)}
    run(box["state"], None, chunk)                       # compile once, outside the timed chunks
    box["state"] = init_state(params, tx)

    def step():
        box["state"], losses = run(box["state"], None, chunk)
        jax.block_until_ready(losses)

    def evaluate():
        D = LearnedDenoiser(graphdef, box["state"].ema, mcfg)
        x = sample(D, GuidanceConfig(method="none"), SamplerConfig(), jax.random.key(2), n, 0).x
        return wasserstein(np.asarray(x), ref)

    ours = time_to_quality(step, evaluate, threshold, max_evals=tcfg.steps // chunk)
    return {"threshold_w1": threshold, "edm2": {k: v for k, v in e.items()},
            "toy": {**{k: v for k, v in ours.items() if k != "history"}, "steps": ours["evals"] * chunk,
                    "history": [[float(a), float(b)] for a, b in ours["history"]], "chunk": chunk, "batch": batch,
                    "network": "MLPDenoiser width 64, 2 residual blocks (4 hidden 64×64 layers)"},
            "train_time_to_quality_vs_edm2": e["seconds"] / ours["seconds"] if ours["reached"] else None,
            "components": int(mix.cond(0).num_components)}
