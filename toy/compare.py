"""`compare`: every chosen method on one preset, several seeds, every metric against the truth.

The result is plain JSON: {"preset", "settings", "methods": {ROW: {METRIC: {"mean", "std"}}}}.
Rows `METHOD[exact]` use the closed-form denoiser (guidance bias alone, no model error); there
Autoguidance's weak model and S²'s sub-network are the ideal weak model, the truth blurred by δ
(`--ideal-blur`). The row `truth` scores fresh exact samples: the noise floor of every metric at
this sample size. Scoring is `toy.evaluation`'s, as everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from toy import evaluation as E
from toy.diffusion import SamplerConfig
from toy.errors import NonFiniteError, ToyError, check_finite, check_int
from toy.guidance import METHODS, REGISTRY, GuidanceConfig, interval_problem, parse_methods
from toy.metrics import METRICS, metric_label
from toy.presets import get_preset
from toy.nets import ExactDenoiser
from toy.train import model_set_configs, train_models

DEFAULT_METHODS = ("none", "cfg", "autoguidance", "s2-naive", "s2")
MODELS = ("main", "blockdrop")            # the networks CFG and S² can guide
WEAK_MODELS = ("small", "early")          # Autoguidance's weak models


@dataclass(frozen=True)
class CompareConfig:
    preset: str = "gmm2d"
    methods: tuple[str, ...] = DEFAULT_METHODS
    guidance: GuidanceConfig = GuidanceConfig()     # λ, ω, drop ratio, interval, N (method is per row)
    sampler: SamplerConfig = SamplerConfig()
    seeds: tuple[int, ...] = (0, 1, 2)
    label: int = 0                  # the class sampled and measured
    samples: int | None = None      # per method and seed; default 2000 quick, 10000 full
    exact: bool = False             # add METHOD[exact] rows for the methods that run on the exact denoiser
    quick: bool = False             # quick-trained models and fewer samples
    model: str = "main"             # the network guided: "main" or "blockdrop"
    weak: str = "small"             # Autoguidance's weak model: "small" or "early"
    ideal_blur: float = 1.0         # δ of the ideal weak model in the [exact] rows
    train_seed: int = 0

    @property
    def num_samples(self) -> int:
        return self.samples if self.samples is not None else (2000 if self.quick else 10000)

    def validate(self) -> "CompareConfig":
        """Every error surfaces here, before any training or sampling."""
        mixture = get_preset(self.preset)
        methods = parse_methods(self.methods)
        if not self.seeds:
            raise ToyError("seeds must list at least one seed")
        for s in self.seeds:
            check_int("seed", s, low=0, high=2**31 - 1)
        if len(set(self.seeds)) != len(self.seeds):
            raise ToyError(f"seeds lists a seed more than once: {list(self.seeds)}")
        check_int("label", self.label, low=0, high=mixture.num_classes - 1)
        check_int("samples", self.num_samples, low=10, high=1_000_000)
        if self.model not in MODELS:
            raise ToyError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.weak not in WEAK_MODELS:
            raise ToyError(f"weak model must be small or early, got {self.weak!r}")
        check_finite("ideal blur δ", self.ideal_blur, low=0.0)
        K = model_set_configs(self.preset, self.quick, self.train_seed)[self.model].num_blocks
        for m in methods:
            replace(self.guidance, method=m).validate(K)
            problem = interval_problem(replace(self.guidance, method=m), self.sampler.validate().steps)
            if problem:
                raise ToyError(problem)
        return replace(self, methods=methods, sampler=self.sampler.validate(), seeds=tuple(int(s) for s in self.seeds))


def run_compare(cfg: CompareConfig, *, folder: str | Path | None = None,
                progress: bool | Callable[[float, str], None] = True, models: dict | None = None,
                runs: E.Runs | None = None) -> dict:
    """Every method of `cfg` against the truth over its seeds. `models`: the preset's model set when the
    caller holds it already (else trained or loaded here); `runs`: an `E.Runs` shared with other
    panels, whose runs are then reused (the figures)."""
    cfg = cfg.validate()
    mixture = get_preset(cfg.preset)
    target = mixture.cond(cfg.label)
    runs = runs if runs is not None else E.Runs()
    if models is None:
        models = train_models(cfg.preset, quick=cfg.quick, seed=cfg.train_seed, folder=folder, progress=progress,
                              roles=tuple(dict.fromkeys((cfg.model, cfg.weak))))
    exact = ExactDenoiser(mixture, ideal_blur=cfg.ideal_blur)
    rows = [(m, models[cfg.model], models[cfg.weak], m) for m in cfg.methods]
    if cfg.exact:
        rows += [(f"{m}[exact]", exact, exact.weak(), m) for m in cfg.methods if REGISTRY[m].exact]
    n = cfg.num_samples
    per_row: dict[str, dict[str, list]] = {name: {k: [] for k in METRICS} for name, *_ in rows + [("truth",)]}
    errors: dict[str, str] = {}
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cfg.seeds) * (len(rows) + 1), desc=f"compare {cfg.preset}", leave=False)
    for seed in cfg.seeds:
        ref = runs.reference(target, seed, n)
        for k, v in E.score(E.truth_samples(target, seed, n), ref).items():
            per_row["truth"][k].append(v)
        for name, main, weak, method in rows:
            if name not in errors:
                try:
                    _, scores, _ = runs.sample_and_score(main, replace(cfg.guidance, method=method), cfg.sampler,
                                                         ref, cfg.label, n, weak=weak)
                except NonFiniteError as e:
                    errors[name] = str(e)
                else:
                    for k, v in scores.items():
                        per_row[name][k].append(v)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(1.0, f"{name}, seed {seed}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    g = cfg.guidance
    settings = {
        "label": cfg.label, "class_name": mixture.class_names[cfg.label], "seeds": list(cfg.seeds),
        "samples": n, "reference_samples": E.reference_size(n), "evaluation": dataclasses.asdict(E.DEFAULT),
        "guidance_scale": g.scale, "s2_scale": g.s2_scale,
        "drop_ratio": g.drop_ratio, "num_drop": g.num_drop, "exclude": list(g.exclude),
        "interval": list(g.interval), "num_masks": g.num_masks, "fixed_blocks": list(g.fixed_blocks),
        "sampler": dataclasses.asdict(cfg.sampler), "quick": cfg.quick, "model": cfg.model, "weak_model": cfg.weak,
        "ideal_blur": cfg.ideal_blur,
        "train": {role: c.to_dict() for role, c in model_set_configs(cfg.preset, cfg.quick, cfg.train_seed).items()},
    }
    methods = {name: {k: E.summarize(v) for k, v in metrics.items()} for name, metrics in per_row.items()
               if name not in errors}
    out = {"preset": cfg.preset, "settings": settings, "methods": methods}
    if errors:
        out["errors"] = errors
    return out


def format_table(result: dict) -> str:
    """A fixed-width table of mean ± std, one row per method."""
    cols = list(METRICS)
    head = f"{'method':<22}" + "".join(f"{metric_label(c):>20}" for c in cols)
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


__all__ = ["CompareConfig", "run_compare", "format_table", "DEFAULT_METHODS", "MODELS", "WEAK_MODELS", "METHODS"]
