"""What a person sees, in a real headless browser: a sweep's HTML report and the MLflow UI's
page of the sweep's parent run.

One synthetic ablation (tests/support/synthetic.py: a real SQLite store, written through
MlflowClient as the engine writes it) is reported by the real report builder, served by a real
``mlflow server`` on loopback, and opened in Debian's Chromium through Selenium and
chromedriver. Without Chromium or chromedriver (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them) the test skips and says why; ``HRM_CHROMIUM`` and ``HRM_CHROMEDRIVER``
name them elsewhere.

``HRM_SCREENSHOTS=docs/screenshots`` also saves what the browser shows, for the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from hrm_core import names
from tests.conftest import PROJECT, child_runs
from tests.support import synthetic

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("HRM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HRM_CHROMEDRIVER", "/usr/bin/chromedriver")
# Headless as root in a container; nothing but loopback is resolved, so the pages must stand alone.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
SERVER_START_S = 60  # bounded waits; each is a few seconds on an idle machine
PAGE_WAIT_S = 30
ARMS, SEEDS = ("control", "gated", "feudal"), (0, 1, 2)
SCREENSHOT_WIDTH = 1000  # pixels of the README's images


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install Debian's chromium and chromium-driver (apt-get)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on loopback in its own process group, stopped with that group."""

    def __init__(self, store_uri: str, artifact_root: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        quiet = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                 "DO_NOT_TRACK": "true"}  # no job runner processes, nothing sent home
        env = {**os.environ, **quiet}
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT, env=env,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = SERVER_START_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {self.proc.returncode}:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not up after {timeout} s:\n{self._tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Iterator[dict]:
    """A 3-arm x 3-seed ablation in a real SQLite store, its report (links pointing at the
    live UI), and the MLflow server that serves the store, started while the report builds."""
    why = _browser_missing()
    if why:
        pytest.skip(why)
    from analysis.report import build_report

    root = tmp_path_factory.mktemp("browser")
    uri = synthetic.new_store(str(root))
    sweep = synthetic.make_ablation(
        "browser_check", {"gated": 0.08, "feudal": 0.0}, control=ARMS[0], seeds=SEEDS, budget=60,
        eval_every=20, variants={"gated": ["gate"], "feudal": ["feudal"]},
        flops_per_step={"control": 1e6, "gated": 1.2e6, "feudal": 1.1e6},
        health_checked=True, diag=True,
    )
    artifacts = str(root / "artifacts")
    parent_id = synthetic.write_sweep(uri, sweep, artifact_root=artifacts)
    server = MlflowServer(uri, artifacts, root / "mlflow-server.log")
    try:
        result = build_report(parent_run=parent_id, tracking_uri=uri, out=root / "report", ui_url=server.url)
        server.wait_ready()
        yield {"uri": uri, "parent_id": parent_id, "report": result, "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(reported) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hrm-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _headings(nb) -> list[str]:
    """The report's headings as its notebook states them (# title, ## sections)."""
    return [c.source.splitlines()[0].lstrip("#").strip() for c in nb.cells
            if c.cell_type == "markdown" and c.source.startswith("#")]


def _figures(nb) -> int:
    return sum("image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_report_and_parent_run_page_in_a_browser(reported, browser):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report, server = reported["report"], reported["server"]
    nb = nbformat.read(str(report.notebook), as_version=4)

    _assistant_closed(browser, server.url)
    # the report: every figure of the notebook is an image that loaded, every heading is shown
    browser.get(report.html.as_uri())
    WebDriverWait(browser, PAGE_WAIT_S).until(lambda d: d.execute_script("return document.readyState")
                                              == "complete")
    images = browser.execute_script("return Array.from(document.images)"
                                    ".map(i => [i.complete && i.naturalWidth > 0, i.src.slice(0, 60)])")
    figures = _figures(nb)
    assert len(images) >= figures >= 5, f"{len(images)} images on the page, {figures} in the notebook"
    assert [src for ok, src in images if not ok] == [], "images that did not load"
    heads = browser.find_elements(By.CSS_SELECTOR, "h1, h2")
    shown = {h.text.rstrip("¶").strip() for h in heads if h.is_displayed()}
    expected = _headings(nb)
    assert {"Overview", "Leaderboard", "Statistics", "MLflow runs"} <= set(expected)
    assert [h for h in expected if h not in shown] == [], f"headings not shown; shown: {sorted(shown)}"
    _screenshot(browser, "report.png")

    # a person follows the report's link to the parent run; the UI (a React app) lists its trials
    client = MlflowClient(reported["uri"])
    parent = client.get_run(reported["parent_id"])
    link = browser.find_element(By.LINK_TEXT, parent.info.run_name)
    assert link.get_attribute("href").startswith(server.url + "/#/experiments/")
    link.click()
    kids = child_runs(client, reported["parent_id"])
    assert len(kids) == len(ARMS) * len(SEEDS)
    wanted = {k.info.run_id: f"{k.data.tags[names.TAG_ARM]}/seed{k.data.tags[names.TAG_SEED]}" for k in kids}
    assert sorted(wanted.values()) == sorted(f"{a}/seed{s}" for a in ARMS for s in SEEDS)

    def listed(d) -> dict[str, str] | bool:
        anchors = d.execute_script(
            "return Array.from(document.querySelectorAll('a[href*=\"/runs/\"]'))"
            ".map(a => [a.getAttribute('href').split('/runs/').pop(), a.textContent.trim()])")
        found = {rid: text for rid, text in anchors if rid in wanted}
        return found if len(found) == len(wanted) else False

    try:
        found = WebDriverWait(browser, PAGE_WAIT_S, poll_frequency=0.25).until(listed)
    except Exception:
        text = browser.execute_script("return document.body.innerText")[:1500]
        raise AssertionError(f"the parent run's page does not link every child run:\n{text}") from None
    assert parent.info.run_name in browser.execute_script("return document.body.innerText")
    assert found == wanted, "child runs are not listed by arm and seed"
    _screenshot(browser, "mlflow-parent-run.png")


def _assistant_closed(browser, url: str) -> None:
    """Keep MLflow's assistant side panel shut (it opens on a first visit): only the
    screenshot's framing depends on it, so unknown keys in a later MLflow do no harm."""
    if not os.environ.get("HRM_SCREENSHOTS"):
        return
    browser.get(f"{url}/health")
    browser.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                           "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")


def _screenshot(browser, name: str) -> None:
    """With HRM_SCREENSHOTS=DIR: the visible page, scaled to SCREENSHOT_WIDTH, as a small PNG."""
    out = os.environ.get("HRM_SCREENSHOTS")
    if not out:
        return
    import io

    from PIL import Image

    path = Path(out if os.path.isabs(out) else os.path.join(PROJECT, out)) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    if image.width > SCREENSHOT_WIDTH:
        image = image.resize((SCREENSHOT_WIDTH, round(image.height * SCREENSHOT_WIDTH / image.width)),
                             Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
