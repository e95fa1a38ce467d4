"""One way to score generated samples of a class against its exact truth.

`compare`, the figures, the app and the notebooks all score through here, so the same seed and
settings give the same numbers everywhere:

- every random draw of a seed comes from `jax.random.fold_in(key(seed), purpose)` with one fixed
  `purpose` per use (`REFERENCE`, `TRUTH`, `SAMPLES`);
- the reference is `reference_size(n)` exact samples of the class (at least `EvalSettings.reference_min`),
  and everything a score needs from it (component assignment, log-densities, sorted projections,
  the MMD's reference-side kernel sums) is computed once in `Reference`;
- `score` returns every metric of `toy.metrics.METRICS` (or the ones asked for, each computed only
  then) with one fixed set of metric settings;
- `summarize` reduces a metric over seeds to {"mean", "std"} with one convention (ddof = 1);
- `Runs` remembers references and runs, so that the panels of the figures that share a run (the same
  denoiser, method settings, sampler, class, sample count and seed) draw it once and score each metric once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import jax
import numpy as np

from toy import metrics as M
from toy.errors import ToyError
from toy.mixtures import GaussianMixture

REFERENCE, TRUTH, SAMPLES = 1, 2, 3        # the purposes a seed's key is folded with


@dataclass(frozen=True)
class EvalSettings:
    """The metric settings every caller shares."""

    reference_min: int = 5000          # exact reference samples: max(n, reference_min)
    num_projections: int = 256         # sliced Wasserstein directions (2D and up)
    mmd_points: int = 1500             # MMD on at most this many points of each set
    min_share: float = 0.2             # mode coverage: share of a mode's expected samples
    min_count: int = 10                # per-mode metrics skip modes with fewer samples


DEFAULT = EvalSettings()


def seed_key(seed: int, purpose: int) -> jax.Array:
    """The PRNG key of one purpose (REFERENCE, TRUTH, SAMPLES) of a seed."""
    return jax.random.fold_in(jax.random.key(int(seed)), purpose)


def reference_size(n: int, settings: EvalSettings = DEFAULT) -> int:
    return max(int(n), settings.reference_min)


def truth_samples(target: GaussianMixture, seed: int, n: int) -> np.ndarray:
    """n fresh exact samples of the class: what a perfect sampler would give ([n, d])."""
    return np.asarray(target.sample(seed_key(seed, TRUTH), n))


@dataclass(frozen=True, eq=False)
class Reference:
    """Exact reference samples of one class and seed, with what every score needs from them."""

    target: GaussianMixture
    seed: int
    settings: EvalSettings
    x: np.ndarray                  # [m, d] exact samples
    comp: np.ndarray               # [m] most responsible component
    low_threshold: float           # 1% quantile of their true log-density
    dirs: np.ndarray               # [P, d] projection directions
    sorted_proj: np.ndarray        # [P, m] sorted projections
    mmd_x: np.ndarray              # [≤ mmd_points, d] the MMD subset
    bandwidths: np.ndarray         # [S] MMD kernel bandwidths
    kyy: np.ndarray                # [S] within-reference kernel means


def make_reference(target: GaussianMixture, seed: int, n: int, settings: EvalSettings = DEFAULT) -> Reference:
    """The reference for scoring n samples of `target` with `seed`."""
    x = M.as_samples(np.asarray(target.sample(seed_key(seed, REFERENCE), reference_size(n, settings))), "ref")
    dirs = M.directions(settings.num_projections, x.shape[1], seed)                  # [P, d]
    mmd_x = M.mmd_subset(x, settings.mmd_points, seed)                               # [≤ mmd_points, d]
    bw = M.mmd_bandwidths(mmd_x)                                                     # [S]
    return Reference(target, int(seed), settings, x, M.assign(x, target),
                     float(np.quantile(M.log_density(x, target), 0.01)), dirs, np.sort(dirs @ x.T, 1),
                     mmd_x, bw, M.mmd_kernel_means(mmd_x, mmd_x, bw, same=True))


def metric_names(metrics: Iterable[str] | None) -> tuple[str, ...]:
    """The metrics asked for, in the order of toy.metrics.METRICS (None: all of them)."""
    if metrics is None:
        return M.METRICS
    names = set(metrics)
    unknown = names - set(M.METRICS)
    if unknown:
        raise ToyError(f"unknown metric(s) {', '.join(sorted(unknown))}: choose from {', '.join(M.METRICS)}")
    return tuple(k for k in M.METRICS if k in names)


def score(x, ref: Reference, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Every metric of toy.metrics.METRICS, or those named in `metrics`, for samples x [n, d] of ref's
    class. Equal to calling each metric of toy.metrics with ref.x and these settings (tested), with the
    reference side reused. Each metric is computed only when asked for (the MMD, most of the cost,
    too), and asking for fewer changes none of the values."""
    x = M.as_samples(x)
    s, target = ref.settings, ref.target
    names = metric_names(metrics)
    per_mode = {"mode_coverage", "mode_shift", "spread_ratio"} & set(names)
    comp = M.assign(x, target) if per_mode else None
    lp = M.log_density(x, target) if {"gt_logp", "low_density_frac"} & set(names) else None

    def mmd():
        xs = M.mmd_subset(x, s.mmd_points, ref.seed)
        return float(np.sum(M.mmd_kernel_means(xs, xs, ref.bandwidths, same=True) + ref.kyy
                            - 2 * M.mmd_kernel_means(xs, ref.mmd_x, ref.bandwidths, same=False)))

    make = {
        "wasserstein": lambda: float(np.mean(M.wp_sorted(np.sort(ref.dirs @ x.T, 1), ref.sorted_proj, 1.0))),
        "mmd": mmd,
        "mode_coverage": lambda: M.mode_coverage(x, target, min_share=s.min_share, comp=comp),
        "mode_balance": lambda: M.mode_balance(x, target),
        "mode_shift": lambda: M.mode_shift(x, target, ref.x, min_count=s.min_count, comp=comp, ref_comp=ref.comp),
        "spread_ratio": lambda: M.spread_ratio(x, target, ref.x, min_count=s.min_count, comp=comp, ref_comp=ref.comp),
        "gt_logp": lambda: float(np.mean(lp)),
        "low_density_frac": lambda: float(np.mean(lp < ref.low_threshold)),
    }
    return {k: make[k]() for k in names}


def summarize(values: Iterable[float | None]) -> dict:
    """{"mean", "std"} over seeds (sample std, ddof = 1; 0 for one value); non-finite values are
    left out, and none left gives {"mean": None, "std": None}."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def draw(main, gcfg, scfg, seed: int, label: int, n: int, *, weak=None, return_trajectory: bool = False):
    """n samples of class `label` with one method, from the SAMPLES key of `seed`: the sampler's result.
    Needs no reference, so a caller can start sampling while the reference is still being made."""
    from toy.diffusion import sample
    return sample(main, gcfg, scfg, seed_key(seed, SAMPLES), n, label, weak=weak, return_trajectory=return_trajectory)


def sample_and_score(main, gcfg, scfg, ref: Reference, label: int, n: int, *, weak=None,
                     return_trajectory: bool = False, metrics: Iterable[str] | None = None):
    """`draw` with ref's seed, scored against `ref` (every metric, or those named in `metrics`):
    returns (samples [n, d], metrics, the sampler's result)."""
    res = draw(main, gcfg, scfg, ref.seed, label, n, weak=weak, return_trajectory=return_trajectory)
    x = np.asarray(res.x)                                                            # [n, d]
    return x, score(x, ref, metrics), res


class Runs:
    """`make_reference` and `sample_and_score`, each computed once per distinct input and then reused.

    A run is keyed by the denoiser (and the weak model, for the methods that read one) as objects, the
    method's canonical settings (`GuidanceConfig.canonical`: fields the method does not read cannot
    change its samples), the sampler config, the reference, the class and the sample count: everything
    the samples and scores are a function of, so a hit returns exactly what a new run would. The
    objects a key names are kept alive with the entry, so their ids stay theirs. The returned arrays
    are shared between callers: read them, never write to them."""

    def __init__(self):
        self._refs: dict = {}
        self._runs: dict = {}

    def reference(self, target: GaussianMixture, seed: int, n: int, settings: EvalSettings = DEFAULT) -> Reference:
        key = (id(target), int(seed), reference_size(n, settings), settings)
        if key not in self._refs:
            self._refs[key] = (make_reference(target, seed, n, settings), target)
        return self._refs[key][0]

    def sample_and_score(self, main, gcfg, scfg, ref: Reference, label: int, n: int, *, weak=None,
                         return_trajectory: bool = False, metrics: Iterable[str] | None = None):
        """As `sample_and_score`; a run made without trajectories is made again when they are asked for.
        A run's metrics are computed when first asked for and kept: a sweep that reads one metric
        never pays for the others, and a later caller that reads them all gets the same values a
        fresh run scored at once would give."""
        gcfg = gcfg.validate()
        names = metric_names(metrics)
        weak_ = weak if "weak" in gcfg.spec.needs else None
        key = (id(main), id(weak_), gcfg.canonical(), scfg, id(ref), int(label), int(n))
        hit = self._runs.get(key)
        if hit is None or (return_trajectory and hit[2].trajectory is None):
            res = draw(main, gcfg, scfg, ref.seed, label, n, weak=weak, return_trajectory=return_trajectory)
            scores = hit[1] if hit is not None else {}       # the same samples: the scores made so far stand
            self._runs[key] = hit = (np.asarray(res.x), scores, res, main, weak_, ref)       # x: [n, d]
        x, scores, res = hit[:3]
        missing = [k for k in names if k not in scores]
        if missing:
            scores.update(score(x, ref, missing))
        return x, {k: scores[k] for k in names}, res

    def __len__(self) -> int:
        return len(self._runs)
