"""The quick image model that ships in `toy/weights/` beside the toy networks: the DiT-XXS on digits
that `--quick` and the tests use (its early snapshot is Autoguidance's weak model there).

    python -m toy.images.shipped [--check]

Like `python -m toy.shipped` for the toy networks: remake it after a change to training, the DiT or
the data; `--check` says whether it is there.
"""

from __future__ import annotations

import argparse
import sys

from toy.images.data import load_digits
from toy.images.pipeline import model_configs, quick_config
from toy.train import SHIPPED, checkpoint_path, finished_checkpoint, train


def runs():
    """(train config, network config, data, tag) of every image run whose weights ship."""
    data = load_digits()
    tcfg, mcfg = model_configs(quick_config(), data)["main"]
    return [(tcfg, mcfg, data, "main")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.images.shipped", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    missing = 0
    for tcfg, mcfg, data, tag in runs():
        path = checkpoint_path(tcfg, data, SHIPPED, tag, mcfg)
        if a.check:
            there = finished_checkpoint(path) == path
            print(f"{'ok' if there else 'MISSING':<8} {path.name}")
            missing += not there
        else:
            train(tcfg, mixture=data, folder=SHIPPED, tag=tag, model_cfg=mcfg, fresh=True)
            print(f"wrote {path.name}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
