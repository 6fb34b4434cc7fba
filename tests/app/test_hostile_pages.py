"""Pages under damaged state and hostile names: a broken run or dataset is shown as broken,
every other page keeps working, names are shown as text, and errors reach the browser only
as an error id."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.test_pages import EVAL_PAGES, app_on, no_exception


def _copy_run(workspace, run_id: str, new_id: str):
    target = workspace / "runs" / new_id
    shutil.copytree(workspace / "runs" / run_id, target)
    status = json.loads((target / "status.json").read_text())
    status["run_id"] = new_id
    (target / "status.json").write_text(json.dumps(status))
    return target


@pytest.mark.parametrize("page", ["runs", *EVAL_PAGES])
def test_one_truncated_summary_and_one_broken_status_break_no_page(page, ready, workspace):
    damaged = _copy_run(workspace, ready["run_id"], "20990101-000000-damaged-aaaaaa")
    (damaged / "summary.json").write_text('{"best_val_accura')
    broken = _copy_run(workspace, ready["run_id"], "20990101-000000-broken-bbbbbb")
    (broken / "status.json").write_bytes(b"")
    at = app_on(page, dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    assert at.title


def test_runs_page_lists_a_broken_run_with_its_state(ready, workspace):
    broken = _copy_run(workspace, ready["run_id"], "20990101-000000-broken-bbbbbb")
    (broken / "status.json").write_bytes(b"[]")
    at = app_on("runs")
    no_exception(at)
    frame = at.dataframe[0].value
    assert set(frame["state"]) == {"completed", "broken"}


def test_data_page_shows_a_broken_dataset_and_keeps_the_others(ready, workspace, tmp_path):
    from tests.helpers.runs import make_dataset

    bad = make_dataset(tmp_path / "bad", {"a": 3, "b": 3})
    (workspace / "datasets" / bad / "dataset.json").write_text("[]")
    at = app_on("data", dataset_id=ready["dataset_id"])
    no_exception(at)
    from ui.text import md

    assert any(md(bad) in w.value and "dataset.json" in w.value for w in at.warning)
    assert any("Tiny shapes" in s.value for s in at.subheader)


def test_a_hostile_run_parameter_is_shown_as_text(ready):
    hostile = "x` **Session expired** [log in](https://evil.example) `"
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=hostile)
    no_exception(at)
    texts = [w.value for w in at.warning]
    assert texts, "the page says the run cannot be shown"
    assert all("[log in](https" not in t and "**Session" not in t for t in texts)
    assert any(r"\*\*Session expired\*\*" in t and r"\[log in\]" in t for t in texts)


def test_markdown_in_a_dataset_name_is_shown_as_text(tmp_path):
    from core.data.store import locked, save_dataset
    from tests.helpers.runs import make_dataset

    dataset_id = make_dataset(tmp_path / "d", {"a": 3, "b": 3})
    with locked(dataset_id) as dataset:
        save_dataset(dataset, dataset.manifest, name="**big** [link](https://evil.example)")
    at = app_on("data", dataset_id=dataset_id)
    no_exception(at)
    (heading,) = [s.value for s in at.subheader if "big" in s.value]
    assert heading.startswith(r"\*\*big\*\* \[link\]\(https\:")
    assert "**big**" not in heading and "](" not in heading


def test_train_page_warns_about_a_diverging_loss(ready, workspace):
    from core.training.context import divergence_message

    note = divergence_message(2, 4.2e4, 3.1, 1.1, 0.5)
    with open(workspace / "runs" / ready["run_id"] / "metrics.jsonl", "a") as metrics:
        metrics.write(json.dumps({"type": "note", "message": note, "time": time.time()}) + "\n")
    at = app_on("train", dataset_id=ready["dataset_id"], run_id=ready["run_id"])
    no_exception(at)
    (warning,) = [w.value for w in at.warning if "diverging" in w.value]
    assert "4.2e+04" in warning and "lower" in warning


def test_an_unhandled_page_error_shows_only_an_error_id(monkeypatch, workspace):
    monkeypatch.delenv("TRANSFER_STUDIO_RAISE_ERRORS")

    def page():
        from ui.errors import run_guarded

        def explode():
            raise RuntimeError("secret server path /srv/private/thing")

        run_guarded(explode, "test page")

    at = AppTest.from_function(page).run()
    assert not at.exception
    (error,) = at.error
    assert "error id" in error.value and "/srv/private" not in error.value
    error_id = error.value.split("error id ")[1][:8]
    log = (workspace / "logs" / "app-errors.log").read_text()
    assert f"error {error_id} on test page" in log and "/srv/private/thing" in log


def test_streamlit_is_told_to_show_no_error_details():
    import tomllib

    from tests.app.test_pages import ROOT

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["address"] == "localhost"
