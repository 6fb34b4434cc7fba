"""Shared fixtures: every test gets its own empty workspace, and nothing touches the network."""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Page errors reach AppTest instead of becoming an error id (see ui/errors.py).
os.environ.setdefault("TRANSFER_STUDIO_RAISE_ERRORS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A fresh ``TRANSFER_STUDIO_HOME`` for each test; yields its path."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(root))
    return root
