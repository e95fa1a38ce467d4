"""Command line: `python -m toy train|compare|mechanism ...` and `python -m toy images ...`
(reference: docs/cli.md).

Every command checks all of its arguments, and that its output files and cache folder can be
written, before any training or sampling; a bad value is one line `error: …` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from toy.errors import ToyError
from toy.settings import SEED_MAX

SEED_RANGE = (0, SEED_MAX)          # one range for every seed of every command (toy.settings)


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # one clear line, not the usage block
        raise ToyError(message)


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None


def _seed(s: str) -> int:
    v = _int(s)
    if not SEED_RANGE[0] <= v <= SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"seeds must be integers in [0, {SEED_RANGE[1]}], got {s}")
    return v


def _seeds(s: str) -> tuple[int, ...]:
    """`3` means seeds 0, 1, 2; `4,7,9` lists them."""
    try:
        parts = [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,4,7), got {s!r}") from None
    if len(parts) == 1 and "," not in s:
        if not 1 <= parts[0] <= 1000:
            raise argparse.ArgumentTypeError(f"--seeds count must be in [1, 1000], got {s}")
        return tuple(range(parts[0]))
    if not parts or min(parts) < SEED_RANGE[0] or max(parts) > SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"--seeds list must hold integers in [0, {SEED_RANGE[1]}], got {s!r}")
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"--seeds lists a seed more than once: {s!r}")
    return tuple(parts)


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in s.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


COMPARE_SETTINGS = ("scale", "s2_scale", "drop_ratio", "num_drop", "exclude", "interval", "num_masks", "fixed_blocks")
MECHANISM_SETTINGS = ("scale", "drop_ratio", "num_drop", "exclude")      # the masks S² would draw, along CFG


def plugin_args(c) -> None:
    """--plugin FILE and --set NAME=VALUE: methods and settings from outside the package."""
    c.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="a Python file that registers guidance methods (docs/extending.md); repeatable")
    c.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set_values",
                   help="any guidance setting by name, a plugin's own too (python -m toy compare --help lists "
                        "the built-in ones); repeatable")


def _guidance_args(c, names) -> None:
    from toy.settings import add_options
    add_options(c, names)
    add_options(c, ("steps", "solver", "label"))
    c.add_argument("--quick", action="store_true", help="quick-trained models, fewer samples")
    c.add_argument("--ideal-blur", type=_float, default=1.0, help="δ of the ideal weak model (the truth with "
                   "covariances + δ²I)")
    c.add_argument("--json", default=None, help="write the results here (JSON)")
    c.add_argument("--cache-dir", default=None, help="checkpoint folder (default $TOY_CACHE_DIR or ~/.cache/s2-toy)")
    plugin_args(c)


def guidance_from_args(args, names, **fixed):
    """The GuidanceConfig of a command: its schema options, then --set (plugins loaded first)."""
    from toy import plugins
    from toy.guidance import GuidanceConfig
    from toy.settings import option_value, parse_assignments
    plugins.load_all(args.plugin)
    g = GuidanceConfig(**{n: option_value(n, getattr(args, n)) for n in names}, **fixed)
    return g.with_settings(**parse_assignments(args.set_values))


def build_parser() -> argparse.ArgumentParser:
    from toy.compare import MODELS, WEAK_MODELS
    from toy.guidance import METHODS
    from toy.mechanism import MODELS as MECHANISM_MODELS

    p = _Parser(prog="python -m toy", description="S²-Guidance toy simulator")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (or load) the model set of a preset: main, small, early, blockdrop")
    t.add_argument("--preset", required=True, help="gmm1d, gmm2d, tree2d or a mixture .json file")
    t.add_argument("--quick", action="store_true", help="small training runs (about 30 s each)")
    t.add_argument("--seed", type=_seed, default=0, help=f"training seed, in [0, {SEED_RANGE[1]}]")
    t.add_argument("--cache-dir", default=None, help="checkpoint folder (default $TOY_CACHE_DIR or ~/.cache/s2-toy)")

    c = sub.add_parser("compare", help="compare guidance methods against the exact ground truth")
    c.add_argument("--preset", default="gmm2d")
    c.add_argument("--methods", default="none,cfg,autoguidance,s2-naive,s2", help="comma-separated, each once: "
                   + ", ".join(METHODS))
    c.add_argument("--samples", type=_int, default=None, help="samples per method and seed")
    c.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="a count (3) or a list (0,4,7)")
    c.add_argument("--model", default="main", help=f"the network CFG and S² guide: {' or '.join(MODELS)}")
    c.add_argument("--weak", default="small", help=f"Autoguidance weak model: {' or '.join(WEAK_MODELS)}")
    c.add_argument("--exact", action="store_true", help="add rows with the exact closed-form denoiser")
    _guidance_args(c, COMPARE_SETTINGS)

    m = sub.add_parser("mechanism", help="take the S² signal apart along the CFG sampler: α, β, r², cos_error")
    m.add_argument("--preset", default="gmm1d")
    m.add_argument("--model", default="main", help=" or ".join(MECHANISM_MODELS))
    m.add_argument("--samples", type=_int, default=None, help="sampler states per σ (default 500 quick, 2000 full)")
    m.add_argument("--masks", type=_int, default=16, help="masks per σ")
    m.add_argument("--seed", type=_seed, default=0)
    m.add_argument("--reference", action="store_true", help="add cos_ref: the cosine with main's error measured "
                   "against a reference network (main trained 4× as long) instead of the truth, beside cos_error")
    _guidance_args(m, MECHANISM_SETTINGS)

    from toy.images import cli as images_cli      # the image experiment registers its own subcommands
    images_cli.add_parser(sub, _Parser, _float, _seeds, _ints)
    return p


CACHE_NEED = 256 << 20      # free bytes the cache folder must have: checkpoints (a model set: a few MB; the
                            # image DiTs: tens of MB) and compiled programs


def _check_outputs(args) -> None:
    """Everything a command will write, checked before any work: the cache folder (--cache-dir, else
    $TOY_CACHE_DIR, else ~/.cache/s2-toy) and the output files."""
    import os

    from toy import files
    from toy.runtime import cache_dir
    name = ("--cache-dir" if getattr(args, "cache_dir", None) is not None else
            "TOY_CACHE_DIR" if os.environ.get("TOY_CACHE_DIR") else "the cache folder")
    files.usable_folder(getattr(args, "cache_dir", None) or cache_dir(), name, need=CACHE_NEED)
    if getattr(args, "json", None) is not None:
        files.writable_file(args.json, "--json")


def _train(args) -> int:
    from toy.presets import get_preset
    from toy.train import model_set_configs, train

    mixture = get_preset(args.preset)
    for tcfg in model_set_configs(args.preset, args.quick, args.seed).values():
        tcfg.validate()
    for role, tcfg in model_set_configs(args.preset, args.quick, args.seed).items():
        res = train(tcfg, mixture=mixture, folder=args.cache_dir, tag=role)
        state = "loaded" if res.loaded else (f"resumed at step {res.resumed_from}" if res.resumed_from else "trained")
        tail = float(res.losses[-max(1, len(res.losses) // 10):].mean()) if len(res.losses) else float("nan")
        print(f"{role:<9} {state:<20} final loss {tail:.4f}  {res.path}")
        if role == "main" and res.snapshot is not None:
            print(f"{'early':<9} {'snapshot':<20} EMA at step {tcfg.snapshot:<10}  {res.path}")
    return 0


def _sampler(args):
    from toy.diffusion import SamplerConfig
    return SamplerConfig(steps=args.steps, solver=args.solver)


def _compare(args) -> int:
    from toy import files
    from toy.compare import CompareConfig, format_table, run_compare

    g = guidance_from_args(args, COMPARE_SETTINGS)
    cfg = CompareConfig(preset=args.preset, methods=args.methods, guidance=g, sampler=_sampler(args),
                        seeds=args.seeds, label=args.label, samples=args.samples, exact=args.exact, quick=args.quick,
                        model=args.model, weak=args.weak, ideal_blur=args.ideal_blur).validate()
    result = run_compare(cfg, folder=args.cache_dir)
    print(format_table(result))
    if args.json:
        if not files.write_json_safely(args.json, result, "--json"):
            return 1
        print(f"wrote {args.json}")
    return 1 if result.get("errors") else 0


def _mechanism(args) -> int:
    from toy import files
    from toy.mechanism import MechanismConfig, analyze

    g = guidance_from_args(args, MECHANISM_SETTINGS, method="cfg")
    cfg = MechanismConfig(preset=args.preset, model=args.model, quick=args.quick, label=args.label,
                          samples=args.samples, masks=args.masks, seed=args.seed, guidance=g, sampler=_sampler(args),
                          ideal_blur=args.ideal_blur, reference=args.reference).validate()
    res = analyze(cfg, folder=args.cache_dir)
    cols = ["alpha", "beta", "r2", "cos_error"] + (["cos_ref"] if "cos_ref" in res else []) + ["ratio"]
    heads = {"alpha": "α", "beta": "β", "r2": "r²", "ratio": "|s|/|g|"}
    print(f"{'σ':>9} " + " ".join(f"{heads.get(k, k):>9}" for k in cols))
    for i, s in enumerate(res["sigmas"]):
        print(f"{s:>9.4g} " + " ".join(f"{res[k][i]:>9.3f}" for k in cols))
    if args.json:
        if not files.write_json_safely(args.json, res, "--json"):
            return 1
        print(f"wrote {args.json}")
    return 0


def _images(args) -> int:
    from toy.images import cli as images_cli
    return images_cli.run(args)


def main(argv: list[str] | None = None) -> int:
    from toy.runtime import setup
    setup()                            # one CPU device per core for the samplers, before JAX starts
    try:
        args = build_parser().parse_args(argv)
        _check_outputs(args)
        from toy.runtime import enable_compilation_cache
        enable_compilation_cache()
        return {"train": _train, "compare": _compare, "mechanism": _mechanism, "images": _images}[args.command](args)
    except ToyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: training state is saved; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as e:      # a file system failure after the checks (a disk that filled meanwhile): one line
        print(f"error: {e.strerror or type(e).__name__}{f': {e.filename!r}' if e.filename else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
