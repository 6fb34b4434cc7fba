"""Words the pages share: run-state badges and plain-language names of settings."""

from __future__ import annotations

from core.config import parse_trainable

STATE_BADGES = {
    "queued": ":gray-badge[:material/schedule: queued]",
    "running": ":blue-badge[:material/autorenew: running]",
    "completed": ":green-badge[:material/check_circle: completed]",
    "failed": ":red-badge[:material/error: failed]",
    "cancelled": ":orange-badge[:material/block: cancelled]",
    "interrupted": ":orange-badge[:material/pause_circle: interrupted]",
    "broken": ":red-badge[:material/broken_image: broken]",
}

PHASE_NAMES = {
    "": "starting",
    "waiting": "waiting for the device",
    "loading": "loading images",
    "caching": "preparing images",
    "embedding": "computing features once (fast path)",
    "head": "training the head",
    "train": "training",
    "fine-tune": "fine-tuning the backbone",
    "saving": "saving the model",
}


def trainable_phrase(trainable: str) -> str:
    """``"head"`` -> ``"head only"``, ``"top:3"`` -> ``"top 3 blocks + head"``, ``"all"``."""
    policy, blocks = parse_trainable(trainable)
    if policy == "head":
        return "head only"
    if policy == "all":
        return "whole network"
    return f"top {blocks} block{'s' if blocks != 1 else ''} + head"


# Plain names of the settings in config.json (flattened keys), for tables people read.
SETTING_LABELS = {
    "dataset": "Dataset",
    "model.backbone": "Pretrained model",
    "model.weights": "Starting weights",
    "model.image_size": "Image size (px)",
    "model.trainable": "What learns",
    "model.pooling": "Summary of the picture (pooling)",
    "model.dense_units": "Extra layer sizes",
    "model.dropout": "Dropout",
    "model.augment.flip": "Random flips",
    "model.augment.rotation": "Random rotation",
    "model.augment.zoom": "Random zoom",
    "model.augment.translation": "Random shift",
    "model.augment.contrast": "Random contrast",
    "model.augment.brightness": "Random brightness",
    "model.augment.shear": "Random slant (shear)",
    "model.augment.views": "Varied copies per image",
    "optimizer": "Optimizer",
    "learning_rate": "Learning rate",
    "momentum": "Momentum",
    "weight_decay": "Weight decay",
    "schedule": "Learning-rate schedule",
    "batch_size": "Batch size",
    "epochs": "Epochs",
    "early_stopping_patience": "Stop after epochs without progress",
    "restore_best": "Keep the best epoch",
    "label_smoothing": "Label smoothing",
    "class_weights": "Balance classes",
    "fine_tune_epochs": "Fine-tune epochs",
    "fine_tune_trainable": "Fine-tune: what learns",
    "fine_tune_lr_mult": "Fine-tune: learning-rate factor",
    "mixed_precision": "Mixed precision",
    "seed": "Random seed",
    "name": "Name",
    "init_from": "Started from run",
}

# Settings that only matter when the run has a fine-tune phase (fine_tune_epochs > 0).
FINE_TUNE_SETTINGS = ("fine_tune_trainable", "fine_tune_lr_mult")


def setting_label(key: str) -> str:
    """The plain name of a flattened setting key (``model.augment.contrast`` ->
    ``Random contrast``); an unknown key becomes words (``new_thing`` -> ``New thing``)."""
    if key in SETTING_LABELS:
        return SETTING_LABELS[key]
    words = key.rsplit(".", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:]
