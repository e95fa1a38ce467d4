"""EDM schedules, losses and samplers over one denoiser interface D(x; σ, c).

The sampler integrates dx/dσ = (x − D̃(x; σ)) / σ from σ_max to 0 with Heun (default) or Euler on
the ρ = 7 schedule of Karras et al. (2022), optionally with EDM's stochastic churn. The whole run is
one jitted loop; λ, ω, the application interval, the σ schedule and the step count are runtime inputs
(the step count within a power-of-two bucket of at least 32), so changing them does not recompile.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toy.errors import NonFiniteError, ToyError, check_finite, check_int
from toy.guidance import GuidanceConfig, guided_step, mask_scores, masks_drawn
from toy.runtime import draw_size, rows_mesh

SOLVERS = ("heun", "euler")
SIGMA_MAX_RATIO = 16.0      # σ_max ≥ this × σ_data (see SamplerConfig.fit)


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 32
    solver: str = "heun"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    churn: float = 0.0          # EDM S_churn; 0 is the deterministic probability-flow ODE
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0

    def validate(self) -> "SamplerConfig":
        check_int("steps", self.steps, low=1, high=10_000)
        if self.solver not in SOLVERS:
            raise ToyError(f"unknown solver {self.solver!r}: choose from {', '.join(SOLVERS)}")
        check_finite("sigma_min", self.sigma_min, low=0.0, low_open=True)
        check_finite("sigma_max", self.sigma_max, low=self.sigma_min)
        check_finite("rho", self.rho, low=0.0, low_open=True)
        check_finite("churn", self.churn, low=0.0)
        check_finite("s_noise", self.s_noise, low=0.0)
        return replace(self, steps=int(self.steps))

    def sigmas(self, sigma_data: float | None = None) -> np.ndarray:
        """The noise levels the sampler visits for data of spread σ_data: σ_0 … σ_T = 0, [T + 1]."""
        s = self.fit(sigma_data)
        return edm_sigmas(s.steps, s.sigma_min, s.sigma_max, s.rho)

    def fit(self, sigma_data: float | None) -> "SamplerConfig":
        """The schedule for data of RMS spread σ_data: σ_max at least SIGMA_MAX_RATIO × σ_data, so the
        first state is noise that swamps the data (80 covers every preset; wider data raise it)."""
        if sigma_data is None:
            return self
        return replace(self, sigma_max=max(self.sigma_max, SIGMA_MAX_RATIO * float(sigma_data)))


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """σ_0 = σ_max > … > σ_{T−1} = σ_min, then σ_T = 0 (Karras et al. 2022, Eq. 5), [T + 1]."""
    i = np.arange(steps, dtype=np.float64)
    frac = i / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(s, 0.0)


# -- losses ------------------------------------------------------------------------------------

def edm_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
    """λ(σ) = (σ² + σ_d²) / (σ·σ_d)², which makes the loss unit-scale at every σ."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_train_sigma(key: jax.Array, n: int, p_mean: float, p_std: float) -> jax.Array:
    """ln σ ~ N(P_mean, P_std²), [n]."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key, (n,)))


def edm_loss(D, x0: jax.Array, labels: jax.Array, key: jax.Array, *, sigma_data: float,
             p_mean: float, p_std: float) -> jax.Array:
    """EDM denoising loss E λ(σ)‖D(x0 + σn; σ, c) − x0‖² (Karras et al. 2022, Eq. 2), per dimension."""
    k_s, k_n = jax.random.split(key)
    sigma = sample_train_sigma(k_s, x0.shape[0], p_mean, p_std)                 # [n]
    x = x0 + sigma[:, None] * jax.random.normal(k_n, x0.shape)                   # [n, d]
    err = D(x, sigma, labels) - x0                                               # [n, d]
    return jnp.mean(edm_weight(sigma, sigma_data) * jnp.mean(err**2, axis=-1))


def exact_score_loss(D, mixture, x0: jax.Array, labels: jax.Array, key: jax.Array, *, sigma_data: float,
                     p_mean: float, p_std: float) -> jax.Array:
    """Exact score matching: regress D on the closed-form posterior mean instead of x0.

    Same minimiser as `edm_loss` (E[x0 | x_σ, c]) with no target noise; the score error is this
    D error divided by σ², so the weighting is the EDM one."""
    k_s, k_n = jax.random.split(key)
    sigma = sample_train_sigma(k_s, x0.shape[0], p_mean, p_std)                 # [n]
    x = x0 + sigma[:, None] * jax.random.normal(k_n, x0.shape)                   # [n, d]
    err = D(x, sigma, labels) - mixture.denoise(x, sigma, labels)                # [n, d]
    return jnp.mean(edm_weight(sigma, sigma_data) * jnp.mean(err**2, axis=-1))


# -- sampler -----------------------------------------------------------------------------------

class SampleResult(NamedTuple):
    x: jax.Array                         # [n, d] final samples
    trajectory: np.ndarray | None        # [T + 1, n, d] states from σ_max to 0 (with return_trajectory)
    denoised: np.ndarray | None          # [T, n, d] guided D̃ at each step (with return_trajectory)
    sigmas: np.ndarray                   # [T + 1]


# The random numbers of a run are drawn by small programs of their own, outside the sampler's: the
# sampler programs then carry no random-number code (which took about half of their compile time).
# The draws are prefix-stable, so they are made at a power-of-two size and cut (`runtime.draw_size`):
# a handful of programs serve every sample count, step count and mask count. The mask scores are
# integer arithmetic and a bit cast, identical at any XLA optimisation level, so they skip LLVM's
# optimiser (1-2.5 s of compile each at the default level, 0.3 s at level 0).
@functools.partial(jax.jit, static_argnames=("n", "dim"))
def _noise_draw(key, *, n: int, dim: int):
    return jax.random.normal(key, (n, dim))                                      # [n, d]


@functools.partial(jax.jit, static_argnames=("steps", "num", "num_blocks"),
                   compiler_options={"xla_backend_optimization_level": 0})
def _scores_draw(key, *, steps: int, num: int, num_blocks: int):
    # One key per step: Heun's two evaluations of step i share the step's masks (as in Algorithm 1, one
    # mask m_t per step t).
    return jax.vmap(lambda i: mask_scores(jax.random.fold_in(key, i), num, num_blocks))(jnp.arange(steps))  # [T, N, K]


def initial_noise(key: jax.Array, n: int, dim: int) -> np.ndarray:
    """The standard normal noise [n, d] a run starts from (scaled by σ_max in the sampler)."""
    return np.asarray(_noise_draw(key, n=draw_size(n, 256), dim=int(dim)))[:n]


@functools.partial(jax.jit, static_argnames=("num", "num_blocks"),
                   compiler_options={"xla_backend_optimization_level": 0})
def _one_scores_draw(key, *, num: int, num_blocks: int):
    return mask_scores(key, num, num_blocks)                                     # [N, K]


def draw_mask_scores(key: jax.Array, num: int, num_blocks: int, steps: int | None = None) -> np.ndarray:
    """`mask_scores(key, num, num_blocks)` [N, K] from a small shared program; with `steps`, the
    scores [T, N, K] of every step, step i's drawn from `fold_in(key, i)`."""
    shape = (num, num_blocks) if steps is None else (steps, num, num_blocks)
    if num == 0 or num_blocks == 0:
        return np.zeros(shape, np.float32)
    N, K = draw_size(num, 4), int(num_blocks)
    if steps is None:
        return np.asarray(_one_scores_draw(key, num=N, num_blocks=K))[:num]
    return np.asarray(_scores_draw(key, steps=draw_size(steps, 32), num=N, num_blocks=K))[:steps, :num]


@functools.partial(jax.jit, static_argnames=("gcfg", "scfg", "n", "dim", "return_trajectory"))
def _sample_jit(main, weak, noise, scores, sigmas, steps, gamma, churn_key, label, runtime, *, gcfg: GuidanceConfig,
                scfg: SamplerConfig, n: int, dim: int, return_trajectory: bool):
    # The step count is a runtime value: the loop runs `steps` of the scfg.steps (a power of two) slots
    # of sigmas [T_b + 1], scores [T_b, N, K] and the trajectory buffers, so one program serves every
    # step count of its bucket. gamma: EDM's churn factor min(S_churn / T, √2 − 1).
    labels = jnp.full((n,), label, jnp.int32)                                    # [n]
    x_init = sigmas[0] * noise                                                   # [n, d]
    k_churn = churn_key

    def denoise(x, sigma, i, state):
        position = i / jnp.maximum(steps - 1, 1)
        return guided_step(gcfg, main, weak, x, sigma, labels, scores[i], position, runtime, state, i)

    first_order = gcfg.spec.first_order     # e.g. CFG++, defined with a first-order (DDIM) renoising step

    def step(i, carry):
        x, first_bad, state, traj, den = carry
        s, s_next = sigmas[i], sigmas[i + 1]
        if scfg.churn > 0:
            g = jnp.where((s >= scfg.s_tmin) & (s <= scfg.s_tmax), gamma, 0.0)
            s_hat = s * (1 + g)
            eps = jax.random.normal(jax.random.fold_in(k_churn, i), x.shape)     # [n, d]
            x = x + jnp.sqrt(s_hat**2 - s**2) * scfg.s_noise * eps
        else:
            s_hat = s
        if scfg.solver == "heun" and not first_order:
            # Heun's two evaluations as a loop of two over one traced network (half the program to compile):
            # the first at (x, σ̂), the second at the Euler point (x_eul, σ_next), skipped at the last step.
            def evaluation(c, j):
                xe, se, d1, dr1, st1 = c
                d, d_r, ns = jax.lax.cond((j == 0) | (s_next > 0), lambda _: denoise(xe, se, i, state),
                                          lambda _: (xe, xe, state), None)
                first = j == 0
                x_eul = d + (s_next / s_hat) * (x - d_r)                         # [n, d]
                keep = lambda a, b: jnp.where(first, a, b)
                return (keep(x_eul, xe), keep(s_next, se), keep(d, d1), keep(d_r, dr1), keep(ns, st1)), d
            init = (x, s_hat, jnp.zeros_like(x), jnp.zeros_like(x), state)
            (x_eul, _, d, _, new_state), ds = jax.lax.scan(evaluation, init, jnp.arange(2))
            slope = (x - d) / s_hat                                              # [n, d]
            slope2 = (x_eul - ds[1]) / jnp.where(s_next > 0, s_next, 1.0)        # [n, d]
            x_next = jnp.where(s_next > 0, x + (s_next - s_hat) * 0.5 * (slope + slope2), x_eul)
        else:
            d, d_r, new_state = denoise(x, s_hat, i, state)                     # [n, d] ×3
            # Euler: x_next = D̃ + σ_next·(x − D_r)/σ, i.e. x + (σ_next − σ)(x − D̃)/σ when D_r = D̃.
            x_next = d + (s_next / s_hat) * (x - d_r)                            # [n, d]
        ok = jnp.all(jnp.isfinite(x_next))
        first_bad = jnp.where((first_bad < 0) & ~ok, i, first_bad)
        if return_trajectory:
            traj, den = traj.at[i + 1].set(x_next), den.at[i].set(d)             # [T_b + 1, n, d], [T_b, n, d]
        return x_next, first_bad, new_state, traj, den

    T_b = scfg.steps
    traj = jnp.zeros((T_b + 1, n, dim), x_init.dtype).at[0].set(x_init) if return_trajectory else None
    den = jnp.zeros((T_b, n, dim), x_init.dtype) if return_trajectory else None
    x, first_bad, _, traj, den = jax.lax.fori_loop(
        0, steps, step, (x_init, jnp.int32(-1), jnp.zeros_like(x_init), traj, den))
    return x, first_bad, traj, den


@functools.partial(jax.jit, static_argnames=("gcfg", "scfg", "n", "dim", "return_trajectory", "mesh"))
def _sample_rows(main, weak, noise, scores, sigmas, steps, gamma, churn_key, label, runtime, *, gcfg: GuidanceConfig,
                 scfg: SamplerConfig, n: int, dim: int, return_trajectory: bool, mesh: jax.sharding.Mesh):
    """`_sample_jit` with the n rows split evenly over the mesh's devices, which run their shares side by
    side: every row's path depends on its own noise alone (the masks, σ schedule and λ, ω are shared),
    so each device runs the one-device program on its rows. The first non-finite step is the earliest
    over the shares."""
    none_bad = jnp.iinfo(jnp.int32).max

    def share(noise_rows):                                                       # [n / devices, d]
        x, first_bad, traj, den = _sample_jit(main, weak, noise_rows, scores, sigmas, steps, gamma, churn_key,
                                              label, runtime, gcfg=gcfg, scfg=scfg, n=n // mesh.size, dim=dim,
                                              return_trajectory=return_trajectory)
        first_bad = jax.lax.pmin(jnp.where(first_bad < 0, none_bad, first_bad), "rows")
        return x, jnp.where(first_bad == none_bad, -1, first_bad), traj, den
    rows, steps_rows = jax.sharding.PartitionSpec("rows"), jax.sharding.PartitionSpec(None, "rows")
    return jax.shard_map(share, mesh=mesh, in_specs=rows, out_specs=(rows, jax.sharding.PartitionSpec(),
                                                                     steps_rows, steps_rows),
                         check_vma=False)(noise)


# Up to this many numbers per state the trajectory is kept whether asked for or not: one compiled program
# then serves both kinds of call (writing it costs little next to the network), which saves a compile.
_ALWAYS_TRAJECTORY = 200_000


def sample(main, gcfg: GuidanceConfig, scfg: SamplerConfig, key: jax.Array, n: int, label: int, *,
           weak=None, dim: int | None = None, return_trajectory: bool = False) -> SampleResult:
    """Draw n guided samples of class `label` with one method.

    main, weak: denoisers `D(x, sigma, labels, mask=None)` (a `LearnedDenoiser` or `ExactDenoiser`);
    weak is needed by autoguidance only. Raises NonFiniteError naming the step and the method if the
    state stops being finite.
    """
    scfg = scfg.validate().fit(getattr(main, "sigma_data", None))
    gcfg = gcfg.validate(main.num_blocks)
    check_int("number of samples", n, low=1, high=10_000_000)
    if gcfg.spec.uses_weak and weak is None:
        if not hasattr(main, "weak"):
            raise ToyError(f"{gcfg.method} needs a weak model (train one with `python -m toy train`)")
        weak = main.weak()          # the exact denoiser's ideal weak model
    dim = dim if dim is not None else _dim_of(main)
    k_init, k_mask, k_churn = jax.random.split(key, 3)
    T, T_b = scfg.steps, draw_size(scfg.steps, 32)
    sigmas = scfg.sigmas()                                                       # [T + 1]
    sig_b = np.zeros(T_b + 1, np.float32)
    sig_b[:T + 1] = sigmas                                                       # [T_b + 1], zeros past the end
    noise = initial_noise(k_init, int(n), int(dim))                              # [n, d]
    scores = draw_mask_scores(k_mask, masks_drawn(gcfg), main.num_blocks, T_b)  # [T_b, N, K]
    # Everything of scfg but the bucket, the solver and churn's on/off and window is a runtime input.
    static = replace(scfg, steps=T_b, sigma_min=0.0, sigma_max=0.0, rho=0.0, churn=float(scfg.churn > 0))
    if scfg.churn == 0:
        static = replace(static, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0)
    keep = return_trajectory or n * dim <= _ALWAYS_TRAJECTORY
    mesh = rows_mesh(int(n), churn=scfg.churn > 0)         # both cores, where the rows split evenly
    run = _sample_jit if mesh is None else functools.partial(_sample_rows, mesh=mesh)
    x, first_bad, traj, den = run(main, weak if gcfg.spec.uses_weak else None, noise, scores,
                                  sig_b, jnp.int32(T), jnp.float32(min(scfg.churn / T, math.sqrt(2) - 1)),
                                  k_churn, jnp.int32(label), gcfg.runtime(main.num_blocks), gcfg=gcfg.static(),
                                  scfg=static, n=int(n), dim=int(dim), return_trajectory=keep)
    bad = int(first_bad)
    if bad >= 0:
        raise NonFiniteError(f"method {gcfg.method!r}: the sampler state became non-finite at step {bad} of "
                             f"{scfg.steps} (σ = {sigmas[bad]:.4g} → {sigmas[bad + 1]:.4g}) with λ = {gcfg.scale}, "
                             f"ω = {gcfg.s2_scale}; lower the scales or use more steps")
    if not return_trajectory:
        return SampleResult(x, None, None, sigmas)
    return SampleResult(x, np.asarray(traj)[:T + 1], np.asarray(den)[:T], sigmas)


def compiled_samplers() -> int:
    """How many sampler programs this process has compiled (one per method, shape and sampler
    config; runtime settings such as λ, ω or the number of dropped blocks never add one)."""
    return _sample_jit._cache_size() + _sample_rows._cache_size()


def _dim_of(denoiser) -> int:
    if hasattr(denoiser, "cfg"):
        return denoiser.cfg.dim
    return denoiser.mixture.dim
