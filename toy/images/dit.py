"""A class-conditional DiT (Peebles & Xie 2023) in Flax NNX with droppable blocks.

The same interface as the MLP of toy/nets.py: D(x; σ, c, m) = c_skip·x + c_out·F(c_in·x; σ, c, m)
on flat images x [n, H·W·C], so every guidance method, sampler and metric of the core runs on it
unchanged. Block k is one transformer block with adaLN-Zero conditioning; m_k = 0 makes it the
identity (paper Eq. 2). The stages stem/block/head serve the shared-prefix evaluation (toy/prefix.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from toy.errors import ToyError
from toy.layers import LabelEmbedder, mask_column, noise_features, precondition


@dataclass(frozen=True)
class DiTConfig:
    image_size: int = 8        # H = W
    channels: int = 1
    patch: int = 2
    width: int = 64
    depth: int = 4             # transformer blocks; the droppable units
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 2       # the null class ∅ is the extra label-table row `num_classes`
    fourier: int = 32          # Fourier features of the noise level
    sigma_data: float = 0.5

    @property
    def dim(self) -> int:      # flat image size: the sampler and guidance see [n, dim]
        return self.image_size * self.image_size * self.channels

    @property
    def num_blocks(self) -> int:
        return self.depth

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def validate(self) -> "DiTConfig":
        for k in ("image_size", "channels", "patch", "width", "depth", "heads", "num_classes", "fourier"):
            if int(getattr(self, k)) < 1:
                raise ToyError(f"DiTConfig.{k} must be >= 1, got {getattr(self, k)}")
        if self.image_size % self.patch:
            raise ToyError(f"DiTConfig.patch ({self.patch}) must divide image_size ({self.image_size})")
        if self.width % self.heads:
            raise ToyError(f"DiTConfig.heads ({self.heads}) must divide width ({self.width})")
        return self

    def to_dict(self) -> dict:
        return {"arch": "dit", **dataclasses.asdict(self)}

    def build(self, seed: int = 0) -> "DiT":
        """The network this config describes, initialised from `seed`."""
        return init_dit(self, seed)


# A registry of sizes: XXS (tests), XS and S fit a 2-core CPU on 8×8 digits / 32×32 CIFAR; S/2 and B/2 are the
# paper-scale GPU models on CIFAR (DiT-S/2, DiT-B/2 of Peebles & Xie).
DIT_SIZES = {
    "XXS": dict(width=32, depth=4, heads=2, patch=2, mlp_ratio=2.0),   # tests and --quick
    "XS": dict(width=64, depth=6, heads=4, patch=2),
    "S": dict(width=128, depth=8, heads=4, patch=4),
    "S/2": dict(width=384, depth=12, heads=6, patch=2),
    "B/2": dict(width=768, depth=12, heads=12, patch=2),
}


def dit_config(size: str, **kw) -> DiTConfig:
    if size not in DIT_SIZES:
        raise ToyError(f"unknown DiT size {size!r}: choose from {', '.join(DIT_SIZES)}")
    return DiTConfig(**{**DIT_SIZES[size], **kw}).validate()


# -- embedders ----------------------------------------------------------------------------------

class PatchEmbed(nnx.Module):
    """[n, H, W, C] → [n, T, width] with a linear map of each p×p patch."""

    def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
        self.p = cfg.patch
        self.proj = nnx.Linear(cfg.patch * cfg.patch * cfg.channels, cfg.width, rngs=rngs)

    def __call__(self, img: jax.Array) -> jax.Array:
        n, H, W, C = img.shape
        p = self.p
        x = img.reshape(n, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)      # [n, H/p, W/p, p, p, C]
        return self.proj(x.reshape(n, (H // p) * (W // p), p * p * C))             # [n, T, width]


class NoiseEmbedder(nnx.Module):
    """c_noise = ln(σ)/4 → Fourier features → two-layer MLP, [n, width]."""

    def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
        self.fourier = cfg.fourier
        self.fc1 = nnx.Linear(2 * cfg.fourier, cfg.width, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.width, cfg.width, rngs=rngs)

    def __call__(self, sigma: jax.Array) -> jax.Array:
        f = noise_features(sigma, self.fourier)                                    # [n, 2F]
        return self.fc2(nnx.silu(self.fc1(f)))                                     # [n, width]


def sincos_2d(width: int, grid: int) -> np.ndarray:
    """Fixed 2D sine-cosine position embedding (as in DiT/MAE), [grid², width]."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / max(quarter, 1))                   # [w/4]
    yy, xx = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    parts = []
    for pos in (yy.ravel(), xx.ravel()):
        a = pos[:, None] * omega[None]                                             # [T, w/4]
        parts += [np.sin(a), np.cos(a)]
    emb = np.concatenate(parts, axis=1)                                            # [T, 4·(w/4)]
    return np.pad(emb, ((0, 0), (0, width - emb.shape[1]))).astype(np.float32)


# -- the transformer ----------------------------------------------------------------------------

def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale[:, None]) + shift[:, None]                               # [n, T, W]


class Attention(nnx.Module):
    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, T, W = x.shape
        h = self.heads
        q, k, v = jnp.split(self.qkv(x).reshape(n, T, 3, h, W // h), 3, axis=2)    # [n, T, 1, h, W/h] ×3
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]                               # [n, T, h, W/h]
        att = jnp.einsum("nthd,nshd->nhts", q, k) / np.sqrt(W // h)               # [n, h, T, T]
        out = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(att, axis=-1), v)       # [n, T, h, W/h]
        return self.proj(out.reshape(n, T, W))                                     # [n, T, W]


class DiTBlock(nnx.Module):
    """h ← h + f(h, c) with f = g₁·Attn(mod(LN h)) + g₂·MLP(mod(LN(h + g₁·Attn(…)))): adaLN-Zero."""

    def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
        W = cfg.width
        self.norm1 = nnx.LayerNorm(W, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        self.attn = Attention(W, cfg.heads, rngs)
        self.norm2 = nnx.LayerNorm(W, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        hidden = int(W * cfg.mlp_ratio)
        self.fc1 = nnx.Linear(W, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, W, rngs=rngs)
        self.ada = nnx.Linear(W, 6 * W, rngs=rngs)          # shift, scale, gate for attention and MLP

    def residual(self, h: jax.Array, c: jax.Array) -> jax.Array:
        """f(h, c), so that the block is h + f and a dropped block is h."""
        sh1, sc1, g1, sh2, sc2, g2 = jnp.split(self.ada(nnx.silu(c)), 6, axis=-1)  # [n, W] ×6
        a = g1[:, None] * self.attn(modulate(self.norm1(h), sh1, sc1))             # [n, T, W]
        m = self.fc2(nnx.gelu(self.fc1(modulate(self.norm2(h + a), sh2, sc2))))    # [n, T, W]
        return a + g2[:, None] * m                                                 # [n, T, W]


class FinalLayer(nnx.Module):
    def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(cfg.width, use_scale=False, use_bias=False, epsilon=1e-6, rngs=rngs)
        self.ada = nnx.Linear(cfg.width, 2 * cfg.width, rngs=rngs)
        self.out = nnx.Linear(cfg.width, cfg.patch * cfg.patch * cfg.channels, rngs=rngs)

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.ada(nnx.silu(c)), 2, axis=-1)                # [n, W] ×2
        return self.out(modulate(self.norm(h), shift, scale))                      # [n, T, p·p·C]


class DiT(nnx.Module):
    def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
        self.cfg = cfg.validate()
        self.patch = PatchEmbed(cfg, rngs)
        self.noise = NoiseEmbedder(cfg, rngs)
        self.label = LabelEmbedder(cfg.num_classes, cfg.width, rngs)   # owns the null row ∅
        self.blocks = nnx.List([DiTBlock(cfg, rngs) for _ in range(cfg.depth)])
        self.final = FinalLayer(cfg, rngs)
        self._initialize(rngs)

    def _initialize(self, rngs: nnx.Rngs) -> None:
        """All initialisation in one place: Xavier-uniform linears, N(0, 0.02) embeddings, and
        adaLN-Zero — every block's modulation and the output layer start at zero, so at init each
        block is the identity and D(x) = c_skip·x."""
        xavier, zeros = nnx.initializers.xavier_uniform(), nnx.initializers.zeros
        for path, mod in nnx.iter_graph(self):
            if isinstance(mod, nnx.Linear):
                mod.kernel[...] = xavier(rngs.params(), mod.kernel[...].shape)
                mod.bias[...] = jnp.zeros_like(mod.bias[...])
        self.label.table.embedding[...] = 0.02 * jax.random.normal(rngs.params(), self.label.table.embedding[...].shape)
        for lin in [b.ada for b in self.blocks] + [self.final.ada, self.final.out]:
            lin.kernel[...] = zeros(rngs.params(), lin.kernel[...].shape)

    # The stages used by toy/prefix.py: stem → blocks → head.
    def stem(self, x: jax.Array, sigma: jax.Array, labels: jax.Array) -> tuple[jax.Array, tuple]:
        cfg = self.cfg
        n = x.shape[0]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (n,))                # [n]
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))            # [n]
        c_in = precondition(sigma, cfg.sigma_data)[2]                              # [n]
        img = (c_in[:, None] * x).reshape(n, cfg.image_size, cfg.image_size, cfg.channels)   # [n, H, W, C]
        pos = jnp.asarray(sincos_2d(cfg.width, cfg.image_size // cfg.patch), x.dtype)        # [T, W]
        h = self.patch(img) + pos[None]                                            # [n, T, W]
        c = self.noise(sigma) + self.label(labels)                                 # [n, W]
        return h, (c, x, sigma)

    def block(self, k: int, h: jax.Array, ctx: tuple) -> jax.Array:
        return self.blocks[k].residual(h, ctx[0])                                  # [n, T, W]

    def head(self, h: jax.Array, ctx: tuple) -> jax.Array:
        c, x, sigma = ctx
        cfg, p = self.cfg, self.cfg.patch
        n, g = x.shape[0], cfg.image_size // cfg.patch
        out = self.final(h, c).reshape(n, g, g, p, p, cfg.channels)                # [n, g, g, p, p, C]
        F = out.transpose(0, 1, 3, 2, 4, 5).reshape(n, -1)                         # [n, H·W·C]
        c_skip, c_out, _ = precondition(sigma, cfg.sigma_data)                     # [n] ×2
        return c_skip[:, None] * x + c_out[:, None] * F                            # [n, d]

    def __call__(self, x: jax.Array, sigma: jax.Array, labels: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        """x: [n, H·W·C] flat images; sigma scalar or [n]; labels [n] (num_classes = ∅);
        mask None, [K] or [n, K] (mask[k] = 0: block k is the identity)."""
        n = x.shape[0]
        h, ctx = self.stem(x, sigma, labels)
        for k in range(len(self.blocks)):
            f = self.block(k, h, ctx)                                              # [n, T, W]
            h = h + (f if mask is None else mask_column(mask, k, n, f.dtype)[:, :, None] * f)
        return self.head(h, ctx)


def init_dit(cfg: DiTConfig, seed: int = 0) -> DiT:
    return DiT(cfg, nnx.Rngs(seed))
