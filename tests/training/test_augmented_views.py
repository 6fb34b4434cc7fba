"""Augmentation on the fast path: K augmented views of each training image embedded once.

Validation and test images are never augmented; each epoch draws one view per image; the
saved model is the whole network, without the augmentation (inference only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.runs.metrics import MetricsReader, epoch_events
from core.runs.store import create_run, read_best, read_summary
from core.training.feeder import ViewFeeder
from core.training.worker import run_worker
from tests.helpers.training import make_dataset, small_config

AUGMENT = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "views": 3}


def test_view_feeder_draws_one_view_of_every_image_per_epoch():
    views, images, dim = 3, 10, 2
    # views[k, i] = (k, i): a batch says which view of which image it holds.
    array = np.stack(
        [np.stack([np.full(images, k), np.arange(images)], axis=1) for k in range(views)]
    ).astype("float32")
    assert array.shape == (views, images, dim)
    targets = np.eye(images, dtype="float32")
    feeder = ViewFeeder(array, targets, batch_size=4, seed=1)
    assert len(feeder) == 3
    drawn = []
    for _epoch in range(6):
        seen = [feeder[i] for i in range(len(feeder))]
        x = np.concatenate([batch[0] for batch in seen])
        y = np.concatenate([batch[1] for batch in seen])
        # Every image exactly once per epoch, with its own target.
        assert sorted(x[:, 1].astype(int).tolist()) == list(range(images))
        assert (y.argmax(axis=1) == x[:, 1].astype(int)).all()
        drawn.append(dict(zip(x[:, 1].astype(int), x[:, 0].astype(int), strict=True)))
        feeder.on_epoch_end()
    # Different epochs draw different views; all views get used.
    assert len({tuple(sorted(d.items())) for d in drawn}) > 1
    assert {v for d in drawn for v in d.values()} == set(range(views))
    with pytest.raises(ValueError, match="Received: views of shape"):
        ViewFeeder(array, targets[:5], batch_size=4)


@pytest.mark.slow
def test_augmented_head_trains_on_cached_views_and_saves_the_whole_model(tmp_path):
    import keras

    from core.models.transfer import feature_extractor, head_of

    dataset_id = make_dataset(tmp_path, per_class=8)
    config = small_config(dataset_id, epochs=3, model={"augment": AUGMENT})
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "completed", status.message
    summary = read_summary(folder)
    assert summary["fast_path"] is True and summary["augmented_views"] == 3
    assert summary["views_reused"] is False
    phase = next(e for e in MetricsReader(folder).all() if e["type"] == "phase")
    assert phase["fast_path"] and phase["augmented_views"] == 3

    views = np.load(summary["views_cache"])
    plain = np.load(summary["embedding_cache"])

    def names(path: str) -> list[str]:
        return json.loads(Path(path).with_suffix(".json").read_text())["images"]

    train_names = names(summary["views_cache"])
    assert views.shape == (3, summary["num_train"], plain.shape[1])
    assert len(train_names) == summary["num_train"]
    # The views are augmented: they differ from each other and from the plain embeddings.
    plain_names = names(summary["embedding_cache"])
    train_plain = plain[[plain_names.index(n) for n in train_names]]

    # (Random weights give tiny features: compare relative to their scale.)
    def differ(a, b) -> bool:
        return float(np.abs(a - b).max()) > 1e-2 * float(np.abs(b).max())

    assert differ(views[0], views[1]) and differ(views[0], train_plain)
    assert not differ(train_plain, train_plain.copy())

    # Validation ran on un-augmented embeddings: the saved model's val accuracy (scored on
    # plain embeddings) is the best epoch's as Keras measured it during training.
    assert summary["val_accuracy"] == pytest.approx(read_best(folder)["val_accuracy"], abs=1e-6)
    assert len(epoch_events(MetricsReader(folder).all())) == 3

    # The saved model is the whole network for inference: the training-time augmentation is
    # left out of it, so predictions are deterministic.
    model = keras.saving.load_model(folder / "model.keras")
    assert "augmentation" not in [layer.name for layer in model.layers]
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    first, second = model.predict(images, verbose=0), model.predict(images, verbose=0)
    np.testing.assert_allclose(first, second, atol=1e-6)
    through_features = head_of(model).predict(feature_extractor(model).predict(images, verbose=0))
    np.testing.assert_allclose(first, through_features, atol=1e-5)

    # A second run with the same settings reuses the views.
    again = create_run(config)
    assert run_worker(again).state == "completed"
    assert read_summary(again)["views_reused"] is True
