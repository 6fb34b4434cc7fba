"""Cutting a partly trainable backbone into a frozen bottom and a trainable top.

Real Keras models of every registry family (random weights, smallest input size): the top
applied to the bottom's output must give exactly what the whole model gives.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.config import ModelConfig
from core.models.cut import find_cut, split_at_cut
from core.models.registry import BACKBONES
from core.models.transfer import build_model, set_trainable

#: Input side for each family: the registry's smallest allowed size.
SIZES = {"inception_v3": 75, "xception": 71}


def _images(size: int, count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")


def _model(name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    size = SIZES.get(name, 32)
    return build_model(ModelConfig(backbone=name, weights="none", image_size=size), 3)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_family_cuts_exactly_below_its_trainable_blocks(name):
    model = _model(name)
    images = _images(model.input_shape[1])
    expected = np.asarray(model(images, training=False))
    for trainable in ("top:1", "top:3"):
        set_trainable(model, trainable)
        plan = find_cut(model, trainable, require_pretrained=False)
        assert plan.possible, plan.reason
        bottom, top = split_at_cut(model, plan)
        activations = np.asarray(bottom(images, training=False))
        assert activations.shape == (len(images), *plan.shape)
        assert plan.values_per_image == int(np.prod(plan.shape))
        np.testing.assert_array_equal(np.asarray(top(activations, training=False)), expected)
        # The top trains the model's own layers: nothing below the cut is in it.
        top_weights = {id(w) for w in top.trainable_weights}
        assert top_weights == {id(w) for w in model.trainable_weights}
        assert bottom.trainable_weights == []


def test_shared_layers_so_training_the_top_trains_the_model():
    model = _model("mobilenet_v3_small")
    set_trainable(model, "top:2")
    plan = find_cut(model, "top:2", require_pretrained=False)
    bottom, top = split_at_cut(model, plan)
    images = _images(32)
    activations = np.asarray(bottom(images, training=False))
    top.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = np.asarray(model(images, training=False))
    top.fit(activations, np.array([0, 1, 2]), epochs=2, verbose=0)
    after = np.asarray(model(images, training=False))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(np.asarray(top(activations, training=False)), after, atol=1e-6)
    # The bottom did not move: the cached activations are still what it computes.
    np.testing.assert_array_equal(np.asarray(bottom(images, training=False)), activations)


@pytest.mark.parametrize(
    ("trainable", "words"),
    [("head", "last layer"), ("all", "Everything trains")],
)
def test_head_and_everything_have_no_cut(trainable, words):
    model = _model("mobilenet_v3_small")
    set_trainable(model, trainable)
    plan = find_cut(model, trainable, require_pretrained=False)
    assert not plan.possible and words in plan.reason
    assert plan.values_per_image == 0
    with pytest.raises(ValueError, match="no cut"):
        split_at_cut(model, plan)


def test_random_weights_are_not_cut_for_training():
    model = _model("mobilenet_v3_small")
    set_trainable(model, "top:1")
    plan = find_cut(model, "top:1")
    assert not plan.possible and "random weights" in plan.reason


def test_too_many_blocks_is_refused_with_the_allowed_range():
    model = _model("mobilenet_v3_small")
    with pytest.raises(ValueError, match=r"between 1 and \d+.*top:99"):
        find_cut(model, "top:99", require_pretrained=False)
