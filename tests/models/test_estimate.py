"""Epoch-time estimates calibrated against epochs measured by earlier runs on this machine."""

from __future__ import annotations

import json

import pytest

from core.config import AugmentConfig, ModelConfig, TrainConfig
from core.models.estimate import MeasuredEpochs, calibrated_estimate, estimate_epoch
from core.runs.timings import measured_epochs, run_timings, timings_stamp


def _measured(seconds, *, trainable="top:2", augment=True, train=400, val=100, size=224):
    return MeasuredEpochs(
        backbone="mobilenet_v2",
        image_size=size,
        trainable=trainable,
        augment=augment,
        train_images=train,
        val_images=val,
        epoch_seconds=tuple(seconds),
        cpu_cores=2,
    )


def test_without_earlier_runs_the_formula_stands():
    args = dict(train_images=400, val_images=100, augment=True, cpu_cores=2)
    plain = estimate_epoch("mobilenet_v2", 224, "top:2", **args)
    assert calibrated_estimate("mobilenet_v2", 224, "top:2", measured=[], **args) == plain


def test_a_measured_run_corrects_the_estimate_and_scales_with_the_dataset():
    args = dict(augment=True, cpu_cores=2)
    predicted = estimate_epoch(
        "mobilenet_v2", 224, "top:2", train_images=400, val_images=100, **args
    )
    # Fine-tuning with augmentation really took 3x the formula (issue 12), compile included.
    slow = _measured([predicted.first_epoch * 4, predicted.later_epochs * 3])
    same = calibrated_estimate(
        "mobilenet_v2", 224, "top:2", train_images=400, val_images=100, measured=[slow], **args
    )
    assert same.later_epochs == pytest.approx(predicted.later_epochs * 3, rel=0.3)
    assert "Calibrated on 1 earlier run" in same.note
    bigger = calibrated_estimate(
        "mobilenet_v2", 224, "top:2", train_images=1600, val_images=400, measured=[slow], **args
    )
    assert bigger.later_epochs == pytest.approx(same.later_epochs * 4, rel=0.05)


def test_runs_with_other_settings_do_not_calibrate():
    args = dict(train_images=400, val_images=100, augment=True, cpu_cores=2)
    plain = estimate_epoch("mobilenet_v2", 224, "top:2", **args)
    others = [
        _measured([500, 500], augment=False),
        _measured([500, 500], trainable="all"),
        _measured([500, 500], size=160),
    ]
    assert calibrated_estimate("mobilenet_v2", 224, "top:2", measured=others, **args) == plain


def _finished_run(root, name, *, state="completed", fine_tune=True):
    folder = root / name
    folder.mkdir(parents=True)
    config = TrainConfig(
        dataset="ds1",
        model=ModelConfig(
            backbone="mobilenet_v2", image_size=224, augment=AugmentConfig.standard()
        ),
        epochs=2,
        fine_tune_epochs=2 if fine_tune else 0,
        fine_tune_trainable="top:2",
    )
    config.save(folder / "config.json")
    summary = {
        "state": state,
        "num_train": 400,
        "num_val": 100,
        "fast_path": True,
        "embedding_seconds": 40.0,
        "embedding_reused": False,
        "views_seconds": 80.0,
        "views_reused": False,
        "device_kind": "cpu",
        "cpu_cores": 2,
        "epoch_seconds": {"head": [1.5, 0.5], "fine-tune": [90.0, 60.0]},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_finished_runs_summaries_give_one_measurement_per_phase(tmp_path):
    folder = _finished_run(tmp_path, "run-a")
    _finished_run(tmp_path, "run-cancelled", state="cancelled")  # a cut-short epoch: ignored
    (tmp_path / "run-broken").mkdir()
    (tmp_path / "run-broken" / "summary.json").write_text("{not json")
    found = {m.trainable: m for m in measured_epochs(tmp_path)}
    assert set(found) == {"head", "top:2"}
    assert found["top:2"].epoch_seconds == (90.0, 60.0) and found["top:2"].augment
    assert found["top:2"].embedding_seconds is None
    assert found["head"].embedding_seconds == pytest.approx(120.0)
    assert found["head"].train_images == 400 and found["head"].val_images == 100
    assert run_timings(folder) == list(measured_epochs(tmp_path))
    assert [name for name, _ in timings_stamp(tmp_path)] == sorted(
        ["run-a", "run-broken", "run-cancelled"]
    )
    # The fine-tune estimate now follows the measured 60 s per epoch.
    tuned = calibrated_estimate(
        "mobilenet_v2",
        224,
        "top:2",
        train_images=400,
        val_images=100,
        augment=True,
        cpu_cores=2,
        measured=measured_epochs(tmp_path),
    )
    assert tuned.later_epochs == pytest.approx(60.0)
    assert tuned.first_epoch == pytest.approx(90.0)
