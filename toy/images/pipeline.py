"""The image experiment end to end (paper appendix B.1.3, Fig. 4 and Fig. 15).

train: a class-conditional DiT (toy/images/dit.py) with the core trainer (EDM loss, EMA, atomic
resumable checkpoints), plus weak models for Autoguidance (a smaller DiT and the main run's early
snapshot). sample: any guidance method of toy/guidance.py with the core sampler. evaluate: features
of real and generated images (toy/images/features.py), metrics per method over seeds, t-SNE (fig4_tsne),
the fixed-block grid (fig15_fixed_block_grid) and a results table.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from matplotlib.figure import Figure

from toy import files
from toy.diffusion import SamplerConfig, sample
from toy.errors import ToyError, check_int
from toy.evaluation import summarize
from toy.guidance import BASELINES, GuidanceConfig, label
from toy.images.data import ImageData, load_dataset
from toy.images.dit import DIT_SIZES, DiTConfig, dit_config
from toy.plotting import image_grid, save
from toy.train import TrainConfig, derived_seed, train

FIG4_METHODS = ("none", "cfg", "autoguidance", "s2-naive", "s2")
TABLE_METHODS = FIG4_METHODS + BASELINES


@dataclass(frozen=True)
class ImageConfig:
    data: str = "digits"                 # "digits" (embedded) or the path of a CIFAR-10 archive
    classes: tuple[int, ...] | None = None   # source class ids; default horse/automobile (7, 1)
    image_size: int = 32                 # CIFAR-10 only: 32, or 16/8 average-pooled for the CPU
    size: str = "XS"                     # DiT size (toy.images.dit.DIT_SIZES)
    train_steps: int = 2500              # digits: about 6 minutes on a 2-core CPU (docs/images.md)
    batch: int = 128
    lr: float = 1e-3
    seed: int = 0
    sampler_steps: int = 32
    per_class: int = 150                 # generations per class, method and seed
    seeds: tuple[int, ...] = (0, 1, 2)
    scale: float = 3.0                   # λ
    s2_scale: float = 0.25               # ω
    weak: str = "small"                  # Autoguidance's weak model: small or early
    methods: tuple[str, ...] = TABLE_METHODS   # rows of the table (fig4 panels are FIG4_METHODS)
    clip: str | None = None              # a folder with Flax CLIP weights: CLIP features instead of the classifier's

    def validate(self) -> "ImageConfig":
        check_int("train_steps", self.train_steps, low=100)
        check_int("batch", self.batch, low=1, high=1 << 16)
        check_int("sampler_steps", self.sampler_steps, low=2, high=1000)
        check_int("per_class", self.per_class, low=5, high=100_000)
        if not self.seeds:
            raise ToyError("seeds must list at least one seed")
        if self.size not in DIT_SIZES:
            raise ToyError(f"unknown DiT size {self.size!r}: choose from {', '.join(DIT_SIZES)}")
        if self.weak not in ("small", "early"):
            raise ToyError(f"weak must be small or early, got {self.weak!r}")
        missing = set(FIG4_METHODS) - set(self.methods)
        if missing:
            raise ToyError(f"methods must include the Fig. 4 methods {', '.join(FIG4_METHODS)}; missing {sorted(missing)}")
        return self


def quick_config(**kw) -> ImageConfig:
    """Seconds-to-a-minute settings for tests and CI."""
    return ImageConfig(**{**dict(size="XXS", train_steps=300, batch=64, sampler_steps=12, per_class=40, seeds=(0,),
                                 methods=FIG4_METHODS, weak="early"), **kw})


def model_configs(icfg: ImageConfig, data: ImageData) -> dict[str, tuple[TrainConfig, DiTConfig]]:
    """The main DiT and the small weak DiT (half width, half depth, a quarter of the steps)."""
    mcfg = dit_config(icfg.size, image_size=data.image_size, channels=data.channels,
                      num_classes=data.num_classes, sigma_data=round(data.sigma_data(), 6))
    if data.image_size % mcfg.patch:
        mcfg = replace(mcfg, patch=1 if data.image_size % 2 else 2)
    chunk = 100
    snap = max(chunk, (icfg.train_steps // 4) // chunk * chunk)
    main = TrainConfig(preset=f"images-{data.name}", width=mcfg.width, num_blocks=mcfg.depth, steps=icfg.train_steps,
                       batch=icfg.batch, lr=icfg.lr, warmup=min(200, icfg.train_steps // 10), seed=icfg.seed,
                       chunk=chunk, snapshot=snap, p_mean_offset=-0.5, p_std=1.2, ema_halflife=0.05)
    small_cfg = replace(mcfg, width=max(mcfg.heads * 8, mcfg.width // 2), depth=max(2, mcfg.depth // 2))
    small = replace(main, width=small_cfg.width, num_blocks=small_cfg.depth,
                    steps=max(chunk, icfg.train_steps // 4 // chunk * chunk), snapshot=0, seed=derived_seed(icfg.seed))
    return {"main": (main, mcfg), "small": (small, small_cfg)}


def train_image_models(icfg: ImageConfig, data: ImageData, *, folder: str | Path | None = None,
                       progress: bool | Callable[[float, str], None] = True) -> dict:
    """Train (or load, or resume) the main DiT and its weak models: {"main", "small", "early"}. The
    small DiT is trained only when it is the weak model in use (`icfg.weak == "small"`)."""
    out = {"small": None}
    for role, (tcfg, mcfg) in model_configs(icfg.validate(), data).items():
        if role == "small" and icfg.weak != "small":      # not needed: skip its training
            continue
        res = train(tcfg, mixture=data, folder=folder, tag=role, progress=progress, model_cfg=mcfg)
        if res is None:
            raise ToyError("training stopped early")
        out[role] = res.model
        out[f"{role}_result"] = res
        if role == "main":
            out["early"] = res.snapshot
    return out


def generate(models: dict, method: str, n: int, label: int, icfg: ImageConfig, seed: int, **gkw) -> np.ndarray:
    """n flat images [n, d] of class `label` with one guidance method."""
    g = GuidanceConfig(method=method, scale=icfg.scale, s2_scale=icfg.s2_scale, **gkw)
    key = jax.random.fold_in(jax.random.key(seed), label)
    res = sample(models["main"], g, SamplerConfig(steps=icfg.sampler_steps), key, n, label,
                 weak=models[icfg.weak])
    return np.asarray(res.x)


def generate_all(models: dict, method: str, icfg: ImageConfig, data: ImageData, seed: int, **gkw):
    """per_class images of every class: (images [C·per_class, d], target labels)."""
    xs = [generate(models, method, icfg.per_class, c, icfg, seed, **gkw) for c in range(data.num_classes)]
    return np.concatenate(xs), np.repeat(np.arange(data.num_classes), icfg.per_class)


def evaluate(icfg: ImageConfig, data: ImageData, models: dict, out: str | Path = "figures",
             progress: bool = True) -> dict:
    """Every method over the seeds: metrics table, t-SNE figure and fixed-block grid in `out`."""
    from toy.images import features as F

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fnet = F.train_classifier(data.flat(), data.labels, data.num_classes, seed=icfg.seed)
    if icfg.clip:        # CLIP embeddings for every feature-space metric; the classifier still judges classes
        clip = F.clip_feature_net(icfg.clip, data.images.shape[1:])
        fnet = _WithFeatures(fnet, clip)
    real = data.flat()
    real_feats = fnet.features(real)
    todo = [(m, s) for s in icfg.seeds for m in icfg.methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo) + models["main"].num_blocks, desc="evaluate", unit="run", leave=False)
    rows, gens = {}, {}
    for m, s in todo:
        x, y = generate_all(models, m, icfg, data, s)
        rows.setdefault(m, []).append(F.image_metrics(fnet, real_feats, x, y))
        if s == icfg.seeds[0]:
            gens[m] = (x, y)
        if bar is not None:
            bar.update(1)
    fixed = []
    K = models["main"].num_blocks
    for k in range(K):        # paper Fig. 15: one block dropped for all steps (fixed-block guidance)
        x = np.stack([generate(models, "fixed-block", 8, c, icfg, icfg.seeds[0], fixed_blocks=(k,), interval=(0.0, 1.0))
                      for c in range(data.num_classes)])                          # [C, 8, d]
        fixed.append(x)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    summary = {m: {k: summarize([r[k] for r in rs]) for k in rs[0]} for m, rs in rows.items()}
    real_sep = F.class_separation(real_feats, data.labels)
    result = {"config": {**dataclasses.asdict(icfg), "data_name": data.name, "class_names": list(data.class_names)},
              "features": fnet.name, "real_separation": real_sep, "metrics": summary, "per_seed": rows,
              "seconds": time.perf_counter() - t0}
    files.write_json(out / "images_results.json", result)
    files.write_text(out / "images_results.md", results_table(result))
    fig4_tsne(data, real_feats, {m: (fnet.features(gens[m][0]), gens[m][1], gens[m][0]) for m in FIG4_METHODS},
              icfg, fnet.name, out / "fig4_tsne.png")
    fig15_grid(data, fixed, icfg, out / "fig15_fixed_block_grid.png")
    return result


@dataclass(frozen=True, eq=False)
class _WithFeatures:
    """A classifier's predictions with another feature extractor's features (CLIP)."""

    classifier: object
    extractor: object

    @property
    def name(self) -> str:
        return f"{self.extractor.name}; class accuracy from a classifier trained on the real images"

    def features(self, x):
        return self.extractor.features(x)

    def predict(self, x):
        return self.classifier.predict(x)


def settings_line(icfg: ImageConfig, data: ImageData) -> str:
    return (f"{data.name} classes {', '.join(data.class_names)}; DiT-{icfg.size}, {icfg.train_steps} training steps; "
            f"λ = {icfg.scale}, ω = {icfg.s2_scale}, {icfg.sampler_steps} Heun steps, weak = {icfg.weak}; "
            f"seeds {', '.join(map(str, icfg.seeds))}")


def results_table(result: dict) -> str:
    c = result["config"]
    lines = [f"# Image experiment: metrics per method (mean ± std over seeds {', '.join(map(str, c['seeds']))})", "",
             f"Data: {c['data_name']} ({', '.join(c['class_names'])}), DiT-{c['size']}, {c['train_steps']} steps; "
             f"λ = {c['scale']}, ω = {c['s2_scale']}; {c['per_class']} generations per class.",
             f"Features: {result['features']}. Real-data class separation: {result['real_separation']:.3f}.", "",
             "| method | Fréchet distance ↓ | class accuracy ↑ | precision ↑ | recall ↑ | class separation |",
             "|---|---|---|---|---|---|"]
    for m, s in result["metrics"].items():
        cell = lambda k: "n/a" if s[k]["mean"] is None else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"
        lines.append(f"| {label(m)} | {cell('fd')} | {cell('accuracy')} | {cell('precision')} | "
                     f"{cell('recall')} | {cell('separation')} |")
    return "\n".join(lines) + "\n"


def picture(images: np.ndarray, data: ImageData) -> np.ndarray:
    """[rows, cols, d] flat images of `data`'s shape → one [rows·H, cols·W, C] picture in [0, 1]."""
    return image_grid(images, data.image_size, data.channels)


def fig4_tsne(data: ImageData, real_feats: np.ndarray, gens: dict, icfg: ImageConfig, feat_name: str,
              path: Path) -> None:
    """Paper Fig. 4: t-SNE of generated features over real-data density contours, and samples."""
    from scipy.stats import gaussian_kde

    from toy.images.features import tsne

    rng = np.random.default_rng(0)
    keep = rng.permutation(len(real_feats))[:600]
    sets = [real_feats[keep]] + [gens[m][0] for m in FIG4_METHODS]
    emb = tsne(sets, seed=icfg.seeds[0])
    real_xy, real_y = emb[0], data.labels[keep]
    lo, hi = np.concatenate(emb).min(0) - 3, np.concatenate(emb).max(0) + 3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    panels = ["real"] + list(FIG4_METHODS)
    fig = Figure(figsize=(3.0 * len(panels), 6.6))
    axes = fig.subplots(2, len(panels), gridspec_kw={"height_ratios": [1, 0.9]})
    for i, name in enumerate(panels):
        ax = axes[0, i]
        for c in range(data.num_classes):
            pts = real_xy[real_y == c]
            if len(pts) > 3:
                dens = gaussian_kde(pts.T)(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
                ax.contour(gx, gy, dens, levels=5, colors=colors[c % 4], linewidths=0.7, alpha=0.6)
        xy, y = (real_xy, real_y) if name == "real" else (emb[i], gens[name][1])
        for c in range(data.num_classes):
            ax.scatter(*xy[y == c].T, s=4, color=colors[c % 4], alpha=0.7, label=data.class_names[c])
        ax.set_title("real data" if name == "real" else label(name), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax = axes[1, i]
        if name == "real":
            pick = np.stack([data.flat()[np.flatnonzero(data.labels == c)[:4]] for c in range(data.num_classes)])
        else:
            x, y = gens[name][2], gens[name][1]
            pick = np.stack([x[y == c][:4] for c in range(data.num_classes)])
        ax.imshow(picture(pick, data).squeeze(), cmap="gray" if data.channels == 1 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower left", markerscale=3)
    fig.suptitle(f"t-SNE of image features (cf. paper Fig. 4): the generations of seed {icfg.seeds[0]}. Features: "
                 f"{feat_name}.\n{settings_line(replace(icfg, seeds=icfg.seeds[:1]), data)}", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def fig15_grid(data: ImageData, fixed: list[np.ndarray], icfg: ImageConfig, path: Path) -> None:
    """Paper Fig. 15: samples of fixed-block guidance, one row per dropped block, same seeds."""
    K, C = len(fixed), data.num_classes
    fig = Figure(figsize=(max(7.0, 2.6 * C + 0.6), 0.55 * K + 1.0))
    axes = fig.subplots(K, C, squeeze=False)
    for k in range(K):
        for c in range(C):
            ax = axes[k, c]
            ax.imshow(picture(fixed[k][c][None], data).squeeze(), cmap="gray" if data.channels == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"drop {k}", rotation=0, ha="right", va="center", fontsize=8)
            if k == 0:
                ax.set_title(data.class_names[c], fontsize=9)
    fig.suptitle(f"Fixed-block guidance, each block dropped at every step (cf. paper Fig. 15)\n"
                 f"{settings_line(replace(icfg, seeds=icfg.seeds[:1]), data)}", fontsize=7)
    fig.tight_layout()
    save(fig, path)


def pipeline_models(icfg: ImageConfig, *, folder: str | Path | None = None,
                    progress: bool | Callable[[float, str], None] = True) -> tuple[ImageData, dict]:
    """The data of `icfg` and its trained (or loaded) models: what `run_pipeline` evaluates."""
    data = load_dataset(icfg.data, icfg.classes, icfg.image_size)
    return data, train_image_models(icfg, data, folder=folder, progress=progress)


def run_pipeline(icfg: ImageConfig, *, out: str | Path = "figures", folder: str | Path | None = None,
                 progress: bool = True) -> dict:
    """Data → models → every method → features, metrics, figures."""
    data, models = pipeline_models(icfg, folder=folder, progress=progress)
    return evaluate(icfg, data, models, out, progress)
