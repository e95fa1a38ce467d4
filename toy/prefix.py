"""Shared-prefix evaluation of the guided passes.

S² needs D_∅, D_c and the sub-network prediction D̂_c(m) at the same (x, σ). A sub-network whose
first dropped block is j computes exactly what the full conditional pass computes before block j,
so it can start from the conditional pass's activation h_j instead of recomputing blocks 0..j−1,
and it can skip its dropped blocks instead of multiplying them by 0.

Any model with the three stages below works (the MLP in toy/nets.py, the DiT in toy/images/dit.py):

    h, ctx = model.stem(x, sigma, labels)        # h_0 and context (embeddings, x, σ; prefix.Shared: all rows)
    f = model.block(k, h, ctx)                   # residual of block k: h_{k+1} = h_k + m_k·f
    d = model.head(h, ctx)                       # the prediction D from h_K

The mask is a runtime value, so one compiled program serves every mask: each block of a sub-pass
is a `lax.switch` between "copy the conditional activation" (k < j), "identity" (dropped) and
"compute" (kept, k > j). With one mask per step (S²) the predicate is a scalar and the skipped
branches cost nothing; the N masks of naive S² run one after another (`lax.map`), each with its
own prefix.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Shared(NamedTuple):
    """A context entry common to every row (e.g. an embedding table): kept whole when rows are split."""
    value: Any


def _rows(tree, start: int, stop: int | None = None):
    """The rows start:stop of every per-row array in a context; Shared entries stay whole."""
    return jax.tree_util.tree_map(lambda a: a if isinstance(a, Shared) else a[start:stop] if jnp.ndim(a) > 0 else a,
                                  tree, is_leaf=lambda a: isinstance(a, Shared))


def first_dropped(mask: jax.Array) -> jax.Array:
    """Index of the first zero of a [K] mask, K when none is dropped."""
    K = mask.shape[0]
    return jnp.min(jnp.where(mask > 0, K, jnp.arange(K)))


def staged_forward(model, x: jax.Array, sigma, labels: jax.Array) -> tuple[jax.Array, list, tuple]:
    """The full network, keeping every block input: returns (D, [h_0 … h_K], ctx)."""
    h, ctx = model.stem(x, sigma, labels)
    hs = [h]
    for k in range(len(model.blocks)):
        h = h + model.block(k, h, ctx)
        hs.append(h)
    return model.head(h, ctx), hs, ctx


def sub_from_prefix(model, hs: list, ctx: tuple, mask: jax.Array) -> jax.Array:
    """D̂(m) from the full pass's activations hs = [h_0 … h_K] (same rows, same ctx)."""
    K = len(model.blocks)
    j = first_dropped(mask)
    h = hs[0]
    for k in range(K):
        branch = jnp.where(k < j, 0, jnp.where(mask[k] > 0, 2, 1))
        h = jax.lax.switch(branch, [lambda h, k=k: hs[k + 1],                       # shared prefix
                                    lambda h: h,                                     # dropped: identity
                                    lambda h, k=k: h + model.block(k, h, ctx)], h)   # kept, after j
    return model.head(h, ctx)


def _maybe(active, compute, skipped):
    """compute() where `active` (a traced bool) holds, else skipped(): one lax.cond, or a plain call."""
    if active is None:
        return compute()
    return jax.lax.cond(active, lambda _: compute(), lambda _: skipped(), None)


def guided_passes(model, x: jax.Array, sigma, null: jax.Array, label: jax.Array,
                  masks: jax.Array, active=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(D_∅ [n, …], D_c [n, …], D̂_c(m_i) [N, n, …]) with the sub-passes sharing D_c's prefix.

    masks: [N, K]. D_∅ and D_c are one batched pass of 2n rows. `active` (a traced bool, optional):
    where it is False the sub-passes are skipped and D̂_c(m_i) = D_c (so S² reduces to CFG)."""
    n, N = x.shape[0], masks.shape[0]
    d, hs, ctx = staged_forward(model, jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))
    hs_c, ctx_c = [h[n:] for h in hs], _rows(ctx, n)
    d_cond = d[n:]

    def subs():
        if N == 1:       # S²: one mask, no loop around it
            return sub_from_prefix(model, hs_c, ctx_c, masks[0])[None]               # [1, n, …]
        return jax.lax.map(lambda m: sub_from_prefix(model, hs_c, ctx_c, m), masks)  # [N, n, …]
    return d[:n], d_cond, _maybe(active, subs, lambda: jnp.broadcast_to(d_cond, (N,) + d_cond.shape))


def guided_passes_plain(model, x: jax.Array, sigma, null: jax.Array, label: jax.Array,
                        masks: jax.Array, active=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The same three predictions by plain recomputation: every block computed for every row of the
    N sub-passes and multiplied by its mask entry. The reference for the tests and bench."""
    n, N = x.shape[0], masks.shape[0]
    d = model(jnp.concatenate([x, x]), sigma, jnp.concatenate([null, label]))      # [2n, …]
    d_cond = d[n:]

    def subs():
        row_masks = jnp.repeat(masks, n, axis=0)                                    # [Nn, K]
        out = model(jnp.concatenate([x] * N), sigma, jnp.concatenate([label] * N), row_masks)   # [Nn, …]
        return out.reshape((N, n) + out.shape[1:])
    return d[:n], d_cond, _maybe(active, subs, lambda: jnp.broadcast_to(d_cond, (N,) + d_cond.shape))
