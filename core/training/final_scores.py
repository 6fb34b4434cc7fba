"""The saved model's scores at the end of a run: through the cut, and kept for the app.

:func:`scores_through_cut` scores the validation and test images with the frozen bottom and
the trained top of a fast fine-tuning phase (the same layers as the whole model, without
compiling it once more); :func:`record_evaluations` keeps the scores where the Evaluate page
finds them (:func:`core.runs.evaluate.record_evaluation`). ``data`` is the run's
``core.training.trainer.TrainingData`` (not imported here: the trainer imports this module).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.training.cached_top import CachedTop
from core.training.context import RunContext
from core.training.embeddings import compute_embeddings


def record_evaluations(ctx: RunContext, data: Any, probabilities: np.ndarray) -> None:
    """Keeps the saved model's val and test scores for the Evaluate page (no model load there).

    A failure to write costs only speed (the page then evaluates the model itself), so it
    becomes a note of the run, not a failed run.
    """
    from core.runs.evaluate import record_evaluation

    if data.dataset_dir is None:
        return
    count = len(data.val_rows)
    splits = {
        "val": (data.val_images, data.val_targets, probabilities[:count]),
        "test": (data.test_images, data.test_targets, probabilities[count:]),
    }
    for split, (images, targets, scores) in splits.items():
        if not images or len(images) != len(scores):
            continue
        truths = [data.classes[i] for i in np.argmax(targets, axis=1)]
        try:
            record_evaluation(
                ctx.folder,
                split,
                dataset_dir=data.dataset_dir,
                images=images,
                truths=truths,
                probabilities=scores,
            )
        except OSError as error:
            ctx.note(
                f"The {split} scores of the saved model could not be kept for the Evaluate "
                f"page ({error}); it will score the model itself when opened."
            )


def scores_through_cut(cached: CachedTop, ctx: RunContext, data: Any) -> np.ndarray:
    """Probabilities of the validation then test rows, through ``cached``'s bottom and top."""
    outputs = []
    batch_size = cached.batch_size
    for start in range(0, len(data.val_rows), 256):
        activations = np.asarray(cached.cache.val[start : start + 256], dtype="float32")
        outputs.append(compute_embeddings(cached.top, activations, batch_size=batch_size))
        ctx.token.raise_if_set()
    test_rows = np.asarray(data.test_rows, dtype=np.int64)
    for start in range(0, len(test_rows), 256):
        images = np.asarray(data.cache.array[test_rows[start : start + 256]])
        activations = compute_embeddings(cached.bottom, images, batch_size=batch_size)
        outputs.append(compute_embeddings(cached.top, activations, batch_size=batch_size))
        ctx.token.raise_if_set()
    classes = len(data.classes)
    return np.concatenate(outputs) if outputs else np.empty((0, classes), dtype="float32")
