"""Epoch times measured by finished runs, for calibrating the time estimates.

Each finished run's ``summary.json`` records the seconds of every epoch by phase
(``epoch_seconds``), the split sizes and the device; its ``config.json`` says what trained.
:func:`measured_epochs` turns them into :class:`core.models.estimate.MeasuredEpochs`, one per
phase, which :func:`core.models.estimate.calibrated_estimate` uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.jsonfile import CorruptFileError, read_json
from core.models.estimate import MeasuredEpochs
from core.runs.store import CONFIG_FILE, SUMMARY_FILE
from core.workspace import runs_dir


def _phase_trainable(phase: str, config: dict[str, Any]) -> str:
    model = config.get("model") or {}
    if phase == "fine-tune":
        return str(config.get("fine_tune_trainable") or "all")
    return str(model.get("trainable") or "head")


def _augment_enabled(config: dict[str, Any]) -> bool:
    from core.config import AugmentConfig

    augment = (config.get("model") or {}).get("augment") or {}
    try:
        return AugmentConfig(**augment).enabled
    except (TypeError, ValueError):
        return False


def run_timings(folder: str | os.PathLike[str]) -> list[MeasuredEpochs]:
    """The measured epochs of one run folder, one entry per phase (empty when none).

    Only completed runs count: a cancelled or failed run's last epoch may be cut short.
    Damaged or missing files give no entries (they never stop the others from counting).
    """
    folder = Path(folder)
    try:
        summary = read_json(folder / SUMMARY_FILE) or {}
        config = read_json(folder / CONFIG_FILE) or {}
    except CorruptFileError:
        return []
    by_phase = summary.get("epoch_seconds")
    if summary.get("state") != "completed" or not isinstance(by_phase, dict):
        return []
    model = config.get("model") or {}
    embedding = None
    if summary.get("fast_path") and not summary.get("embedding_reused"):
        parts = [summary.get("embedding_seconds"), summary.get("views_seconds")]
        if not summary.get("views_reused"):
            embedding = sum(float(p) for p in parts if isinstance(p, int | float)) or None
    found = []
    for phase, seconds in by_phase.items():
        values = tuple(float(s) for s in seconds if isinstance(s, int | float) and s > 0)
        if not values:
            continue
        trainable = _phase_trainable(str(phase), config)
        found.append(
            MeasuredEpochs(
                backbone=str(model.get("backbone") or ""),
                image_size=int(model.get("image_size") or 0),
                trainable=trainable,
                augment=_augment_enabled(config),
                train_images=int(summary.get("num_train") or 0),
                val_images=int(summary.get("num_val") or 0),
                epoch_seconds=values,
                gpu=summary.get("device_kind") == "gpu",
                cpu_cores=int(summary.get("cpu_cores") or 0),
                embedding_seconds=embedding if trainable == "head" else None,
            )
        )
    return found


def measured_epochs(root: str | os.PathLike[str] | None = None) -> list[MeasuredEpochs]:
    """The measured epochs of every completed run under ``root`` (default ``workspace/runs``)."""
    base = Path(root) if root is not None else runs_dir()
    if not base.is_dir():
        return []
    found: list[MeasuredEpochs] = []
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and (folder / SUMMARY_FILE).is_file():
            found.extend(run_timings(folder))
    return found


def timings_stamp(root: str | os.PathLike[str] | None = None) -> tuple[tuple[str, int], ...]:
    """``(run id, summary mtime)`` of every run with a summary: changes when one is added."""
    base = Path(root) if root is not None else runs_dir()
    if not base.is_dir():
        return ()
    return tuple(
        (folder.name, (folder / SUMMARY_FILE).stat().st_mtime_ns)
        for folder in sorted(base.iterdir())
        if (folder / SUMMARY_FILE).is_file()
    )
