"""Helpers of the Model page: the backbone table, cached block tables, weights, previews.

The block diagram needs a built network, but not its weights: each backbone's tables at its
default size and head ship with the code (:mod:`core.models.block_tables`); any other is built
once per (backbone, size, head) with ``weights="none"``, so moving the slider only reads a
cached table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.config import AugmentConfig
from core.models.estimate import MeasuredEpochs, calibrated_estimate
from core.models.registry import BACKBONES, get_backbone

WEIGHTS_WORDS = {
    "bundled": "bundled (offline)",
    "cached": "downloaded",
    "downloadable": "will download",
    "unavailable": "unavailable offline",
}
TRAINABLE_HELP = {
    "head": "Only the new last layer learns; the pretrained model stays as it is. "
    "Fastest, needs the least data, the best start for small datasets (tens to hundreds "
    "of images per class).",
    "top": "The new last layer and the last few blocks of the pretrained model learn. "
    "Helps when your pictures look unlike everyday photos; use a low learning rate.",
    "all": "Every weight learns. Slowest, needs the most data and a low learning rate; "
    "can fit unusual images best.",
}


@st.cache_data(show_spinner=False, ttl=120)
def weights_status(name: str, image_size: int) -> str:
    """:func:`core.models.weights.weights_status`, re-checked every two minutes."""
    from core.models.weights import weights_status as status

    return status(name, image_size)


def backbone_frame(
    train_images: int,
    val_images: int,
    *,
    size: int,
    trainable: str,
    augment: bool,
    cpu_cores: int,
    gpu: bool,
    measured: list[MeasuredEpochs] | tuple[MeasuredEpochs, ...] = (),
) -> pd.DataFrame:
    """One row per backbone with size, accuracy, estimated time and weights status.

    The estimate uses ``size`` and ``trainable`` where the backbone allows them (else its
    default size, and all blocks when ``top:N`` exceeds its block count), calibrated on the
    ``measured`` epochs of earlier runs with the same settings on this machine.
    """
    rows = []
    for spec in BACKBONES.values():
        policy = trainable
        if trainable.startswith("top:") and int(trainable[4:]) > spec.num_blocks:
            policy = "all"
        estimate = calibrated_estimate(
            spec.name,
            size if size in size_options(spec.name) else spec.default_size,
            policy,
            train_images=train_images,
            val_images=val_images,
            measured=measured,
            augment=augment,
            cpu_cores=cpu_cores,
            gpu=gpu,
        )
        rows.append(
            {
                "pretrained model": spec.display_name,
                "name": spec.name,
                "parameters (M)": round(spec.params / 1e6, 1),
                "input size": spec.default_size,
                "ImageNet top-1 %": spec.imagenet_top1,
                "est. 1st epoch (s)": max(1, round(estimate.first_epoch)),
                "est. later epochs (s)": max(1, round(estimate.later_epochs)),
                "weights": WEIGHTS_WORDS[weights_status(spec.name, spec.default_size)],
                "notes": spec.notes,
            }
        )
    return pd.DataFrame(rows)


def measured_epochs() -> list[MeasuredEpochs]:
    """Epoch times of the finished runs on this machine (read again when a run finishes)."""
    from core.runs.timings import timings_stamp

    return _measured_epochs(timings_stamp())


@st.cache_data(show_spinner=False, max_entries=4)
def _measured_epochs(stamp: tuple[tuple[str, int], ...]) -> list[MeasuredEpochs]:
    from core.runs.timings import measured_epochs as read

    return read()


@st.cache_data(show_spinner="Building the network to draw it…", max_entries=16)
def block_tables(
    backbone: str, size: int, pooling: str, dense_units: tuple[int, ...], num_classes: int
) -> dict[str, tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]]:
    """:func:`core.models.block_tables.compute_block_tables`, from the shipped tables where
    they hold this backbone, size and head (no TensorFlow then), else built once and cached."""
    from core.models.block_tables import compute_block_tables, shipped_block_tables

    args = (backbone, size, pooling, dense_units, num_classes)
    return shipped_block_tables(*args) or compute_block_tables(*args)


def fast_finetune_caption(
    cut: dict[str, Any], *, pretrained: bool, n_train: int, n_val: int, views: int
) -> str:
    """What fast fine-tuning will do for a "top blocks" choice, with the disk it needs.

    Args:
        cut: The choice's ``cut`` from :func:`block_tables`.
        pretrained: Whether training starts from pretrained weights.
        n_train: Training images.
        n_val: Validation images.
        views: Augmented copies per training image (0: augmentation off).
    """
    from core.training.activations import budget_bytes, cache_bytes, describe_bytes

    if not pretrained:
        return (
            ":material/info: No fast fine-tuning: random weights keep learning in every layer, "
            "so each epoch runs the whole network."
        )
    if not cut["possible"]:
        return f":material/info: No fast fine-tuning: {cut['reason']}"
    need = cache_bytes(cut["values"], n_train, n_val, views=views)
    budget = budget_bytes()
    if need > budget:
        return (
            f":material/info: No fast fine-tuning: keeping the frozen layers' output would take "
            f"{describe_bytes(need)}, more than the {describe_bytes(budget)} allowed. Fewer "
            "blocks, a smaller image size or fewer augmented copies make it fit."
        )
    return (
        ":material/bolt: **Fast fine-tuning**: the frozen layers run once over your images and "
        f"their output is kept (about {describe_bytes(need)} on disk); each epoch then trains "
        "only the chosen blocks and the last layer, several times faster."
    )


@st.cache_data(show_spinner="Augmenting a few of your images…", max_entries=32)
def preview(paths: tuple[str, ...], augment: AugmentConfig, size: int = 128) -> list[list[Any]]:
    """:func:`core.models.augment_preview.augment_samples` for the page (cached per settings)."""
    from core.models.augment_preview import augment_samples

    return augment_samples(list(paths), augment, size=size, variants=3)


def size_options(backbone: str) -> list[int]:
    """Input sizes offered for a backbone, its default included."""
    spec = get_backbone(backbone)
    return sorted(set(spec.allowed_sizes) | {spec.default_size})
