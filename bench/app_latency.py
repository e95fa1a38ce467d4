"""Time from a slider change to the finished rerun of the app, at the default settings.

    python -m bench.app_latency [--repeats 5] [--steps T] [--out bench/app_latency.json]

Uses Streamlit's AppTest (the same script run a browser triggers, without the websocket). The
first run (training or loading models, compiling) is reported separately from the slider moves.
A λ move resamples every method shown; an ω move resamples S² alone (the others are reused).
--steps measures at another sampler step count than the app's default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def measure(repeats: int, steps: int | None = None) -> dict:
    at = AppTest.from_file(APP, default_timeout=900)
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    if steps is not None:
        at.slider(key="steps").set_value(steps)
        at.run()
    out = {}
    for key, values in [("lam", [3.5, 4.0, 4.5, 5.0, 5.5, 6.0]), ("omega", [0.3, 0.35, 0.4, 0.45, 0.5, 0.55])]:
        at.slider(key=key).set_value(values[0])
        at.run()                                   # warm: any first-time work for this slider
        times = []
        for v in values[1:1 + repeats]:
            at.slider(key=key).set_value(v)
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            if at.exception:
                raise RuntimeError(at.exception[0].value)
        out[key] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": times}
    caption = at.caption[-1].value
    return {"first_run_s": first, "slider_to_rerun": out, "caption": caption,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
            "settings": ("app defaults" if steps is None else f"app defaults but {steps} steps") +
                        ": methods cfg/autoguidance/s2; last rerun: " + caption.split("Settings: ")[1].split(". Rendered")[0]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, help="sampler steps (default: the app's default)")
    p.add_argument("--out", default=str(Path(__file__).parent / "app_latency.json"))
    a = p.parse_args()
    res = measure(a.repeats, a.steps)
    Path(a.out).write_text(json.dumps(res, indent=2))
    for k, v in res["slider_to_rerun"].items():
        print(f"{k}: median {v['median_s']:.2f} s (min {v['min_s']:.2f}, max {v['max_s']:.2f})")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
