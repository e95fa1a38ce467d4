"""Is a DiT's sub-network a weak model? The S² mechanism of toy/mechanism.py on the image DiT.

    python -m toy images mechanism [--data digits|cifar10|PATH] [--quick] [--json m.json]

Along the DiT's own CFG sampler, at every σ and over the masks S² draws, the S² signal
s = D_c − D̂_c(m) is fitted as α·g + β·h (g = D_c − D_∅, h = D_c − x; `toy.mechanism.decompose_states`,
the same code the toys use). Images have no closed form, so the model error is measured against a
reference network R, a stronger DiT of the same data: `cos_ref` = cos(s, R_c − D_c). On the toys
the same proxy sits beside the exact `cos_error` (`toy.figures`, mechanism.md) to show how well it
tracks the truth.

`depth_sweep` trains DiTs of one width at depths DEPTHS (on digits in about a minute each on a 2-core
CPU; they ship) and measures S² − CFG in Fréchet distance (paired by seed) with α, β and cos_ref
where S² acts, with about 10% of the droppable blocks dropped (the paper's ratio) and with one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from toy import mechanism as M
from toy.diffusion import SamplerConfig, sample
from toy.errors import ToyError, check_int
from toy.evaluation import SAMPLES, summarize
from toy.guidance import GuidanceConfig, num_dropped
from toy.images.data import ImageData
from toy.images.pipeline import ImageConfig, generate_all, model_configs, quick_config
from toy.train import TrainConfig, train

DEPTHS = (4, 8, 16, 28)            # the DiT depth sweep (the paper's SiT-XL/DiT-XL have 28 blocks)
SWEEP_STEPS = 1000                 # training steps of each sweep DiT (width 32: the quick DiT's shape)
SERIES = ("alpha", "beta", "r2", "ratio", "cos_ref")
REFERENCE_FACTOR = 4               # the full run's reference: main's size trained this many times as long


@dataclass(frozen=True)
class DiTMechanismConfig:
    samples: int | None = None     # CFG sampler states per class; default 200 quick, 500 full
    masks: int = 8                 # masks per σ, drawn as S² draws them
    seed: int = 0

    def num_samples(self, quick: bool) -> int:
        return self.samples if self.samples is not None else (200 if quick else 500)

    def validate(self) -> "DiTMechanismConfig":
        if self.samples is not None:
            check_int("--samples", self.samples, low=10, high=100_000)
        check_int("--masks", self.masks, low=1, high=1024)
        check_int("--sample-seed", self.seed, low=0, high=2**31 - 1)
        return self


def reference_configs(icfg: ImageConfig, data: ImageData, quick: bool) -> tuple[TrainConfig, object, str, str]:
    """(training config, DiT config, checkpoint tag, description) of the reference DiT. Quick: the full experiment's
    main DiT (DiT-XS, width 64, 2500 steps of batch 128; it ships for digits), larger than the quick
    DiT-XXS and trained on 5× as many images. Full: main's own size trained REFERENCE_FACTOR× as long."""
    if quick:
        full = ImageConfig(data=icfg.data, classes=icfg.classes, image_size=icfg.image_size, seed=icfg.seed)
        tcfg, mcfg = model_configs(full, data)["main"]
        what = f"DiT-{full.size} (width {mcfg.width}, {mcfg.depth} blocks), {tcfg.steps} steps of batch {tcfg.batch}"
        return tcfg, mcfg, "main", what          # the very run the full experiment trains: one checkpoint
    else:
        tcfg, mcfg = model_configs(icfg, data)["main"]
        tcfg = replace(tcfg, steps=tcfg.steps * REFERENCE_FACTOR, snapshot=0)
        what = (f"DiT-{icfg.size} (width {mcfg.width}, {mcfg.depth} blocks), {tcfg.steps} steps of batch {tcfg.batch} "
                f"({REFERENCE_FACTOR}× main's)")
    return tcfg, mcfg, "reference", what


def reference_network(icfg: ImageConfig, data: ImageData, quick: bool, *, folder: str | Path | None = None,
                      progress: bool | Callable[[float, str], None] = True):
    """The reference DiT (trained, loaded or resumed) and its description."""
    tcfg, mcfg, tag, what = reference_configs(icfg, data, quick)
    res = train(tcfg, mixture=data, folder=folder, tag=tag, progress=progress, model_cfg=mcfg)
    if res is None:
        raise ToyError("training stopped early")
    return res.model, what


def analyze(main, reference, icfg: ImageConfig, data: ImageData, mcfg: DiTMechanismConfig, *, n: int,
            guidance: GuidanceConfig | None = None) -> dict:
    """The decomposition along the DiT's CFG sampler, each class on its own states; the series are the
    mean over classes of the per-class fits. {"sigmas", alpha, beta, r2, ratio, cos_ref (lists over
    σ), "per_class", "interval_medians", "blocks_dropped"}."""
    g = replace(guidance or GuidanceConfig(scale=icfg.scale, s2_scale=icfg.s2_scale), method="cfg")
    scfg = SamplerConfig(steps=icfg.sampler_steps)
    per_class = []
    for c in range(data.num_classes):
        key = jax.random.fold_in(jax.random.key(mcfg.seed), c)
        run = sample(main, g, scfg, jax.random.fold_in(key, SAMPLES), n, c, return_trajectory=True)
        per_class.append(M.decompose_states(main, {"cos_ref": reference}, np.asarray(run.trajectory), run.sigmas, c, g,
                                            masks=mcfg.masks, key=jax.random.fold_in(key, 1000)))
    out = {"sigmas": per_class[0]["sigmas"]}
    for k in SERIES:
        with np.errstate(all="ignore"):
            out[k] = np.nanmean(np.array([r[k] for r in per_class], np.float64), 0).tolist()
    out["interval_medians"] = {k: M.interval_median(out, k, g.interval) for k in SERIES}
    out["per_class"] = {data.class_names[c]: r for c, r in enumerate(per_class)}
    out["blocks_dropped"] = num_dropped(main.num_blocks, g.exclude, g.drop_ratio, g.num_drop)
    return out


def run_mechanism(icfg: ImageConfig, data: ImageData, quick: bool, mcfg: DiTMechanismConfig = DiTMechanismConfig(), *,
                  folder: str | Path | None = None, progress: bool = True, main=None) -> dict:
    """`python -m toy images mechanism`: the main DiT of `icfg` against its reference."""
    mcfg = mcfg.validate()
    if main is None:
        tcfg, dcfg = model_configs(icfg, data)["main"]
        res = train(tcfg, mixture=data, folder=folder, tag="main", progress=progress, model_cfg=dcfg)
        if res is None:
            raise ToyError("training stopped early")
        main = res.model
    reference, what = reference_network(icfg, data, quick, folder=folder, progress=progress)
    out = analyze(main, reference, icfg, data, mcfg, n=mcfg.num_samples(quick))
    out["settings"] = {"data": data.name, "classes": list(data.class_names), "main": f"DiT-{icfg.size} "
                       f"(width {main.cfg.width}, {main.cfg.depth} blocks), {icfg.train_steps} steps",
                       "reference": what, "samples_per_class": mcfg.num_samples(quick), "masks": mcfg.masks,
                       "seed": mcfg.seed, "guidance_scale": icfg.scale, "sampler_steps": icfg.sampler_steps,
                       "blocks_dropped": out["blocks_dropped"], "quick": quick}
    return out


# -- depth ---------------------------------------------------------------------------------------

def sweep_configs(data: ImageData, depths=DEPTHS, steps: int = SWEEP_STEPS) -> dict[int, tuple[TrainConfig, object]]:
    """The sweep's DiTs: the quick DiT-XXS (width 32) at each depth, trained `steps` steps."""
    tcfg, mcfg = model_configs(quick_config(train_steps=steps), data)["main"]
    return {d: (replace(tcfg, num_blocks=d, snapshot=0), replace(mcfg, depth=d)) for d in depths}


def sweep_network(data: ImageData, depth: int, *, steps: int = SWEEP_STEPS, folder=None, progress=True):
    tcfg, mcfg = sweep_configs(data, (depth,), steps)[depth]
    res = train(tcfg, mixture=data, folder=folder, tag=f"depth-{depth}", progress=progress, model_cfg=mcfg)
    if res is None:
        raise ToyError("training stopped early")
    return res.model


def depth_sweep(data: ImageData, reference, fnet, real_feats, icfg: ImageConfig, *, depths=DEPTHS,
                steps: int = SWEEP_STEPS, mech: DiTMechanismConfig = DiTMechanismConfig(samples=200),
                folder=None, progress=True) -> dict:
    """S² − CFG in Fréchet distance (paired by seed: the same initial noise), per depth, with about
    10% of the droppable blocks dropped ("ratio") and with one ("one"), and α, β, cos_ref medians
    where S² acts (the 10% masks). icfg gives λ, ω, the sampler, the seeds and the generations per class."""
    from toy.images.features import image_metrics

    out = {"depths": list(depths), "train_steps": steps, "ratio": [], "one": [], "mechanism": [], "blocks_dropped": []}
    for d in depths:
        net = sweep_network(data, d, steps=steps, folder=folder, progress=progress)
        models = {"main": net, icfg.weak: None}          # no weak model: CFG and S² only
        fd = {}
        for name, kw in (("cfg", {}), ("ratio", {}), ("one", {"num_drop": 1})):
            method = "cfg" if name == "cfg" else "s2"
            fd[name] = [image_metrics(fnet, real_feats, *generate_all(models, method, icfg, data, s, **kw))["fd"]
                        for s in icfg.seeds]
        for name in ("ratio", "one"):
            out[name].append({"effect": summarize(np.subtract(fd[name], fd["cfg"])), "s2": summarize(fd[name]),
                              "cfg": summarize(fd["cfg"])})
        m = analyze(net, reference, icfg, data, mech, n=mech.num_samples(True))
        out["mechanism"].append(m)
        out["blocks_dropped"].append(m["blocks_dropped"])
    return out


def describe(icfg: ImageConfig, data: ImageData) -> dict:
    """The data and the sampling settings of a sweep, for its JSON and captions."""
    return {"data": data.name, "classes": list(data.class_names), **{k: v for k, v in dataclasses.asdict(icfg).items()
                                                                      if k in ("scale", "s2_scale", "sampler_steps",
                                                                               "per_class", "seeds")}}


def figure_config(quick: bool) -> tuple[ImageConfig, DiTMechanismConfig, tuple[int, ...]]:
    """The depth sweep's settings in the figures (fig_s2_transformer): λ, ω, Heun steps, generations
    per class and seeds; the mechanism's states and masks; the depths (quick: the shallowest and the
    paper's 28)."""
    if quick:
        return (quick_config(seeds=(0,), per_class=40, sampler_steps=12), DiTMechanismConfig(samples=100, masks=4),
                (DEPTHS[0], DEPTHS[-1]))
    return ImageConfig(seeds=(0, 1, 2), per_class=150, sampler_steps=32), DiTMechanismConfig(samples=200, masks=8), DEPTHS


def app_series(depth: int, guidance: GuidanceConfig, *, samples: int = 100, masks: int = 4) -> dict:
    """The decomposition of the depth sweep's DiT (shipped weights) at the app's λ and drop settings:
    what the app draws beside its own network's curves."""
    from toy.images.data import load_digits

    data = load_digits()
    icfg = quick_config(scale=guidance.scale, sampler_steps=12)
    net = sweep_network(data, depth, progress=False)
    reference, _ = reference_network(icfg, data, True, progress=False)
    return analyze(net, reference, icfg, data, DiTMechanismConfig(samples=samples, masks=masks), n=samples,
                   guidance=guidance)
