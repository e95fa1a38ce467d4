"""The DiT: parameter count, adaLN-Zero at init, masks, patchify, and a few training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy.images.data import load_digits
from toy.images.dit import DIT_SIZES, DiTConfig, dit_config, init_dit
from toy.errors import ToyError
from toy.nets import LearnedDenoiser, param_count
from toy.train import TrainConfig, train

TINY = DiTConfig(image_size=8, channels=1, patch=2, width=32, depth=3, heads=2, num_classes=2, fourier=8, sigma_data=0.6)


def randomized(cfg=TINY, seed=0):
    """A DiT whose zero-initialised (adaLN-Zero) layers are made non-zero, so every block matters."""
    model = init_dit(cfg, seed)
    keys = iter(jax.random.split(jax.random.key(seed + 7), 64))
    for lin in [b.ada for b in model.blocks] + [model.final.ada, model.final.out]:
        lin.kernel[...] = 0.2 * jax.random.normal(next(keys), lin.kernel[...].shape)
    return model


def inputs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, 64)), jnp.float32), jnp.asarray(np.exp(rng.normal(size=n)), jnp.float32),
            jnp.asarray(rng.integers(0, 3, n)))


def test_parameter_count_is_pinned():
    W, T, F, p = 32, 16, 8, 2
    lin = lambda i, o: i * o + o
    block = lin(W, 3 * W) + lin(W, W) + lin(W, 4 * W) + lin(4 * W, W) + lin(W, 6 * W)
    expected = (lin(p * p, W) + lin(2 * F, W) + lin(W, W) + 3 * W + 3 * block + lin(W, 2 * W) + lin(W, p * p))
    assert param_count(init_dit(TINY)) == expected == 60836
    assert T == TINY.tokens and TINY.dim == 64 and TINY.num_blocks == 3


def test_adaln_zero_output_is_zero_at_init():
    model = init_dit(TINY)
    x, sigma, labels = inputs()
    h, ctx = model.stem(x, sigma, labels)
    for k in range(TINY.depth):                       # every block starts as the identity
        np.testing.assert_array_equal(model.block(k, h, ctx), 0.0)
    np.testing.assert_array_equal(model.final(h, ctx[0]), 0.0)
    sd2 = TINY.sigma_data**2
    np.testing.assert_allclose(model(x, sigma, labels), (sd2 / (sigma**2 + sd2))[:, None] * x, rtol=1e-6)


def test_masks_all_ones_is_full_and_dropped_block_is_identity():
    model = randomized()
    x, sigma, labels = inputs()
    full = model(x, sigma, labels)
    np.testing.assert_allclose(model(x, sigma, labels, jnp.ones(3)), full, atol=1e-6)
    np.testing.assert_allclose(model(x, sigma, labels, jnp.ones((5, 3))), full, atol=1e-6)
    for k in range(3):
        h, ctx = model.stem(x, sigma, labels)
        for j in range(3):
            if j != k:                                # block k skipped: h passes through unchanged
                h = h + model.block(j, h, ctx)
        dropped = model(x, sigma, labels, jnp.ones(3).at[k].set(0))
        np.testing.assert_allclose(dropped, model.head(h, ctx), atol=1e-5)
        assert not np.allclose(dropped, full, atol=1e-4)
    # per-row masks: row i drops block i % 3
    rows = jnp.ones((5, 3)).at[jnp.arange(5), jnp.arange(5) % 3].set(0)
    per_row = model(x, sigma, labels, rows)
    for i in range(5):
        np.testing.assert_allclose(per_row[i], model(x[i:i + 1], sigma[i], labels[i:i + 1], rows[i])[0], atol=1e-5)


def test_patchify_round_trip_and_label_table():
    model = init_dit(TINY)
    img = jnp.arange(2 * 64, dtype=jnp.float32).reshape(2, 8, 8, 1)
    # with the patch projection set to the identity, tokens are exactly the 2×2 patches in raster order
    model.patch.proj.kernel[...] = jnp.eye(4, 32)
    model.patch.proj.bias[...] = jnp.zeros(32)
    tok = model.patch(img)[..., :4]                                            # [2, 16, 4]
    np.testing.assert_array_equal(tok[0, 1], [2, 3, 10, 11])                  # patch (0, 1): rows 0–1, cols 2–3
    assert model.label.table.embedding[...].shape == (3, 32)                  # 2 classes + the null row
    with pytest.raises(ToyError, match="patch"):
        DiTConfig(image_size=8, patch=3).validate()
    with pytest.raises(ToyError, match="unknown DiT size"):
        dit_config("XXL")
    assert set(DIT_SIZES) >= {"XS", "S", "S/2", "B/2"}


def test_the_null_row_is_the_unconditional_models_alone():
    """The label embedder owns the null row: changing it moves D_∅ and never a class's prediction."""
    model = randomized()
    x, sigma, _ = inputs(n=4)
    cls, null = jnp.array([0, 1, 1, 0]), jnp.full(4, 2)
    before_cls, before_null = model(x, sigma, cls), model(x, sigma, null)
    model.label.table.embedding[...] = model.label.table.embedding[...].at[2].add(0.5)
    assert not np.allclose(model(x, sigma, null), before_null, atol=1e-5)
    np.testing.assert_array_equal(model(x, sigma, cls), before_cls)


def test_a_few_training_steps_lower_the_loss(tmp_path):
    data = load_digits()
    tcfg = TrainConfig(preset="images-digits", width=32, num_blocks=3, steps=300, batch=64, lr=2e-3, warmup=20,
                       chunk=50, p_mean_offset=-0.5, p_std=1.2)
    mcfg = DiTConfig(**{**TINY.__dict__, "sigma_data": round(data.sigma_data(), 6)})
    res = train(tcfg, mixture=data, folder=tmp_path, tag="main", progress=False, model_cfg=mcfg)
    assert res.losses[:50].mean() > 1.3 * res.losses[-50:].mean()
    assert isinstance(res.model, LearnedDenoiser) and res.model.num_blocks == 3
    # the finished checkpoint loads back into the same DiT
    again = train(tcfg, mixture=data, folder=tmp_path, tag="main", progress=False, model_cfg=mcfg)
    assert again.loaded
    x, sigma, labels = inputs()
    np.testing.assert_allclose(again.model(x, sigma, labels), res.model(x, sigma, labels), atol=1e-6)


DP_TRAIN = dict(preset="gmm1d", width=16, num_blocks=2, steps=20, batch=16, warmup=2, chunk=10)
DP_SCRIPT = f"""
import json, sys, jax
from toy.train import TrainConfig, train
res = train(TrainConfig(**{DP_TRAIN!r}), folder=sys.argv[1], progress=False)
print(json.dumps({{"devices": jax.local_device_count(), "losses": [float(v) for v in res.losses]}}))
"""


def test_data_parallel_training_matches_one_device(tmp_path):
    """With several local devices the batch is sharded over them; the numbers stay the same (the same
    trainer serves the DiT and the MLP; the MLP compiles in a fraction of the time). The one-device run
    is this process's (whose two CPU devices, made by importing toy, serve the sampler only: training
    here stays on one device); the two-device one a fresh process with two host devices of its own."""
    import json
    import os
    import subprocess
    import sys
    from toy.train import shard_batch
    rows = jnp.ones((4, 1))
    assert shard_batch(rows) is rows                                     # training on one device here
    one = train(TrainConfig(**DP_TRAIN), folder=tmp_path / "d1", progress=False)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", DP_SCRIPT, str(tmp_path / "d2")], env=env, capture_output=True,
                       text=True, check=True)
    two = json.loads(r.stdout.strip().splitlines()[-1])
    assert two["devices"] == 2
    np.testing.assert_allclose(two["losses"], one.losses, rtol=1e-4, atol=1e-5)
