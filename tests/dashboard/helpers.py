"""Helpers for the dashboard tests: a running ``hpsearch dashboard`` and Debian's Chromium.

The browser is Debian's ``chromium`` driven through Debian's ``chromedriver`` by
selenium, with the driver path set explicitly and selenium-manager offline:
nothing is ever downloaded. Without them, ``browser`` tests skip (fail under CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.services import free_port, missing

CHROMIUM = os.environ.get("HPSEARCH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HPSEARCH_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: Needed on a closed network: without the background-networking flags Chromium keeps dialling Google.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)


class Dashboard:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def get_json(self, path: str, timeout: float = 30) -> object:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:  # noqa: S310 - loopback only
            return json.loads(r.read())

    def study_id(self, name: str) -> int:
        studies = self.get_json("/api/studies")["study_summaries"]  # type: ignore[index]
        return next(s["study_id"] for s in studies if s["study_name"] == name)

    def request(self, method: str, path: str, body: object = None, *, timeout: float = 30) -> tuple[int, bytes]:
        """Send ``METHOD path`` (``body``: bytes as they are, else JSON); the status and body, errors too."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None and not isinstance(body, bytes):
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.request.HTTPError as e:  # 4xx/5xx: the answer is the result
            return e.code, e.read()


@contextmanager
def dashboard(*args: str | os.PathLike[str], cwd: Path, wait_s: float = 90) -> Iterator[Dashboard]:
    """Run ``hpsearch dashboard ARGS --port P`` until the block ends; stop exactly that process."""
    port = free_port()
    log = cwd / f"dashboard-{port}.log"
    fh = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "dashboard", *map(str, args), "--port", str(port)],
        cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, text=True,
    )
    dash = Dashboard(proc, port, log)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"hpsearch dashboard exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                dash.get_json("/api/meta", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"dashboard not up after {wait_s} s: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield dash
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        fh.close()


@pytest.fixture
def browser(tmp_path: Path):
    """A headless Debian Chromium under selenium (skips without it; fails under CI=true)."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        missing(f"Debian chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}) are not installed; "
                "source .ci/services.sh as root")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: pip install -e '.[test]'")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download a driver or a browser
    profile = tempfile.mkdtemp(prefix="hps-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
