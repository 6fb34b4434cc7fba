"""Fast fine-tuning: ``top:N`` phases train on the frozen bottom's cached activations.

Real runs through the worker on small generated images, with a pretrained backbone given as
a weights file the test writes itself (no network).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import AugmentConfig
from core.runs.metrics import MetricsReader
from core.runs.store import read_summary
from core.training.activations import (
    BUDGET_ENV,
    budget_bytes,
    cache_bytes,
    cached_activations,
    describe_bytes,
)
from core.training.out_of_memory import MIN_BATCH_SIZE, smaller_batch
from tests.helpers.training import (
    BACKBONE,
    check_recorded_evaluations,
    make_dataset,
    small_config,
    worker_log,
)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Backbone weights saved by the test: a 'pretrained' backbone without a download."""
    from core.models.transfer import build_backbone

    path = tmp_path_factory.mktemp("weights") / f"{BACKBONE}.weights.h5"
    build_backbone(BACKBONE, 32, "none").save_weights(str(path))
    return str(path)


def _run(tmp_path, weights_file, dataset=None, **changes):
    from core.runs.store import create_run
    from core.training.worker import run_worker

    model = {"weights": weights_file, **changes.pop("model", {})}
    config = small_config(
        dataset or make_dataset(tmp_path, per_class=8),
        model=model,
        epochs=1,
        fine_tune_epochs=2,
        fine_tune_trainable="top:2",
        **changes,
    )
    folder = create_run(config)
    status = run_worker(folder)
    assert status.state == "completed", status.message + worker_log(folder)
    return folder, read_summary(folder)


def _phase_events(folder):
    return [e for e in MetricsReader(folder).all() if e["type"] == "phase"]


@pytest.mark.slow
def test_top_blocks_train_on_cached_activations_and_the_saved_model_agrees(tmp_path, weights_file):
    folder, summary = _run(tmp_path, weights_file)
    phases = _phase_events(folder)
    assert [p["fast_finetune"] for p in phases] == [False, True]
    assert "run once" in phases[1]["fast_finetune_reason"]
    assert summary["fast_finetune"] is True
    notes = [e["message"] for e in MetricsReader(folder).all() if e["type"] == "note"]
    assert any(n.startswith("Fast fine-tuning: the frozen layers run once") for n in notes)
    assert any("MB on disk" in n for n in notes), notes
    assert summary["activation_reused"] is False
    assert summary["activation_dtype"] in ("float16", "float32")
    cache = folder.parent.parent / "cache" / "activations"
    stored = list(cache.iterdir())
    assert [p.name for p in stored] == [summary["activation_cache"].rsplit("/", 1)[-1]]
    epochs = [e for e in MetricsReader(folder).all() if e["type"] == "epoch"]
    assert [e["fast_finetune"] for e in epochs] == [False, True, True]
    # The metrics the cached top reported at the best epoch are those of the saved full
    # model scored on the real validation images.
    assert summary["val_accuracy"] == pytest.approx(summary["best_val_accuracy"])
    assert summary["val_loss"] == pytest.approx(summary["metrics"]["val_loss"], rel=0.02)
    # The run scored val and test through the cut; the saved file, loaded and run whole on
    # the images, gives the same accuracies.
    # The scores are recorded for the Evaluate page (float16 activations: within 0.02).
    check_recorded_evaluations(folder, summary, confidence_tolerance=0.02)

    # A second run of the same settings reuses the cache; a truncated cache is rebuilt.
    dataset = json.loads((folder / "config.json").read_text())["dataset"]
    _, again = _run(tmp_path, weights_file, dataset=dataset)
    assert again["activation_reused"] is True
    train_file = next(p for p in stored[0].iterdir() if p.name == "train.npy")
    train_file.write_bytes(train_file.read_bytes()[:100])
    _, rebuilt = _run(tmp_path, weights_file, dataset=dataset)
    assert rebuilt["activation_reused"] is False and rebuilt["fast_finetune"] is True


@pytest.mark.slow
def test_augmented_views_are_cached_at_the_cut(tmp_path, weights_file):
    augment = AugmentConfig(flip="horizontal", rotation=0.1, views=2)
    folder, summary = _run(tmp_path, weights_file, model={"augment": augment})
    assert summary["activation_views"] == 2
    assert _phase_events(folder)[1]["fast_finetune"] is True


@pytest.mark.slow
def test_a_cache_over_the_budget_trains_the_whole_network_and_says_why(
    tmp_path, weights_file, monkeypatch
):
    monkeypatch.setenv(BUDGET_ENV, "0")
    folder, summary = _run(tmp_path, weights_file)
    phase = _phase_events(folder)[1]
    assert phase["fast_finetune"] is False
    assert "more than the 0.0 MB allowed" in phase["fast_finetune_reason"]
    notes = [e["message"] for e in MetricsReader(folder).all() if e["type"] == "note"]
    assert any(n.startswith("No fast fine-tuning: caching the frozen") for n in notes), notes
    assert "fast_finetune" not in summary or summary["fast_finetune"] is False
    assert not (folder.parent.parent / "cache" / "activations").exists()


def test_budget_and_sizes_in_words(monkeypatch):
    assert cache_bytes(7 * 7 * 160, 1000, 200) == 7 * 7 * 160 * 1200 * 2
    assert cache_bytes(10, 100, 20, views=4, itemsize=4) == 10 * 420 * 4
    assert describe_bytes(3 * 1024**2) == "3.0 MB"
    assert describe_bytes(int(1.5 * 1024**3)) == "1.5 GB"
    monkeypatch.setenv(BUDGET_ENV, "12")
    assert budget_bytes() == 12 * 1024**2
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="Received: 'lots'"):
        budget_bytes()


def test_an_empty_validation_split_is_cached_too():
    import keras

    bottom = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3)])
    top = keras.Sequential(
        [keras.Input((2, 2, 2)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    images = np.random.default_rng(0).uniform(0, 255, (5, 4, 4, 3)).astype("float32")
    names = [f"i{i}" for i in range(5)]
    cache = cached_activations(bottom, top, images, np.arange(5), np.arange(0), names, [], "k")
    assert cache.train.shape == (5, 2, 2, 2) and cache.val.shape == (0, 2, 2, 2)
    again = cached_activations(bottom, top, images, np.arange(5), np.arange(0), names, [], "k")
    assert again.reused
    np.testing.assert_array_equal(again.train, cache.train)


def test_out_of_memory_halves_the_batch_down_to_a_floor():
    import tensorflow as tf

    error = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert smaller_batch(error, 32) == 16
    assert smaller_batch(error, MIN_BATCH_SIZE) is None
    assert smaller_batch(ValueError("shapes do not match"), 32) is None
    wrapped = RuntimeError("fit failed")
    wrapped.__cause__ = error
    assert smaller_batch(wrapped, 9) == 4
