"""`python -m toy images train|sample|evaluate|mechanism`: the image experiment's command line.

Every argument is checked, and every output path tested, before any data is read or any model is
trained; errors are one line naming the argument (the top-level command line prints them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toy import files
from toy.errors import ToyError, check_finite, check_int
from toy.guidance import METHODS, GuidanceConfig, parse_methods


def add_parser(sub, parser_class, floats, seeds, ints) -> None:
    """The `images` command and its four subcommands, on the top-level subparsers `sub`."""
    im = sub.add_parser("images", help="the DiT image experiment: train, sample, evaluate (paper Fig. 4, 15)")
    isub = im.add_subparsers(dest="images_command", required=True, parser_class=parser_class)
    common = parser_class(add_help=False)
    common.add_argument("--data", default="digits",
                        help="digits (embedded, no download), cifar10 (the archive in --data-dir), or an archive path")
    common.add_argument("--download", action="store_true", help="with --data cifar10: fetch the official archive "
                        "(checksummed, resumable) if it is not in --data-dir")
    common.add_argument("--data-dir", default=None, help="where the CIFAR-10 archive lives (default $TOY_CACHE_DIR/data)")
    common.add_argument("--classes", type=ints, default=None, help="source class ids (default 7,1: horse, automobile "
                        "on CIFAR-10; digits 7 and 1)")
    common.add_argument("--image-size", type=int, default=32, help="CIFAR-10 resolution: 32, or 16/8 for CPU runs")
    common.add_argument("--size", default=None, help="DiT size: XXS, XS, S, S/2, B/2 (default XS)")
    common.add_argument("--train-steps", type=int, default=None)
    common.add_argument("--batch", type=int, default=None)
    common.add_argument("--seed", type=int, default=0, help="training seed, in [0, 2^31 − 1]")
    common.add_argument("--weak", default=None, help="Autoguidance weak model: small or early (default small; "
                        "early with --quick)")
    common.add_argument("--guidance-scale", type=floats, default=3.0, help="λ ≥ 0")
    common.add_argument("--s2-scale", type=floats, default=0.25, help="ω ≥ 0")
    common.add_argument("--sampler-steps", type=int, default=None)
    common.add_argument("--quick", action="store_true", help="seconds-to-minutes settings (tests, CI)")
    common.add_argument("--cache-dir", default=None, help="checkpoint folder (default $TOY_CACHE_DIR or ~/.cache/s2-toy)")
    isub.add_parser("train", parents=[common], help="train (or load, or resume) the DiT and its weak models")
    sm = isub.add_parser("sample", parents=[common], help="generate images with one guidance method")
    sm.add_argument("--method", default="s2", help=", ".join(METHODS))
    sm.add_argument("--label", type=int, default=None, help="source class id to generate (default: the first class)")
    sm.add_argument("--n", type=int, default=16, help="number of images, in [1, 10000]")
    sm.add_argument("--sample-seed", type=int, default=0)
    sm.add_argument("--out", default="samples.png", help="image grid (PNG); the arrays go beside it as .npz")
    ev = isub.add_parser("evaluate", parents=[common], help="every method: metrics table, fig4_tsne, "
                         "fig15_fixed_block_grid")
    ev.add_argument("--seeds", type=seeds, default=None, help="a count (3) or a list (0,4,7)")
    ev.add_argument("--per-class", type=int, default=None, help="generations per class, method and seed")
    ev.add_argument("--out", default="figures")
    mc = isub.add_parser("mechanism", parents=[common], help="take the DiT's S² signal apart along its CFG sampler: "
                         "α, β, r², |s|/|g| and cos_ref against a reference DiT (toy/images/mechanism.py)")
    mc.add_argument("--samples", type=int, default=None, help="CFG sampler states per class, in [10, 100000] "
                    "(default 200 with --quick, 500 without)")
    mc.add_argument("--masks", type=int, default=8, help="masks per σ, drawn as S² draws them, in [1, 1024]")
    mc.add_argument("--sample-seed", type=int, default=0)
    mc.add_argument("--json", default=None, help="write the series, their medians where S² acts and the settings here")
    ev.add_argument("--clip", default=None, metavar="DIR", help="a local folder with Flax CLIP weights (config.json, "
                    "flax_model.msgpack): CLIP image features instead of the classifier's (needs the clip extra)")


def _image_config(args):
    from toy.images.pipeline import ImageConfig, quick_config
    from toy.runtime import cache_dir

    data = args.data
    if data == "cifar10":
        from toy.images.data import CIFAR10_URLS, download_cifar10
        folder = Path(args.data_dir) if args.data_dir else cache_dir() / "data"
        archive = folder / Path(CIFAR10_URLS["python"][0]).name
        if args.download:
            archive = download_cifar10(files.usable_folder(folder, "--data-dir"))
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


def sample_paths(out: str) -> tuple[Path, Path]:
    """(picture, arrays) of `images sample --out`: two distinct files, OUT and OUT with .npz; an OUT
    ending in .npz names the arrays, and the picture goes beside it as .png."""
    p = Path(out)
    return (p.with_suffix(".png"), p) if p.suffix == ".npz" else (p, p.with_suffix(".npz"))


def _check(args) -> None:
    """Everything that can be checked before the data is read and the models are trained."""
    check_int("--seed", args.seed, low=0, high=2**31 - 1)
    check_finite("--guidance-scale", args.guidance_scale, low=0.0)
    check_finite("--s2-scale", args.s2_scale, low=0.0)
    if args.cache_dir is not None:
        files.usable_folder(args.cache_dir, "--cache-dir")
    cmd = args.images_command
    if cmd == "sample":
        method = parse_methods([args.method])[0]
        GuidanceConfig(method=method, scale=args.guidance_scale, s2_scale=args.s2_scale).validate()
        check_int("--n", args.n, low=1, high=10_000)
        check_int("--sample-seed", args.sample_seed, low=0, high=2**31 - 1)
        for path, what in zip(sample_paths(args.out), ("--out (the picture)", "--out (the arrays)")):
            files.writable_file(path, what)
    if cmd == "mechanism":
        _mechanism_config(args)
        if args.json is not None:
            files.writable_file(args.json, "--json")
    if cmd == "evaluate":
        files.usable_folder(args.out, "--out")
        if args.clip is not None:
            from toy.images.features import check_clip_folder
            check_clip_folder(args.clip)


def _mechanism_config(args):
    from toy.images.mechanism import DiTMechanismConfig
    return DiTMechanismConfig(samples=args.samples, masks=args.masks, seed=args.sample_seed).validate()


def _mechanism(args, icfg, data) -> int:
    from toy.images.mechanism import SERIES, run_mechanism

    res = run_mechanism(icfg, data, args.quick, _mechanism_config(args), folder=args.cache_dir)
    st = res["settings"]
    print(f"main {st['main']}; reference {st['reference']}; {st['blocks_dropped']} block(s) dropped per mask; "
          f"{st['samples_per_class']} CFG states per class, {st['masks']} masks per σ")
    print(f"{'σ':>9} " + " ".join(f"{k:>8}" for k in SERIES))
    for i, sigma in enumerate(res["sigmas"]):
        print(f"{sigma:>9.4f} " + " ".join(f"{res[k][i]:>8.3f}" for k in SERIES))
    print("medians where S² acts: " + ", ".join(f"{k} {v:.3f}" for k, v in res["interval_medians"].items()))
    if args.json:
        files.write_json_safely(args.json, res, "--json")
    return 0


def run(args) -> int:
    from toy.images.data import load_dataset
    from toy.images.pipeline import evaluate, generate, picture, train_image_models

    _check(args)
    icfg = _image_config(args)
    data = load_dataset(icfg.data, icfg.classes, icfg.image_size)
    cmd = args.images_command
    if cmd == "sample" and args.label is not None and args.label not in data.classes:
        raise ToyError(f"--label {args.label} is not among the trained classes {list(data.classes)}")
    if cmd == "mechanism":
        return _mechanism(args, icfg, data)
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
        from matplotlib.figure import Figure
        label = data.classes.index(args.label) if args.label is not None else 0
        x = generate(models, args.method.strip(), args.n, label, icfg, args.sample_seed)
        out, arrays = sample_paths(args.out)
        cols = int(np.ceil(np.sqrt(args.n)))
        pad = np.full((cols * cols - len(x), x.shape[1]), -1.0, x.dtype)
        grid = picture(np.concatenate([x, pad]).reshape(cols, cols, -1), data).squeeze()
        images = ((x + 1) * 127.5).clip(0, 255).astype(np.uint8).reshape(
            (len(x), data.image_size, data.image_size, data.channels))
        fig = Figure(figsize=(grid.shape[1] / 100, grid.shape[0] / 100), dpi=100)
        fig.figimage(grid, cmap="gray" if data.channels == 1 else None, vmin=0, vmax=1)
        try:
            files.atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100))
            files.atomic_write(arrays, lambda f: np.savez(f, images=images, class_id=data.classes[label]))
        except OSError as e:        # the disk filled while sampling: the generations are not lost
            import tempfile
            rescue = Path(tempfile.gettempdir()) / arrays.name
            files.atomic_write(rescue, lambda f: np.savez(f, images=images, class_id=data.classes[label]))
            raise ToyError(f"--out could not be written ({e.strerror}); the arrays are saved in {str(rescue)!r}") from None
        print(f"wrote the picture {out} and the arrays {arrays} ({args.n} × {data.class_names[label]}, {args.method})")
        return 0
    res = evaluate(icfg, data, models, args.out)
    print(Path(args.out, "images_results.md").read_text())
    print(f"wrote fig4_tsne.png, fig15_fixed_block_grid.png, images_results.md/json to {args.out}/ "
          f"in {res['seconds']:.0f} s")
    return 0
