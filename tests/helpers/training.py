"""Helpers shared by the training-engine tests (small real datasets, waiting for runs).

Imported by the engine tests; it defines no tests itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.config import ModelConfig, TrainConfig
from core.data.sample import write_class_folders

BACKBONE = "mobilenet_v3_small"


def make_dataset(
    tmp_path: Path,
    per_class: int = 12,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    size: int = 48,
    name: str = "shapes",
) -> str:
    """Writes class folders of generated shapes, ingests them and returns the dataset id."""
    from core.data.ingest import ingest

    folder = write_class_folders(
        tmp_path / f"src-{name}", dict.fromkeys(classes, per_class), size=(size, size)
    )
    report = ingest(folder, name=name, val_fraction=0.25, test_fraction=0.15, seed=1)
    assert report.dataset_id, report.error
    return report.dataset_id


def small_config(dataset_id: str, **changes) -> TrainConfig:
    """A config that trains in seconds on a CPU: 32 px, random weights, a small backbone."""
    model_values = {
        "backbone": BACKBONE,
        "weights": "none",
        "image_size": 32,
        "trainable": "head",
        "dropout": 0.0,
    }
    model_values.update(changes.pop("model", {}))
    model = ModelConfig(**model_values)
    values = {
        "dataset": dataset_id,
        "model": model,
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-3,
        # Off unless a test asks: tests count epochs (the auto default stops the head early).
        "early_stopping_patience": 0,
        "seed": 3,
    }
    values.update(changes)
    return TrainConfig(**values)


def wait_for(predicate: Callable[[], object], timeout: float = 240.0, every: float = 0.05):
    """Polls ``predicate`` until it returns something truthy; fails after ``timeout`` s.

    The timeout only guards against a hung test; no assertion depends on timing.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_until_final(folder: Path, timeout: float = 240.0):
    """Waits until the run in ``folder`` is no longer queued/running; returns its status."""
    from core.runs.store import read_status

    return wait_for(lambda: (s := read_status(folder)).active is False and s, timeout)


def worker_log(folder: Path) -> str:
    """The worker's output, for assertion messages."""
    path = Path(folder) / "worker.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no worker.log)"


def logistic_regression_reference(summary: dict, split_name: str = "val") -> float:
    """Accuracy of scikit-learn's LogisticRegression on a run's own cached embeddings.

    Fitted on the run's train split, scored on ``split_name`` of the same dataset: the
    reference a converged linear head should reach.
    """
    import json

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from core.data.store import load_dataset

    path = Path(summary["embedding_cache"])
    vectors = np.load(path)
    names = json.loads(path.with_suffix(".json").read_text())["images"]
    row = {name: i for i, name in enumerate(names)}
    dataset = load_dataset(summary["dataset"])

    def split(name: str):
        frame = dataset.frame(name)
        return vectors[[row[v] for v in frame["image"]]], np.asarray(frame["label"])

    x_train, y_train = split("train")
    x_eval, y_eval = split(split_name)
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return float(model.score(x_eval, y_eval))


def check_recorded_evaluations(folder: Path, summary: dict, *, confidence_tolerance: float) -> None:
    """The worker left the saved model's val and test evaluations for the Evaluate page.

    They answer :func:`core.runs.evaluate.evaluate` without the model (a model loader that
    fails proves it is never called), agree with the run's summary, and match a fresh
    evaluation of the saved model run whole on the images.
    """
    import numpy as np

    from core.runs.evaluate import cache_path, evaluate

    def no_model():
        raise AssertionError("the recorded evaluation should have answered without the model")

    for split in ("val", "test"):
        assert cache_path(folder, split).is_file(), split
        recorded = evaluate(folder, split, run_model=no_model)
        assert recorded.accuracy == summary[f"{split}_accuracy"], split
        assert recorded.n == summary[f"num_{split}"]
        fresh = evaluate(folder, split, use_cache=False)
        assert [r["image"] for r in recorded.predictions] == [r["image"] for r in fresh.predictions]
        assert [r["true"] for r in recorded.predictions] == [r["true"] for r in fresh.predictions]
        assert recorded.accuracy == fresh.accuracy, split
        np.testing.assert_allclose(
            [r["confidence"] for r in recorded.predictions],
            [r["confidence"] for r in fresh.predictions],
            atol=confidence_tolerance,
        )
