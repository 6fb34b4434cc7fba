"""Small cached arrays feed ``fit`` from memory through one endless tf.data pipeline."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.training.feeder import resident_dataset, resident_fit_inputs, steps_per_epoch


def _epochs(dataset, steps: int, epochs: int) -> list[list[tuple[np.ndarray, ...]]]:
    """``epochs`` epochs of ``steps`` batches, read from one iterator as ``fit`` does."""
    iterator = iter(dataset)
    return [
        [tuple(np.asarray(part) for part in next(iterator)) for _ in range(steps)]
        for _ in range(epochs)
    ]


def test_every_epoch_holds_every_image_once_in_a_new_order_with_its_target_and_weight():
    images = 10
    rows = np.arange(images, dtype="float16")[:, None] * np.ones((1, 3), "float16")
    targets = np.eye(images, dtype="float32")
    weights = np.arange(images, dtype="float32") / 10
    dataset = resident_dataset(
        rows, targets, batch_size=4, shuffle=True, seed=3, sample_weights=weights
    )
    steps = steps_per_epoch(images, 4)
    assert steps == 3
    orders = []
    for epoch in _epochs(dataset, steps, epochs=4):
        assert [len(batch[0]) for batch in epoch] == [4, 4, 2]  # the last batch is shorter
        x = np.concatenate([batch[0] for batch in epoch])
        y = np.concatenate([batch[1] for batch in epoch])
        w = np.concatenate([batch[2] for batch in epoch])
        assert x.dtype == np.float32
        index = x[:, 0].astype(int)
        assert sorted(index.tolist()) == list(range(images))
        assert (y.argmax(axis=1) == index).all()
        np.testing.assert_allclose(w, index / 10, rtol=1e-6)
        orders.append(tuple(index))
    assert len(set(orders)) > 1  # reshuffled between epochs


def test_without_shuffle_the_order_is_the_array_order_every_epoch():
    rows = np.arange(5, dtype="float32")[:, None]
    dataset = resident_dataset(rows, np.eye(5, dtype="float32"), batch_size=256)
    for epoch in _epochs(dataset, 1, epochs=3):
        np.testing.assert_array_equal(epoch[0][0][:, 0], np.arange(5))


def test_views_draw_one_view_per_image_per_epoch_and_the_same_seed_draws_the_same():
    views, images = 3, 12
    # views[k, i] = (k, i): a batch says which view of which image it holds.
    array = np.stack(
        [np.stack([np.full(images, k), np.arange(images)], axis=1) for k in range(views)]
    ).astype("float16")
    targets = np.eye(images, dtype="float32")

    def draws(seed: int) -> list[dict[int, int]]:
        dataset = resident_dataset(
            array, targets, batch_size=5, shuffle=True, seed=seed, views=True
        )
        out = []
        for epoch in _epochs(dataset, steps_per_epoch(images, 5), epochs=6):
            x = np.concatenate([batch[0] for batch in epoch]).astype(int)
            y = np.concatenate([batch[1] for batch in epoch])
            assert sorted(x[:, 1].tolist()) == list(range(images))
            assert (y.argmax(axis=1) == x[:, 1]).all()
            out.append(dict(zip(x[:, 1].tolist(), x[:, 0].tolist(), strict=True)))
        return out

    first = draws(seed=7)
    assert len({tuple(sorted(d.items())) for d in first}) > 1
    assert {v for d in first for v in d.values()} == set(range(views))
    assert draws(seed=7) == first


def test_an_array_over_the_budget_or_mismatched_targets_is_not_fed_from_memory():
    rows = np.zeros((8, 4), "float32")
    assert resident_dataset(rows, np.eye(8, dtype="float32"), 4, max_bytes=rows.nbytes - 1) is None
    with pytest.raises(ValueError, match="does not match 5 targets"):
        resident_dataset(rows, np.eye(5, dtype="float32"), 4)


def test_fit_on_it_equals_fit_on_the_same_batches_as_arrays():
    # No shuffle: both see the same batches in the same order, so the weights agree.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 20)]

    def trained(**inputs) -> list[np.ndarray]:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
        model.fit(**inputs, epochs=3, verbose=0)
        return model.get_weights()

    fed = resident_dataset(x, y, batch_size=8)
    ours = trained(x=fed, steps_per_epoch=steps_per_epoch(20, 8), shuffle=False)
    plain = trained(x=x, y=y, batch_size=8, shuffle=False)
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_inputs_count_the_steps_of_both_splits_and_cover_every_validation_image():
    train, val = np.zeros((20, 4), "float32"), np.arange(300, dtype="float32")[:, None]
    inputs, steps = resident_fit_inputs(
        train,
        np.eye(2, dtype="float32")[[0, 1] * 10],
        val,
        np.eye(2, dtype="float32")[[0] * 300],
        8,
        seed=0,
    )
    assert steps == inputs["steps_per_epoch"] == 3
    assert inputs["validation_steps"] == 2 and inputs["shuffle"] is False
    # Keras makes a new validation iterator at every epoch: the feed is one epoch long.
    validation = inputs["validation_data"]
    assert int(validation.cardinality()) == inputs["validation_steps"]
    seen = [_epochs(validation, inputs["validation_steps"], epochs=1)[0] for _ in range(2)]
    for epoch in seen:
        assert [len(batch[0]) for batch in epoch] == [256, 44]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in epoch])[:, 0], np.arange(300))


def test_the_feed_prepares_nothing_ahead_and_has_nothing_to_autotune():
    # Dropping an iterator with batches in flight, or with autotuning on, stalled for seconds.
    dataset = resident_dataset(np.zeros((6, 2), "float32"), np.eye(2)[[0, 1] * 3], batch_size=4)
    options = dataset.options()
    assert options.autotune.enabled is False
    assert options.experimental_optimization.inject_prefetch is False
    assert "Prefetch" not in type(dataset).__name__


def test_images_through_a_whole_network_are_validated_at_the_training_batch():
    images = np.arange(10 * 4 * 4 * 3, dtype="uint8").reshape(10, 4, 4, 3)
    targets = np.eye(2, dtype="float32")[[0, 1] * 5]
    inputs, steps = resident_fit_inputs(
        images[:6], targets[:6], images[6:], targets[6:], 3, seed=0, val_batch_size=3
    )
    assert steps == 2 and inputs["validation_steps"] == 2
    batches = list(inputs["validation_data"])
    assert [len(batch[0]) for batch in batches] == [3, 1]
    # uint8 pixels arrive as the same values in float32.
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(b[0]) for b in batches]), images[6:].astype("float32")
    )
    assert batches[0][0].dtype == "float32"
