"""Distances between generated samples and the exact target distribution.

Every metric takes generated samples `x` [n, d] of one class and either that class's exact
`GaussianMixture` or exact reference samples `ref` [m, d] of it (or both). Computations are in
float64 NumPy: these are measurements, not part of any jitted path.

Per-mode metrics assign each sample to its most responsible true component. Because that
assignment truncates each mode at the boundary with its neighbours, per-mode statistics are
compared with the same statistics of exact samples under the same assignment, so exact samples
score a shift of ~0 and a spread ratio of ~1 on every mixture.

The building blocks (`assign`, `log_density`, `directions`, `wp_sorted`, `mmd_kernel_means`) are
public so that `toy.evaluation` can compute the reference side once and score many sample sets
against it with exactly these formulas; the keyword arguments `comp`, `ref_comp`, `threshold`
accept such precomputed pieces.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from toy.errors import ToyError
from toy.mixtures import GaussianMixture, component_labels

METRICS = ("wasserstein", "mmd", "mode_coverage", "mode_balance", "mode_shift", "spread_ratio", "gt_logp",
           "low_density_frac")
# Display names with the direction that is better, for every table and the app ("↓": lower is better).
METRIC_LABELS = {"wasserstein": "W1 ↓", "mmd": "MMD ↓", "mode_coverage": "mode coverage ↑ (1)",
                 "mode_balance": "mode balance ↓ (0)",
                 "mode_shift": "mode shift ↓", "spread_ratio": "spread ratio → 1", "gt_logp": "true log p ↑",
                 "low_density_frac": "low-density share ↓"}
MMD_SCALES = (0.1, 0.3, 1.0, 3.0)


def metric_label(name: str) -> str:
    """The display name of a metric: "wasserstein" → "W1 ↓"."""
    return METRIC_LABELS.get(name, name)


def as_samples(x, name: str = "x") -> np.ndarray:
    """x as a finite float64 [n, d] array with n ≥ 2 ([n] is read as 1D samples)."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ToyError(f"{name} must be [n, d] with n >= 2, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ToyError(f"{name} contains NaN or infinite values")
    return x


def assign(x: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    """Index of the most responsible true component of each sample, [n]."""
    return np.asarray(component_labels(mixture, np.asarray(x, np.float32)))   # converted on the host


def log_density(x: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    """True log-density of each sample, [n] (float64)."""
    return np.asarray(mixture.logp(np.asarray(x, np.float32)), np.float64)


# -- Wasserstein ----------------------------------------------------------------------------------

def directions(num: int, d: int, seed: int) -> np.ndarray:
    """`num` random unit directions in R^d for sliced distances, [P, d] (one direction in 1D)."""
    if d == 1:
        return np.ones((1, 1))
    dirs = np.random.default_rng(seed).normal(size=(num, d))                         # [P, d]
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def wp_sorted(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    """W_p^p between 1D empirical distributions given as sorted rows: a [P, n], b [P, m] → [P].

    Quantile functions are step functions: integrate |F_a⁻¹ − F_b⁻¹|^p over the merged breakpoints
    (equal weights, any sizes)."""
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return np.mean(np.abs(a - b) ** p, axis=1)
    qs = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)               # [Q]
    widths = np.diff(np.concatenate([[0.0], qs]))                                     # [Q]
    ia = np.minimum(np.ceil(qs * n - 1e-9).astype(int) - 1, n - 1)                   # [Q]
    ib = np.minimum(np.ceil(qs * m - 1e-9).astype(int) - 1, m - 1)                   # [Q]
    return np.sum(widths * np.abs(a[:, ia] - b[:, ib]) ** p, axis=1)                 # [P]


def wasserstein(x, ref, *, p: float = 1.0, num_projections: int = 256, seed: int = 0) -> float:
    """W_p distance (default W1): exact in 1D (sorted samples), sliced in 2D and up, i.e.
    (mean over random unit directions u of W_p^p(x·u, ref·u))^(1/p).

    W1 by default: W2 squares the distance between modes, so the binomial noise in how many
    samples land in each far-apart mode dominates it at practical sample sizes."""
    x, ref = as_samples(x), as_samples(ref, "ref")
    if not (math.isfinite(p) and p >= 1):
        raise ToyError(f"p must be a finite number >= 1, got {p!r}")
    dirs = directions(num_projections, x.shape[1], seed)                             # [P, d]
    return float(np.mean(wp_sorted(np.sort(dirs @ x.T, 1), np.sort(dirs @ ref.T, 1), p)) ** (1 / p))


# -- MMD ------------------------------------------------------------------------------------------

def mmd_subset(x: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """At most `max_points` rows of x (a fixed random subset), as float32: kernel sums need no more."""
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)]
    return x.astype(np.float32)


def mmd_bandwidths(ref: np.ndarray, scales=MMD_SCALES) -> np.ndarray:
    """Kernel bandwidths: `scales` × the reference's RMS standard deviation per coordinate, [S]."""
    base = float(np.sqrt(np.mean(np.var(ref, axis=0)))) or 1.0
    return np.asarray(scales, np.float64) * base


@lru_cache(maxsize=1)
def _kernel_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="toy-mmd")


def mmd_kernel_means(a: np.ndarray, b: np.ndarray, bandwidths: np.ndarray, *, same: bool) -> np.ndarray:
    """Mean Gaussian kernel value between the rows of a and b for each bandwidth, [S]; with
    same=True (a is b) the diagonal is left out (the unbiased within-set term)."""
    sq = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)   # [n, m]
    n = a.shape[0]

    def mean(h):
        # exp(−sq / 2h²) in float64, in place: the kernel matrices dominate the scoring of a run, and
        # NumPy releases the GIL in them, so the bandwidths run side by side on the cores.
        k = np.divide(sq, -(2 * h * h), dtype=np.float64)                                     # [n, m]
        np.exp(k, out=k)
        if same:
            return (k.sum(dtype=np.float64) - n) / (n * (n - 1))
        return k.mean(dtype=np.float64)
    return np.asarray(list(_kernel_pool().map(mean, bandwidths)))


def mmd(x, ref, *, scales=MMD_SCALES, max_points: int = 1500, seed: int = 0) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels, bandwidths `scales` × the reference's RMS std.

    Several bandwidths catch both a shifted mode (small scales) and wrong mode weights (large).
    At most `max_points` of each set are used (a fixed random subset) to keep it O(n²) small.
    """
    x, ref = as_samples(x), as_samples(ref, "ref")
    xs, rs = mmd_subset(x, max_points, seed), mmd_subset(ref, max_points, seed)
    h = mmd_bandwidths(rs, scales)
    return float(np.sum(mmd_kernel_means(xs, xs, h, same=True) + mmd_kernel_means(rs, rs, h, same=True)
                        - 2 * mmd_kernel_means(xs, rs, h, same=False)))


# -- per-mode metrics -----------------------------------------------------------------------------

def _mahalanobis2(x: np.ndarray, mixture: GaussianMixture, comp: np.ndarray) -> np.ndarray:
    diff = x - mixture.means[comp]                                                   # [n, d]
    sol = np.linalg.solve(mixture.covs[comp], diff[..., None])[..., 0]              # [n, d]
    return np.sum(diff * sol, axis=-1)                                               # [n]


def mode_coverage(x, mixture: GaussianMixture, *, min_share: float = 0.2, comp=None) -> float:
    """Fraction of the true components (weighted by their weights) that are covered.

    A sample belongs to a component if that component is the most responsible one and the sample
    lies inside it (squared Mahalanobis distance ≤ d + 6·√(2d), ~6 std of a χ²_d). A component
    is covered if it holds at least `min_share` of the samples its weight predicts.
    """
    x = as_samples(x)
    comp = assign(x, mixture) if comp is None else comp
    d = mixture.dim
    inside = _mahalanobis2(x, mixture, comp) <= d + 6 * math.sqrt(2 * d)
    counts = np.bincount(comp[inside], minlength=mixture.num_components)            # [K]
    covered = counts >= min_share * mixture.weights * x.shape[0]
    return float(np.sum(mixture.weights * covered))


def responsibilities(x, mixture: GaussianMixture) -> np.ndarray:
    """Posterior probability of each true component for each sample, [n, K] (float64, rows sum to 1)."""
    x = as_samples(x)
    means, covs = np.asarray(mixture.means, np.float64), np.asarray(mixture.covs, np.float64)   # [K, d], [K, d, d]
    diff = x[:, None, :] - means[None]                                               # [n, K, d]
    sol = np.linalg.solve(covs[None], diff[..., None])[..., 0]                       # [n, K, d]
    logp = (np.log(np.asarray(mixture.weights, np.float64)) - 0.5 * np.sum(diff * sol, -1)
            - 0.5 * np.linalg.slogdet(covs)[1])                                      # [n, K] (2π cancels)
    logp -= logp.max(1, keepdims=True)
    r = np.exp(logp)
    return r / r.sum(1, keepdims=True)


def mode_balance(x, mixture: GaussianMixture) -> float:
    """Whether the samples keep the true weights of the modes: the total-variation distance
    ½·Σ_k |share_k − w_k| between each component's share of the samples and its weight w_k. The share
    is responsibility-weighted (the mean posterior probability of the component over the samples), so
    exact samples score 0 in expectation on any mixture, overlapping components included (a hard
    assignment would not). 0: the true weights; 1 − w_k: every sample deep inside component k."""
    share = responsibilities(x, mixture).mean(0)                                     # [K]
    return float(0.5 * np.sum(np.abs(share - np.asarray(mixture.weights, np.float64))))


def _members(x: np.ndarray, comp: np.ndarray, k: int, min_count: int):
    pts = x[comp == k]
    return pts if pts.shape[0] >= min_count else None


def mode_shifts(x, mixture: GaussianMixture, ref=None, *, min_count: int = 10, comp=None,
                ref_comp=None) -> np.ndarray:
    """Per component: distance of the generated samples' centre from the true centre, [K] (NaN
    where fewer than `min_count` samples fall in the mode). The true centre is the component mean,
    or, given exact samples `ref`, their centre under the same assignment (no truncation bias)."""
    x = as_samples(x)
    comp = assign(x, mixture) if comp is None else comp
    if ref is not None:
        ref = as_samples(ref, "ref")
        ref_comp = assign(ref, mixture) if ref_comp is None else ref_comp
    out = np.full(mixture.num_components, np.nan)
    for k in range(mixture.num_components):
        pts = _members(x, comp, k, min_count)
        if pts is None:
            continue
        centre = mixture.means[k]
        if ref is not None:
            rpts = _members(ref, ref_comp, k, min_count)
            centre = centre if rpts is None else rpts.mean(0)
        out[k] = np.linalg.norm(pts.mean(0) - centre)
    return out


def mode_shift(x, mixture: GaussianMixture, ref=None, *, min_count: int = 10, comp=None, ref_comp=None) -> float:
    """Weighted mean over the modes present of `mode_shifts` (paper Fig. 3: CFG pushes modes out)."""
    shifts = mode_shifts(x, mixture, ref, min_count=min_count, comp=comp, ref_comp=ref_comp)
    ok = np.isfinite(shifts)
    if not ok.any():
        return float("nan")
    w = mixture.weights[ok]
    return float(np.sum(w * shifts[ok]) / w.sum())


def spread_ratio(x, mixture: GaussianMixture, ref, *, min_count: int = 10, comp=None, ref_comp=None) -> float:
    """Within-mode spread of the samples over that of exact samples (RMS distance from the mode's
    own centre), weighted over the modes present in both; 1 is right, < 1 is CFG's narrowing."""
    x, ref = as_samples(x), as_samples(ref, "ref")
    comp = assign(x, mixture) if comp is None else comp
    ref_comp = assign(ref, mixture) if ref_comp is None else ref_comp
    num, den = 0.0, 0.0
    for k in range(mixture.num_components):
        a, b = _members(x, comp, k, min_count), _members(ref, ref_comp, k, min_count)
        if a is None or b is None:
            continue
        ra = math.sqrt(np.mean(np.sum((a - a.mean(0)) ** 2, axis=1)))
        rb = math.sqrt(np.mean(np.sum((b - b.mean(0)) ** 2, axis=1)))
        num += mixture.weights[k] * ra / max(rb, 1e-12)
        den += mixture.weights[k]
    return float(num / den) if den > 0 else float("nan")


# -- density metrics ------------------------------------------------------------------------------

def gt_logp(x, mixture: GaussianMixture) -> float:
    """Mean true log-density of the samples (higher: samples sit where the target has mass)."""
    return float(np.mean(log_density(as_samples(x), mixture)))


def low_density_threshold(mixture: GaussianMixture, ref) -> float:
    """The 1% quantile of the true log-density of exact samples."""
    return float(np.quantile(log_density(as_samples(ref, "ref"), mixture), 0.01))


def low_density_frac(x, mixture: GaussianMixture, ref=None, *, threshold: float | None = None) -> float:
    """Fraction of samples in the target's low-density region: true log-density below the 1%
    quantile of exact samples `ref` (so exact sampling scores ≈ 0.01)."""
    if threshold is None:
        if ref is None:
            raise ToyError("low_density_frac needs exact reference samples (ref) or a threshold")
        threshold = low_density_threshold(mixture, ref)
    return float(np.mean(log_density(as_samples(x), mixture) < threshold))
