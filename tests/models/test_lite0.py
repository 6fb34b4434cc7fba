"""Offline EfficientNet-Lite0: the restricted torch reader, the Keras port and its accuracy."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from core.models import lite0, weights
from core.models.weights import WeightsUnavailableError

MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
PROTOCOL = pickle.dumps(1001, protocol=2)
SYS_INFO = pickle.dumps(
    {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2
)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _photo(name: str) -> np.ndarray:
    import skimage.data
    from PIL import Image

    image = Image.fromarray(getattr(skimage.data, name)())
    return np.asarray(image.resize((224, 224), Image.BILINEAR), dtype="float32")[None]


def test_reads_the_bundled_state_dict_without_torch():
    state = lite0.read_legacy_torch(weights.lite0_source_path())
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert not any(k.endswith("_se_reduce.weight") for k in state)  # Lite has no SE


def test_imagenet_acceptance_on_real_photos():
    """Full 1000-class head at 224x224: chelsea -> 285 (Egyptian cat), coffee -> 967."""
    model = lite0.efficientnet_lite0(include_top=True, weights="imagenet")
    for name, expected in (("chelsea", 285), ("coffee", 967)):
        probs = model.predict((_photo(name) - 127.5) / 127.5, verbose=0)[0]
        assert int(np.argmax(probs)) == expected, (name, np.argsort(probs)[::-1][:5])


def test_transfer_backbone_features_equal_the_full_network():
    import keras

    from core.config import ModelConfig
    from core.models.transfer import build_model, feature_extractor

    full = lite0.efficientnet_lite0(include_top=True, weights="imagenet")
    reference = keras.Model(full.input, full.get_layer("avg_pool").output)
    photo = _photo("coffee")
    expected = reference.predict((photo - 127.5) / 127.5, verbose=0)
    model = build_model(ModelConfig(backbone="efficientnet_lite0", weights="imagenet"), 2)
    features = feature_extractor(model).predict(photo, verbose=0)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_conversion_runs_once_and_is_cached(workspace):
    first = lite0.converted_weights_path()
    assert first.is_file() and str(first).startswith(str(workspace))
    stamp = first.stat().st_mtime_ns
    second = lite0.converted_weights_path()
    assert second == first and second.stat().st_mtime_ns == stamp


def test_missing_weights_package_gives_the_alternatives(monkeypatch):
    monkeypatch.setattr(weights, "lite0_source_path", lambda: None)
    with pytest.raises(WeightsUnavailableError, match="weights 'none'"):
        lite0.converted_weights_path()


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(str(marker)), protocol=2)
    for layout in (
        MAGIC + PROTOCOL + SYS_INFO + evil,  # in the state dict position
        evil,  # in the very first pickle
    ):
        path = tmp_path / "evil.pth"
        path.write_bytes(layout)
        with pytest.raises(lite0.UnsafePickleError, match="Refusing to load"):
            lite0.read_legacy_torch(path)
    assert not marker.exists()


def test_refuses_a_zip_checkpoint_and_a_truncated_file(tmp_path):
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(pickle.UnpicklingError, match="zip-format"):
        lite0.read_legacy_torch(zipped)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.lite0_source_path().read_bytes()[:2_000_000])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        lite0.read_legacy_torch(truncated)
    not_torch = tmp_path / "plain.pth"
    not_torch.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="not a legacy PyTorch file"):
        lite0.read_legacy_torch(not_torch)


def test_architecture_matches_the_block_table():
    model = lite0.build_architecture((64, 64, 3))
    depthwise = [layer for layer in model.layers if layer.name.endswith("_dwconv")]
    assert len(depthwise) == sum(args[0] for args in lite0.BLOCKS_ARGS) == 16
    assert model.get_layer("stem_conv").filters == 32
    assert model.get_layer("top_conv").filters == 1280
    assert model.get_layer("stem_bn").epsilon == pytest.approx(1e-3)
    assert not any("se_" in layer.name for layer in model.layers)
    assert model.output_shape == (None, 2, 2, 1280)
