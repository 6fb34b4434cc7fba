"""Prediction on files and bytes: same normalisation as ingest, bad files get an error entry
and the others are still predicted, and the CLI prints a JSON list."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.data.sample import draw_shape
from tests.helpers.runs import make_dataset, make_run, subprocess_env


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        run_dir = make_run(make_dataset(tmp_path_factory.mktemp("source")), epochs=1)
    return root, run_dir


@pytest.fixture
def opened(shared, monkeypatch):
    from core.runs.predict import load_run_model

    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(shared[0]))
    return load_run_model(shared[1])


def _jpeg(path, shape="circle", seed=0, size=(48, 40)):
    draw_shape(shape, size, np.random.default_rng(seed)).save(path, "JPEG", quality=95)
    return path


def test_good_bad_and_missing_files(opened, tmp_path):
    from core.runs.predict import predict_sources

    good = _jpeg(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image at all" * 10)
    missing = tmp_path / "missing.png"
    results = predict_sources(opened, [good, bad, missing, ("upload.png", good.read_bytes())], k=2)

    assert [r["file"] for r in results] == [str(good), str(bad), str(missing), "upload.png"]
    assert "error" not in results[0] and "error" not in results[3]
    assert results[1]["error"] and "label" not in results[1]
    assert results[2]["error"]
    for entry in (results[0], results[3]):
        assert entry["label"] in opened.labels
        assert set(entry["probabilities"]) == set(opened.labels)
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert entry["confidence"] == pytest.approx(max(entry["probabilities"].values()))
        assert [t["label"] for t in entry["top_k"]][0] == entry["label"]
        assert len(entry["top_k"]) == 2
    # The same picture from a path and from bytes gives the same answer.
    assert results[0]["probabilities"] == pytest.approx(results[3]["probabilities"])


def test_exif_rotation_is_applied_like_ingest(opened, tmp_path):
    from core.runs.predict import predict_sources

    upright = draw_shape("triangle", (48, 32), np.random.default_rng(7))
    buffer = io.BytesIO()
    upright.save(buffer, "PNG")
    # Store the pixels rotated, with EXIF orientation 6 ("rotate 90 CW to view"):
    # a correct reader turns it back upright.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = io.BytesIO()
    stored.save(rotated, "PNG", exif=exif)
    plain, turned = predict_sources(opened, [buffer.getvalue(), rotated.getvalue()])
    assert turned["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-5)


def test_missing_model_is_a_clear_error(tmp_path):
    from core.runs.predict import load_run_model

    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.keras yet"):
        load_run_model(tmp_path / "run")


def test_cli_lists_predictions_and_errors(shared, tmp_path):
    root, run_dir = shared
    good = _jpeg(tmp_path / "a.jpg", "square")
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\x00\x01garbage")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "predict",
            "--run",
            str(run_dir),
            str(good),
            str(bad),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    assert isinstance(data, list) and len(data) == 2
    assert data[0]["file"] == str(good)
    assert {"file", "label", "confidence", "probabilities"} <= set(data[0])
    assert data[1]["file"] == str(bad) and data[1]["error"]
