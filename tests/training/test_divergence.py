"""A loss that explodes without ever becoming NaN is reported, with what to do."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from core.training.callbacks import DivergenceWatch
from core.training.context import DIVERGENCE_NOTE_START, divergence_message


def _fit(learning_rate: float, epochs: int = 4) -> tuple[list[float], list[str]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 3)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.CategoricalCrossentropy()
    )
    notes: list[str] = []
    history = model.fit(
        x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[DivergenceWatch(notes.append)]
    )
    return history.history["loss"], notes


def test_a_finite_but_exploding_loss_is_reported_once_with_what_to_do():
    losses, notes = _fit(30.0)
    assert all(math.isfinite(loss) for loss in losses)  # NaN guards never fire on this
    assert max(losses) > 3 * math.log(3)
    (note,) = notes
    assert note.startswith(DIVERGENCE_NOTE_START)
    assert "learning rate (30)" in note and "3 to 10 times lower" in note


def test_ordinary_training_is_not_reported():
    losses, notes = _fit(1e-2)
    assert losses[-1] < losses[0]
    assert notes == []


def test_a_loss_that_grows_tenfold_above_chance_is_reported():
    notes: list[str] = []
    watch = DivergenceWatch(notes.append)
    watch.set_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    for epoch, loss in enumerate([0.6, 0.05, 0.04, 0.9]):
        watch.on_epoch_end(epoch, {"loss": loss})
    (note,) = notes
    assert "epoch 4" in note and "lowest so far 0.04" in note


def test_factors_are_validated():
    with pytest.raises(ValueError, match="chance_factor=1"):
        DivergenceWatch(print, chance_factor=1)


def test_the_message_without_a_learning_rate():
    text = divergence_message(3, 1e4, 1.0, 0.69, None)
    assert "epoch 3" in text and "The learning rate is probably too high" in text
