"""Saving and loading models with their labels; unsafe and broken files are refused."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

from core.config import AugmentConfig, ModelConfig
from core.models.model_io import (
    METADATA_ENTRY,
    ModelFileError,
    load_model,
    read_model_metadata,
    save_model,
)
from core.models.transfer import build_model

LABELS = ["circle", "square", "triangle"]


def _images(size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")


@pytest.fixture
def model():
    config = ModelConfig(
        backbone="mobilenet_v3_small",
        weights="none",
        image_size=32,
        dense_units=(8,),
        augment=AugmentConfig(flip="horizontal", rotation=0.1, shear=0.1, brightness=0.1),
    )
    return build_model(config, len(LABELS))


def test_round_trip_keeps_outputs_labels_and_metadata(model, tmp_path):
    out = tmp_path / "run"
    path = save_model(model, out / "model.keras", labels=LABELS, extra={"run_id": "r1"})
    assert sorted(p.name for p in out.iterdir()) == ["model.keras"]  # no temp left
    loaded, labels = load_model(path)
    assert labels == LABELS
    images = _images()
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    # Saved as the inference graph: the training-only augmentation is not in the file.
    expected = [layer.name for layer in model.layers if layer.name != "augmentation"]
    assert [layer.name for layer in loaded.layers] == expected
    meta = read_model_metadata(path)
    assert meta["labels"] == LABELS
    assert meta["backbone"] == "mobilenet_v3_small"
    assert meta["image_size"] == 32
    assert meta["preprocessing"] == "tf"
    assert meta["num_classes"] == 3
    assert meta["extra"] == {"run_id": "r1"}
    assert meta["keras_version"] == keras.__version__


def test_plain_keras_still_loads_the_file(model, tmp_path):
    path = save_model(model, tmp_path / "model.keras", labels=LABELS)
    with zipfile.ZipFile(path) as archive:
        assert METADATA_ENTRY in archive.namelist()
    plain = keras.saving.load_model(str(path), safe_mode=True)
    assert plain.output_shape == (None, 3)


def test_save_replaces_an_existing_file_atomically(model, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "model.keras"
    path.write_bytes(b"old")
    save_model(model, path, labels=LABELS)
    assert zipfile.is_zipfile(path)
    assert sorted(p.name for p in out.iterdir()) == ["model.keras"]


def test_labels_must_match_the_outputs(model, tmp_path):
    with pytest.raises(ValueError, match="one name per model output"):
        save_model(model, tmp_path / "model.keras", labels=["a", "b"])
    with pytest.raises(ValueError, match="must end in '.keras'"):
        save_model(model, tmp_path / "model.h5", labels=LABELS)


def test_random_bytes_named_keras_are_not_a_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(ModelFileError, match="not a Keras file"):
        load_model(path)
    with pytest.raises(ModelFileError, match="not a Keras file"):
        read_model_metadata(path)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="no 'config.json'"):
        load_model(other_zip)


def test_safe_mode_refuses_a_lambda_layer(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    evil = keras.Model(inputs, outputs)
    path = tmp_path / "evil.keras"
    evil.save(str(path))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelFileError, match="Lambda"):
        load_model(path)


def test_plain_keras_file_uses_labels_txt_beside_it(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(str(path))
    with pytest.raises(ModelFileError, match="no class labels"):
        load_model(path)
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    _, labels = load_model(path)
    assert labels == LABELS


def _tiny_keras(path) -> None:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(hidden)
    keras.Model(inputs, outputs).save(str(path))
    path.with_name("labels.txt").write_text("a\nb\n")


def _rewrite_config(path, change) -> None:
    """Rewrites ``config.json`` inside a ``.keras`` zip with ``change(config)``."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    change(config)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _layer(config, name):
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


@pytest.mark.parametrize(
    "module, function",
    [("os", "system"), ("builtins", "exec"), ("subprocess", "getoutput")],
)
def test_a_config_naming_a_foreign_callable_is_refused_before_keras_reads_it(
    tmp_path, module, function
):
    path = tmp_path / "model.keras"
    _tiny_keras(path)
    hostile = {"module": module, "class_name": "function", "config": function}
    _rewrite_config(path, lambda c: _layer(c, "hidden")["config"].update(activation=hostile))
    with pytest.raises(ModelFileError, match="Refused to load model.keras"):
        load_model(path)


def test_a_lookup_layer_reading_a_file_is_refused(tmp_path):
    path = tmp_path / "model.keras"
    _tiny_keras(path)
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")

    def add_lookup(config):
        hidden = _layer(config, "hidden")
        hidden.update(
            module="keras.layers",
            class_name="StringLookup",
            config={"name": "hidden", "vocabulary": str(secret)},
        )

    _rewrite_config(path, add_lookup)
    with pytest.raises(ModelFileError, match="StringLookup object"):
        load_model(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c.update(config=[1, 2, 3]),
        lambda c: c["config"].update(layers="not a list"),
        lambda c: _layer(c, "hidden")["config"].update(units="three"),
    ],
)
def test_a_config_keras_cannot_make_sense_of_is_one_model_file_error(tmp_path, damage):
    path = tmp_path / "model.keras"
    _tiny_keras(path)
    _rewrite_config(path, damage)
    with pytest.raises(ModelFileError, match="could not be loaded as a Keras model"):
        load_model(path)


def test_damaged_metadata_and_an_oversized_config_are_refused(tmp_path):
    path = tmp_path / "model.keras"
    _tiny_keras(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("metadata.json.bak", b"")
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["metadata.json"] = b"[1, 2"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="metadata.json is damaged"):
        read_model_metadata(path)

    big = tmp_path / "big.keras"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (17 * 1024 * 1024))
    with pytest.raises(ModelFileError, match="refused unread"):
        load_model(big)
