"""Command line: `python -m toy train|compare ...` (see README.md)."""

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
    return p


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
        return {"train": _train, "compare": _compare}[args.command](args)
    except ToyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: training state is saved; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
