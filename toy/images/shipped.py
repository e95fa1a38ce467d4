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
from toy.shipped import Run, remake_or_check


def runs() -> list[Run]:
    """Every image run whose weights ship."""
    data = load_digits()
    tcfg, mcfg = model_configs(quick_config(), data)["main"]
    return [Run(tcfg, data, "main", mcfg)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.images.shipped", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="say whether the weights ship; train nothing")
    return remake_or_check(runs(), p.parse_args(argv).check)


if __name__ == "__main__":
    sys.exit(main())
