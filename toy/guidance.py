"""Guidance methods of the paper, each a pure function of denoiser predictions (DESIGN.md §4).

All formulas act on D (the x0-prediction). For linear rules (every rule in this file) that is the
same sampler as acting on ε, the score or the velocity at a fixed (x, σ).

`guided_prediction` wires one method to the denoisers for one sampler step; it is what the sampler
calls, and its body is a dispatch to the one-line formulas below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import jax
import jax.numpy as jnp

from toy.errors import ToyError, check_finite, check_int

METHODS = ("none", "cfg", "autoguidance", "s2", "s2-naive", "fixed-block")
MASK_METHODS = ("s2", "s2-naive", "fixed-block")   # methods that drop blocks of the main network
EXACT_METHODS = ("none", "cfg")                    # methods that make sense on the closed-form denoiser


# -- the formulas -------------------------------------------------------------------------------

def none(d_cond: jax.Array) -> jax.Array:
    """Plain conditional sampling: D_c."""
    return d_cond


def cfg(d_uncond: jax.Array, d_cond: jax.Array, scale) -> jax.Array:
    """Classifier-free guidance, paper Eq. 1: D_∅ + λ(D_c − D_∅)."""
    return d_uncond + scale * (d_cond - d_uncond)


def autoguidance(d_weak: jax.Array, d_cond: jax.Array, scale) -> jax.Array:
    """Autoguidance (Karras et al. 2024): D_weak,c + λ(D_c − D_weak,c)."""
    return d_weak + scale * (d_cond - d_weak)


def s2(d_uncond: jax.Array, d_cond: jax.Array, d_sub: jax.Array, scale, s2_scale) -> jax.Array:
    """S²-Guidance, paper Eq. 4 / Algorithm 1: CFG − ω(D̂_c(m_t) − D_c) with one mask m_t."""
    return cfg(d_uncond, d_cond, scale) - s2_scale * (d_sub - d_cond)


def s2_naive(d_uncond: jax.Array, d_cond: jax.Array, d_subs: jax.Array, scale, s2_scale) -> jax.Array:
    """Naive S²-Guidance, paper Eq. 3: CFG − (ω/N) Σ_i (D̂_c(m_i) − D_c); d_subs is [N, n, d]."""
    return cfg(d_uncond, d_cond, scale) - s2_scale * jnp.mean(d_subs - d_cond[None], axis=0)


# -- masks --------------------------------------------------------------------------------------

def droppable_blocks(num_blocks: int, exclude: tuple[int, ...]) -> list[int]:
    return [k for k in range(num_blocks) if k not in set(exclude)]


def num_dropped(num_blocks: int, exclude: tuple[int, ...], drop_ratio: float, num_drop: int | None) -> int:
    """How many blocks one mask drops: `num_drop` if given, else round(ratio × droppable), at least 1."""
    n_ok = len(droppable_blocks(num_blocks, exclude))
    if n_ok == 0:
        raise ToyError(f"no droppable block: the network has {num_blocks} block(s) and blocks "
                       f"{sorted(set(exclude))} are excluded; exclude fewer blocks or use a deeper network")
    if num_drop is not None:
        return check_int("num_drop", num_drop, low=1, high=n_ok)
    return max(1, min(n_ok, int(round(drop_ratio * n_ok))))


def sample_mask(key: jax.Array, num_blocks: int, exclude: tuple[int, ...], k_drop: int) -> jax.Array:
    """A block mask [K] with exactly k_drop zeros, uniformly among the non-excluded blocks."""
    scores = jax.random.uniform(key, (num_blocks,))                              # [K]
    excluded = jnp.zeros(num_blocks, bool).at[jnp.asarray(exclude, jnp.int32)].set(True) if exclude else \
        jnp.zeros(num_blocks, bool)
    scores = jnp.where(excluded, jnp.inf, scores)                                # never chosen
    ranks = jnp.argsort(jnp.argsort(scores))                                     # [K]
    return (ranks >= k_drop).astype(jnp.float32)                                 # [K]


def fixed_mask(num_blocks: int, blocks: tuple[int, ...]) -> jax.Array:
    """The mask that drops exactly `blocks` (paper Fig. 7c/d, Fig. 15)."""
    for b in blocks:
        check_int("fixed block", b, low=0, high=num_blocks - 1)
    return jnp.ones(num_blocks, jnp.float32).at[jnp.asarray(blocks, jnp.int32)].set(0.0)


# -- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuidanceConfig:
    """One guidance method and its settings. Defaults follow the paper: ω = 0.25, ~10% of blocks
    dropped with the first block excluded, self-guidance inside the central 80% of the steps."""

    method: str = "cfg"
    scale: float = 3.0                      # λ, guidance scale (λ = 1: plain conditional sampling)
    s2_scale: float = 0.25                  # ω, S² scale (ω = 0: CFG)
    drop_ratio: float = 0.1                 # fraction of the droppable blocks dropped per mask
    num_drop: int | None = None             # overrides drop_ratio when set
    exclude: tuple[int, ...] = (0,)         # blocks never dropped (at least the first)
    interval: tuple[float, float] = (0.1, 0.9)   # fraction of the sampler steps where S² applies
    num_masks: int = 4                      # N for s2-naive
    fixed_blocks: tuple[int, ...] = (1,)    # the dropped blocks of fixed-block

    def validate(self, num_blocks: int | None = None) -> "GuidanceConfig":
        """Raise ToyError naming the bad parameter; return self with tuples normalised."""
        if self.method not in METHODS:
            raise ToyError(f"unknown method {self.method!r}: choose from {', '.join(METHODS)}")
        check_finite("guidance scale λ", self.scale, low=0.0)
        check_finite("S² scale ω", self.s2_scale, low=0.0)
        check_finite("drop ratio", self.drop_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("num_masks (N)", self.num_masks, low=1, high=64)
        lo, hi = (check_finite("interval start", self.interval[0], low=0.0, high=1.0),
                  check_finite("interval end", self.interval[1], low=0.0, high=1.0))
        if lo > hi:
            raise ToyError(f"interval start must be <= interval end, got ({lo}, {hi})")
        cfg = replace(self, exclude=tuple(int(b) for b in self.exclude),
                      fixed_blocks=tuple(int(b) for b in self.fixed_blocks), interval=(lo, hi))
        if num_blocks is not None and self.method in MASK_METHODS:
            if num_blocks == 0:
                raise ToyError(f"method {self.method!r} drops blocks of a network; the exact "
                               f"closed-form denoiser has none (exact supports {', '.join(EXACT_METHODS)})")
            for b in cfg.exclude:
                check_int("excluded block", b, low=0, high=num_blocks - 1)
            num_dropped(num_blocks, cfg.exclude, cfg.drop_ratio, cfg.num_drop)
            if self.method == "fixed-block":
                fixed_mask(num_blocks, cfg.fixed_blocks)
        return cfg

    def static(self) -> "GuidanceConfig":
        """The parts that change the compiled program; λ, ω and the interval are runtime inputs."""
        return replace(self, scale=0.0, s2_scale=0.0, interval=(0.0, 0.0))

    def dynamic(self) -> jax.Array:
        """[λ, ω, interval start, interval end] as one array (no recompilation when they change)."""
        return jnp.asarray([self.scale, self.s2_scale, *self.interval], jnp.float32)


# -- one guided prediction ----------------------------------------------------------------------

Denoiser = Callable[..., jax.Array]  # D(x [n, d], sigma [n] | scalar, labels [n], mask=None) -> [n, d]


def guided_prediction(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array,
                      sigma: jax.Array, label: jax.Array, key: jax.Array, position: jax.Array,
                      dyn: jax.Array) -> jax.Array:
    """D̃(x; σ, c) for one step of the sampler.

    x: [n, d]; sigma: scalar; label: [n] target class; key: this step's PRNG key (the step's one
    mask comes from it, so Heun's two evaluations share it); position: the step's place in [0, 1]
    along the sampler; dyn: `GuidanceConfig.dynamic()`.
    """
    scale, s2_scale, lo, hi = dyn[0], dyn[1], dyn[2], dyn[3]
    n, m = x.shape[0], gcfg.method
    null = jnp.full((n,), main.null_label, jnp.int32)                            # [n]
    if m == "none":
        return none(main(x, sigma, label))
    if m == "autoguidance":
        return autoguidance(weak(x, sigma, label), main(x, sigma, label), scale)
    # One batched call for ∅ and c (and the sub-network passes): a single wide matmul per layer.
    if m == "cfg":
        d = main(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))    # [2n, d]
        return cfg(d[:n], d[n:], scale)
    K = main.num_blocks
    if m == "s2-naive":
        k_drop = num_dropped(K, gcfg.exclude, gcfg.drop_ratio, gcfg.num_drop)
        masks = jax.vmap(lambda k: sample_mask(k, K, gcfg.exclude, k_drop))(jax.random.split(key, gcfg.num_masks))
    elif m == "s2":
        k_drop = num_dropped(K, gcfg.exclude, gcfg.drop_ratio, gcfg.num_drop)
        # The key is split as for s2-naive with N = 1, so the two draw identical masks (tested).
        masks = sample_mask(jax.random.split(key, 1)[0], K, gcfg.exclude, k_drop)[None]   # [1, K]
    else:  # fixed-block
        masks = fixed_mask(K, gcfg.fixed_blocks)[None]                            # [1, K]
    N = masks.shape[0]
    active = (position >= lo) & (position <= hi)

    def with_sub(_):
        xs = jnp.concatenate([x] * (N + 2))                                      # [(N+2)n, d]
        labels = jnp.concatenate([null, label] + [label] * N)                    # [(N+2)n]
        row_masks = jnp.concatenate([jnp.ones((2 * n, K)), jnp.repeat(masks, n, axis=0)])  # [(N+2)n, K]
        d = main(xs, sigma, labels, row_masks)                                   # [(N+2)n, d]
        d_uncond, d_cond, d_subs = d[:n], d[n:2 * n], d[2 * n:].reshape(N, n, -1)  # [n, d], [n, d], [N, n, d]
        if m == "s2-naive":
            return s2_naive(d_uncond, d_cond, d_subs, scale, s2_scale)
        return s2(d_uncond, d_cond, d_subs[0], scale, s2_scale)

    def cfg_only(_):
        d = main(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))  # [2n, d]
        return cfg(d[:n], d[n:], scale)

    # Outside the application interval S² is CFG: skip the sub-network passes entirely.
    return jax.lax.cond(active, with_sub, cfg_only, None)
