"""Guidance methods of the paper and its baselines: each a pure function of denoiser predictions,
declared once in `REGISTRY` through `register`, the same public API a user's own method uses.

All formulas act on D (the x0-prediction). For linear rules (every rule here except CFG-Zero* and
APG, which say which space they work in) that is the same sampler as acting on ε, the score or the
velocity at a fixed (x, σ).

A method's function receives the predictions it `needs`, positionally in the declared order, and the
settings it `reads` as keyword arguments; it returns D̃ (with `state` in its needs: D̃ and the new
state). The predictions:

    uncond  D_∅ [n, d]            cond   D_c [n, d]           weak  D_weak,c [n, d] (Autoguidance's model)
    sub     D̂_c(m) [n, d], one fresh mask per step           subs  D̂_c(m_i) [N, n, d], N = num_masks
    x       the state [n, d]      sigma  σ (scalar)           step  the sampler step index
    state   [n, d] carried across steps (zeros at the start)

A method that needs `sub`/`subs` gets the shared-prefix sub-passes of the same network, and the
application interval: outside it D̂_c = D_c stands in (so S²-like rules are exactly CFG there).
`guided_step` is what the sampler calls: one registry look-up, then the method's predictions and formula.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from toy import settings as S
from toy.errors import ToyError, check_int
from toy.settings import SETTINGS, Setting

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


def cfg_pp(d_uncond: jax.Array, d_cond: jax.Array, cfgpp_scale) -> jax.Array:
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained classifier free guidance").

    The clean estimate is CFG's, D̃ = D_∅ + λ'(D_c − D_∅) with λ' ∈ [0, 1]; the method is declared with
    `renoise="uncond"` and `first_order=True`: the sampler renoises D̃ with the *unconditional* noise
    estimate, x_next = D̃ + σ_next·(x − D_∅)/σ (their DDIM update)."""
    return cfg(d_uncond, d_cond, cfgpp_scale)


def cfg_zero_star(x: jax.Array, sigma, d_uncond: jax.Array, d_cond: jax.Array, step=0, *, scale,
                  zero_init_steps: int = 0) -> jax.Array:
    """CFG-Zero* (Fan et al. 2025), optimised scale on the noise predictions ε = (x − D)/σ:
    s* = ⟨ε_c, ε_∅⟩ / ‖ε_∅‖², ε̃ = s*·ε_∅ + λ(ε_c − s*·ε_∅); zero-init: ε̃ = 0 (D̃ = x) for the
    first `zero_init_steps` sampler steps."""
    eps_u, eps_c = (x - d_uncond) / sigma, (x - d_cond) / sigma                     # [n, d]
    s = jnp.sum(eps_c * eps_u, -1, keepdims=True) / (jnp.sum(eps_u**2, -1, keepdims=True) + 1e-12)  # [n, 1]
    return jnp.where(step < zero_init_steps, x, x - sigma * (s * eps_u + scale * (eps_c - s * eps_u)))


def apg(d_uncond: jax.Array, d_cond: jax.Array, state: jax.Array, *, scale, apg_eta: float, apg_momentum: float,
        apg_norm_threshold: float) -> tuple[jax.Array, jax.Array]:
    """Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and artifacts of
    high guidance scales in diffusion models"), on the D prediction:
    Δ = D_c − D_∅ averaged with momentum β (Δ̄ ← Δ + β·Δ̄, Δ̄ the carried state), rescaled to norm ≤ r,
    split into the part parallel to D_c and the orthogonal rest, D̃ = D_c + (λ − 1)(Δ̄_⊥ + η·Δ̄_∥).
    Returns (D̃, new running average)."""
    running = (d_cond - d_uncond) + apg_momentum * state                           # [n, d]
    norm = jnp.linalg.norm(running, axis=-1, keepdims=True)                        # [n, 1]
    diff = running * jnp.minimum(1.0, apg_norm_threshold / jnp.maximum(norm, 1e-12))   # [n, d]
    unit = d_cond / jnp.maximum(jnp.linalg.norm(d_cond, axis=-1, keepdims=True), 1e-12)
    par = jnp.sum(diff * unit, -1, keepdims=True) * unit                           # [n, d]
    return d_cond + (scale - 1) * ((diff - par) + apg_eta * par), running


def guidance_interval(d_uncond: jax.Array, d_cond: jax.Array, sigma, *, scale, gi_sigma) -> jax.Array:
    """Guidance in a limited interval (Kynkäänniemi et al. 2024): CFG for σ ∈ (σ_lo, σ_hi], D_c elsewhere."""
    inside = (sigma > gi_sigma[0]) & (sigma <= gi_sigma[1])
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


def fixed_mask(num_blocks: int, blocks: tuple[int, ...]) -> np.ndarray:
    """The mask [K] that drops exactly `blocks` (paper Fig. 7c/d, Fig. 15)."""
    for b in blocks:
        check_int("fixed block", b, low=0, high=num_blocks - 1)
    mask = np.ones(num_blocks, np.float32)
    mask[list(blocks)] = 0.0
    return mask


# -- the registry -------------------------------------------------------------------------------

PREDICTIONS = ("uncond", "cond", "weak", "sub", "subs", "x", "sigma", "step", "state")
MASK_SETTINGS = {"random": ("drop_ratio", "num_drop", "exclude", "interval"), "fixed": ("fixed_blocks", "interval")}


@dataclass(frozen=True)
class Method:
    """One guidance method, declared once (by `register`)."""

    name: str                      # the name on the command line and in JSON
    label: str                     # the display label in figures, tables and the app
    fn: Callable                   # the formula: fn(*predictions in `needs` order, **settings in `reads`)
    needs: tuple[str, ...]         # the predictions it uses (PREDICTIONS)
    reads: tuple[str, ...]         # the settings its formula takes as keyword arguments
    explain: str                   # one paragraph for the app and the docs (Markdown with LaTeX)
    source: str                    # the paper's equation, or the work it comes from
    formula: str                   # the formula, plain text
    first_order: bool = False      # one evaluation per step (Euler/DDIM) whatever the solver
    renoise: str | None = None     # the prediction whose noise the sampler keeps (None: D̃ itself)
    exact: bool = True             # runs on the exact closed-form denoiser (sub: the ideal weak model)
    mask: str | None = None        # "random" (S²: drawn per step) or "fixed" (fixed_blocks), with sub/subs
    builtin: bool = False
    settings: tuple[Setting, ...] = field(default=(), compare=False)   # the settings it declared itself

    @property
    def params(self) -> tuple[str, ...]:
        """Every setting the method's samples depend on: what its formula reads and what its
        sub-network passes use (mask settings and the application interval)."""
        extra = MASK_SETTINGS.get(self.mask, ()) + (("num_masks",) if "subs" in self.needs else ())
        return tuple(dict.fromkeys(self.reads + extra))

    @property
    def drops_blocks(self) -> bool:
        return self.mask is not None

    @property
    def uses_weak(self) -> bool:
        return "weak" in self.needs

    def masks_per_step(self, gcfg: "GuidanceConfig") -> int:
        """How many random masks one step draws (0 for methods that drop no block or a fixed one)."""
        if self.mask != "random":
            return 0
        return gcfg.num_masks if "subs" in self.needs else 1


REGISTRY: dict[str, Method] = {}


def register(name: str, *, needs: tuple[str, ...], reads: tuple[str, ...] = (), label: str | None = None,
             settings: list[Setting] | tuple[Setting, ...] = (), explain: str = "", source: str = "",
             formula: str = "", first_order: bool = False, renoise: str | None = None, exact: bool | None = None,
             mask: str | None = None, builtin: bool = False) -> Callable[[Callable], Callable]:
    """Declare a guidance method (a decorator; returns the function unchanged).

    `needs`: the predictions the function takes, positionally in this order (see the module
    docstring); `reads`: the settings it takes as keyword arguments (built-in ones such as `scale`, or
    its own, declared in `settings` with a range). `first_order`: one evaluation per step;
    `renoise`: a prediction whose noise the sampler keeps instead of D̃'s (CFG++'s "uncond");
    `exact`: whether it runs on the exact denoiser (default: unless it needs `subs` or a fixed mask);
    `mask`: "random" (default with sub/subs) or "fixed". Every mistake is one ToyError, and nothing is
    registered then."""
    def decorate(fn: Callable) -> Callable:
        where = f"guidance method {name!r}"
        if not isinstance(name, str) or not name.strip() or "," in name or "[" in name or "=" in name:
            raise ToyError(f"a guidance method needs a name without commas, brackets or '=', got {name!r}")
        if name in REGISTRY:
            raise ToyError(f"{where} is {'a built-in method' if REGISTRY[name].builtin else 'declared twice'}: "
                           f"choose another name")
        needs_ = tuple(needs)
        if not needs_ or any(n not in PREDICTIONS for n in needs_) or len(set(needs_)) != len(needs_):
            raise ToyError(f"{where}: needs must list predictions from {', '.join(PREDICTIONS)}, each once; "
                           f"got {needs_!r}")
        if "sub" in needs_ and "subs" in needs_:
            raise ToyError(f"{where}: needs 'sub' (one mask) or 'subs' (N masks), not both")
        uses_sub = "sub" in needs_ or "subs" in needs_
        mask_ = mask or ("random" if uses_sub else None)
        if (mask_ is not None) != uses_sub or mask_ not in (None, "random", "fixed") or (mask_ == "fixed" and "subs" in needs_):
            raise ToyError(f"{where}: mask is 'random' or 'fixed' with 'sub' ('random' with 'subs'), and only then")
        if renoise is not None and renoise not in needs_:
            raise ToyError(f"{where}: renoise must name one of its needs, got {renoise!r}")
        own = tuple(S.check_new(settings, where))
        reads_ = tuple(dict.fromkeys(tuple(reads) + tuple(s.name for s in own)))
        known = set(SETTINGS) | {s.name for s in own}
        unknown = [r for r in reads_ if r not in known]
        if unknown:
            raise ToyError(f"{where}: reads undeclared setting(s) {', '.join(unknown)}: declare each in settings= "
                           f"with a range, or read one of {', '.join(S.GUIDANCE)}")
        try:
            inspect.signature(fn).bind(*needs_, **{r: None for r in reads_})
        except TypeError as e:
            raise ToyError(f"{where}: its function must take {len(needs_)} prediction(s) ({', '.join(needs_)}) "
                           f"and the keyword settings {', '.join(reads_) or '(none)'}: {e}") from None
        except ValueError:            # no signature (a builtin): trust the declaration
            pass
        exact_ = exact if exact is not None else not ("subs" in needs_ or mask_ == "fixed")
        method = Method(name, label or name, fn, needs_, reads_, explain or (fn.__doc__ or "").strip(), source,
                        formula, first_order, renoise, exact_, mask_, builtin, own)
        S.declare(own, where)
        REGISTRY[name] = method
        return fn
    return decorate


def unregister(name: str) -> None:
    """Remove a method declared from outside the package, and the settings it declared."""
    m = REGISTRY.get(name)
    if m is None or m.builtin:
        raise ToyError(f"{name!r} is not a registered plugin method")
    del REGISTRY[name]
    for s in m.settings:
        SETTINGS.pop(s.name, None)


class _Names(Sequence):
    """A live tuple of method names (methods registered later appear in it)."""

    def __init__(self, keep: Callable[[Method], bool]):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, m in REGISTRY.items() if self._keep(m))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __add__(self, other):
        return self._names() + tuple(other)

    def __radd__(self, other):
        return tuple(other) + self._names()

    def __eq__(self, other):
        return tuple(self) == tuple(other)

    def __hash__(self):
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


METHODS = _Names(lambda m: True)                                                # every method, in order
PAPER_METHODS = ("none", "cfg", "autoguidance", "s2", "s2-naive", "fixed-block")
MASK_METHODS = _Names(lambda m: m.drops_blocks)                                 # drop blocks of the network
EXACT_METHODS = _Names(lambda m: m.exact)                                       # run on the exact denoiser
PLUGIN_METHODS = _Names(lambda m: not m.builtin)                                # declared from outside


# -- configuration ------------------------------------------------------------------------------

def _default(name: str):
    return SETTINGS[name].default


@dataclass(frozen=True)
class GuidanceConfig:
    """One guidance method and its settings. Every field is a setting of `toy.settings` (its default,
    range and help are declared there); `extra` holds the settings plugins declare, as sorted
    (name, value) pairs. Defaults follow the paper: ω = 0.25, ~10% of blocks dropped with the first
    block excluded, self-guidance inside the central 80% of the steps."""

    method: str = "cfg"
    scale: float = _default("scale")                          # λ
    s2_scale: float = _default("s2_scale")                    # ω
    drop_ratio: float = _default("drop_ratio")
    num_drop: int | None = _default("num_drop")
    exclude: tuple[int, ...] = _default("exclude")
    interval: tuple[float, float] = _default("interval")
    num_masks: int = _default("num_masks")
    fixed_blocks: tuple[int, ...] = _default("fixed_blocks")
    cfgpp_scale: float = _default("cfgpp_scale")
    zero_init_steps: int = _default("zero_init_steps")
    apg_eta: float = _default("apg_eta")
    apg_momentum: float = _default("apg_momentum")
    apg_norm_threshold: float = _default("apg_norm_threshold")
    gi_sigma: tuple[float, float] = _default("gi_sigma")
    shared_prefix: bool = True              # sub-passes reuse the conditional pass's blocks before the first drop
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> Method:
        if self.method not in REGISTRY:
            raise ToyError(f"unknown method {self.method!r}: choose from {', '.join(REGISTRY)}")
        return REGISTRY[self.method]

    def value(self, name: str):
        """A setting's value by name: a field, a plugin's setting in `extra`, or its declared default."""
        if name in S.GUIDANCE:
            return getattr(self, name)
        return dict(self.extra).get(name, S.get(name).default)

    def with_settings(self, **values) -> "GuidanceConfig":
        """This config with settings changed by name, fields and plugin settings alike."""
        fields = {k: v for k, v in values.items() if k in S.GUIDANCE or k in ("method", "shared_prefix")}
        extra = dict(self.extra)
        for k, v in values.items():
            if k not in fields:
                S.get(k)
                extra[k] = v
        return replace(self, **fields, extra=tuple(sorted(extra.items())))

    def validate(self, num_blocks: int | None = None) -> "GuidanceConfig":
        """Raise ToyError naming the bad parameter; return self with values normalised.

        Every setting is range-checked by its declaration; the checks against the network's blocks
        (`num_blocks`; 0 for the exact denoiser) apply only to the settings the method reads."""
        spec = self.spec
        fields = {n: SETTINGS[n].check(getattr(self, n)) for n in S.GUIDANCE}
        extra = tuple(sorted((n, S.get(n).check(v)) for n, v in self.extra))
        cfg_ = replace(self, **fields, extra=extra)
        if num_blocks is None:
            return cfg_
        exact_names = ", ".join(EXACT_METHODS)
        if num_blocks == 0 and not spec.exact:
            raise ToyError(f"method {self.method!r} drops blocks of a network; the exact closed-form denoiser "
                           f"has none (exact supports {exact_names})")
        if num_blocks > 0 and spec.mask == "random":
            for b in cfg_.exclude:
                check_int("excluded block", b, low=0, high=num_blocks - 1)
            num_dropped(num_blocks, cfg_.exclude, cfg_.drop_ratio, cfg_.num_drop)
        if spec.mask == "fixed" and not cfg_.fixed_blocks:
            raise ToyError(f"fixed blocks: {self.method} needs at least one block to drop (with none it is CFG)")
        if num_blocks > 0 and spec.mask == "fixed":
            fixed_mask(num_blocks, cfg_.fixed_blocks)
        return cfg_

    def canonical(self) -> "GuidanceConfig":
        """This config with every setting its method does not read reset to the default: two configs
        with the same canonical form draw the same samples (a cache key; tested per method)."""
        params = self.spec.params
        return replace(GuidanceConfig(method=self.method, shared_prefix=self.shared_prefix),
                       **{f: getattr(self, f) for f in params if f in S.GUIDANCE},
                       extra=tuple((n, v) for n, v in self.extra if n in params))

    def static(self) -> "GuidanceConfig":
        """The parts that change the compiled program. Runtime settings (λ, ω, the interval, the blocks
        dropped, the fixed mask, a plugin's own settings unless declared runtime=False) are inputs of
        the program (`runtime`), so moving them never recompiles; neither do the settings the method
        does not read (CFG with any N is one program)."""
        c = self.canonical()
        reset = {n: SETTINGS[n].default for n in c.spec.params if SETTINGS[n].runtime}
        return replace(c, **{n: v for n, v in reset.items() if n in S.GUIDANCE},
                       extra=tuple((n, v) for n, v in c.extra if n not in reset))

    def runtime(self, num_blocks: int = 0) -> dict[str, np.ndarray]:
        """The runtime inputs by name: each runtime setting the method reads, plus `blocks_dropped`
        (random masks) or `fixed_mask` [K] (a fixed one), as host arrays."""
        spec = self.spec
        out: dict[str, np.ndarray] = {}
        for n in spec.params:
            s = SETTINGS[n]
            if s.runtime and n not in ("drop_ratio", "num_drop", "fixed_blocks"):
                v = self.value(n)
                out[n] = np.asarray(v, np.int32 if s.kind in ("int", "ints") else np.float32)
        if spec.mask == "random":
            out["blocks_dropped"] = np.float32(num_dropped(num_blocks, self.exclude, self.drop_ratio, self.num_drop)
                                               if num_blocks else 0)
        elif spec.mask == "fixed":
            out["fixed_mask"] = fixed_mask(num_blocks, self.fixed_blocks) if num_blocks else np.ones(0, np.float32)
        return out


# -- one guided prediction ----------------------------------------------------------------------

Denoiser = Callable[..., jax.Array]  # D(x [n, d], sigma [n] | scalar, labels [n], mask=None) -> [n, d]


def uncond_cond(main: Denoiser, x: jax.Array, sigma, null: jax.Array, label: jax.Array):
    """(D_∅, D_c) from one batched call: a single wide matmul per layer instead of two narrow ones."""
    n = x.shape[0]
    d = main(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))      # [2n, d]
    return d[:n], d[n:]


@dataclass(frozen=True)
class Step:
    """What one method's step sees: the denoisers, the state and the runtime settings by name."""

    gcfg: GuidanceConfig          # the static part (see GuidanceConfig.static)
    main: Denoiser
    weak: Denoiser | None
    x: jax.Array                  # [n, d]
    sigma: jax.Array              # scalar
    label: jax.Array              # [n]
    scores: jax.Array             # [N, K] this step's mask scores (mask_scores): Heun's evaluations share them
    position: jax.Array           # the step's place in [0, 1] along the sampler
    runtime: dict                 # GuidanceConfig.runtime(K)
    state: jax.Array              # [n, d], carried across steps (APG's running average)
    index: jax.Array              # the step index

    def setting(self, name: str):
        """A setting's value: the runtime input where it is one, else the static config's."""
        return self.runtime[name] if name in self.runtime else self.gcfg.value(name)

    @property
    def null(self) -> jax.Array:
        return jnp.full((self.x.shape[0],), self.main.null_label, jnp.int32)     # [n]

    def masks(self, spec: Method) -> jax.Array:
        """This step's masks [N, K]: drawn from the step's scores (Heun's two evaluations share them;
        one mask is drawn exactly as the first of several), or the fixed one."""
        K = self.main.num_blocks
        if spec.mask == "fixed":
            return self.runtime["fixed_mask"][None]                              # [1, K]
        num = spec.masks_per_step(self.gcfg)
        if K == 0:                    # the exact denoiser: its ideal weak model needs no mask
            return jnp.ones((num, 0), jnp.float32)
        k_drop = self.runtime["blocks_dropped"]
        return jax.vmap(lambda sc: mask_from_scores(sc, self.gcfg.exclude, k_drop))(self.scores[:num])

    def predictions(self, spec: Method) -> dict[str, jax.Array]:
        """The predictions the method needs, each computed once: D_∅ and D_c in one batched pass, the
        sub-network passes sharing D_c's prefix and skipped outside the application interval."""
        needs, p = spec.needs, {"x": self.x, "sigma": self.sigma, "step": self.index, "state": self.state}
        if spec.mask is not None:
            lo, hi = self.runtime["interval"][0], self.runtime["interval"][1]
            active = (self.position >= lo) & (self.position <= hi)
            p["uncond"], p["cond"], p["subs"] = self.main.guided_passes(
                self.x, self.sigma, self.null, self.label, self.masks(spec),
                shared_prefix=self.gcfg.shared_prefix, active=active)
            p["sub"] = p["subs"][0]
        elif "uncond" in needs:
            p["uncond"], p["cond"] = uncond_cond(self.main, self.x, self.sigma, self.null, self.label)
        elif "cond" in needs:
            p["cond"] = self.main(self.x, self.sigma, self.label)                 # [n, d]
        if "weak" in needs:
            p["weak"] = self.weak(self.x, self.sigma, self.label)                # [n, d]
        return p


def guided_step(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array, sigma: jax.Array,
                label: jax.Array, scores: jax.Array, position: jax.Array, runtime: dict, state: jax.Array,
                step) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One step's guided prediction: returns (D̃, D_renoise, new state).

    x: [n, d]; sigma: scalar; label: [n] target class; scores: this step's mask scores [N, K]
    (`mask_scores` of the step's key, N = `masks_drawn`); position: the step's place in [0, 1] along
    the sampler; runtime: `GuidanceConfig.runtime(K)`; state: [n, d] carried across steps; step: the
    step index. D_renoise is the prediction whose noise the sampler keeps (D̃ itself, except CFG++'s D_∅)."""
    spec = gcfg.spec
    c = Step(gcfg, main, weak, x, sigma, label, scores, position, runtime, state, step)
    p = c.predictions(spec)
    out = spec.fn(*(p[n] for n in spec.needs), **{r: c.setting(r) for r in spec.reads})   # the method's formula
    d, new_state = out if "state" in spec.needs else (out, state)
    return d, (p[spec.renoise] if spec.renoise else d), new_state


def steps_in_interval(interval: tuple[float, float], steps: int) -> list[int]:
    """The sampler steps (0-based) where self-guidance acts: step i sits at position i / (T − 1) along
    the sampler, computed in float32 as the sampler does, and acts when lo ≤ position ≤ hi."""
    pos = np.arange(steps, dtype=np.float32) / np.float32(max(steps - 1, 1))
    lo, hi = np.float32(interval[0]), np.float32(interval[1])
    return [int(i) for i in np.flatnonzero((pos >= lo) & (pos <= hi))]


def interval_problem(gcfg: GuidanceConfig, steps: int) -> str | None:
    """Why the method's application interval makes it a silent no-op on a `steps`-step sampler (it
    covers no step, so every step is CFG), or None."""
    if gcfg.spec.mask is None or steps_in_interval(gcfg.interval, steps):
        return None
    pos = ", ".join(f"{i / max(steps - 1, 1):.3g}" for i in range(min(steps, 12))) + (", …" if steps > 12 else "")
    lo, hi = gcfg.interval
    return (f"the interval ({lo:g}, {hi:g}) covers no step of the {steps}-step sampler (its steps sit at {pos}): "
            f"{gcfg.method} would be CFG at every step; widen the interval or change --steps")


def masks_drawn(gcfg: GuidanceConfig) -> int:
    """How many masks one step of the method draws (0 for methods that drop no block or a fixed one)."""
    return gcfg.spec.masks_per_step(gcfg)


def guided_prediction(gcfg: GuidanceConfig, main: Denoiser, weak: Denoiser | None, x: jax.Array,
                      sigma: jax.Array, label: jax.Array, key: jax.Array, position: jax.Array,
                      runtime: dict) -> jax.Array:
    """D̃(x; σ, c) alone, for stateless use (the first step's state), its masks drawn from `key`."""
    scores = mask_scores(key, max(1, masks_drawn(gcfg)), main.num_blocks)
    return guided_step(gcfg, main, weak, x, sigma, label, scores, position, runtime, jnp.zeros_like(x), 0)[0]


# -- the built-in methods, declared through the public API -----------------------------------------

_S2_EXPLAIN = (r"S²-Guidance (paper Eq. 4, Algorithm 1): CFG $-\ \omega (\hat D_c(m_t) - D_c)$ with one fresh random "
               "block mask per step, inside the central part of the sampler (CFG outside it). On the exact denoiser "
               r"the sub-network is the ideal weak model $D^\delta_c$.")


def _builtin(name, fn, **kw):
    register(name, builtin=True, **kw)(fn)


_builtin("none", none, label="no guidance", needs=("cond",), formula="D_c", source="—",
         explain=r"Plain conditional sampling, $\tilde D = D_c$: the reference that every guidance distorts.")
_builtin("cfg", cfg, label="CFG", needs=("uncond", "cond"), reads=("scale",), formula="D_∅ + λ(D_c − D_∅)",
         source="paper Eq. 1",
         explain=r"Classifier-free guidance (paper Eq. 1): $\tilde D = D_\varnothing + \lambda (D_c - D_\varnothing)$. "
                 "Even with exact denoisers it pushes the modes away from the other classes and narrows them.")
_builtin("autoguidance", autoguidance, label="Autoguidance", needs=("weak", "cond"), reads=("scale",),
         formula="D_weak + λ(D_c − D_weak)", source="Karras et al. 2024",
         explain=r"Autoguidance (Karras et al. 2024): $\tilde D = D_{weak} + \lambda (D_c - D_{weak})$ with a smaller "
                 "or less-trained model of the same class. On the exact denoiser the weak model is the ideal one: "
                 r"the truth with every covariance widened by $\delta^2 I$.")
_builtin("s2", s2, label="S²", needs=("uncond", "cond", "sub"), reads=("scale", "s2_scale"),
         formula="CFG − ω(D̂_c(m_t) − D_c), one mask per step", source="paper Eq. 4, Algorithm 1", explain=_S2_EXPLAIN)
_builtin("s2-naive", s2_naive, label="naive S²", needs=("uncond", "cond", "subs"), reads=("scale", "s2_scale"),
         formula="CFG − (ω/N) Σᵢ (D̂_c(mᵢ) − D_c), N masks per step", source="paper Eq. 3",
         explain=r"Naive S² (paper Eq. 3): CFG $-\ \frac{\omega}{N}\sum_i (\hat D_c(m_i) - D_c)$, N random "
                 "sub-networks per step.")
_builtin("fixed-block", s2, label="fixed-block S²", needs=("uncond", "cond", "sub"), reads=("scale", "s2_scale"),
         mask="fixed", formula="as S² with one fixed mask for every step", source="paper Fig. 7c/d, Fig. 15",
         explain="As S² with the same dropped block(s) at every step (paper Fig. 7c/d, Fig. 15).")
_builtin("cfg++", cfg_pp, label="CFG++", needs=("uncond", "cond"), reads=("cfgpp_scale",), first_order=True,
         renoise="uncond", formula="D_∅ + λ'(D_c − D_∅), λ' ∈ [0, 1], renoised with D_∅'s noise",
         source="Chung et al. 2024",
         explain=r"CFG++ (Chung et al. 2024): the CFG estimate with its own scale $\lambda' \in [0, 1]$ (`cfgpp_scale`, "
                 r"default 0.6), renoised with $D_\varnothing$'s noise in a first-order step.")
_builtin("cfg-zero*", cfg_zero_star, label="CFG-Zero*", needs=("x", "sigma", "uncond", "cond", "step"),
         reads=("scale", "zero_init_steps"),
         formula="on ε: s* = ⟨ε_c, ε_∅⟩/‖ε_∅‖², ε̃ = s*ε_∅ + λ(ε_c − s*ε_∅); ε̃ = 0 at the first step",
         source="Fan et al. 2025",
         explain=r"CFG-Zero* (Fan et al. 2025): CFG on $\epsilon$ with the unconditional branch rescaled by "
                 r"$s^* = \langle\epsilon_c, \epsilon_\varnothing\rangle / \|\epsilon_\varnothing\|^2$; the first step is zeroed.")
_builtin("apg", apg, label="APG", needs=("uncond", "cond", "state"),
         reads=("scale", "apg_eta", "apg_momentum", "apg_norm_threshold"),
         formula="Δ̄ ← (D_c − D_∅) + βΔ̄, clipped to norm r, D̃ = D_c + (λ − 1)(Δ̄_⊥ + ηΔ̄_∥)", source="Sadat et al. 2024",
         explain=r"Adaptive projected guidance (Sadat et al. 2024): the guidance update $D_c - D_\varnothing$ with "
                 r"momentum, its norm capped and its component parallel to $D_c$ removed (η = 0). In 1D nothing "
                 "orthogonal is left, so APG is plain conditional sampling there.")
_builtin("guidance-interval", guidance_interval, label="guidance interval", needs=("uncond", "cond", "sigma"),
         reads=("scale", "gi_sigma"), formula="CFG for σ ∈ (0.28, 5.42], D_c elsewhere", source="Kynkäänniemi et al. 2024",
         explain=r"Guidance interval (Kynkäänniemi et al. 2024): CFG only for $\sigma \in (0.28, 5.42]$, plain $D_c$ "
                 "elsewhere.")

BASELINES = tuple(m for m, s in REGISTRY.items() if s.builtin and m not in PAPER_METHODS)   # the paper's comparisons


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


def method_table() -> str:
    """The Markdown table of every registered method (README and docs/design.md hold it; a test checks)."""
    rows = ["| method | label | formula on D | source | settings |", "|---|---|---|---|---|"]
    for n, m in REGISTRY.items():
        rows.append(f"| `{n}` | {m.label} | {m.formula} | {m.source} | {', '.join(m.params) or '—'} |")
    return "\n".join(rows)
