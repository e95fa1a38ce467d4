"""Learned denoisers: a residual MLP with droppable blocks and EDM preconditioning.

Block k computes h ← h + m_k · f_k(h, emb); the mask m ∈ {0,1}^K selects a sub-network of the same
weights (paper Eq. 2). `m = 1` everywhere is the full network. `LearnedDenoiser` and `ExactDenoiser`
put a trained network and the closed-form truth behind one interface, D(x, σ, labels, mask).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toy import prefix
from toy.errors import ToyError
from toy.layers import LabelEmbedder, mask_column, noise_features, precondition


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2               # data dimension
    num_classes: int = 2       # the null class ∅ is the extra embedding row `num_classes`
    width: int = 64
    num_blocks: int = 8        # residual blocks; the droppable units
    fourier: int = 16          # Fourier features of the noise level
    sigma_data: float = 1.0    # EDM preconditioning constant, from the mixture

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build(self, seed: int = 0) -> "MLPDenoiser":
        """The network this config describes, initialised from `seed`."""
        return init_model(self, seed)


class Block(nnx.Module):
    """One residual unit f_k(h, emb): pre-norm, noise/class modulation, two linear layers."""

    def __init__(self, width: int, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, width, rngs=rngs)
        self.emb = nnx.Linear(width, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        return self.residual(h, self.emb(emb))                       # [n, W]

    def residual(self, h: jax.Array, e: jax.Array) -> jax.Array:
        """f_k from the already projected embedding e = emb_k(emb), [n, W] or broadcastable."""
        a = self.fc1(nnx.silu(self.norm(h))) + e                     # [n, W]
        return self.fc2(nnx.silu(a))                                 # [n, W]


class MLPDenoiser(nnx.Module):
    """D(x; σ, c, m) = c_skip·x + c_out·F(c_in·x; c_noise, c, m) with droppable residual blocks."""

    def __init__(self, cfg: MLPConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        W = cfg.width
        self.inp = nnx.Linear(cfg.dim, W, rngs=rngs)
        self.noise_emb = nnx.Linear(2 * cfg.fourier, W, rngs=rngs)
        self.label = LabelEmbedder(cfg.num_classes, W, rngs)             # last row: learned ∅
        self.blocks = nnx.List([Block(W, rngs) for _ in range(cfg.num_blocks)])
        self.out_norm = nnx.LayerNorm(W, rngs=rngs)
        # Zero output layer: at init D = c_skip·x, the best linear guess for unit-variance data.
        self.out = nnx.Linear(W, cfg.dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def embed(self, sigma: jax.Array, labels: jax.Array) -> jax.Array:
        """Noise-level and class embedding, [n, W]."""
        fourier = noise_features(sigma, self.cfg.fourier)                    # [n, 2F]
        return nnx.silu(self.noise_emb(fourier) + self.label(labels))        # [n, W]

    # The network in three stages, so that guidance can share a prefix of blocks between passes
    # (toy/prefix.py): stem → blocks (each h ← h + f_k(h)) → head.
    def stem(self, x: jax.Array, sigma: jax.Array, labels: jax.Array) -> tuple[jax.Array, tuple]:
        """h_0 and the context (embedding, preconditioning) the blocks and head need."""
        n = x.shape[0]
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))      # [n]
        if jnp.ndim(sigma) == 0:
            # One σ for every row, as in the sampler: the embedding takes only C + 1 values, so embed
            # each class once and let every block project C + 1 rows instead of n (a third of a
            # block's matmul work), then pick each row's projection by its label.
            C1 = self.cfg.num_classes + 1
            emb = prefix.Shared(self.embed(jnp.full((C1,), sigma, x.dtype), jnp.arange(C1)))   # [C+1, W]
        else:
            emb = self.embed(jnp.asarray(sigma, x.dtype), labels)            # [n, W]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (n,))          # [n]
        c_in = precondition(sigma, self.cfg.sigma_data)[2]                   # [n]
        return self.inp(c_in[:, None] * x), (emb, labels, x, sigma)          # [n, W]

    def block(self, k: int, h: jax.Array, ctx: tuple) -> jax.Array:
        """f_k(h): the residual of block k (a dropped block contributes 0)."""
        emb, labels = ctx[0], ctx[1]
        blk = self.blocks[k]
        if isinstance(emb, prefix.Shared):
            return blk.residual(h, blk.emb(emb.value)[labels])               # [C+1, W] → [n, W]
        return blk(h, emb)                                                   # [n, W]

    def head(self, h: jax.Array, ctx: tuple) -> jax.Array:
        """D = c_skip·x + c_out·F from the last activation."""
        x, sigma = ctx[2], ctx[3]
        c_skip, c_out, _ = precondition(sigma, self.cfg.sigma_data)          # [n] ×2
        F = self.out(nnx.silu(self.out_norm(h)))                             # [n, d]
        return c_skip[:, None] * x + c_out[:, None] * F                      # [n, d]

    def __call__(self, x: jax.Array, sigma: jax.Array, labels: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        """x: [n, d]; sigma: scalar or [n]; labels: [n] ints (num_classes = ∅);
        mask: None (full network), [K] or [n, K] with mask[k] = 0 replacing block k by identity."""
        n = x.shape[0]
        h, ctx = self.stem(x, sigma, labels)                                 # [n, W]
        for k in range(len(self.blocks)):
            f = self.block(k, h, ctx)                                        # [n, W]
            h = h + (f if mask is None else mask_column(mask, k, n, f.dtype) * f)    # [n, W]
        return self.head(h, ctx)                                             # [n, d]


def init_model(cfg: MLPConfig, seed: int = 0) -> MLPDenoiser:
    if cfg.num_blocks < 1 or cfg.width < 1 or cfg.dim < 1 or cfg.num_classes < 1:
        raise ToyError(f"MLPConfig needs positive dim, num_classes, width and num_blocks, got {cfg}")
    return MLPDenoiser(cfg, nnx.Rngs(seed))


def param_count(model: nnx.Module) -> int:
    state = nnx.state(model, nnx.Param)
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state)))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"], meta_fields=["graphdef", "cfg"])
@dataclass(frozen=True, eq=False)
class LearnedDenoiser:
    """A trained network as a pure function of arrays: graphdef is static, params are data.

    Calling it merges the two (cheap under jit) so guidance and samplers treat learned and exact
    denoisers alike: `D(x, sigma, labels, mask=None)`.
    """

    graphdef: nnx.GraphDef
    params: nnx.State
    cfg: MLPConfig              # or a toy.images.dit.DiTConfig: anything with dim, num_blocks, num_classes

    @classmethod
    def from_model(cls, model: MLPDenoiser) -> "LearnedDenoiser":
        graphdef, params = nnx.split(model)
        return cls(graphdef, params, model.cfg)

    @property
    def num_blocks(self) -> int:
        return self.cfg.num_blocks

    @property
    def null_label(self) -> int:
        return self.cfg.num_classes

    @property
    def sigma_data(self) -> float:
        return self.cfg.sigma_data

    def __call__(self, x, sigma, labels, mask=None, *, params=None):
        model = nnx.merge(self.graphdef, self.params if params is None else params)
        return model(x, sigma, labels, mask)

    def guided_passes(self, x, sigma, null, label, masks, *, shared_prefix: bool = True, active=None):
        """(D_∅, D_c, D̂_c(m_i) [N, …]) for masks [N, K]; the sub-passes start from the conditional
        pass's activations (toy/prefix.py) unless shared_prefix is False, and are skipped (D̂ = D_c)
        where the traced bool `active` is False."""
        model = nnx.merge(self.graphdef, self.params)
        fn = prefix.guided_passes if shared_prefix else prefix.guided_passes_plain
        return fn(model, x, sigma, null, label, masks, active)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["blur", "ideal_blur"], meta_fields=["mixture"])
@dataclass(frozen=True, eq=False)
class ExactDenoiser:
    """The closed-form D of a ConditionalMixture behind the same interface. It has no blocks to drop:
    where a method needs a weaker prediction (S²'s sub-network, Autoguidance's weak model) it gets the
    ideal weak model, the truth blurred by δ = `ideal_blur` (`ConditionalMixture.blurred`)."""

    mixture: object            # ConditionalMixture
    blur: float = 0.0          # this denoiser's own δ: 0 is the truth itself
    ideal_blur: float = 1.0    # δ of the ideal weak model (a runtime value: moving it never recompiles)

    num_blocks = 0

    @property
    def null_label(self) -> int:
        return self.mixture.null_label

    @property
    def sigma_data(self) -> float:
        return self.mixture.sigma_data()

    def __call__(self, x, sigma, labels, mask=None, *, params=None):
        return self.mixture.denoise(x, sigma, labels, self.blur)

    def weak(self) -> "ExactDenoiser":
        """The ideal weak model: the truth blurred by `ideal_blur` (Autoguidance's weak model on the exact denoiser)."""
        return ExactDenoiser(self.mixture, self.ideal_blur, self.ideal_blur)

    def guided_passes(self, x, sigma, null, label, masks, *, shared_prefix: bool = True, active=None):
        """(D_∅, D_c, D^δ_c [N, …]): the ideal weak model stands in for every sub-network (masks [N, K]
        only fix N); where the traced bool `active` is False, D_c stands in."""
        n, N = x.shape[0], masks.shape[0]
        d = self(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))     # [2n, d]
        d_cond = d[n:]
        if active is None:
            sub = self.mixture.denoise(x, sigma, label, self.ideal_blur)               # [n, d]
        else:
            sub = jax.lax.cond(active, lambda _: self.mixture.denoise(x, sigma, label, self.ideal_blur),
                               lambda _: d_cond, None)
        return d[:n], d_cond, jnp.broadcast_to(sub, (N,) + sub.shape)
