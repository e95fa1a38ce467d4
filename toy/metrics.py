"""Distances between generated samples and the exact target distribution (DESIGN.md §7).

Every metric takes generated samples `x` [n, d] of one class and either that class's exact
`GaussianMixture` or exact reference samples `ref` [m, d] of it (or both). Computations are in
float64 NumPy: these are measurements, not part of any jitted path.

Per-mode metrics assign each sample to its most responsible true component. Because that
assignment truncates each mode at the boundary with its neighbours, per-mode statistics are
compared with the same statistics of exact samples under the same assignment, so exact samples
score a shift of ~0 and a spread ratio of ~1 on every mixture.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from toy.errors import ToyError
from toy.mixtures import GaussianMixture, component_labels

METRICS = ("wasserstein", "mmd", "mode_coverage", "mode_shift", "spread_ratio", "gt_logp", "low_density_frac")
# Which way is better, for tables and claims: +1 higher is better, −1 lower is better, 0 closest to 1.
BETTER = {"wasserstein": -1, "mmd": -1, "mode_coverage": +1, "mode_shift": -1, "spread_ratio": 0,
          "gt_logp": +1, "low_density_frac": -1}


def _as2d(x, name="x") -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ToyError(f"{name} must be [n, d] with n >= 2, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ToyError(f"{name} contains NaN or infinite values")
    return x


def _wp_1d(a: np.ndarray, b: np.ndarray, p: float) -> float:
    """Exact W_p^p between two 1D empirical distributions (equal weights, any sizes)."""
    a, b = np.sort(a), np.sort(b)
    if a.size == b.size:
        return float(np.mean(np.abs(a - b) ** p))
    # Quantile functions are step functions: integrate (F_a⁻¹ − F_b⁻¹)² over the merged breakpoints.
    qs = np.union1d(np.arange(1, a.size + 1) / a.size, np.arange(1, b.size + 1) / b.size)
    widths = np.diff(np.concatenate([[0.0], qs]))
    ia = np.minimum(np.ceil(qs * a.size - 1e-9).astype(int) - 1, a.size - 1)
    ib = np.minimum(np.ceil(qs * b.size - 1e-9).astype(int) - 1, b.size - 1)
    return float(np.sum(widths * np.abs(a[ia] - b[ib]) ** p))


def wasserstein(x, ref, *, p: float = 1.0, num_projections: int = 256, seed: int = 0) -> float:
    """W_p distance (default W1): exact in 1D (sorted samples), sliced in 2D and up, i.e.
    (mean over random unit directions u of W_p^p(x·u, ref·u))^(1/p).

    W1 by default: W2 squares the distance between modes, so the binomial noise in how many
    samples land in each far-apart mode dominates it at practical sample sizes."""
    x, ref = _as2d(x), _as2d(ref, "ref")
    if not (math.isfinite(p) and p >= 1):
        raise ToyError(f"p must be a finite number >= 1, got {p!r}")
    d = x.shape[1]
    if d == 1:
        return _wp_1d(x[:, 0], ref[:, 0], p) ** (1 / p)
    dirs = np.random.default_rng(seed).normal(size=(num_projections, d))               # [P, d]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return float(np.mean([_wp_1d(x @ u, ref @ u, p) for u in dirs]) ** (1 / p))


def mmd(x, ref, *, scales=(0.1, 0.3, 1.0, 3.0), max_points: int = 1500, seed: int = 0) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels, bandwidths `scales` × the reference's RMS std.

    Several bandwidths catch both a shifted mode (small scales) and wrong mode weights (large).
    At most `max_points` of each set are used (a fixed random subset) to keep it O(n²) small.
    """
    x, ref = _as2d(x), _as2d(ref, "ref")
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_points:
        x = x[rng.choice(x.shape[0], max_points, replace=False)]
    if ref.shape[0] > max_points:
        ref = ref[rng.choice(ref.shape[0], max_points, replace=False)]
    base = float(np.sqrt(np.mean(np.var(ref, axis=0)))) or 1.0

    x, ref = x.astype(np.float32), ref.astype(np.float32)   # kernel sums: float32 is ample, 2x faster

    def sq(a, b):
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)

    dxx, dyy, dxy = sq(x, x), sq(ref, ref), sq(x, ref)
    total = 0.0
    for s in scales:
        h = 2 * (s * base) ** 2
        kxx, kyy, kxy = np.exp(-dxx / h), np.exp(-dyy / h), np.exp(-dxy / h)
        n, m = x.shape[0], ref.shape[0]
        total += ((kxx.sum(dtype=np.float64) - n) / (n * (n - 1)) + (kyy.sum(dtype=np.float64) - m) / (m * (m - 1))
                  - 2 * kxy.mean(dtype=np.float64))
    return float(total)


def _assign(x: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    return np.asarray(component_labels(mixture, jax.numpy.asarray(x, jax.numpy.float32)))


def _mahalanobis2(x: np.ndarray, mixture: GaussianMixture, comp: np.ndarray) -> np.ndarray:
    diff = x - mixture.means[comp]                                                   # [n, d]
    sol = np.linalg.solve(mixture.covs[comp], diff[..., None])[..., 0]              # [n, d]
    return np.sum(diff * sol, axis=-1)                                               # [n]


def _logp(x: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    return np.asarray(mixture.logp(jax.numpy.asarray(x, jax.numpy.float32)), np.float64)


# The public metrics below take arrays; each has a private core that takes the component
# assignments / log-densities, so `evaluate` computes those once for all metrics.

def _coverage(x, comp, mixture, min_share):
    d = mixture.dim
    inside = _mahalanobis2(x, mixture, comp) <= d + 6 * math.sqrt(2 * d)
    counts = np.bincount(comp[inside], minlength=mixture.num_components)            # [K]
    covered = counts >= min_share * mixture.weights * x.shape[0]
    return float(np.sum(mixture.weights * covered))


def mode_coverage(x, mixture: GaussianMixture, *, min_share: float = 0.2) -> float:
    """Fraction of the true components (weighted by their weights) that are covered.

    A sample belongs to a component if that component is the most responsible one and the sample
    lies inside it (squared Mahalanobis distance ≤ d + 6·√(2d), ~6 std of a χ²_d). A component
    is covered if it holds at least `min_share` of the samples its weight predicts.
    """
    x = _as2d(x)
    return _coverage(x, _assign(x, mixture), mixture, min_share)


def _per_mode(x: np.ndarray, comp: np.ndarray, k: int, min_count: int):
    pts = x[comp == k]
    return pts if pts.shape[0] >= min_count else None


def _shifts(x, comp, ref, ref_comp, mixture, min_count):
    out = np.full(mixture.num_components, np.nan)
    for k in range(mixture.num_components):
        pts = _per_mode(x, comp, k, min_count)
        if pts is None:
            continue
        centre = mixture.means[k]
        if ref is not None:
            rpts = _per_mode(ref, ref_comp, k, min_count)
            centre = centre if rpts is None else rpts.mean(0)
        out[k] = np.linalg.norm(pts.mean(0) - centre)
    return out


def mode_shifts(x, mixture: GaussianMixture, ref=None, *, min_count: int = 10) -> np.ndarray:
    """Per component: distance of the generated samples' centre from the true centre, [K] (NaN
    where fewer than `min_count` samples fall in the mode). The true centre is the component mean,
    or, given exact samples `ref`, their centre under the same assignment (no truncation bias)."""
    x = _as2d(x)
    ref = None if ref is None else _as2d(ref, "ref")
    return _shifts(x, _assign(x, mixture), ref, None if ref is None else _assign(ref, mixture), mixture, min_count)


def _weighted_shift(shifts, mixture):
    ok = np.isfinite(shifts)
    if not ok.any():
        return float("nan")
    w = mixture.weights[ok]
    return float(np.sum(w * shifts[ok]) / w.sum())


def mode_shift(x, mixture: GaussianMixture, ref=None, *, min_count: int = 10) -> float:
    """Weighted mean over the modes present of `mode_shifts` (paper Fig. 3: CFG pushes modes out)."""
    return _weighted_shift(mode_shifts(x, mixture, ref, min_count=min_count), mixture)


def _spread(x, comp, ref, rcomp, mixture, min_count):
    num, den = 0.0, 0.0
    for k in range(mixture.num_components):
        a, b = _per_mode(x, comp, k, min_count), _per_mode(ref, rcomp, k, min_count)
        if a is None or b is None:
            continue
        ra = math.sqrt(np.mean(np.sum((a - a.mean(0)) ** 2, axis=1)))
        rb = math.sqrt(np.mean(np.sum((b - b.mean(0)) ** 2, axis=1)))
        num += mixture.weights[k] * ra / max(rb, 1e-12)
        den += mixture.weights[k]
    return float(num / den) if den > 0 else float("nan")


def spread_ratio(x, mixture: GaussianMixture, ref, *, min_count: int = 10) -> float:
    """Within-mode spread of the samples over that of exact samples (RMS distance from the mode's
    own centre), weighted over the modes present in both; 1 is right, < 1 is CFG's narrowing."""
    x, ref = _as2d(x), _as2d(ref, "ref")
    return _spread(x, _assign(x, mixture), ref, _assign(ref, mixture), mixture, min_count)


def gt_logp(x, mixture: GaussianMixture) -> float:
    """Mean true log-density of the samples (higher: samples sit where the target has mass)."""
    return float(np.mean(_logp(_as2d(x), mixture)))


def low_density_threshold(mixture: GaussianMixture, ref) -> float:
    """The 1% quantile of the true log-density of exact samples."""
    return float(np.quantile(_logp(_as2d(ref, "ref"), mixture), 0.01))


def low_density_frac(x, mixture: GaussianMixture, ref) -> float:
    """Fraction of samples in the target's low-density region: true log-density below the 1%
    quantile of exact samples (so exact sampling scores ≈ 0.01)."""
    return float(np.mean(_logp(_as2d(x), mixture) < low_density_threshold(mixture, ref)))


def evaluate(x, mixture: GaussianMixture, ref, *, seed: int = 0, num_projections: int = 256,
             max_points: int = 1500) -> dict[str, float]:
    """Every metric in METRICS for samples x of one class against that class's truth
    (fewer projections / MMD points trade precision for speed, e.g. in the app)."""
    x, ref = _as2d(x), _as2d(ref, "ref")
    comp, rcomp = _assign(x, mixture), _assign(ref, mixture)        # once for every per-mode metric
    lp, lp_ref = _logp(x, mixture), _logp(ref, mixture)
    return {
        "wasserstein": wasserstein(x, ref, seed=seed, num_projections=num_projections),
        "mmd": mmd(x, ref, seed=seed, max_points=max_points),
        "mode_coverage": _coverage(x, comp, mixture, 0.2),
        "mode_shift": _weighted_shift(_shifts(x, comp, ref, rcomp, mixture, 10), mixture),
        "spread_ratio": _spread(x, comp, ref, rcomp, mixture, 10),
        "gt_logp": float(np.mean(lp)),
        "low_density_frac": float(np.mean(lp < np.quantile(lp_ref, 0.01))),
    }
