"""Exact ground truth: class-conditional Gaussian mixtures at every noise level.

Under the EDM forward process x_σ = x0 + σ·n each component N(μ, Σ) becomes N(μ, Σ + σ²I), so
density, score and the posterior mean D(x; σ) = E[x0 | x_σ = x] are closed forms at every σ
(docs/design.md, "Ground truth"). The presets and the JSON reader of user mixtures are in
`toy.presets`; nothing here knows about networks.

Numerics: every covariance is diagonalised once, Σ = U diag(λ) U^T, so Σ + σ²I = U diag(λ + σ²) U^T
for any σ (a scalar or one per sample) without refactorising. Responsibilities come from log-space
(log-sum-exp), and D is built per component as μ + U diag(λ/(λ+σ²)) U^T (x − μ), never as
x + σ²·score, which cancels catastrophically at large σ.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from toy.errors import ToyError
from toy.runtime import draw_size

_LOG_2PI = math.log(2.0 * math.pi)
_PAD_LOGW = -1e30  # log-weight of padding components: finite, so no inf - inf appears


def _component_terms(x, s2, logw, mu, U, lam):
    """Per-component log-joint and posterior terms (any dimension d).

    x: [n, d]; s2: [n] noise variance; logw: [K] or [n, K]; mu: [K, d] or [n, K, d];
    U: [K, d, d] or [n, K, d, d]; lam: [K, d] or [n, K, d].
    Returns logj [n, K] (log π_k + log N(x; μ_k, Σ_k + σ²I)), y [n, K, d] (x − μ in eigenbasis),
    and var [n, K, d] (λ + σ²).
    """
    diff = x[:, None, :] - mu                                        # [n, K, d]
    y = jnp.einsum("...kij,...ki->...kj", U, diff)                   # [n, K, d]  U^T (x − μ)
    var = lam + s2[:, None, None]                                    # [n, K, d]
    maha = jnp.sum(y * y / var, axis=-1)                             # [n, K]
    logdet = jnp.sum(jnp.log(var), axis=-1)                          # [n, K]
    d = x.shape[-1]
    logj = logw - 0.5 * (maha + logdet + d * _LOG_2PI)              # [n, K]
    return logj, y, var


# For the small d of the toys (d ≤ 4) the same terms are computed one coordinate at a time on
# [n, K] arrays, K innermost: XLA vectorises those loops, where the [n, K, d] layout with d = 2
# innermost and einsums over d ran 5–10× slower on a 1,000-component mixture (bench/).
_SMALL_D = 4


def _terms_small(x, s2, logw, mu, U, lam):
    """As `_component_terms`, with y and var as lists of d arrays [n, K]."""
    d = x.shape[-1]
    diff = [x[:, i:i + 1] - mu[..., i] for i in range(d)]                       # d × [n, K]
    y = [sum(U[..., i, j] * diff[i] for i in range(d)) for j in range(d)]       # d × [n, K]  U^T (x − μ)
    var = [lam[..., j] + s2[:, None] for j in range(d)]                         # d × [n, K]
    maha = sum(y[j] * y[j] / var[j] for j in range(d))                          # [n, K]
    prod = var[0]
    for v in var[1:]:
        prod = prod * v
    logj = logw - 0.5 * (maha + jnp.log(prod) + d * _LOG_2PI)                   # [n, K]
    return logj, y, var


def _posterior_average(logj, comps):
    """Σ_k softmax(logj)_k · comp_k for each coordinate's [n, K] array → [n, d]."""
    e = jnp.exp(logj - jnp.max(logj, axis=-1, keepdims=True))                    # [n, K]
    z = jnp.sum(e, axis=-1)                                                      # [n]
    return jnp.stack([jnp.sum(e * c, axis=-1) / z for c in comps], axis=-1)      # [n, d]


def _as(a, dtype):
    """`a` in `dtype`: host data (NumPy, Python numbers) stays on the host, a jax array or tracer stays one.

    Called eagerly, every jnp conversion or broadcast is one more small program to compile; the jitted
    closed forms take host arrays as they are."""
    return a.astype(dtype) if isinstance(a, jax.Array) else np.asarray(a, dtype)


def _xp(a):
    """The array module of `a`: jnp for a jax array or tracer, np for host data."""
    return jnp if isinstance(a, jax.Array) else np


def _prep(x, sigma):
    """Validate shapes; return x [n, d] and σ² [n] in x's float dtype (host data converted as
    jnp.asarray would convert it: float64 → float32, integers → float32)."""
    x = x if hasattr(x, "dtype") else np.asarray(x)
    dtype = x.dtype
    x = _as(x, jax.dtypes.canonicalize_dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else jnp.float32)
    if x.ndim != 2:
        raise ToyError(f"x must have shape [n, d], got shape {tuple(x.shape)}")
    sigma = _as(sigma, x.dtype)
    if sigma.ndim == 0:
        sigma = _xp(sigma).broadcast_to(sigma, x.shape[:1])
    elif sigma.shape != x.shape[:1]:
        raise ToyError(f"sigma must be a scalar or have shape [n]={x.shape[:1]}, got {tuple(sigma.shape)}")
    return x, sigma * sigma


# The closed forms below are jitted whole: called eagerly (metrics, figures, exact samples) that is one
# compiled program per function and shape instead of one small compile per primitive; inside a jitted
# sampler they simply inline.
@jax.jit
def _logp(x, s2, logw, mu, U, lam):
    terms = _terms_small if x.shape[-1] <= _SMALL_D else _component_terms
    return jax.nn.logsumexp(terms(x, s2, logw, mu, U, lam)[0], axis=-1)    # [n]


@jax.jit
def _pdf(x, s2, logw, mu, U, lam):
    return jnp.exp(_logp(x, s2, logw, mu, U, lam))                            # [n]


@jax.jit
def _score(x, s2, logw, mu, U, lam):
    d = x.shape[-1]
    if d <= _SMALL_D:
        logj, y, var = _terms_small(x, s2, logw, mu, U, lam)
        w = [y[j] / var[j] for j in range(d)]                                    # (Σ+σ²I)⁻¹ in the eigenbasis
        return _posterior_average(logj, [-sum(U[..., i, j] * w[j] for j in range(d)) for i in range(d)])
    logj, y, var = _component_terms(x, s2, logw, mu, U, lam)
    r = jax.nn.softmax(logj, axis=-1)                                # [n, K] responsibilities
    comp = -jnp.einsum("...kij,...kj->...ki", U, y / var)           # [n, K, d]  −(Σ+σ²I)⁻¹(x−μ)
    return jnp.sum(r[..., None] * comp, axis=1)                      # [n, d]


@jax.jit
def _denoise(x, s2, logw, mu, U, lam):
    d = x.shape[-1]
    if d <= _SMALL_D:
        logj, y, var = _terms_small(x, s2, logw, mu, U, lam)
        w = [y[j] * lam[..., j] / var[j] for j in range(d)]                      # Σ(Σ+σ²I)⁻¹ in the eigenbasis
        return _posterior_average(logj, [mu[..., i] + sum(U[..., i, j] * w[j] for j in range(d)) for i in range(d)])
    logj, y, var = _component_terms(x, s2, logw, mu, U, lam)
    r = jax.nn.softmax(logj, axis=-1)                                # [n, K]
    shrunk = jnp.einsum("...kij,...kj->...ki", U, y * (lam / var))  # [n, K, d]  Σ(Σ+σ²I)⁻¹(x−μ)
    comp = mu + shrunk                                               # [n, K, d]  E[x0 | x, k]
    return jnp.sum(r[..., None] * comp, axis=1)                      # [n, d]


@functools.partial(jax.jit, static_argnames="n")
def _sample(key, cdf, means, chol, sigma, *, n: int):
    k_comp, k_noise = jax.random.split(key)
    # Inverse-CDF draw of the component: O(n log K), where jax.random.categorical draws n × K Gumbels.
    comp = jnp.minimum(jnp.searchsorted(cdf, jax.random.uniform(k_comp, (n,)), side="right"), cdf.shape[0] - 1)  # [n]
    z = jax.random.normal(k_noise, (2, n, means.shape[1]))                                            # [2, n, d]
    x0 = means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z[0])                                     # [n, d]
    return x0 + jnp.reshape(sigma, (-1, 1)) * z[1]                                                    # [n, d]


@jax.jit
def _blurred_denoise(x, s2, blur, logw, mu, U, lam):
    var = s2 + blur**2                                                           # [n] σ² + δ²
    d = _denoise(x, var, logw, mu, U, lam)                                       # [n, d]  D(x; s)
    return d + ((var - s2) / var)[:, None] * (x - d)                             # [n, d]


@jax.jit
def _assign(x, logw, mu, U, lam):
    return jnp.argmax(_component_terms(x, jnp.zeros(x.shape[:1], x.dtype), logw, mu, U, lam)[0], axis=-1)


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A Gaussian mixture Σ_k π_k N(μ_k, Σ_k) in any dimension, with full covariances.

    All methods take x: [n, d] and sigma: a scalar or [n]; they are pure and jit-friendly.
    """

    weights: np.ndarray  # [K], sums to 1
    means: np.ndarray    # [K, d]
    covs: np.ndarray     # [K, d, d]

    def __post_init__(self):
        w, mu, cov = _validate(self.weights, self.means, self.covs, where="mixture")
        lam, U = np.linalg.eigh(cov)                                 # [K, d], [K, d, d]
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covs", cov)
        object.__setattr__(self, "_lam", lam)
        object.__setattr__(self, "_U", U)

    # -- shape --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _params(self, dtype):
        # host arrays: constants inside a trace, plain arguments to an eager call (no convert program)
        return (np.asarray(np.log(self.weights), dtype), np.asarray(self.means, dtype),
                np.asarray(self._U, dtype), np.asarray(self._lam, dtype))

    def _check_dim(self, x):
        if x.shape[-1] != self.dim:
            raise ToyError(f"x has dimension {x.shape[-1]} but the mixture has dimension {self.dim}")

    # -- closed forms -------------------------------------------------------------------------
    def logp(self, x, sigma=0.0) -> jax.Array:
        """log p(x; σ) of the noised mixture, [n]."""
        x, s2 = _prep(x, sigma)
        self._check_dim(x)
        return _logp(x, s2, *self._params(x.dtype))

    def pdf(self, x, sigma=0.0) -> jax.Array:
        """p(x; σ), [n]."""
        x, s2 = _prep(x, sigma)
        self._check_dim(x)
        return _pdf(x, s2, *self._params(x.dtype))

    def score(self, x, sigma=0.0) -> jax.Array:
        """∇_x log p(x; σ), [n, d]."""
        x, s2 = _prep(x, sigma)
        self._check_dim(x)
        return _score(x, s2, *self._params(x.dtype))

    def denoise(self, x, sigma) -> jax.Array:
        """Posterior mean E[x0 | x_σ = x] = x + σ²·score, [n, d] (computed without cancellation)."""
        x, s2 = _prep(x, sigma)
        self._check_dim(x)
        return _denoise(x, s2, *self._params(x.dtype))

    def sample(self, key, n: int, sigma=0.0) -> jax.Array | np.ndarray:
        """n exact samples of p(x; σ), [n, d] (a NumPy array when σ = 0 and the key is concrete)."""
        cdf = (np.cumsum(self.weights) / np.sum(self.weights)).astype(np.float32)                        # [K]
        chol = (self._U * np.sqrt(self._lam)[:, None, :]).astype(np.float32)                             # [K, d, d]
        means = self.means.astype(np.float32)                                                            # [K, d]
        if isinstance(key, jax.core.Tracer) or isinstance(sigma, jax.core.Tracer) or np.any(np.asarray(sigma) != 0):
            return _sample(key, cdf, means, chol, jnp.asarray(sigma, jnp.float32), n=int(n))
        # At σ = 0 the draw is prefix-stable in n (see runtime.draw_size), and padding the components
        # changes nothing drawn (no uniform u < 1 lands past the last real cdf entry, which is 1): one
        # program serves every n up to 8,192 (the 5,000-sample references among them) and every mixture
        # of the same dimension and component bucket.
        pad = draw_size(len(cdf), 4) - len(cdf)
        cdf = np.concatenate([cdf, np.ones(pad, np.float32)])                                             # [K_b]
        means = np.concatenate([means, np.zeros((pad, self.dim), np.float32)])                            # [K_b, d]
        chol = np.concatenate([chol, np.zeros((pad, self.dim, self.dim), np.float32)])                    # [K_b, d, d]
        x = _sample(key, cdf, means, chol, jnp.float32(0.0), n=draw_size(n, 8192))                        # [N, d]
        return np.asarray(x)[:int(n)]                                                                      # [n, d]

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact mean [d] and covariance [d, d] of the mixture (σ = 0)."""
        m = self.weights @ self.means
        dev = self.means - m
        cov = np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, dev, dev)
        return m, cov

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}


def _validate(weights, means, covs, *, where: str):
    """Check a mixture's parameters; return float64 arrays (weights normalised)."""
    try:
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        cov = np.asarray(covs, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ToyError(f"{where}: weights, means and covs must be numeric arrays ({str(e).splitlines()[0][:120]})") from None
    if w.ndim != 1 or w.size == 0:
        raise ToyError(f"{where}: weights must be a non-empty list of K numbers, got shape {w.shape}")
    K = w.size
    if mu.ndim == 1 and K == mu.size:
        mu = mu[:, None]  # 1D shorthand: means [K]
    if mu.ndim != 2 or mu.shape[0] != K:
        raise ToyError(f"{where}: means must have shape [K={K}, d], got shape {mu.shape}")
    d = mu.shape[1]
    if cov.ndim == 1 and d == 1 and cov.size == K:
        cov = cov[:, None, None]  # 1D shorthand: variances [K]
    if cov.shape != (K, d, d):
        raise ToyError(f"{where}: covs must have shape [K={K}, d={d}, d={d}], got shape {cov.shape}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise ToyError(f"{where}: weights, means and covs must all be finite numbers")
    if np.any(w <= 0):
        raise ToyError(f"{where}: weights must all be > 0, got {w.tolist()}")
    if not np.allclose(cov, np.swapaxes(cov, 1, 2), rtol=1e-6, atol=1e-9):
        bad = int(np.argmax(np.abs(cov - np.swapaxes(cov, 1, 2)).reshape(K, -1).max(1)))
        raise ToyError(f"{where}: covariance {bad} is not symmetric")
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    eig = np.linalg.eigvalsh(cov)
    if np.any(eig <= 0):
        bad = int(np.argmin(eig.min(1)))
        raise ToyError(f"{where}: covariance {bad} is not positive definite (smallest eigenvalue {eig[bad].min():.3g})")
    return w / w.sum(), mu, cov


# The scales every part (float32 sampler, σ schedule, metrics) handles accurately; a mixture outside
# them is refused when it is built. The sampler's σ_max follows the data (SamplerConfig.fit).
MIN_STD = 1e-3            # smallest standard deviation of any component, along any direction
MAX_EXTENT = 1e5          # largest |coordinate| the components reach (mean + 4 std)
MAX_RATIO = 1e4           # extent over the smallest std: float32 keeps ~7 digits, the metrics need ~3


def check_scales(means: np.ndarray, covs: np.ndarray, where: str) -> None:
    """Refuse a mixture whose scales fall outside the supported range, naming the number and the bound."""
    eig = np.linalg.eigvalsh(covs)                                                  # [K, d]
    std_min = float(np.sqrt(eig.min()))
    extent = float(np.max(np.abs(means).max(1) + 4 * np.sqrt(eig.max(1))))
    if std_min < MIN_STD:
        raise ToyError(f"{where}: a component's standard deviation is {std_min:.3g}; the supported range starts at "
                       f"{MIN_STD:g} (scale the data up)")
    if extent > MAX_EXTENT:
        raise ToyError(f"{where}: the components reach |x| = {extent:.3g}; the supported range ends at {MAX_EXTENT:g} "
                       f"(centre or scale the data down)")
    if extent / std_min > MAX_RATIO:
        raise ToyError(f"{where}: the data reach |x| = {extent:.3g} with components as narrow as {std_min:.3g} std, a "
                       f"ratio of {extent / std_min:.3g}; the supported ratio is at most {MAX_RATIO:g} (float32 "
                       f"sampling cannot resolve them)")


@dataclass(frozen=True, eq=False)
class ConditionalMixture:
    """Class-conditional ground truth: p(x | c) for each class and p(x) = Σ_c P(c) p(x | c).

    Labels are ints in [0, num_classes]; the label `num_classes` is the null class ∅ (unconditional).
    """

    classes: tuple[GaussianMixture, ...]
    class_weights: np.ndarray  # [C], sums to 1
    class_names: tuple[str, ...]
    name: str = "custom"

    def __post_init__(self):
        if len(self.classes) == 0:
            raise ToyError("a conditional mixture needs at least one class")
        dims = {m.dim for m in self.classes}
        if len(dims) != 1:
            raise ToyError(f"every class must have the same dimension, got dimensions {sorted(dims)}")
        cw = np.asarray(self.class_weights, np.float64)
        if cw.shape != (len(self.classes),) or not np.all(np.isfinite(cw)) or np.any(cw <= 0):
            raise ToyError(f"class_weights must be {len(self.classes)} numbers > 0, got {self.class_weights!r}")
        if len(self.class_names) != len(self.classes):
            raise ToyError("class_names must name every class")
        check_scales(np.concatenate([m.means for m in self.classes]), np.concatenate([m.covs for m in self.classes]),
                     "mixture")
        object.__setattr__(self, "class_weights", cw / cw.sum())
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        # One shared list of components (the union of the classes, i.e. ∅'s mixture) and a table of
        # log-weights per label (−∞-like outside the class): a batch with mixed labels gathers one
        # [n, K] row of weights, never [n, K, d, d] covariances, which is what made large mixtures slow.
        union = self.uncond()
        sizes = [m.num_components for m in self.classes]
        logw = np.full((len(self.classes) + 1, union.num_components), _PAD_LOGW)
        for i, m in enumerate(self.classes):
            start = sum(sizes[:i])
            logw[i, start:start + sizes[i]] = np.log(m.weights)
        logw[-1] = np.log(union.weights)
        mu, U, lam = union.means, union._U, union._lam
        object.__setattr__(self, "_stacked", (logw, mu, U, lam))

    @property
    def dim(self) -> int:
        return self.classes[0].dim

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def null_label(self) -> int:
        return len(self.classes)

    def cond(self, c: int) -> GaussianMixture:
        """The mixture of class c (c = num_classes gives the unconditional one)."""
        if c == self.null_label:
            return self.uncond()
        if not 0 <= int(c) < self.num_classes:
            raise ToyError(f"class must be in [0, {self.num_classes - 1}] (or {self.null_label} for ∅), got {c}")
        return self.classes[int(c)]

    def uncond(self) -> GaussianMixture:
        """p(x) = Σ_c P(c) p(x | c) as one mixture."""
        w = np.concatenate([pc * m.weights for pc, m in zip(self.class_weights, self.classes)])
        return GaussianMixture(w, np.concatenate([m.means for m in self.classes]),
                               np.concatenate([m.covs for m in self.classes]))

    def sigma_data(self) -> float:
        """RMS standard deviation per coordinate of the unconditional data (EDM's σ_data)."""
        _, cov = self.uncond().moments()
        return float(np.sqrt(np.trace(cov) / self.dim))

    def _gather(self, labels, n: int, dtype):
        """Each row's log-weights and the shared components: [n, K], [K, d], [K, d, d], [K, d] (on the
        host when the labels are, as in `_prep`)."""
        logw, mu, U, lam = (np.asarray(a, dtype) for a in self._stacked)
        labels = _as(labels, np.int32)
        xp = _xp(labels)
        return xp.asarray(logw)[xp.broadcast_to(labels, (n,))], mu, U, lam

    def denoise(self, x, sigma, labels, blur=0.0) -> jax.Array:
        """Exact D(x; σ, c) for a batch with one label per sample ([n] ints, null = num_classes).

        With blur = δ > 0 it is the denoiser of `blurred(δ)`, computed from this mixture: x0 + δn' noised
        at σ is x0 noised at s = √(σ² + δ²), so D^δ(x; σ) = D(x; s) + (δ²/s²)(x − D(x; s)). δ may be a
        traced value: moving it never recompiles."""
        x, s2 = _prep(x, sigma)
        return _blurred_denoise(x, s2, _as(blur, x.dtype), *self._gather(labels, x.shape[0], x.dtype))

    def blurred(self, delta: float) -> "ConditionalMixture":
        """The same classes with every component covariance widened by δ²I: a model of the data that
        is exactly "worse" in the way Autoguidance's weak model is (an ideal weak model, no network)."""
        delta = float(delta)
        if not (math.isfinite(delta) and delta >= 0):
            raise ToyError(f"blur δ must be a finite number >= 0, got {delta!r}")
        classes = tuple(GaussianMixture(m.weights, m.means, m.covs + delta**2 * np.eye(m.dim)) for m in self.classes)
        return ConditionalMixture(classes, self.class_weights, self.class_names, self.name)

    def score(self, x, sigma, labels) -> jax.Array:
        x, s2 = _prep(x, sigma)
        return _score(x, s2, *self._gather(labels, x.shape[0], x.dtype))

    def logp(self, x, sigma, labels) -> jax.Array:
        x, s2 = _prep(x, sigma)
        return _logp(x, s2, *self._gather(labels, x.shape[0], x.dtype))

    def sample(self, key, n: int, sigma=0.0):
        """n exact samples of the joint: returns (x [n, d], labels [n]). The key splits in three: the
        labels, the samples, and a third that training uses for label dropout (`toy.train`)."""
        k_lab, k_x, _ = jax.random.split(key, 3)
        labels = jax.random.categorical(k_lab, jnp.log(jnp.asarray(self.class_weights, jnp.float32)), shape=(n,))
        xs = jnp.stack([m.sample(jax.random.fold_in(k_x, c), n, sigma) for c, m in enumerate(self.classes)])  # [C, n, d]
        x = jnp.take_along_axis(xs, labels[None, :, None], axis=0)[0]                                          # [n, d]
        return x, labels

    def to_dict(self) -> dict:
        return {"name": self.name, "class_names": list(self.class_names),
                "class_weights": self.class_weights.tolist(),
                "classes": [m.to_dict() for m in self.classes]}


def component_labels(mixture: GaussianMixture, x) -> jax.Array:
    """Index of the most responsible component at σ = 0 for each sample, [n]."""
    x, _ = _prep(x, 0.0)
    return _assign(x, *mixture._params(x.dtype))


__all__: Sequence[str] = ["GaussianMixture", "ConditionalMixture", "component_labels", "check_scales"]
