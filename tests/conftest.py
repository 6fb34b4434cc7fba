"""Shared fixtures: every test gets its own empty workspace, and nothing touches the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Page errors reach AppTest instead of becoming an error id (see ui/errors.py).
os.environ.setdefault("TRANSFER_STUDIO_RAISE_ERRORS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def pytest_configure(config):
    """Empties the screenshot folder once per run (in the main process, not in each worker)."""
    if not hasattr(config, "workerinput") and SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)


def pytest_collection_modifyitems(config, items):
    """Groups tests for ``pytest -n N --dist loadgroup`` (what ``scripts/run-tests.sh`` runs).

    Each test file stays on one worker, so its module fixtures are built once; all browser
    tests share one worker, so two Chromium sessions never compete with each other for the
    CPU while one waits on a training run.
    """
    for item in items:
        relative = item.path.relative_to(ROOT / "tests")
        group = "e2e" if relative.parts[0] == "e2e" else relative.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A fresh ``TRANSFER_STUDIO_HOME`` for each test; yields its path."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(root))
    return root
