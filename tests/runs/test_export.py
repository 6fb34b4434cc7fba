"""Every export is a bundle that runs alone and answers like the app.

One small trained model (module scope, a 64 px EfficientNet-Lite0, see tests/helpers/runs.py) is
exported to each format. For each: the parity check already ran the bundle's ``predict.py`` in a
clean process; the test then copies the bundle alone into a fresh folder, runs its
``predict.py`` there (``python -I -S``, the project not importable) and compares its top class
with ``core predict``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from core.runs.formats import ARTIFACT_NAMES, FORMATS
from tests.helpers.clean import run_clean
from tests.helpers.runs import (
    custom_layer_names,
    make_dataset,
    make_run,
    subprocess_env,
    workspace_with_run,
)

QUANTISED = ("tflite-int8", "tflite-int8-full")
RUNTIME_PINS = {
    "keras": ("keras==", "tensorflow=="),
    "savedmodel": ("tensorflow==",),
    "tflite": ("ai-edge-litert==",),
    "tflite-fp16": ("ai-edge-litert==",),
    "tflite-int8": ("ai-edge-litert==",),
    "tflite-int8-full": ("ai-edge-litert==",),
    "onnx": ("onnxruntime==",),
    "web": ("onnxruntime==",),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return workspace_with_run(tmp_path_factory)


@pytest.fixture
def run_dir(shared, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(shared[0]))
    return shared[1]


def _bundle_labels(folder, images) -> list[str]:
    completed = run_clean("predict.py", ["--json", *map(str, images)], folder)
    rows = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert [row["image"] for row in rows] == [str(p) for p in images]
    return [row["label"] for row in rows]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_bundle_runs_alone_and_agrees_with_core_predict(run_dir, fmt, tmp_path):
    from core.data.store import load_dataset
    from core.runs.artifacts import run_artifact
    from core.runs.export import export_run
    from core.runs.export_folder import MARKER_FILE
    from core.runs.parity import read_parity
    from core.runs.predict import load_run_model, predict_sources

    opened = load_run_model(run_dir)
    result = export_run(run_dir, fmt, run_model=opened)
    dataset = load_dataset(opened.config["dataset"])
    n_val, n_test = len(dataset.frame("val")), len(dataset.frame("test"))

    assert result.path == result.folder / ARTIFACT_NAMES[fmt]
    assert result.path.exists() and result.bytes > 1000
    parity = result.parity
    assert parity["clean_process"] is True and parity["source"] == "val+test"
    assert parity["n"] == n_val + n_test
    assert parity["splits"]["val"]["n"] == n_val and parity["splits"]["test"]["n"] == n_test
    if fmt in QUANTISED:
        assert parity["top1_agreement"] >= 0.75
        assert 0.0 < parity["max_abs_diff"] < 0.9
        assert result.bytes < 0.5 * (run_dir / "model.keras").stat().st_size
    elif fmt == "tflite-fp16":
        assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 0.05
        assert result.bytes < 0.6 * (run_dir / "model.keras").stat().st_size
    else:
        assert parity["top1_agreement"] == 1.0
        assert parity["max_abs_diff"] < 1e-4
        assert parity["accuracy"] == parity["reference_accuracy"]

    # Self-contained: artifact, labels, predict.py, pinned requirements, model card.
    folder = result.folder
    assert (folder / "labels.txt").read_text().split() == opened.labels
    requirements = [
        line
        for line in (folder / "requirements.txt").read_text().splitlines()
        if line[:1].isalpha()
    ]
    assert requirements and all("==" in line for line in requirements)
    for pin in (*RUNTIME_PINS[fmt], "numpy==", "pillow=="):
        assert any(line.startswith(pin) for line in requirements), (pin, requirements)
    card = (folder / "README.md").read_text()
    for needle in (
        "## Classes",
        "F1",
        "## Input contract",
        "0..255",
        "RGB",
        "NHWC",
        "## Limitations",
    ):
        assert needle in card, needle
    assert all(f"| {label} |" in card for label in opened.labels)
    assert f"{opened.image_size}, {opened.image_size}, 3" in card
    assert "clean Python process" in card and parity["runtime"] in card
    assert opened.config["model"]["backbone"] in card
    with zipfile.ZipFile(result.bundle) as archive:
        names = archive.namelist()
    assert {f"{fmt}/labels.txt", f"{fmt}/README.md", f"{fmt}/predict.py"} <= set(names)
    assert f"{fmt}/{MARKER_FILE}" not in names

    stored = read_parity(run_dir)[fmt]
    assert stored["top1_agreement"] == parity["top1_agreement"]
    assert stored["bytes"] == result.bytes

    # Copied alone to a fresh folder, the bundle answers like `core predict`.
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)
    images = [dataset.dir / p for p in dataset.frame("val")["image"]][:6]
    theirs = _bundle_labels(alone, images)
    if fmt in QUANTISED:
        # Quantised: the bundle alone answers like the artifact does in this process.
        from core.runs.predict import load_batch

        probabilities = run_artifact(fmt, result.path, load_batch(images, opened.image_size))
        assert theirs == [opened.labels[i] for i in probabilities.argmax(axis=1)]
    else:
        assert theirs == [entry["label"] for entry in predict_sources(opened, images)]
    if fmt == "keras":
        assert custom_layer_names(result.path) == []
    test = parity["splits"]["test"]
    print(
        f"\n{fmt}: {result.bytes / 1e6:.2f} MB, top-1 agreement {parity['top1_agreement']:.3f}, "
        f"max |diff| {parity['max_abs_diff']:.2e}, test accuracy {test['accuracy']:.3f} "
        f"(app {test['reference_accuracy']:.3f}, n={test['n']}), {parity['runtime']}"
    )


def test_full_integer_int8_has_integer_tensors_and_keeps_accuracy(tmp_path, monkeypatch):
    """Edge TPU / microcontroller model: integer in and out, within 3 points of float on test."""
    from core.runs.artifacts import tflite_interpreter
    from core.runs.export import export_run

    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path / "ws"))
    counts = {"circle": 60, "square": 60, "triangle": 60}
    dataset_id = make_dataset(tmp_path / "src", counts)
    run = make_run(dataset_id, epochs=4)
    result = export_run(run, "tflite-int8-full")

    interpreter = tflite_interpreter(result.path)
    tensors = [interpreter.get_input_details()[0], interpreter.get_output_details()[0]]
    assert [np.dtype(t["dtype"]) for t in tensors] == [np.int8, np.int8]
    assert result.quantization["input"]["dtype"] == "int8"
    scale, zero_point = tensors[0]["quantization"]
    assert (result.quantization["input"]["scale"], result.quantization["input"]["zero_point"]) == (
        pytest.approx(scale),
        zero_point,
    )
    test = result.parity["splits"]["test"]
    assert test["n"] >= 30
    assert abs(test["accuracy"] - test["reference_accuracy"]) <= 0.03, test
    float_bytes = (run / "model.keras").stat().st_size
    print(
        f"\ntflite-int8-full: test accuracy {test['accuracy']:.3f} vs float "
        f"{test['reference_accuracy']:.3f} on {test['n']} images; "
        f"{result.bytes / 1e6:.2f} MB (model.keras {float_bytes / 1e6:.2f} MB)"
    )
    card = (result.folder / "README.md").read_text()
    assert "int8" in card and f"zero point {zero_point}" in card


def test_run_saved_by_the_previous_version_converts_on_export(run_dir, tmp_path):
    """An old model.keras (custom Preprocess layer) exports to a file plain Keras opens."""
    from core.runs.export import export_run
    from core.runs.predict import load_run_model
    from tests.helpers.runs import save_legacy_model

    opened = load_run_model(run_dir)
    old_run = tmp_path / "old-run"
    shutil.copytree(run_dir, old_run, ignore=shutil.ignore_patterns("exports"))
    (old_run / "model.keras").unlink()
    save_legacy_model(opened.model, old_run / "model.keras", labels=opened.labels)
    assert "transfer_studio>Preprocess" in custom_layer_names(old_run / "model.keras")

    result = export_run(old_run, "keras", tmp_path / "out")
    assert custom_layer_names(result.path) == []
    assert result.parity["top1_agreement"] == 1.0 and result.parity["max_abs_diff"] < 1e-5
    x = np.random.default_rng(5).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(load_run_model(old_run).predict(x), opened.predict(x), atol=1e-5)


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
            "tflite-fp16",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    assert data["format"] == "tflite-fp16"
    assert data["path"] == str(out / "model_fp16.tflite")
    assert data["bytes"] == os.path.getsize(out / "model_fp16.tflite")
    assert data["bundle"] == str(tmp_path / "mobile.zip")
    assert data["parity"]["top1_agreement"] == 1.0 and data["parity"]["clean_process"] is True


def test_cli_offers_every_format(shared):
    completed = subprocess.run(
        [sys.executable, "-m", "core", "export", "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(shared[0]),
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    choices = completed.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert tuple(choices) == FORMATS


def test_tensorflow_only_formats_say_so_on_another_backend():
    from core.runs.artifacts import BackendError, available_formats, check_backend
    from core.runs.formats import TF_ONLY_FORMATS

    assert available_formats() == {fmt: None for fmt in FORMATS}  # TensorFlow backend here
    reasons = available_formats("jax")
    assert reasons["keras"] is None
    for fmt in TF_ONLY_FORMATS:
        assert "TensorFlow backend" in reasons[fmt] and "'jax'" in reasons[fmt]
    with pytest.raises(BackendError, match="KERAS_BACKEND=tensorflow"):
        check_backend("web", "torch")
