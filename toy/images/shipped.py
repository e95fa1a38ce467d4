"""The image models that ship in `toy/weights/` beside the toy networks, all on digits: the DiT-XXS
that `--quick` and the tests use (its early snapshot is Autoguidance's weak model there), the full
experiment's DiT-XS (the figures' main DiT and the quick mechanism's reference network) and the DiTs
of the depth sweep (toy/images/mechanism.py).

    python -m toy.images.shipped [--check | --missing]

Like `python -m toy.shipped` for the toy networks: remake them after a change to training, the DiT or
the data; `--check` says whether each is there, `--missing` trains only the absent ones.
"""

from __future__ import annotations

import argparse
import sys

from toy.images.data import load_digits
from toy.images.pipeline import model_configs, quick_config
from toy.shipped import Run, remake_or_check


def runs() -> list[Run]:
    """Every image run whose weights ship: the quick DiT, the full experiment's main DiT (the quick
    mechanism's reference network) and the depth sweep's DiTs."""
    from toy.images.mechanism import sweep_configs
    from toy.images.pipeline import ImageConfig

    data = load_digits()
    quick, full = (model_configs(c, data)["main"] for c in (quick_config(), ImageConfig()))
    out = [Run(quick[0], data, "main", quick[1]), Run(full[0], data, "main", full[1])]
    out += [Run(tcfg, data, f"depth-{d}", mcfg) for d, (tcfg, mcfg) in sweep_configs(data).items()]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toy.images.shipped", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="say whether the weights ship; train nothing")
    p.add_argument("--missing", action="store_true", help="train only the runs whose weights are absent")
    a = p.parse_args(argv)
    return remake_or_check(runs(), a.check, missing_only=a.missing)


if __name__ == "__main__":
    sys.exit(main())
