"""The Runs table: validation and test accuracy of each run's saved (restored best) model."""

from __future__ import annotations

from types import SimpleNamespace

from core.runs.store import RunStatus
from ui.runs_view import runs_frame


def _run(run_id: str, summary, tmp_path):
    folder = tmp_path / run_id
    folder.mkdir()
    return SimpleNamespace(
        run_id=run_id,
        dir=folder,
        config={"dataset": "d1", "model": {"backbone": "mobilenet_v2", "image_size": 96}},
        status=RunStatus(run_id=run_id, state="completed", epoch=3, total_epochs=200),
        summary=summary,
    )


def test_runs_table_shows_val_and_test_accuracy_of_the_saved_model(tmp_path):
    runs = [
        _run(
            "new", {"val_accuracy": 0.9, "test_accuracy": 0.8, "best_val_accuracy": 0.95}, tmp_path
        ),
        _run("old", {"best_val_accuracy": 0.7}, tmp_path),
        _run("broken", ["not", "a", "summary"], tmp_path),
    ]
    table = runs_frame(runs, {"d1": "Shapes"})
    assert "best val accuracy" not in table.columns
    rows = table.set_index("run id")
    # The saved model's numbers win over the best epoch's logged one.
    assert rows.loc["new", "val accuracy"] == 0.9 and rows.loc["new", "test accuracy"] == 0.8
    # A run made before the summary recorded them falls back to the best epoch, no test.
    assert rows.loc["old", "val accuracy"] == 0.7
    assert rows.loc["old", "test accuracy"] is None or rows["test accuracy"].isna()["old"]
    assert rows["val accuracy"].isna()["broken"] and rows["test accuracy"].isna()["broken"]
