"""A real browser: serve the app, open a shared link in headless Chromium, check the widgets took its
settings, move the step slider and see the sampler-in-time picture change."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TOY_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(gmm1d_models, cache_dir):
    port = free_port()
    env = dict(os.environ, TOY_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def settled(page, timeout=240_000):
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout)


def test_url_settings_and_the_step_slider_in_a_browser(server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run .ci/setup (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        # TOY_SCREENSHOT=PATH also saves the README's screenshot: a viewport tall enough for every view
        page = browser.new_page(viewport={"width": 1400, "height": 2000 if os.environ.get("TOY_SCREENSHOT") else 1000})
        # a shared link: its settings must reach the widgets
        # (methods, samples and step bucket of the AppTest URL test: the server loads its compiled samplers)
        page.goto(server + "/?lam=4.5&methods=cfg,s2&steps=12&samples=200")
        page.locator('[data-testid="stImage"] img').nth(2).wait_for(state="visible", timeout=240_000)
        settled(page)
        lam = page.get_by_role("group", name="Guidance scale λ").locator('input[type="range"]')
        assert float(lam.input_value()) == 4.5
        assert page.get_by_role("group", name="Steps").locator('input[type="range"]').input_value() == "12"
        chosen = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
        assert "CFG" in chosen and "S²" in chosen and "Autoguidance" not in chosen
        assert page.locator('[data-testid="stImage"]').count() == 3       # columns, the sampler in time, mechanism
        if os.environ.get("TOY_SCREENSHOT"):
            page.locator('[data-testid="stDataFrame"] canvas').first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(2000)                                     # the table's grid paints
            page.screenshot(path=os.environ["TOY_SCREENSHOT"], full_page=True)
        step_img = page.locator('[data-testid="stImage"] img').nth(1)
        before = step_img.get_attribute("src")
        step = page.get_by_role("group", name="Sampler step t (0: pure noise at σ_max; the last: the samples)") \
            .locator('input[type="range"]')
        assert step.input_value() == "12"
        step.focus()
        for k in range(11, 5, -1):          # one step at a time, each picture awaited: a burst of keys can
            page.keyboard.press("ArrowLeft")   # outrun the server's reruns on a busy machine
            page.get_by_text(f"Step {k} of 12", exact=False).first.wait_for(state="visible", timeout=120_000)
        settled(page, 120_000)
        assert step.input_value() == "6"
        assert page.locator('[data-testid="stImage"] img').nth(1).get_attribute("src") != before
        page.wait_for_url("**step=6**", timeout=60_000)                  # the view stays shareable
        assert "lam=4.5" in page.url and "steps=12" in page.url
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(tmp_path / "after.png"))
        # another preset renames the classes: the class selector's stale label must not break the page
        mixture = page.locator('[data-testid="stSelectbox"]').filter(has_text="Mixture").first
        for preset in ("gmm2d", "gmm2d4"):
            mixture.click()
            page.get_by_role("option", name=preset, exact=True).click()
            page.wait_for_url(f"**preset={preset}**", timeout=120_000)
            settled(page, 240_000)
            assert page.locator('[data-testid="stAlert"]').filter(has_text="error").count() == 0, preset
        assert "label=" not in page.url        # the default class, an index again (a stale label would be written)
        browser.close()
