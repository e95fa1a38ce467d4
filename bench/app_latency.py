"""The app's latency where the user sits: in a browser, against `streamlit run app.py`.

    python -m bench.app_latency [--repeats 5] [--out OUT.json]

Browser figures (Debian's Chromium driven by Playwright, the server started by the bench):

- first_render_s: from starting `streamlit run app.py` with empty cache folders (the app's and JAX's
  compilation cache, both under TOY_CACHE_DIR) to the first complete picture in the page (the
  samples' image decoded in the browser); the browser is already open, as a user's is;
- second_launch_s: the same with the caches the first launch left;
- slider_to_picture_s.{lam, omega, step, preset, methods}: from the input event (a key press on the
  slider, a click on an option) to the page's new picture (the image's source changed and decoded),
  median of several moves; the page settles between moves. `preset` is each preset's first visit
  (what a user meets: weights to load, programs to compile), `preset_revisit` a return to one. The
  moves start 15 s after the second launch's first picture, as a reader looks at the page first
  (the app prepares the other presets in the background while nobody moves anything).
  `methods` removes and adds back a method already sampled;
- streamlit_round_trip_s: the same key press on a one-slider Streamlit page that only prints the
  value: the floor under any control of any Streamlit app on this machine.

Script figures (Streamlit's AppTest, the same script in one process, no server, browser or image
transfer), under `script_*`: script_first_render_s and script_second_launch_s from a fresh process
(to the moment the page is done, not the process's exit: JAX clears its caches at exit), and
script_slider_to_rerun (λ, ω, step moves to the finished rerun). The two sets side by side show what
the user waits for beyond the script.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
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
    """script_first_render_s and script_second_launch_s, each a fresh process on one empty (then warm)
    cache folder: from just before the process starts to its finished page; script_launch_process_s: to
    the process's exit."""
    out, whole = {}, {}
    with tempfile.TemporaryDirectory(prefix="toy-app-launch-") as cache:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        env["TOY_CACHE_DIR"] = cache
        for name in ("script_first_render_s", "script_second_launch_s"):
            t = time.monotonic()
            r = subprocess.run([sys.executable, "-c", LAUNCH.format(app=APP)], env=env, check=True,
                               capture_output=True, text=True)
            whole[name] = time.monotonic() - t
            out[name] = page_done(r.stdout) - t
    return {**out, "script_launch_process_s": whole}


def rerun_parts(caption: str) -> dict[str, float]:
    """The page's own account of a rerun, from its caption: "Rendered in 0.52 s (waiting for the samplers
    0.21 s, drawing 0.14 s, mechanism view 0.18 s; …)" → {"rendered": 0.52, "waiting for the samplers": 0.21, …}."""
    head, rest = caption.split("Rendered in ", 1)[1].split(" s (", 1)
    parts = {"rendered": float(head)}
    for item in rest.split(";")[0].split(", "):
        name, value = item.rsplit(" ", 2)[0], item.rsplit(" ", 2)[1]
        parts[name] = float(value)
    return parts


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
        times, parts = [], []
        for v in values[1:1 + repeats]:
            at.slider(key=key).set_value(v)
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            if at.exception:
                raise RuntimeError(at.exception[0].value)
            parts.append(rerun_parts(next(c.value for c in at.caption if "Rendered" in c.value)))
        out[key] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": times,
                    "parts_median_s": {k: statistics.median(p[k] for p in parts) for k in parts[0]}}
    caption = next(c.value for c in at.caption if "Rendered" in c.value)
    return {"script_first_run_in_process_s": first, "script_slider_to_rerun": out, "caption": caption,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
            "settings": ("app defaults" if steps is None else f"app defaults but {steps} steps") +
                        ": methods CFG, Autoguidance, S² with the sampler-in-time and mechanism views; last rerun: " +
                        caption.split("Settings: ")[1].split(". Rendered")[0]}


CHROMIUM = os.environ.get("TOY_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# The pictures, found by their captions: the samples' picture (set once per run, when every method has
# landed) and the sampler-in-time picture.
SAMPLES, STEP = "Top: samples", "exact noised density"
FIND = """(marker) => { for (const el of document.querySelectorAll('[data-testid="stImage"]'))
    if (el.innerText.includes(marker)) return el.querySelector('img'); return null; }"""
SOURCE = f"(marker) => {{ const im = ({FIND})(marker); return im ? im.src : ''; }}"
NEW_PICTURE = f"""([marker, before]) => {{ const im = ({FIND})(marker);
    return !!im && im.src !== before && im.complete && im.naturalWidth > 0; }}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cache: str, port: int, script: str = APP) -> subprocess.Popen:
    """`streamlit run SCRIPT` on the port, with TOY_CACHE_DIR=cache and no inherited JAX settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(TOY_CACHE_DIR=cache, PYTHONPATH=str(Path(APP).parent))
    return subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"], env=env, cwd=Path(APP).parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def settled(page, timeout: float = 300_000) -> None:
    """No rerun running: Streamlit's status widget is gone."""
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout)


def picture(page, marker: str = SAMPLES) -> str:
    """The source of the picture whose caption holds `marker` ("" while there is none)."""
    return page.evaluate(SOURCE, marker)


def first_picture(page, t0: float, url: str) -> dict:
    """Open the page as soon as the server listens; seconds from t0 to listening, to the page's title
    (the script past its imports), to the first decoded picture, and to the settled page."""
    listening_at(int(url.rsplit(":", 1)[1]))
    listening = time.monotonic() - t0
    page.goto(url)
    page.get_by_text("S²-Guidance toy simulator").first.wait_for(timeout=600_000)
    title = time.monotonic() - t0          # the page loaded and the script is past its imports
    page.wait_for_function(NEW_PICTURE, arg=[SAMPLES, ""], timeout=600_000, polling=10)
    first = time.monotonic() - t0
    settled(page)
    return {"server_listening_s": listening, "title_s": title, "first_picture_s": first,
            "page_settled_s": time.monotonic() - t0}


MOVE_TIMEOUT_MS = 300_000
READ_MS = 15_000           # after the second launch's first picture, before the first move
SPACING_MS = 1000          # between moves, like a hand: a fragment's rerun shows no status widget to wait for


def timed_change(page, marker: str, act) -> float:
    """Seconds from the input event `act()` to the picture captioned `marker` being replaced and
    decoded; then the page settles (the rest of the rerun) before the next move."""
    before = picture(page, marker)
    t = time.monotonic()
    act()
    page.wait_for_function(NEW_PICTURE, arg=[marker, before], timeout=MOVE_TIMEOUT_MS, polling=5)
    took = time.monotonic() - t
    settled(page)
    page.wait_for_timeout(SPACING_MS)      # the rest of the rerun (the mechanism view after the pictures)
    return took


def slider(page, name: str):
    return page.get_by_role("group", name=name).locator('input[type="range"]')


MINIMAL = "import streamlit as st\nv = st.slider('Value', 0, 100, 50)\nst.write(f'value is {v}')\n"


def round_trip(browser, repeats: int) -> float:
    """Median seconds from a slider key press to the new text in a one-slider Streamlit page: the floor
    under every control of any Streamlit app on this machine (frontend, websocket, script run)."""
    with tempfile.TemporaryDirectory(prefix="toy-minimal-") as d:
        path = Path(d) / "minimal.py"
        path.write_text(MINIMAL)
        port = free_port()
        proc = serve(d, port, str(path))
        page = browser.new_page()
        try:
            first_text(page, port, "value is 50")
            page.get_by_role("slider").first.focus()
            times = []
            for i in range(repeats + 1):
                t = time.monotonic()
                page.keyboard.press("ArrowRight")
                page.get_by_text(f"value is {51 + i}", exact=True).wait_for(timeout=60_000)
                times.append(time.monotonic() - t)
                page.wait_for_timeout(200)
        finally:
            page.close()
            proc.terminate()
            proc.wait(timeout=30)
    return statistics.median(times[1:])


def listening_at(port: int) -> None:
    """Return once a server accepts connections on the port."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)


def first_text(page, port: int, text: str) -> None:
    listening_at(port)
    page.goto(f"http://127.0.0.1:{port}")
    page.get_by_text(text).first.wait_for(timeout=120_000)


def browser_times(repeats: int = 5) -> dict:
    """The browser figures (module docstring): two launches on one cache folder, then the moves, and
    the round trip of a one-slider page for scale."""
    from playwright.sync_api import sync_playwright

    out, stages = {}, {}
    with tempfile.TemporaryDirectory(prefix="toy-app-browser-") as cache, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        for name in ("first_render_s", "second_launch_s"):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            port = free_port()
            t0 = time.monotonic()
            proc = serve(cache, port)
            try:
                stages[name] = first_picture(page, t0, f"http://127.0.0.1:{port}")
                out[name] = stages[name]["first_picture_s"]
                if name == "second_launch_s":
                    page.wait_for_timeout(READ_MS)          # a reader looks at the first page before moving
                    out["slider_to_picture_s"], out["slider_runs_s"] = moves(page, repeats)
            finally:
                page.close()
                proc.terminate()
                proc.wait(timeout=30)
        out["streamlit_round_trip_s"] = round_trip(browser, repeats)
        browser.close()
    return {**out, "launch_stages_s": stages}


def moves(page, repeats: int) -> tuple[dict, dict]:
    """Median seconds from an input event to the new picture, per control, and every run."""
    runs = {}
    lam = slider(page, "Guidance scale λ")
    omega = slider(page, "S² scale ω")
    step = slider(page, "Sampler step t (0: pure noise at σ_max; the last: the samples)")
    for key, control, marker, press in (("lam", lam, SAMPLES, "ArrowRight"), ("omega", omega, SAMPLES, "ArrowRight"),
                                        ("step", step, STEP, "ArrowLeft")):
        control.focus()                   # each press a value not seen before: nothing comes from the app's cache
        timed_change(page, marker, lambda: page.keyboard.press(press))           # warm-up: first-time work
        runs[key] = [timed_change(page, marker, lambda: page.keyboard.press(press)) for _ in range(repeats)]
    runs["methods"] = []
    for i in range(repeats):                  # remove Autoguidance, then add it back (its run is kept)
        runs["methods"].append(timed_change(page, SAMPLES, lambda: page.get_by_role("button", name="Remove Autoguidance")
                                             .first.click()))
        box = page.locator('[data-testid="stMultiSelect"] input').first
        runs["methods"].append(timed_change(page, SAMPLES, lambda: (box.click(), page.get_by_role(
            "option", name="Autoguidance", exact=True).click())))
        page.keyboard.press("Escape")
    runs["preset"], runs["preset_revisit"] = [], []
    for i, preset in enumerate(("gmm2d", "gmm2d4", "tree2d", "gmm1d", "gmm2d", "gmm1d")):
        select = page.locator('[data-testid="stSelectbox"]').filter(has_text="Mixture").first
        took = timed_change(page, SAMPLES, lambda: (select.click(), page.get_by_role("option", name=preset,
                                                                                     exact=True).click()))
        runs["preset" if i < 3 else "preset_revisit"].append(took)
    return {k: statistics.median(v) for k, v in runs.items()}, runs


def main():
    from toy import files
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, help="sampler steps (default: the app's default)")
    p.add_argument("--out", required=True, help="JSON output (python -m bench writes the committed numbers)")
    a = p.parse_args()
    res = {**browser_times(a.repeats), **launch_times(), **measure(a.repeats, a.steps)}
    files.write_json(a.out, res)
    print(f"browser: first picture {res['first_render_s']:.1f} s, second launch {res['second_launch_s']:.1f} s; "
          f"script: {res['script_first_render_s']:.1f} s, {res['script_second_launch_s']:.1f} s")
    for k, v in res["slider_to_picture_s"].items():
        print(f"browser {k}: median {v:.3f} s")
    for k, v in res["script_slider_to_rerun"].items():
        print(f"script {k}: median {v['median_s']:.2f} s (min {v['min_s']:.2f}, max {v['max_s']:.2f})")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
