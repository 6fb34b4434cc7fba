"""Evaluation of a trained run on its dataset's validation or test split.

:func:`evaluate` runs the run's model over the split batch by batch and returns an
:class:`EvaluationResult`: accuracy, per-class precision/recall/F1/support and the confusion
matrix (all from scikit-learn, via :func:`compute_metrics`), plus one prediction record per
image so the UI can show the images of one confusion-matrix cell or the top losses.

Results are cached in ``<run>/evaluation/<split>.json`` keyed by the model file and the
split's (image, label) rows, so a relabel or a removal invalidates the cache by itself. The
training worker records the scores it computed at the end of a run
(:func:`record_evaluation`), so a finished run's first evaluation does not load its model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.data.image_cache import cache_key
from core.jsonfile import read_json_cache
from core.runs.predict import load_batch, load_run_model, safe_log_loss
from core.runs.store import LABELS_FILE, MODEL_FILE, read_config_dict, resolve_run_dir
from core.workspace import cache_dir

SPLITS = ("val", "test")
CACHE_VERSION = 1


@dataclass
class EvaluationResult:
    """What a run gets right and wrong on one split.

    Attributes:
        run_id: Name of the run folder.
        split: ``"val"`` or ``"test"``.
        dataset: Dataset id.
        n: Number of images evaluated.
        accuracy: Fraction of images whose top-1 prediction is the true label.
        labels: Row/column order of ``confusion_matrix``: the model's classes, then any label
            in the data the model does not know (after a relabel to a new class).
        per_class: label -> {precision, recall, f1, support}.
        confusion_matrix: rows = true label, columns = predicted label, in ``labels`` order.
        macro_avg: Unweighted mean precision/recall/F1 over ``labels``.
        weighted_avg: Support-weighted mean precision/recall/F1.
        predictions: One record per image: ``image`` (manifest path, relative to the dataset),
            ``path`` (absolute), ``true``, ``predicted``, ``confidence`` (probability of the
            prediction), ``true_probability``, ``loss`` (cross-entropy) and ``correct``.
    """

    run_id: str
    split: str
    dataset: str
    n: int
    accuracy: float
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    macro_avg: dict[str, float] = field(default_factory=dict)
    weighted_avg: dict[str, float] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def cell(self, true_label: str, predicted_label: str) -> list[dict[str, Any]]:
        """The prediction records of one confusion-matrix cell, most confident first."""
        return cell_predictions(self.predictions, true_label, predicted_label)

    def top_losses(self, n: int = 16, *, wrong_only: bool = True) -> list[dict[str, Any]]:
        """The ``n`` images with the highest loss (the most confidently wrong ones)."""
        return top_losses(self.predictions, n, wrong_only=wrong_only)


def compute_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class metrics and the confusion matrix, computed by scikit-learn.

    Args:
        y_true: True label of each image.
        y_pred: Predicted label of each image.
        labels: Class order of the matrix and of ``per_class``; must contain every label of
            ``y_true`` and ``y_pred``.

    Returns:
        ``{"accuracy", "per_class", "confusion_matrix", "macro_avg", "weighted_avg"}``.

    Raises:
        ValueError: If the lengths differ or a label is missing from ``labels``.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(labels)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same length. Received: {len(y_true)} and "
            f"{len(y_pred)}"
        )
    unknown = (set(y_true) | set(y_pred)) - set(labels)
    if unknown:
        raise ValueError(f"labels must contain every label seen. Missing: {sorted(unknown)}")
    if not len(y_true):
        return {
            "accuracy": 0.0,
            "per_class": {
                label: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
                for label in labels
            },
            "confusion_matrix": [[0] * len(labels) for _ in labels],
            "macro_avg": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
            "weighted_avg": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
        }
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": matrix.astype(int).tolist(),
        "macro_avg": averages["macro"],
        "weighted_avg": averages["weighted"],
    }


def cell_predictions(
    predictions: Sequence[dict[str, Any]], true_label: str, predicted_label: str
) -> list[dict[str, Any]]:
    """Records whose true and predicted labels match one cell, most confident first."""
    chosen = [
        p for p in predictions if p["true"] == true_label and p["predicted"] == predicted_label
    ]
    return sorted(chosen, key=lambda p: -p["confidence"])


def top_losses(
    predictions: Sequence[dict[str, Any]], n: int = 16, *, wrong_only: bool = True
) -> list[dict[str, Any]]:
    """The ``n`` records with the highest loss; by default only misclassified images."""
    pool = [p for p in predictions if not (wrong_only and p["correct"])]
    return sorted(pool, key=lambda p: -p["loss"])[: max(0, n)]


def most_confused(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> tuple[str, str]:
    """The off-diagonal cell with the most images, ``(true, predicted)``.

    When nothing is misclassified, the diagonal cell of the largest class is returned, so a
    gallery always has something to show.
    """
    counts = np.asarray(matrix, dtype=int).reshape(len(labels), len(labels))
    if not len(labels):
        raise ValueError("labels must not be empty")
    off = counts.copy()
    np.fill_diagonal(off, -1)
    row, col = np.unravel_index(int(off.argmax()), off.shape)
    if off[row, col] <= 0:
        row = col = int(np.diag(counts).argmax())
    return str(labels[row]), str(labels[col])


def _training_cache_rows(
    dataset: Any, images: Sequence[str], size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The training engine's decoded-image cache and the rows of ``images``, if it has them.

    Reads an existing cache only (never builds one: a cache of just this split would replace
    the training cache of the same dataset state). None when absent or incomplete.
    """
    key = cache_key(dataset.fingerprint, size)
    npy, index = cache_dir() / "images" / f"{key}.npy", cache_dir() / "images" / f"{key}.json"
    if not (npy.is_file() and index.is_file()):
        return None
    try:
        names = json.loads(index.read_text(encoding="utf-8"))["images"]
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return None
    if array.shape != (len(names), size, size, 3):
        return None
    row_of = {name: row for row, name in enumerate(names)}
    if any(image not in row_of for image in images):
        return None
    return array, np.array([row_of[image] for image in images], dtype=np.int64)


def _split_key(model_path: Path, images: Sequence[str], labels: Sequence[str]) -> str:
    stat = model_path.stat()
    digest = hashlib.sha256()
    digest.update(f"{CACHE_VERSION}|{stat.st_mtime_ns}|{stat.st_size}|".encode())
    for image, label in zip(images, labels, strict=True):
        digest.update(f"{image}\t{label}\n".encode())
    return digest.hexdigest()


def cache_path(run_dir: str | os.PathLike[str], split: str) -> Path:
    """Where the evaluation of ``split`` is cached inside the run folder."""
    return Path(run_dir) / "evaluation" / f"{split}.json"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {set(SPLITS)}. Received: split={split!r}")


def evaluate(
    run: str | os.PathLike[str],
    split: str = "val",
    *,
    batch_size: int = 32,
    use_cache: bool = True,
    run_model: Any = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvaluationResult:
    """Evaluates a finished run on its dataset's validation or test split.

    Args:
        run: The run folder or run id.
        split: ``"val"`` or ``"test"``.
        batch_size: Images per forward pass (images are loaded one batch at a time).
        use_cache: Reuse ``<run>/evaluation/<split>.json`` when the model and the split's
            rows have not changed.
        run_model: An already opened :class:`core.runs.predict.RunModel`, or a function returning
            one (called only when the cache cannot answer), to save reloading the model.
        progress: Optional ``progress(done, total, message)`` callback.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        ValueError: If ``split`` is not allowed or the split has no images.
        FileNotFoundError: If the run, its model or its dataset does not exist.
    """
    from core.data.store import load_dataset

    _check_split(split)
    run_dir = resolve_run_dir(run)
    config = read_config_dict(run_dir)
    dataset_id = config.get("dataset")
    if not dataset_id:
        raise FileNotFoundError(f"Run {run_dir.name!r} has no config.json naming its dataset.")
    dataset = load_dataset(dataset_id)
    frame = dataset.frame(split)
    if frame.empty:
        raise ValueError(
            f"Dataset {dataset_id!r} has no images in the {split!r} split. Choose another "
            f"split, or re-split the dataset with a non-zero {split} fraction."
        )
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(
            f"Run {run_dir.name!r} has no {MODEL_FILE} yet. Finish (or resume) its training first."
        )
    key = _split_key(model_path, list(frame["image"]), [str(v) for v in frame["label"]])
    cached = cache_path(run_dir, split)
    if use_cache and cached.exists():
        data = read_json_cache(cached) or {}  # a damaged cache is recomputed
        if data.get("key") == key and isinstance(data.get("result"), dict):
            result = EvaluationResult.from_dict(data["result"])
            for record in result.predictions:  # the workspace may have moved since
                record["path"] = str(dataset.dir / record["image"])
            return result

    if callable(run_model):
        run_model = run_model()
    run_model = run_model or load_run_model(run_dir)
    images = list(frame["image"])
    truths = [str(label) for label in frame["label"]]
    paths = [dataset.dir / image for image in images]
    probabilities = np.zeros((len(paths), len(run_model.labels)), dtype=np.float32)
    cached_rows = _training_cache_rows(dataset, images, run_model.image_size)
    for start in range(0, len(paths), batch_size):
        if cached_rows is not None:
            array, rows = cached_rows
            batch = np.asarray(array[rows[start : start + batch_size]], dtype=np.float32)
        else:
            batch = load_batch(paths[start : start + batch_size], run_model.image_size)
        probabilities[start : start + len(batch)] = run_model.predict(batch, batch_size=batch_size)
        if progress:
            done = min(start + batch_size, len(paths))
            progress(done, len(paths), f"Evaluated {done}/{len(paths)} images")

    result = _result(
        run_dir.name,
        split,
        str(dataset_id),
        dataset.dir,
        images,
        truths,
        probabilities,
        list(run_model.labels),
    )
    atomic_write_json(cached, {"key": key, "result": result.to_dict()})
    return result


def _result(
    run_id: str,
    split: str,
    dataset_id: str,
    dataset_dir: Path,
    images: Sequence[str],
    truths: Sequence[str],
    probabilities: np.ndarray,
    model_labels: list[str],
) -> EvaluationResult:
    """The evaluation of one split from the model's probabilities for its images."""
    paths = [Path(dataset_dir) / image for image in images]
    index_of = {label: i for i, label in enumerate(model_labels)}
    predicted = [model_labels[i] for i in probabilities.argmax(axis=1)]
    labels = model_labels + sorted(set(truths) - set(model_labels))
    metrics = compute_metrics(truths, predicted, labels)
    records = []
    for i, (image, path, truth, guess) in enumerate(
        zip(images, paths, truths, predicted, strict=True)
    ):
        true_p = float(probabilities[i, index_of[truth]]) if truth in index_of else 0.0
        records.append(
            {
                "image": str(image),
                "path": str(path),
                "true": truth,
                "predicted": guess,
                "confidence": float(probabilities[i].max()),
                "true_probability": true_p,
                "loss": safe_log_loss(true_p),
                "correct": truth == guess,
            }
        )
    result = EvaluationResult(
        run_id=run_id,
        split=split,
        dataset=dataset_id,
        n=len(records),
        labels=labels,
        predictions=records,
        **metrics,
    )
    return result


def record_evaluation(
    run: str | os.PathLike[str],
    split: str,
    *,
    dataset_dir: str | os.PathLike[str],
    images: Sequence[str],
    truths: Sequence[str],
    probabilities: np.ndarray,
) -> EvaluationResult:
    """Stores the evaluation of ``split`` from probabilities computed elsewhere.

    The training worker scores the saved model on the validation and test images when a run
    ends; recording those scores here means the Evaluate page opens without loading the model.
    The cache is keyed like :func:`evaluate`'s by the model file as it is now and by these
    (image, label) rows, so a model saved later or a dataset changed since is evaluated anew.

    Args:
        run: The run folder or run id (its ``model.keras`` must be the scored model).
        split: ``"val"`` or ``"test"``.
        dataset_dir: The dataset's folder (the images' paths are relative to it).
        images: The split's image names, in the order of ``probabilities``.
        truths: Their labels.
        probabilities: ``(len(images), classes)`` probabilities, columns in the order of the
            run's ``labels.txt`` (the model's classes).

    Returns:
        The stored :class:`EvaluationResult`.

    Raises:
        ValueError: If the split is not allowed, is empty, or the shapes do not agree.
        FileNotFoundError: If the run has no model or no labels file.
    """
    _check_split(split)
    run_dir = resolve_run_dir(run)
    model_path = run_dir / MODEL_FILE
    labels_path = run_dir / LABELS_FILE
    if not model_path.is_file() or not labels_path.is_file():
        raise FileNotFoundError(
            f"Run {run_dir.name!r} has no {MODEL_FILE} and {LABELS_FILE} to record an "
            "evaluation of."
        )
    model_labels = [line for line in labels_path.read_text(encoding="utf-8").splitlines() if line]
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if (
        not images
        or len(images) != len(truths)
        or probabilities.shape
        != (
            len(images),
            len(model_labels),
        )
    ):
        raise ValueError(
            f"record_evaluation needs one label and one row of {len(model_labels)} "
            f"probabilities per image. Received: {len(images)} images, {len(truths)} labels, "
            f"probabilities of shape {probabilities.shape}"
        )
    dataset_id = str(read_config_dict(run_dir).get("dataset") or "")
    truths = [str(label) for label in truths]
    result = _result(
        run_dir.name,
        split,
        dataset_id,
        Path(dataset_dir),
        list(images),
        truths,
        probabilities,
        model_labels,
    )
    key = _split_key(model_path, list(images), truths)
    atomic_write_json(cache_path(run_dir, split), {"key": key, "result": result.to_dict()})
    return result
