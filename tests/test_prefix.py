"""Shared-prefix evaluation (toy/prefix.py) equals plain recomputation, for every mask and method."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy import prefix
from toy.guidance import MASK_METHODS, METHODS, GuidanceConfig, guided_step, mask_scores, masks_drawn
from toy.nets import LearnedDenoiser, MLPConfig, init_model


def mlp(K=5, seed=0):
    model = init_model(MLPConfig(dim=2, width=16, num_blocks=K), seed)
    model.out.kernel[...] = jax.random.normal(jax.random.key(seed + 1), model.out.kernel[...].shape) * 0.3
    return LearnedDenoiser.from_model(model)


def all_masks(K):
    """Every mask of K blocks (2^K), including all-ones and all-zeros."""
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=K)), jnp.float32)         # [2^K, K]


def check_every_mask(net, x, sigma, null, label, masks, atol):
    run = jax.jit(lambda ms, shared: net.guided_passes(x, sigma, null, label, ms, shared_prefix=shared),
                  static_argnums=1)
    du, dc, subs = run(masks, True)                                               # one program for all masks
    du0, dc0, subs0 = run(masks, False)
    np.testing.assert_allclose(du, du0, atol=atol)
    np.testing.assert_allclose(dc, dc0, atol=atol)
    np.testing.assert_allclose(subs, subs0, atol=atol)
    # and each against the network called on its own with that mask (jitted: one program, not one per operation)
    alone = jax.jit(lambda m: net(x, sigma, label, m))
    for i in (0, len(masks) // 3, len(masks) - 1):
        np.testing.assert_allclose(subs[i], alone(masks[i]), atol=atol)
    return subs, dc


def test_mlp_every_mask_equals_recomputation():
    net, K, n = mlp(), 5, 7
    x = jax.random.normal(jax.random.key(2), (n, 2)) * 2
    label, null = jnp.arange(n) % 2, jnp.full((n,), net.null_label)
    masks = all_masks(K)
    subs, dc = check_every_mask(net, x, jnp.float32(0.7), null, label, masks, atol=2e-5)
    np.testing.assert_allclose(subs[-1], dc, atol=2e-5)              # all-ones mask: the full network
    assert not np.allclose(subs[0], dc, atol=1e-3)                   # all-zeros: a different network


def test_first_dropped():
    assert int(prefix.first_dropped(jnp.asarray([1, 1, 0, 1, 0.]))) == 2
    assert int(prefix.first_dropped(jnp.asarray([0, 1, 1.]))) == 0
    assert int(prefix.first_dropped(jnp.ones(4))) == 4


@pytest.mark.parametrize("method", METHODS)
def test_every_method_same_with_and_without_shared_prefix(method):
    net, n = mlp(K=6, seed=3), 9
    x = jax.random.normal(jax.random.key(4), (n, 2)) * 2
    label = jnp.ones(n, jnp.int32)
    outs = []
    for shared in (True, False):
        g = GuidanceConfig(method=method, scale=2.5, s2_scale=0.5, num_drop=2, num_masks=3, interval=(0, 1),
                           fixed_blocks=(2, 4), shared_prefix=shared).validate(net.num_blocks)
        step = jax.jit(lambda x, key, g=g: guided_step(g.static(), net, net, x, jnp.float32(1.1), label,
                                                        mask_scores(key, max(1, masks_drawn(g)), net.num_blocks),
                                                        jnp.float32(0.5), g.runtime(net.num_blocks),
                                                        jnp.zeros_like(x), 3)[0])
        outs.append([step(x, jax.random.key(k)) for k in range(4)])
    np.testing.assert_allclose(np.stack(outs[0]), np.stack(outs[1]), atol=3e-5)
    if method in MASK_METHODS:      # the sub-network term is really there
        g = GuidanceConfig(method="cfg", scale=2.5).validate()
        d_cfg = guided_step(g, net, net, x, jnp.float32(1.1), label, jnp.zeros((0, net.num_blocks)), jnp.float32(0.5),
                            g.runtime(net.num_blocks), jnp.zeros_like(x), 3)[0]
        assert not np.allclose(outs[0][0], d_cfg, atol=1e-4)


def dit(seed=0):
    from test_dit import randomized
    return LearnedDenoiser.from_model(randomized(seed=seed))


def test_dit_every_mask_equals_recomputation():
    net, n = dit(), 4
    x = jax.random.normal(jax.random.key(2), (n, 64))
    label, null = jnp.arange(n) % 2, jnp.full((n,), net.null_label)
    subs, dc = check_every_mask(net, x, jnp.float32(0.9), null, label, all_masks(3), atol=3e-5)
    np.testing.assert_allclose(subs[-1], dc, atol=3e-5)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_dit_mask_methods_same_with_and_without_shared_prefix(method):
    net, n = dit(1), 3
    x = jax.random.normal(jax.random.key(4), (n, 64))
    label = jnp.ones(n, jnp.int32)
    outs = []
    for shared in (True, False):
        g = GuidanceConfig(method=method, scale=2.5, s2_scale=0.5, num_drop=1, num_masks=3, interval=(0, 1),
                           fixed_blocks=(1,), shared_prefix=shared).validate(net.num_blocks)
        step = jax.jit(lambda key, g=g: guided_step(g.static(), net, net, x, jnp.float32(1.1), label,
                                                     mask_scores(key, max(1, masks_drawn(g)), net.num_blocks),
                                                     jnp.float32(0.5), g.runtime(net.num_blocks), jnp.zeros_like(x), 3)[0])
        outs.append([step(jax.random.key(k)) for k in range(2)])
    np.testing.assert_allclose(np.stack(outs[0]), np.stack(outs[1]), atol=3e-5)
