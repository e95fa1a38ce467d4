"""FLOPs of one guided sampler evaluation of each method, counted from the network's own program.

`dot_flops` reads the lowered (StableHLO) program of a function and adds 2 × (output size) ×
(contracted size) over its matrix products: the floating-point work that dominates these networks,
counted exactly as a hand count would (tested on a small network). `stage_flops` counts the stem,
each block and the head of the real network at n rows (one σ for every row, as in the sampler);
`step_flops` composes them into one guided evaluation of a method, with S²'s sub-network passes
starting at their first dropped block (the shared prefix) and averaged over the masks S² draws.
"""

from __future__ import annotations

import itertools
import math
import re

import jax
import jax.numpy as jnp

from toy.guidance import REGISTRY, GuidanceConfig, droppable_blocks, num_dropped

_DOT = re.compile(r"stablehlo\.dot_general\b.*?contracting_dims\s*=\s*\[([\d, ]*)\]\s*x\s*\[[\d, ]*\].*?:\s*"
                  r"\(tensor<([^>]*)>,\s*tensor<[^>]*>\)\s*->\s*tensor<([^>]*)>")


def _shape(t: str) -> list[int]:
    return [int(v) for v in t.split("x")[:-1]]          # "128x8xf32" → [128, 8]


def dot_flops(fn, *args) -> int:
    """2 × output size × contracted size, summed over every matrix product of fn's program."""
    text = jax.jit(fn).lower(*args).as_text()
    total = 0
    for contract, lhs, out in _DOT.findall(text):
        dims = [int(d) for d in contract.split(",") if d.strip()]
        lhs_shape = _shape(lhs)
        total += 2 * math.prod(_shape(out)) * math.prod(lhs_shape[d] for d in dims)
    return total


def stage_flops(denoiser, n: int) -> dict:
    """Matrix-product FLOPs of the stem, each block and the head of a LearnedDenoiser at n rows."""
    from flax import nnx
    model = nnx.merge(denoiser.graphdef, denoiser.params)
    dim = denoiser.cfg.dim
    x, labels, sigma = jnp.zeros((n, dim)), jnp.zeros(n, jnp.int32), jnp.float32(1.0)
    h, ctx = model.stem(x, sigma, labels)
    out = {"stem": dot_flops(lambda x: model.stem(x, sigma, labels), x),
           "blocks": [dot_flops(lambda h, k=k: model.block(k, h, ctx), h) for k in range(len(model.blocks))],
           "head": dot_flops(lambda h: model.head(h, ctx), h)}
    out["forward"] = out["stem"] + sum(out["blocks"]) + out["head"]
    return out


def _sub_pass(stages: dict, mask: tuple[int, ...]) -> int:
    """A sub-network pass from the shared prefix: the kept blocks after the first dropped one, and the head."""
    j = mask.index(0) if 0 in mask else len(mask)
    return sum(f for k, f in enumerate(stages["blocks"]) if k > j and mask[k]) + stages["head"]


def step_flops(method: str, main, weak, n: int, gcfg: GuidanceConfig = GuidanceConfig()) -> float:
    """Expected matrix-product FLOPs of one guided evaluation of `method` on n samples."""
    one, two = stage_flops(main, n), stage_flops(main, 2 * n)
    spec, K = REGISTRY[method], main.num_blocks
    if spec.needs == ("cond",):
        return one["forward"]
    if "weak" in spec.needs:
        return one["forward"] + stage_flops(weak, n)["forward"]
    total = two["forward"]                                  # the batched (∅, c) pass
    if not spec.drops_blocks:
        return total
    if method == "fixed-block":
        mask = tuple(0 if k in gcfg.fixed_blocks else 1 for k in range(K))
        return total + _sub_pass(one, mask)
    k_drop = num_dropped(K, gcfg.exclude, gcfg.drop_ratio, gcfg.num_drop)
    masks = [tuple(0 if k in drop else 1 for k in range(K))
             for drop in itertools.combinations(droppable_blocks(K, gcfg.exclude), k_drop)]   # uniform over these
    per_pass = sum(_sub_pass(one, m) for m in masks) / len(masks)
    return total + (gcfg.num_masks if method == "s2-naive" else 1) * per_pass
