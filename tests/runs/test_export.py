"""Every export format runs in its own runtime and agrees with the in-app model.

One small trained model (module scope) is exported to each format; tf2onnx and the TFLite
converter are slow, so the model is a 64 px EfficientNet-Lite0 (see eval_helpers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from core.runs.export import FORMATS
from tests.helpers.runs import make_dataset, make_run, subprocess_env


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        run_dir = make_run(make_dataset(tmp_path_factory.mktemp("source")))
    return root, run_dir


@pytest.fixture
def run_dir(shared, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(shared[0]))
    return shared[1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_parity(run_dir, fmt):
    from core.runs.export import ARTIFACT_NAMES, export_run, read_parity, run_artifact
    from core.runs.predict import load_run_model

    opened = load_run_model(run_dir)
    result = export_run(run_dir, fmt, run_model=opened)

    assert result.path == result.folder / ARTIFACT_NAMES[fmt]
    assert result.path.exists() and result.bytes > 1000
    parity = result.parity
    assert parity["source"] == "val"
    assert parity["n"] > 0
    if fmt == "tflite-int8":
        # Dynamic-range int8 weights: close, not identical; accuracy is reported for both.
        assert parity["top1_agreement"] >= 0.75
        assert 0.0 < parity["max_abs_diff"] < 0.5
        assert 0.0 <= parity["accuracy"] <= 1.0
        assert 0.0 <= parity["reference_accuracy"] <= 1.0
        assert result.bytes < (run_dir / "exports" / "tflite" / "model.tflite").stat().st_size
    else:
        assert parity["top1_agreement"] == 1.0
        assert parity["max_abs_diff"] < 1e-4
        assert parity["accuracy"] == parity["reference_accuracy"]

    # The bundle: labels + README with the input contract + a snippet, also zipped.
    assert (result.folder / "labels.txt").read_text().split() == opened.labels
    readme = (result.folder / "README.md").read_text()
    assert "0..255" in readme and "RGB" in readme and "NHWC" in readme
    assert f"{opened.image_size}, {opened.image_size}, 3" in readme
    compile((result.folder / "predict.py").read_text(), "predict.py", "exec")
    with zipfile.ZipFile(result.bundle) as archive:
        names = archive.namelist()
    assert f"{fmt}/labels.txt" in names and f"{fmt}/README.md" in names

    stored = read_parity(run_dir)[fmt]
    assert stored["top1_agreement"] == parity["top1_agreement"]
    assert stored["bytes"] == result.bytes

    # Independent check: the artifact answers like the model on a fresh batch.
    x = np.random.default_rng(5).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    ours, theirs = opened.predict(x), run_artifact(fmt, result.path, x)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs.sum(axis=1), 1.0, atol=1e-3)
    if fmt != "tflite-int8":
        np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_unknown_format_is_refused(run_dir):
    from core.runs.export import export_run

    with pytest.raises(ValueError, match="format must be one of"):
        export_run(run_dir, "coreml")


def test_cli_export_prints_parity(shared, tmp_path):
    root, run_dir = shared
    out = tmp_path / "mobile"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "export",
            "--run",
            str(run_dir),
            "--format",
            "keras",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    assert data["format"] == "keras"
    assert data["path"] == str(out / "model.keras")
    assert data["bytes"] == os.path.getsize(out / "model.keras")
    assert data["parity"]["top1_agreement"] == 1.0
    assert set(data["parity"]) >= {"top1_agreement", "max_abs_diff", "n"}


def test_tensorflow_only_formats_say_so_on_another_backend():
    from core.runs.export import TF_ONLY_FORMATS, BackendError, available_formats, check_backend

    assert available_formats() == {fmt: None for fmt in FORMATS}  # TensorFlow backend here
    reasons = available_formats("jax")
    assert reasons["keras"] is None
    for fmt in TF_ONLY_FORMATS:
        assert "TensorFlow backend" in reasons[fmt] and "'jax'" in reasons[fmt]
    with pytest.raises(BackendError, match="KERAS_BACKEND=tensorflow"):
        check_backend("onnx", "torch")
