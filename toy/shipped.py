"""The trained networks that ship inside the package (`toy/weights/`), and how to remake them.

    python -m toy.shipped [--check]

`train` finds a finished checkpoint here before it trains, so the app, `compare`, the figures and
the notebooks start at once on a fresh machine. Each file is an ordinary checkpoint (plain arrays in
an .npz, its config in a JSON header, never pickle) named by the hash of that config: a shipped file
is used only for exactly the run it was made by. What ships is listed once, in `RUNS`: the quick
model sets of the three presets (main with its early snapshot, small, blockdrop) and the regime
variants of the mechanism sweep that train faster than main. Remake them after any change to training, networks or
presets; `--check` lists each run and whether its file is there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from toy.mixtures import get_preset
from toy.train import SHIPPED, TrainConfig, checkpoint_path, finished_checkpoint, model_set_configs, train

PRESETS = ("gmm1d", "gmm2d", "tree2d")
REGIME_PRESETS = ("gmm1d", "gmm2d")
REGIME_FIELDS = {"width": "width", "depth": "num_blocks", "steps": "steps", "block_drop": "block_drop"}  # → TrainConfig
REGIME_VARIANTS = {"width": 32, "depth": 4, "steps": 750}     # the regime networks cheaper than main (steps-750
#                                                              in the quick sweep; all three in the full one)


def regime_config(preset: str, axis: str, value) -> TrainConfig:
    """The main quick network of `preset` with one regime setting changed (no early snapshot)."""
    return replace(model_set_configs(preset, quick=True)["main"], snapshot=0, **{REGIME_FIELDS[axis]: value})


def runs() -> list[tuple[TrainConfig, str]]:
    """(config, tag) of every run whose weights ship."""
    out = [(tcfg, role) for p in PRESETS for role, tcfg in model_set_configs(p, quick=True).items()]
    out += [(regime_config(p, axis, v), f"{axis}-{v}") for p in REGIME_PRESETS
            for axis, v in REGIME_VARIANTS.items()]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.shipped", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="list the runs and whether their weights ship; train nothing")
    a = p.parse_args(argv)
    missing = 0
    for tcfg, tag in runs():
        path = checkpoint_path(tcfg, get_preset(tcfg.preset), SHIPPED, tag)
        there = finished_checkpoint(path) == path
        if a.check:
            print(f"{'ok' if there else 'MISSING':<8} {path.name}")
            missing += not there
        else:
            train(tcfg, folder=SHIPPED, tag=tag, fresh=True)
            print(f"wrote {path.name}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
