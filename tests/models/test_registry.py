"""The backbone registry: every entry builds, matches its metadata, and the CLI lists it offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import ModelConfig
from core.models import weights
from core.models.preprocessing import PREPROCESSING_MODES
from core.models.registry import BACKBONES, DEFAULT_BACKBONE, get_backbone
from core.models.weights import describe_backbones

REPO = Path(__file__).resolve().parents[2]
REFUSED_URL = "http://127.0.0.1:9"  # the discard port: connection refused at once, no network

# Small sizes: the smallest each architecture accepts comfortably (Inception/Xception need ~75).
SMALL_SIZE = {"inception_v3": 75, "xception": 71}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache and a download server that refuses connections."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(weights.MIRROR_ENV, REFUSED_URL)
    weights.reset_probe_cache()
    yield tmp_path / "keras_home"
    weights.reset_probe_cache()


def test_registry_lists_every_required_backbone():
    required = {
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "efficientnet_v2_b0",
        "resnet50",
        "resnet50_v2",
        "vgg16",
        "densenet121",
        "inception_v3",
        "xception",
        "convnext_tiny",
        "efficientnet_lite0",
    }
    assert required <= set(BACKBONES)
    assert DEFAULT_BACKBONE == "efficientnet_lite0"
    assert ModelConfig().backbone == DEFAULT_BACKBONE


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_spec_fields_are_consistent(name):
    spec = BACKBONES[name]
    assert re.fullmatch(r"[a-z0-9_]+", spec.name)
    assert spec.preprocessing in PREPROCESSING_MODES
    assert spec.min_size <= min(spec.allowed_sizes) <= spec.default_size
    assert spec.default_size in spec.allowed_sizes
    assert 0 < spec.imagenet_top1 < 100 and spec.params > 0 and spec.feature_dim > 0
    assert bool(spec.block_regex) != bool(spec.block_end_regex)
    if spec.bundled:
        assert not spec.weights_url
    else:
        assert spec.weights_origin().startswith("https://")
        assert spec.weights_filename().endswith(".h5")
        assert spec.weights_origin().endswith(spec.weights_filename())
        assert len(spec.weights_hash) in (0, 32, 64)


def test_unknown_backbone_error_lists_the_names():
    with pytest.raises(ValueError, match="mobilenet_v2") as info:
        get_backbone("resnet9000")
    assert "resnet9000" in str(info.value)


def test_size_below_minimum_is_refused():
    with pytest.raises(ValueError, match="at least 75"):
        get_backbone("inception_v3").check_size(64)


def test_mobilenet_v2_weights_file_follows_the_size():
    spec = get_backbone("mobilenet_v2")
    assert spec.weights_filename(160).endswith("_1.0_160_no_top.h5")
    assert spec.weights_filename(200).endswith("_1.0_224_no_top.h5")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_at_default_and_small_size(name):
    import keras

    from core.models.transfer import assign_blocks, build_model, last_conv_layer_name

    spec = BACKBONES[name]
    small = SMALL_SIZE.get(name, 32)
    for size, batch in ((spec.default_size, 1), (small, 2)):
        config = ModelConfig(backbone=name, weights="none", image_size=size)
        model = build_model(config, 3)
        images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3))
        probs = np.asarray(model(images.astype("float32")))
        assert probs.shape == (batch, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
        backbone = model.get_layer("backbone")
        if size == spec.default_size:
            # Registry metadata matches the real network.
            assert backbone.count_params() == spec.params
            assert backbone.output_shape[-1] == spec.feature_dim
            blocks = assign_blocks(spec, [layer.name for layer in backbone.layers])
            assert blocks[0] == "stem"
            assert len(dict.fromkeys(b for b in blocks if b != "stem")) == spec.num_blocks
            conv = last_conv_layer_name(model)
            assert len(backbone.get_layer(conv).output.shape) == 4
            if spec.gradcam_layer:
                assert conv == spec.gradcam_layer
        keras.backend.clear_session()


def test_inception_stem_ends_at_the_second_max_pool():
    import keras

    spec = get_backbone("inception_v3")
    backbone = spec.build_fn()(include_top=False, weights=None, input_shape=(75, 75, 3))
    layers = backbone.layers
    assert isinstance(layers[spec.stem_layers - 1], keras.layers.MaxPooling2D)
    assert isinstance(layers[spec.stem_layers], keras.layers.Conv2D)


def test_weights_status_offline(offline):
    statuses = {row["name"]: row["weights_status"] for row in describe_backbones()}
    assert statuses["efficientnet_lite0"] == "bundled"
    assert {statuses[name] for name in BACKBONES if name != "efficientnet_lite0"} == {"unavailable"}


def test_weights_status_sees_a_cached_file(offline):
    from core.models.weights import weights_status

    spec = get_backbone("resnet50")
    cache = offline / "models"
    cache.mkdir(parents=True)
    (cache / spec.weights_filename()).write_bytes(b"x" * 10)
    assert weights_status("resnet50") == "cached"
    assert weights_status("vgg16") == "unavailable"


def test_cli_lists_backbones_as_json_offline(offline, workspace):
    env = dict(os.environ, KERAS_HOME=str(offline), **{weights.MIRROR_ENV: REFUSED_URL})
    result = subprocess.run(
        [sys.executable, "-m", "core", "backbones", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["name"]: row for row in payload["backbones"]}
    assert set(rows) == set(BACKBONES)
    lite = rows["efficientnet_lite0"]
    assert lite["weights_status"] == "bundled" and lite["default"] is True
    assert rows["resnet50"]["preprocessing"] == "caffe"
    assert rows["resnet50"]["weights_status"] == "unavailable"
    for row in rows.values():
        for key in ("display_name", "params", "imagenet_top1", "num_blocks", "feature_dim"):
            assert row[key]


def test_registry_import_does_not_load_tensorflow():
    code = "import sys, core.models.registry; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False"
