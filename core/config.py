"""The validated settings of a model and of a training run.

``ModelConfig`` says what network is built; ``TrainConfig`` says how it is trained. Both are
frozen dataclasses that validate on construction, round-trip through JSON, and are saved as
``config.json`` beside every run (the AutoTrain pattern: one parameters object per run).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.jsonfile import CorruptFileError, read_json

POOLINGS = ("avg", "max", "flatten")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "reduce_on_plateau")
CLASS_WEIGHTS = ("off", "balanced")
_TRAINABLE_RE = re.compile(r"^(head|all|top:(\d+))$")

# "Auto" settings (``None`` in a TrainConfig) resolve by what trains in the first phase.
# Head only (the fast path on cached embeddings, an epoch costs a fraction of a second):
# train until validation loss stops improving, at a rate suited to a fresh linear head.
# On sklearn's digits with EfficientNet-Lite0 features this converges in ~80 epochs and
# matches logistic regression on the same features.
AUTO_HEAD_EPOCHS = 200
AUTO_HEAD_LEARNING_RATE = 3e-3
AUTO_HEAD_PATIENCE = 10
# A validation loss that falls by less than this per epoch counts as not improving (a
# separable dataset's loss creeps down for hundreds of epochs after accuracy settled).
EARLY_STOPPING_MIN_DELTA = 1e-3
# Part of the backbone trains from the first epoch: a few epochs at a fine-tuning rate.
AUTO_EPOCHS = 10
AUTO_LEARNING_RATE = 1e-4
AUGMENT_VIEWS_MAX = 32


def _fail(field_name: str, allowed: str, received: Any) -> None:
    raise ValueError(f"{field_name} must be {allowed}. Received: {field_name}={received!r}")


def _check_range(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        noun = "an integer" if integer else "a number"
        _fail(name, f"{noun} between {low} and {high}", value)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, f"one of {set(allowed)}", value)


def parse_trainable(trainable: str) -> tuple[str, int]:
    """Splits a trainable setting into its policy and block count.

    Args:
        trainable: ``"head"``, ``"all"`` or ``"top:N"`` with N >= 1.

    Returns:
        ``("head", 0)``, ``("all", 0)`` or ``("top", N)``.

    Raises:
        ValueError: If the setting is not one of the allowed forms.
    """
    match = _TRAINABLE_RE.match(str(trainable))
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        _fail("trainable", "one of 'head', 'all' or 'top:N' with N >= 1", trainable)
    if match.group(2) is not None:
        return "top", int(match.group(2))
    return match.group(1), 0


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied to training images only.

    Attributes:
        flip: Random flips: ``none``, ``horizontal``, ``vertical`` or ``horizontal_and_vertical``.
        rotation: Largest rotation as a fraction of a full turn (0.1 = +-36 degrees).
        zoom: Largest zoom in or out as a fraction of the image size.
        translation: Largest shift as a fraction of the image size.
        contrast: Largest contrast change as a fraction.
        brightness: Largest brightness change as a fraction.
        shear: Largest shear as a fraction (the classic shear/zoom/flip recipe).
        views: Augmented views of each training image embedded once when only the head
            trains (the fast path draws one view per image per epoch).
    """

    flip: str = "none"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    shear: float = 0.0
    views: int = 4

    def __post_init__(self) -> None:
        _check_choice("augment.flip", self.flip, FLIPS)
        for name in ("rotation", "zoom", "translation", "contrast", "brightness", "shear"):
            _check_range(f"augment.{name}", getattr(self, name), 0.0, 1.0)
        _check_range("augment.views", self.views, 1, AUGMENT_VIEWS_MAX, integer=True)

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is switched on."""
        numeric = (self.rotation, self.zoom, self.translation, self.contrast, self.brightness)
        return self.flip != "none" or any(numeric) or bool(self.shear)

    @classmethod
    def standard(cls) -> AugmentConfig:
        """A sensible default recipe for photos: flips, small rotations, zoom and contrast."""
        return cls(flip="horizontal", rotation=0.05, zoom=0.1, translation=0.1, contrast=0.1)


@dataclass(frozen=True)
class ModelConfig:
    """What network is built.

    Attributes:
        backbone: Registry name of the pretrained network, e.g. ``"mobilenet_v2"``.
        weights: ``"imagenet"``, ``"none"`` (random init) or a path to a ``.weights.h5`` file.
        image_size: Side of the square input in pixels.
        trainable: ``"head"`` (backbone frozen), ``"top:N"`` (head plus top N blocks) or ``"all"``.
        pooling: How the backbone's feature map becomes a vector: ``avg``, ``max``, ``flatten``.
        dense_units: Sizes of hidden dense layers in the head; empty for a linear head.
        dropout: Dropout rate before the output layer.
        augment: Training-time augmentation.
    """

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    image_size: int = 224
    trainable: str = "head"
    pooling: str = "avg"
    dense_units: tuple[int, ...] = ()
    dropout: float = 0.2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            _fail("backbone", "a registered backbone name such as 'mobilenet_v2'", self.backbone)
        weights = self.weights
        if weights not in ("imagenet", "none") and not str(weights).endswith(".weights.h5"):
            _fail("weights", "'imagenet', 'none' or a path ending in '.weights.h5'", weights)
        _check_range("image_size", self.image_size, 32, 1024, integer=True)
        parse_trainable(self.trainable)
        _check_choice("pooling", self.pooling, POOLINGS)
        units = tuple(self.dense_units)
        for unit in units:
            _check_range("dense_units", unit, 1, 8192, integer=True)
        object.__setattr__(self, "dense_units", units)
        _check_range("dropout", self.dropout, 0.0, 0.95)
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))

    @property
    def frozen_backbone(self) -> bool:
        """True when no backbone weight trains (the embedding fast path may apply)."""
        return self.trainable == "head"


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; saved as ``config.json`` in the run folder.

    Attributes:
        dataset: Dataset id under ``workspace/datasets``.
        model: The network to build.
        optimizer: ``adam``, ``adamw``, ``sgd`` (with momentum) or ``rmsprop``.
        learning_rate: Base learning rate; ``None`` = auto (:attr:`effective_learning_rate`).
        momentum: Momentum for ``sgd`` and ``rmsprop``.
        weight_decay: Decoupled weight decay (``adamw``) or L2 factor for the others.
        schedule: ``constant``, ``cosine`` or ``reduce_on_plateau``.
        batch_size: Images per step.
        epochs: Epochs of the first phase (the only phase when ``fine_tune_epochs`` is 0);
            ``None`` = auto (:attr:`effective_epochs`), an upper bound when early stopping
            is on.
        early_stopping_patience: Epochs without val_loss improvement before stopping; 0 =
            off, ``None`` = auto (on for a head-only first phase).
        restore_best: Keep the weights of the best validation epoch at the end.
        label_smoothing: Label smoothing of the cross-entropy loss.
        class_weights: ``off`` or ``balanced`` (weights inversely proportional to class size).
        fine_tune_epochs: Epochs of the second phase (fastai's ``fine_tune``); 0 = one phase.
        fine_tune_trainable: What trains in the second phase (``top:N`` or ``all``).
        fine_tune_lr_mult: Learning-rate multiplier of the second phase.
        mixed_precision: Use float16 compute (GPU only; ignored on CPU with a warning).
        seed: Seed for weights init, shuffling and augmentation.
        name: Optional human label for the run.
        init_from: A finished run (id, or its folder) whose trained model is the starting
            point instead of the pretrained backbone; empty = start from the backbone.
    """

    dataset: str
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 32
    epochs: int | None = None
    early_stopping_patience: int | None = None
    restore_best: bool = True
    label_smoothing: float = 0.0
    class_weights: str = "off"
    fine_tune_epochs: int = 0
    fine_tune_trainable: str = "all"
    fine_tune_lr_mult: float = 0.1
    mixed_precision: bool = False
    seed: int = 42
    name: str = ""
    init_from: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            _fail("dataset", "a dataset id (a non-empty string)", self.dataset)
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig(**self.model))
        if not isinstance(self.model, ModelConfig):
            _fail("model", "a ModelConfig", self.model)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.learning_rate is not None:
            _check_range("learning_rate", self.learning_rate, 1e-8, 10.0)
        _check_range("momentum", self.momentum, 0.0, 0.999)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_range("batch_size", self.batch_size, 1, 4096, integer=True)
        if self.epochs is not None:
            _check_range("epochs", self.epochs, 1, 10000, integer=True)
        if self.early_stopping_patience is not None:
            _check_range(
                "early_stopping_patience", self.early_stopping_patience, 0, 1000, integer=True
            )
        _check_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _check_choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _check_range("fine_tune_epochs", self.fine_tune_epochs, 0, 10000, integer=True)
        if parse_trainable(self.fine_tune_trainable)[0] == "head":
            _fail("fine_tune_trainable", "'top:N' or 'all'", self.fine_tune_trainable)
        _check_range("fine_tune_lr_mult", self.fine_tune_lr_mult, 1e-4, 10.0)
        _check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        if not isinstance(self.init_from, str) or len(self.init_from) > 4096:
            _fail("init_from", "a run id or run folder (a string)", self.init_from)
        for flag in ("restore_best", "mixed_precision"):
            if not isinstance(getattr(self, flag), bool):
                _fail(flag, "True or False", getattr(self, flag))

    @property
    def head_first(self) -> bool:
        """Whether the first phase trains only the head (the auto settings follow it)."""
        return self.model.trainable == "head"

    @property
    def effective_epochs(self) -> int:
        """Epochs (an upper bound with early stopping) of the first phase, auto resolved."""
        if self.epochs is not None:
            return self.epochs
        return AUTO_HEAD_EPOCHS if self.head_first else AUTO_EPOCHS

    @property
    def effective_learning_rate(self) -> float:
        """Learning rate of the first phase, auto resolved (the fine-tune phase multiplies it)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return AUTO_HEAD_LEARNING_RATE if self.head_first else AUTO_LEARNING_RATE

    @property
    def effective_patience(self) -> int:
        """Early-stopping patience of the first phase, auto resolved (0 = off).

        A second (fine-tune) phase only stops early when the patience was set explicitly.
        """
        if self.early_stopping_patience is not None:
            return self.early_stopping_patience
        return AUTO_HEAD_PATIENCE if self.head_first else 0

    @property
    def auto_fields(self) -> tuple[str, ...]:
        """The settings left on auto (``None``)."""
        names = ("epochs", "learning_rate", "early_stopping_patience")
        return tuple(name for name in names if getattr(self, name) is None)

    def resolved(self) -> TrainConfig:
        """A copy with every auto setting replaced by the number it resolves to."""
        return self.replace(
            epochs=self.effective_epochs,
            learning_rate=self.effective_learning_rate,
            early_stopping_patience=self.effective_patience,
        )

    def defaults_sentence(self) -> str:
        """One sentence that says what the auto settings of this config do."""
        if not self.auto_fields:
            return "Every setting is yours: nothing is chosen automatically."
        kept = ", and the best epoch is kept" if self.restore_best else ""
        # Patience at or beyond the epoch cap never stops a run early: do not promise it.
        stops_early = 0 < self.effective_patience < self.effective_epochs
        if self.head_first and stops_early:
            return (
                f"By default the new last layer trains until the validation loss stops improving "
                f"({self.effective_patience} epochs without progress, at most "
                f"{self.effective_epochs} epochs) at learning rate "
                f"{self.effective_learning_rate:g}{kept}."
            )
        if self.head_first:
            return (
                f"By default the new last layer trains {self.effective_epochs} epochs at "
                f"learning rate {self.effective_learning_rate:g}{kept}."
            )
        return (
            f"By default the model trains {self.effective_epochs} epochs at learning rate "
            f"{self.effective_learning_rate:g}, a rate low enough for pretrained weights{kept}."
        )

    @property
    def total_epochs(self) -> int:
        """Epochs over both phases (the first phase's upper bound when it stops early)."""
        return self.effective_epochs + self.fine_tune_epochs

    def replace(self, **changes: Any) -> TrainConfig:
        """Returns a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        data = dataclasses.asdict(self)
        data["model"]["dense_units"] = list(self.model.dense_units)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a validated config from a dictionary (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown config keys {sorted(unknown)}. Allowed keys: {sorted(known)}"
            )
        data = dict(data)
        if isinstance(data.get("model"), dict):
            model = dict(data["model"])
            model_known = {f.name for f in dataclasses.fields(ModelConfig)}
            bad = set(model) - model_known
            if bad:
                raise ValueError(
                    f"Unknown model keys {sorted(bad)}. Allowed keys: {sorted(model_known)}"
                )
            if isinstance(model.get("augment"), dict):
                model["augment"] = AugmentConfig(**model["augment"])
            model["dense_units"] = tuple(model.get("dense_units", ()))
            data["model"] = ModelConfig(**model)
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the config as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Reads a config written by :meth:`save`.

        Raises:
            FileNotFoundError: If there is no such file.
            CorruptFileError: If the file is damaged or does not describe a valid config.
        """
        data = read_json(path)
        if data is None:
            where = Path(path)
            raise FileNotFoundError(f"No training config ({where.name}) in {where.parent.name!r}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, AttributeError) as error:
            raise CorruptFileError(
                path, f"does not describe a valid training config: {error}"
            ) from error
