"""Each backbone's preprocessing equals what its Keras family expects."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from core.models.preprocessing import (
    LegacyPreprocess,
    check_mode,
    preprocess_numpy,
    preprocessing_layer,
)
from core.models.registry import BACKBONES

FAMILIES = sorted({spec.family for spec in BACKBONES.values()} - {"efficientnet_lite"})
# Families whose preprocessing Keras builds into the network (preprocess_input is a no-op),
# with the constructor that shows the built-in layers.
BUILT_IN = {
    "mobilenet_v3": "MobileNetV3Small",
    "efficientnet_v2": "EfficientNetV2B0",
    "convnext": "ConvNeXtTiny",
    "efficientnet": "EfficientNetB0",
}
_PREPROCESSING_LAYERS = ("Rescaling", "Normalization", "PreStem")


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _spec_for(family: str):
    return next(spec for spec in BACKBONES.values() if spec.family == family)


def _built_in_preprocessing(family: str, images: np.ndarray) -> np.ndarray:
    """Runs the preprocessing layers Keras puts at the start of a family's network."""
    constructor = getattr(keras.applications, BUILT_IN[family])
    network = constructor(include_top=False, weights=None, input_shape=images.shape[1:])
    last = None
    for layer in network.layers[1:]:
        if type(layer).__name__ not in _PREPROCESSING_LAYERS:
            break
        last = layer
    assert last is not None, f"{family} has no built-in preprocessing layers"
    return np.asarray(keras.Model(network.input, last.output)(images))


@pytest.mark.parametrize("family", FAMILIES)
def test_preprocessing_matches_keras_family(family):
    spec = _spec_for(family)
    images = _images()
    ours = preprocess_numpy(images, spec.preprocessing)
    module = importlib.import_module(f"keras.applications.{family}")
    reference = np.asarray(module.preprocess_input(images.copy()))
    if family in BUILT_IN:
        # Keras' preprocess_input is the identity here; the real preprocessing lives inside
        # the network. Either the app's layer does it (constructor built without it) or the
        # backbone keeps it (mode "none").
        np.testing.assert_allclose(reference, images, rtol=1e-6)
        built_in = _built_in_preprocessing(family, images)
        if spec.preprocessing == "none":
            np.testing.assert_allclose(ours, images, rtol=1e-6)
            assert dict(spec.constructor_kwargs).get("include_preprocessing", True)
        else:
            assert dict(spec.constructor_kwargs)["include_preprocessing"] is False
            np.testing.assert_allclose(ours, built_in, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_uses_its_family_mode(name):
    spec = BACKBONES[name]
    images = _images(1)
    if spec.family == "efficientnet_lite":
        expected = (images - 127.5) / 127.5
        np.testing.assert_allclose(
            preprocess_numpy(images, spec.preprocessing), expected, rtol=1e-5, atol=1e-6
        )
    else:
        same_family = [s for s in BACKBONES.values() if s.family == spec.family]
        assert {s.preprocessing for s in same_family} == {spec.preprocessing}


def test_modes_differ_from_each_other():
    images = _images(2)
    outputs = {mode: preprocess_numpy(images, mode) for mode in ("caffe", "torch", "tf", "none")}
    modes = list(outputs)
    for i, first in enumerate(modes):
        for second in modes[i + 1 :]:
            assert not np.allclose(outputs[first], outputs[second])


def test_caffe_mode_is_bgr_minus_mean():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")
    out = preprocess_numpy(pixel, "caffe")[0, 0, 0]
    np.testing.assert_allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "none"])
def test_layer_is_builtin_and_matches_the_legacy_layer(mode):
    """Every mode is a built-in Keras layer (loads with plain Keras, safe_mode) and computes
    what the custom layer of earlier versions computed."""
    layer = preprocessing_layer(mode)
    config = keras.saving.serialize_keras_object(layer)
    assert config["module"].startswith("keras."), config["module"]
    assert "transfer_studio" not in str(config)
    assert layer.trainable_weights == []
    images = _images(3)
    legacy = np.asarray(LegacyPreprocess(mode)(images))
    np.testing.assert_allclose(np.asarray(layer(images)), legacy, rtol=1e-5, atol=1e-4)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, layer(inputs))
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model), safe_mode=True
    )
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone(images)), legacy, rtol=1e-5, atol=1e-4)


def test_legacy_layer_still_reads_old_configs():
    layer = LegacyPreprocess("torch", backbone="densenet121", name="preprocess")
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "transfer_studio>Preprocess"
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert clone.mode == "torch" and clone.backbone == "densenet121"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="Received: mode='bgr'"):
        check_mode("bgr")
    with pytest.raises(ValueError, match="caffe"):
        preprocessing_layer("bgr")
