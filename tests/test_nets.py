"""The block-droppable MLP: parameter count, masks, preconditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toy.nets import LearnedDenoiser, MLPConfig, init_model, param_count


def inputs(n=8, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(scale=3, size=(n, d)), jnp.float32)
    sigma = jnp.asarray(np.exp(rng.normal(size=n)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, size=n))
    return x, sigma, labels


def trained_like(cfg, seed=0):
    """A model with a non-zero output layer, so every block affects D."""
    model = init_model(cfg, seed)
    model.out.kernel[...] = jax.random.normal(jax.random.key(seed + 1), model.out.kernel[...].shape) * 0.3
    return model


def test_parameter_count_is_pinned():
    # input 2·64+64, noise 32·64+64, class 3·64, 8 blocks × (LN 128 + 3 linears 3·(64·64+64)), LN 128, out 64·2+2
    expected = (2 * 64 + 64) + (32 * 64 + 64) + 3 * 64 + 8 * (128 + 3 * (64 * 64 + 64)) + 128 + (64 * 2 + 2)
    assert param_count(init_model(MLPConfig())) == expected == 103618


def test_output_is_c_skip_x_at_init():
    cfg = MLPConfig(sigma_data=2.0)
    x, sigma, labels = inputs()
    out = init_model(cfg)(x, sigma, labels)
    np.testing.assert_allclose(out, (4 / (sigma**2 + 4))[:, None] * x, rtol=1e-6)


def test_all_ones_mask_is_the_full_network():
    model = trained_like(MLPConfig())
    x, sigma, labels = inputs()
    full = model(x, sigma, labels)
    np.testing.assert_array_equal(model(x, sigma, labels, jnp.ones(8)), full)
    np.testing.assert_array_equal(model(x, sigma, labels, jnp.ones((8, 8))), full)


@pytest.mark.parametrize("k", [0, 3, 7])
def test_dropped_block_is_identity(k):
    # Independent computation: zeroing block k's last layer makes f_k ≡ 0, i.e. h + f_k(h) = h.
    cfg = MLPConfig()
    model = trained_like(cfg)
    x, sigma, labels = inputs()
    mask = jnp.ones(8).at[k].set(0.0)
    dropped = model(x, sigma, labels, mask)
    ablated = trained_like(cfg)
    ablated.blocks[k].fc2.kernel[...] = jnp.zeros_like(ablated.blocks[k].fc2.kernel[...])
    ablated.blocks[k].fc2.bias[...] = jnp.zeros_like(ablated.blocks[k].fc2.bias[...])
    np.testing.assert_allclose(dropped, ablated(x, sigma, labels), rtol=1e-6, atol=1e-6)
    assert not np.allclose(dropped, model(x, sigma, labels), atol=1e-4)


def test_per_row_masks_equal_separate_calls():
    model = trained_like(MLPConfig())
    x, sigma, labels = inputs()
    masks = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(8, 8)), jnp.float32)
    rows = model(x, sigma, labels, masks)
    for i in range(8):
        np.testing.assert_allclose(rows[i], model(x[i:i + 1], sigma[i:i + 1], labels[i:i + 1], masks[i])[0],
                                   rtol=1e-5, atol=1e-6)


def test_learned_denoiser_is_the_model_and_jits():
    model = trained_like(MLPConfig())
    D = LearnedDenoiser.from_model(model)
    x, sigma, labels = inputs()
    np.testing.assert_allclose(jax.jit(lambda D, x: D(x, sigma, labels))(D, x), model(x, sigma, labels), rtol=1e-5, atol=1e-5)
    assert D.num_blocks == 8 and D.null_label == 2
    # the null class has its own learned embedding row (index 2): changing it moves D_∅ and nothing else
    table = model.label.table.embedding
    assert table[...].shape == (3, 64)
    null, cls = jnp.full(labels.shape, D.null_label, jnp.int32), labels % 2                 # classes 0 and 1 only
    before_null, before_cls = model(x, sigma, null), model(x, sigma, cls)
    table[...] = table[...].at[2].add(0.5)
    assert not np.allclose(model(x, sigma, null), before_null, atol=1e-4)
    np.testing.assert_array_equal(model(x, sigma, cls), before_cls)


def test_one_sigma_for_all_rows_uses_the_class_table_and_equals_per_row_sigmas():
    # A scalar σ takes the sampler's path (each class embedded once, projections gathered by label);
    # the same σ given per row takes the training path. The two must agree, with and without masks.
    model = trained_like(MLPConfig())
    x, _, labels = inputs(n=16)
    sigma = jnp.float32(1.7)
    mask = jnp.ones(8).at[3].set(0.0)
    _, ctx = model.stem(x, sigma, labels)
    assert ctx[0].value.shape == (3, 64)          # the class table, not [n, W]
    for m in (None, mask):
        np.testing.assert_allclose(model(x, sigma, labels, m), model(x, jnp.full(16, sigma), labels, m),
                                   rtol=1e-5, atol=1e-5)
