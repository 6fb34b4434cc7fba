"""Keep learning as new data arrives: a run that starts from an earlier run's model.

Real runs (the worker's code, in this process) of the offline EfficientNet-Lite0 at 64 px on
generated shapes: a parent run, then children on the same dataset after images or a class
were added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import ModelConfig, TrainConfig
from core.data.ingest import add_images, ingest
from core.data.sample import write_class_folders
from core.data.store import load_dataset
from core.runs.lineage import IncompatibleParentError, plan_start, start_from_parent
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import create_run, read_summary
from core.training.worker import run_worker
from tests.helpers.runs import subprocess_env

MODEL = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=64)


def _dataset(tmp_path: Path, counts: dict[str, int], seed: int = 1) -> str:
    source = write_class_folders(tmp_path / f"src-{seed}", counts, size=(64, 64), seed=seed)
    report = ingest(source, name="shapes", val_fraction=0.25, test_fraction=0.1, seed=1)
    assert report.dataset_id, report.error
    return report.dataset_id


def _add(tmp_path: Path, dataset_id: str, counts: dict[str, int], seed: int) -> None:
    folder = write_class_folders(tmp_path / f"more-{seed}", counts, size=(64, 64), seed=seed)
    for label in counts:
        files = [(p.name, p.read_bytes()) for p in sorted((folder / label).iterdir())]
        add_images(dataset_id, label, files)


def _train(config: TrainConfig) -> Path:
    folder = create_run(config)
    final = run_worker(folder)
    assert final.state == "completed", final.message
    return folder


def _val_curve(folder: Path) -> list[float]:
    return [event["val_accuracy"] for event in epoch_events(MetricsReader(folder).all())]


def _first_epoch_reaching(curve: list[float], level: float) -> float:
    return next((i + 1 for i, value in enumerate(curve) if value >= level), float("inf"))


@pytest.mark.slow
def test_continuing_with_added_images_reaches_the_parent_sooner_than_a_fresh_run(tmp_path):
    dataset = _dataset(tmp_path, {"circle": 10, "square": 10, "triangle": 10})
    parent = _train(TrainConfig(dataset=dataset, model=MODEL, epochs=25, batch_size=8, seed=5))
    parent_best = read_summary(parent)["best_val_accuracy"]
    assert parent_best >= 0.75
    _add(tmp_path, dataset, {"circle": 6, "square": 6, "triangle": 6}, seed=9)
    # Same seed and settings, a small learning rate: only the starting point differs.
    settings = dict(dataset=dataset, model=MODEL, epochs=8, batch_size=8, seed=5)
    child = _train(TrainConfig(**settings, learning_rate=1e-4, init_from=parent.name))
    fresh = _train(TrainConfig(**settings, learning_rate=1e-4))
    child_epoch = _first_epoch_reaching(_val_curve(child), parent_best)
    fresh_epoch = _first_epoch_reaching(_val_curve(fresh), parent_best)
    assert child_epoch < fresh_epoch, (_val_curve(child), _val_curve(fresh), parent_best)
    summary = read_summary(child)
    assert summary["parent_run"] == parent.name
    assert summary["kept"] == ["circle", "square", "triangle"] and summary["added"] == []
    assert any("Starts from run" in note for note in summary["notes"])


@pytest.mark.slow
def test_a_new_class_keeps_old_predictions_and_is_learned(tmp_path):
    from core.models.transfer import build_model
    from core.runs.predict import load_batch, load_run_model

    dataset = _dataset(tmp_path, {"circle": 10, "square": 10})
    parent = _train(TrainConfig(dataset=dataset, model=MODEL, epochs=20, batch_size=8, seed=2))
    _add(tmp_path, dataset, {"triangle": 14}, seed=4)
    data = load_dataset(dataset)
    classes = list(data.classes)
    assert classes == ["circle", "square", "triangle"]
    config = TrainConfig(dataset=dataset, model=MODEL, epochs=15, batch_size=8, seed=2)
    plan = plan_start(config.replace(init_from=parent.name), classes)
    assert (plan.kept, plan.added, plan.dropped) == (["circle", "square"], ["triangle"], [])

    # Before any training: the old classes' images keep their top-1 class.
    old = data.manifest[data.manifest["label"] != "triangle"]
    paths = [str(data.dir / image) for image in old["image"]]
    batch = load_batch(paths, 64)
    before = load_run_model(parent).predict(batch).argmax(axis=1)
    child_model = build_model(MODEL, len(classes))
    start_from_parent(child_model, plan, classes)
    after = np.asarray(child_model.predict(batch, verbose=0)).argmax(axis=1)
    parent_names = np.array(["circle", "square"])[before]
    child_names = np.array(classes)[after]
    assert np.mean(parent_names == child_names) >= 0.8

    # Training from the parent learns the new class too.
    child = _train(config.replace(init_from=parent.name))
    model = load_run_model(child)
    triangles = data.manifest[(data.manifest["label"] == "triangle")]
    guesses = model.predict(load_batch([str(data.dir / i) for i in triangles["image"]], 64))
    assert np.mean(np.array(model.labels)[guesses.argmax(axis=1)] == "triangle") >= 0.6
    assert read_summary(child)["added"] == ["triangle"]


def test_incompatible_parent_is_refused_before_start(tmp_path):
    dataset = _dataset(tmp_path, {"circle": 8, "square": 8})
    parent = _train(TrainConfig(dataset=dataset, model=MODEL, epochs=1, batch_size=8))
    other_size = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=96)
    config = TrainConfig(dataset=dataset, model=other_size, init_from=parent.name)
    with pytest.raises(IncompatibleParentError, match="image size"):
        plan_start(config, ["circle", "square"])
    with pytest.raises(IncompatibleParentError, match="no-such-run"):
        plan_start(config.replace(init_from="no-such-run"), ["circle", "square"])
    with pytest.raises(IncompatibleParentError, match="none of these classes"):
        plan_start(config.replace(model=MODEL, init_from=parent.name), ["dog", "cat"])


def test_cli_refuses_an_incompatible_parent_with_exit_2(tmp_path, workspace):
    dataset = _dataset(tmp_path, {"circle": 8, "square": 8})
    parent = _train(TrainConfig(dataset=dataset, model=MODEL, epochs=1, batch_size=8))
    command = [sys.executable, "-m", "core", "train", "--data", dataset, "--json"]
    wrong = [*command, "--backbone", "mobilenet_v2", "--weights", "none", "--image-size", "64"]
    result = subprocess.run(
        [*wrong, "--init-from", parent.name],
        env=subprocess_env(workspace),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "built differently" in result.stderr and "backbone" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    # Nothing was started: the only run is the parent.
    assert [p.name for p in (workspace / "runs").iterdir()] == [parent.name]


def test_cli_continues_from_a_parent(tmp_path, workspace):
    dataset = _dataset(tmp_path, {"circle": 8, "square": 8})
    parent = _train(TrainConfig(dataset=dataset, model=MODEL, epochs=2, batch_size=8))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "train",
            "--data",
            dataset,
            "--backbone",
            "efficientnet_lite0",
            "--image-size",
            "64",
            "--epochs",
            "1",
            "--init-from",
            parent.name,
            "--json",
        ],
        env=subprocess_env(workspace),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Starts from run" in result.stderr
    summary = read_summary(child["run_dir"])
    assert summary["parent_run"] == parent.name
