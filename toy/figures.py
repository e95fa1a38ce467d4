"""Regenerate every figure, the results table, the mechanism tables and the claims, against the exact truth.

    python -m toy.figures [--quick] [--only NAME ...] [--out figures]

Every PNG carries a caption with the seeds and settings that made it. `--quick` uses fewer samples,
seeds and sweep points (the tests run it); the full setting is what `figures/` holds. Both use the
quick-trained model sets of `toy.train` (shipped with the package, else trained once and cached).
Scoring is `toy.evaluation`'s; drawing is `toy.plotting`'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from toy import claims as C
from toy import evaluation as E
from toy import files, plugins
from toy import plotting as P
from toy.compare import MODELS, CompareConfig, run_compare
from toy.diffusion import SamplerConfig
from toy.errors import ToyError
from toy.guidance import METHODS, GuidanceConfig, label, num_dropped
from toy import mechanism as M
from toy.mechanism import MechanismConfig, analyze, interval_for_sigma, regime_effect
from toy.metrics import METRICS, metric_label
from toy.presets import get_preset
from toy.nets import ExactDenoiser
from toy.runtime import cache_dir, enable_compilation_cache, setup
from toy.settings import BUILTIN, parse_assignments
from toy.shipped import regime_config
from toy.train import model_set_configs, train, train_models

TOY_FIGURES = ("fig3_1d", "fig3_2d", "fig3_2d4", "fig9_trajectories_1d", "fig10_naive_vs_single", "fig8_num_passes",
               "fig7_ablations", "fig_tree2d_all_methods", "results", "fig_s2_mechanism", "fig_s2_ideal",
               "fig_s2_regimes", "claims")
PIPELINE_FIGURES = ("fig4_tsne", "fig15_fixed_block_grid", "images_results")   # one run of the DiT experiment
IMAGE_FIGURES = PIPELINE_FIGURES + ("fig_s2_transformer",)                        # the figures that need toy.images
FIGURES = TOY_FIGURES + IMAGE_FIGURES
PAPER = GuidanceConfig(scale=3.0, s2_scale=0.25)         # the paper's defaults, λ = 3
MAIN_METHODS = ("cfg", "autoguidance", "s2-naive", "s2")
MECH_PRESETS = ("gmm1d", "gmm2d")
RESULT_PRESETS = ("gmm1d", "gmm2d", "gmm2d4", "tree2d")
PAPER_DEPTH = 28                                         # SiT-XL/DiT-XL: 28 blocks
TITLE_METRICS = ("wasserstein", "mode_shift")           # what the sample panels' titles read


@dataclass(frozen=True)
class Settings:
    samples: int
    seeds: tuple[int, ...]
    lambdas: tuple[float, ...]
    omegas: tuple[float, ...]
    num_masks: tuple[int, ...]
    widths: tuple[float, ...]            # widths of the central application interval
    drops: tuple[int, ...]               # blocks dropped per mask
    deltas: tuple[float, ...]            # δ of the ideal weak model
    mech_samples: int
    mech_masks: int
    regimes: dict                        # axis → values (network width, depth, training steps, block_drop)
    sigma_windows: tuple[tuple[float, float], ...]
    fixed_blocks: str                    # "all" droppable blocks, or their "ends" (first and last)
    steps: int                           # Heun steps of every sampler run
    network: str = "main"                # the network CFG and S² guide: "main" or "blockdrop"
    extra: tuple = ()                    # plugin methods' own settings, (name, value) pairs (--set)
    quick: bool = False

    @property
    def mlp_depths(self) -> tuple[int, ...]:
        """The MLP depths of the transformer comparison: the regime sweep's, else the shipped 4 and main's 8."""
        return tuple(self.regimes.get("depth", (4, 8)))

    @classmethod
    def make(cls, quick: bool, network: str = "main", extra: tuple = ()) -> "Settings":
        if network not in MODELS:
            raise ToyError(f"--model {network!r}: choose {' or '.join(MODELS)}")
        return replace(cls._make(quick), network=network, extra=tuple(sorted(extra)), quick=quick)

    @classmethod
    def _make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(300, (0, 1), (1.0, 3.0), (0.0, 0.25, 1.0), (1, 4), (0.0, 0.8), (1, 3), (0.5, 1.0),
                       300, 4, {"steps": (750, 1500), "block_drop": (0.0, 0.1)},   # shapes of the main network only
                       ((0.002, 0.3), (1.0, 80.0)), "ends", 16)
        return cls(2000, (0, 1, 2, 3, 4), (1.0, 2.0, 3.0, 5.0, 7.0), (0.0, 0.1, 0.25, 0.5, 1.0, 2.0),
                   (1, 2, 4, 8), (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), (1, 2, 3, 5, 7), (0.5, 1.0, 2.0), 2000, 16,
                   {"width": (32, 64, 128), "depth": (4, 8, 12, 16, PAPER_DEPTH), "steps": (500, 1500, 6000),
                    "block_drop": (0.0, 0.1, 0.3)},
                   ((0.002, 0.3), (0.3, 1.0), (1.0, 3.0), (3.0, 80.0)), "all", 32)

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(steps=self.steps)


class Lab:
    """Models, exact references and one `run` that samples and scores a method on a preset."""

    def __init__(self, st: Settings):
        self.st = st
        self.models, self.variants, self.references = {}, {}, {}
        self.runs = E.Runs()        # panels that share a run (same network, settings and seed) draw it once

    def model_set(self, preset):
        if preset not in self.models:
            self.models[preset] = train_models(preset, quick=True, progress=True)
        return self.models[preset]

    def variant(self, preset, axis, value):
        """The main network of a preset with one training setting changed (the regime sweep)."""
        cfgs = model_set_configs(preset, quick=True)
        base = cfgs["main"]
        tcfg = regime_config(preset, axis, value)
        if replace(tcfg, snapshot=base.snapshot) == base:
            return self.model_set(preset)["main"]
        if tcfg == cfgs["blockdrop"]:
            return self.model_set(preset)["blockdrop"]
        key = (preset, axis, value)
        if key not in self.variants:
            self.variants[key] = train(tcfg, tag=f"{axis}-{value}", progress=True).model
        return self.variants[key]

    def reference(self, preset):
        """The network cos_ref measures the error against (main trained 4× as long; ships)."""
        if preset not in self.references:
            self.references[preset] = M.reference_network(preset, progress=True)
        return self.references[preset]

    def ref(self, preset, seed):
        return self.runs.reference(get_preset(preset).cond(0), seed, self.st.samples)

    def run(self, preset, gcfg, seed, *, model=None, weak="small", exact=None, trajectory=False, metrics=None):
        """model: "main", "blockdrop" (default: the settings' network), or "exact" (then `exact` may
        give the ExactDenoiser to use). Made once per distinct run (`E.Runs`); with `trajectory` the
        result carries the sampler's states (the same compiled program either way). `metrics`: the
        ones the caller reads (default: all), each scored once per run."""
        model = model or self.st.network
        gcfg = replace(gcfg, extra=self.st.extra)           # a plugin's own settings (the paper's otherwise)
        if model == "exact":
            main = exact or ExactDenoiser(get_preset(preset))
            w = None
        else:
            models = self.model_set(preset)
            main, w = models[model], models[weak]
        return self.runs.sample_and_score(main, gcfg, self.st.sampler, self.ref(preset, seed), 0, self.st.samples,
                                          weak=w, return_trajectory=trajectory, metrics=metrics)

    def sweep(self, preset, gcfgs, metric="wasserstein", **kw):
        """[len(gcfgs), len(seeds)] values of one metric."""
        return np.array([[self.run(preset, g, s, metrics=(metric,), **kw)[1][metric] for s in self.st.seeds]
                         for g in gcfgs])


def train_networks(lab: Lab) -> list[str]:
    """Train (or load) every network the toy figures use: the model sets and the regime sweep's
    variants; returns their names. A timed run after this measures the figures alone."""
    names = []
    for preset in RESULT_PRESETS:
        names += [f"{preset}/{role}" for role in lab.model_set(preset)]
    for preset in MECH_PRESETS:
        lab.reference(preset)
        names.append(f"{preset}/reference")
    for preset in MECH_PRESETS:
        for axis, values in lab.st.regimes.items():
            for v in values:
                lab.variant(preset, axis, v)
                names.append(f"{preset}/{axis}={v}")
    return names


def shape(preset: str = "gmm1d") -> tuple[int, int, int]:
    """(width, blocks, droppable blocks) of the main network, from its training config."""
    main = model_set_configs(preset, quick=True)["main"]
    return main.width, main.num_blocks, main.num_blocks - len(PAPER.exclude)


def settings_line(st: Settings, extra=""):
    width, blocks, droppable = shape()
    k = num_dropped(blocks, PAPER.exclude, PAPER.drop_ratio, PAPER.num_drop)
    main = model_set_configs("gmm1d", quick=True)["main"]
    return (f"seeds {list(st.seeds)}, {st.samples} samples per panel, {st.steps} Heun steps (EDM, ρ = 7), "
            f"MLP width {width} × {blocks} blocks trained {main.steps} steps; λ = {PAPER.scale}, ω = {PAPER.s2_scale}, "
            f"{k} of {droppable} droppable blocks dropped, interval {PAPER.interval}, N = {PAPER.num_masks} for naive "
            f"S²{'' if st.network == 'main' else f'; the {st.network} network guided'}{'; ' + extra if extra else ''}")


def finish(fig, out: Path, name: str, caption: str) -> None:
    P.caption(fig, caption)
    P.save(fig, out / f"{name}.png")


def density_panels(lab: Lab, preset: str, methods, name: str, out: Path, max_cols: int = 3):
    mix = get_preset(preset)
    target = mix.cond(0)
    seed = lab.st.seeds[0]
    window = P.density_window(target)
    fig, axes = P.panels(len(methods) + 1, max_cols=max_cols, size=(3.0, 2.9), title_lines=1)
    P.SamplesArtist(axes[0], window).set(E.truth_samples(target, seed, lab.st.samples))
    axes[0].set_title("exact samples", fontsize=9)
    for ax, m in zip(axes[1:], methods):
        x, met, _ = lab.run(preset, replace(PAPER, method=m), seed, metrics=TITLE_METRICS)
        P.SamplesArtist(ax, window).set(x)
        ax.set_title(f"{label(m)}\nW1 {met['wasserstein']:.2f}, shift {met['mode_shift']:.2f}", fontsize=9)
    fig.suptitle(f"{preset}, class 0 ({mix.class_names[0]}): samples over the exact conditional density", fontsize=10)
    finish(fig, out, name, settings_line(lab.st, f"panel seed {seed}"))


def fig9(lab: Lab, out: Path):
    methods = ("none", "cfg", "autoguidance", "s2-naive", "s2")
    target = get_preset("gmm1d").cond(0)
    window = P.density_window(target)
    seed = lab.st.seeds[0]
    fig, axes = P.panels(len(methods), max_cols=3, size=(3.0, 3.0))
    for ax, m in zip(axes, methods):
        _, _, r = lab.run("gmm1d", replace(PAPER, method=m), seed, trajectory=True, metrics=())
        P.TrajectoryArtist(ax, window).set(np.asarray(r.trajectory)[:, :60], marks=tuple(target.means[:, 0]))
        ax.set_title(label(m), fontsize=9)
    axes[0].set_ylabel("x")
    fig.suptitle("gmm1d: denoising trajectories (true modes dotted)", fontsize=10)
    finish(fig, out, "fig9_trajectories_1d", settings_line(lab.st, f"60 trajectories of seed {seed}"))


def fig10(lab: Lab, out: Path):
    seeds = lab.st.seeds[:3] if len(lab.st.seeds) >= 3 else (lab.st.seeds + (7,))[:3]
    window = P.density_window(get_preset("gmm2d").cond(0))
    fig, axes = P.panels(2 * len(seeds), max_cols=len(seeds), size=(3.0, 3.0))
    for j, seed in enumerate(seeds):
        for i, m in enumerate(("s2-naive", "s2")):
            x, met, _ = lab.run("gmm2d", replace(PAPER, method=m), seed, metrics=TITLE_METRICS)
            ax = axes[i * len(seeds) + j]
            P.SamplesArtist(ax, window).set(x)
            ax.set_title(f"{label(m)}, seed {seed}\nW1 {met['wasserstein']:.3f}, shift {met['mode_shift']:.3f}",
                         fontsize=9)
    fig.suptitle(f"gmm2d: naive S² (N = {PAPER.num_masks} masks per step) vs S² (one fresh mask per step)", fontsize=10)
    finish(fig, out, "fig10_naive_vs_single", settings_line(lab.st, f"seeds {list(seeds)}"))


def errorbars(ax, xs, vals, label_, **kw):
    """Mean ± std over seeds of vals [len(xs), seeds]."""
    ax.errorbar(xs, vals.mean(1), vals.std(1, ddof=1) if vals.shape[1] > 1 else 0 * vals[:, 0],
                **{"marker": "o", "capsize": 2, **kw}, label=label_)


def summary(vals: np.ndarray) -> dict:
    """{"mean": [...], "std": [...]} over seeds of vals [G, seeds] (evaluation.summarize per row)."""
    rows = [E.summarize(v) for v in vals]
    return {"mean": [r["mean"] for r in rows], "std": [r["std"] for r in rows]}


def fig8(lab: Lab, out: Path) -> dict:
    cfg_w = lab.sweep("gmm1d", [replace(PAPER, method="cfg")])[0]                  # [S]
    naive = lab.sweep("gmm1d", [replace(PAPER, method="s2-naive", num_masks=n) for n in lab.st.num_masks])
    single = lab.sweep("gmm1d", [replace(PAPER, method="s2")])[0]
    gain = cfg_w[None] - naive                                                     # [len(N), S]
    fig, axes = P.panels(1, size=(5.0, 3.4))
    ax = axes[0]
    errorbars(ax, lab.st.num_masks, gain, "naive S², N masks per step")
    g1 = E.summarize(cfg_w - single)
    ax.axhline(g1["mean"], color="C1", ls="--", label=f"S², one mask per step ({g1['mean']:.3f} ± {g1['std']:.3f})")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (sub-network passes per step)")
    ax.set_ylabel("W1 gain over CFG (higher is better)")
    ax.legend(fontsize=8)
    ax.set_title("gmm1d: gain against the number of sub-network passes", fontsize=10)
    finish(fig, out, "fig8_num_passes", settings_line(lab.st))
    s = summary(gain)
    return {"num_masks": list(lab.st.num_masks), "gain_mean": s["mean"], "gain_std": s["std"],
            "single_gain_mean": g1["mean"], "single_gain_std": g1["std"]}


def fig7(lab: Lab, out: Path) -> dict:
    st, Pr = lab.st, "gmm1d"
    res = {}
    fig, axes = P.panels(5, max_cols=3, size=(4.2, 3.3))
    cfg_l = lab.sweep(Pr, [replace(PAPER, method="cfg", scale=v) for v in st.lambdas])
    s2_l = lab.sweep(Pr, [replace(PAPER, method="s2", scale=v) for v in st.lambdas])
    errorbars(axes[0], st.lambdas, cfg_l, "CFG")
    errorbars(axes[0], st.lambdas, s2_l, "S²")
    axes[0].set_xlabel("guidance scale λ")
    axes[0].legend(fontsize=8)
    axes[0].set_title("(a) λ sweep", fontsize=10)
    res["lambda"] = {"values": list(st.lambdas), "cfg": summary(cfg_l), "s2": summary(s2_l)}
    om = lab.sweep(Pr, [replace(PAPER, method="s2", s2_scale=v) for v in st.omegas])
    errorbars(axes[1], st.omegas, om, "S² (ω = 0 is CFG)")
    axes[1].set_xlabel("S² scale ω")
    axes[1].set_title(f"(b) ω sweep, λ = {PAPER.scale}", fontsize=10)
    res["omega"] = {"values": list(st.omegas), **summary(om)}
    res["fixed"] = {}
    _, blocks, _ = shape()
    droppable = [b for b in range(blocks) if b not in PAPER.exclude]
    if st.fixed_blocks == "ends":
        droppable = [droppable[0], droppable[-1]]
    for i, preset in enumerate(("gmm1d", "gmm2d")):
        fx = lab.sweep(preset, [replace(PAPER, method="fixed-block", fixed_blocks=(b,)) for b in droppable])
        sto = lab.sweep(preset, [replace(PAPER, method="s2")])[0]
        errorbars(axes[2], np.array(droppable) + (0.15 if i else -0.15), fx, f"fixed block, {preset}", ls="none")
        axes[2].axhline(sto.mean(), ls="--", color=f"C{i}", lw=1, label=f"stochastic S², {preset}")
        s, t = summary(fx), E.summarize(sto)
        res["fixed"][preset] = {"blocks": droppable, "fixed_mean": s["mean"], "fixed_std": s["std"],
                                "stochastic_mean": t["mean"], "stochastic_std": t["std"]}
    axes[2].set_xlabel("the one dropped block")
    axes[2].legend(fontsize=7)
    axes[2].set_title("(c/d) fixed block vs stochastic", fontsize=10)
    wd = lab.sweep(Pr, [replace(PAPER, method="s2", interval=(0.5 - w / 2, 0.5 + w / 2)) for w in st.widths])
    errorbars(axes[3], st.widths, wd, "S²")
    axes[3].set_xlabel("width of the central interval (0 = CFG)")
    axes[3].set_title("(e) application interval", fontsize=10)
    res["interval"] = {"values": list(st.widths), **summary(wd)}
    dr = lab.sweep(Pr, [replace(PAPER, method="s2", num_drop=k) for k in st.drops])
    errorbars(axes[4], st.drops, dr, "S²")
    axes[4].set_xlabel(f"blocks dropped per mask (of {blocks - len(PAPER.exclude)})")
    axes[4].set_title("(Table 4) number dropped", fontsize=10)
    res["drops"] = {"values": list(st.drops), **summary(dr)}
    for ax in axes:
        ax.set_ylabel("W1 to the truth (lower is better)")
    fig.suptitle("Ablations on gmm1d (c/d also on gmm2d); mean ± std over seeds", fontsize=11)
    finish(fig, out, "fig7_ablations", settings_line(st))
    return res


def results(lab: Lab, out: Path) -> dict:
    allres = {}
    for preset in RESULT_PRESETS:
        lab.model_set(preset)
        cfg = CompareConfig(preset=preset, methods=METHODS, guidance=replace(PAPER, extra=lab.st.extra), seeds=lab.st.seeds,
                            samples=lab.st.samples, exact=True, quick=True, sampler=lab.st.sampler,
                            model=lab.st.network)
        allres[preset] = run_compare(cfg, progress=False, models=lab.model_set(preset), runs=lab.runs)
    files.write_json(out / "toy_results.json", allres)
    lines = ["# Toy results: every method against the exact truth", "",
             f"Class 0 of each preset; {settings_line(lab.st)}. Mean ± std over seeds. "
             "`(exact)` rows use the closed-form denoiser (guidance bias alone; Autoguidance and S² there use the "
             "ideal weak model, the truth blurred by δ = 1); `truth` is fresh exact samples (the noise floor). "
             "↓: lower is better, ↑: higher, → 1: best at 1 (W1 is the Wasserstein distance; the JSON keeps the "
             "metrics' code names).", ""]
    for preset, res in allres.items():
        lines += [f"## {preset}", "", "| method | " + " | ".join(map(metric_label, METRICS)) + " |",
                  "|---" * (len(METRICS) + 1) + "|"]
        for name, msd in res["methods"].items():
            cells = ["n/a" if msd[k]["mean"] is None else f"{msd[k]['mean']:.3f} ± {msd[k]['std']:.3f}" for k in METRICS]
            lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
        for name, err in res.get("errors", {}).items():
            lines.append(f"| {label(name)} | failed: {err} |")
        lines.append("")
    files.write_text(out / "toy_results.md", "\n".join(lines))
    return allres


def fig_tree(lab: Lab, out: Path):
    density_panels(lab, "tree2d", [m for m in METHODS if m != "none"], "fig_tree2d_all_methods", out, max_cols=4)


# -- why S² helps or hurts -----------------------------------------------------------------------

MECH_MODELS = ("main", "blockdrop", "ideal")
MECH_STYLE = {"main": dict(color="C0"), "blockdrop": dict(color="C2"), "ideal": dict(color="k", ls="--")}
MECH_LABEL = {"main": "main network", "blockdrop": "block-dropout network", "ideal": "ideal weak model (δ = 1)"}


def shade_interval(ax, sigmas, color: str) -> None:
    """Grey behind the σ where S² acts at the paper's interval (from the step at ⌊0.1·(T − 1)⌋ to the one
    at ⌈0.9·(T − 1)⌉: up to a step wider than the steps it acts on)."""
    T = len(sigmas)
    ax.axvspan(sigmas[int(np.ceil(PAPER.interval[1] * (T - 1)))], sigmas[int(PAPER.interval[0] * (T - 1))],
               color=color, zorder=0)


def interval_median(res: dict, key: str) -> float:
    """Median of a mechanism series over the σ where S² acts at the paper's interval."""
    return M.interval_median(res, key, PAPER.interval)


def mechanism(lab: Lab, out: Path) -> dict:
    st = lab.st
    res = {}
    for preset in MECH_PRESETS:
        models = lab.model_set(preset)
        for m in MECH_MODELS:
            cfg = MechanismConfig(preset=preset, model=m, quick=True, samples=st.mech_samples, masks=st.mech_masks,
                                  seed=st.seeds[0], guidance=replace(PAPER, method="cfg"), sampler=st.sampler)
            res.setdefault(preset, {})[m] = analyze(cfg, progress=False, models=models,
                                                    reference=None if m == "ideal" else lab.reference(preset))
    keys = ("alpha", "beta", "cos_error")
    fig, axes = P.panels(len(MECH_PRESETS) * len(keys), max_cols=3, size=(4.0, 3.1), title_lines=2)
    for i, preset in enumerate(MECH_PRESETS):
        for j, k in enumerate(keys):
            ax = axes[i * len(keys) + j]
            for m in MECH_MODELS:
                r = res[preset][m]
                ax.plot(r["sigmas"], r[k], marker=".", ms=3, label=MECH_LABEL[m], **MECH_STYLE[m])
                if k == "cos_error" and "cos_ref" in r:       # the proxy images use, beside the truth
                    ax.plot(r["sigmas"], r["cos_ref"], ls=":", lw=1.2, color=MECH_STYLE[m]["color"],
                            label=f"{MECH_LABEL[m]}: cos_ref")
            ax.set_xscale("log")
            ax.axhline(0, color="0.5", lw=0.6)
            shade_interval(ax, r["sigmas"], "0.9")
            ax.set_xlabel("σ")
            ax.set_title(f"{preset}: {dict(alpha='α (CFG direction)', beta='β (denoising direction)', cos_error='cos(s, model error): true (solid), vs reference net (dotted)')[k]}",
                         fontsize=9)
            if k == "cos_error":
                ax.set_ylim(-1.05, 1.05)
    axes[0].legend(fontsize=7)
    fig.suptitle("The S² signal s = D_c − D̂_c(m) ≈ α·(D_c − D_∅) + β·(D_c − x) along the CFG sampler (grey: where S² "
                 "acts)\nα > 0: S² adds CFG; β > 0: S² pulls onto the class's modes; cos > 0: S² moves toward the truth",
                 fontsize=9)
    finish(fig, out, "fig_s2_mechanism", f"seed {st.seeds[0]}, {st.mech_samples} CFG sampler states per σ, "
                                         f"{st.mech_masks} masks per σ as S² draws them; {settings_line(st)}")
    table = {p: {m: {k: interval_median(r, k) for k in ("alpha", "beta", "r2", "cos_error", "cos_ref", "ratio")
                     if k in r} for m, r in ms_.items()} for p, ms_ in res.items()}
    proxy = {p: {m: M.proxy_agreement(r, PAPER.interval) for m, r in ms_.items() if "cos_ref" in r}
             for p, ms_ in res.items()}
    return {"series": res, "interval_medians": table, "proxy": proxy}


def fig_ideal(lab: Lab, out: Path) -> dict:
    st = lab.st
    keys = ("mode_shift", "spread_ratio", "wasserstein")
    res = {}
    fig, axes = P.panels(len(MECH_PRESETS) * len(keys), max_cols=3, size=(4.0, 3.1))
    for i, preset in enumerate(MECH_PRESETS):
        mix = get_preset(preset)
        r = {"omegas": list(st.omegas), "deltas": list(st.deltas)}
        for k in keys:
            r[k] = {"mean": [], "std": []}
        for delta in st.deltas:
            exact = ExactDenoiser(mix, ideal_blur=delta)
            mets = [[lab.run(preset, replace(PAPER, method="s2", s2_scale=w), s, model="exact", exact=exact,
                             metrics=keys)[1] for s in st.seeds] for w in st.omegas]
            vals = {k: np.array([[m[k] for m in row] for row in mets]) for k in keys}          # [ω, seeds] each
            for j, k in enumerate(keys):
                errorbars(axes[i * len(keys) + j], st.omegas, vals[k], f"δ = {delta}")
                s = summary(vals[k])
                r[k]["mean"].append(s["mean"])
                r[k]["std"].append(s["std"])
        res[preset] = r
        for j, k in enumerate(keys):
            ax = axes[i * len(keys) + j]
            ax.set_xlabel("S² scale ω (0 is exact CFG)")
            ax.set_title(f"{preset}: {k}", fontsize=9)
            if k == "spread_ratio":
                ax.axhline(1, color="k", lw=0.6)
        axes[i * len(keys)].legend(fontsize=7)
    fig.suptitle("S² on the exact denoiser with an ideal weak sub-network (the truth blurred by δ): "
                 f"λ = {PAPER.scale}; mean ± std over seeds", fontsize=10)
    finish(fig, out, "fig_s2_ideal", settings_line(st, "exact denoiser, no network"))
    return res


def fig_regimes(lab: Lab, out: Path) -> dict:
    """S² − CFG (mode shift, spread, W1) against network width, depth, training steps, block_drop
    and the σ window where S² acts."""
    st = lab.st
    gcfg = replace(PAPER, method="s2")
    axes_names = list(st.regimes) + (["depth_one_block"] if "depth" in st.regimes else []) + ["sigma_window"]
    res = {}
    fig, axes = P.panels(len(MECH_PRESETS) * len(axes_names), max_cols=len(axes_names), size=(3.3, 3.0),
                         title_lines=2)
    for i, preset in enumerate(MECH_PRESETS):
        res[preset] = {}
        for j, axis in enumerate(axes_names):
            if axis == "sigma_window":
                values = [f"{lo:g}–{hi:g}" for lo, hi in st.sigma_windows]
                main = lab.model_set(preset)["main"]
                runs = [regime_effect(main, preset, replace(gcfg, interval=interval_for_sigma(
                                          st.sampler, lo, hi, main.sigma_data)), st.sampler,
                                      st.seeds, st.samples, runs=lab.runs) for lo, hi in st.sigma_windows]
            elif axis == "depth_one_block":         # the depths again, one block dropped instead of ~10%
                values = list(st.regimes["depth"])
                runs = [regime_effect(lab.variant(preset, "depth", v), preset, replace(gcfg, num_drop=1), st.sampler,
                                      st.seeds, st.samples, runs=lab.runs) for v in values]
            else:
                values = list(st.regimes[axis])
                runs = [regime_effect(lab.variant(preset, axis, v), preset, gcfg, st.sampler, st.seeds, st.samples,
                                      runs=lab.runs) for v in values]
            res[preset][axis] = {"values": values, "runs": runs}
            ax = axes[i * len(axes_names) + j]
            xs = np.arange(len(values))
            for k, (metric, style) in enumerate((("mode_shift", "o-"), ("spread_ratio", "s--"), ("wasserstein", "^:"))):
                mean = np.array([r["effect"][metric]["mean"] for r in runs], np.float64)
                std = np.array([r["effect"][metric]["std"] for r in runs], np.float64)
                ax.errorbar(xs + 0.08 * (k - 1), mean, std, fmt=style, capsize=2, ms=4, label=f"Δ {metric}")
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xticks(xs, [str(v) for v in values], fontsize=7)
            ax.set_xlabel({"depth": "depth (~10% of blocks dropped)",
                           "depth_one_block": "depth (1 block dropped)"}.get(axis, axis.replace("_", " ")))
            ax.set_title(f"{preset}", fontsize=9)
            if j == 0:
                ax.set_ylabel("S² − CFG")
    axes[0].legend(fontsize=6)
    fig.suptitle("Where S² helps: S² minus CFG (paired by seed) against the network and the σ window where S² acts\n"
                 "Δ mode shift < 0 means S² moves the modes toward the truth; Δ spread < 0 narrows them", fontsize=9)
    finish(fig, out, "fig_s2_regimes", settings_line(st, "each network trained as the main one except the setting "
                                                         "on the axis"))
    return res


def fig_transformer(lab: Lab, out: Path) -> dict:
    """Is a transformer's sub-network like the MLP's? α and β along the CFG sampler for the MLP and the
    image DiT at several depths, and S² − CFG against depth for both (W1 on the toys, Fréchet distance
    on digits), with about 10% of the droppable blocks dropped."""
    from toy.images import mechanism as IM
    from toy.images.data import load_digits
    from toy.images.features import train_classifier

    st = lab.st
    gcfg = replace(PAPER, method="s2")
    mlp = {}
    for preset in MECH_PRESETS:
        nets = {d: lab.variant(preset, "depth", d) for d in st.mlp_depths}
        mcfg = MechanismConfig(preset=preset, quick=True, samples=st.mech_samples, masks=st.mech_masks, seed=st.seeds[0],
                               guidance=replace(PAPER, method="cfg"), sampler=st.sampler)
        mech = [analyze(mcfg, progress=False, models={"main": nets[d]}) for d in st.mlp_depths]
        eff = [regime_effect(nets[d], preset, gcfg, st.sampler, st.seeds, st.samples, runs=lab.runs)["effect"]
               for d in st.mlp_depths]
        mlp[preset] = {"depths": list(st.mlp_depths), "effect": eff, "mechanism": mech,
                       "interval_medians": [{k: interval_median(r, k) for k in ("alpha", "beta", "ratio")} for r in mech],
                       "blocks_dropped": [num_dropped(d, PAPER.exclude, PAPER.drop_ratio, PAPER.num_drop)
                                          for d in st.mlp_depths]}
    icfg, dmech, depths = IM.figure_config(st.quick)
    data = load_digits()
    fnet = train_classifier(data.flat(), data.labels, data.num_classes, seed=0)
    reference, what = IM.reference_network(icfg, data, quick=True)
    dit = IM.depth_sweep(data, reference, fnet, fnet.features(data.flat()), icfg, depths=depths, mech=dmech,
                         progress=True)
    dit.update(reference=what, settings=IM.describe(icfg, data), mechanism_samples=dmech.samples, masks=dmech.masks)

    fig, axes = P.panels(4, max_cols=2, size=(5.2, 3.4), title_lines=2, caption_lines=3)
    mlp_show = MECH_PRESETS[0]
    blues, oranges = P.shades("Blues", len(st.mlp_depths)), P.shades("Oranges", len(dit["depths"]))
    for j, key in enumerate(("alpha", "beta")):
        ax = axes[j]
        for c, d, r in zip(blues, st.mlp_depths, mlp[mlp_show]["mechanism"]):
            ax.plot(r["sigmas"], r[key], color=c, lw=1.2, label=f"MLP ({mlp_show}) depth {d}")
        for c, d, r in zip(oranges, dit["depths"], dit["mechanism"]):
            ax.plot(r["sigmas"], r[key], color=c, lw=1.2, ls="--", label=f"DiT (digits) depth {d}")
        ax.set_xscale("log")
        ax.axhline(0, color="0.5", lw=0.6)
        shade_interval(ax, r["sigmas"], "0.92")
        ax.set_xlabel("σ")
        ax.set_title({"alpha": "α: S² signal along CFG's direction (> 0: extra CFG)",
                      "beta": "β: along the denoising direction (> 0: like a weak model)"}[key], fontsize=9)
        ax.set_ylim(*np.clip(ax.get_ylim(), -3, 3))
    axes[0].legend(fontsize=6, ncol=2)
    ax = axes[2]
    for k, preset in enumerate(MECH_PRESETS):
        e = mlp[preset]["effect"]
        ax.errorbar(np.array(st.mlp_depths) * (1 + 0.03 * k), [v["wasserstein"]["mean"] for v in e],
                    [v["wasserstein"]["std"] for v in e], fmt="o-", capsize=2, ms=4, label=f"MLP, {preset}: Δ W1")
    ax.set_title(f"MLP: S² − CFG in W1 against depth (seeds {list(st.seeds)})", fontsize=9)
    ax = axes[3]
    for name, fmt, text in (("ratio", "s-", "~10% of blocks dropped"), ("one", "^:", "1 block dropped")):
        ax.errorbar(dit["depths"], [v["effect"]["mean"] for v in dit[name]], [v["effect"]["std"] for v in dit[name]],
                    fmt=fmt, capsize=2, ms=4, color="C1", label=f"DiT: Δ Fréchet distance, {text}")
    ax.set_title(f"DiT on digits: S² − CFG in Fréchet distance against depth (seeds {list(icfg.seeds)})", fontsize=9)
    for ax in axes[2:]:
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(st.mlp_depths) | set(dit["depths"])), [str(d) for d in sorted(set(st.mlp_depths) | set(dit["depths"]))])
        ax.set_xlabel("blocks (depth)")
        ax.set_ylabel("S² − CFG (< 0: S² better)")
        ax.legend(fontsize=7)
    fig.suptitle("Is a transformer's sub-network a weak model? The S² signal on MLPs and on the image DiT, and S²'s "
                 "effect against depth\n(grey: where S² acts; the DiT's error is measured against a reference DiT: "
                 f"{what})", fontsize=9)
    finish(fig, out, "fig_s2_transformer",
           f"MLP: {settings_line(st, 'each depth trained as the main network')}. DiT: width 32 at each depth, "
           f"{dit['train_steps']} training steps on digits; λ = {icfg.scale}, ω = {icfg.s2_scale}, {icfg.sampler_steps} "
           f"Heun steps, {icfg.per_class} generations per class, seeds {list(icfg.seeds)}; mechanism {dmech.samples} "
           f"states per class, {dmech.masks} masks per σ, seed {dmech.seed}")
    return {"mlp": mlp, "dit": dit}


def write_mechanism(mech: dict, ideal: dict, regimes: dict, st: Settings, out: Path) -> None:
    files.write_json(out / "mechanism.json", {"mechanism": mech, "ideal": ideal, "regimes": regimes,
                                              "settings": settings_line(st)})
    _mechanism_md(mech, regimes, st, out)


def dit_settings_line(d: dict) -> str:
    """The DiT sweep's sampling settings in words."""
    return (f"λ = {d['scale']}, ω = {d['s2_scale']}, {d['sampler_steps']} Heun steps, {d['per_class']} generations per "
            f"class, seeds {list(d['seeds'])}")


def write_transformer(tr: dict, out: Path) -> None:
    """transformer.json (every series and effect) and transformer.md (the medians and effects per depth)."""
    files.write_json(out / "transformer.json", tr)
    dit = tr["dit"]
    lines = ["# Is a transformer's sub-network a weak model? MLP and DiT against depth", "",
             "Medians over the σ where S² acts of the S² signal's fit s ≈ α·g + β·h, and S² − CFG "
             "(paired by seed, mean ± std), about 10% of the droppable blocks dropped (`one`: one block).",
             f"DiT: width 32, {dit['train_steps']} training steps on digits; error reference: "
             f"{dit['reference']}; {dit_settings_line(dit['settings'])}.", "",
             "| network | depth | blocks dropped | α | β | cos_ref | abs(s)/abs(g) | S² − CFG | S² − CFG (one) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, d in enumerate(dit["depths"]):
        m = dit["mechanism"][i]["interval_medians"]
        cell = lambda e: f"{e['mean']:+.3f} ± {e['std']:.3f} FD"
        lines.append(f"| DiT | {d} | {dit['blocks_dropped'][i]} | {m['alpha']:.3f} | {m['beta']:.3f} | {m['cos_ref']:.3f} | "
                     f"{m['ratio']:.3f} | {cell(dit['ratio'][i]['effect'])} | {cell(dit['one'][i]['effect'])} |")
    for preset, r in tr["mlp"].items():
        for i, d in enumerate(r["depths"]):
            m, e = r["interval_medians"][i], r["effect"][i]["wasserstein"]
            lines.append(f"| MLP {preset} | {d} | {r['blocks_dropped'][i]} | {m['alpha']:.3f} | {m['beta']:.3f} | – | "
                         f"{m['ratio']:.3f} | {e['mean']:+.3f} ± {e['std']:.3f} W1 | |")
    files.write_text(out / "transformer.md", "\n".join(lines) + "\n")


def _mechanism_md(mech: dict, regimes: dict, st: Settings, out: Path) -> None:
    lines = ["# Why S² helps or hurts: the S² signal taken apart", "",
             "s = D_c − D̂_c(m) fitted as α·g + β·h with g = D_c − D_∅ (CFG's direction) and h = D_c − x (the "
             "denoising direction), over the CFG sampler's states and the masks S² draws; medians over the σ where S² "
             "acts. cos_error: cosine of s with the true model error D*_c − D_c (undefined for the exact denoiser); "
             "cos_ref: the same against a reference network (main trained 4× as long) instead of the truth, the proxy "
             "the image DiT uses.",
             f"Settings: {settings_line(st)}.", "",
             "| preset | network | α | β | r² | cos_error | cos_ref | abs(s)/abs(g) |", "|---|---|---|---|---|---|---|---|"]
    for p, ms_ in mech["interval_medians"].items():
        for m, v in ms_.items():
            lines.append(f"| {p} | {MECH_LABEL[m]} | {v['alpha']:.3f} | {v['beta']:.3f} | {v['r2']:.2f} | "
                         f"{v['cos_error']:.3f} | {v.get('cos_ref', float('nan')):.3f} | {v['ratio']:.3f} |")
    lines += ["", "## How well the reference-network proxy tracks the true error", "",
              "Where S² acts: the correlation over σ of cos_ref with cos_error, their medians and the median absolute "
              "difference.", "", "| preset | network | correlation | cos_error | cos_ref | median abs difference |",
              "|---|---|---|---|---|---|"]
    for p, ms_ in mech.get("proxy", {}).items():
        for m, v in ms_.items():
            lines.append(f"| {p} | {MECH_LABEL[m]} | {v['correlation']:.2f} | {v['cos_error']:.3f} | {v['cos_ref']:.3f} | "
                         f"{v['median_abs_difference']:.3f} |")
    lines += ["", "## S² minus CFG across regimes (mean ± std over seeds, paired)", "",
              "| preset | setting | value | Δ mode shift | Δ spread ratio | Δ W1 |", "|---|---|---|---|---|---|"]
    for p, axes in regimes.items():
        for axis, r in axes.items():
            for v, run in zip(r["values"], r["runs"]):
                e = run["effect"]
                lines.append(f"| {p} | {axis} | {v} | " + " | ".join(
                    f"{e[k]['mean']:+.3f} ± {e[k]['std']:.3f}" for k in ("mode_shift", "spread_ratio", "wasserstein")) + " |")
    files.write_text(out / "mechanism.md", "\n".join(lines) + "\n")


def claims(res: dict, abl: dict, passes: dict, mech: dict, ideal: dict, regimes: dict, tr: dict, st: Settings,
           out: Path):
    """Each toy claim of the paper, the numbers that bear on it, and a verdict from those numbers."""
    k = len(st.seeds)
    medians = mech["interval_medians"]
    bd = {p: {m: regimes[p]["block_drop"]["runs"][regimes[p]["block_drop"]["values"].index(v)]["effect"]["mode_shift"]
              for m, v in (("main", 0.0), ("blockdrop", 0.1))} for p in regimes}
    rows = [C.cfg_shifts_modes(res, k), C.autoguidance_helps(res, k),
            C.s2_corrects_shift(res, k, {p: medians[p]["main"] for p in medians}),
            C.ideal_weak_corrects(ideal, k, omega=PAPER.s2_scale if PAPER.s2_scale in st.omegas else st.omegas[1]),
            C.blockdrop_makes_weak_models(medians, bd, k),
            C.single_matches_naive(res, k), C.diminishing_returns(passes, k), C.small_omega_helps(abl["omega"], k),
            C.fixed_block_varies(abl["fixed"], k), C.mode_preference(res, k)]
    dit, mlp = tr["dit"], tr["mlp"]
    rows.append(C.dit_weak_model(dit["depths"], [m["interval_medians"] for m in dit["mechanism"]],
                                 {f"MLP {p} depth {r['depths'][-1]}": r["interval_medians"][-1] for p, r in mlp.items()}))
    deepest = lambda r: r["depths"].index(max(r["depths"]))
    rows.append(C.paper_depth_corrects(
        [(f"MLP {p}, depth {max(r['depths'])}, W1", r["effect"][deepest(r)]["wasserstein"], k) for p, r in mlp.items()]
        + [(f"DiT on digits, depth {max(dit['depths'])}, Fréchet distance", dit["ratio"][deepest(dit)]["effect"],
            len(dit["settings"]["seeds"]))]))
    lines = ["# The paper's toy claims, checked against the exact truth", "",
             f"Settings: {settings_line(st)}. \"Beyond noise\" means a difference larger than two combined "
             f"standard errors of the mean over the {k} seeds. Numbers: mean ± std over seeds. Full tables: "
             "`toy_results.md`, `mechanism.md`. Verdicts are computed by `python -m toy.figures` from these numbers.", ""]
    for claim, evidence, verdict in rows:
        lines += [f"## {claim}", "", f"**Verdict: {verdict}.**", ""] + [f"- {e}" for e in evidence] + [""]
    files.write_text(out / "claims.md", "\n".join(lines))
    files.write_json(out / "claims.json", [{"claim": c, "verdict": v, "evidence": e} for c, e, v in rows])


@dataclass(frozen=True)
class Stage:
    """One output of the script: what computes it from the lab, and which stages' results it reads."""

    name: str
    make: Callable                       # make(lab, out, results) → its result (kept for later stages)
    needs: tuple[str, ...] = ()


STAGES = (
    Stage("fig3_1d", lambda lab, out, r: density_panels(lab, "gmm1d", MAIN_METHODS, "fig3_1d", out)),
    Stage("fig3_2d", lambda lab, out, r: density_panels(lab, "gmm2d", MAIN_METHODS, "fig3_2d", out)),
    Stage("fig3_2d4", lambda lab, out, r: density_panels(lab, "gmm2d4", MAIN_METHODS, "fig3_2d4", out)),
    Stage("fig9_trajectories_1d", lambda lab, out, r: fig9(lab, out)),
    Stage("fig10_naive_vs_single", lambda lab, out, r: fig10(lab, out)),
    Stage("fig8_num_passes", lambda lab, out, r: fig8(lab, out)),
    Stage("fig7_ablations", lambda lab, out, r: fig7(lab, out)),
    Stage("fig_tree2d_all_methods", lambda lab, out, r: fig_tree(lab, out)),
    Stage("results", lambda lab, out, r: results(lab, out)),
    Stage("fig_s2_mechanism", lambda lab, out, r: mechanism(lab, out)),
    Stage("fig_s2_ideal", lambda lab, out, r: fig_ideal(lab, out)),
    Stage("fig_s2_regimes", lambda lab, out, r: fig_regimes(lab, out)),
    Stage("fig_s2_transformer", lambda lab, out, r: fig_transformer(lab, out)),
    Stage("transformer_tables", lambda lab, out, r: write_transformer(r["fig_s2_transformer"], out),
          needs=("fig_s2_transformer",)),
    Stage("mechanism_tables", lambda lab, out, r: write_mechanism(r["fig_s2_mechanism"], r["fig_s2_ideal"],
                                                                  r["fig_s2_regimes"], lab.st, out),
          needs=("fig_s2_mechanism", "fig_s2_ideal", "fig_s2_regimes")),
    Stage("claims", lambda lab, out, r: claims(r["results"], r["fig7_ablations"], r["fig8_num_passes"],
                                               r["fig_s2_mechanism"], r["fig_s2_ideal"], r["fig_s2_regimes"],
                                               r["fig_s2_transformer"], lab.st, out),
          needs=("results", "fig7_ablations", "fig8_num_passes", "fig_s2_mechanism", "fig_s2_ideal", "fig_s2_regimes",
                 "fig_s2_transformer")),
)
_BY_NAME = {s.name: s for s in STAGES}


def plan(only: set[str]) -> list[Stage]:
    """The stages to run for the asked outputs, in STAGES order: each with the stages it needs; the
    mechanism tables whenever all three of their inputs run."""
    todo = set(only)
    for name in list(todo):
        todo |= set(_BY_NAME[name].needs) if name in _BY_NAME else set()
    for tables in ("mechanism_tables", "transformer_tables"):
        if set(_BY_NAME[tables].needs) <= todo:
            todo.add(tables)
    return [s for s in STAGES if s.name in todo]


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # one `error:` line, not the usage block
        raise ToyError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m toy.figures", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", default=None, help=f"any of {', '.join(FIGURES)}")
    p.add_argument("--out", default="figures")
    p.add_argument("--model", default="main", help="the network CFG and S² guide in every figure but the "
                   "mechanism ones (which show both): main or blockdrop")
    p.add_argument("--train-only", action="store_true",
                   help="train (or load) every network the figures use (the image experiment's DiTs too), "
                        "then stop; draw nothing")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a Python file that registers guidance methods: they join the results table and the "
                        "all-methods figure (docs/extending.md); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set_values",
                   help="a plugin method's own setting (the built-in settings stay the paper's); repeatable")
    return p


def main(argv=None) -> int:
    setup()                            # one CPU device per core for the samplers, before JAX starts
    t0 = time.perf_counter()
    try:
        a = parser().parse_args(argv)
        only = set(a.only or FIGURES)
        bad = only - set(FIGURES)
        if bad:
            raise ToyError(f"unknown figure(s) {', '.join(sorted(bad))}: choose from {', '.join(FIGURES)}")
        plugins.load_all(a.plugin)
        extra = parse_assignments(a.set_values)
        builtin = sorted(set(extra) & set(BUILTIN))
        if builtin:
            raise ToyError(f"--set {', '.join(builtin)}: the figures use the paper's settings; --set takes a plugin "
                           f"method's own settings")
        out = files.usable_folder(a.out, "--out")
        files.usable_folder(cache_dir(), "the cache folder ($TOY_CACHE_DIR)", need=256 << 20)   # networks may train
        enable_compilation_cache()
        lab = Lab(Settings.make(a.quick, a.model, tuple(extra.items())))
        image_cfg = IP = None
        if set(PIPELINE_FIGURES) & only:  # imported only when asked for: the core never needs the image experiment
            from toy.images import pipeline as IP
            image_cfg = IP.quick_config() if a.quick else IP.ImageConfig()
        if a.train_only:
            names = train_networks(lab)
            if image_cfg is not None:             # the image experiment's DiTs, as its figures will load them
                _, models = IP.pipeline_models(image_cfg)
                names += [f"images/{role}" for role in ("main", "small", "early") if models.get(role) is not None]
            print(f"ready (cached, shipped or trained now): {', '.join(names)}")
            return 0
        stages, results_ = {}, {}
        for stage in plan(only):
            t = time.perf_counter()
            results_[stage.name] = stage.make(lab, out, results_)
            stages[stage.name] = round(time.perf_counter() - t, 1)        # seconds per figure, figures_timing.json
        if image_cfg is not None:     # one run of the image pipeline writes all three
            t = time.perf_counter()
            IP.run_pipeline(image_cfg, out=out)
            stages["images"] = round(time.perf_counter() - t, 1)
    except ToyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:      # a file system failure after the checks (a disk that filled meanwhile): one line
        print(f"error: {e.strerror or type(e).__name__}{f': {e.filename!r}' if e.filename else ''}; the figures "
              f"written before it are in {a.out}/", file=sys.stderr)
        return 1
    took = time.perf_counter() - t0
    files.write_json(out / "figures_timing.json", {"quick": a.quick, "only": sorted(only), "seconds": round(took, 1),
                                                   "stages": {k: v for k, v in stages.items() if not k.endswith("_tables")}})
    print(f"wrote {', '.join(sorted(only))} to {out}/ in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
