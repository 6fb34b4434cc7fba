"""Which web export live prediction may reuse: current, complete, and readable, or none."""

from __future__ import annotations

import json
import os

import pytest

from core.runs.export_folder import MARKER_FILE
from core.runs.live import LIVE_FILES, current_web_export
from core.runs.store import now_iso


@pytest.fixture
def run_with_export(tmp_path):
    run = tmp_path / "run"
    (run / "exports" / "web" / "ort").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"model")
    old = (run / "model.keras").stat().st_mtime - 60
    os.utime(run / "model.keras", (old, old))
    folder = run / "exports" / "web"
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "classifier.js").write_text("// js")
    (folder / "model.json").write_text(json.dumps({"model": "model.onnx", "size": 64}))
    marker = {
        "kind": "transfer-studio-export",
        "format": "web",
        "created": now_iso(),
        "files": [*LIVE_FILES, "README.md"],
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    return run, folder, marker


def test_a_complete_current_export_is_reused(run_with_export):
    run, folder, _ = run_with_export
    assert current_web_export(run) == folder


@pytest.mark.parametrize("content", ["", "{", "[]", '"web"', "\xff"])
def test_a_truncated_or_foreign_marker_means_export_again(run_with_export, content):
    run, folder, _ = run_with_export
    (folder / MARKER_FILE).write_text(content, encoding="latin-1")
    assert current_web_export(run) is None


@pytest.mark.parametrize(
    "change",
    [
        {"format": "onnx"},
        {"kind": "something else"},
        {"files": ["model.onnx"]},
        {"files": "model.onnx"},
        {"created": "yesterday"},
        {"created": 5},
        {"created": "2000-01-01T00:00:00.000+00:00"},  # older than the model: stale
    ],
)
def test_a_marker_that_does_not_describe_a_current_web_export_is_not_reused(
    run_with_export, change
):
    run, folder, marker = run_with_export
    (folder / MARKER_FILE).write_text(json.dumps({**marker, **change}))
    assert current_web_export(run) is None


def test_missing_files_or_a_broken_model_json_mean_export_again(run_with_export):
    run, folder, _ = run_with_export
    (folder / "model.json").write_text("[1, 2]")
    assert current_web_export(run) is None
    (folder / "model.json").write_text("{}")
    assert current_web_export(run) == folder
    (folder / "classifier.js").unlink()
    assert current_web_export(run) is None


def test_a_run_without_a_model_has_no_live_export(run_with_export):
    run, _, _ = run_with_export
    (run / "model.keras").unlink()
    assert current_web_export(run) is None
