"""The transfer model: layer names, what trains, frozen BatchNorm, heads and helpers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.config import AugmentConfig, ModelConfig
from core.models.transfer import (
    backbone_name,
    block_table,
    build_model,
    feature_extractor,
    gradcam_model,
    head_of,
    is_pretrained,
    last_conv_layer_name,
    num_blocks,
    parameter_counts,
    set_trainable,
)

SIZE = 32


def _images(batch: int = 4, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _size(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


@pytest.fixture(scope="module")
def lite_model(tmp_path_factory):
    """Lite0 with its bundled (offline) pretrained weights, built once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path_factory.mktemp("workspace")))
        config = ModelConfig(weights="imagenet", image_size=SIZE, dense_units=(16,))
        return build_model(config, 3)


def _bn_layers(model):
    backbone = model.get_layer("backbone")
    return [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_layer_names_and_shapes(lite_model):
    names = [layer.name for layer in lite_model.layers]
    assert names == ["image", "preprocess", "backbone", "pool", "head"]
    assert lite_model.input_shape == (None, SIZE, SIZE, 3)
    assert lite_model.output_shape == (None, 3)
    assert isinstance(lite_model.get_layer("backbone"), keras.Model)
    preprocess = lite_model.get_layer("preprocess")
    assert isinstance(preprocess, keras.layers.Rescaling)  # mode "tf": a built-in layer
    assert (preprocess.scale, preprocess.offset) == (1.0 / 127.5, -1.0)
    assert backbone_name(lite_model) == "efficientnet_lite0" and is_pretrained(lite_model)
    head = head_of(lite_model)
    assert head.name == "head" and head.input_shape == (None, 1280)
    assert [layer.name for layer in head.layers] == ["dense_0", "dropout", "predictions"]


def test_backbone_is_called_in_inference_mode(lite_model):
    node = lite_model.get_layer("backbone")._inbound_nodes[0]
    assert node.arguments.kwargs.get("training") is False


def test_augmentation_only_when_enabled_and_only_in_training():
    config = ModelConfig(
        weights="none",
        image_size=SIZE,
        augment=AugmentConfig(flip="horizontal", rotation=0.1, zoom=0.1, shear=0.2, contrast=0.2),
    )
    model = build_model(config, 2)
    assert [layer.name for layer in model.layers][:3] == ["image", "augmentation", "preprocess"]
    images = _images()
    augmentation = model.get_layer("augmentation")
    np.testing.assert_array_equal(np.asarray(augmentation(images)), images)
    assert not np.allclose(np.asarray(augmentation(images, training=True)), images)
    np.testing.assert_allclose(model(images), model.predict(images, verbose=0), rtol=1e-5)


def test_head_trains_only_the_head(lite_model):
    set_trainable(lite_model, "head")
    counts = parameter_counts(lite_model)
    head = lite_model.get_layer("head")
    assert counts["trainable"] == head.count_params() == 1280 * 16 + 16 + 16 * 3 + 3
    assert counts["total"] == lite_model.count_params()
    assert counts["frozen"] == lite_model.get_layer("backbone").count_params()
    rows = block_table(lite_model)
    assert rows[0]["name"] == "stem" and rows[-1]["name"] == "head"
    assert [row["trainable"] for row in rows] == [False] * (len(rows) - 1) + [True]


def test_top_n_trains_the_last_n_blocks_without_batchnorm(lite_model):
    head_params = lite_model.get_layer("head").count_params()
    previous = head_params
    for n in (1, 2, 5):
        set_trainable(lite_model, f"top:{n}")
        rows = block_table(lite_model)
        blocks = rows[1:-1]
        assert len(blocks) == num_blocks("efficientnet_lite0") == 17
        assert [row["trainable"] for row in blocks] == [False] * (17 - n) + [True] * n
        assert not rows[0]["trainable"]
        expected = head_params + sum(row["trainable_params"] for row in blocks)
        counts = parameter_counts(lite_model)
        assert counts["trainable"] == expected > previous
        previous = counts["trainable"]
        assert all(not layer.trainable for layer in _bn_layers(lite_model))
    # top:1 of Lite0 is the head conv (top_conv + top_bn): only the conv kernel trains.
    set_trainable(lite_model, "top:1")
    assert parameter_counts(lite_model)["trainable"] == head_params + 320 * 1280


def test_all_trains_everything_but_batchnorm(lite_model):
    set_trainable(lite_model, "all")
    counts = parameter_counts(lite_model)
    bn_params = sum(layer.count_params() for layer in _bn_layers(lite_model))
    assert counts["frozen"] == bn_params
    assert counts["trainable"] == lite_model.count_params() - bn_params
    assert all(row["trainable"] for row in block_table(lite_model))


def test_bad_trainable_settings(lite_model):
    with pytest.raises(ValueError, match="between 1 and 17"):
        set_trainable(lite_model, "top:18")
    with pytest.raises(ValueError, match="Received: trainable='bottom'"):
        set_trainable(lite_model, "bottom")


def _fit_one_step(model) -> None:
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    images = _images(8, seed=3) * 0.5 + 60  # far from the data the statistics came from
    model.fit(images, np.array([0, 1] * 4), batch_size=8, epochs=1, verbose=0)


def test_frozen_batchnorm_statistics_do_not_move_in_a_fit_step():
    """Pretrained (bundled Lite0 weights), everything trainable: BatchNorm stays put."""
    model = build_model(ModelConfig(weights="imagenet", image_size=SIZE, trainable="all"), 2)
    backbone = model.get_layer("backbone")
    bns = _bn_layers(model)
    assert bns and not any(layer.trainable for layer in bns)
    before = [[np.array(v) for v in layer.weights] for layer in bns]
    kernel = np.array(backbone.get_layer("top_conv").kernel)
    _fit_one_step(model)
    for layer, saved in zip(bns, before, strict=True):
        for variable, value in zip(layer.weights, saved, strict=True):
            np.testing.assert_array_equal(np.array(variable), value)  # gamma, beta, mean, var
    # ...while the convolutions did train.
    assert not np.allclose(np.array(backbone.get_layer("top_conv").kernel), kernel)


def test_random_init_backbone_trains_its_batchnorm():
    """Weights "none": frozen untrained BatchNorm would make the network untrainable."""
    model = build_model(ModelConfig(weights="none", image_size=SIZE, trainable="all"), 2)
    assert is_pretrained(model) is False
    bns = _bn_layers(model)
    assert all(layer.trainable for layer in bns)
    before = np.array(bns[0].moving_mean)
    _fit_one_step(model)
    assert not np.allclose(np.array(bns[0].moving_mean), before)


def test_vgg16_flatten_recipe_is_expressible():
    config = ModelConfig(
        backbone="vgg16",
        weights="none",
        image_size=64,
        pooling="flatten",
        dense_units=(256,),
        dropout=0.5,
    )
    model = build_model(config, 4)
    assert isinstance(model.get_layer("pool"), keras.layers.Flatten)
    assert head_of(model).input_shape == (None, 2 * 2 * 512)
    assert model(_images(2, 64)).shape == (2, 4)
    set_trainable(model, "top:1")
    rows = block_table(model)
    assert [row["name"] for row in rows if row["trainable"]] == ["block5", "head"]


def test_max_pooling_and_linear_head():
    model = build_model(ModelConfig(weights="none", image_size=SIZE, pooling="max", dropout=0.0), 2)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert [layer.name for layer in head_of(model).layers] == ["predictions"]


def test_feature_extractor_shares_weights_and_skips_augmentation():
    model = build_model(
        ModelConfig(weights="none", image_size=SIZE, augment=AugmentConfig.standard()), 2
    )
    extractor = feature_extractor(model)
    assert "augmentation" not in [layer.name for layer in extractor.layers]
    images = _images()
    features = np.asarray(extractor(images))
    assert features.shape == (4, 1280)
    probs = np.asarray(head_of(model)(features))
    np.testing.assert_allclose(probs, np.asarray(model(images)), rtol=1e-4, atol=1e-6)


def test_gradcam_metadata(lite_model):
    assert last_conv_layer_name("efficientnet_lite0") == "top_activation"
    assert last_conv_layer_name(lite_model) == "top_activation"
    conv, out = gradcam_model(lite_model)(np.zeros((1, SIZE, SIZE, 3), "float32"))
    assert conv.shape == (1, 1, 1, 1280) and out.shape == (1, 1, 1, 1280)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig(weights="none", image_size=SIZE), 1)
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model(ModelConfig(backbone="alexnet", weights="none", image_size=SIZE), 2)
