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

BASELINES = ("cfg++", "cfg-zero*", "apg", "guidance-interval")    # the paper's comparison methods
METHODS = ("none", "cfg", "autoguidance", "s2", "s2-naive", "fixed-block") + BASELINES
MASK_METHODS = ("s2", "s2-naive", "fixed-block")   # methods that drop blocks of the main network
EXACT_METHODS = ("none", "cfg") + BASELINES        # methods that need only D_∅ and D_c: they run on the exact denoiser

# The GuidanceConfig fields each method reads (besides `method` and `shared_prefix`); the others do not
# change its samples, so results can be cached on `GuidanceConfig.canonical()` (tested per method).
METHOD_PARAMS = {
    "none": (),
    "cfg": ("scale",),
    "autoguidance": ("scale",),
    "s2": ("scale", "s2_scale", "drop_ratio", "num_drop", "exclude", "interval"),
    "s2-naive": ("scale", "s2_scale", "drop_ratio", "num_drop", "exclude", "interval", "num_masks"),
    "fixed-block": ("scale", "s2_scale", "fixed_blocks", "interval"),
    "cfg++": ("cfgpp_scale",),
    "cfg-zero*": ("scale", "zero_init_steps"),
    "apg": ("scale", "apg_eta", "apg_momentum", "apg_norm_threshold"),
    "guidance-interval": ("scale", "gi_sigma"),
}


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


# -- the paper's baselines ---------------------------------------------------------------------

def cfg_pp(d_uncond: jax.Array, d_cond: jax.Array, scale) -> tuple[jax.Array, jax.Array]:
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained classifier free guidance").

    The clean estimate is CFG's, D̃ = D_∅ + λ(D_c − D_∅) with λ ∈ [0, 1], but the sampler renoises
    it with the *unconditional* noise estimate: x_next = D̃ + σ_next·(x − D_∅)/σ (their DDIM update).
    Returns (D̃, D_∅): the sampler uses the second for the renoising direction."""
    return cfg(d_uncond, d_cond, scale), d_uncond


def cfg_zero_star(x: jax.Array, sigma, d_uncond: jax.Array, d_cond: jax.Array, scale) -> jax.Array:
    """CFG-Zero* (Fan et al. 2025), optimised scale on the noise predictions ε = (x − D)/σ:
    s* = ⟨ε_c, ε_∅⟩ / ‖ε_∅‖², ε̃ = s*·ε_∅ + λ(ε_c − s*·ε_∅). (Zero-init, ε̃ = 0 for the first
    steps, is applied by the caller.)"""
    eps_u, eps_c = (x - d_uncond) / sigma, (x - d_cond) / sigma                     # [n, d]
    s = jnp.sum(eps_c * eps_u, -1, keepdims=True) / (jnp.sum(eps_u**2, -1, keepdims=True) + 1e-12)  # [n, 1]
    return x - sigma * (s * eps_u + scale * (eps_c - s * eps_u))


def apg(d_uncond: jax.Array, d_cond: jax.Array, scale, running: jax.Array, *, eta: float, momentum: float,
        norm_threshold: float) -> tuple[jax.Array, jax.Array]:
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts of
    high guidance scales in diffusion models"), on the D prediction:
    Δ = D_c − D_∅ averaged with momentum β (Δ̄ ← Δ + β·Δ̄), rescaled to norm ≤ r, split into the
    part parallel to D_c and the orthogonal rest, D̃ = D_c + (λ − 1)(Δ̄_⊥ + η·Δ̄_∥).
    Returns (D̃, new running average)."""
    running = (d_cond - d_uncond) + momentum * running                             # [n, d]
    norm = jnp.linalg.norm(running, axis=-1, keepdims=True)                        # [n, 1]
    diff = running * jnp.minimum(1.0, norm_threshold / jnp.maximum(norm, 1e-12))   # [n, d]
    unit = d_cond / jnp.maximum(jnp.linalg.norm(d_cond, axis=-1, keepdims=True), 1e-12)
    par = jnp.sum(diff * unit, -1, keepdims=True) * unit                           # [n, d]
    return d_cond + (scale - 1) * ((diff - par) + eta * par), running


def guidance_interval(d_uncond: jax.Array, d_cond: jax.Array, scale, sigma, sigma_lo, sigma_hi) -> jax.Array:
    """Guidance in a limited interval (Kynkäänniemi et al. 2024): CFG for σ ∈ (σ_lo, σ_hi], D_c elsewhere."""
    inside = (sigma > sigma_lo) & (sigma <= sigma_hi)
    return jnp.where(inside, cfg(d_uncond, d_cond, scale), d_cond)


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
    cfgpp_scale: float = 0.6                # CFG++'s λ (its own range, [0, 1]); other methods use `scale`
    zero_init_steps: int = 1                # CFG-Zero*: sampler steps with ε̃ = 0 at the start
    apg_eta: float = 0.0                    # APG: weight of the parallel component
    apg_momentum: float = -0.5              # APG: β of the running average (negative, as in the paper)
    apg_norm_threshold: float = 4.0         # APG: r, the largest norm of the guidance update (data units)
    gi_sigma: tuple[float, float] = (0.28, 5.42)   # guidance interval: CFG for σ in (lo, hi] (EDM2 values)
    shared_prefix: bool = True              # sub-passes reuse the conditional pass's blocks before the first drop

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
        check_finite("CFG++ scale", self.cfgpp_scale, low=0.0, high=1.0)
        check_int("zero_init_steps", self.zero_init_steps, low=0, high=10_000)
        check_finite("APG eta", self.apg_eta, low=0.0)
        check_finite("APG momentum", self.apg_momentum, low=-1.0, high=1.0, low_open=True, high_open=True)
        check_finite("APG norm threshold", self.apg_norm_threshold, low=0.0, low_open=True)
        glo, ghi = (check_finite("guidance-interval σ low", self.gi_sigma[0], low=0.0),
                    check_finite("guidance-interval σ high", self.gi_sigma[1], low=0.0))
        if glo > ghi:
            raise ToyError(f"guidance-interval σ low must be <= σ high, got ({glo}, {ghi})")
        cfg = replace(self, exclude=tuple(int(b) for b in self.exclude), gi_sigma=(glo, ghi),
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

    def canonical(self) -> "GuidanceConfig":
        """This config with every field its method does not read reset to the default: two configs
        with the same canonical form draw the same samples (a cache key; see METHOD_PARAMS)."""
        if self.method not in METHOD_PARAMS:
            raise ToyError(f"unknown method {self.method!r}: choose from {', '.join(METHODS)}")
        return replace(GuidanceConfig(method=self.method, shared_prefix=self.shared_prefix),
                       **{f: getattr(self, f) for f in METHOD_PARAMS[self.method]})

    def static(self) -> "GuidanceConfig":
        """The parts that change the compiled program. λ, ω, the interval, the number of dropped
        blocks and the fixed mask are runtime inputs (`dynamic`), so moving them never recompiles."""
        return replace(self, scale=0.0, s2_scale=0.0, interval=(0.0, 0.0), drop_ratio=0.1, num_drop=None,
                       fixed_blocks=())

    def dynamic(self, num_blocks: int = 0) -> jax.Array:
        """[λ, ω, interval start, interval end, blocks dropped per mask, fixed mask (K values)]."""
        k_drop = 0
        if num_blocks and self.method in ("s2", "s2-naive"):
            k_drop = num_dropped(num_blocks, self.exclude, self.drop_ratio, self.num_drop)
        fmask = fixed_mask(num_blocks, self.fixed_blocks) if num_blocks and self.method == "fixed-block" \
            else jnp.ones(num_blocks)
        return jnp.concatenate([jnp.asarray([self.scale, self.s2_scale, *self.interval, k_drop], jnp.float32),
                                jnp.asarray(fmask, jnp.float32)])


# -- one guided prediction ----------------------------------------------------------------------

Denoiser = Callable[..., jax.Array]  # D(x [n, d], sigma [n] | scalar, labels [n], mask=None) -> [n, d]


def uncond_cond(main: Denoiser, x: jax.Array, sigma, null: jax.Array, label: jax.Array):
    """(D_∅, D_c) from one batched call: a single wide matmul per layer instead of two narrow ones."""
    n = x.shape[0]
    d = main(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))      # [2n, d]
    return d[:n], d[n:]


def guided_prediction(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array,
                      sigma: jax.Array, label: jax.Array, key: jax.Array, position: jax.Array,
                      dyn: jax.Array) -> jax.Array:
    """D̃(x; σ, c) for one step of the sampler (see `guided_step`; stateless methods only need this).
    dyn is `gcfg.dynamic(K)`; gcfg may be its `static()` part, as in the sampler."""
    return guided_step(gcfg, main, weak, x, sigma, label, key, position, dyn, jnp.zeros_like(x), 0)[0]


def guided_step(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array, sigma: jax.Array,
                label: jax.Array, key: jax.Array, position: jax.Array, dyn: jax.Array, state: jax.Array,
                step) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One step's guided prediction: returns (D̃, D_renoise, new state).

    x: [n, d]; sigma: scalar; label: [n] target class; key: this step's PRNG key (the step's one
    mask comes from it, so Heun's two evaluations share it); position: the step's place in [0, 1]
    along the sampler; dyn: `GuidanceConfig.dynamic(K)`; state: [n, d] carried across steps (APG's
    running average); step: the step index. D_renoise is the prediction whose noise the sampler
    keeps (D̃ itself, except CFG++'s D_∅).
    """
    scale, s2_scale, lo, hi = dyn[0], dyn[1], dyn[2], dyn[3]
    n, m = x.shape[0], gcfg.method
    null = jnp.full((n,), main.null_label, jnp.int32)                            # [n]
    if m == "none":
        d = none(main(x, sigma, label))
        return d, d, state
    if m == "autoguidance":
        d = autoguidance(weak(x, sigma, label), main(x, sigma, label), scale)
        return d, d, state
    if m in ("cfg",) + BASELINES:
        du, dc = uncond_cond(main, x, sigma, null, label)                        # [n, d] ×2
        if m == "cfg":
            d = cfg(du, dc, scale)
            return d, d, state
        if m == "cfg++":
            d, d_r = cfg_pp(du, dc, gcfg.cfgpp_scale)
            return d, d_r, state
        if m == "cfg-zero*":
            d = jnp.where(step < gcfg.zero_init_steps, x, cfg_zero_star(x, sigma, du, dc, scale))
            return d, d, state
        if m == "apg":
            d, new_state = apg(du, dc, scale, state, eta=gcfg.apg_eta, momentum=gcfg.apg_momentum,
                               norm_threshold=gcfg.apg_norm_threshold)
            return d, d, new_state
        d = guidance_interval(du, dc, scale, sigma, *gcfg.gi_sigma)
        return d, d, state
    K = main.num_blocks
    k_drop, fmask = dyn[4], dyn[5:5 + K]       # runtime inputs: changing them never recompiles
    if m == "s2-naive":
        masks = jax.vmap(lambda k: sample_mask(k, K, gcfg.exclude, k_drop))(jax.random.split(key, gcfg.num_masks))
    elif m == "s2":
        # The key is split as for s2-naive with N = 1, so the two draw identical masks (tested).
        masks = sample_mask(jax.random.split(key, 1)[0], K, gcfg.exclude, k_drop)[None]   # [1, K]
    else:  # fixed-block
        masks = fmask[None]                                                       # [1, K]
    active = (position >= lo) & (position <= hi)

    def with_sub(_):
        d_uncond, d_cond, d_subs = main.guided_passes(x, sigma, null, label, masks,
                                                      shared_prefix=gcfg.shared_prefix)   # [n, d] ×2, [N, n, d]
        if m == "s2-naive":
            return s2_naive(d_uncond, d_cond, d_subs, scale, s2_scale)
        return s2(d_uncond, d_cond, d_subs[0], scale, s2_scale)

    def cfg_only(_):
        return cfg(*uncond_cond(main, x, sigma, null, label), scale)

    # Outside the application interval S² is CFG: skip the sub-network passes entirely.
    d = jax.lax.cond(active, with_sub, cfg_only, None)
    return d, d, state
