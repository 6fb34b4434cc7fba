"""Grad-CAM on real backbones (weights "none", small inputs): the map has the image's shape,
is scaled 0..1 and is not constant, for every registered backbone family."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.data.sample import draw_shape
from core.models.registry import BACKBONES


def _model(backbone: str, size: int):
    from core.config import ModelConfig
    from core.models.transfer import build_model

    config = ModelConfig(backbone=backbone, weights="none", image_size=size, dropout=0.0)
    return build_model(config, 3)


def _picture(width: int = 70, height: int = 50) -> Image.Image:
    return draw_shape("star", (width, height), np.random.default_rng(3))


FAMILIES = ["mobilenet_v2", "resnet50", "vgg16", "efficientnet_lite0"]


@pytest.mark.parametrize("backbone", FAMILIES)
def test_heatmap_has_image_shape_range_and_structure(backbone):
    from core.runs.gradcam import GradCam, overlay

    model = _model(backbone, 64)
    image = _picture()
    explainer = GradCam(model)
    heatmap, probabilities = explainer.explain(image)

    assert heatmap.shape == (image.height, image.width)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() - heatmap.min() > 0.1, "the map must not be constant"
    assert heatmap.std() > 0.01
    assert probabilities.shape == (3,)
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)

    blended = overlay(image, heatmap)
    assert blended.size == image.size and blended.mode == "RGB"


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - set(FAMILIES)))
def test_every_registered_backbone_gets_a_map(backbone):
    from core.runs.gradcam import gradcam

    spec = BACKBONES[backbone]
    # Large enough for a feature map of at least 2x2 (a 1x1 map cannot localise anything).
    size = 64 if spec.min_size <= 32 else 160
    heatmap = gradcam(_model(backbone, size), _picture(48, 40))
    assert heatmap.shape == (40, 48)
    assert heatmap.max() - heatmap.min() > 0.0


def test_array_input_and_explicit_class():
    from core.runs.gradcam import GradCam

    model = _model("mobilenet_v2", 64)
    array = np.asarray(_picture(64, 64), dtype=np.float32)
    explainer = GradCam(model)
    first, _ = explainer.explain(array, class_index=0)
    second, _ = explainer.explain(array, class_index=2)
    assert first.shape == second.shape == (64, 64)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        explainer.explain(array[..., 0])


def test_overlay_rejects_bad_alpha():
    from core.runs.gradcam import overlay

    with pytest.raises(ValueError, match="alpha"):
        overlay(_picture(), np.zeros((50, 70), np.float32), alpha=2.0)


def test_model_without_backbone_is_refused():
    import keras

    from core.runs.gradcam import GradCam

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="backbone"):
        GradCam(keras.Model(inputs, outputs))


def test_the_compiled_explainer_equals_grad_cam_written_out_eagerly():
    """Eager or traced (after warm()), the map is the textbook one; one trace for any size."""
    import tensorflow as tf

    from core.runs.gradcam import GradCam, resize_heatmap
    from core.runs.predict import image_to_array

    model = _model("mobilenet_v2", 64)
    # A head whose class 1 grows with every feature: the map has evidence for the class, so
    # the textbook formula applies (an untrained head often has none: the fallbacks).
    dense = next(layer for layer in reversed(model.layers[-1].layers) if layer.get_weights())
    kernel, bias = dense.get_weights()
    kernel[:] = 0.0
    kernel[:, 1] = np.random.default_rng(0).uniform(0.01, 0.1, kernel.shape[0])
    dense.set_weights([kernel, bias])
    explainer = GradCam(model)
    eager, _ = explainer.explain(_picture(), class_index=1)  # before warm(): no graph yet
    assert explainer._forward_graph is None and not explainer.is_warm
    explainer.warm()
    assert explainer.is_warm
    backbone, pool, head = (model.get_layer(n) for n in ("backbone", "pool", model.layers[-1].name))
    preprocess = [
        layer
        for layer in model.layers[1 : model.layers.index(backbone)]
        if layer.name != "augmentation"
    ]
    compared = 0
    for width, height in ((70, 50), (64, 64), (31, 90)):
        image = _picture(width, height)
        heatmap, probabilities = explainer.explain(image, class_index=1)

        x = tf.convert_to_tensor(image_to_array(image, 64)[None])
        for layer in preprocess:
            x = layer(x, training=False)
        fmap = backbone(x, training=False)
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            expected_probabilities = head(pool(fmap), training=False)
            score = expected_probabilities[0, 1]
        grads = tape.gradient(score, fmap)[0].numpy()
        weights = grads.mean(axis=(0, 1))
        cam = np.maximum(np.tensordot(fmap[0].numpy(), weights, axes=([2], [0])), 0)
        if cam.max() > 1e-12:  # the textbook case (the fallbacks are tested above)
            expected = resize_heatmap((cam / cam.max()).astype(np.float32), (height, width))
            np.testing.assert_allclose(heatmap, expected, atol=1e-3)
            compared += 1
        np.testing.assert_allclose(probabilities, expected_probabilities[0].numpy(), atol=1e-5)
    assert compared >= 2
    np.testing.assert_allclose(explainer.explain(_picture(), class_index=1)[0], eager, atol=1e-3)
    assert explainer._forward_graph.experimental_get_tracing_count() == 1
