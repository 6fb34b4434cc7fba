"""Browser tests: the app started as the README starts it, in Debian's headless Chromium.

``scripts/run-app.sh`` runs the server (same config, file watcher as configured) once per
test session on a free localhost port with its own temporary ``TRANSFER_STUDIO_HOME``; each
test gets a fresh browser page. Screenshots go to ``test-artifacts/screenshots/``. Without
``/usr/bin/chromium`` the tests are skipped, except when ``CI=true``, where a missing browser
is a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SCREENSHOTS

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing (install it: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory) -> Path:
    """The workspace of the test server (shared by every browser test of the session)."""
    return tmp_path_factory.mktemp("e2e-workspace")


def app_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the app the way the README does.

    ``scripts/run-app.sh`` with the repository's ``.streamlit/config.toml`` (file watcher as
    configured), using the venv of this Python process as it is (no reinstall).
    """
    env = dict(os.environ)
    env.update(
        TRANSFER_STUDIO_VENV=sys.prefix,
        TRANSFER_STUDIO_NO_INSTALL="1",
        TRANSFER_STUDIO_ADDRESS="127.0.0.1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    command = [
        "bash",
        str(ROOT / "scripts" / "run-app.sh"),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
    ]
    return command, env


@contextlib.contextmanager
def running_server(home: Path):
    """Runs the app (``scripts/run-app.sh``) on a free port with ``home`` as its workspace.

    Yields the base URL once /_stcore/health answers; stops the server on exit.
    """
    port = _free_port()
    command, env = app_command(port)
    env.update(
        TRANSFER_STUDIO_HOME=str(home),
        # Never reach out: a refused local port stands in for the weights server.
        TRANSFER_STUDIO_WEIGHTS_MIRROR="http://127.0.0.1:9",
    )
    log_path = home / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_health(process, url, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_health(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            text = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"streamlit did not start on {url}:\n{text}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def server(studio_home):
    """The session's app server; yields its base URL."""
    _require_chromium()
    with running_server(studio_home) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser tab (its own Streamlit session) with downloads allowed."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.base_url = server  # type: ignore[attr-defined]
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Folder for the screenshots of this run (emptied once per run by ``tests/conftest.py``)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def fresh_server(tmp_path):
    """A brand-new app server for one test (for behaviour right after a server start)."""
    _require_chromium()
    with running_server(tmp_path) as url:
        yield url
