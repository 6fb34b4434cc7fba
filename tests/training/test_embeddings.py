"""The frozen-backbone fast path: cached embeddings, and a saved model that matches them."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import ModelConfig
from core.data.image_cache import build_image_cache
from core.runs.store import create_run, read_summary
from core.training.embeddings import compute_embeddings, embedding_key, weights_identity
from core.training.worker import run_worker
from tests.helpers.training import make_dataset, small_config


@pytest.mark.slow
def test_fast_path_model_predicts_like_full_model_on_its_own_embeddings(tmp_path):
    from core.data.store import load_dataset
    from core.models.model_io import load_model
    from core.models.transfer import feature_extractor, head_of

    # Pretrained EfficientNet-Lite0 (bundled, offline) at 64 px gives informative features.
    dataset_id = make_dataset(tmp_path, per_class=10)
    config = small_config(
        dataset_id,
        model={"backbone": "efficientnet_lite0", "weights": "imagenet", "image_size": 64},
        epochs=3,
        learning_rate=0.01,
    )
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "completed", status.message
    summary = read_summary(folder)
    assert summary["fast_path"] is True and summary["embedding_reused"] is False

    dataset = load_dataset(dataset_id)
    images = [str(v) for v in dataset.manifest["image"]]
    cache = build_image_cache(dataset.dir, images, dataset.fingerprint, 64)
    val_rows = cache.rows(list(dataset.frame("val")["image"]))
    pixels = np.asarray(cache.array[val_rows], dtype="float32")

    model, labels = load_model(folder / "model.keras")
    assert labels == dataset.classes
    full = model.predict(pixels, verbose=0)
    # The same saved model, computing the embeddings itself and feeding its own head ...
    own = head_of(model).predict(feature_extractor(model).predict(pixels, verbose=0), verbose=0)
    # ... and the head on the cached embeddings the run trained on.
    cached = np.load(summary["embedding_cache"])[val_rows]
    on_cache = head_of(model).predict(cached, verbose=0)
    np.testing.assert_allclose(full, own, atol=1e-5)
    np.testing.assert_allclose(full, on_cache, atol=1e-4)
    assert full.argmax(1).tolist() == on_cache.argmax(1).tolist()
    # It learned something real (3 shapes, chance is 1/3).
    assert summary["best_val_accuracy"] > 0.5

    # A second run with the same dataset, backbone, size and weights reuses the embeddings.
    again = create_run(config.replace(epochs=1, learning_rate=0.02))
    assert run_worker(again).state == "completed"
    assert read_summary(again)["embedding_reused"] is True


def test_embedding_key_separates_what_changes_the_features(tmp_path):
    base = ModelConfig(backbone="mobilenet_v2", weights="none", image_size=64)
    key = embedding_key("fp", base, seed=1)
    assert key == embedding_key("fp", base, seed=1)
    assert key != embedding_key("fp", base, seed=2)  # random init depends on the seed
    assert key != embedding_key("fp2", base, seed=1)
    assert key != embedding_key(
        "fp", ModelConfig(backbone="mobilenet_v2", weights="none", image_size=96), seed=1
    )
    assert key != embedding_key(
        "fp",
        ModelConfig(backbone="mobilenet_v2", weights="none", image_size=64, pooling="max"),
        seed=1,
    )
    imagenet = ModelConfig(backbone="mobilenet_v2", weights="imagenet", image_size=64)
    assert embedding_key("fp", imagenet, 1) == embedding_key("fp", imagenet, 2)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"abc")
    from_file = ModelConfig(backbone="mobilenet_v2", weights=str(weights), image_size=64)
    first = weights_identity(from_file, 0)
    weights.write_bytes(b"abd")
    assert weights_identity(from_file, 0) != first


@pytest.mark.slow
def test_both_embedding_methods_agree():
    import keras

    from core.models.transfer import build_model, feature_extractor

    keras.utils.set_random_seed(0)
    model = build_model(
        ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=32), 2
    )
    extractor = feature_extractor(model)
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    batches = compute_embeddings(extractor, images, batch_size=4, method="batches")
    predicted = compute_embeddings(extractor, images, batch_size=4, method="predict")
    assert batches.shape == (10, extractor.output_shape[-1])
    np.testing.assert_allclose(batches, predicted, atol=1e-5)
    with pytest.raises(ValueError, match="method must be one of"):
        compute_embeddings(extractor, images, method="jit")
