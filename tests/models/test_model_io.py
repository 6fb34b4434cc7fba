"""Saving and loading models with their labels; unsafe and broken files are refused."""

from __future__ import annotations

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
