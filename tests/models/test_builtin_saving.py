"""Saved models hold only built-in Keras layers and open in a process that cannot import us.

A fresh run trained by the real worker (augmentation on, so the training graph has the
custom-free augmentation wrapper) and a model saved the way earlier versions did (custom
``transfer_studio>Preprocess`` layer) are both checked: the first opens with plain
``keras.saving.load_model(path, safe_mode=True)`` in ``python -I`` from a temporary folder,
the second converts on load with identical predictions.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.config import AugmentConfig, ModelConfig
from tests.helpers.clean import run_clean_code
from tests.helpers.runs import custom_layer_names, save_legacy_model
from tests.helpers.training import make_dataset, small_config

LABELS = ["circle", "square", "triangle"]


def _images(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (4, size, size, 3)).astype("float32")


def _clean_predict(model_path, images_path, cwd) -> np.ndarray:
    out = run_clean_code(
        f"""
import keras, numpy as np
model = keras.saving.load_model({str(model_path)!r}, compile=False, safe_mode=True)
x = np.load({str(images_path)!r})
np.save("clean.npy", np.asarray(model(x, training=False)))
print("loaded", model.name)
""",
        cwd,
    )
    assert "loaded" in out
    return np.load(cwd / "clean.npy")


def test_fresh_run_model_loads_without_the_project(tmp_path, monkeypatch):
    from core.runs.predict import load_run_model
    from core.runs.store import create_run
    from core.training.worker import run_worker

    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path / "ws"))
    augment = AugmentConfig(flip="horizontal", rotation=0.1, shear=0.2, contrast=0.1)
    config = small_config(make_dataset(tmp_path, per_class=6), model={"augment": augment})
    folder = create_run(config)
    assert run_worker(folder).state == "completed"
    model_path = folder / "model.keras"
    assert custom_layer_names(model_path) == []

    images = _images(32)
    np.save(tmp_path / "x.npy", images)
    clean = tmp_path / "clean"
    clean.mkdir()
    theirs = _clean_predict(model_path, tmp_path / "x.npy", clean)
    ours = load_run_model(folder).predict(images)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_model_saved_the_old_way_converts_with_identical_predictions(tmp_path, mode):
    import keras

    from core.models.model_io import load_model, save_model
    from core.models.preprocessing import LegacyPreprocess
    from core.models.transfer import build_model

    keras.utils.set_random_seed(0)
    built = build_model(ModelConfig(weights="none", image_size=32, dropout=0.0), len(LABELS))
    old = save_legacy_model(built, tmp_path / "old.keras", labels=LABELS, mode=mode)
    assert "transfer_studio>Preprocess" in custom_layer_names(old)
    legacy = keras.saving.load_model(str(old), safe_mode=True)  # still readable in the app
    images = _images(32, seed=1)
    before = np.asarray(legacy(images, training=False))

    converted, labels = load_model(old)
    assert labels == LABELS
    assert "augmentation" not in [layer.name for layer in converted.layers]
    assert not isinstance(converted.get_layer("preprocess"), LegacyPreprocess)
    np.testing.assert_allclose(np.asarray(converted(images, training=False)), before, atol=1e-5)

    new = save_model(converted, tmp_path / "new.keras", labels=LABELS)
    assert custom_layer_names(new) == []
    np.save(tmp_path / "x.npy", images)
    clean = tmp_path / "clean"
    clean.mkdir()
    np.testing.assert_allclose(_clean_predict(new, tmp_path / "x.npy", clean), before, atol=1e-5)
