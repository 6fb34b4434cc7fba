"""Small helpers that turn a run's status and metric events into what the Train page shows.

Pure functions (no streamlit): timings, the latest throughput, the best validation score
and advice for a failed run, so they are tested without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ui.figures import batch_events, epoch_events


def _seconds(iso: str | None) -> float | None:
    from core.runs.store import parse_time

    return parse_time(iso) if iso else None


def timing(status: Any, *, now: float | None = None) -> tuple[float | None, float | None]:
    """Elapsed training time and the estimated time left, in seconds.

    Args:
        status: A :class:`core.runs.store.RunStatus`.
        now: Current time (epoch seconds); defaults to ``time.time()``.

    Returns:
        ``(elapsed, eta)``; elapsed is None before training started, eta is None until some
        progress was made or once the run ended.
    """
    now = time.time() if now is None else now
    started = _seconds(status.started)
    if started is None:
        return None, None
    finished = _seconds(status.finished)
    end = finished if finished and not status.active else now
    elapsed = max(0.0, end - started)
    if not status.active or status.state != "running":
        return elapsed, None
    done = status.progress
    if done <= 0.01:
        return elapsed, None
    return elapsed, elapsed * (1.0 - done) / done


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; None -> ``"–"``."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def latest_throughput(events: Iterable[Mapping[str, Any]]) -> float | None:
    """Images per second of the latest batch event that reports it."""
    for event in reversed(batch_events(events)):
        value = event.get("images_per_second")
        if value:
            return float(value)
    return None


FEATURES_HELP = (
    "Head-only training reuses precomputed features: each image went through the backbone "
    "once, before the first epoch, and every step now trains only the head on those "
    "feature vectors. This counts feature vectors per second, far more than images per "
    "second through the whole network."
)
IMAGES_HELP = "Training images per second through the whole network (validation excluded)."
FAST_FINETUNE_HELP = (
    "Fast fine-tuning: the frozen layers ran once over every image, before the first epoch, "
    "and their output was kept; every step now trains only the top blocks and the last "
    "layer on it. This counts images through those layers only."
)


def throughput_metric(events: Iterable[Mapping[str, Any]]) -> tuple[str, float | None, str]:
    """Label, value and help text of the Train page's throughput metric.

    On the head-only fast path the batch events count cached feature vectors, not images
    through the backbone, and the label says so.

    Returns:
        ``(label, images_per_second or None, help)``.
    """
    for event in reversed(batch_events(events)):
        value = event.get("images_per_second")
        if value:
            if event.get("fast_path"):
                return "Images / s (features)", float(value), FEATURES_HELP
            if event.get("fast_finetune"):
                return "Images / s (fast fine-tuning)", float(value), FAST_FINETUNE_HELP
            return "Images / s", float(value), IMAGES_HELP
    return "Images / s", None, IMAGES_HELP


def best_val_accuracy(events: Iterable[Mapping[str, Any]]) -> float | None:
    """Highest validation accuracy over the epochs so far (None before the first epoch)."""
    values = [e["val_accuracy"] for e in epoch_events(events) if e.get("val_accuracy") is not None]
    return max(values) if values else None


def notes(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """Messages the worker left for a person (``note`` events), oldest first, de-duplicated."""
    seen: list[str] = []
    for event in events:
        message = event.get("message")
        if event.get("type") == "note" and message and message not in seen:
            seen.append(str(message))
    return seen


def is_warning_note(note: str) -> bool:
    """Whether a worker note is a warning to show prominently (a diverging loss)."""
    from core.training.context import DIVERGENCE_NOTE_START

    return note.startswith(DIVERGENCE_NOTE_START)


def failure_advice(message: str) -> list[str]:
    """What to try after a run failed with ``message``, most likely fix first."""
    text = (message or "").lower()
    tips = []
    if "nan" in text or "inf" in text:
        tips.append("Lower the learning rate (for example divide it by 10) and start again.")
        tips.append("Switch the optimizer to Adam if you used SGD.")
    if "memory" in text or "oom" in text:
        tips.append("Halve the batch size, or choose a smaller image size on the Model page.")
        tips.append("Train the head only: it needs far less memory than the whole network.")
    about_weights = "weights" in text or "download" in text
    if about_weights:
        tips.append(
            "On the Model page pick the offline backbone (EfficientNet-Lite0), upload a "
            ".weights.h5 file, or start from random weights."
        )
    # "ImageNet" says "image" too: a weights failure is not a data problem.
    if "dataset" in text or (not about_weights and ("image" in text or "class" in text)):
        tips.append("Check the Data page: every class needs a few images in each split.")
    if not tips:
        tips.append("Resume the run, or start a new one with the same settings.")
        tips.append("If it fails again, look at the worker log in the run folder.")
    return tips


def setting_warnings(config: Any, train_images: int) -> list[str]:
    """Settings of a run that are unlikely to be what the user meant, each with the reason.

    Nothing here blocks a run; the Train page shows these beside it.

    Args:
        config: The run's :class:`core.config.TrainConfig`.
        train_images: Number of training images of its dataset.

    Returns:
        Plain sentences, most important first.
    """
    warnings = []
    batch = int(config.batch_size)
    if train_images and batch > train_images:
        warnings.append(
            f"Batch size {batch} is more than the {train_images} training images: each "
            "epoch is a single step, so the model learns slowly. A batch size of "
            f"{max(2, min(16, train_images // 2))} suits this dataset better."
        )
    epochs = int(config.effective_epochs) + int(config.fine_tune_epochs)
    patience = int(config.effective_patience)
    # The automatic cap of a head-only run (with early stopping) is no one's mistake.
    if epochs > 100 and (config.epochs is not None or not patience):
        stop = (
            f" Early stopping ends it once validation stops improving for {patience} epochs."
            if patience
            else " Early stopping is off, so every epoch runs."
        )
        warnings.append(
            f"{epochs} epochs is far more than transfer learning usually needs (5-20 is "
            f"typical): the model may learn your training images by heart.{stop}"
        )
    rate = float(config.effective_learning_rate)
    if rate >= 1e-2 and config.model.trainable != "head":
        warnings.append(
            f"A learning rate of {rate:g} while the pretrained layers learn "
            "can wipe out what they knew; 1e-4 or lower is safer."
        )
    return warnings


def in_progress_line(run: Any) -> str:
    """One plain line about a run in progress: its state, queue place and epochs.

    Args:
        run: A :class:`core.training.jobs.RunInProgress`.

    Returns:
        For example ``"Training · epoch 2 of 5"`` or ``"Waiting · place 1 of 2 in the queue"``.
    """
    from ui.labels import PHASE_NAMES

    if run.state == "running":
        doing = PHASE_NAMES.get(run.phase, run.phase) or "training"
        return f"Training ({doing}) · epoch {run.epoch} of {run.total_epochs}"
    if run.place is not None:
        return (
            f"Waiting · place {run.place} of {run.queue_length} in the queue · "
            f"{run.total_epochs} epochs planned"
        )
    return "Waiting · the training process is starting"


def run_title(run: Any) -> str:
    """The name a person gave a run, else its id."""
    return run.name or run.run_id
