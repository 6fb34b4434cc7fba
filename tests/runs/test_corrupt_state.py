"""Damaged files in run and dataset folders: the damaged one is shown as broken with the
reason, every other run and dataset keeps working, and the CLI answers in one line."""

from __future__ import annotations

import json

import pytest

from core import cli
from core.config import TrainConfig
from core.data.store import DatasetError, broken_datasets, list_datasets, load_dataset
from core.jsonfile import CorruptFileError, read_json
from core.runs.listing import list_runs
from core.runs.store import create_run, read_config, read_labels, read_status, read_summary

DAMAGES = {
    "truncated": b'{"state": "completed", "epo',
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "list": b"[]",
    "null": b"null",
    "number": b"42",
}
WRONG_TYPES = [
    {"state": "completed", "epoch": "three"},
    {"state": 7},
    {"state": "exploded"},
    {"state": "running", "pid": "1234"},
    {"state": "completed", "total_epochs": True},
    {"state": "completed", "extra": [1]},
]


def _run(**changes):
    return create_run(TrainConfig(dataset="ds1", **changes))


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_read_json_names_every_kind_of_damage(tmp_path, damage):
    path = tmp_path / "x.json"
    path.write_bytes(DAMAGES[damage])
    with pytest.raises(CorruptFileError) as caught:
        read_json(path)
    assert caught.value.path == path and caught.value.reason
    assert read_json(tmp_path / "missing.json") is None


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_status_is_listed_as_broken_and_the_others_still_list(damage):
    good = _run()
    bad = _run(epochs=2)
    (bad / "status.json").write_bytes(DAMAGES[damage])
    runs = {info.run_id: info for info in list_runs()}
    assert set(runs) == {good.name, bad.name}
    assert runs[good.name].status.state == "queued" and not runs[good.name].problems
    broken = runs[bad.name]
    assert broken.broken and broken.status.state == "broken"
    assert "status.json" in broken.status.message and "delete the folder" in broken.status.message
    assert not broken.has_model
    with pytest.raises(CorruptFileError):
        read_status(bad)


@pytest.mark.parametrize("fields", WRONG_TYPES, ids=[str(f) for f in WRONG_TYPES])
def test_wrongly_typed_status_fields_are_named(fields):
    folder = _run()
    (folder / "status.json").write_text(json.dumps(fields))
    with pytest.raises(CorruptFileError, match="status.json"):
        read_status(folder)
    (info,) = list_runs()
    assert info.broken


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_a_damaged_summary_or_config_leaves_the_run_listed_with_the_problem(name):
    folder = _run()
    (folder / name).write_bytes(b'{"best_val_accur')
    (info,) = list_runs()
    assert info.status.state == "queued"
    assert any(problem.startswith(name) for problem in info.problems)
    with pytest.raises(CorruptFileError):
        read_summary(folder) if name == "summary.json" else read_config(folder)


def test_binary_labels_are_a_corrupt_file():
    folder = _run()
    (folder / "labels.txt").write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(CorruptFileError, match="labels.txt"):
        read_labels(folder)


def test_a_config_of_the_wrong_shape_is_a_corrupt_file():
    folder = _run()
    (folder / "config.json").write_text(json.dumps({"dataset": "x", "model": "mobilenet"}))
    with pytest.raises(CorruptFileError, match="not describe a valid training config"):
        read_config(folder)


def _one_line_error(capsys, *argv) -> str:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "binary", "list", "null"])
def test_cli_runs_lists_broken_runs_and_status_answers_in_one_line(capsys, damage):
    good = _run()
    bad = _run(epochs=2)
    (bad / "status.json").write_bytes(DAMAGES[damage])
    (good / "summary.json").write_bytes(DAMAGES[damage])
    assert cli.main(["runs"]) == 0
    listing = capsys.readouterr().out
    assert good.name in listing and bad.name in listing and "broken" in listing
    assert cli.main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["status"]["state"] for row in rows} == {"queued", "broken"}
    line = _one_line_error(capsys, "status", bad.name)
    assert "status.json" in line
    assert cli.main(["status", good.name]) == 0


def test_cli_evaluate_of_a_broken_run_is_one_line(capsys):
    folder = _run()
    (folder / "status.json").write_bytes(b"[]")
    (folder / "model.keras").write_bytes(b"PK\x03\x04 not really")
    _one_line_error(capsys, "evaluate", "--run", folder.name)


def test_very_long_run_ids_are_one_line(capsys):
    long_id = "a" * 300
    for argv in (["status", long_id], ["cancel", long_id], ["evaluate", "--run", long_id]):
        line = _one_line_error(capsys, *argv)
        assert len(line) < 700


def test_an_unwritable_workspace_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", "/sys/transfer-studio-workspace")
    line = _one_line_error(capsys, "runs")
    assert "must be writable" in line and "TRANSFER_STUDIO_HOME" in line


@pytest.mark.parametrize("damage", ["truncated", "empty", "binary", "list", "null"])
def test_a_damaged_dataset_is_broken_and_the_others_still_load(tmp_path, damage):
    from tests.helpers.runs import make_dataset

    good = make_dataset(tmp_path / "a", {"x": 3, "y": 3})
    bad = make_dataset(tmp_path / "b", {"x": 3, "y": 3})
    meta = load_dataset(bad).dir / "dataset.json"
    meta.write_bytes(DAMAGES[damage])
    assert [d.id for d in list_datasets()] == [good]
    (broken,) = broken_datasets()
    assert broken.id == bad and "dataset.json" in broken.reason
    with pytest.raises(DatasetError, match="dataset.json"):
        load_dataset(bad)


def test_a_damaged_manifest_is_broken(tmp_path):
    from tests.helpers.runs import make_dataset

    bad = make_dataset(tmp_path / "b", {"x": 3, "y": 3})
    (load_dataset(bad).dir / "manifest.csv").write_bytes(b"\x00\xff" * 100)
    assert list_datasets() == []
    (broken,) = broken_datasets()
    assert "manifest.csv" in broken.reason
