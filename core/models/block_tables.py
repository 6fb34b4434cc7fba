"""Block tables of a transfer model: what each "what trains" choice freezes, as data.

The Model page draws the network as a row of blocks (grey when frozen) with its parameter
counts and whether fast fine-tuning can cache the frozen part. :func:`compute_block_tables`
builds the architecture (random weights, no download) and applies every choice to it; that
needs TensorFlow and about a second per backbone, so the tables of every registry backbone at
its default size with the default head are kept in ``block_tables.json`` beside this module
and :func:`shipped_block_tables` answers those from the file, adapted to the number of
classes. ``tests/models/test_block_tables.py`` rebuilds them and compares, and
``python -m core.models.block_tables`` writes the file again.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from core.config import ModelConfig
from core.models.registry import BACKBONES, get_backbone

SHIPPED_FILE = Path(__file__).with_name("block_tables.json")
SHIPPED_CLASSES = 2  # the tables in the file are for a 2-class head
SHIPPED_POOLING = "avg"  # ... after global average pooling
POOLINGS = ("avg", "max", "flatten")  # the poolings the file answers (adapting the head)
HEAD_BLOCK = "head"

Tables = dict[str, tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]]


def policies(backbone: str) -> list[str]:
    """Every "what trains" choice of a backbone: ``head``, ``top:1`` .. ``top:N``, ``all``."""
    count = get_backbone(backbone).num_blocks
    return ["head", *[f"top:{n}" for n in range(1, count + 1)], "all"]


def compute_block_tables(
    backbone: str, size: int, pooling: str, dense_units: tuple[int, ...], num_classes: int
) -> Tables:
    """For every "what trains" choice: the block table, the parameter counts and the cut.

    Args:
        backbone: Registry name.
        size: Input size in pixels.
        pooling: Pooling of the backbone's output (``ModelConfig.pooling``).
        dense_units: Hidden dense layers of the head.
        num_classes: Classes of the head (at least 2).

    Returns:
        ``{"head": (blocks, counts, cut), "top:1": ..., "all": ...}``: ``blocks`` is
        ``[{"name", "params", "trainable"}]`` from input to output, ``counts`` is
        ``{"trainable", "frozen", "total"}`` and ``cut`` says whether fast fine-tuning can
        cache the frozen part: ``{"possible", "reason", "values"}`` (numbers kept per image).
    """
    from core.models.cut import find_cut
    from core.models.transfer import block_table, build_model, parameter_counts, set_trainable

    config = ModelConfig(
        backbone=backbone,
        weights="none",
        image_size=size,
        pooling=pooling,
        dense_units=dense_units,
    )
    model = build_model(config, num_classes)
    tables: Tables = {}
    for policy in policies(backbone):
        set_trainable(model, policy)
        blocks = [
            {k: row[k] for k in ("name", "params", "trainable")} for row in block_table(model)
        ]
        plan = find_cut(model, policy, require_pretrained=False)
        cut = {"possible": plan.possible, "reason": plan.reason, "values": plan.values_per_image}
        tables[policy] = (blocks, parameter_counts(model), cut)
    return tables


@functools.cache
def _shipped() -> dict[str, Any]:
    try:
        data = json.loads(SHIPPED_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def shipped_block_tables(
    backbone: str, size: int, pooling: str, dense_units: tuple[int, ...], num_classes: int
) -> Tables | None:
    """:func:`compute_block_tables` from ``block_tables.json``, or None where it has no entry.

    The file holds each backbone at its default size with average pooling and a linear
    2-class head, and the shape of its feature map. Another pooling or number of classes
    changes only the head's parameters (``features + 1`` per class, where ``features`` is
    the channels after a global pooling, every value when flattened), which are adjusted
    here. Any other head or size (or a missing or damaged file) gives None: the caller
    builds the network.
    """
    if dense_units or pooling not in POOLINGS or num_classes < 2:
        return None
    entry = _shipped().get(backbone)
    if not isinstance(entry, dict) or entry.get("size") != size:
        return None
    try:
        return _unpack(entry, backbone, num_classes, pooling)
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # a damaged entry: the caller builds the network


def _pack(tables: Tables) -> dict[str, Any]:
    """The file's form: the blocks once, then per choice which of them train."""
    first = next(iter(tables.values()))[0]
    return {
        "blocks": [[block["name"], block["params"]] for block in first],
        "policies": {
            policy: {
                "trains": "".join("1" if b["trainable"] else "0" for b in blocks),
                "counts": counts,
                "cut": cut,
            }
            for policy, (blocks, counts, cut) in tables.items()
        },
    }


def _head_features(entry: dict[str, Any], pooling: str) -> int:
    """Numbers into the head: the feature map's channels, or all its values when flattened."""
    height, width, channels = (int(n) for n in entry["feature_map"])
    return height * width * channels if pooling == "flatten" else channels


def _unpack(entry: dict[str, Any], backbone: str, num_classes: int, pooling: str) -> Tables | None:
    names = [str(name) for name, _ in entry["blocks"]]
    params = [int(count) for _, count in entry["blocks"]]
    stored = entry["policies"]
    if set(stored) != set(policies(backbone)) or names[-1] != HEAD_BLOCK:
        return None
    # A linear head has (features + 1) parameters per class; pooling adds none.
    head = (_head_features(entry, pooling) + 1) * num_classes
    if params[-1] != (_head_features(entry, SHIPPED_POOLING) + 1) * SHIPPED_CLASSES:
        return None  # the file's head is not the linear head it should hold
    extra = head - params[-1]
    params[-1] = head
    adapted: Tables = {}
    for policy in policies(backbone):  # the file's keys are sorted: keep the slider's order
        choice = stored[policy]
        trains = str(choice["trains"])
        if len(trains) != len(names):
            return None
        blocks = [
            {"name": name, "params": count, "trainable": flag == "1"}
            for name, count, flag in zip(names, params, trains, strict=True)
        ]
        counts = {key: int(value) for key, value in choice["counts"].items()}
        counts["trainable"] += extra
        counts["total"] += extra
        adapted[policy] = (blocks, counts, dict(choice["cut"]))
    return adapted


def write_shipped(path: Path = SHIPPED_FILE, backbones: list[str] | None = None) -> None:
    """Computes the tables of ``backbones`` (default: every registry backbone) into ``path``."""
    from core.models.transfer import build_backbone

    data = {}
    for name in backbones or list(BACKBONES):
        size = get_backbone(name).default_size
        tables = compute_block_tables(name, size, SHIPPED_POOLING, (), SHIPPED_CLASSES)
        feature_map = [int(n) for n in build_backbone(name, size, "none").outputs[0].shape[1:]]
        data[name] = {"size": size, "feature_map": feature_map, **_pack(tables)}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_shipped()
    sys.stdout.write(f"wrote {SHIPPED_FILE}\n")
