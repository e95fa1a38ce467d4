"""The paper's toy claims, each a verdict computed from measured numbers.

Every function takes plain numbers (mean ± std over seeds, as `toy.evaluation.summarize` gives them)
and returns (claim, evidence lines, verdict). A difference counts only "beyond noise": larger than
two combined standard errors of the mean over the seeds. Verdicts are one of VERDICTS.
"""

from __future__ import annotations

import math

import numpy as np

HOLDS, DOES_NOT_HOLD, MIXED, WORSE = "holds", "does not hold", "mixed", "worse than CFG"
VERDICTS = (HOLDS, DOES_NOT_HOLD, MIXED, WORSE)


def stderr(std: float, seeds: int) -> float:
    return std / math.sqrt(max(seeds, 1))


def beyond(a: float, sa: float, b: float, sb: float, seeds: int) -> bool:
    """a < b beyond noise: b − a larger than two combined standard errors of the means."""
    return b - a > 2 * math.hypot(stderr(sa, seeds), stderr(sb, seeds))


def ms(res: dict, preset: str, row: str, metric: str) -> tuple[float, float]:
    """(mean, std) of a row's metric in `compare` results keyed by preset; NaN when absent."""
    m = res.get(preset, {}).get("methods", {}).get(row, {}).get(metric)
    return (m["mean"], m["std"]) if m and m["mean"] is not None else (float("nan"), float("nan"))


def better_or_worse(pairs: list[tuple[float, float, float, float]], seeds: int) -> str:
    """Verdict for "the new value is lower than the old one" over presets: pairs of
    (new, new_std, old, old_std). HOLDS: lower beyond noise everywhere; WORSE: higher beyond noise
    everywhere; DOES_NOT_HOLD: no difference beyond noise anywhere; MIXED: anything else."""
    better = sum(beyond(n, ns, o, os_, seeds) for n, ns, o, os_ in pairs)
    worse = sum(beyond(o, os_, n, ns, seeds) for n, ns, o, os_ in pairs)
    if better == len(pairs):
        return HOLDS
    if worse == len(pairs):
        return WORSE
    if better == 0 and worse == 0:
        return DOES_NOT_HOLD
    return MIXED


def cfg_shifts_modes(res: dict, seeds: int, presets=("gmm1d", "gmm2d")):
    ev, ok = [], True
    for p in presets:
        c, cs = ms(res, p, "cfg[exact]", "mode_shift")
        t, ts = ms(res, p, "truth", "mode_shift")
        cl, cls = ms(res, p, "cfg", "mode_shift")
        ev.append(f"{p}: mode shift exact CFG {c:.3f} ± {cs:.3f}, learned CFG {cl:.3f} ± {cls:.3f}, "
                  f"exact samples {t:.3f} ± {ts:.3f}")
        ok &= beyond(t, ts, c, cs, seeds) and beyond(t, ts, cl, cls, seeds)
    return "CFG shifts the modes away from the truth (Fig. 3)", ev, HOLDS if ok else DOES_NOT_HOLD


def autoguidance_helps(res: dict, seeds: int, presets=("gmm1d", "gmm2d", "tree2d")):
    ev, helps, limited = [], True, True
    for p in presets:
        a, as_ = ms(res, p, "autoguidance", "wasserstein")
        c, cs = ms(res, p, "cfg", "wasserstein")
        t, ts = ms(res, p, "truth", "wasserstein")
        ev.append(f"{p}: W1 Autoguidance {a:.3f} ± {as_:.3f}, CFG {c:.3f} ± {cs:.3f}, noise floor {t:.3f} ± {ts:.3f}")
        helps &= beyond(a, as_, c, cs, seeds)
        limited &= beyond(t, ts, a, as_, seeds)
    verdict = HOLDS if helps and limited else (MIXED if helps or limited else DOES_NOT_HOLD)
    return "Autoguidance helps over CFG but stays short of the truth", ev, verdict


def s2_corrects_shift(res: dict, seeds: int, mechanism: dict | None = None, presets=("gmm1d", "gmm2d", "tree2d")):
    """S² against CFG on the mode shift; `mechanism` ({preset: {"alpha", "beta", "cos_error"}}, medians
    over the σ where S² acts, for the main network) adds why, in numbers."""
    ev, pairs = [], []
    for p in presets:
        s, ss = ms(res, p, "s2", "mode_shift")
        c, cs = ms(res, p, "cfg", "mode_shift")
        ev.append(f"{p}: mode shift S² {s:.3f} ± {ss:.3f} vs CFG {c:.3f} ± {cs:.3f}")
        pairs.append((s, ss, c, cs))
    for p, m in (mechanism or {}).items():
        reading = [("α > 0: part of the signal is CFG's own direction, so S² adds to CFG's push (λ + ωα)"
                    if m["alpha"] > 0 else "α ≤ 0: the signal takes back part of CFG's push"),
                   ("β < 0: the sub-network denoises more than the full network, the opposite of a weak model"
                    if m["beta"] < 0 else "β > 0: the sub-network denoises less, as a weak model would")]
        ev.append(f"{p}, why: the S² signal D_c − D̂_c(m) ≈ α·(D_c − D_∅) + β·(D_c − x) with α = {m['alpha']:.3f}, "
                  f"β = {m['beta']:.3f} (medians over the σ where S² acts), cosine with the true model error "
                  f"{m['cos_error']:.3f}: " + "; ".join(reading))
    return "S²-Guidance corrects CFG's mode shift", ev, better_or_worse(pairs, seeds)


def single_matches_naive(res: dict, seeds: int, presets=("gmm1d", "gmm2d", "tree2d"), tolerance: float = 0.02):
    ev, same = [], True
    for p in presets:
        s, ss = ms(res, p, "s2", "wasserstein")
        n, ns = ms(res, p, "s2-naive", "wasserstein")
        ev.append(f"{p}: W1 S² {s:.3f} ± {ss:.3f} vs naive S² (N = 4) {n:.3f} ± {ns:.3f}")
        same &= abs(s - n) <= 2 * math.hypot(stderr(ss, seeds), stderr(ns, seeds)) + tolerance
    return "Single-sample S² matches naive S² (Fig. 10)", ev, HOLDS if same else DOES_NOT_HOLD


def diminishing_returns(passes: dict, seeds: int):
    g, gs = np.array(passes["gain_mean"]), np.array(passes["gain_std"])
    ev = [f"W1 gain over CFG for N = {n}: {a:.3f} ± {b:.3f}" for n, a, b in zip(passes["num_masks"], g, gs)]
    ev.append(f"single-sample S²: {passes['single_gain_mean']:.3f} ± {passes['single_gain_std']:.3f}")
    if len(g) >= 3:
        mid = len(g) // 2
        dim = (g[-1] - g[mid]) <= (g[mid] - g[0]) + 2 * stderr(gs.max(), seeds)
        verdict = HOLDS if dim and g[-1] > 0 else DOES_NOT_HOLD
    else:
        verdict = MIXED
    return "Returns diminish with the number N of sub-network passes (Fig. 8)", ev, verdict


def small_omega_helps(omega: dict, seeds: int):
    om, oms, ov = np.array(omega["mean"]), np.array(omega["std"]), omega["values"]
    ev = [f"W1 at ω = {w}: {a:.3f} ± {b:.3f}" for w, a, b in zip(ov, om, oms)]
    best = int(np.argmin(om))
    small_helps = best > 0 and ov[best] <= 0.5 and beyond(om[best], oms[best], om[0], oms[0], seeds)
    large_over = beyond(om[best], oms[best], om[-1], oms[-1], seeds)
    verdict = HOLDS if small_helps and large_over else (MIXED if small_helps or large_over else DOES_NOT_HOLD)
    if best == 0 and beyond(om[0], oms[0], om[1], oms[1], seeds):
        verdict = WORSE              # every ω > 0 is worse than CFG (ω = 0), the smallest one already beyond noise
    return "Small ω helps and large ω over-corrects (Fig. 7b)", ev, verdict


def fixed_block_varies(fixed: dict, seeds: int):
    ev, bests, robust = [], [], True
    for p, f in fixed.items():
        fm = np.array(f["fixed_mean"])
        blocks = f["blocks"]
        bests.append(blocks[int(np.argmin(fm))])
        ev.append(f"{p}: W1 per fixed block {blocks[0]}–{blocks[-1]}: {', '.join(f'{v:.3f}' for v in fm)}; "
                  f"stochastic {f['stochastic_mean']:.3f} ± {f['stochastic_std']:.3f}; best block {bests[-1]}")
        robust &= f["stochastic_mean"] <= np.median(fm) + 2 * stderr(f["stochastic_std"], seeds)
    varies = len(set(bests)) > 1
    verdict = HOLDS if varies and robust else (MIXED if varies or robust else DOES_NOT_HOLD)
    return "The best fixed block varies while stochastic dropping is robust (Fig. 7c/d)", ev, verdict


def ideal_weak_corrects(ideal: dict, seeds: int, omega: float = 0.25, delta: float = 1.0):
    """ideal: {preset: {"omegas", "deltas", "mode_shift"/"spread_ratio"/"wasserstein": {"mean", "std"}
    as [δ][ω] lists}} from the exact denoiser with the ideal weak model."""
    ev, pairs = [], []
    for p, r in ideal.items():
        i, j = r["deltas"].index(delta), r["omegas"].index(omega)
        s, ss = r["mode_shift"]["mean"][i][j], r["mode_shift"]["std"][i][j]
        c, cs = r["mode_shift"]["mean"][i][0], r["mode_shift"]["std"][i][0]          # ω = 0: exact CFG
        sp, cp = r["spread_ratio"]["mean"][i][j], r["spread_ratio"]["mean"][i][0]
        ev.append(f"{p} (exact, δ = {delta}): mode shift S² at ω = {omega} {s:.3f} ± {ss:.3f} vs CFG {c:.3f} ± {cs:.3f}; "
                  f"spread ratio {sp:.3f} vs {cp:.3f} (1 is right)")
        pairs.append((s, ss, c, cs))
    return ("With an ideal weak sub-network S² corrects CFG's shift (and what it costs in spread)", ev,
            better_or_worse(pairs, seeds))


def weak_like(m: dict) -> bool:
    """A sub-network signal like a weak model's: mostly along the denoising direction (β > 0, β > |α|)."""
    return m["beta"] > 0 and m["beta"] > abs(m["alpha"])


def blockdrop_makes_weak_models(mech: dict, effect: dict, seeds: int):
    """mech: {preset: {model: {"alpha", "beta", "ratio"}}} (medians over S²'s σ); effect: {preset:
    {model: {"mean", "std"}}} of S²'s mode-shift effect over CFG. Holds when, on every preset, the
    block-dropout network's sub-networks signal like a weak model (β > 0, β > |α|) and its S² lowers
    the mode shift beyond noise; does not hold when neither happens anywhere."""
    ev, weak, corrects = [], 0, 0
    for p in mech:
        a, b = mech[p]["main"], mech[p]["blockdrop"]
        em, eb = effect[p]["main"], effect[p]["blockdrop"]
        ev.append(f"{p}: α {a['alpha']:.3f} → {b['alpha']:.3f}, β {a['beta']:.3f} → {b['beta']:.3f}, |s|/|g| "
                  f"{a['ratio']:.3f} → {b['ratio']:.3f} (main → blockdrop); S² − CFG mode shift "
                  f"{em['mean']:+.3f} ± {em['std']:.3f} → {eb['mean']:+.3f} ± {eb['std']:.3f}")
        weak += weak_like(b)
        corrects += beyond(eb["mean"], eb["std"], 0.0, 0.0, seeds)
    n = len(mech)
    verdict = HOLDS if weak == n and corrects == n else (DOES_NOT_HOLD if weak == 0 and corrects == 0 else MIXED)
    return "Block-dropout training makes sub-networks behave as weak models", ev, verdict


def mode_preference(res: dict, seeds: int, preset: str = "gmm2d4"):
    """Paper B.1.3: the baseline shows mode preference while S² keeps the modes' weights, read from
    `mode_balance` (TV distance of the modes' shares to their weights) in `compare` results. Holds when
    CFG's mode balance is beyond the exact samples' (a preference exists) and S²'s is lower than CFG's
    beyond noise; worse than CFG when higher; does not hold when CFG shows no preference or S² no change."""
    rows = [("truth", "exact samples"), ("cfg[exact]", "exact CFG"), ("cfg", "CFG"), ("s2", "S²"),
            ("autoguidance", "Autoguidance")]
    v = {r: ms(res, preset, r, "mode_balance") for r, _ in rows}
    ev = [f"{preset}: mode balance (0 = the true weights) " + ", ".join(f"{name} {v[r][0]:.3f} ± {v[r][1]:.3f}"
                                                                        for r, name in rows if not math.isnan(v[r][0]))]
    preference = beyond(*v["truth"], *v["cfg"], seeds)
    verdict = better_or_worse([(*v["s2"], *v["cfg"])], seeds) if preference else DOES_NOT_HOLD
    if not preference:
        ev.append("CFG's mode balance is within the noise of exact samples: no preference to correct")
    return "CFG shows mode preference; S² keeps the modes' weights (B.1.3)", ev, verdict


def dit_weak_model(depths, medians: list[dict], mlp: dict | None = None):
    """medians: per DiT depth {"alpha", "beta", "cos_ref", "ratio"} (medians over the σ where S² acts);
    mlp: {label: the same for an MLP} for comparison. Holds when at every depth the DiT's sub-network
    signals like a weak model (β > 0, β > |α|) with α ≈ 0 (|α| < 0.1); does not hold when at none."""
    ev, ok = [], 0
    for d, m in zip(depths, medians):
        like = weak_like(m) and abs(m["alpha"]) < 0.1
        ok += like
        ev.append(f"DiT depth {d}: α {m['alpha']:.3f}, β {m['beta']:.3f}, cos_ref {m['cos_ref']:.3f}, "
                  f"|s|/|g| {m['ratio']:.3f}: {'like a weak model' if like else 'not like a weak model'}")
    for name, m in (mlp or {}).items():
        ev.append(f"for comparison, {name}: α {m['alpha']:.3f}, β {m['beta']:.3f}")
    verdict = HOLDS if ok == len(medians) else (DOES_NOT_HOLD if ok == 0 else MIXED)
    return "The DiT's sub-network acts as a weak model (β > 0, α ≈ 0)", ev, verdict


def paper_depth_corrects(effects: list[tuple[str, dict, int]]):
    """At the paper's depth (28 blocks, about 10% of the droppable ones dropped): effects are
    (what, S² − CFG {"mean", "std"} of a distance where lower is better, seeds). Holds when S² lowers
    the distance beyond noise everywhere, worse than CFG when it raises it everywhere."""
    ev, better, worse = [], 0, 0
    for what, e, seeds in effects:
        ev.append(f"{what}: S² − CFG {e['mean']:+.3f} ± {e['std']:.3f} ({seeds} seed{'s' if seeds != 1 else ''})")
        better += beyond(e["mean"], e["std"], 0.0, 0.0, seeds)
        worse += beyond(0.0, 0.0, e["mean"], e["std"], seeds)
    n = len(effects)
    verdict = HOLDS if better == n else WORSE if worse == n else DOES_NOT_HOLD if better == worse == 0 else MIXED
    return "At the paper's depth S² corrects CFG", ev, verdict
