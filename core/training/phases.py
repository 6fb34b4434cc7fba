"""The phases of a run and how each one is compiled.

A run follows fastai's ``fine_tune``: a first phase with ``config.model.trainable`` (the head
by default, then the **fast path** trains it on cached embeddings), and, with
``fine_tune_epochs``, a second phase that fine-tunes ``config.fine_tune_trainable`` at the
learning rate times ``fine_tune_lr_mult``. :func:`plan_phases` turns a config into that plan;
:func:`make_optimizer` and :func:`compile_model` prepare a model for one phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import TrainConfig

if TYPE_CHECKING:
    import keras


@dataclass
class Phase:
    """One ``fit`` of the plan.

    Attributes:
        index: 1 or 2.
        name: Phase name shown in status and epoch events (``head``, ``train``, ``fine-tune``).
        trainable: What trains (``head``, ``top:N``, ``all``).
        epochs: Epochs in this phase.
        learning_rate: Base learning rate of this phase.
        patience: Early-stopping patience on val_loss (0 = off).
    """

    index: int
    name: str
    trainable: str
    epochs: int
    learning_rate: float
    patience: int = 0


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases a config asks for (one, or two with ``fine_tune_epochs``)."""
    trainable = config.model.trainable
    phases = [
        Phase(
            1,
            "head" if trainable == "head" else "train",
            trainable,
            config.effective_epochs,
            config.effective_learning_rate,
            config.effective_patience,
        )
    ]
    if config.fine_tune_epochs:
        phases.append(
            Phase(
                2,
                "fine-tune",
                config.fine_tune_trainable,
                config.fine_tune_epochs,
                config.effective_learning_rate * config.fine_tune_lr_mult,
                # Auto patience is for the head phase; an explicit one applies to both.
                config.early_stopping_patience or 0,
            )
        )
    return phases


def uses_fast_path(config: TrainConfig, phase: Phase) -> bool:
    """Whether ``phase`` can train the head on cached embeddings (or cached augmented views)."""
    return phase.trainable == "head"


def uses_augmented_views(config: TrainConfig, phase: Phase) -> bool:
    """Whether the fast path of ``phase`` trains on cached augmented views of the images."""
    return uses_fast_path(config, phase) and config.model.augment.enabled


def make_optimizer(config: TrainConfig, learning_rate: float, decay_steps: int):
    """Builds the configured optimizer, with a cosine schedule when asked.

    ``weight_decay`` is Keras' decoupled weight decay, available on every optimizer.
    """
    import keras

    rate: Any = learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, decay_steps))
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=config.momentum, weight_decay=decay)
    raise ValueError(
        f"optimizer must be one of adam, adamw, sgd, rmsprop. Received: {config.optimizer!r}"
    )


def compile_model(model: keras.Model, config: TrainConfig, optimizer, jit_compile) -> None:
    """Compiles ``model`` with the run's loss (label smoothing), accuracy and ``optimizer``."""
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Weight per class, inversely proportional to its size (mean weight 1 per image)."""
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype("float32")
