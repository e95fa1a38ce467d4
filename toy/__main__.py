"""Command line: `python -m toy train|compare ...` and `python -m toy images train|sample|evaluate`
(see README.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toy.errors import ToyError


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # one clear line, not the usage block
        raise ToyError(message)


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _seeds(s: str) -> tuple[int, ...]:
    """`3` means seeds 0, 1, 2; `4,7,9` lists them."""
    try:
        parts = [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,4,7), got {s!r}") from None
    if len(parts) == 1 and "," not in s:
        if parts[0] < 1:
            raise argparse.ArgumentTypeError(f"--seeds count must be >= 1, got {s}")
        return tuple(range(parts[0]))
    if not parts or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"--seeds list must hold integers >= 0, got {s!r}")
    return tuple(parts)


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in s.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m toy", description="S²-Guidance toy simulator")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (or load) the main and weak models of a preset")
    t.add_argument("--preset", required=True, help="gmm1d, gmm2d, tree2d or a mixture .json file")
    t.add_argument("--quick", action="store_true", help="small training run (seconds)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cache-dir", default=None, help="checkpoint folder (default $TOY_CACHE_DIR or ~/.cache/s2-toy)")

    c = sub.add_parser("compare", help="compare guidance methods against the exact ground truth")
    c.add_argument("--preset", default="gmm2d")
    c.add_argument("--methods", default="none,cfg,autoguidance,s2-naive,s2",
                   help="comma-separated: none, cfg, autoguidance, s2, s2-naive, fixed-block")
    c.add_argument("--guidance-scale", type=_float, default=3.0, help="λ (1 = no guidance)")
    c.add_argument("--s2-scale", type=_float, default=0.25, help="ω (0 = CFG)")
    c.add_argument("--drop-ratio", type=_float, default=0.1, help="fraction of droppable blocks dropped, in (0, 1)")
    c.add_argument("--num-drop", type=int, default=None, help="blocks dropped per mask (overrides --drop-ratio)")
    c.add_argument("--exclude", type=_ints, default=(0,), help="blocks never dropped (default 0)")
    c.add_argument("--num-masks", type=int, default=4, help="N for s2-naive")
    c.add_argument("--fixed-blocks", type=_ints, default=(1,), help="dropped blocks of fixed-block")
    c.add_argument("--interval", type=_float, nargs=2, default=(0.1, 0.9), metavar=("START", "END"),
                   help="fraction of the sampler steps where S² applies")
    c.add_argument("--steps", type=int, default=32, help="sampler steps")
    c.add_argument("--solver", default="heun", help="heun or euler")
    c.add_argument("--samples", type=int, default=None, help="samples per method and seed")
    c.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="a count (3) or a list (0,4,7)")
    c.add_argument("--label", type=int, default=0, help="the class to sample")
    c.add_argument("--weak", default="small", help="Autoguidance weak model: small or early")
    c.add_argument("--exact", action="store_true", help="add rows with the exact closed-form denoiser")
    c.add_argument("--quick", action="store_true", help="quick-trained models, fewer samples")
    c.add_argument("--json", default=None, help="write the results here")
    c.add_argument("--cache-dir", default=None)

    im = sub.add_parser("images", help="the DiT image experiment: train, sample, evaluate (paper Fig. 4, 15)")
    isub = im.add_subparsers(dest="images_command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--data", default="digits",
                        help="digits (embedded, no download), cifar10 (the archive in --data-dir), or an archive path")
    common.add_argument("--download", action="store_true", help="with --data cifar10: fetch the official archive "
                        "(checksummed, resumable) if it is not in --data-dir")
    common.add_argument("--data-dir", default=None, help="where the CIFAR-10 archive lives (default $TOY_CACHE_DIR/data)")
    common.add_argument("--classes", type=_ints, default=None, help="source class ids (default 7,1: horse, automobile "
                        "on CIFAR-10; digits 7 and 1)")
    common.add_argument("--image-size", type=int, default=32, help="CIFAR-10 resolution: 32, or 16/8 for CPU runs")
    common.add_argument("--size", default=None, help="DiT size: XS, S, S/2, B/2 (default XS)")
    common.add_argument("--train-steps", type=int, default=None)
    common.add_argument("--batch", type=int, default=None)
    common.add_argument("--seed", type=int, default=0, help="training seed")
    common.add_argument("--weak", default=None, help="Autoguidance weak model: small or early (default small; "
                        "early with --quick)")
    common.add_argument("--guidance-scale", type=_float, default=3.0, help="λ")
    common.add_argument("--s2-scale", type=_float, default=0.25, help="ω")
    common.add_argument("--sampler-steps", type=int, default=None)
    common.add_argument("--quick", action="store_true", help="seconds-to-minutes settings (tests, CI)")
    common.add_argument("--cache-dir", default=None, help="checkpoint folder (default $TOY_CACHE_DIR or ~/.cache/s2-toy)")
    isub.add_parser("train", parents=[common], help="train (or load, or resume) the DiT and its weak models")
    sm = isub.add_parser("sample", parents=[common], help="generate images with one guidance method")
    sm.add_argument("--method", default="s2", help="none, cfg, autoguidance, s2, s2-naive, fixed-block, cfg++, "
                    "cfg-zero*, apg, guidance-interval")
    sm.add_argument("--label", type=int, default=None, help="source class id to generate (default: the first class)")
    sm.add_argument("--n", type=int, default=16, help="number of images")
    sm.add_argument("--sample-seed", type=int, default=0)
    sm.add_argument("--out", default="samples.png", help="image grid (PNG); the arrays go beside it as .npz")
    ev = isub.add_parser("evaluate", parents=[common], help="every method: metrics table, fig4_tsne, "
                         "fig15_fixed_block_grid")
    ev.add_argument("--seeds", type=_seeds, default=None, help="a count (3) or a list (0,4,7)")
    ev.add_argument("--per-class", type=int, default=None, help="generations per class, method and seed")
    ev.add_argument("--out", default="figures")
    ev.add_argument("--clip", default=None, metavar="DIR", help="a local folder with Flax CLIP weights (config.json, "
                    "flax_model.msgpack): CLIP image features instead of the classifier's (needs the clip extra)")
    return p


def _image_config(args):
    from toy.images import ImageConfig, quick_config
    from toy.train import cache_dir

    data = args.data
    if data == "cifar10":
        from toy.data import CIFAR10_URLS, download_cifar10
        folder = Path(args.data_dir) if args.data_dir else cache_dir() / "data"
        archive = folder / Path(CIFAR10_URLS["python"][0]).name
        if args.download:
            archive = download_cifar10(folder)
        elif not archive.exists():
            raise ToyError(f"no CIFAR-10 archive at {archive}: add --download to fetch it (about 170 MB), or pass "
                           f"--data PATH to an archive you have")
        data = str(archive)
    elif args.download:
        raise ToyError("--download works with --data cifar10")
    kw = {k: v for k, v in dict(data=data, classes=args.classes, image_size=args.image_size, size=args.size,
                                train_steps=args.train_steps, batch=args.batch, seed=args.seed, weak=args.weak,
                                scale=args.guidance_scale, s2_scale=args.s2_scale, sampler_steps=args.sampler_steps,
                                seeds=getattr(args, "seeds", None), per_class=getattr(args, "per_class", None),
                                clip=getattr(args, "clip", None)).items()
          if v is not None}
    return (quick_config(**kw) if args.quick else ImageConfig(**kw)).validate()


def _images(args) -> int:
    import numpy as np

    from toy.data import load_dataset
    from toy.images import evaluate, generate, train_image_models

    icfg = _image_config(args)
    data = load_dataset(icfg.data, icfg.classes, icfg.image_size)
    cmd = args.images_command
    if cmd == "sample" and args.label is not None and args.label not in data.classes:
        raise ToyError(f"--label {args.label} is not among the trained classes {list(data.classes)}")
    models = train_image_models(icfg, data, folder=args.cache_dir)
    if cmd == "train":
        for role in ("main", "small"):
            if f"{role}_result" not in models:
                continue
            r = models[f"{role}_result"]
            state = "loaded" if r.loaded else (f"resumed at step {r.resumed_from}" if r.resumed_from else "trained")
            print(f"{role:<6} {state:<20} final loss {float(r.losses[-max(1, len(r.losses) // 10):].mean()):.4f}  {r.path}")
        return 0
    if cmd == "sample":
        from toy.images import _grid
        label = data.classes.index(args.label) if args.label is not None else 0
        x = generate(models, args.method, args.n, label, icfg, args.sample_seed)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cols = int(np.ceil(np.sqrt(args.n)))
        pad = np.full((cols * cols - len(x), x.shape[1]), -1.0, x.dtype)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        grid = _grid(np.concatenate([x, pad]).reshape(cols, cols, -1), data).squeeze()
        plt.imsave(out, grid, cmap="gray" if data.channels == 1 else None, vmin=0, vmax=1)
        np.savez(out.with_suffix(".npz"), images=((x + 1) * 127.5).clip(0, 255).astype(np.uint8).reshape(
            (len(x), data.image_size, data.image_size, data.channels)), class_id=data.classes[label])
        print(f"wrote {out} and {out.with_suffix('.npz')} ({args.n} × {data.class_names[label]}, {args.method})")
        return 0
    res = evaluate(icfg, data, models, args.out)
    print(Path(args.out, "images_results.md").read_text())
    print(f"wrote fig4_tsne.png, fig15_fixed_block_grid.png, images_results.md/json to {args.out}/ "
          f"in {res['seconds']:.0f} s")
    return 0


def _train(args) -> int:
    from toy.mixtures import get_preset
    from toy.train import model_set_configs, train

    mixture = get_preset(args.preset)
    for role, tcfg in model_set_configs(args.preset, args.quick, args.seed).items():
        res = train(tcfg, mixture=mixture, folder=args.cache_dir, tag=role)
        state = "loaded" if res.loaded else (f"resumed at step {res.resumed_from}" if res.resumed_from else "trained")
        tail = float(res.losses[-max(1, len(res.losses) // 10):].mean()) if len(res.losses) else float("nan")
        print(f"{role:<6} {state:<20} final loss {tail:.4f}  {res.path}")
        if role == "main" and res.snapshot is not None:
            print(f"{'early':<6} {'snapshot':<20} EMA at step {tcfg.snapshot:<10}  {res.path}")
    return 0


def _compare(args) -> int:
    from toy.compare import CompareConfig, format_table, run_compare
    from toy.diffusion import SamplerConfig
    from toy.guidance import GuidanceConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    g = GuidanceConfig(scale=args.guidance_scale, s2_scale=args.s2_scale, drop_ratio=args.drop_ratio,
                       num_drop=args.num_drop, exclude=args.exclude, interval=tuple(args.interval),
                       num_masks=args.num_masks, fixed_blocks=args.fixed_blocks)
    cfg = CompareConfig(preset=args.preset, methods=methods, guidance=g,
                        sampler=SamplerConfig(steps=args.steps, solver=args.solver), seeds=args.seeds,
                        label=args.label, samples=args.samples, exact=args.exact, quick=args.quick,
                        weak=args.weak)
    if args.json:
        out = Path(args.json)
        if out.is_dir():
            raise ToyError(f"--json must be a file path, {str(out)!r} is a folder")
    result = run_compare(cfg, folder=args.cache_dir)
    print(format_table(result))
    if args.json:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 1 if result.get("errors") else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"train": _train, "compare": _compare, "images": _images}[args.command](args)
    except ToyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: training state is saved; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
