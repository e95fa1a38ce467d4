"""Pieces every denoiser shares: EDM preconditioning, the noise-level features, the block mask and
the null class.

The MLP of `toy.nets` and the DiT of `toy.images.dit` both build on these, so the two networks agree
on how σ enters, how a dropped block is masked and how the unconditional model is trained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def precondition(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """EDM's (c_skip, c_out, c_in) at noise level σ [n] (Karras et al. 2022, Table 1):
    D(x; σ) = c_skip·x + c_out·F(c_in·x), each factor chosen so F's input and target have unit variance."""
    var = sigma**2 + sigma_data**2                                     # [n]
    return sigma_data**2 / var, sigma * sigma_data / jnp.sqrt(var), 1 / jnp.sqrt(var)


# One frequency range for every network: c_noise = ln(σ)/4 spans about [−1.6, 1.1] over the sampler's
# σ ∈ [0.002, 80], and frequencies 2^-1 … 2^4 cycles per unit resolve that span from coarse to fine.
FOURIER_OCTAVES = (-1.0, 4.0)


def noise_features(sigma: jax.Array, num: int) -> jax.Array:
    """Fourier features of c_noise = ln(σ)/4: [n] → [n, 2·num] (cos, sin)."""
    freqs = 2.0 ** jnp.linspace(*FOURIER_OCTAVES, num, dtype=sigma.dtype)   # [F]
    ang = (jnp.log(sigma) / 4)[:, None] * freqs * (2 * jnp.pi)               # [n, F]
    return jnp.concatenate([jnp.cos(ang), jnp.sin(ang)], axis=-1)            # [n, 2F]


def mask_column(mask: jax.Array, k: int, n: int, dtype) -> jax.Array:
    """m_k as an [n, 1] column from a [K] or [n, K] block mask (paper Eq. 2)."""
    mask = jnp.asarray(mask)
    col = mask[k] if mask.ndim == 1 else mask[:, k]                          # [] or [n]
    return jnp.broadcast_to(col, (n,)).astype(dtype)[:, None]               # [n, 1]


def drop_labels(labels: jax.Array, key: jax.Array, p: float, null: int) -> jax.Array:
    """Each label replaced by ∅ (`null`) with probability p: how one network learns both D_c and D_∅."""
    return jnp.where(jax.random.uniform(key, labels.shape) < p, null, labels)


class LabelEmbedder(nnx.Module):
    """Class labels → [n, width]. The extra last row is the learned null class ∅ (label `num_classes`)."""

    def __init__(self, num_classes: int, width: int, rngs: nnx.Rngs):
        self.null = num_classes
        self.table = nnx.Embed(num_classes + 1, width, rngs=rngs)

    def __call__(self, labels: jax.Array) -> jax.Array:
        return self.table(labels)                                            # [n, width]
