"""Wall-clock time of a full figure regeneration (`python -m toy.figures`), models cached.

    python -m bench.figures_time [--quick] [--out bench/figures_time.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "figures_time.json"))
    p.add_argument("--figures-out", default="figures")
    a = p.parse_args()
    cmd = [sys.executable, "-m", "toy.figures", "--out", a.figures_out] + (["--quick"] if a.quick else [])
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    took = time.perf_counter() - t
    Path(a.out).write_text(json.dumps({"command": " ".join(cmd[1:]), "seconds": took, "quick": a.quick,
                                       "machine": platform.machine()}, indent=1))
    print(f"{took:.0f} s; wrote {a.out}")


if __name__ == "__main__":
    main()
