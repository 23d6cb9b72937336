"""End to end: notebooks/08_demo.ipynb served by Voila, driven in headless Chromium.

Starts Voila on a free localhost port with a tiny setup passed through the environment
(the smoke profile's phantoms in a temporary cache, an untrained ResNet-18, no runs), opens
the app with Playwright in Debian's ``/usr/bin/chromium``, picks an image, checks that the
14 probabilities and the heatmap appear, clicks a finding, uploads a good and a bad file,
then stops Voila.

Needs the ``chromium`` package (``apt-get install chromium``); Playwright's own browser
downloads are never used. Locally a missing browser skips the test; in CI
(CXRLIB_REQUIRE_SHARED_DATA=1 or CI=true) it fails it.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "08_demo.ipynb"
CHROMIUM = Path(os.environ.get("CXRLIB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 60  # Voila up and the notebook executed (imports torch, builds a 64-image cache)
STEP_TIMEOUT_MS = 30_000


def _required() -> bool:
    return os.environ.get("CXRLIB_REQUIRE_SHARED_DATA") == "1" or os.environ.get("CI", "").lower() == "true"


def _need_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as err:
            problem = f"playwright is not installed ({err}): pip install -r requirements.txt"
    if problem:
        if _required():
            pytest.fail(problem)
        pytest.skip(problem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def voila_url(tmp_path):
    """Voila serving the demo notebook with a tiny setup; yields its URL, then stops it."""
    _need_browser()
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "CXRLIB_DEMO_PROFILE": "smoke",
        "CXRLIB_DEMO_OVERRIDES": f"data.cache_dir={tmp_path / 'cache'}",
        "CXRLIB_DEMO_RUNS_DIR": str(tmp_path / "runs"),
        "CXRLIB_DEMO_UNTRAINED": "resnet18",
        "CXRLIB_DEMO_MAX_IMAGES": "5",
        "CXRLIB_DEMO_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    })
    log = open(tmp_path / "voila.log", "w")
    command = [sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
    # Own process group, so that stopping it also stops the kernel it started.
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode}:\n{_tail(tmp_path / 'voila.log')}")
            try:
                # Any HTTP answer means the server is up (GET / would start a kernel per poll).
                with urllib.request.urlopen(url + "api/status", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not answer on {url} in {START_TIMEOUT_S} s:\n{_tail(tmp_path / 'voila.log')}")
                time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def test_demo_in_headless_chromium(voila_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # expect() keeps its own 5 s default (page timeouts do not reach it): on two busy cores a
    # new image's Grad-CAM overlay can arrive after that
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(voila_url, timeout=START_TIMEOUT_S * 1000)
            # The app is up once the chart has drawn the first image's probabilities.
            page.locator(".cxr-demo-chart.cxr-demo-ready").wait_for(timeout=START_TIMEOUT_S * 1000)
            expect(page.locator(".cxr-demo-untrained")).to_contain_text("Untrained model")
            heatmap = page.locator("img.cxr-demo-heatmap")
            first_src = heatmap.get_attribute("src")

            # Pick another image of the dataset.
            menu = page.locator(".cxr-demo-image select")
            labels = menu.locator("option").all_inner_texts()
            assert len(labels) == 5, labels
            # another image than the one shown (the demo opens on the first with annotated ground truth)
            shown = menu.evaluate("m => m.options[m.selectedIndex].text")
            other = next(label for label in labels if label != shown)
            image_id = other.split()[0]  # the menu shows spaces as no-break spaces
            menu.select_option(label=other)
            expect(page.locator(".cxr-demo-caption")).to_contain_text(image_id)

            # 14 probabilities, sorted, in [0, 1]; the threshold is marked.
            values = [float(v) for v in page.locator(".cxr-demo-value").all_inner_texts()]
            assert len(values) == 14 and all(0.0 <= v <= 1.0 for v in values), values
            assert values == sorted(values, reverse=True)
            assert page.locator(".cxr-demo-threshold").count() == 14
            # A heatmap overlay of the new image, at the phantom's full resolution.
            expect(heatmap).not_to_have_attribute("src", first_src or "")
            page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=heatmap.element_handle())
            assert heatmap.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [512, 512]

            # Clicking a bar's finding shows that finding's heatmap.
            button = page.locator("button.cxr-demo-finding").nth(2)
            finding = button.inner_text().replace("✓", "").strip()
            button.click()
            expect(page.locator(".cxr-demo-caption")).to_contain_text(f"{finding}: p =")

            # Upload: a bad file gives a message, then a good one is shown.
            def upload(name: str, mime: str, content: bytes) -> None:
                # The button opens a file chooser (its <input type=file> is not in the DOM).
                with page.expect_file_chooser() as chooser:
                    page.locator(".cxr-demo-upload").click()
                chooser.value.set_files({"name": name, "mimeType": mime, "buffer": content})

            upload("notes.txt", "text/plain", b"not an image")
            expect(page.locator(".cxr-demo-message")).to_contain_text("notes.txt")
            gray = np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1))
            upload("mine.png", "image/png", _png(gray))
            expect(page.locator(".cxr-demo-caption")).to_contain_text("mine.png")
            page.wait_for_function("e => e.naturalWidth === 300", arg=heatmap.element_handle())
            page.screenshot(path=str(tmp_path / "demo.png"))
        finally:
            browser.close()
