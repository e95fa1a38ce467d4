"""Guidance methods of the paper and its baselines: each a pure function of denoiser predictions,
declared once in `REGISTRY`.

All formulas act on D (the x0-prediction). For linear rules (every rule in this file except
CFG-Zero* and APG, which say which space they work in) that is the same sampler as acting on ε, the
score or the velocity at a fixed (x, σ).

`REGISTRY` holds one `Method` per name: its formula's step function, the predictions it needs, the
`GuidanceConfig` fields it reads, whether it runs on the exact closed-form denoiser, its display
label and a paragraph that explains it. Every list of methods, `GuidanceConfig.canonical`, the
validation, the command-line help and the app's text derive from it. `guided_step` is what the
sampler calls: one registry look-up, then the method's step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import jax
import jax.numpy as jnp

from toy.errors import ToyError, check_finite, check_int

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


def cfg_pp(d_uncond: jax.Array, d_cond: jax.Array, scale) -> tuple[jax.Array, jax.Array]:
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained classifier free guidance").

    The clean estimate is CFG's, D̃ = D_∅ + λ(D_c − D_∅) with λ ∈ [0, 1], but the sampler renoises
    it with the *unconditional* noise estimate: x_next = D̃ + σ_next·(x − D_∅)/σ (their DDIM update).
    Returns (D̃, D_∅): the sampler uses the second for the renoising direction."""
    return cfg(d_uncond, d_cond, scale), d_uncond


def cfg_zero_star(x: jax.Array, sigma, d_uncond: jax.Array, d_cond: jax.Array, scale) -> jax.Array:
    """CFG-Zero* (Fan et al. 2025), optimised scale on the noise predictions ε = (x − D)/σ:
    s* = ⟨ε_c, ε_∅⟩ / ‖ε_∅‖², ε̃ = s*·ε_∅ + λ(ε_c − s*·ε_∅). (Zero-init, ε̃ = 0 for the first
    steps, is applied by the step function.)"""
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


def mask_scores(key: jax.Array, num: int, num_blocks: int) -> jax.Array:
    """The random scores [num, K] of `num` masks drawn from one key (`mask_from_scores` turns each into
    a mask); drawing them apart from the sampler keeps random-number code out of its program."""
    return jax.vmap(lambda k: jax.random.uniform(k, (num_blocks,)))(jax.random.split(key, num))


def mask_from_scores(scores: jax.Array, exclude: tuple[int, ...], k_drop) -> jax.Array:
    """The mask [K] that drops the k_drop non-excluded blocks of lowest score (uniform scores: a
    uniformly random choice)."""
    num_blocks = scores.shape[0]
    excluded = jnp.zeros(num_blocks, bool)
    if exclude:
        excluded = excluded.at[jnp.asarray(exclude, jnp.int32)].set(True)
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

    @property
    def spec(self) -> "Method":
        if self.method not in REGISTRY:
            raise ToyError(f"unknown method {self.method!r}: choose from {', '.join(REGISTRY)}")
        return REGISTRY[self.method]

    def validate(self, num_blocks: int | None = None) -> "GuidanceConfig":
        """Raise ToyError naming the bad parameter; return self with tuples normalised.

        Every field is range-checked; the checks against the network's blocks (`num_blocks`; 0 for
        the exact denoiser) apply only to the fields the method reads."""
        spec = self.spec
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
        cfg_ = replace(self, exclude=tuple(int(b) for b in self.exclude), gi_sigma=(glo, ghi),
                       fixed_blocks=tuple(int(b) for b in self.fixed_blocks), interval=(lo, hi))
        if num_blocks is None:
            return cfg_
        if num_blocks == 0 and not spec.exact:
            raise ToyError(f"method {self.method!r} drops blocks of a network; the exact closed-form denoiser "
                           f"has none (exact supports {', '.join(EXACT_METHODS)})")
        if num_blocks > 0 and "exclude" in spec.params:
            for b in cfg_.exclude:
                check_int("excluded block", b, low=0, high=num_blocks - 1)
            num_dropped(num_blocks, cfg_.exclude, cfg_.drop_ratio, cfg_.num_drop)
        if num_blocks > 0 and "fixed_blocks" in spec.params:
            fixed_mask(num_blocks, cfg_.fixed_blocks)
        return cfg_

    def canonical(self) -> "GuidanceConfig":
        """This config with every field its method does not read reset to the default: two configs
        with the same canonical form draw the same samples (a cache key; tested per method)."""
        return replace(GuidanceConfig(method=self.method, shared_prefix=self.shared_prefix),
                       **{f: getattr(self, f) for f in self.spec.params})

    def static(self) -> "GuidanceConfig":
        """The parts that change the compiled program. λ, ω, the interval, the number of dropped
        blocks and the fixed mask are runtime inputs (`dynamic`), so moving them never recompiles;
        neither do the fields the method does not read (CFG with any N is one program)."""
        return replace(self.canonical(), scale=0.0, s2_scale=0.0, interval=(0.0, 0.0), drop_ratio=0.1,
                       num_drop=None, fixed_blocks=())

    def dynamic(self, num_blocks: int = 0) -> jax.Array:
        """[λ, ω, interval start, interval end, blocks dropped per mask, fixed mask (K values)]."""
        params = self.spec.params
        k_drop = 0
        if num_blocks and "drop_ratio" in params:
            k_drop = num_dropped(num_blocks, self.exclude, self.drop_ratio, self.num_drop)
        fmask = fixed_mask(num_blocks, self.fixed_blocks) if num_blocks and "fixed_blocks" in params \
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


@dataclass(frozen=True)
class Step:
    """What one method's step sees: the denoisers, the state and the runtime settings.
    `guided_step` builds it; each method's step function turns it into (D̃, D_renoise, new state)."""

    gcfg: GuidanceConfig          # the static part (see GuidanceConfig.static)
    main: Denoiser
    weak: Denoiser | None
    x: jax.Array                  # [n, d]
    sigma: jax.Array              # scalar
    label: jax.Array              # [n]
    scores: jax.Array             # [N, K] this step's mask scores (mask_scores): Heun's evaluations share them
    position: jax.Array           # the step's place in [0, 1] along the sampler
    dyn: jax.Array                # GuidanceConfig.dynamic(K)
    state: jax.Array              # [n, d], carried across steps (APG's running average)
    index: jax.Array              # the step index

    @property
    def scale(self):
        return self.dyn[0]

    @property
    def s2_scale(self):
        return self.dyn[1]

    @property
    def null(self) -> jax.Array:
        return jnp.full((self.x.shape[0],), self.main.null_label, jnp.int32)     # [n]

    def cond(self) -> jax.Array:
        return self.main(self.x, self.sigma, self.label)                         # [n, d]

    def uncond_cond(self):
        return uncond_cond(self.main, self.x, self.sigma, self.null, self.label)  # [n, d] ×2

    def masks(self, num: int) -> jax.Array:
        """`num` masks [num, K] from this step's scores (Heun's two evaluations share them); one mask
        is drawn exactly as the first of several, so s2 and s2-naive with N = 1 agree."""
        K, k_drop = self.main.num_blocks, self.dyn[4]
        if K == 0:                    # the exact denoiser: its ideal weak model needs no mask
            return jnp.ones((num, 0), jnp.float32)
        return jax.vmap(lambda sc: mask_from_scores(sc, self.gcfg.exclude, k_drop))(self.scores[:num])

    def with_sub(self, masks: jax.Array, combine: Callable) -> jax.Array:
        """combine(D_∅, D_c, D̂_c(m_i) [N, n, d]). Outside the application interval the sub-network
        passes are skipped and D̂_c = D_c stands in, so every S² formula there is exactly CFG."""
        lo, hi = self.dyn[2], self.dyn[3]
        active = (self.position >= lo) & (self.position <= hi)
        return combine(*self.main.guided_passes(self.x, self.sigma, self.null, self.label, masks,
                                                shared_prefix=self.gcfg.shared_prefix, active=active))


def _plain(d):
    return lambda c: (lambda out: (out, out, c.state))(d(c))


def _step_apg(c: Step):
    d, running = apg(*c.uncond_cond(), c.scale, c.state, eta=c.gcfg.apg_eta, momentum=c.gcfg.apg_momentum,
                     norm_threshold=c.gcfg.apg_norm_threshold)
    return d, d, running


def _step_cfgpp(c: Step):
    d, d_renoise = cfg_pp(*c.uncond_cond(), c.gcfg.cfgpp_scale)
    return d, d_renoise, c.state


_STEPS = {
    "none": _plain(lambda c: none(c.cond())),
    "cfg": _plain(lambda c: cfg(*c.uncond_cond(), c.scale)),
    "autoguidance": _plain(lambda c: autoguidance(c.weak(c.x, c.sigma, c.label), c.cond(), c.scale)),
    "s2": _plain(lambda c: c.with_sub(c.masks(1), lambda du, dc, ds: s2(du, dc, ds[0], c.scale, c.s2_scale))),
    "s2-naive": _plain(lambda c: c.with_sub(c.masks(c.gcfg.num_masks),
                                            lambda du, dc, ds: s2_naive(du, dc, ds, c.scale, c.s2_scale))),
    "fixed-block": _plain(lambda c: c.with_sub(c.dyn[5:5 + c.main.num_blocks][None],
                                               lambda du, dc, ds: s2(du, dc, ds[0], c.scale, c.s2_scale))),
    "cfg++": _step_cfgpp,
    "cfg-zero*": _plain(lambda c: jnp.where(c.index < c.gcfg.zero_init_steps, c.x,
                                            cfg_zero_star(c.x, c.sigma, *c.uncond_cond(), c.scale))),
    "apg": _step_apg,
    "guidance-interval": _plain(lambda c: guidance_interval(*c.uncond_cond(), c.scale, c.sigma, *c.gcfg.gi_sigma)),
}


def masks_drawn(gcfg: GuidanceConfig) -> int:
    """How many masks one step of the method draws (0 for methods that drop no block or a fixed one)."""
    return {"s2": 1, "s2-naive": gcfg.num_masks}.get(gcfg.method, 0)


def guided_step(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array, sigma: jax.Array,
                label: jax.Array, scores: jax.Array, position: jax.Array, dyn: jax.Array, state: jax.Array,
                step) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One step's guided prediction: returns (D̃, D_renoise, new state).

    x: [n, d]; sigma: scalar; label: [n] target class; scores: this step's mask scores [N, K]
    (`mask_scores` of the step's key, N = `masks_drawn`); position: the step's place in [0, 1] along
    the sampler; dyn: `GuidanceConfig.dynamic(K)`; state: [n, d] carried across steps; step: the step
    index. D_renoise is the prediction whose noise the sampler keeps (D̃ itself, except CFG++'s D_∅)."""
    return gcfg.spec.step(Step(gcfg, main, weak, x, sigma, label, scores, position, dyn, state, step))


def guided_prediction(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array,
                      sigma: jax.Array, label: jax.Array, key: jax.Array, position: jax.Array,
                      dyn: jax.Array) -> jax.Array:
    """D̃(x; σ, c) alone, for stateless use (the first step's state), its masks drawn from `key`."""
    scores = mask_scores(key, max(1, masks_drawn(gcfg)), main.num_blocks)
    return guided_step(gcfg, main, weak, x, sigma, label, scores, position, dyn, jnp.zeros_like(x), 0)[0]


# -- the registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """One guidance method, declared once."""

    name: str                      # the name on the command line and in JSON
    label: str                     # the display label in figures, tables and the app
    needs: tuple[str, ...]         # the predictions it uses: cond, uncond, weak, sub (sub-network)
    params: tuple[str, ...]        # the GuidanceConfig fields it reads (besides method, shared_prefix)
    exact: bool                    # runs on the exact closed-form denoiser (sub/weak: the ideal weak model)
    formula: str                   # the formula, plain text
    source: str                    # the paper's equation, or the work it comes from
    explain: str                   # one paragraph for the app and the docs (Markdown with LaTeX)
    step: Callable = None          # Step → (D̃, D_renoise, new state)

    @property
    def drops_blocks(self) -> bool:
        return "sub" in self.needs


_S2_PARAMS = ("scale", "s2_scale", "drop_ratio", "num_drop", "exclude", "interval")
_DECLARED = [
    Method("none", "no guidance", ("cond",), (), True, "D_c", "—",
           r"Plain conditional sampling, $\tilde D = D_c$: the reference that every guidance distorts."),
    Method("cfg", "CFG", ("uncond", "cond"), ("scale",), True, "D_∅ + λ(D_c − D_∅)", "paper Eq. 1",
           r"Classifier-free guidance (paper Eq. 1): $\tilde D = D_\varnothing + \lambda (D_c - D_\varnothing)$. "
           "Even with exact denoisers it pushes the modes away from the other classes and narrows them."),
    Method("autoguidance", "Autoguidance", ("weak", "cond"), ("scale",), True, "D_weak + λ(D_c − D_weak)",
           "Karras et al. 2024",
           r"Autoguidance (Karras et al. 2024): $\tilde D = D_{weak} + \lambda (D_c - D_{weak})$ with a smaller or "
           "less-trained model of the same class. On the exact denoiser the weak model is the ideal one: the "
           r"truth with every covariance widened by $\delta^2 I$."),
    Method("s2", "S²", ("uncond", "cond", "sub"), _S2_PARAMS, True, "CFG − ω(D̂_c(m_t) − D_c), one mask per step",
           "paper Eq. 4, Algorithm 1",
           r"S²-Guidance (paper Eq. 4, Algorithm 1): CFG $-\ \omega (\hat D_c(m_t) - D_c)$ with one fresh random "
           "block mask per step, inside the central part of the sampler (CFG outside it). On the exact denoiser "
           r"the sub-network is the ideal weak model $D^\delta_c$."),
    Method("s2-naive", "naive S²", ("uncond", "cond", "sub"), _S2_PARAMS + ("num_masks",), False,
           "CFG − (ω/N) Σᵢ (D̂_c(mᵢ) − D_c), N masks per step", "paper Eq. 3",
           r"Naive S² (paper Eq. 3): CFG $-\ \frac{\omega}{N}\sum_i (\hat D_c(m_i) - D_c)$, N random "
           "sub-networks per step."),
    Method("fixed-block", "fixed-block S²", ("uncond", "cond", "sub"), ("scale", "s2_scale", "fixed_blocks", "interval"),
           False, "as S² with one fixed mask for every step", "paper Fig. 7c/d, Fig. 15",
           "As S² with the same dropped block(s) at every step (paper Fig. 7c/d, Fig. 15)."),
    Method("cfg++", "CFG++", ("uncond", "cond"), ("cfgpp_scale",), True,
           "D_∅ + λ'(D_c − D_∅), λ' ∈ [0, 1], renoised with D_∅'s noise", "Chung et al. 2024",
           r"CFG++ (Chung et al. 2024): the CFG estimate with its own scale $\lambda' \in [0, 1]$ (`cfgpp_scale`, "
           r"default 0.6), renoised with $D_\varnothing$'s noise in a first-order step."),
    Method("cfg-zero*", "CFG-Zero*", ("uncond", "cond"), ("scale", "zero_init_steps"), True,
           "on ε: s* = ⟨ε_c, ε_∅⟩/‖ε_∅‖², ε̃ = s*ε_∅ + λ(ε_c − s*ε_∅); ε̃ = 0 at the first step",
           "Fan et al. 2025",
           r"CFG-Zero* (Fan et al. 2025): CFG on $\epsilon$ with the unconditional branch rescaled by "
           r"$s^* = \langle\epsilon_c, \epsilon_\varnothing\rangle / \|\epsilon_\varnothing\|^2$; the first step is zeroed."),
    Method("apg", "APG", ("uncond", "cond"), ("scale", "apg_eta", "apg_momentum", "apg_norm_threshold"), True,
           "Δ̄ ← (D_c − D_∅) + βΔ̄, clipped to norm r, D̃ = D_c + (λ − 1)(Δ̄_⊥ + ηΔ̄_∥)", "Sadat et al. 2024",
           r"Adaptive projected guidance (Sadat et al. 2024): the guidance update $D_c - D_\varnothing$ with "
           r"momentum, its norm capped and its component parallel to $D_c$ removed (η = 0). In 1D nothing "
           "orthogonal is left, so APG is plain conditional sampling there."),
    Method("guidance-interval", "guidance interval", ("uncond", "cond"), ("scale", "gi_sigma"), True,
           "CFG for σ ∈ (0.28, 5.42], D_c elsewhere", "Kynkäänniemi et al. 2024",
           r"Guidance interval (Kynkäänniemi et al. 2024): CFG only for $\sigma \in (0.28, 5.42]$, plain $D_c$ "
           "elsewhere."),
]
REGISTRY: dict[str, Method] = {m.name: replace(m, step=_STEPS[m.name]) for m in _DECLARED}

METHODS = tuple(REGISTRY)                                                        # every method, in order
PAPER_METHODS = ("none", "cfg", "autoguidance", "s2", "s2-naive", "fixed-block")
BASELINES = tuple(m for m in METHODS if m not in PAPER_METHODS)                  # the paper's comparisons
MASK_METHODS = tuple(m for m, s in REGISTRY.items() if s.drops_blocks)           # drop blocks of the network
EXACT_METHODS = tuple(m for m, s in REGISTRY.items() if s.exact)                 # run on the exact denoiser


def label(name: str) -> str:
    """The display label of a method or a result row: "cfg" → "CFG", "s2[exact]" → "S² (exact)"."""
    base, _, tag = name.partition("[")
    if base not in REGISTRY:
        return name
    return REGISTRY[base].label + (f" ({tag.rstrip(']')})" if tag else "")


def parse_methods(text: str | tuple | list) -> tuple[str, ...]:
    """A comma list (or sequence) of method names, validated: unknown and repeated names are errors."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if str(m).strip()]
    if not names:
        raise ToyError(f"methods must name at least one of {', '.join(METHODS)}")
    for m in names:
        if m not in REGISTRY:
            raise ToyError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    dup = sorted({m for m in names if names.count(m) > 1})
    if dup:
        raise ToyError(f"methods lists {', '.join(dup)} more than once: name each method once")
    return tuple(names)
