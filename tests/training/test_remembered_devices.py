"""The worker's device description is kept for the app, which then needs no TensorFlow."""

from __future__ import annotations

import json
import time

from core.training import devices
from core.workspace import cache_dir


def test_remembered_devices_round_trip_and_expire(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    assert devices.remembered_devices() is None
    info = devices.describe_devices()
    devices.remember_devices(info)
    assert devices.remembered_devices() == info
    path = cache_dir() / devices.DEVICES_FILE
    stored = json.loads(path.read_text())
    stored["time"] = time.time() - devices.REMEMBERED_SECONDS - 5
    path.write_text(json.dumps(stored))
    assert devices.remembered_devices() is None  # too old: the machine may have changed


def test_a_damaged_description_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    path = cache_dir() / devices.DEVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for text in (
        "",
        '{"time": 1',
        "[]",
        json.dumps({"time": now, "devices": "cpu"}),
        json.dumps({"time": "soon", "devices": {"kind": "cpu", "label": "cpu"}}),
        json.dumps({"time": now, "devices": {"kind": "tpu", "label": "x"}}),
        json.dumps({"time": now + 3600, "devices": {"kind": "cpu", "label": "cpu"}}),
    ):
        path.write_text(text)
        assert devices.remembered_devices() is None, text
