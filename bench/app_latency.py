"""The app's latency: time to the first picture, a second launch, and slider moves.

    python -m bench.app_latency [--repeats 5] [--steps T] [--out OUT.json]

- first_render_s: a fresh Python process runs the app script once (Streamlit's AppTest, the same
  script run a browser triggers, without the websocket) with an empty cache folder, so the only
  thing found ready is the weights that ship in the package; wall-clock from the process start to
  the finished first page (imports, loading, compiling, sampling, drawing). The process's exit
  (JAX clears its caches and backends at exit, about 2 s after a first picture) is not what a user
  waits for, since a server keeps running: the process reports the moment its page is done, and the
  whole process's wall-clock is kept beside it (`launch_process_s`);
- second_launch_s: the same again with that cache folder, now holding the compiled samplers;
- slider_to_rerun: in one process, the time from a slider move to the finished rerun at the
  defaults; a λ move resamples every method shown, an ω move S² alone, a step move nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "app.py")
LAUNCH = ("from streamlit.testing.v1 import AppTest\n"
          "at = AppTest.from_file({app!r}, default_timeout=900)\n"
          "at.run()\n"
          "import time\n"
          "done = time.monotonic()\n"
          "assert not at.exception, at.exception\n"
          "print('page done at', repr(done))\n")


def page_done(stdout: str) -> float:
    """The `time.monotonic()` at which a LAUNCH process had its page (the clock is system-wide on Linux)."""
    return float(stdout.split("page done at ")[-1].split()[0])


def launch_times() -> dict:
    """first_render_s and second_launch_s, each a fresh process on one empty (then warm) cache folder:
    from just before the process starts to its finished page; launch_process_s: to the process's exit."""
    out, whole = {}, {}
    with tempfile.TemporaryDirectory(prefix="toy-app-launch-") as cache:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        env["TOY_CACHE_DIR"] = cache
        for name in ("first_render_s", "second_launch_s"):
            t = time.monotonic()
            r = subprocess.run([sys.executable, "-c", LAUNCH.format(app=APP)], env=env, check=True,
                               capture_output=True, text=True)
            whole[name] = time.monotonic() - t
            out[name] = page_done(r.stdout) - t
    return {**out, "launch_process_s": whole}


def measure(repeats: int, steps: int | None = None) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=900)
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    if steps is not None:
        at.slider(key="steps").set_value(steps)
        at.run()
    out = {}
    T = at.slider(key="steps").value
    moves = [("lam", [3.5, 4.0, 4.5, 5.0, 5.5, 6.0]), ("omega", [0.3, 0.35, 0.4, 0.45, 0.5, 0.55]),
             ("step", [T - 1, T - 2, T - 3, T - 4, T - 5, T - 6])]
    for key, values in moves:
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
    caption = next(c.value for c in at.caption if "Rendered" in c.value)
    return {"first_run_in_process_s": first, "slider_to_rerun": out, "caption": caption,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
            "settings": ("app defaults" if steps is None else f"app defaults but {steps} steps") +
                        ": methods CFG, Autoguidance, S² with the sampler-in-time and mechanism views; last rerun: " +
                        caption.split("Settings: ")[1].split(". Rendered")[0]}


def main():
    from toy import files
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, help="sampler steps (default: the app's default)")
    p.add_argument("--out", required=True, help="JSON output (python -m bench writes the committed numbers)")
    a = p.parse_args()
    res = {**launch_times(), **measure(a.repeats, a.steps)}
    files.write_json(a.out, res)
    print(f"first render {res['first_render_s']:.1f} s, second launch {res['second_launch_s']:.1f} s")
    for k, v in res["slider_to_rerun"].items():
        print(f"{k}: median {v['median_s']:.2f} s (min {v['min_s']:.2f}, max {v['max_s']:.2f})")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
