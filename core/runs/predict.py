"""Predictions of a trained run on new images, with the same normalisation as ingest.

A run folder holds ``model.keras`` (labels embedded), ``labels.txt`` and ``config.json``.
:func:`load_run_model` opens it once; :func:`predict_sources` classifies files or uploaded
bytes. Every image goes through :func:`core.data.imageio.load_image` (EXIF rotation, first frame,
transparency composited, RGB), exactly like ingest, then is resized to the model's input with
:func:`image_to_array`, which evaluation and the export parity check use as well.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.data.image_cache import load_resized, resize_for_model
from core.data.imageio import ImageRejected, load_image
from core.models.model_io import load_model
from core.runs.store import LABELS_FILE, MODEL_FILE, read_config_dict, read_labels, resolve_run_dir

DEFAULT_BATCH = 32

Source = str | os.PathLike[str] | bytes | tuple[str, bytes]


@dataclass
class RunModel:
    """A trained run opened for inference.

    Attributes:
        run_dir: The run folder.
        model: The Keras model (raw RGB 0..255 in, class probabilities out).
        labels: Class names in the model's output order.
        image_size: Side of the square input in pixels.
        config: The run's ``config.json`` as a dictionary (empty if missing).
    """

    run_dir: Path
    model: Any
    labels: list[str]
    image_size: int
    config: dict[str, Any] = field(default_factory=dict)

    def predict(self, batch: np.ndarray, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Class probabilities for a float32 batch (N, size, size, 3) of raw RGB 0..255."""
        return predict_arrays(self.model, batch, batch_size=batch_size)


def load_run_model(run: str | os.PathLike[str]) -> RunModel:
    """Opens a finished run's model for inference.

    Args:
        run: A run folder or a run id.

    Returns:
        The :class:`RunModel`.

    Raises:
        FileNotFoundError: If the run or its ``model.keras`` does not exist (training not
            finished yet).
    """
    run_dir = resolve_run_dir(run)
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise FileNotFoundError(
            f"Run {run_dir.name!r} has no {MODEL_FILE} yet. Finish (or resume) its training first."
        )

    model, labels = load_model(model_path)
    if not labels and (run_dir / LABELS_FILE).exists():
        labels = read_labels(run_dir)
    labels = list(labels)
    outputs = int(model.outputs[0].shape[-1])
    if len(labels) != outputs:
        raise ValueError(
            f"Run {run_dir.name!r}: the model has {outputs} outputs but {len(labels)} labels "
            f"({labels}). The run folder is inconsistent; retrain it."
        )
    return RunModel(
        run_dir=run_dir,
        model=model,
        labels=labels,
        image_size=model_input_size(model),
        config=read_config_dict(run_dir),
    )


def model_input_size(model: Any) -> int:
    """Side of the model's square input in pixels.

    Raises:
        ValueError: If the model's input is not a fixed square RGB image.
    """
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"Expected a model input of shape (None, S, S, 3). Received: {shape}")
    return int(shape[1])


def image_to_array(image: Image.Image, size: int) -> np.ndarray:
    """Resizes an RGB image to the model's input: float32 (size, size, 3), values 0..255.

    Uses the training engine's :func:`core.data.image_cache.resize_for_model` (squash to a square,
    bilinear), so prediction, evaluation, export parity and training see identical pixels.
    """
    return resize_for_model(image, size).astype(np.float32)


def load_batch(paths: Sequence[str | os.PathLike[str]], size: int) -> np.ndarray:
    """Loads stored dataset images into one float32 batch (N, size, size, 3), RGB 0..255.

    Dataset images are already normalised at ingest, so they are decoded exactly as the
    training cache decodes them (:func:`core.data.image_cache.load_resized`).
    """
    batch = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    for index, path in enumerate(paths):
        batch[index] = load_resized(path, size)
    return batch


def predict_arrays(model: Any, batch: np.ndarray, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Runs the model batch by batch (inference mode) and returns float32 probabilities."""
    import keras

    outputs = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        outputs.append(keras.ops.convert_to_numpy(model(chunk, training=False)))
    if not outputs:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The k most probable classes: list of ``{"label", "probability"}``, best first."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, k)]
    return [{"label": labels[i], "probability": float(probabilities[i])} for i in order]


def _source_name(source: Source, index: int) -> str:
    if isinstance(source, tuple):
        return str(source[0])
    if isinstance(source, bytes | bytearray):
        return f"upload-{index + 1}"
    return str(source)


def _source_payload(source: Source) -> bytes | Path:
    if isinstance(source, tuple):
        return bytes(source[1])
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    return Path(source)


def predict_sources(
    run_model: RunModel,
    sources: Iterable[Source],
    *,
    k: int = 5,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Classifies files or uploaded bytes; a bad file gets an error entry, the rest still run.

    Args:
        run_model: The opened run (see :func:`load_run_model`).
        sources: Paths, raw bytes, or ``(name, bytes)`` pairs (what an upload widget gives).
        k: How many classes ``top_k`` lists.
        batch_size: Images per forward pass.
        progress: Optional ``progress(done, total, message)`` callback.

    Returns:
        One dictionary per source, in order: ``{"file", "label", "confidence",
        "probabilities" (label -> p), "top_k"}``, or ``{"file", "error"}`` when the source is
        not a readable image.
    """
    sources = list(sources)
    results: list[dict[str, Any]] = [{} for _ in sources]
    pending: list[tuple[int, np.ndarray]] = []
    size = run_model.image_size

    def flush() -> None:
        if not pending:
            return
        probabilities = run_model.predict(np.stack([array for _, array in pending]))
        for (index, _), row in zip(pending, probabilities, strict=True):
            results[index].update(describe_prediction(row, run_model.labels, k=k))
        pending.clear()

    for index, source in enumerate(sources):
        name = _source_name(source, index)
        results[index]["file"] = name
        try:
            image = load_image(_source_payload(source))
        except ImageRejected as error:
            results[index]["error"] = error.reason
        except OSError as error:  # missing or unreadable file on disk
            results[index]["error"] = f"Cannot read {name!r}: {error.strerror or error}"
        else:
            pending.append((index, image_to_array(image, size)))
            if len(pending) >= batch_size:
                flush()
        if progress:
            progress(index + 1, len(sources), name)
    flush()
    return results


def describe_prediction(
    probabilities: np.ndarray, labels: Sequence[str], *, k: int = 5
) -> dict[str, Any]:
    """Turns one probability vector into ``label``, ``confidence``, ``probabilities``, ``top_k``."""
    best = int(np.argmax(probabilities))
    return {
        "label": labels[best],
        "confidence": float(probabilities[best]),
        "probabilities": {label: float(p) for label, p in zip(labels, probabilities, strict=True)},
        "top_k": top_k(probabilities, labels, k),
    }


def safe_log_loss(probability: float) -> float:
    """Cross-entropy of one image given the probability of its true class (clipped, finite)."""
    return float(-math.log(min(1.0, max(float(probability), 1e-7))))
