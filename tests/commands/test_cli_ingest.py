"""The ``inspect`` and ``ingest`` commands run as a user would (subprocess), exit codes too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.data.sample import write_class_folders

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def good(tmp_path):
    return write_class_folders(tmp_path / "good", {"cats": 5, "dogs": 5}, size=(32, 32))


def test_inspect_ok_writes_nothing(good, workspace):
    result = run_cli("inspect", str(good), "--json")
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["classes"] == {"cats": 5, "dogs": 5} and report["num_images"] == 10
    assert report["rejected"] == [] and report["duplicates"] == []
    assert all("fewer than 10 images" in warning for warning in report["warnings"])
    assert report["trainable"] is True
    assert "inspect: 10/10 files" in result.stderr  # progress goes to stderr
    assert not (workspace / "datasets").exists() or not any((workspace / "datasets").iterdir())


def test_inspect_untrainable_exits_2_with_one_line_and_still_prints_json(tmp_path):
    src = write_class_folders(tmp_path / "one", {"cats": 4}, size=(32, 32))
    (src / "cats" / "notes.jpg").write_text("not a picture")
    result = run_cli("inspect", str(src), "--json")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "at least 2 classes" in errors[0]
    report = last_json(result.stdout)
    assert report["classes"] == {"cats": 4} and report["trainable"] is False
    assert report["rejected"][0]["file"] == "cats/notes.jpg"


def test_ingest_creates_the_dataset(good, workspace):
    result = run_cli(
        "ingest",
        str(good),
        "--name",
        "Pets",
        "--val-split",
        "0.2",
        "--test-split",
        "0",
        "--seed",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    dataset_dir = Path(report["dataset_dir"])
    assert report["dataset_id"] == dataset_dir.name
    assert dataset_dir.parent == workspace / "datasets"
    assert (dataset_dir / "manifest.csv").is_file()
    assert report["splits"]["cats"] == {"train": 4, "val": 1, "test": 0}
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    assert meta["name"] == "Pets" and meta["seed"] == 3


def test_ingest_refusals_exit_2(tmp_path, workspace):
    src = write_class_folders(tmp_path / "small", {"a": 5, "b": 1}, size=(32, 32))
    result = run_cli("ingest", str(src), "--name", "x", "--json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: Some classes are too small")
    assert last_json(result.stdout)["classes"] == {"a": 5, "b": 1}
    missing = run_cli("ingest", str(tmp_path / "missing"), "--json")
    assert missing.returncode == 2 and "No such file or folder" in missing.stderr
    bad_split = run_cli("ingest", str(src), "--val-split", "3")
    assert bad_split.returncode == 2 and "val_fraction must be" in bad_split.stderr
    datasets = workspace / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())


def test_human_summary_without_json(good):
    result = run_cli("inspect", str(good))
    assert result.returncode == 0
    assert "images: 10 in 2 classes" in result.stdout
