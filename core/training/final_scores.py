"""The saved model's scores at the end of a run, and where the app finds them.

:func:`evaluate_saved_model` scores the validation and test splits with the model as it is
saved (the restored best epoch), by the cheapest route that gives the full model's numbers:
the head on cached embeddings, the top on cached activations (:func:`scores_through_cut`),
or the whole model over the image cache. :func:`record_evaluations` keeps the scores where
the Evaluate page finds them (:func:`core.runs.evaluate.record_evaluation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import TrainConfig
from core.training.cached_top import CachedTop
from core.training.context import RunContext
from core.training.distribute import Distribution
from core.training.embeddings import compute_embeddings
from core.training.fast_path import embed_dataset
from core.training.phases import plan_phases, uses_fast_path
from core.training.prepare import TrainingData

if TYPE_CHECKING:
    import keras


def record_evaluations(ctx: RunContext, data: TrainingData, probabilities: np.ndarray) -> None:
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


def scores_through_cut(cached: CachedTop, ctx: RunContext, data: TrainingData) -> np.ndarray:
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


def split_scores(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float | None]:
    """Accuracy and cross-entropy of predicted ``probabilities`` against one-hot ``targets``.

    Returns:
        ``{"accuracy", "loss"}``; both None for an empty split.
    """
    if len(targets) == 0:
        return {"accuracy": None, "loss": None}
    truth = targets.argmax(axis=1)
    picked = probabilities[np.arange(len(truth)), truth]
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == truth)),
        "loss": float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))),
    }


def evaluate_saved_model(
    config: TrainConfig,
    ctx: RunContext,
    model: keras.Model,
    data: TrainingData,
    dist: Distribution | None = None,
    cached_top: CachedTop | None = None,
) -> dict[str, Any]:
    """Validation and test scores of ``model`` as it is saved (the restored best epoch).

    When only the head ever trained, the frozen backbone's cached embeddings go through the
    head (the same numbers the full model gives, in a fraction of the time). When the last
    phase fine-tuned on cached activations (``cached_top``), the validation images' cached
    activations and the test images through the frozen bottom go through the top: the same
    layers as the full model, without compiling the whole network once more. Otherwise the
    full model runs over the image cache.

    Returns:
        ``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss`` (None for an empty
        test split).
    """
    from core.models.transfer import head_of

    ctx.set(phase="evaluating", message="Scoring the saved model on the val and test splits.")
    rows = np.concatenate([data.val_rows, data.test_rows])
    if all(uses_fast_path(config, p) for p in plan_phases(config)):
        embeddings = embed_dataset(config, ctx, data, model, dist or Distribution())
        features = np.asarray(embeddings[rows], dtype="float32")
        probabilities = np.asarray(head_of(model).predict(features, verbose=0, batch_size=256))
    elif cached_top is not None:
        probabilities = scores_through_cut(cached_top, ctx, data)
    else:
        order = np.argsort(rows)
        outputs = np.empty((len(rows), len(data.classes)), dtype="float32")
        for start in range(0, len(rows), 256):
            chunk = order[start : start + 256]
            images = np.asarray(data.cache.array[rows[chunk]], dtype="float32")
            outputs[chunk] = compute_embeddings(model, images, batch_size=config.batch_size)
            ctx.token.raise_if_set()
        probabilities = outputs
    val = split_scores(probabilities[: len(data.val_rows)], data.val_targets)
    test = split_scores(probabilities[len(data.val_rows) :], data.test_targets)
    record_evaluations(ctx, data, probabilities)
    return {
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
    }
