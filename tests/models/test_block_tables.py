"""The shipped block tables are what building the network gives, for any number of classes."""

from __future__ import annotations

import json

import pytest

from core.config import ModelConfig
from core.models import block_tables
from core.models.registry import BACKBONES, get_backbone

DEFAULTS = ModelConfig()


def test_every_backbone_ships_its_tables_at_its_default_size():
    for name in BACKBONES:
        size = get_backbone(name).default_size
        tables = block_tables.shipped_block_tables(name, size, DEFAULTS.pooling, (), 2)
        assert tables is not None, name
        assert list(tables) == block_tables.policies(name)
        blocks, counts, _ = tables["head"]
        assert blocks[-1]["name"] == "head" and blocks[-1]["trainable"]
        assert not any(block["trainable"] for block in blocks[:-1])
        assert counts["total"] == counts["trainable"] + counts["frozen"]


# The offline default and two other families; every backbone is rebuilt by
# `python -m core.models.block_tables` (about 10 s), which writes the file.
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v2", "resnet50"])
@pytest.mark.parametrize("classes", [2, 5])
def test_shipped_tables_equal_the_built_network(backbone, classes):
    size = get_backbone(backbone).default_size
    args = (backbone, size, DEFAULTS.pooling, (), classes)
    built = block_tables.compute_block_tables(*args)
    shipped = block_tables.shipped_block_tables(*args)
    assert shipped == {policy: tuple(value) for policy, value in built.items()}


# Every pooling the Model page offers: flattening gives the head every value of the map.
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "vgg16"])
@pytest.mark.parametrize("pooling", ["max", "flatten"])
def test_shipped_tables_answer_every_pooling(backbone, pooling):
    size = get_backbone(backbone).default_size
    args = (backbone, size, pooling, (), 3)
    built = block_tables.compute_block_tables(*args)
    shipped = block_tables.shipped_block_tables(*args)
    assert shipped == {policy: tuple(value) for policy, value in built.items()}


def test_other_heads_sizes_or_a_damaged_file_are_built_instead(tmp_path, monkeypatch):
    size = get_backbone("efficientnet_lite0").default_size
    assert block_tables.shipped_block_tables("efficientnet_lite0", size, "avg", (64,), 2) is None
    assert block_tables.shipped_block_tables("efficientnet_lite0", 96, "avg", (), 2) is None
    assert block_tables.shipped_block_tables("efficientnet_lite0", size, "sum", (), 2) is None
    entry = json.loads(block_tables.SHIPPED_FILE.read_text())["efficientnet_lite0"]
    without_map = json.dumps({"efficientnet_lite0": {**entry, "feature_map": None}})
    wrong_head = json.loads(json.dumps(entry))
    wrong_head["blocks"][-1][1] += 1
    for damaged in (
        "",
        "[1, 2]",
        '{"efficientnet_lite0": {"size": 224, "blocks": 7}}',
        without_map,
        json.dumps({"efficientnet_lite0": wrong_head}),
    ):
        path = tmp_path / "block_tables.json"
        path.write_text(damaged)
        monkeypatch.setattr(block_tables, "SHIPPED_FILE", path)
        block_tables._shipped.cache_clear()
        try:
            assert (
                block_tables.shipped_block_tables("efficientnet_lite0", 224, "avg", (), 2) is None
            )
        finally:
            block_tables._shipped.cache_clear()
