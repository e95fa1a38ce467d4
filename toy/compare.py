"""`compare`: every chosen method on one preset, several seeds, every metric against the truth.

The result is plain JSON: {"preset", "settings", "methods": {METHOD: {METRIC: {"mean", "std"}}}}.
Rows `METHOD[exact]` use the closed-form denoiser (guidance bias alone, no model error); the row
`truth` scores fresh exact samples, the noise floor of every metric at this sample size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from toy.diffusion import SamplerConfig, sample
from toy.errors import NonFiniteError, ToyError, check_int
from toy.guidance import EXACT_METHODS, METHODS, GuidanceConfig
from toy.metrics import METRICS, evaluate
from toy.mixtures import get_preset
from toy.nets import ExactDenoiser
from toy.train import model_set_configs, train_models

DEFAULT_METHODS = ("none", "cfg", "autoguidance", "s2-naive", "s2")


@dataclass(frozen=True)
class CompareConfig:
    preset: str = "gmm2d"
    methods: tuple[str, ...] = DEFAULT_METHODS
    guidance: GuidanceConfig = GuidanceConfig()     # λ, ω, drop ratio, interval, N (method is per row)
    sampler: SamplerConfig = SamplerConfig()
    seeds: tuple[int, ...] = (0, 1, 2)
    label: int = 0                  # the class sampled and measured
    samples: int | None = None      # per method and seed; default 2000 quick, 10000 full
    exact: bool = False             # add METHOD[exact] rows for the exact-capable methods
    quick: bool = False             # quick-trained models and fewer samples
    weak: str = "small"             # Autoguidance's weak model: "small" or "early"
    train_seed: int = 0

    @property
    def num_samples(self) -> int:
        return self.samples if self.samples is not None else (2000 if self.quick else 10000)

    def validate(self) -> "CompareConfig":
        mixture = get_preset(self.preset)
        if not self.methods:
            raise ToyError(f"methods must name at least one of {', '.join(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                raise ToyError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
        if not self.seeds:
            raise ToyError("seeds must list at least one seed")
        for s in self.seeds:
            check_int("seed", s, low=0, high=2**31 - 1)
        check_int("label", self.label, low=0, high=mixture.num_classes - 1)
        check_int("samples", self.num_samples, low=10, high=1_000_000)
        if self.weak not in ("small", "early"):
            raise ToyError(f"weak model must be small or early, got {self.weak!r}")
        K = model_set_configs(self.preset, self.quick, self.train_seed)["main"].num_blocks
        for m in self.methods:     # every error surfaces before any training starts
            replace(self.guidance, method=m).validate(K)
        self.sampler.validate()
        return self


def _summary(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def run_compare(cfg: CompareConfig, *, folder: str | Path | None = None,
                progress: bool | Callable[[float, str], None] = True) -> dict:
    cfg = cfg.validate()
    mixture = get_preset(cfg.preset)
    target = mixture.cond(cfg.label)
    models = train_models(cfg.preset, quick=cfg.quick, seed=cfg.train_seed, folder=folder, progress=progress)
    rows: list[tuple[str, object, str]] = [(m, models["main"], m) for m in cfg.methods]
    if cfg.exact:
        rows += [(f"{m}[exact]", ExactDenoiser(mixture), m) for m in cfg.methods if m in EXACT_METHODS]
    n = cfg.num_samples
    per_row: dict[str, dict[str, list]] = {name: {k: [] for k in METRICS} for name, _, _ in rows}
    per_row["truth"] = {k: [] for k in METRICS}
    errors: dict[str, str] = {}
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cfg.seeds) * (len(rows) + 1), desc=f"compare {cfg.preset}", leave=False)
    for seed in cfg.seeds:
        key = jax.random.key(seed)
        ref = np.asarray(target.sample(jax.random.fold_in(key, 1), max(n, 5000)))            # [m, d]
        fresh = np.asarray(target.sample(jax.random.fold_in(key, 2), n))                     # [n, d]
        for k, v in evaluate(fresh, target, ref, seed=seed).items():
            per_row["truth"][k].append(v)
        if bar is not None:
            bar.update(1)
        for name, main, method in rows:
            if name in errors:
                continue
            gcfg = replace(cfg.guidance, method=method)
            try:
                x = sample(main, gcfg, cfg.sampler, jax.random.fold_in(key, 3), n, cfg.label,
                           weak=models[cfg.weak]).x                                           # [n, d]
            except NonFiniteError as e:
                errors[name] = str(e)
                continue
            for k, v in evaluate(np.asarray(x), target, ref, seed=seed).items():
                per_row[name][k].append(v)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(1.0, f"{name}, seed {seed}")
    if bar is not None:
        bar.close()
    g = cfg.guidance
    settings = {
        "label": cfg.label, "class_name": mixture.class_names[cfg.label], "seeds": list(cfg.seeds),
        "samples": n, "reference_samples": max(n, 5000), "guidance_scale": g.scale, "s2_scale": g.s2_scale,
        "drop_ratio": g.drop_ratio, "num_drop": g.num_drop, "exclude": list(g.exclude),
        "interval": list(g.interval), "num_masks": g.num_masks, "fixed_blocks": list(g.fixed_blocks),
        "sampler": dataclasses.asdict(cfg.sampler), "quick": cfg.quick, "weak_model": cfg.weak,
        "train": {role: c.to_dict() for role, c in model_set_configs(cfg.preset, cfg.quick, cfg.train_seed).items()},
    }
    methods = {name: {k: _summary(v) for k, v in metrics.items()} for name, metrics in per_row.items()
               if name not in errors}
    out = {"preset": cfg.preset, "settings": settings, "methods": methods}
    if errors:
        out["errors"] = errors
    return out


def format_table(result: dict) -> str:
    """A fixed-width table of mean ± std, one row per method."""
    cols = list(METRICS)
    head = f"{'method':<22}" + "".join(f"{c:>20}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, metrics in result["methods"].items():
        cells = []
        for c in cols:
            m = metrics[c]
            cells.append(f"{'n/a':>20}" if m["mean"] is None else f"{m['mean']:>11.4f} ± {m['std']:<6.4f}")
        lines.append(f"{name:<22}" + "".join(cells))
    for name, err in result.get("errors", {}).items():
        lines.append(f"{name:<22}failed: {err}")
    return "\n".join(lines)
