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
