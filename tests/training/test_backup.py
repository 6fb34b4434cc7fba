"""AsyncBackupAndRestore: the file it writes in the background is the one Keras would write."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from core.training.backup import KERAS_VERSION, AsyncBackupAndRestore


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, size=32)


def test_pinned_to_the_installed_keras():
    # The module walks a private Keras API; a new Keras must be re-checked before it is used.
    assert keras.__version__ == KERAS_VERSION


def test_backup_has_the_layout_and_values_of_save_weights(tmp_path):
    x, y = _data()
    model = _model(1)
    backup = AsyncBackupAndRestore(tmp_path / "backup")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[backup])
    written = tmp_path / "backup" / "latest.weights.h5"
    assert written.is_file()
    reference = tmp_path / "reference.weights.h5"
    model.save_weights(str(reference))

    def datasets(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj: (
                    found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            epoch = f.attrs.get(AsyncBackupAndRestore.EPOCH_ATTR)
        return found, epoch

    ours, epoch = datasets(written)
    theirs, _ = datasets(reference)
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    assert int(epoch) == 2


def test_restore_continues_after_the_backed_up_epoch(tmp_path):
    x, y = _data()
    first = _model(2)
    first.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[AsyncBackupAndRestore(tmp_path / "b")]
    )
    second = _model(3)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    # Same backup folder: the second fit restores the weights and starts after epoch 3.
    second.fit(
        x,
        y,
        epochs=5,
        batch_size=8,
        verbose=0,
        callbacks=[AsyncBackupAndRestore(tmp_path / "b"), record],
    )
    assert seen == [3, 4]


def test_write_failure_is_raised_not_lost(tmp_path):
    x, y = _data()
    model = _model(4)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    backup = AsyncBackupAndRestore(blocker / "backup")
    with pytest.raises(OSError):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[backup])
