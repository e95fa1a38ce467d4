"""Regenerate the paper's toy figures, the results table and the claims, against the exact truth.

    python -m toy.figures [--quick] [--only NAME ...] [--out figures]

Every PNG carries a caption line with the seeds and settings that made it. `--quick` uses fewer
samples, seeds and sweep points (CI runs it); the full setting is what `figures/` holds. Both use
the quick-trained model sets of `toy.train` (trained once, cached on disk).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from toy.compare import CompareConfig, run_compare  # noqa: E402
from toy.diffusion import SamplerConfig, sample  # noqa: E402
from toy.errors import ToyError  # noqa: E402
from toy.guidance import METHODS, GuidanceConfig  # noqa: E402
from toy.metrics import METRICS, evaluate  # noqa: E402
from toy.mixtures import get_preset  # noqa: E402
from toy.nets import ExactDenoiser  # noqa: E402
from toy.train import train_models  # noqa: E402

FIGURES = ("fig3_1d", "fig3_2d", "fig9_trajectories_1d", "fig10_naive_vs_single", "fig8_num_passes",
           "fig7_ablations", "fig_tree2d_all_methods", "results", "claims",
           "fig4_tsne", "fig15_fixed_block_grid", "images_results")     # the last three: the DiT experiment
IMAGE_FIGURES = ("fig4_tsne", "fig15_fixed_block_grid", "images_results")
PAPER = GuidanceConfig(scale=3.0, s2_scale=0.25)         # the paper's defaults, λ = 3
MAIN_METHODS = ("cfg", "autoguidance", "s2-naive", "s2")


@dataclass(frozen=True)
class Settings:
    samples: int
    seeds: tuple[int, ...]
    lambdas: tuple[float, ...]
    omegas: tuple[float, ...]
    num_masks: tuple[int, ...]
    widths: tuple[float, ...]
    drops: tuple[int, ...]

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(400, (0, 1), (1.0, 3.0, 5.0), (0.0, 0.25, 1.0), (1, 4), (0.0, 0.8), (1, 3))
        return cls(2000, (0, 1, 2, 3, 4), (1.0, 2.0, 3.0, 5.0, 7.0), (0.0, 0.1, 0.25, 0.5, 1.0, 2.0),
                   (1, 2, 4, 8), (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), (1, 2, 3, 5, 7))


class Lab:
    """Models, exact references and one `run` that samples and scores a method on a preset."""

    def __init__(self, st: Settings):
        self.st = st
        self.models = {}
        self.refs = {}

    def model_set(self, preset):
        if preset not in self.models:
            self.models[preset] = train_models(preset, quick=True, progress=True)
        return self.models[preset]

    def ref(self, preset, seed):
        k = (preset, seed)
        if k not in self.refs:
            target = get_preset(preset).cond(0)
            self.refs[k] = np.asarray(target.sample(jax.random.fold_in(jax.random.key(seed), 1), max(self.st.samples, 4000)))
        return self.refs[k]

    def run(self, preset, gcfg, seed, *, exact=False, trajectory=False, weak="small"):
        mix = get_preset(preset)
        models = None if exact else self.model_set(preset)
        main = ExactDenoiser(mix) if exact else models["main"]
        r = sample(main, gcfg, SamplerConfig(), jax.random.fold_in(jax.random.key(seed), 3), self.st.samples, 0,
                   weak=None if exact else models[weak], return_trajectory=trajectory)
        x = np.asarray(r.x)
        return x, evaluate(x, mix.cond(0), self.ref(preset, seed), seed=seed), r

    def sweep(self, preset, gcfgs, metric="wasserstein"):
        """[len(gcfgs), len(seeds)] values of one metric."""
        return np.array([[self.run(preset, g, s)[1][metric] for s in self.st.seeds] for g in gcfgs])


def caption(fig, text):
    fig.text(0.01, 0.005, text, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)


def settings_line(st: Settings, extra=""):
    return (f"seeds {list(st.seeds)}, {st.samples} samples per panel, 32 Heun steps (EDM, ρ = 7), quick-trained MLP "
            f"(width 64, 8 blocks); λ = {PAPER.scale}, ω = {PAPER.s2_scale}, 1 of 7 blocks dropped, "
            f"interval (0.1, 0.9), N = 4 for naive S²{'; ' + extra if extra else ''}")


def density_panels(lab: Lab, preset: str, methods, name: str, out: Path):
    mix = get_preset(preset)
    target = mix.cond(0)
    seed = lab.st.seeds[0]
    truth = np.asarray(target.sample(jax.random.fold_in(jax.random.key(seed), 2), lab.st.samples))
    cols = ["ground truth"] + list(methods)
    fig, axes = plt.subplots(1, len(cols), figsize=(2.9 * len(cols), 3.3 if mix.dim == 1 else 3.2), squeeze=False)
    if mix.dim == 1:
        grid = np.linspace(-10, 10, 500)[:, None].astype(np.float32)
        pdf = np.asarray(target.pdf(grid))
    else:
        ref = lab.ref(preset, seed)
        lo, hi = ref.min(0) - 1.5, ref.max(0) + 1.5
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
        lp = np.asarray(target.logp(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))).reshape(gx.shape)
    for ax, col in zip(axes[0], cols):
        if col == "ground truth":
            x, title = truth, "ground truth"
        else:
            x, m, _ = lab.run(preset, replace(PAPER, method=col), seed)
            title = f"{col}\nW1 {m['wasserstein']:.2f}, shift {m['mode_shift']:.2f}"
        if mix.dim == 1:
            ax.hist(np.clip(x[:, 0], -10, 10), bins=100, range=(-10, 10), density=True, alpha=0.6, histtype="stepfilled")
            ax.plot(grid[:, 0], pdf, "k", lw=1)
        else:
            ax.contour(gx, gy, lp, levels=np.linspace(lp.max() - 12, lp.max(), 6), colors="k", linewidths=0.5)
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{preset}, class 0 ({mix.class_names[0]}): samples over the exact conditional density", fontsize=10)
    caption(fig, settings_line(lab.st, f"panel seed {seed}"))
    fig.subplots_adjust(bottom=0.2, top=0.8, wspace=0.3)
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)


def fig9(lab: Lab, out: Path):
    methods = ("none", "cfg", "autoguidance", "s2-naive", "s2")
    fig, axes = plt.subplots(1, len(methods), figsize=(3.0 * len(methods), 3.2), sharey=True)
    seed = lab.st.seeds[0]
    for ax, m in zip(axes, methods):
        _, _, r = lab.run("gmm1d", replace(PAPER, method=m), seed, trajectory=True)
        tr = np.asarray(r.trajectory)[:, :60, 0]                                      # [T + 1, 60]
        ax.plot(np.arange(tr.shape[0]), tr, lw=0.6, alpha=0.7)
        for mode in (-4, 4):
            ax.axhline(mode, color="k", ls=":", lw=0.8)
        ax.set_ylim(-12, 12)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("sampler step")
    axes[0].set_ylabel("x")
    fig.suptitle("gmm1d: denoising trajectories (true modes dotted)", fontsize=10)
    caption(fig, settings_line(lab.st, f"60 trajectories of seed {seed}"))
    fig.subplots_adjust(bottom=0.25, top=0.85)
    fig.savefig(out / "fig9_trajectories_1d.png", dpi=110)
    plt.close(fig)


def fig10(lab: Lab, out: Path):
    seeds = lab.st.seeds[:3] if len(lab.st.seeds) >= 3 else (lab.st.seeds + (7,))[:3]
    fig, axes = plt.subplots(2, len(seeds), figsize=(3.2 * len(seeds), 6.4), squeeze=False)
    for j, seed in enumerate(seeds):
        for i, m in enumerate(("s2-naive", "s2")):
            x, met, _ = lab.run("gmm2d", replace(PAPER, method=m), seed)
            ax = axes[i, j]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
            ax.set_xlim(-9, 9)
            ax.set_ylim(-9, 9)
            ax.set_title(f"{m}, seed {seed}\nW1 {met['wasserstein']:.3f}, shift {met['mode_shift']:.3f}", fontsize=9)
    fig.suptitle("gmm2d: naive S² (N = 4 masks per step) vs single-sample S² (one fresh mask per step)", fontsize=10)
    caption(fig, settings_line(lab.st, f"seeds {list(seeds)}"))
    fig.subplots_adjust(bottom=0.1, top=0.88, hspace=0.4)
    fig.savefig(out / "fig10_naive_vs_single.png", dpi=110)
    plt.close(fig)


def fig8(lab: Lab, out: Path) -> dict:
    cfg_w = lab.sweep("gmm1d", [replace(PAPER, method="cfg")])[0]                  # [S]
    naive = lab.sweep("gmm1d", [replace(PAPER, method="s2-naive", num_masks=n) for n in lab.st.num_masks])
    single = lab.sweep("gmm1d", [replace(PAPER, method="s2")])[0]
    gain = cfg_w[None] - naive                                                     # [len(N), S]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(lab.st.num_masks, gain.mean(1), gain.std(1), marker="o", label="naive S², N masks per step")
    g1 = cfg_w - single
    ax.axhline(g1.mean(), color="C1", ls="--", label=f"S², one mask per step ({g1.mean():.3f} ± {g1.std():.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (sub-network passes per step)")
    ax.set_ylabel("W1 gain over CFG (higher is better)")
    ax.legend(fontsize=8)
    ax.set_title("gmm1d: gain against the number of sub-network passes", fontsize=10)
    caption(fig, settings_line(lab.st))
    fig.subplots_adjust(bottom=0.25)
    fig.savefig(out / "fig8_num_passes.png", dpi=110)
    plt.close(fig)
    return {"num_masks": list(lab.st.num_masks), "gain_mean": gain.mean(1).tolist(), "gain_std": gain.std(1).tolist(),
            "single_gain_mean": float(g1.mean()), "single_gain_std": float(g1.std())}


def fig7(lab: Lab, out: Path) -> dict:
    st, P = lab.st, "gmm1d"
    res = {}
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))

    def band(ax, xs, vals, label):
        ax.errorbar(xs, vals.mean(1), vals.std(1), marker="o", capsize=2, label=label)

    cfg_l = lab.sweep(P, [replace(PAPER, method="cfg", scale=v) for v in st.lambdas])
    s2_l = lab.sweep(P, [replace(PAPER, method="s2", scale=v) for v in st.lambdas])
    band(axes[0], st.lambdas, cfg_l, "CFG")
    band(axes[0], st.lambdas, s2_l, "S²")
    axes[0].set_xlabel("guidance scale λ")
    axes[0].legend(fontsize=8)
    axes[0].set_title("(a) λ sweep")
    res["lambda"] = {"values": list(st.lambdas), "cfg": cfg_l.mean(1).tolist(), "s2": s2_l.mean(1).tolist(),
                     "cfg_std": cfg_l.std(1).tolist(), "s2_std": s2_l.std(1).tolist()}
    om = lab.sweep(P, [replace(PAPER, method="s2", s2_scale=v) for v in st.omegas])
    band(axes[1], st.omegas, om, "S² (ω = 0 is CFG)")
    axes[1].set_xlabel("S² scale ω")
    axes[1].set_title("(b) ω sweep, λ = 3")
    res["omega"] = {"values": list(st.omegas), "mean": om.mean(1).tolist(), "std": om.std(1).tolist()}
    res["fixed"] = {}
    for preset in ("gmm1d", "gmm2d"):
        fx = lab.sweep(preset, [replace(PAPER, method="fixed-block", fixed_blocks=(b,)) for b in range(1, 8)])
        sto = lab.sweep(preset, [replace(PAPER, method="s2")])[0]
        off = -0.15 if preset == "gmm1d" else 0.15
        axes[2].errorbar(np.arange(1, 8) + off, fx.mean(1), fx.std(1), fmt="o", capsize=2, label=f"fixed block, {preset}")
        axes[2].axhline(sto.mean(), ls="--", color="C0" if preset == "gmm1d" else "C1", lw=1,
                        label=f"stochastic S², {preset}")
        res["fixed"][preset] = {"fixed_mean": fx.mean(1).tolist(), "fixed_std": fx.std(1).tolist(),
                                "stochastic_mean": float(sto.mean()), "stochastic_std": float(sto.std())}
    axes[2].set_xlabel("the one dropped block")
    axes[2].legend(fontsize=7)
    axes[2].set_title("(c/d) fixed block vs stochastic")
    wd = lab.sweep(P, [replace(PAPER, method="s2", interval=(0.5 - w / 2, 0.5 + w / 2)) for w in st.widths])
    band(axes[3], st.widths, wd, "S²")
    axes[3].set_xlabel("width of the central interval (0 = CFG)")
    axes[3].set_title("(e) application interval")
    res["interval"] = {"values": list(st.widths), "mean": wd.mean(1).tolist(), "std": wd.std(1).tolist()}
    dr = lab.sweep(P, [replace(PAPER, method="s2", num_drop=k) for k in st.drops])
    band(axes[4], st.drops, dr, "S²")
    axes[4].set_xlabel("blocks dropped per mask (of 7)")
    axes[4].set_title("(Table 4) number dropped")
    res["drops"] = {"values": list(st.drops), "mean": dr.mean(1).tolist(), "std": dr.std(1).tolist()}
    for ax in axes:
        ax.set_ylabel("W1 to the truth (lower is better)")
    fig.suptitle("Ablations on gmm1d (c/d also on gmm2d); mean ± std over seeds", fontsize=11)
    caption(fig, settings_line(st))
    fig.subplots_adjust(bottom=0.22, top=0.85, wspace=0.35)
    fig.savefig(out / "fig7_ablations.png", dpi=110)
    plt.close(fig)
    return res


def results(lab: Lab, out: Path) -> dict:
    allres = {}
    for preset in ("gmm1d", "gmm2d", "tree2d"):
        lab.model_set(preset)
        cfg = CompareConfig(preset=preset, methods=METHODS, guidance=PAPER, seeds=lab.st.seeds,
                            samples=lab.st.samples, exact=True, quick=True)
        allres[preset] = run_compare(cfg, progress=False)
    (out / "toy_results.json").write_text(json.dumps(allres, indent=1))
    lines = ["# Toy results: every method against the exact truth", "",
             f"Class 0 of each preset; {settings_line(lab.st)}. Mean ± std over seeds. "
             "`[exact]` rows use the closed-form denoiser (guidance bias alone); `truth` is fresh exact samples "
             "(the noise floor). Lower is better for wasserstein, mmd, mode_shift, low_density_frac; "
             "spread_ratio is best at 1; mode_coverage best at 1.", ""]
    for preset, res in allres.items():
        lines += [f"## {preset}", "", "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for name, ms in res["methods"].items():
            cells = ["n/a" if ms[k]["mean"] is None else f"{ms[k]['mean']:.3f} ± {ms[k]['std']:.3f}" for k in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, err in res.get("errors", {}).items():
            lines.append(f"| {name} | failed: {err} |")
        lines.append("")
    (out / "toy_results.md").write_text("\n".join(lines))
    return allres


def fig_tree(lab: Lab, out: Path):
    density_panels(lab, "tree2d", [m for m in METHODS if m != "none"], "fig_tree2d_all_methods", out)


def _ms(res, preset, method, metric):
    m = res[preset]["methods"].get(method, {}).get(metric)
    return (m["mean"], m["std"]) if m and m["mean"] is not None else (float("nan"), float("nan"))


def claims(res: dict, abl: dict, passes: dict, st: Settings, out: Path):
    """Each toy claim of the paper, the numbers that bear on it, and a verdict from those numbers."""
    k = len(st.seeds)
    se = lambda s: s / np.sqrt(max(k, 1))                   # standard error of a mean over seeds
    rows = []

    def beyond(a, sa, b, sb):                               # a < b beyond noise (2 combined standard errors)
        return b - a > 2 * np.hypot(se(sa), se(sb))

    # 1. CFG shifts the mode away from the truth.
    ev = []
    ok = True
    for p in ("gmm1d", "gmm2d"):
        c, cs = _ms(res, p, "cfg[exact]", "mode_shift")
        t, ts = _ms(res, p, "truth", "mode_shift")
        cl, cls = _ms(res, p, "cfg", "mode_shift")
        ev.append(f"{p}: mode shift exact CFG {c:.3f} ± {cs:.3f}, learned CFG {cl:.3f} ± {cls:.3f}, exact samples {t:.3f} ± {ts:.3f}")
        ok &= beyond(t, ts, c, cs) and beyond(t, ts, cl, cls)
    rows.append(("CFG shifts the modes away from the truth (Fig. 3)", ev, "holds" if ok else "does not hold"))
    # 2. Autoguidance helps but stays limited.
    ev, helps, limited = [], True, True
    for p in ("gmm1d", "gmm2d", "tree2d"):
        a, as_ = _ms(res, p, "autoguidance", "wasserstein")
        c, cs = _ms(res, p, "cfg", "wasserstein")
        t, ts = _ms(res, p, "truth", "wasserstein")
        ev.append(f"{p}: W1 autoguidance {a:.3f} ± {as_:.3f}, CFG {c:.3f} ± {cs:.3f}, noise floor {t:.3f} ± {ts:.3f}")
        helps &= beyond(a, as_, c, cs)
        limited &= beyond(t, ts, a, as_)
    rows.append(("Autoguidance helps over CFG but stays short of the truth", ev,
                 "holds" if helps and limited else ("mixed" if helps or limited else "does not hold")))
    # 3. S² corrects the shift.
    ev, better, worse = [], 0, 0
    for p in ("gmm1d", "gmm2d", "tree2d"):
        s, ss = _ms(res, p, "s2", "mode_shift")
        c, cs = _ms(res, p, "cfg", "mode_shift")
        ev.append(f"{p}: mode shift S² {s:.3f} ± {ss:.3f} vs CFG {c:.3f} ± {cs:.3f}")
        better += beyond(s, ss, c, cs)
        worse += beyond(c, cs, s, ss)
    rows.append(("S²-Guidance corrects CFG's mode shift", ev,
                 "holds" if better == 3 else ("does not hold" if better == 0 else "mixed")))
    # 4. Single-sample S² matches naive S².
    ev, same = [], True
    for p in ("gmm1d", "gmm2d", "tree2d"):
        s, ss = _ms(res, p, "s2", "wasserstein")
        n, ns = _ms(res, p, "s2-naive", "wasserstein")
        ev.append(f"{p}: W1 S² {s:.3f} ± {ss:.3f} vs naive S² (N = 4) {n:.3f} ± {ns:.3f}")
        same &= abs(s - n) <= 2 * np.hypot(se(ss), se(ns)) + 0.02
    rows.append(("Single-sample S² matches naive S² (Fig. 10)", ev, "holds" if same else "does not hold"))
    # 5. Diminishing returns with N.
    g, gs = np.array(passes["gain_mean"]), np.array(passes["gain_std"])
    ev = [f"W1 gain over CFG for N = {n}: {a:.3f} ± {b:.3f}" for n, a, b in zip(passes["num_masks"], g, gs)]
    ev.append(f"single-sample S²: {passes['single_gain_mean']:.3f} ± {passes['single_gain_std']:.3f}")
    if len(g) >= 3:
        dim = (g[-1] - g[len(g) // 2]) <= (g[len(g) // 2] - g[0]) + 2 * se(gs.max())
        verdict = "holds" if dim and g[-1] > 0 else "does not hold"
    else:
        verdict = "mixed"
    rows.append(("Returns diminish with the number N of sub-network passes (Fig. 8)", ev, verdict))
    # 6. Small ω helps, large ω over-corrects.
    om, oms, ov = np.array(abl["omega"]["mean"]), np.array(abl["omega"]["std"]), abl["omega"]["values"]
    ev = [f"W1 at ω = {w}: {a:.3f} ± {b:.3f}" for w, a, b in zip(ov, om, oms)]
    best = int(np.argmin(om))
    small_helps = best > 0 and ov[best] <= 0.5 and beyond(om[best], oms[best], om[0], oms[0])
    large_over = beyond(om[best], oms[best], om[-1], oms[-1])
    rows.append(("Small ω helps and large ω over-corrects (Fig. 7b)", ev,
                 "holds" if small_helps and large_over else ("mixed" if small_helps or large_over else "does not hold")))
    # 7. The best fixed block varies; stochastic dropping is robust.
    ev, bests, robust = [], [], True
    for p, f in abl["fixed"].items():
        fm = np.array(f["fixed_mean"])
        bests.append(int(np.argmin(fm)) + 1)
        ev.append(f"{p}: W1 per fixed block 1–7: {', '.join(f'{v:.3f}' for v in fm)}; stochastic {f['stochastic_mean']:.3f} "
                  f"± {f['stochastic_std']:.3f}; best block {bests[-1]}")
        robust &= f["stochastic_mean"] <= np.median(fm) + 2 * se(f["stochastic_std"])
    varies = len(set(bests)) > 1
    rows.append(("The best fixed block varies while stochastic dropping is robust (Fig. 7c/d)", ev,
                 "holds" if varies and robust else ("mixed" if varies or robust else "does not hold")))
    lines = ["# The paper's toy claims, checked against the exact truth", "",
             f"Settings: {settings_line(st)}. \"Beyond noise\" means a difference larger than two combined "
             f"standard errors of the mean over the {k} seeds. Numbers: mean ± std over seeds. Full tables: "
             "`toy_results.md`. Verdicts are computed by `python -m toy.figures` from these numbers.", ""]
    for claim, evidence, verdict in rows:
        lines += [f"## {claim}", "", f"**Verdict: {verdict}.**", ""] + [f"- {e}" for e in evidence] + [""]
    (out / "claims.md").write_text("\n".join(lines))
    (out / "claims.json").write_text(json.dumps([{"claim": c, "verdict": v, "evidence": e} for c, e, v in rows], indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.figures", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", default=None, help=f"any of {', '.join(FIGURES)}")
    p.add_argument("--out", default="figures")
    a = p.parse_args(argv)
    only = set(a.only or FIGURES)
    bad = only - set(FIGURES)
    if bad:
        print(f"error: unknown figure(s) {', '.join(sorted(bad))}: choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    st = Settings.make(a.quick)
    lab = Lab(st) if only - set(IMAGE_FIGURES) else None
    t0 = time.perf_counter()
    try:
        if "fig3_1d" in only:
            density_panels(lab, "gmm1d", MAIN_METHODS, "fig3_1d", out)
        if "fig3_2d" in only:
            density_panels(lab, "gmm2d", MAIN_METHODS, "fig3_2d", out)
        if "fig9_trajectories_1d" in only:
            fig9(lab, out)
        if "fig10_naive_vs_single" in only:
            fig10(lab, out)
        passes = fig8(lab, out) if {"fig8_num_passes", "claims"} & only else None
        abl = fig7(lab, out) if {"fig7_ablations", "claims"} & only else None
        if "fig_tree2d_all_methods" in only:
            fig_tree(lab, out)
        res = results(lab, out) if {"results", "claims"} & only else None
        if "claims" in only:
            claims(res, abl, passes, st, out)
        if set(IMAGE_FIGURES) & only:     # one run of the image pipeline writes all three
            from toy.images import ImageConfig, quick_config, run_pipeline
            run_pipeline(quick_config() if a.quick else ImageConfig(), out=out)
    except ToyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    (out / "figures_timing.json").write_text(json.dumps({"quick": a.quick, "only": sorted(only), "seconds": took}))
    print(f"wrote {', '.join(sorted(only))} to {out}/ in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
