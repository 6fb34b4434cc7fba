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
    "head": "training the new last layer",
    "train": "training",
    "fine-tune": "fine-tuning the pretrained model",
    "saving": "saving the model",
}


def trainable_phrase(trainable: str) -> str:
    """``"head"`` -> ``"new last layer only"``, ``"top:3"`` -> ``"last 3 blocks + new last layer"``,
    ``"all"`` -> ``"whole network"`` (the everyday words for head and backbone blocks)."""
    policy, blocks = parse_trainable(trainable)
    if policy == "head":
        return "new last layer only"
    if policy == "all":
        return "whole network"
    return f"last {blocks} block{'s' if blocks != 1 else ''} + new last layer"


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


def block_title(name: str) -> str:
    """A readable name of a network block: ``block6a`` -> ``Block 6a``, ``head`` ->
    ``New last layer``, ``stem`` -> ``First layers``, ``conv5_block3`` -> ``Conv5 block3``."""
    import re

    special = {"head": "New last layer", "stem": "First layers", "top": "Final layers"}
    if name in special:
        return special[name]
    match = re.fullmatch(r"block_?(\d+)([a-z]?)", name)
    if match:
        return f"Block {match.group(1)}{match.group(2)}"
    words = name.replace("_", " ").strip()
    words = re.sub(r"\bblock(\d)", r"block \1", words)
    return words[:1].upper() + words[1:]
