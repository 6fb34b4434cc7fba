"""Defaults that converge: with nothing set, the head reaches logistic regression's accuracy.

The reference is scikit-learn's LogisticRegression fitted on the run's own cached embeddings
and its own train split, scored on the same validation split. Both datasets use the default
model (EfficientNet-Lite0 with its bundled ImageNet weights at 224 px, head only).
"""

from __future__ import annotations

import pytest

from core.config import AUTO_HEAD_EPOCHS, AUTO_HEAD_PATIENCE, TrainConfig
from core.data.ingest import ingest
from core.data.sample import write_digits_folders, write_sample_images
from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import create_run, read_best, read_summary
from core.training.worker import run_worker
from tests.helpers.training import check_recorded_evaluations, logistic_regression_reference


def _train_with_defaults(dataset_id: str):
    config = TrainConfig(dataset=dataset_id)
    assert config.auto_fields == ("epochs", "learning_rate", "early_stopping_patience")
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "completed", status.message
    summary = read_summary(folder)
    # The worker kept what it trained on for the app (no TensorFlow import there).
    from core.training.devices import remembered_devices

    assert remembered_devices()["label"] == summary["device"]
    return folder, summary


def _check_converged_and_matches_logreg(folder, summary) -> None:
    events = epoch_events(MetricsReader(folder).all())
    assert summary["fast_path"] is True
    assert summary["settings"]["early_stopping_patience"] == AUTO_HEAD_PATIENCE
    # Early stopping ended the head phase (validation loss stopped improving), not the cap.
    assert len(events) < AUTO_HEAD_EPOCHS
    assert summary["epochs_completed"] == len(events)
    best = read_best(folder)
    # The summary scores the restored best epoch, not the last one.
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert summary["test_accuracy"] is not None and summary["num_test"] > 0
    reference = logistic_regression_reference(summary)
    assert summary["val_accuracy"] >= reference - 0.01, (summary["val_accuracy"], reference)
    # The head ran on the cached float32 embeddings: the same numbers as the whole model.
    check_recorded_evaluations(folder, summary, confidence_tolerance=1e-4)


@pytest.mark.slow
def test_defaults_match_logistic_regression_on_the_sample_data(tmp_path):
    report = ingest(write_sample_images(tmp_path / "sample"), name="sample", seed=1)
    assert report.dataset_id, report.error
    _check_converged_and_matches_logreg(*_train_with_defaults(report.dataset_id))


@pytest.mark.slow
def test_defaults_match_logistic_regression_on_handwritten_digits(tmp_path):
    folder = write_digits_folders(tmp_path / "digits", per_class=40)
    report = ingest(folder, name="digits", seed=1)
    assert report.dataset_id, report.error
    _check_converged_and_matches_logreg(*_train_with_defaults(report.dataset_id))
