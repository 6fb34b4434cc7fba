"""Starting a run from an earlier run's trained model ("keep learning as new data arrives").

A new run may name a finished parent run (``TrainConfig.init_from``). Its model then starts
from the parent's weights instead of the pretrained backbone: the backbone and the head's
hidden layers are copied; the head's output layer keeps the trained row of every class the
parent knew, starts fresh rows for new classes and drops classes that are gone. Same backbone,
image size, pooling and head layout are required; anything else is refused before the run
starts, with the reason.

:func:`plan_start` checks a parent without touching Keras (for the Train page and the CLI);
:func:`start_from_parent` copies the weights into a freshly built model (in the worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.runs.store import (
    MODEL_FILE,
    find_run,
    read_config,
    read_labels,
    read_status,
)


class IncompatibleParentError(ValueError):
    """The parent run cannot be the starting point of this run (the message says why)."""


@dataclass(frozen=True)
class StartPlan:
    """What starting from a parent run will do.

    Attributes:
        parent_id: The parent run's id.
        parent_dir: Its folder.
        kept: Classes the parent knew that the new dataset still has (their head rows are kept).
        added: New classes (their rows start fresh).
        dropped: Classes the parent knew that the dataset no longer has.
        backbone_frozen: True when the parent never changed its backbone's weights (then the
            backbone's cached embeddings of the same images can be reused).
    """

    parent_id: str
    parent_dir: Path
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    backbone_frozen: bool = True

    def sentence(self) -> str:
        """One line for a person: what is kept, added and dropped."""
        parts = [f"Starts from run {self.parent_id}: keeps {len(self.kept)} class(es)"]
        if self.added:
            parts.append(f"adds {', '.join(map(repr, self.added))}")
        if self.dropped:
            parts.append(f"drops {', '.join(map(repr, self.dropped))}")
        return ", ".join(parts) + "."

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (recorded in the child run's summary)."""
        return {
            "parent_run": self.parent_id,
            "kept": list(self.kept),
            "added": list(self.added),
            "dropped": list(self.dropped),
        }


def _model_layout(config: TrainConfig) -> dict[str, Any]:
    model = config.model
    return {
        "backbone": model.backbone,
        "image size": model.image_size,
        "pooling": model.pooling,
        "head layers": list(model.dense_units),
    }


def _backbone_frozen(config: TrainConfig, parent_dir: Path) -> bool:
    """Whether the parent's backbone still holds the weights it was built with."""
    if config.model.weights == "none":
        return False  # random init: BatchNorm statistics train along
    if config.model.trainable != "head" or config.fine_tune_epochs > 0:
        return False
    if config.init_from:
        try:
            grandparent = find_run(config.init_from, parent_dir.parent)
        except FileNotFoundError:
            return False
        return _backbone_frozen(read_config(grandparent), grandparent)
    return True


def plan_start(
    config: TrainConfig,
    classes: list[str],
    *,
    root: str | os.PathLike[str] | None = None,
) -> StartPlan:
    """Checks that ``config.init_from`` can start a run on ``classes`` and says what it keeps.

    Args:
        config: The new run's config (``init_from`` names the parent run, by id or folder).
        classes: The new run's class names (its dataset's classes).
        root: Folder holding runs (default ``workspace/runs``).

    Returns:
        The :class:`StartPlan`.

    Raises:
        IncompatibleParentError: If the parent does not exist, has no finished model, or was
            built differently (backbone, image size, pooling or head layers).
    """
    try:
        parent_dir = find_run(config.init_from, root)
    except FileNotFoundError as error:
        raise IncompatibleParentError(
            f"Cannot start from run {config.init_from!r}: {error}"
        ) from error
    status = read_status(parent_dir)
    if not (parent_dir / MODEL_FILE).is_file():
        raise IncompatibleParentError(
            f"Run {parent_dir.name!r} has no trained model yet (it is {status.state}); pick a "
            "run that finished at least one epoch."
        )
    parent = read_config(parent_dir)
    ours, theirs = _model_layout(config), _model_layout(parent)
    different = [key for key in ours if ours[key] != theirs[key]]
    if different:
        details = "; ".join(
            f"{key}: run has {theirs[key]}, this run {ours[key]}" for key in different
        )
        raise IncompatibleParentError(
            f"Run {parent_dir.name!r} was built differently, so its model cannot be the "
            f"starting point ({details}). Use the same model settings, or start from the "
            "pretrained backbone."
        )
    parent_classes = read_labels(parent_dir)
    if not parent_classes:
        raise IncompatibleParentError(f"Run {parent_dir.name!r} has no labels.txt.")
    kept = [name for name in classes if name in parent_classes]
    if not kept:
        raise IncompatibleParentError(
            f"Run {parent_dir.name!r} knows none of these classes ({', '.join(parent_classes)}"
            f" vs {', '.join(classes)}); starting from it would keep nothing."
        )
    return StartPlan(
        parent_id=parent_dir.name,
        parent_dir=parent_dir,
        kept=kept,
        added=[name for name in classes if name not in parent_classes],
        dropped=[name for name in parent_classes if name not in classes],
        backbone_frozen=_backbone_frozen(parent, parent_dir),
    )


def start_from_parent(model: Any, plan: StartPlan, classes: list[str]) -> None:
    """Copies the parent's trained weights into ``model`` (built for ``classes``).

    The backbone and the head's hidden layers are copied as they are; the output layer's
    column of each kept class comes from the parent's column of that class; added classes keep
    the fresh initialisation of ``model``.

    Raises:
        IncompatibleParentError: If the parent's saved model does not fit (a changed file).
    """
    from core.models.model_io import load_model

    parent, parent_classes = load_model(plan.parent_dir / MODEL_FILE)
    try:
        ours, theirs = model.get_layer("backbone"), parent.get_layer("backbone")
        ours.set_weights(theirs.get_weights())
        head, parent_head = model.get_layer("head"), parent.get_layer("head")
        for layer in head.layers:
            source = parent_head.get_layer(layer.name)
            if layer.name == "predictions":
                kernel, bias = layer.get_weights()
                parent_kernel, parent_bias = source.get_weights()
                for column, name in enumerate(classes):
                    if name in parent_classes:
                        row = parent_classes.index(name)
                        kernel[:, column] = parent_kernel[:, row]
                        bias[column] = parent_bias[row]
                layer.set_weights([kernel, bias])
            elif layer.weights:
                layer.set_weights(source.get_weights())
    except (ValueError, KeyError) as error:
        raise IncompatibleParentError(
            f"The model of run {plan.parent_id!r} does not fit this run's model: {error}"
        ) from error


__all__ = ["IncompatibleParentError", "StartPlan", "plan_start", "start_from_parent"]
