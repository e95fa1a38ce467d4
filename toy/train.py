"""Training the toy denoisers, with their weak models for Autoguidance (DESIGN.md §3, §6).

A run is a pure function of its `TrainConfig`: step i draws its batch and noise from
`fold_in(key, i)`, so a run stopped at any chunk boundary and resumed gives bit-identical weights.
Steps run in jitted `lax.scan` chunks over flat arrays (nnx.split once, never nnx.jit in the loop).

Every preset gets a *model set* (`train_models`):
- `main`: the full network, the one CFG and S² guide;
- `small`: a narrower, shallower network trained for fewer steps (Autoguidance's "smaller" weak model);
- `early`: the main run's EMA at an early step (Autoguidance's "less trained" weak model).
Checkpoints live in a cache folder keyed by a hash of the config and the mixture, are written
atomically, carry their config, and are reused when it matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy import checkpoint
from toy.diffusion import edm_loss, exact_score_loss
from toy.errors import CheckpointError, ToyError, check_finite, check_int
from toy.mixtures import ConditionalMixture, get_preset
from toy.nets import LearnedDenoiser, MLPConfig, build_model, init_model

LOSSES = ("edm", "exact")
ROLES = ("main", "small", "early")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "gmm2d"
    width: int = 64
    num_blocks: int = 8
    steps: int = 4000
    batch: int = 1024
    lr: float = 2e-3
    warmup: int = 200
    ema_halflife: float = 0.04       # EMA half-life as a fraction of `steps`
    label_dropout: float = 0.1       # P(label → ∅): trains the unconditional model for CFG
    loss: str = "edm"                # "edm" (denoising) or "exact" (regress on the exact posterior mean)
    p_mean_offset: float = -1.0      # ln σ ~ N(ln σ_data + offset, p_std²)
    p_std: float = 1.6
    seed: int = 0
    chunk: int = 100                 # steps per jitted scan
    snapshot: int = 0                # also keep the EMA at this step (0: none); a multiple of chunk

    def validate(self) -> "TrainConfig":
        check_int("width", self.width, low=1, high=4096)
        check_int("num_blocks", self.num_blocks, low=1, high=256)
        check_int("steps", self.steps, low=1)
        check_int("batch", self.batch, low=1, high=1_000_000)
        check_finite("lr", self.lr, low=0.0, low_open=True)
        check_int("warmup", self.warmup, low=0)
        check_finite("ema_halflife", self.ema_halflife, low=0.0, high=1.0, low_open=True)
        check_finite("label_dropout", self.label_dropout, low=0.0, high=1.0, high_open=True)
        check_finite("p_std", self.p_std, low=0.0, low_open=True)
        check_int("chunk", self.chunk, low=1)
        check_int("snapshot", self.snapshot, low=0, high=self.steps)
        if self.loss not in LOSSES:
            raise ToyError(f"unknown loss {self.loss!r}: choose from {', '.join(LOSSES)}")
        if self.snapshot % self.chunk:
            raise ToyError(f"snapshot ({self.snapshot}) must be a multiple of chunk ({self.chunk})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_config(tcfg: TrainConfig, mixture: ConditionalMixture) -> MLPConfig:
    return MLPConfig(dim=mixture.dim, num_classes=mixture.num_classes, width=tcfg.width,
                     num_blocks=tcfg.num_blocks, sigma_data=round(mixture.sigma_data(), 6))


def mixture_hash(mixture: ConditionalMixture) -> str:
    return hashlib.sha256(json.dumps(mixture.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _full_config(tcfg: TrainConfig, mixture: ConditionalMixture, mcfg=None) -> dict:
    """What a checkpoint must match to be reused: the training config, the network, the data."""
    mcfg = mcfg if mcfg is not None else model_config(tcfg, mixture)
    return {"train": tcfg.to_dict(), "model": mcfg.to_dict(), "mixture_sha": mixture_hash(mixture)}


def cache_dir() -> Path:
    return Path(os.environ.get("TOY_CACHE_DIR", Path.home() / ".cache" / "s2-toy"))


def checkpoint_path(tcfg: TrainConfig, mixture: ConditionalMixture, folder: str | Path | None = None,
                    tag: str = "", mcfg=None) -> Path:
    h = hashlib.sha256(json.dumps(_full_config(tcfg, mixture, mcfg), sort_keys=True).encode()).hexdigest()[:12]
    name = Path(tcfg.preset).stem if tcfg.preset.endswith(".json") else tcfg.preset
    return Path(folder or cache_dir()) / f"{name}{'-' + tag if tag else ''}-{h}.npz"


# -- the training step ---------------------------------------------------------------------------

def shard_batch(x: jax.Array) -> jax.Array:
    """Split the batch axis over all local devices (data parallel); a no-op on one device."""
    devices = jax.local_devices()
    if len(devices) < 2 or x.shape[0] % len(devices):
        return x
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    spec = jax.sharding.PartitionSpec("data", *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    warm = min(tcfg.warmup, max(tcfg.steps - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(0.0, tcfg.lr, warm, max(tcfg.steps, warm + 1), tcfg.lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def _make_chunk_fn(tcfg: TrainConfig, mixture: ConditionalMixture, graphdef, tx):
    sd = mixture.sigma_data()
    p_mean = math.log(sd) + tcfg.p_mean_offset
    beta = 0.5 ** (1.0 / max(tcfg.ema_halflife * tcfg.steps, 1.0))

    def loss_fn(params, data, key):
        """Pure loss of one batch: data, labels with dropout, noise, all from `key`. `data` is the
        source's arrays (a dataset's images; nothing for a mixture), passed in rather than closed over."""
        k_data, k_loss = jax.random.split(key)
        if data is None:
            x0, labels = mixture.sample(k_data, tcfg.batch, label_dropout=tcfg.label_dropout)   # [B, d], [B]
        else:
            x0, labels = mixture.sample_batch(data, k_data, tcfg.batch, label_dropout=tcfg.label_dropout)
        x0, labels = shard_batch(x0), shard_batch(labels)   # data parallel when there are several devices
        D = lambda x, s, c: nnx.merge(graphdef, params)(x, s, c)
        if tcfg.loss == "exact":
            return exact_score_loss(D, mixture, x0, labels, k_loss, sigma_data=sd, p_mean=p_mean, p_std=tcfg.p_std)
        return edm_loss(D, x0, labels, k_loss, sigma_data=sd, p_mean=p_mean, p_std=tcfg.p_std)

    def train_step(carry, step, data=None):
        params, ema, opt_state, key = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, data, jax.random.fold_in(key, step))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, ema, params)
        return (params, ema, opt_state, key), loss

    @jax.jit
    def run_chunk(params, ema, opt_state, key, start, data=None):
        steps = start + jnp.arange(tcfg.chunk)
        (params, ema, opt_state, _), losses = jax.lax.scan(lambda c, s: train_step(c, s, data),
                                                           (params, ema, opt_state, key), steps)
        return params, ema, opt_state, losses

    return run_chunk


@dataclass
class TrainResult:
    model: LearnedDenoiser             # EMA weights
    snapshot: LearnedDenoiser | None   # EMA at `snapshot` steps, if asked
    losses: np.ndarray                 # [steps_done] training loss per step
    path: Path                         # the final checkpoint
    resumed_from: int                  # 0 for a fresh run
    loaded: bool                       # True when a finished checkpoint was reused


def train(tcfg: TrainConfig, *, mixture: ConditionalMixture | None = None, folder: str | Path | None = None,
          tag: str = "", until: int | None = None, progress: bool | Callable[[float, str], None] = True,
          save_every_s: float = 20.0, model_cfg=None) -> TrainResult | None:
    """Train one network, or load it if a finished checkpoint with the same config exists.

    Resumes from `<checkpoint>.state.npz` after an interruption. `until` stops (with the state
    saved) after that many steps and returns None: the programmatic form of a kill. `progress` is
    True for a tqdm bar, or a callback(fraction, text) (the app's progress bar).

    `mixture` may be any data source with `sample`, `sigma_data`, `to_dict`, `dim`, `num_classes`
    (an image dataset of toy/data.py adds `arrays` and `sample_batch`); `model_cfg` overrides the
    MLP built from `tcfg` (a DiTConfig for images).
    """
    tcfg = tcfg.validate()
    mixture = mixture if mixture is not None else get_preset(tcfg.preset)
    mcfg = model_cfg if model_cfg is not None else model_config(tcfg, mixture)
    config = _full_config(tcfg, mixture, mcfg)
    path = checkpoint_path(tcfg, mixture, folder, tag, mcfg)
    state_path = path.with_suffix(".state.npz")

    model = build_model(mcfg, tcfg.seed)
    graphdef, params = nnx.split(model)
    data = mixture.arrays() if hasattr(mixture, "arrays") else None
    tx = _optimizer(tcfg)
    opt_state = tx.init(params)
    trees = {"params": params, "ema": params}
    if tcfg.snapshot:
        trees["snapshot"] = params

    if path.exists():
        loaded, header = checkpoint.load(path, {k: v for k, v in trees.items() if k != "params"}, config)
        losses = np.asarray(header["meta"].get("losses", []), np.float32)
        snap = LearnedDenoiser(graphdef, loaded["snapshot"], mcfg) if tcfg.snapshot else None
        return TrainResult(LearnedDenoiser(graphdef, loaded["ema"], mcfg), snap, losses, path, 0, True)

    start, losses = 0, []
    key = jax.random.key(tcfg.seed)
    if state_path.exists():
        st, header = checkpoint.load(state_path, trees | {"opt": opt_state}, config)
        params, opt_state = st["params"], st["opt"]
        trees = {k: st[k] for k in trees}
        start = int(header["meta"]["step"])
        losses = list(header["meta"].get("losses", []))
    resumed_from = start
    ema, snap = trees["ema"], trees.get("snapshot")

    run_chunk = _make_chunk_fn(tcfg, mixture, graphdef, tx)
    stop = tcfg.steps if until is None else min(tcfg.steps, check_int("until", until, low=0))
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=tcfg.steps, initial=start, desc=f"train {path.stem}", unit="step", leave=False)
    last_save = time.monotonic()

    def save_state(step):
        t = {"params": params, "ema": ema, "opt": opt_state}
        if tcfg.snapshot:
            t["snapshot"] = snap
        checkpoint.save(state_path, t, config, {"step": step, "losses": [float(v) for v in losses]})

    step = start
    try:
        while step < stop:
            params, ema, opt_state, chunk_losses = run_chunk(params, ema, opt_state, key, jnp.int32(step), data)
            chunk_losses = np.asarray(chunk_losses)
            n_valid = min(tcfg.chunk, tcfg.steps - step)   # the last chunk may run past `steps`
            losses += chunk_losses[:n_valid].tolist()
            if not np.all(np.isfinite(chunk_losses)):
                raise ToyError(f"training diverged (non-finite loss) near step {step}; lower lr (now {tcfg.lr})")
            step += tcfg.chunk
            if tcfg.snapshot and step == tcfg.snapshot:
                snap = ema
            if bar is not None:
                bar.update(min(step, tcfg.steps) - bar.n)
                bar.set_postfix(loss=f"{np.mean(chunk_losses[:n_valid]):.4f}")
            elif callable(progress):
                progress(min(step, tcfg.steps) / tcfg.steps, f"{path.stem}: step {min(step, tcfg.steps)}/{tcfg.steps}")
            if time.monotonic() - last_save > save_every_s and step < stop:
                save_state(step)
                last_save = time.monotonic()
    except KeyboardInterrupt:       # Ctrl-C: keep everything done so far, then stop
        save_state(step)
        raise
    finally:
        if bar is not None:
            bar.close()
    if step < tcfg.steps:           # stopped early on request: keep the state for a resume
        save_state(step)
        return None
    final = {"ema": ema}
    if tcfg.snapshot:
        final["snapshot"] = snap
    checkpoint.save(path, final, config, {"losses": [float(v) for v in losses], "finished": True})
    state_path.unlink(missing_ok=True)        # gone already if another process finished the same run
    return TrainResult(LearnedDenoiser(graphdef, ema, mcfg),
                       LearnedDenoiser(graphdef, snap, mcfg) if tcfg.snapshot else None,
                       np.asarray(losses, np.float32), path, resumed_from, False)


# -- model sets ----------------------------------------------------------------------------------

def model_set_configs(preset: str, quick: bool = False, seed: int = 0) -> dict[str, TrainConfig]:
    """The main network and the small weak network for a preset (the early weak model is the main
    run's snapshot). Quick: seconds on a 2-core CPU; full: a few minutes per preset."""
    steps, batch = (1500, 512) if quick else (8000, 2048)
    snap = (steps // 4) // 100 * 100
    main = TrainConfig(preset=preset, width=64, num_blocks=8, steps=steps, batch=batch, seed=seed, snapshot=snap)
    small = replace(main, width=32, num_blocks=4, steps=steps // 4, snapshot=0, seed=seed + 1)
    return {"main": main, "small": small}


def train_models(preset: str, *, quick: bool = False, seed: int = 0, folder: str | Path | None = None,
                 progress: bool | Callable[[float, str], None] = True,
                 mixture: ConditionalMixture | None = None) -> dict[str, LearnedDenoiser]:
    """Train (or load from the cache) the model set of a preset: {"main", "small", "early"}."""
    mixture = mixture if mixture is not None else get_preset(preset)
    cfgs = model_set_configs(preset, quick, seed)
    cb = progress
    out = {}
    for i, (role, tcfg) in enumerate(cfgs.items()):
        if callable(progress):
            cb = lambda f, text, i=i: progress((i + f) / len(cfgs), text)
        res = train(tcfg, mixture=mixture, folder=folder, tag=role, progress=cb)
        out[role] = res.model
        if role == "main":
            out["early"] = res.snapshot
    return out


def weak_model(models: dict[str, LearnedDenoiser], which: str) -> LearnedDenoiser:
    if which not in ("small", "early"):
        raise ToyError(f"unknown weak model {which!r}: choose small or early")
    return models[which]
