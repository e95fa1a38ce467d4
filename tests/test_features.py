"""Image-feature metrics against known answers, and the optional CLIP feature path."""

import numpy as np
import pytest

from toy.images import features as F
from toy.errors import ToyError


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) + np.array([2.0, 0, 0])
    assert F.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, I): ‖m‖² = 4
    assert F.frechet_distance(a, b) == pytest.approx(4.0, abs=0.15)
    # N(0, I) vs N(0, 4I) in 3D: 3·(1 + 4 − 2·2) = 3
    assert F.frechet_distance(a, 2 * rng.normal(size=(4000, 3))) == pytest.approx(3.0, abs=0.25)


def test_precision_recall_and_separation():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 2))
    assert F.precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = F.precision_recall(real, real[:, :] * 0.05)              # collapsed onto the centre
    assert p > 0.9 and r < 0.5                                        # precise, but low recall
    p, r = F.precision_recall(real, real + 50.0)
    assert p == 0.0 and r == 0.0
    labels = np.repeat([0, 1], 150)
    apart = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + 20])
    assert F.class_separation(apart, labels) > 0.9
    assert abs(F.class_separation(real, labels)) < 0.1


def test_clip_features_from_a_local_folder(tmp_path):
    import transformers  # in the test extras: this test must run, not skip
    import jax
    import jax.numpy as jnp
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8), projection_dim=8)
    model = transformers.FlaxCLIPModel(cfg, _do_init=False)         # random init (jitted): no download
    params = jax.jit(model.init_weights, static_argnums=1)(jax.random.key(0), model.input_shape)
    model.save_pretrained(tmp_path / "clip", params=params)
    net = F.clip_feature_net(str(tmp_path / "clip"), (8, 8, 1))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 64)).astype(np.float32)
    f = net.features(x)
    assert f.shape == (5, 8) and np.all(np.isfinite(f))
    # exactly CLIP's own preprocessing and image tower, batch by batch
    img = np.repeat(x.reshape(5, 8, 8, 1), 3, -1)
    img = jax.image.resize(jnp.asarray(img), (5, 16, 16, 3), "bilinear")
    img = ((img + 1) / 2 - F.CLIP_MEAN) / F.CLIP_STD
    ref = jax.jit(lambda p, px: model.get_image_features(pixel_values=px, params=p))(params, img.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(f, ref, atol=1e-5)
    np.testing.assert_allclose(F.ClipFeatures(net.model, net.params, (8, 8, 1), batch=2).features(x), f, atol=1e-5)
    # a folder without Flax weights is refused before anything is loaded (no pickled PyTorch files)
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "config.json").write_text("{}")
    (tmp_path / "torch" / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ToyError, match="flax_model.msgpack"):
        F.clip_feature_net(str(tmp_path / "torch"), (8, 8, 1))
