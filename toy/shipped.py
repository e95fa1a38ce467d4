"""The trained networks that ship inside the package (`toy/weights/`), and how to remake them.

    python -m toy.shipped [--check | --missing]

`train` finds a finished checkpoint here before it trains, so the app, `compare`, the figures and
the notebooks start at once on a fresh machine. Each file is an ordinary checkpoint (plain arrays in
an .npz, its config in a JSON header, never pickle) named by the hash of that config: a shipped file
is used only for exactly the run it was made by. What ships is listed once, in `RUNS`: the quick
model sets of the presets (main with its early snapshot, small, blockdrop), the regime variants of
the mechanism sweep that train faster than main, and the mechanism's reference network (main trained
4× as long) for gmm1d and gmm2d. Remake them after any change to training, networks or
presets; `--check` lists each run and whether its file is there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from toy.mechanism import reference_config
from toy.presets import get_preset
from toy.train import SHIPPED, TrainConfig, checkpoint_path, finished_checkpoint, model_set_configs, train

PRESETS = ("gmm1d", "gmm2d", "gmm2d4", "tree2d")
REGIME_PRESETS = ("gmm1d", "gmm2d")
REGIME_FIELDS = {"width": "width", "depth": "num_blocks", "steps": "steps", "block_drop": "block_drop"}  # → TrainConfig
REGIME_VARIANTS = {"width": 32, "depth": 4, "steps": 750}     # the regime networks cheaper than main (steps-750
#                                                              in the quick sweep; all three in the full one)


def regime_config(preset: str, axis: str, value) -> TrainConfig:
    """The main quick network of `preset` with one regime setting changed (no early snapshot)."""
    return replace(model_set_configs(preset, quick=True)["main"], snapshot=0, **{REGIME_FIELDS[axis]: value})


class Run(NamedTuple):
    """One shipped training run: its config, its training data, its tag, and the network config
    when it is not the MLP that `tcfg` describes (the image DiT)."""
    tcfg: TrainConfig
    data: object                          # a ConditionalMixture, or the image experiment's ImageData
    tag: str
    mcfg: object = None

    @property
    def path(self) -> Path:
        return checkpoint_path(self.tcfg, self.data, SHIPPED, self.tag, self.mcfg)


def runs() -> list[Run]:
    """Every toy run whose weights ship."""
    out = [(tcfg, role) for p in PRESETS for role, tcfg in model_set_configs(p, quick=True).items()]
    out += [(regime_config(p, axis, v), f"{axis}-{v}") for p in REGIME_PRESETS
            for axis, v in REGIME_VARIANTS.items()]
    out += [(reference_config(p), f"steps-{reference_config(p).steps}") for p in REGIME_PRESETS]
    return [Run(tcfg, get_preset(tcfg.preset), tag) for tcfg, tag in out]


def remake_or_check(shipped: list[Run], check: bool, missing_only: bool = False) -> int:
    """Retrain every run into toy/weights/ (fresh), or only the absent ones (`missing_only`), or with
    `check` list whether each file is there; 1 if a file is missing."""
    missing = 0
    for r in shipped:
        if missing_only and r.path.is_file():
            continue
        if check:
            there = finished_checkpoint(r.path) == r.path
            print(f"{'ok' if there else 'MISSING':<8} {r.path.name}")
            missing += not there
        else:
            train(r.tcfg, mixture=r.data, folder=SHIPPED, tag=r.tag, model_cfg=r.mcfg, fresh=True)
            print(f"wrote {r.path.name}")
    return 1 if missing else 0


def main(argv=None) -> int:
    class Parser(argparse.ArgumentParser):
        def error(self, message):          # one `error:` line, not the usage block
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
    p = Parser(prog="python -m toy.shipped", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="list the runs and whether their weights ship; train nothing")
    p.add_argument("--missing", action="store_true", help="train only the runs whose weights are absent")
    a = p.parse_args(argv)
    return remake_or_check(runs(), a.check, missing_only=a.missing)


if __name__ == "__main__":
    sys.exit(main())
