"""Training the toy denoisers, with their weak models for Autoguidance and a block-dropout variant.

A run is a pure function of its `TrainConfig`: step i draws its batch, noise and block masks from
`fold_in(key, i)`, so a run stopped anywhere and resumed gives bit-identical weights, and so does
the same run cut into chunks of another size. Steps run in jitted `lax.scan` chunks over one
`TrainState` pytree (nnx.split once, never nnx.jit in the loop).

`train` is load-or-init, run, save:
- a finished checkpoint with the same config is loaded (from the cache folder, or from the weights
  that ship inside the package, `toy/weights/`);
- else the run resumes from `<checkpoint>.state.npz` if an interrupted one left it, or starts fresh;
- it saves that state now and then and on Ctrl-C, and writes the finished checkpoint atomically.

Every preset gets a *model set* (`train_models`):
- `main`: the full network, the one CFG and S² guide;
- `small`: a narrower, shallower network trained for fewer steps (Autoguidance's "smaller" weak model);
- `early`: the main run's EMA at an early step (Autoguidance's "less trained" weak model);
- `blockdrop`: the main network trained with stochastic depth (`block_drop = 0.1`), so that its
  sub-networks are trained denoisers too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy import checkpoint
from toy.diffusion import edm_loss, exact_score_loss
from toy.errors import ToyError, check_finite, check_int
from toy.layers import drop_labels
from toy.mixtures import ConditionalMixture
from toy.presets import get_preset
from toy.nets import LearnedDenoiser, MLPConfig
from toy.runtime import cache_dir, data_devices
from toy.settings import SEED_MAX

LOSSES = ("edm", "exact")
SHIPPED = Path(__file__).resolve().parent / "weights"      # finished checkpoints that ship with the package


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
    chunk: int = 100                 # steps per jitted scan (the last chunk may be shorter)
    snapshot: int = 0                # also keep the EMA at this step (0: none)
    block_drop: float = 0.0          # stochastic depth: P(a droppable block is skipped), per sample and step
    block_drop_exclude: tuple[int, ...] = (0,)   # blocks never skipped in training (as S² never drops block 0)

    def validate(self) -> "TrainConfig":
        check_int("width", self.width, low=1, high=4096)
        check_int("num_blocks", self.num_blocks, low=1, high=256)
        check_int("steps", self.steps, low=1, high=10_000_000)
        check_int("batch", self.batch, low=1, high=1_000_000)
        check_finite("lr", self.lr, low=0.0, low_open=True)
        check_int("warmup", self.warmup, low=0)
        check_finite("ema_halflife", self.ema_halflife, low=0.0, high=1.0, low_open=True)
        check_finite("label_dropout", self.label_dropout, low=0.0, high=1.0, high_open=True)
        check_finite("p_std", self.p_std, low=0.0, low_open=True)
        check_int("chunk", self.chunk, low=1)
        check_int("snapshot", self.snapshot, low=0, high=self.steps)
        check_int("seed", self.seed, low=0, high=2**31 - 1)
        check_finite("block_drop", self.block_drop, low=0.0, high=1.0)
        for b in self.block_drop_exclude:
            check_int("block_drop_exclude block", b, low=0, high=self.num_blocks - 1)
        if self.loss not in LOSSES:
            raise ToyError(f"unknown loss {self.loss!r}: choose from {', '.join(LOSSES)}")
        return replace(self, block_drop_exclude=tuple(int(b) for b in self.block_drop_exclude))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["block_drop_exclude"] = list(self.block_drop_exclude)
        return d


def model_config(tcfg: TrainConfig, mixture: ConditionalMixture) -> MLPConfig:
    return MLPConfig(dim=mixture.dim, num_classes=mixture.num_classes, width=tcfg.width,
                     num_blocks=tcfg.num_blocks, sigma_data=round(mixture.sigma_data(), 6))


def mixture_hash(mixture) -> str:
    return hashlib.sha256(json.dumps(mixture.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def full_config(tcfg: TrainConfig, mixture, mcfg=None) -> dict:
    """What a checkpoint must match to be reused: the training config, the network, the data."""
    mcfg = mcfg if mcfg is not None else model_config(tcfg, mixture)
    return {"train": tcfg.to_dict(), "model": mcfg.to_dict(), "mixture_sha": mixture_hash(mixture)}


def checkpoint_path(tcfg: TrainConfig, mixture, folder: str | Path | None = None, tag: str = "",
                    mcfg=None) -> Path:
    h = hashlib.sha256(json.dumps(full_config(tcfg, mixture, mcfg), sort_keys=True).encode()).hexdigest()[:12]
    name = Path(tcfg.preset).stem if tcfg.preset.endswith(".json") else tcfg.preset
    return Path(folder or cache_dir()) / f"{name}{'-' + tag if tag else ''}-{h}.npz"


# -- the training step ---------------------------------------------------------------------------

@functools.partial(jax.tree_util.register_dataclass, data_fields=["params", "ema", "opt", "snapshot", "step"],
                   meta_fields=[])
@dataclass(frozen=True)
class TrainState:
    """Everything a run carries from step to step; saved whole for a resume."""

    params: Any          # the weights being optimised
    ema: Any             # their exponential moving average: the model that is used
    opt: Any             # optimiser state
    snapshot: Any        # the EMA at TrainConfig.snapshot (the weights at init until then)
    step: jax.Array      # int32, steps done


def optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    warm = min(tcfg.warmup, max(tcfg.steps - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(0.0, tcfg.lr, warm, max(tcfg.steps, warm + 1), tcfg.lr * 0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(params, params, tx.init(params), params, jnp.int32(0))


def shard_batch(x: jax.Array) -> jax.Array:
    """Split the batch axis over `runtime.data_devices()` (data parallel); a no-op on one device."""
    devices = data_devices()
    if len(devices) < 2 or x.shape[0] % len(devices):
        return x
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    spec = jax.sharding.PartitionSpec("data", *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def mixture_batch(mixture: ConditionalMixture, key: jax.Array, n: int, label_dropout: float):
    """n exact samples of the joint (x [n, d], labels [n]) with each label replaced by ∅ with
    probability `label_dropout` (the sample still follows p(x)): the training batch that teaches the
    network its unconditional prediction for CFG. The dropout draws from the third key of the
    mixture's own split, which the mixture leaves unused."""
    x, labels = mixture.sample(key, n)
    return x, drop_labels(labels, jax.random.split(key, 3)[2], label_dropout, mixture.null_label)


def training_masks(key: jax.Array, n: int, num_blocks: int, exclude: tuple[int, ...], p: float) -> jax.Array:
    """Stochastic-depth masks [n, K]: each block of each sample is dropped (0) with probability p,
    except the blocks in `exclude`, which are always kept (1)."""
    keep = jax.random.uniform(key, (n, num_blocks)) >= p                          # [n, K]
    if exclude:
        keep = keep.at[:, jnp.asarray(exclude, jnp.int32)].set(True)
    return keep.astype(jnp.float32)


_MASK_STREAM = 0x6D61736B      # fold_in tag of the block-mask keys: masks never disturb the batch or noise draws


def chunk_runner(tcfg: TrainConfig, mixture, graphdef) -> Callable:
    """run(state, data, steps) → (state, losses [steps]): `steps` ≤ tcfg.chunk training steps from
    state.step in one jitted scan. The program is compiled once per (config, data source, network) at
    the chunk's full length, and runs a shorter remainder by skipping its last iterations, so the
    last chunk of a run, a snapshot or a stop never compiles another program. `data` is the source's
    arrays (an image set's; None for a mixture), passed in rather than closed over."""
    def run(state: TrainState, data, steps: int):
        steps = check_int("chunk steps", steps, low=1, high=tcfg.chunk)
        # the snapshot step only decides where the chunks are cut: runs that differ in it share a program
        state, losses = _run_chunk(state, data, jnp.int32(steps), tcfg=replace(tcfg, snapshot=0), source=mixture,
                                   graphdef=graphdef)
        return state, losses[:steps]
    return run


@functools.partial(jax.jit, static_argnames=("tcfg", "source", "graphdef"))
def _run_chunk(state: TrainState, data, active, *, tcfg: TrainConfig, source, graphdef):
    sd = source.sigma_data()
    p_mean = math.log(sd) + tcfg.p_mean_offset
    beta = 0.5 ** (1.0 / max(tcfg.ema_halflife * tcfg.steps, 1.0))
    tx = optimizer(tcfg)
    key = jax.random.key(tcfg.seed)

    def loss_fn(params, key):
        """Pure loss of one batch: data, labels with dropout, noise and block masks, all from `key`."""
        k_data, k_loss = jax.random.split(key)
        if data is None:
            x0, labels = mixture_batch(source, k_data, tcfg.batch, tcfg.label_dropout)   # [B, d], [B]
        else:
            x0, labels = source.sample_batch(data, k_data, tcfg.batch, label_dropout=tcfg.label_dropout)
        x0, labels = shard_batch(x0), shard_batch(labels)   # data parallel when there are several devices
        model = nnx.merge(graphdef, params)
        if tcfg.block_drop > 0:
            masks = training_masks(jax.random.fold_in(key, _MASK_STREAM), tcfg.batch, tcfg.num_blocks,
                                   tcfg.block_drop_exclude, tcfg.block_drop)                       # [B, K]
            D = lambda x, s, c: model(x, s, c, masks)
        else:
            D = model
        if tcfg.loss == "exact":
            return exact_score_loss(D, source, x0, labels, k_loss, sigma_data=sd, p_mean=p_mean, p_std=tcfg.p_std)
        return edm_loss(D, x0, labels, k_loss, sigma_data=sd, p_mean=p_mean, p_std=tcfg.p_std)

    def train_step(s: TrainState):
        loss, grads = jax.value_and_grad(loss_fn)(s.params, jax.random.fold_in(key, s.step))
        updates, opt = tx.update(grads, s.opt, s.params)
        params = optax.apply_updates(s.params, updates)
        ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, s.ema, params)
        return TrainState(params, ema, opt, s.snapshot, s.step + 1), loss

    def body(s, i):
        return jax.lax.cond(i < active, train_step, lambda s: (s, jnp.float32(0.0)), s)

    return jax.lax.scan(body, state, jnp.arange(tcfg.chunk))


def chunk_ends(start: int, stop: int, chunk: int, snapshot: int) -> list[int]:
    """Where the chunks from `start` to `stop` end: every multiple of `chunk`, the snapshot step and
    `stop` (so the snapshot is taken exactly, and exactly `stop − start` steps run)."""
    ends = set(range((start // chunk + 1) * chunk, stop, chunk)) | {stop}
    if start < snapshot < stop:
        ends.add(snapshot)
    return sorted(e for e in ends if start < e <= stop)


@dataclass
class TrainResult:
    model: LearnedDenoiser             # EMA weights
    snapshot: LearnedDenoiser | None   # EMA at `snapshot` steps, if asked
    losses: np.ndarray                 # [steps_done] training loss per step
    path: Path                         # the final checkpoint
    resumed_from: int                  # 0 for a fresh run
    loaded: bool                       # True when a finished checkpoint was reused


def finished_checkpoint(path: Path) -> Path | None:
    """The finished checkpoint for `path`: in the cache folder, else among the shipped weights."""
    for p in (path, SHIPPED / path.name):
        if p.is_file():
            return p
    return None


def train(tcfg: TrainConfig, *, mixture: ConditionalMixture | None = None, folder: str | Path | None = None,
          tag: str = "", until: int | None = None, progress: bool | Callable[[float, str], None] = True,
          save_every_s: float = 20.0, model_cfg=None, fresh: bool = False) -> TrainResult | None:
    """Train one network, or load it if a finished checkpoint with the same config exists.

    Resumes from `<checkpoint>.state.npz` after an interruption. `until` stops after exactly that
    many steps (with the state saved) and returns None when the run is not finished: the
    programmatic form of a kill. `progress` is True for a tqdm bar, or a callback(fraction, text)
    (the app's progress bar).

    `mixture` may be any data source with `sample`, `sigma_data`, `to_dict`, `dim`, `num_classes`
    (an image set of toy.images.data adds `arrays` and `sample_batch`); `model_cfg` overrides the
    MLP built from `tcfg` (any config with `build(seed)`, `to_dict()` and `num_blocks`). `fresh`
    trains from step 0 whatever finished or interrupted run exists.
    """
    tcfg = tcfg.validate()
    mixture = mixture if mixture is not None else get_preset(tcfg.preset)
    mcfg = model_cfg if model_cfg is not None else model_config(tcfg, mixture)
    config = full_config(tcfg, mixture, mcfg)
    path = checkpoint_path(tcfg, mixture, folder, tag, mcfg)
    state_path = path.with_suffix(".state.npz")
    stop = tcfg.steps if until is None else min(tcfg.steps, check_int("until", until, low=0))
    done = None if fresh else finished_checkpoint(path)
    # Loading needs only the structure: build it abstractly (no initialisation to compute or compile).
    graphdef, params = nnx.split(nnx.eval_shape(lambda: mcfg.build(tcfg.seed)) if done else mcfg.build(tcfg.seed))
    tx = optimizer(tcfg)
    if done is not None:
        trees = {"ema": params} | ({"snapshot": params} if tcfg.snapshot else {})
        loaded, header = checkpoint.load(done, trees, config)
        snap = LearnedDenoiser(graphdef, loaded["snapshot"], mcfg) if tcfg.snapshot else None
        return TrainResult(LearnedDenoiser(graphdef, loaded["ema"], mcfg), snap,
                           np.asarray(header["meta"].get("losses", []), np.float32), done, 0, True)

    state, losses = init_state(params, tx), []
    if state_path.exists() and not fresh:
        loaded, header = checkpoint.load(state_path, {"state": state}, config)
        state, losses = loaded["state"], list(header["meta"].get("losses", []))
    resumed_from = int(state.step)

    def save_state(s: TrainState):
        try:      # a resume point: if the disk is full, training goes on and the finished run is rescued below
            checkpoint.save(state_path, {"state": s}, config, {"losses": [float(v) for v in losses]})
        except OSError as e:
            print(f"warning: could not save the resume point {str(state_path)!r} ({e.strerror}); training goes on",
                  file=sys.stderr)

    run = chunk_runner(tcfg, mixture, graphdef)
    data = mixture.arrays() if hasattr(mixture, "arrays") else None
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=tcfg.steps, initial=resumed_from, desc=f"train {path.stem}", unit="step", leave=False)
    last_save = time.monotonic()
    try:
        for end in chunk_ends(resumed_from, stop, tcfg.chunk, tcfg.snapshot):
            new, chunk_losses = run(state, data, end - int(state.step))
            chunk_losses = np.asarray(chunk_losses)
            if not np.all(np.isfinite(chunk_losses)):
                raise ToyError(f"training diverged (non-finite loss) between steps {int(state.step)} and {end}; "
                               f"lower lr (now {tcfg.lr})")
            state = replace(new, snapshot=new.ema) if end == tcfg.snapshot else new
            losses += chunk_losses.tolist()
            if bar is not None:
                bar.update(end - bar.n)
                bar.set_postfix(loss=f"{chunk_losses.mean():.4f}")
            elif callable(progress):
                progress(end / tcfg.steps, f"{path.stem}: step {end}/{tcfg.steps}")
            if time.monotonic() - last_save > save_every_s and end < stop:
                save_state(state)
                last_save = time.monotonic()
    except KeyboardInterrupt:       # Ctrl-C: keep everything done so far, then stop
        save_state(state)
        raise
    finally:
        if bar is not None:
            bar.close()
    if int(state.step) < tcfg.steps:     # stopped early on request: keep the state for a resume
        save_state(state)
        return None
    final = {"ema": state.ema} | ({"snapshot": state.snapshot} if tcfg.snapshot else {})
    meta = {"losses": [float(v) for v in losses], "finished": True}
    try:
        checkpoint.save(path, final, config, meta)
    except OSError as e:        # the disk filled during training: the trained network is not lost
        rescue = Path(tempfile.gettempdir()) / path.name
        try:
            checkpoint.save(rescue, final, config, meta)
        except OSError:
            raise ToyError(f"the trained network could not be saved in {str(path)!r} nor in {str(rescue)!r} "
                           f"({e.strerror}); free some space and run again") from None
        raise ToyError(f"the trained network could not be saved in {str(path)!r} ({e.strerror}); it is saved in "
                       f"{str(rescue)!r}: move it into the cache folder and run again to use it") from None
    state_path.unlink(missing_ok=True)        # gone already if another process finished the same run
    snap = LearnedDenoiser(graphdef, state.snapshot, mcfg) if tcfg.snapshot else None
    return TrainResult(LearnedDenoiser(graphdef, state.ema, mcfg), snap, np.asarray(losses, np.float32), path,
                       resumed_from, False)


# -- model sets ----------------------------------------------------------------------------------

ROLES = ("main", "small", "early", "blockdrop")    # early is the main run's snapshot, not a run of its own
BLOCK_DROP = 0.1                                    # the blockdrop variant's stochastic depth


def derived_seed(seed: int, offset: int = 1) -> int:
    """A second seed from a seed, inside the one seed range [0, 2³¹ − 1]: seed + offset, wrapped
    (every documented seed works, 2³¹ − 1 included; the seeds of the shipped networks are unchanged)."""
    return (int(seed) + offset) % (SEED_MAX + 1)


def model_set_configs(preset: str, quick: bool = False, seed: int = 0) -> dict[str, TrainConfig]:
    """The training runs of a preset's model set: main, small (the smaller weak model) and
    blockdrop (main with stochastic depth); the early weak model is main's snapshot.
    Quick: about 30 s per run on a 2-core CPU; full: a few minutes per run."""
    steps, batch = (1500, 512) if quick else (8000, 2048)
    snap = (steps // 4) // 100 * 100
    main = TrainConfig(preset=preset, width=64, num_blocks=8, steps=steps, batch=batch, seed=seed, snapshot=snap)
    small = replace(main, width=32, num_blocks=4, steps=steps // 4, snapshot=0, seed=derived_seed(seed))
    blockdrop = replace(main, block_drop=BLOCK_DROP, snapshot=0)
    return {"main": main, "small": small, "blockdrop": blockdrop}


def train_models(preset: str, *, quick: bool = False, seed: int = 0, folder: str | Path | None = None,
                 progress: bool | Callable[[float, str], None] = True, mixture: ConditionalMixture | None = None,
                 roles: tuple[str, ...] = ROLES, fresh: bool = False) -> dict[str, LearnedDenoiser]:
    """Train (or load from the cache or the shipped weights) the model set of a preset: the
    networks named in `roles`, of {"main", "small", "early", "blockdrop"}."""
    for r in roles:
        if r not in ROLES:
            raise ToyError(f"unknown model role {r!r}: choose from {', '.join(ROLES)}")
    mixture = mixture if mixture is not None else get_preset(preset)
    cfgs = {r: c for r, c in model_set_configs(preset, quick, seed).items()
            if r in roles or (r == "main" and "early" in roles)}
    out, cb = {}, progress
    for i, (role, tcfg) in enumerate(cfgs.items()):
        if callable(progress):
            cb = lambda f, text, i=i: progress((i + f) / len(cfgs), text)
        res = train(tcfg, mixture=mixture, folder=folder, tag=role, progress=cb, fresh=fresh)
        out[role] = res.model
        if role == "main":
            out["early"] = res.snapshot
    return {r: out[r] for r in roles}
