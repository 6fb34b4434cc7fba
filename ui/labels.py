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
