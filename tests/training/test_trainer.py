"""Training through the worker process: every file of the run folder, live metrics, phases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import ModelConfig, TrainConfig
from core.runs.listing import list_runs
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import read_config, read_labels, read_status, read_summary, run_dir
from core.training.callbacks import is_better
from core.training.jobs import start_run
from core.training.phases import (
    balanced_class_weights,
    plan_phases,
    uses_augmented_views,
    uses_fast_path,
)
from tests.helpers.training import make_dataset, small_config, wait_for, worker_log


@pytest.mark.slow
def test_worker_process_run_leaves_every_file_and_streams_metrics(tmp_path):
    dataset_id = make_dataset(tmp_path)
    config = small_config(
        dataset_id,
        epochs=2,
        fine_tune_epochs=1,
        fine_tune_trainable="top:1",
        fine_tune_lr_mult=0.5,
        schedule="cosine",
    )
    run_id = start_run(config)
    folder = run_dir(run_id)
    reader = MetricsReader(folder)
    seen_while_live: list[dict] = []
    polls_with_events_while_running = 0
    states = set()

    def finished():
        nonlocal polls_with_events_while_running
        status = read_status(folder)
        states.add(status.state)
        new = reader.poll()
        if new and status.state == "running":
            polls_with_events_while_running += 1
        seen_while_live.extend(new)
        return not status.active

    wait_for(finished, timeout=300)
    seen_while_live.extend(reader.poll())
    status = read_status(folder)
    assert status.state == "completed", worker_log(folder)
    assert "running" in states
    # The reader handed out every event exactly once, in order, while the run was live.
    assert polls_with_events_while_running >= 1
    assert seen_while_live == MetricsReader(folder).all()

    for name in (
        "config.json",
        "status.json",
        "metrics.jsonl",
        "model.keras",
        "labels.txt",
        "summary.json",
        "worker.log",
    ):
        assert (folder / name).is_file(), name
    assert any((folder / "checkpoints").iterdir())
    assert list((folder / "logs").rglob("events.out.tfevents*")), "TensorBoard logs missing"
    assert read_config(folder) == config

    epochs = epoch_events(seen_while_live)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["phase"] for e in epochs] == ["head", "head", "fine-tune"]
    for event in epochs:
        assert set(event) >= {
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "seconds",
            "phase",
        }
    assert epochs[2]["learning_rate"] < 0.5 * config.learning_rate + 1e-9
    batches = [e for e in seen_while_live if e["type"] == "batch"]
    assert batches and all(e["images_per_second"] > 0 for e in batches)
    # Head-only epochs train on cached features and every event says so; fine-tuning
    # runs images through the network.
    assert {e["phase"]: e["fast_path"] for e in batches} == {"head": True, "fine-tune": False}
    assert [e["fast_path"] for e in epochs] == [True, True, False]
    assert all(e["images_per_second"] > 0 for e in epochs)
    assert seen_while_live[-1]["type"] == "end"

    assert status.pid and status.epoch == 3 and status.total_epochs == 3
    assert status.started and status.finished and status.device.startswith("cpu")
    summary = read_summary(folder)
    assert summary["epochs_completed"] == 3
    assert summary["fast_path"] is True
    assert summary["num_train"] > 0 and summary["num_val"] > 0
    assert summary["classes"] == ["circle", "square", "triangle"]
    assert 1 <= summary["best_epoch"] <= 3
    assert summary["images_per_second"] > 0 and summary["seconds"] > 0
    assert summary["head_images_per_second"] > 0
    assert summary["embedding_reused"] is False and summary["embedding_images_per_second"] > 0
    assert read_labels(folder) == summary["classes"]

    from core.models.model_io import load_model

    model, labels = load_model(folder / "model.keras")
    assert labels == summary["classes"]
    probabilities = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probabilities.shape == (2, 3)
    assert [r.run_id for r in list_runs()] == [run_id]


def test_plan_phases_and_fast_path_rules():
    config = TrainConfig(
        dataset="d", epochs=3, fine_tune_epochs=2, learning_rate=0.01, fine_tune_lr_mult=0.1
    )
    one, two = plan_phases(config)
    assert (one.name, one.trainable, one.epochs) == ("head", "head", 3)
    assert (two.name, two.trainable, two.epochs) == ("fine-tune", "all", 2)
    assert two.learning_rate == pytest.approx(0.001)
    assert uses_fast_path(config, one) and not uses_fast_path(config, two)
    # Augmentation keeps the head on the fast path, served from cached augmented views.
    augmented = config.replace(model=ModelConfig(augment={"flip": "horizontal"}))
    head = plan_phases(augmented)[0]
    assert uses_fast_path(augmented, head) and uses_augmented_views(augmented, head)
    assert not uses_augmented_views(config, one)
    # Auto settings: the head phase stops early at a head's rate; a fine-tune phase after it
    # only stops early when patience was set explicitly.
    auto = TrainConfig(dataset="d", fine_tune_epochs=2)
    head, tune = plan_phases(auto)
    assert (head.epochs, head.learning_rate, head.patience) == (200, 3e-3, 10)
    assert tune.patience == 0 and tune.learning_rate == pytest.approx(3e-4)
    explicit = auto.replace(early_stopping_patience=4, epochs=7, learning_rate=0.01)
    assert [(p.epochs, p.patience) for p in plan_phases(explicit)] == [(7, 4), (2, 4)]
    whole = TrainConfig(dataset="d", model=ModelConfig(trainable="all"))
    (train,) = plan_phases(whole)
    assert (train.epochs, train.learning_rate, train.patience) == (10, 1e-4, 0)
    assert [
        p.name for p in plan_phases(TrainConfig(dataset="d", model=ModelConfig(trainable="top:2")))
    ] == ["train"]


def test_balanced_class_weights_and_best_epoch_rule():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert is_better({"val_accuracy": 0.5, "val_loss": 1.0}, None)
    assert is_better({"val_accuracy": 0.6, "val_loss": 2.0}, {"val_accuracy": 0.5, "val_loss": 1})
    assert is_better({"val_accuracy": 0.5, "val_loss": 0.9}, {"val_accuracy": 0.5, "val_loss": 1})
    assert not is_better({"val_accuracy": float("nan"), "val_loss": 0.1}, None)
    assert not is_better({"val_accuracy": 0.9, "val_loss": float("inf")}, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {
            "optimizer": "adamw",
            "weight_decay": 0.01,
            "schedule": "cosine",
            "class_weights": "balanced",
            "label_smoothing": 0.1,
        },
        {
            "optimizer": "sgd",
            "schedule": "reduce_on_plateau",
            "early_stopping_patience": 1,
            "epochs": 4,
            "restore_best": False,
        },
        {"optimizer": "rmsprop", "mixed_precision": True, "model": {"trainable": "top:1"}},
    ],
    ids=["adamw-cosine-balanced", "sgd-plateau-early-stop", "rmsprop-top1-mixed"],
)
def test_training_options_run_in_process(tmp_path, changes):
    from core.runs.store import create_run
    from core.training.worker import run_worker

    config = small_config(make_dataset(tmp_path, per_class=8), **changes)
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "completed", status.message
    summary = read_summary(folder)
    events = epoch_events(MetricsReader(folder).all())
    assert 1 <= summary["epochs_completed"] == len(events) <= config.epochs
    assert json.loads((folder / "config.json").read_text()) == config.to_dict()
    if config.schedule == "cosine":
        assert events[-1]["learning_rate"] < events[0]["learning_rate"]
    if config.mixed_precision:
        notes = [e["message"] for e in MetricsReader(folder).all() if e["type"] == "note"]
        assert any("Mixed precision needs a GPU" in n for n in notes)
        assert summary["fast_path"] is False
