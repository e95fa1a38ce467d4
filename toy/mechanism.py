"""Why S² helps or hurts: the S² signal taken apart, and the regimes where it corrects CFG.

S² adds ω·s to CFG with s = D_c − D̂_c(m) (paper Eq. 4). Along the states the CFG sampler visits,
at every sampler σ and over the masks S² would draw, `decompose` fits by least squares

    s ≈ α·g + β·h,   g = D_c − D_∅ (CFG's own direction),   h = D_c − x (the denoising direction).

- α > 0: dropping blocks loses class information, so S² acts as CFG with λ + ωα: the modes move
  further out.
- β > 0: the sub-network denoises less (a blurrier model of the same class, Autoguidance's premise),
  so S² pulls samples onto the class's own modes, against CFG's outward push, at a cost in spread.
- r²: the share of |s|² that α and β explain; `ratio` = |s| / |g|.
- `cos_error`: the cosine of s with the true model error e = D*_c − D_c (exact minus learned):
  > 0 means S² moves the prediction toward the truth.
- `cos_ref`: the same cosine with the error measured against a stronger reference network R instead
  of the truth, e ≈ R_c − D_c: the proxy for images, which have no closed form (validated against
  cos_error on the toys, where both exist).

`analyze` does this for a trained network (`main`, `blockdrop`) or for the ideal weak model (`ideal`:
D_c exact, D̂ = the truth blurred by δ, where e = 0 and cos_error is undefined). `regime_effect`
measures S²'s effect over CFG (paired by seed: same reference, same initial noise) for any network.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from toy import evaluation as E
from toy.diffusion import SamplerConfig, draw_mask_scores, sample
from toy.errors import ToyError, check_finite, check_int
from toy.guidance import GuidanceConfig, mask_from_scores, num_dropped, steps_in_interval
from toy.presets import get_preset
from toy.nets import ExactDenoiser
from toy.train import model_set_configs, train, train_models

MODELS = ("main", "blockdrop", "ideal")      # the networks whose S² signal is taken apart
EFFECT_METRICS = ("mode_shift", "spread_ratio", "wasserstein")


def decompose(s: np.ndarray, g: np.ndarray, h: np.ndarray, e: np.ndarray | None = None) -> dict[str, float]:
    """Least squares of the S² signal s on g and h over every mask and sample.

    s: [M, n, d] (one row per mask); g, h: [n, d] (broadcast over masks); e: [n, d] the true model
    error, or None. Returns alpha, beta, r2, cos_error (NaN without e, or where e = 0) and ratio."""
    out = decompose_steps(np.asarray(s)[None], np.asarray(g)[None], np.asarray(h)[None],
                          None if e is None else np.asarray(e)[None])
    return {k: float(v[0]) for k, v in out.items()}


def decompose_steps(s: np.ndarray, g: np.ndarray, h: np.ndarray, e: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`decompose` at T noise levels at once: s [T, M, n, d], g, h, e [T, n, d] → each value [T]."""
    s, g, h = (np.asarray(a, np.float64) for a in (s, g, h))
    M = s.shape[1]
    dot = lambda a, b: np.sum(a * b, axis=tuple(range(1, a.ndim)))                    # [T]
    gg, hh, gh = dot(g, g) * M, dot(h, h) * M, dot(g, h) * M
    sg, sh, ss = dot(s, g[:, None]), dot(s, h[:, None]), dot(s, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        # 2 × 2 normal equations per σ; where g ∥ h (a singular system) fall back to the minimum-norm solution
        alpha, beta = np.empty(len(gg)), np.empty(len(gg))
        for t in range(len(gg)):
            alpha[t], beta[t] = np.linalg.lstsq(np.array([[gg[t], gh[t]], [gh[t], hh[t]]]), np.array([sg[t], sh[t]]),
                                                rcond=None)[0]
        resid = ss - 2 * alpha * sg - 2 * beta * sh + alpha**2 * gg + 2 * alpha * beta * gh + beta**2 * hh
        r2 = np.where(ss > 0, 1 - resid / ss, np.nan)
        ratio = np.where(gg > 0, np.sqrt(ss / gg), np.nan)
        cos = np.full(len(gg), np.nan)
        if e is not None:
            e = np.asarray(e, np.float64)
            ee = dot(e, e) * M
            cos = np.where((ee > 0) & (ss > 0), dot(s, e[:, None]) / np.sqrt(ss * ee), np.nan)
    return {"alpha": alpha, "beta": beta, "r2": r2, "cos_error": cos, "ratio": ratio}


@dataclass(frozen=True)
class MechanismConfig:
    preset: str = "gmm1d"
    model: str = "main"              # main, blockdrop (trained networks) or ideal (the blurred truth)
    quick: bool = False              # quick-trained models, fewer samples
    label: int = 0
    samples: int | None = None       # CFG sampler states per σ; default 500 quick, 2000 full
    masks: int = 16                  # masks per σ, drawn as S² draws them
    seed: int = 0
    guidance: GuidanceConfig = GuidanceConfig(method="cfg")   # λ, and the masks' drop ratio / count / exclusions
    sampler: SamplerConfig = SamplerConfig()
    ideal_blur: float = 1.0          # δ of the ideal weak model
    train_seed: int = 0
    reference: bool = False          # also cos_ref, against `reference_network` (main trained 4× as long)

    @property
    def num_samples(self) -> int:
        return self.samples if self.samples is not None else (500 if self.quick else 2000)

    def validate(self) -> "MechanismConfig":
        mixture = get_preset(self.preset)
        if self.model not in MODELS:
            raise ToyError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        check_int("label", self.label, low=0, high=mixture.num_classes - 1)
        check_int("samples", self.num_samples, low=10, high=1_000_000)
        check_int("masks", self.masks, low=1, high=1024)
        check_int("seed", self.seed, low=0, high=2**31 - 1)
        check_finite("ideal blur δ", self.ideal_blur, low=0.0, low_open=True)
        K = model_set_configs(self.preset, self.quick, self.train_seed)["main"].num_blocks
        replace(self.guidance, method="s2").validate(K)      # the masks S² would draw must exist
        return replace(self, sampler=self.sampler.validate())


@functools.partial(jax.jit, static_argnames=("exclude",))
def _signal(main, x, sigma, label, scores, k_drop, *, exclude):
    """(D_∅, D_c, D̂_c(m_i) [M, n, d]) at one state x [n, d] and σ, the masks made from scores [M, K]
    as S² makes them (the random draw happens outside, as in the sampler)."""
    n = x.shape[0]
    labels = jnp.full((n,), label, jnp.int32)
    null = jnp.full((n,), main.null_label, jnp.int32)
    masks = jax.vmap(lambda sc: mask_from_scores(sc, exclude, k_drop))(scores)  # [M, K] (K = 0: the ideal weak model)
    return main.guided_passes(x, sigma, null, labels, masks, shared_prefix=True)


@functools.partial(jax.jit, static_argnames=("exclude",))
def _signal_steps(main, refs, xs, sigmas, label, scores, k_drop, *, exclude):
    """_signal at every state xs [T, n, d] and σ [T] with scores [T, M, K] (one program for all steps),
    plus each reference denoiser's D_c (refs: a tuple of denoisers)."""
    def one(args):
        x, sigma, sc = args
        du, dc, subs = _signal(main, x, sigma, label, sc, k_drop, exclude=exclude)
        labels = jnp.full((x.shape[0],), label, jnp.int32)
        return du, dc, subs, tuple(r(x, sigma, labels) for r in refs)
    return jax.lax.map(one, (xs, sigmas, scores))


def cosine_steps(s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """cos(s, e) per σ over every mask and sample: s [T, M, n, d], e [T, n, d] → [T] (NaN where s or e is 0)."""
    s, e = np.asarray(s, np.float64), np.asarray(e, np.float64)
    se = np.sum(s * e[:, None], axis=tuple(range(1, s.ndim)))
    ss = np.sum(s * s, axis=tuple(range(1, s.ndim)))
    ee = np.sum(e * e, axis=tuple(range(1, e.ndim))) * s.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((ee > 0) & (ss > 0), se / np.sqrt(ss * ee), np.nan)


def decompose_states(main, references: dict, traj: np.ndarray, sigmas: np.ndarray, label: int,
                     gcfg: GuidanceConfig, *, masks: int, key: jax.Array, progress=None) -> dict:
    """The decomposition at every sampler σ along given states: traj [T + 1, n, d] (traj[i] is the
    state at σ_i), from any sampler run. `main` is any denoiser with the common interface (an MLP, the
    image DiT: masks drawn as S² draws them, from gcfg's drop settings) or an ExactDenoiser (the ideal
    weak model, no model error). `references` maps an output name to a denoiser R whose D_c stands in
    for the truth: the series `name` is cos(s, R_c − D_c), the cosine of the S² signal with main's
    error measured against R ({"cos_error": the exact denoiser}; {"cos_ref": a stronger network} where
    there is no closed form). Returns {"sigmas", "alpha", "beta", "r2", "ratio", *references}, each a
    list over the T steps (a reference series is all NaN when main has no blocks: it has no error)."""
    K = main.num_blocks
    k_drop = num_dropped(K, gcfg.exclude, gcfg.drop_ratio, gcfg.num_drop) if K else 0
    T = len(sigmas) - 1
    names = tuple(references)
    scores = draw_mask_scores(key, masks if K else 1, K, T)                      # [T, M, K]: step i's key is fold_in(key, i)
    du, dc, subs, refs = _signal_steps(
        main, tuple(references[n] for n in names), np.asarray(traj[:T], np.float32), np.asarray(sigmas[:T], np.float32),
        label, scores, np.float32(k_drop), exclude=tuple(gcfg.exclude) if K else ())
    du, dc, subs = np.asarray(du), np.asarray(dc), np.asarray(subs)             # [T, n, d] ×2, [T, M, n, d]
    s = dc[:, None] - subs                                                       # [T, M, n, d]
    out = decompose_steps(s, dc - du, dc - np.asarray(traj[:T]))
    out.pop("cos_error")
    for n, r in zip(names, refs):                                                # r: [T, n, d]
        out[n] = cosine_steps(s, np.asarray(r) - dc) if K else np.full(T, np.nan)
    if callable(progress):
        progress(1.0, "decomposed")
    return {"sigmas": [float(v) for v in sigmas[:T]], **{k: np.asarray(v).tolist() for k, v in out.items()}}


def guidance_terms(main, exact: ExactDenoiser, x: np.ndarray, sigma: float, label: int, gcfg: GuidanceConfig, *,
                   masks: int, key: jax.Array) -> dict[str, np.ndarray]:
    """The guidance terms on D at points x [n, d] and one σ: CFG's push (λ − 1)(D_c − D_∅), S²'s
    correction −ω·(D̂_c(m) − D_c) averaged over masks drawn as S² draws them (the ideal weak model on
    the exact denoiser), and the true model error D*_c − D_c (zero on the exact denoiser)."""
    K = main.num_blocks
    k_drop = num_dropped(K, gcfg.exclude, gcfg.drop_ratio, gcfg.num_drop) if K else 0
    xh = np.asarray(x, np.float32)                                   # host arrays: no program per conversion
    du, dc, subs = _signal(main, xh, np.float32(sigma), label, draw_mask_scores(key, masks if K else 1, K),
                           np.float32(k_drop), exclude=tuple(gcfg.exclude) if K else ())
    dc, du, subs = np.asarray(dc), np.asarray(du), np.asarray(subs)
    err = np.zeros_like(dc) if K == 0 else np.asarray(exact(xh, np.float32(sigma), np.full(len(x), label, np.int32))) - dc
    return {"cfg_push": (gcfg.scale - 1) * (dc - du), "s2_correction": -gcfg.s2_scale * (subs - dc[None]).mean(0),
            "model_error": err}


def reference_config(preset: str, quick: bool = True, seed: int = 0):
    """The stronger network `cos_ref` measures the main network's error against, as images must: the
    main network's shape trained 4× as long (quick: 6000 steps, which ships for gmm1d and gmm2d)."""
    main = model_set_configs(preset, quick, seed)["main"]
    return replace(main, steps=4 * main.steps, snapshot=0)


def reference_network(preset: str, *, quick: bool = True, seed: int = 0, folder: str | Path | None = None,
                      progress: bool | Callable[[float, str], None] = True):
    """`reference_config`'s network, trained, loaded or resumed."""
    tcfg = reference_config(preset, quick, seed)
    return train(tcfg, folder=folder, tag=f"steps-{tcfg.steps}", progress=progress).model


def analyze(cfg: MechanismConfig, *, folder: str | Path | None = None,
            progress: bool | Callable[[float, str], None] = True, models: dict | None = None,
            reference=None) -> dict:
    """The decomposition at every sampler σ along the CFG sampler's own states:
    {"preset", "model", "sigmas", "alpha", "beta", "r2", "ratio", "cos_error", "settings"}, and
    "cos_ref" when a `reference` denoiser is given (the proxy of cos_error that images use)."""
    cfg = cfg.validate()
    mixture = get_preset(cfg.preset)
    exact = ExactDenoiser(mixture, ideal_blur=cfg.ideal_blur)
    if cfg.model == "ideal":
        main = exact
    else:
        models = models or train_models(cfg.preset, quick=cfg.quick, seed=cfg.train_seed, folder=folder,
                                        progress=progress, roles=(cfg.model,))
        main = models[cfg.model]
    if reference is None and cfg.reference and cfg.model != "ideal":
        reference = reference_network(cfg.preset, quick=cfg.quick, seed=cfg.train_seed, folder=folder, progress=progress)
    g = replace(cfg.guidance, method="cfg")
    key = jax.random.key(cfg.seed)
    run = sample(main, g, cfg.sampler, jax.random.fold_in(key, E.SAMPLES), cfg.num_samples, cfg.label,
                 return_trajectory=True)
    refs = {"cos_error": exact, **({"cos_ref": reference} if reference is not None else {})}
    res = decompose_states(main, refs, np.asarray(run.trajectory), run.sigmas, cfg.label, g, masks=cfg.masks,
                           key=jax.random.fold_in(key, 1000), progress=progress if callable(progress) else None)
    K = main.num_blocks
    settings = {"label": cfg.label, "samples": cfg.num_samples, "masks": cfg.masks if K else 1, "seed": cfg.seed,
                "guidance_scale": g.scale, "exclude": list(g.exclude),
                "blocks_dropped": num_dropped(K, g.exclude, g.drop_ratio, g.num_drop) if K else 0,
                "ideal_blur": cfg.ideal_blur if cfg.model == "ideal" else None, "quick": cfg.quick,
                "sampler": dataclasses.asdict(cfg.sampler)}
    return {"preset": cfg.preset, "model": cfg.model, **res, "settings": settings}


def acting(res: dict, key: str, interval: tuple[float, float]) -> np.ndarray:
    """A mechanism series at the sampler steps where S² acts (`interval`, fractions of the steps, read
    as the sampler reads it: `toy.guidance.steps_in_interval`)."""
    return np.asarray(res[key], np.float64)[steps_in_interval(interval, len(res["sigmas"]))]


def interval_median(res: dict, key: str, interval: tuple[float, float]) -> float:
    """Median of a mechanism series over the σ where S² acts (`interval`, fractions of the steps): at
    the smallest σ both g and h are tiny and single values swing, which a mean would follow."""
    v = acting(res, key, interval)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def proxy_agreement(res: dict, interval: tuple[float, float]) -> dict[str, float]:
    """How well cos_ref (against a reference network) tracks cos_error (against the truth) where S²
    acts: their Pearson correlation over σ, each one's median and the median absolute difference."""
    a, b = (acting(res, k, interval) for k in ("cos_error", "cos_ref"))
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.size > 2 and a.std() > 0 and b.std() > 0 else float("nan")
    nan = float("nan")
    return {"correlation": corr, "cos_error": float(np.median(a)) if a.size else nan,
            "cos_ref": float(np.median(b)) if b.size else nan,
            "median_abs_difference": float(np.median(np.abs(a - b))) if a.size else nan}


def verdict(alpha: float, beta: float) -> str:
    """What the medians of α and β say S² does (the app's caption)."""
    if alpha > 0.1:
        return "S² acts as extra CFG here (α > 0): it pushes the modes further out"
    if beta > 0.05:
        return "S² pulls toward the class's modes (β > 0), like a weak model"
    return "the sub-networks barely differ from the full network: S² is close to CFG"


def grid_for(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Points to draw the guidance terms at: 200 along x in 1D [200, 1], a 13 × 13 grid in 2D [169, 2]."""
    if len(lo) == 1:
        return np.linspace(lo[0], hi[0], 200)[:, None]
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 13), np.linspace(lo[1], hi[1], 13))
    return np.stack([gx.ravel(), gy.ravel()], 1)


def interval_for_sigma(scfg: SamplerConfig, lo: float, hi: float, sigma_data: float | None = None) -> tuple[float, float]:
    """The application interval (fractions of the sampler steps) that holds exactly the steps whose
    σ lies in [lo, hi], on the schedule the sampler runs for data of spread σ_data (wide data raise σ_max)."""
    sig = scfg.sigmas(sigma_data)[:-1]                                                # [T]
    idx = np.flatnonzero((sig >= lo) & (sig <= hi))
    T1 = max(scfg.steps - 1, 1)
    if idx.size == 0:
        raise ToyError(f"no step of the {scfg.steps}-step sampler has σ in [{lo}, {hi}]: widen the window")
    # half a step of margin on each side: positions are i / (T − 1) in float32 inside the sampler
    return max(0.0, (idx[0] - 0.5) / T1), min(1.0, (idx[-1] + 0.5) / T1)


def regime_effect(main, preset: str, gcfg: GuidanceConfig, scfg: SamplerConfig, seeds, n: int, *,
                  label: int = 0, runs: E.Runs | None = None) -> dict:
    """S² minus CFG (same λ; gcfg's ω, masks and interval) for one network: per metric of
    EFFECT_METRICS, {"mean", "std"} over seeds of the paired difference, plus each side's values.
    Both use the seed's SAMPLES key, so they start from the same noise and are scored against the
    same reference. `runs` (an `E.Runs`) reuses references and runs across calls: a sweep's CFG side
    is the same run for every σ window."""
    runs = runs if runs is not None else E.Runs()
    target = get_preset(preset).cond(label)
    diffs = {k: [] for k in EFFECT_METRICS}
    sides = {"cfg": {k: [] for k in EFFECT_METRICS}, "s2": {k: [] for k in EFFECT_METRICS}}
    for seed in seeds:
        ref = runs.reference(target, seed, n)
        scores = {m: runs.sample_and_score(main, replace(gcfg, method=m), scfg, ref, label, n,
                                           metrics=EFFECT_METRICS)[1] for m in ("cfg", "s2")}
        for k in EFFECT_METRICS:
            diffs[k].append(scores["s2"][k] - scores["cfg"][k])
            for m in sides:
                sides[m][k].append(scores[m][k])
    return {"effect": {k: E.summarize(v) for k, v in diffs.items()},
            **{m: {k: E.summarize(v) for k, v in s.items()} for m, s in sides.items()}}
