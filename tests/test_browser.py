"""A real browser: serve the app, open it in headless Chromium, move the λ slider, see the plot change."""

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


def test_lambda_slider_changes_the_plot(server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run .ci/setup (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        img = page.locator('[data-testid="stImage"] img').first
        img.wait_for(state="visible", timeout=240_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=240_000)
        before = img.get_attribute("src")
        page.screenshot(path=str(tmp_path / "before.png"))
        if os.environ.get("TOY_SCREENSHOT"):
            page.screenshot(path=os.environ["TOY_SCREENSHOT"], full_page=True)
        slider = page.get_by_role("group", name="Guidance scale λ").locator('input[type="range"]')
        assert float(slider.input_value()) == 3.0
        slider.focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("(old) => { const i = document.querySelector('[data-testid=\"stImage\"] img');"
                               " return i && i.src !== old; }", arg=before, timeout=120_000)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=120_000)
        assert float(slider.input_value()) == pytest.approx(3.5)
        assert page.locator('[data-testid="stImage"] img').first.get_attribute("src") != before
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()
