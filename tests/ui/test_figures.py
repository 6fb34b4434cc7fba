"""The app's pure helpers: chart builders, time estimates, run and data tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config import AugmentConfig
from core.models.estimate import estimate_epoch, seconds_per_image
from ui import figures, run_view, runs_view
from ui.data_view import group_by_folder, imbalance_message


def _history(epochs: int = 3, *, phase_switch: int | None = None) -> list[dict]:
    events = [{"type": "session"}]
    for epoch in range(1, epochs + 1):
        for step in (5, 10):
            events.append(
                {
                    "type": "batch",
                    "epoch": epoch,
                    "step": step,
                    "steps": 10,
                    "loss": 2.0 / epoch,
                    "images_per_second": 40.0 + epoch,
                }
            )
        phase = "fine-tune" if phase_switch and epoch >= phase_switch else "head"
        events.append(
            {
                "type": "epoch",
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "accuracy": 0.5 + epoch / 10,
                "val_loss": 1.2 / epoch,
                "val_accuracy": 0.4 + epoch / 10,
                "phase": phase,
            }
        )
    return events


def _points(data: pd.DataFrame, series: str) -> pd.DataFrame:
    return data[data["series"] == series]


def test_history_spec_has_train_and_validation_points_per_epoch():
    data, spec = figures.history_spec(_history(3), "accuracy")
    assert list(_points(data, "train")["epoch"]) == [1, 2, 3]
    assert list(_points(data, "validation")["value"]) == pytest.approx([0.5, 0.6, 0.7])
    curves = spec["layer"][0]
    assert curves["mark"]["type"] == "line" and curves["mark"]["point"]
    color = curves["encoding"]["color"]["scale"]
    assert color == {
        "domain": ["train", "validation"],
        "range": [figures.TRAIN_COLOR, figures.VAL_COLOR],
    }
    y = curves["encoding"]["y"]
    assert y["axis"]["format"] == ".0%" and y["scale"]["domain"] == [0, 1]
    assert spec["title"]["text"] == "Accuracy"
    assert curves["encoding"]["x"]["axis"]["tickMinStep"] == 1  # whole epochs only


def test_history_spec_keeps_the_last_record_of_a_repeated_epoch():
    events = _history(2) + [{"type": "epoch", "epoch": 2, "loss": 0.1, "val_loss": 0.2}]
    data, _ = figures.history_spec(events, "loss")
    train = _points(data, "train")
    assert list(train["epoch"]) == [1, 2]
    assert train["value"].iloc[-1] == pytest.approx(0.1)


def test_history_spec_marks_the_fine_tune_phase_above_the_plot():
    _, spec = figures.history_spec(_history(4, phase_switch=3), "loss")
    curves, rule, text = spec["layer"]
    assert rule["mark"]["type"] == "rule" and rule["data"]["values"][0]["epoch"] == 2.5
    assert text["data"]["values"][0]["label"] == "fine-tuning starts"
    # Anchored at the plot's top edge and drawn upwards: above the curves, below the title.
    assert text["encoding"]["y"] == {"value": 0} and text["mark"]["baseline"] == "bottom"
    assert spec["title"]["offset"] >= 14
    # In the plot's right half the label reads leftwards from the line: it stays in the chart.
    assert text["mark"]["align"] == "right" and text["mark"]["dx"] < 0
    _, early = figures.history_spec(_history(8, phase_switch=3), "loss")
    assert early["layer"][2]["mark"]["align"] == "left" and early["layer"][2]["mark"]["dx"] > 0
    _, plain = figures.history_spec(_history(4), "loss")
    assert len(plain["layer"]) == 1  # no phase switch, no marker


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_history_legend_is_below_the_plot_so_it_hides_no_curve_at_100_percent(metric):
    _, spec = figures.history_spec(_history(3), metric)
    legend = spec["layer"][0]["encoding"]["color"]["legend"]
    assert legend["orient"] == "bottom" and legend["title"] is None


def test_history_spec_of_a_run_without_epochs_is_empty_but_valid():
    data, spec = figures.history_spec([], "loss")
    assert data.empty and list(data.columns) == ["epoch", "value", "series"]
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == [0, 1]


def test_batch_loss_spec_places_batches_in_epoch_units():
    data, spec = figures.batch_loss_spec(_history(2))
    assert list(data["epoch"]) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert list(data["loss"]) == pytest.approx([2.0, 2.0, 1.0, 1.0])
    assert spec["encoding"]["x"]["field"] == "epoch" and spec["mark"]["type"] == "line"


def test_class_counts_frame_has_one_row_per_class_and_a_column_per_split():
    counts = pd.DataFrame(
        {"train": [7, 5, 12], "val": [2, 1, 3], "test": [1, 1, 2], "total": [10, 7, 17]},
        index=["cat", "dog", "total"],
    )
    frame = figures.class_counts_frame(counts)
    assert list(frame.columns) == ["train", "validation", "test"]
    assert list(frame.index) == ["cat", "dog"]  # the totals row is not a class
    assert frame.loc["cat"].tolist() == [7, 2, 1]
    assert len(figures.SPLIT_COLORS) == len(frame.columns)


def test_class_counts_frame_accepts_a_mapping_with_missing_splits():
    frame = figures.class_counts_frame({"a": {"train": 3}, "b": {"train": 4, "test": 1}})
    assert frame.loc["a"].tolist() == [3, 0, 0] and frame.loc["b"].tolist() == [4, 0, 1]


def test_block_diagram_greys_frozen_blocks_and_colours_the_head():
    blocks = [
        {"name": "stem", "params": 100, "trainable": False},
        {"name": "block1", "params": 2000, "trainable": False},
        {"name": "block2", "params": 3000, "trainable": True},
        {"name": "head", "params": 50, "trainable": True},
    ]
    data, spec = figures.block_diagram_spec(blocks)
    assert list(data["color"]) == [
        figures.FROZEN_COLOR,
        figures.FROZEN_COLOR,
        figures.TRAINABLE_COLOR,
        figures.HEAD_COLOR,
    ]
    assert list(data["block"]) == ["First layers", "Block 1", "Block 2", "New last layer"]
    assert list(data["state"]) == ["frozen", "frozen", "learns", "learns"]
    # Bars in input-to-output order, their colours taken as given (no legend to decode).
    assert spec["encoding"]["x"]["sort"] == {"field": "order"}
    assert spec["encoding"]["color"]["scale"] is None


def test_compare_figure_draws_one_line_per_run():
    fig = figures.compare_figure({"a": _history(2), "b": _history(3)}, "val_accuracy")
    assert [trace.name for trace in fig.data] == ["a", "b"]
    assert len(fig.data[1].x) == 3


def test_estimates_grow_with_size_and_trainable_blocks():
    small = seconds_per_image("mobilenet_v2", 160, cpu_cores=2)
    large = seconds_per_image("mobilenet_v2", 224, cpu_cores=2)
    assert large > small
    assert seconds_per_image("mobilenet_v2", 224, cpu_cores=2) == pytest.approx(1 / 114)
    head = estimate_epoch("resnet50", 224, "head", train_images=500, val_images=100)
    top = estimate_epoch("resnet50", 224, "top:4", train_images=500, val_images=100)
    everything = estimate_epoch("resnet50", 224, "all", train_images=500, val_images=100)
    assert head.later_epochs < head.first_epoch
    assert head.later_epochs < top.later_epochs < everything.later_epochs
    augmented = estimate_epoch(
        "resnet50", 224, "head", train_images=500, val_images=100, augment=True
    )
    # Head only with augmentation stays on the fast path: a longer first pass (4 augmented
    # copies of each training image embedded once), then epochs as cheap as without.
    assert augmented.first_epoch > head.first_epoch
    assert augmented.later_epochs == head.later_epochs
    assert "4 augmented copies" in augmented.note
    whole = estimate_epoch("resnet50", 224, "all", train_images=500, val_images=100, augment=True)
    assert whole.later_epochs == whole.first_epoch


def test_timing_and_advice():
    from core.runs.store import RunStatus

    status = RunStatus(
        state="running",
        started="2026-01-01T00:00:00.000+00:00",
        epoch=1,
        total_epochs=4,
        step=0,
        steps_per_epoch=10,
    )
    elapsed, eta = run_view.timing(status, now=status_time("2026-01-01T00:01:00+00:00"))
    assert elapsed == pytest.approx(60) and eta == pytest.approx(180)
    assert run_view.format_duration(75) == "1 min 15 s"
    assert run_view.format_duration(None) == "–"
    assert "learning rate" in run_view.failure_advice("loss became NaN at epoch 2")[0]
    assert "batch size" in run_view.failure_advice("out of memory at batch size 64")[0]
    events = _history(3)
    assert run_view.best_val_accuracy(events) == pytest.approx(0.7)
    assert run_view.latest_throughput(events) == pytest.approx(43.0)
    assert run_view.throughput_metric(events) == ("Images / s", 43.0, run_view.IMAGES_HELP)
    events[-2]["fast_path"] = True  # the head trained on precomputed features
    label, value, help_text = run_view.throughput_metric(events)
    assert (label, value) == ("Images / s (features)", 43.0)
    assert help_text.startswith("Head-only training reuses precomputed features")
    events[-2].update(fast_path=False, fast_finetune=True)  # top blocks on cached activations
    label, value, help_text = run_view.throughput_metric(events)
    assert (label, value) == ("Images / s (fast fine-tuning)", 43.0)
    assert help_text == run_view.FAST_FINETUNE_HELP
    assert run_view.throughput_metric([]) == ("Images / s", None, run_view.IMAGES_HELP)


def status_time(iso: str) -> float:
    from core.runs.store import parse_time

    return parse_time(iso)


def test_setting_differences_lists_only_what_differs():
    a = {"epochs": 5, "model": {"backbone": "x", "dense_units": []}, "name": "one"}
    b = {"epochs": 8, "model": {"backbone": "x", "dense_units": [128]}, "name": "two"}
    table = runs_view.setting_differences({"one": a, "two": b})
    assert list(table.index) == ["Epochs", "Extra layer sizes"]
    assert list(table.loc["Extra layer sizes"]) == ["none", "128"]
    assert runs_view.setting_differences({"one": a, "same": dict(a)}).empty


def test_setting_differences_use_plain_names_and_skip_unused_fine_tune_settings():
    head = {"model": {"augment": {"contrast": 0.0}}, "fine_tune_epochs": 0}
    other = {"model": {"augment": {"contrast": 0.2}}, "fine_tune_epochs": 0}
    head["fine_tune_lr_mult"], other["fine_tune_lr_mult"] = 0.1, 0.3  # never used by either
    table = runs_view.setting_differences({"a": head, "b": other})
    assert list(table.index) == ["Random contrast"]
    assert not any("." in name or "_" in name for name in table.index)
    tuned = dict(other, fine_tune_epochs=3, fine_tune_trainable="top:2")
    table = runs_view.setting_differences({"a": head, "b": tuned})
    assert list(table.loc["Fine-tune: what learns"]) == [
        "not used",
        "last 2 blocks + new last layer",
    ]
    assert list(table.loc["Fine-tune epochs"]) == ["0", "3"]
    every = runs_view.settings_table({"a": head, "b": tuned})
    assert "Random contrast" in every.columns and "model.augment.contrast" not in every.columns
    assert every.loc["a"].isna()["Fine-tune: learning-rate factor"]


def test_folder_upload_grouping_and_imbalance():
    groups = group_by_folder(
        [
            ("shots/cats/a.jpg", b"1"),
            ("shots/dogs/b.jpg", b"2"),
            ("top.jpg", b"3"),
            ("shots/__MACOSX/cats/._a.jpg", b"4"),
            ("dogs/c.png", b"5"),
        ]
    )
    assert groups == {"cats": [("a.jpg", b"1")], "dogs": [("b.jpg", b"2"), ("c.png", b"5")]}
    assert imbalance_message({"a": 10, "b": 9}) is None
    assert "unbalanced" in imbalance_message({"a": 30, "b": 5})


def test_augment_preview_changes_images_with_the_training_layers(tmp_path):
    from core.data.sample import write_class_folders
    from core.models.augment_preview import augment_samples

    write_class_folders(tmp_path, {"a": 2}, size=(48, 48))
    paths = sorted(tmp_path.glob("a/*.jpg"))
    rows = augment_samples(
        paths, AugmentConfig(flip="horizontal", rotation=0.2), size=48, variants=2
    )
    assert len(rows) == 2 and len(rows[0]) == 3
    assert rows[0][1].shape == (48, 48, 3) and rows[0][1].dtype == np.uint8
    assert any(not np.array_equal(row[0], row[1]) for row in rows)
    same = augment_samples(paths, AugmentConfig(), size=48, variants=1)
    assert np.array_equal(same[0][0], same[0][1])


def test_block_diagram_shows_only_powers_of_ten_on_its_log_axis():
    from ui.figures import block_diagram_spec

    blocks = [
        {"name": "stem", "params": 900, "trainable": False},
        {"name": "head", "params": 250_000, "trainable": True},
    ]
    _, spec = block_diagram_spec(blocks, title="t")
    y = spec["encoding"]["y"]
    assert y["scale"] == {"type": "log", "domain": [1, 1_000_000]}
    assert y["axis"]["values"] == [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
    assert spec["encoding"]["y2"] == {"datum": 1}  # bars start at 1: a log axis has no 0
    assert spec["title"]["text"] == "t"


def test_block_diagram_names_blocks_in_readable_words():
    blocks = [
        {"name": "stem", "params": 900, "trainable": False},
        {"name": "block6a", "params": 20_000, "trainable": False},
        {"name": "conv5_block3", "params": 30_000, "trainable": True},
        {"name": "top", "params": 4_000, "trainable": True},
        {"name": "head", "params": 250_000, "trainable": True},
    ]
    data, spec = figures.block_diagram_spec(blocks)
    assert list(data["block"]) == [
        "First layers",
        "Block 6a",
        "Conv5 block 3",
        "Final layers",
        "New last layer",
    ]
    # The tooltip shows the readable name too; the colour still marks the head.
    assert spec["encoding"]["tooltip"][0]["field"] == "block"
    assert data["color"].iloc[-1] == figures.HEAD_COLOR
