"""Training: the loss falls, models approach the truth, checkpoints are safe and resumable."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from scipy.stats import wasserstein_distance

from toy import checkpoint
from toy.diffusion import SamplerConfig, sample
from toy.errors import CheckpointError
from toy.guidance import GuidanceConfig
from toy.presets import get_preset
from toy.nets import LearnedDenoiser, MLPConfig, init_model
from toy.train import (TrainConfig, checkpoint_path, chunk_ends, init_state, mixture_batch, optimizer, train,
                       training_masks)

# The whole module runs in one worker (--dist loadfile): its reference run is made once.

TINY = TrainConfig(preset="gmm1d", width=16, num_blocks=2, steps=600, batch=128, warmup=20, chunk=100, snapshot=200)
ROOT = Path(__file__).resolve().parents[1]


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def assert_same(a, b):
    for x, y in zip(leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)


def denoise_error(D, n=4096):
    """EDM-weighted squared distance of D from the exact denoiser on a fixed batch of noisy points."""
    mix = get_preset("gmm1d")
    x0, labels = mixture_batch(mix, jax.random.key(123), n, 0.2)
    sigma = np.exp(np.random.default_rng(0).normal(-0.5, 1.2, size=n)).astype(np.float32)
    x = np.asarray(x0) + sigma[:, None] * np.random.default_rng(1).normal(size=(n, 1)).astype(np.float32)
    sd = mix.sigma_data()
    err = np.asarray(D(x, sigma, labels)) - np.asarray(mix.denoise(x, sigma, labels))
    return float(np.mean((sigma**2 + sd**2) / (sigma * sd) ** 2 * err[:, 0] ** 2))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run."""
    return train(TINY, folder=tmp_path_factory.mktemp("ref"), progress=False)


def test_loss_falls_and_checkpoint_is_reused(reference, tmp_path_factory):
    assert not reference.loaded and len(reference.losses) == TINY.steps
    # independent check: the network moved towards the exact posterior mean E[x0 | x_σ, c]
    untrained = LearnedDenoiser.from_model(init_model(reference.model.cfg, TINY.seed))
    assert denoise_error(reference.model) < 0.5 * denoise_error(untrained)
    again = train(TINY, folder=reference.path.parent, progress=False)
    assert again.loaded
    assert_same(again.model, reference.model)
    assert_same(again.snapshot, reference.snapshot)
    with pytest.raises(AssertionError):
        assert_same(reference.snapshot, reference.model)            # the early snapshot is another model
    header = checkpoint.read_header(reference.path)
    assert header["config"]["train"] == TINY.to_dict() and header["config"]["model"]["width"] == 16
    with np.load(reference.path, allow_pickle=False) as z:          # plain arrays only, no pickle
        assert all(z[k].dtype != object for k in z.files)


def test_exact_score_loss_trains(tmp_path):
    res = train(replace(TINY, loss="exact", snapshot=0, steps=300), folder=tmp_path, progress=False)
    assert res.losses[-50:].mean() < 0.5 * res.losses[:20].mean()


def test_stop_and_resume_is_bit_identical(reference, tmp_path):
    assert train(TINY, folder=tmp_path, until=300, progress=False) is None
    state = checkpoint_path(TINY, get_preset("gmm1d"), tmp_path).with_suffix(".state.npz")
    assert state.exists()
    res = train(TINY, folder=tmp_path, progress=False)
    assert res.resumed_from == 300 and not state.exists()
    assert_same(res.model, reference.model)
    assert_same(res.snapshot, reference.snapshot)
    np.testing.assert_array_equal(res.losses, reference.losses)


def test_exactly_steps_updates_whatever_the_chunk(reference, tmp_path):
    # 150 steps in chunks of 100 (100 + 50) and of 50 (3 × 50): the same 150 updates, the same state.
    # (`until` stops both at 150; the chunk-100 run is the reference's config, so its program is reused.)
    def state_at_150(cfg, folder):
        assert train(cfg, folder=folder, until=150, progress=False) is None
        path = checkpoint_path(cfg, get_preset("gmm1d"), folder).with_suffix(".state.npz")
        loaded, header = checkpoint.load(path, {"state": init_state(reference.model.params, optimizer(cfg))})
        return loaded["state"], np.asarray(header["meta"]["losses"])
    (a, la), (b, lb) = state_at_150(TINY, tmp_path / "a"), state_at_150(replace(TINY, chunk=50), tmp_path / "b")
    assert int(a.step) == int(b.step) == 150 and len(la) == len(lb) == 150
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(la, reference.losses[:150])        # and the uninterrupted run's first 150
    assert chunk_ends(0, 150, 100, 0) == [100, 150] and chunk_ends(20, 250, 100, 130) == [100, 130, 200, 250]
    # the snapshot need not sit on a chunk boundary: the chunks are cut there
    base = replace(TINY, snapshot=30)
    c = train(base, folder=tmp_path / "c", progress=False)
    d = train(base, folder=tmp_path / "d", until=30, progress=False)
    assert d is None
    state = checkpoint.load(checkpoint_path(base, get_preset("gmm1d"), tmp_path / "d").with_suffix(".state.npz"),
                            {"state": init_state(c.model.params, optimizer(base))})[0]
    assert int(state["state"].step) == 30                          # `until` stops exactly there…
    for x, y in zip(leaves(state["state"].ema), leaves(c.snapshot.params), strict=True):
        np.testing.assert_array_equal(x, y)                        # …and the snapshot is the EMA at step 30


def test_until_returns_none_before_the_end_and_a_result_after(tmp_path):
    assert train(TINY, folder=tmp_path, until=120, progress=False) is None
    res = train(TINY, folder=tmp_path, until=TINY.steps, progress=False)
    assert res is not None and res.resumed_from == 120 and len(res.losses) == TINY.steps


def test_block_drop_masks_keep_excluded_blocks():
    m = np.asarray(training_masks(jax.random.key(0), 4000, 6, (0, 3), 0.3))
    assert np.all(m[:, [0, 3]] == 1)                                   # excluded: always kept
    np.testing.assert_allclose(1 - m[:, [1, 2, 4, 5]].mean(0), 0.3, atol=0.03)
    assert np.all(np.asarray(training_masks(jax.random.key(1), 50, 6, (0,), 0.0)) == 1)


def test_block_drop_training(reference, tmp_path):
    # With every block excluded, the masked path (all-ones masks) trains bit-identically to block_drop = 0:
    # turning the feature on changes nothing until a block is actually dropped.
    # (the reference run is the plain one: block_drop = 0)
    masked = train(replace(TINY, block_drop=0.5, block_drop_exclude=(0, 1)), folder=tmp_path / "m",
                   progress=False)
    assert_same(reference.model, masked.model)
    # block_drop = 1 drops every droppable block at every step: they get no gradient and keep their
    # initial weights, while the excluded block 0 is trained.
    always = replace(TINY, block_drop=1.0, block_drop_exclude=(0,))
    assert train(always, folder=tmp_path / "a", until=99, progress=False) is None
    init = init_model(reference.model.cfg, TINY.seed)
    state_path = checkpoint_path(always, get_preset("gmm1d"), tmp_path / "a").with_suffix(".state.npz")
    state, header = checkpoint.load(state_path, {"state": init_state(nnx.state(init, nnx.Param), optimizer(always))})
    params = state["state"].params
    for k in range(2):
        same = all(np.array_equal(x, y) for x, y in zip(leaves(params["blocks"][k]),
                                                         leaves(nnx.state(init, nnx.Param)["blocks"][k])))
        assert same == (k != 0), k
    assert header["config"]["train"]["block_drop"] == 1.0


KILL_SCRIPT = """
import sys, time
from toy.train import TrainConfig, train
cfg = TrainConfig(preset="gmm1d", width=16, num_blocks=2, steps=600, batch=128, warmup=20, chunk=100, snapshot=200)
train(cfg, folder=sys.argv[1], progress=lambda f, t: time.sleep(0.4), save_every_s=0.0)
"""


def test_resume_after_sigkill(reference, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], env=env)
    state = checkpoint_path(TINY, get_preset("gmm1d"), tmp_path).with_suffix(".state.npz")
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not checkpoint_path(TINY, get_preset("gmm1d"), tmp_path).exists()
    res = train(TINY, folder=tmp_path, progress=False)
    assert 0 < res.resumed_from < TINY.steps
    assert_same(res.model, reference.model)


def test_corrupt_and_mismatched_checkpoints(reference, tmp_path):
    path = checkpoint_path(TINY, get_preset("gmm1d"), tmp_path)
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(TINY, folder=tmp_path, progress=False)
    data = reference.path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                         # truncated
    with pytest.raises(CheckpointError, match="corrupt|delete"):
        train(TINY, folder=tmp_path, progress=False)
    cfg = checkpoint.read_header(reference.path)["config"]
    other = dict(cfg, train=dict(cfg["train"], steps=5))
    with pytest.raises(CheckpointError, match="train"):
        checkpoint.load(reference.path, {"ema": reference.model.params}, other)
    wrong = LearnedDenoiser.from_model(init_model(MLPConfig(dim=1, width=8, num_blocks=2)))
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load(reference.path, {"ema": wrong.params})


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"a": {"w": np.ones(3)}}, {"v": 1})
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"a": {"w": np.zeros(3)}}, {"v": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_trained_models_approach_the_truth(gmm1d_models):
    mix = get_preset("gmm1d")
    ref = np.asarray(mix.cond(0).sample(jax.random.key(0), 20000))[:, 0]
    untrained = LearnedDenoiser.from_model(init_model(gmm1d_models["main"].cfg))
    w = {}
    for name, D in [("main", gmm1d_models["main"]), ("untrained", untrained)]:
        x = sample(D, GuidanceConfig(method="none"), SamplerConfig(), jax.random.key(1), 4000, 0).x
        w[name] = wasserstein_distance(np.asarray(x)[:, 0], ref)
    assert w["main"] < 0.3 and w["main"] < w["untrained"] / 5
    assert gmm1d_models["small"].cfg.width < gmm1d_models["main"].cfg.width
    assert gmm1d_models["early"].cfg == gmm1d_models["main"].cfg


def test_shipped_weights_are_what_training_makes(tmp_path):
    """The weights in toy/weights/ are the project's own training: retraining the smallest shipped run
    (gmm1d's small network, 375 steps) from scratch lands on them, up to float rounding across XLA builds."""
    from toy.images import shipped as image_runs
    from toy.shipped import runs
    from toy.train import SHIPPED, finished_checkpoint, model_set_configs
    shipped = {r.path.name for r in runs() + image_runs.runs()}
    assert shipped == {p.name for p in SHIPPED.glob("*.npz")}                 # exactly the listed runs ship
    cfg = model_set_configs("gmm1d", quick=True)["small"]
    fresh = train(cfg, folder=tmp_path, tag="small", fresh=True, progress=False)
    path = finished_checkpoint(checkpoint_path(cfg, get_preset("gmm1d"), tmp_path / "nowhere", "small"))
    assert path is not None and path.parent == SHIPPED
    loaded = train(cfg, folder=tmp_path / "nowhere", tag="small", progress=False)
    assert loaded.loaded and loaded.path == path
    for a, b in zip(leaves(loaded.model.params), leaves(fresh.model.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_label_dropout_is_the_training_batchs():
    """Label dropout belongs to training: `mixture_batch` replaces each label by ∅ with the asked
    probability, keeps the samples the mixture draws, and leaves the other labels as they were."""
    cm = get_preset("gmm2d")
    key = jax.random.key(1)
    x, labels = mixture_batch(cm, key, 20_000, 0.3)
    x0, labels0 = cm.sample(key, 20_000)
    np.testing.assert_array_equal(x, x0)
    dropped = np.asarray(labels) == cm.null_label
    assert abs(dropped.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(np.asarray(labels)[~dropped], np.asarray(labels0)[~dropped])
    assert not np.any(np.asarray(mixture_batch(cm, key, 1000, 0.0)[1]) == cm.null_label)
