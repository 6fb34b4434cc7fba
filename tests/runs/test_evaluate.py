"""Evaluation: numbers equal scikit-learn's on a known prediction set; a real run evaluates
consistently with its model; the cache follows relabels; the CLI prints one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import classification_report
from sklearn.metrics import confusion_matrix as sk_confusion

from core.runs.evaluate import EvaluationResult, cell_predictions, compute_metrics, top_losses
from tests.helpers.runs import make_dataset, make_run, subprocess_env

# A known prediction set: 10 images, 3 classes, 6 right.
Y_TRUE = ["cat", "cat", "cat", "cat", "dog", "dog", "dog", "bird", "bird", "bird"]
Y_PRED = ["cat", "cat", "dog", "bird", "dog", "dog", "cat", "bird", "bird", "dog"]
LABELS = ["bird", "cat", "dog"]


def test_metrics_match_scikit_learn_and_hand_counts():
    metrics = compute_metrics(Y_TRUE, Y_PRED, LABELS)
    assert metrics["accuracy"] == pytest.approx(0.6)
    # rows = true, columns = predicted, in LABELS order (counted by hand).
    assert metrics["confusion_matrix"] == [[2, 0, 1], [1, 2, 1], [0, 1, 2]]
    assert metrics["confusion_matrix"] == sk_confusion(Y_TRUE, Y_PRED, labels=LABELS).tolist()
    report = classification_report(Y_TRUE, Y_PRED, labels=LABELS, output_dict=True)
    for label in LABELS:
        row = metrics["per_class"][label]
        assert row["precision"] == pytest.approx(report[label]["precision"])
        assert row["recall"] == pytest.approx(report[label]["recall"])
        assert row["f1"] == pytest.approx(report[label]["f1-score"])
        assert row["support"] == report[label]["support"]
    assert metrics["per_class"]["cat"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["cat"]["recall"] == pytest.approx(2 / 4)
    assert metrics["per_class"]["bird"]["precision"] == pytest.approx(2 / 3)
    assert metrics["macro_avg"]["f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert metrics["weighted_avg"]["recall"] == pytest.approx(report["weighted avg"]["recall"])


def test_metrics_keep_label_order_and_unpredicted_classes():
    metrics = compute_metrics(["a", "a"], ["a", "a"], ["z", "a"])
    assert list(metrics["per_class"]) == ["z", "a"]
    assert metrics["confusion_matrix"] == [[0, 0], [0, 2]]
    assert metrics["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="same length"):
        compute_metrics(["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="Missing"):
        compute_metrics(["a"], ["c"], ["a", "b"])


def test_cells_and_top_losses_order():
    records = [
        {"true": "a", "predicted": "b", "confidence": 0.6, "loss": 1.2, "correct": False},
        {"true": "a", "predicted": "b", "confidence": 0.9, "loss": 2.5, "correct": False},
        {"true": "a", "predicted": "a", "confidence": 0.7, "loss": 0.3, "correct": True},
        {"true": "b", "predicted": "a", "confidence": 0.8, "loss": 1.9, "correct": False},
    ]
    assert [r["confidence"] for r in cell_predictions(records, "a", "b")] == [0.9, 0.6]
    assert cell_predictions(records, "b", "b") == []
    assert [r["loss"] for r in top_losses(records, 2)] == [2.5, 1.9]
    assert len(top_losses(records, 10, wrong_only=False)) == 4


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_STUDIO_HOME", str(root))
        dataset_id = make_dataset(tmp_path_factory.mktemp("source"))
        run_dir = make_run(dataset_id)
    return root, dataset_id, run_dir


@pytest.fixture
def run(shared, monkeypatch):
    root, dataset_id, run_dir = shared
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(root))
    return dataset_id, run_dir


def test_evaluate_real_run_is_consistent_with_its_model(run):
    from core.data.store import load_dataset
    from core.runs.evaluate import evaluate
    from core.runs.predict import load_batch, load_run_model

    dataset_id, run_dir = run
    result = evaluate(run_dir, "val", use_cache=False)
    dataset = load_dataset(dataset_id)
    frame = dataset.frame("val")
    assert result.n == len(frame) > 0
    assert result.labels == dataset.classes
    matrix = np.array(result.confusion_matrix)
    assert matrix.sum() == result.n
    assert result.accuracy == pytest.approx(np.trace(matrix) / result.n)
    assert sum(row["support"] for row in result.per_class.values()) == result.n

    # Every record agrees with a direct forward pass of the model.
    opened = load_run_model(run_dir)
    probabilities = opened.predict(load_batch(dataset.paths("val"), opened.image_size))
    predicted = [opened.labels[i] for i in probabilities.argmax(axis=1)]
    assert [r["predicted"] for r in result.predictions] == predicted
    assert [r["true"] for r in result.predictions] == list(frame["label"])
    np.testing.assert_allclose(
        [r["confidence"] for r in result.predictions], probabilities.max(axis=1), atol=1e-5
    )
    for record in result.predictions:
        assert record["loss"] == pytest.approx(-np.log(max(record["true_probability"], 1e-7)))
        assert (dataset.dir / record["image"]).exists()

    # Same numbers from scikit-learn over the records.
    assert (
        result.to_dict()["per_class"]
        == compute_metrics([r["true"] for r in result.predictions], predicted, result.labels)[
            "per_class"
        ]
    )
    assert EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_cache_is_reused_and_follows_a_relabel(run):
    from core.data.edits import relabel_images
    from core.runs.evaluate import cache_path, evaluate

    dataset_id, run_dir = run
    first = evaluate(run_dir, "test")
    assert cache_path(run_dir, "test").exists()
    assert evaluate(run_dir, "test") == first

    image = first.predictions[0]["image"]
    relabel_images(dataset_id, [image], "brand-new-class")
    try:
        second = evaluate(run_dir, "test")
        assert "brand-new-class" in second.labels
        assert second.labels[: len(first.labels)] == first.labels
        assert second.per_class["brand-new-class"]["support"] == 1
        changed = next(r for r in second.predictions if r["image"] == image)
        assert changed["true"] == "brand-new-class" and not changed["correct"]
    finally:
        relabel_images(dataset_id, [image], first.predictions[0]["true"])


def test_bad_split_and_missing_model_are_clear(run, tmp_path):
    from core.runs.evaluate import evaluate

    _, run_dir = run
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(run_dir, "train")
    with pytest.raises(FileNotFoundError, match="No run folder"):
        evaluate(tmp_path / "nope", "val")


def test_cli_prints_one_json_object(run, shared):
    root, _, run_dir = shared
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "evaluate",
            "--run",
            str(run_dir),
            "--split",
            "val",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    for key in ("accuracy", "labels", "per_class", "confusion_matrix"):
        assert key in data
    assert set(data["per_class"][data["labels"][0]]) == {"precision", "recall", "f1", "support"}
    assert len(data["confusion_matrix"]) == len(data["labels"])

    bad = subprocess.run(
        [sys.executable, "-m", "core", "evaluate", "--run", "no-such-run", "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(root),
        timeout=300,
    )
    assert bad.returncode == 2 and "no-such-run" in bad.stderr


def test_most_confused_cell_and_fallback():
    from core.runs.evaluate import most_confused

    assert most_confused(LABELS, [[2, 0, 1], [1, 2, 3], [0, 1, 2]]) == ("cat", "dog")
    assert most_confused(["a", "b"], [[3, 0], [0, 5]]) == ("b", "b")


def test_figures_and_tables():
    from ui.evaluate_figures import (
        CELL_SELECTION,
        confusion_spec,
        per_class_frame,
        probability_figure,
        selected_cell,
    )

    matrix = [[2, 0, 1], [1, 2, 1], [0, 1, 2]]
    data, spec = confusion_spec(LABELS, matrix, highlight=("cat", "dog"))
    # One row per cell, row by row: x = predicted, y = true.
    assert list(zip(data["true"], data["predicted"], strict=True))[5] == ("cat", "dog")
    assert data["count"].tolist() == [n for row in matrix for n in row]
    np.testing.assert_allclose(data["share"].to_numpy()[3:6], [0.25, 0.5, 0.25])
    assert data["chosen"].tolist() == [i == 5 for i in range(9)]  # the outlined cell
    cells, counts = spec["layer"]
    assert cells["params"][0]["name"] == CELL_SELECTION
    assert cells["params"][0]["select"] == {"type": "point", "fields": ["true", "predicted"]}
    assert cells["encoding"]["x"]["sort"] == LABELS and cells["encoding"]["y"]["sort"] == LABELS
    assert counts["encoding"]["text"]["field"] == "count"

    bars = probability_figure({"a": 0.1, "b": 0.7, "c": 0.2}, k=2).data[0]
    assert list(bars.y) == ["c", "b"] and list(bars.x) == [0.2, 0.7]  # best on top

    frame = per_class_frame(compute_metrics(Y_TRUE, Y_PRED, LABELS)["per_class"])
    assert frame["class"].tolist() == LABELS and frame["support"].sum() == 10

    event = {"selection": {CELL_SELECTION: [{"true": "cat", "predicted": "dog"}]}}
    assert selected_cell(event, LABELS) == ("cat", "dog")
    assert selected_cell({"selection": {CELL_SELECTION: []}}, LABELS) is None
    assert (
        selected_cell(
            {"selection": {CELL_SELECTION: [{"true": "cow", "predicted": "dog"}]}}, LABELS
        )
        is None
    )
    assert selected_cell({"selection": {CELL_SELECTION: ["cat"]}}, LABELS) is None
    assert selected_cell(None, LABELS) is None


def test_a_recorded_evaluation_answers_like_the_model(run):
    from core.data.store import load_dataset
    from core.runs.evaluate import evaluate, record_evaluation
    from core.runs.predict import load_batch, load_run_model

    dataset_id, run_dir = run
    dataset = load_dataset(dataset_id)
    frame = dataset.frame("val")
    opened = load_run_model(run_dir)
    probabilities = opened.predict(load_batch(dataset.paths("val"), opened.image_size))
    stored = record_evaluation(
        run_dir,
        "val",
        dataset_dir=dataset.dir,
        images=list(frame["image"]),
        truths=list(frame["label"]),
        probabilities=probabilities,
    )

    def no_model():
        raise AssertionError("a recorded evaluation must answer without the model")

    assert evaluate(run_dir, "val", run_model=no_model) == stored
    assert stored == evaluate(run_dir, "val", use_cache=False)

    # Rows the run did not score (a relabel since) are not answered from the record.
    changed = list(frame["label"])
    changed[0] = "some-other-class"
    record_evaluation(
        run_dir,
        "val",
        dataset_dir=dataset.dir,
        images=list(frame["image"]),
        truths=changed,
        probabilities=probabilities,
    )
    assert evaluate(run_dir, "val") == stored

    with pytest.raises(ValueError, match="Received: 1 images, 1 labels, probabilities of shape"):
        record_evaluation(
            run_dir,
            "val",
            dataset_dir=dataset.dir,
            images=["a.jpg"],
            truths=["a"],
            probabilities=np.zeros((2, 2)),
        )
