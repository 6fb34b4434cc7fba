"""Rough training-time estimates for the Model page's backbone table.

The estimate is deliberately simple and labelled as such in the UI: the cost of one image is
proportional to the network's multiply-adds (raised to 0.75, because small depthwise
networks use a CPU less efficiently than big dense ones), scaled by the image area,
calibrated on one measurement (frozen MobileNetV2 at 224 px: ~114 images/s on 2 CPU cores,
see ARCHITECTURE.md), times a factor for the backward pass when blocks train
(all trainable: ~20 images/s, i.e. 5.7x).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from core.config import parse_trainable
from core.models.registry import get_backbone

# Multiply-adds (G) of the networks without classifier at their default input size
# (published figures: Keras applications docs, papers). Approximate on purpose.
GMACS_AT_DEFAULT: dict[str, float] = {
    "efficientnet_lite0": 0.41,
    "mobilenet_v2": 0.30,
    "mobilenet_v3_small": 0.06,
    "mobilenet_v3_large": 0.22,
    "efficientnet_b0": 0.39,
    "efficientnet_v2_b0": 0.72,
    "resnet50": 4.1,
    "resnet50_v2": 4.1,
    "vgg16": 15.5,
    "densenet121": 2.9,
    "inception_v3": 5.7,
    "xception": 8.4,
    "convnext_tiny": 4.5,
}
_CALIBRATION_GMACS = 0.30  # frozen MobileNetV2 at 224 px ...
_CALIBRATION_SECONDS = 1 / 114  # ... took this long per image on 2 cores
_CALIBRATION_CORES = 2
_EXPONENT = 0.75
_BACKWARD_FACTOR_ALL = 114 / 20  # all trainable vs frozen, same measurement
_GPU_SPEEDUP = 30.0
_HEAD_EPOCH_SECONDS = 1.0  # a head on cached feature vectors


@dataclass(frozen=True)
class EpochEstimate:
    """Seconds for the first and for each later epoch, and the reasoning in one sentence."""

    first_epoch: float
    later_epochs: float
    note: str


def seconds_per_image(
    backbone: str, image_size: int, *, cpu_cores: int | None = None, gpu: bool = False
) -> float:
    """Estimated seconds for one forward pass of one image.

    Args:
        backbone: Registry name.
        image_size: Input side in pixels.
        cpu_cores: CPU cores available; defaults to ``os.cpu_count()``.
        gpu: Whether a GPU does the work.

    Returns:
        Seconds per image (forward only).
    """
    spec = get_backbone(backbone)
    gmacs = GMACS_AT_DEFAULT.get(backbone)
    if gmacs is None:
        # Unknown network: about 0.15 G multiply-adds per million parameters.
        gmacs = 0.15 * spec.params / 1e6
    gmacs *= (image_size / spec.default_size) ** 2
    seconds = _CALIBRATION_SECONDS * (gmacs / _CALIBRATION_GMACS) ** _EXPONENT
    cores = max(1, min(cpu_cores or os.cpu_count() or 1, 32))
    seconds *= _CALIBRATION_CORES / cores
    if gpu:
        seconds /= _GPU_SPEEDUP
    return seconds


def estimate_epoch(
    backbone: str,
    image_size: int,
    trainable: str,
    *,
    train_images: int,
    val_images: int,
    augment: bool = False,
    augment_views: int = 4,
    cpu_cores: int | None = None,
    gpu: bool = False,
) -> EpochEstimate:
    """Estimates how long one epoch takes for a dataset on this machine.

    Args:
        backbone: Registry name.
        image_size: Input side in pixels.
        trainable: ``head``, ``top:N`` or ``all``.
        train_images: Images in the training split.
        val_images: Images in the validation split.
        augment: Whether augmentation is on (head only: ``augment_views`` augmented copies
            of each training image are embedded once as well).
        augment_views: Augmented copies per training image (head only, augmentation on).
        cpu_cores: CPU cores available; defaults to ``os.cpu_count()``.
        gpu: Whether a GPU does the work.

    Returns:
        An :class:`EpochEstimate`.
    """
    forward = seconds_per_image(backbone, image_size, cpu_cores=cpu_cores, gpu=gpu)
    policy, blocks = parse_trainable(trainable)
    if policy == "head":
        views = augment_views if augment else 0
        once = forward * (train_images * (1 + views) + val_images)
        note = "Features are computed once; later epochs only train the head."
        if views:
            note = (
                f"Features of {views} augmented copies of each training image are computed "
                "once; later epochs only train the head."
            )
        return EpochEstimate(
            first_epoch=once + _HEAD_EPOCH_SECONDS, later_epochs=_HEAD_EPOCH_SECONDS, note=note
        )
    if policy == "all":
        share = 1.0
    elif policy == "top":
        share = min(1.0, blocks / max(get_backbone(backbone).num_blocks, 1))
    else:
        share = 0.0
    factor = 1.0 + (_BACKWARD_FACTOR_ALL - 1.0) * math.sqrt(share)
    epoch = forward * (train_images * factor + val_images)
    return EpochEstimate(
        first_epoch=epoch, later_epochs=epoch, note="Every epoch runs the whole network."
    )


@dataclass(frozen=True)
class MeasuredEpochs:
    """Epoch times measured in one phase of a finished run on this machine.

    Attributes:
        backbone: Registry name.
        image_size: Input side in pixels.
        trainable: What trained in that phase (``head``, ``top:N``, ``all``).
        augment: Whether augmentation was on.
        train_images: Images in the training split.
        val_images: Images in the validation split.
        epoch_seconds: Seconds of each epoch of the phase, in order.
        gpu: Whether a GPU did the work.
        cpu_cores: CPU cores of the machine.
        embedding_seconds: Head only: seconds of the one feature pass before the first epoch
            (None when the features were reused from an earlier run).
    """

    backbone: str
    image_size: int
    trainable: str
    augment: bool
    train_images: int
    val_images: int
    epoch_seconds: tuple[float, ...]
    gpu: bool = False
    cpu_cores: int = 0
    embedding_seconds: float | None = None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def calibrated_estimate(
    backbone: str,
    image_size: int,
    trainable: str,
    *,
    train_images: int,
    val_images: int,
    measured: list[MeasuredEpochs] | tuple[MeasuredEpochs, ...] = (),
    augment: bool = False,
    augment_views: int = 4,
    cpu_cores: int | None = None,
    gpu: bool = False,
) -> EpochEstimate:
    """:func:`estimate_epoch`, corrected by epochs measured earlier on this machine.

    Runs with the same backbone, image size, trainable part, augmentation and device kind
    are the evidence: for each, the measured epoch time divided by what the formula predicts
    for *that* run's dataset gives a correction factor (the median over runs is used), which
    then scales the formula's estimate for this dataset. So a run on 500 images calibrates
    an estimate for 2,000. The first epoch (compiling; the feature pass on the head-only
    path) and the later epochs are corrected separately.

    Args:
        backbone, image_size, trainable, train_images, val_images, augment, augment_views,
            cpu_cores, gpu: As for :func:`estimate_epoch`.
        measured: Epoch times of finished runs (any; those that do not match are ignored).

    Returns:
        The estimate; its note says how many earlier runs calibrated it.
    """
    base = estimate_epoch(
        backbone,
        image_size,
        trainable,
        train_images=train_images,
        val_images=val_images,
        augment=augment,
        augment_views=augment_views,
        cpu_cores=cpu_cores,
        gpu=gpu,
    )
    head = parse_trainable(trainable)[0] == "head"
    firsts: list[float] = []
    laters: list[float] = []
    for run in measured:
        same = (run.backbone, run.image_size, run.trainable, bool(run.augment), bool(run.gpu))
        if same != (backbone, image_size, trainable, bool(augment), bool(gpu)):
            continue
        if not run.epoch_seconds or run.train_images <= 0:
            continue
        predicted = estimate_epoch(
            run.backbone,
            run.image_size,
            run.trainable,
            train_images=run.train_images,
            val_images=run.val_images,
            augment=run.augment,
            augment_views=augment_views,
            cpu_cores=run.cpu_cores or cpu_cores,
            gpu=run.gpu,
        )
        seconds = list(run.epoch_seconds)
        later = seconds[1:] or seconds
        if head:
            # The head trains on cached features: its epochs scale with the image count.
            scale = (train_images + val_images) / max(run.train_images + run.val_images, 1)
            laters.append(_median(later) * scale / predicted.later_epochs)
            if run.embedding_seconds:
                firsts.append((run.embedding_seconds + seconds[0]) / predicted.first_epoch)
        else:
            laters.append(_median(later) / predicted.later_epochs)
            firsts.append(seconds[0] / predicted.first_epoch)
    if not laters:
        return base
    runs = len(laters)
    later_seconds = base.later_epochs * _median(laters)
    if firsts:
        first_seconds = base.first_epoch * _median(firsts)
    elif head:
        # No measured feature pass (reused features): keep the formula's share of it.
        first_seconds = base.first_epoch - base.later_epochs + later_seconds
    else:
        first_seconds = base.first_epoch * _median(laters)
    return EpochEstimate(
        first_epoch=first_seconds,
        later_epochs=later_seconds,
        note=f"{base.note} Calibrated on {runs} earlier run{'s' if runs != 1 else ''} "
        "with these settings on this machine.",
    )
