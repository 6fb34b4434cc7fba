"""Webcam pictures kept on disk before a dataset exists."""

from __future__ import annotations

import pytest

from core.data import drafts


def test_shots_are_kept_per_class_and_listed_oldest_first():
    first = drafts.add_shot("class 1", b"one")
    drafts.add_shot("class 1", b"two")
    drafts.add_shot("Kätzchen 🐱", b"three")
    shots = drafts.list_shots()
    assert list(shots) == ["Kätzchen 🐱", "class 1"]
    assert [p.read_bytes() for p in shots["class 1"]] == [b"one", b"two"]
    assert shots["class 1"][0] == first
    files = drafts.shots_as_files(shots)
    assert files["class 1"] == [("webcam-1.jpg", b"one"), ("webcam-2.jpg", b"two")]


def test_delete_and_clear_remove_only_what_was_kept(tmp_path):
    path = drafts.add_shot("a", b"1")
    drafts.add_shot("b", b"2")
    foreign = path.parent / "notes.txt"
    foreign.write_text("mine")
    drafts.delete_shot(path)
    assert "a" not in drafts.list_shots()
    assert foreign.read_text() == "mine"  # not ours: kept, with its folder
    outside = tmp_path / "shot-00001.jpg"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="Not a kept webcam picture"):
        drafts.delete_shot(outside)
    assert outside.exists()
    assert drafts.clear_shots() == 1
    assert drafts.list_shots() == {}


def test_unreadable_label_files_are_skipped():
    path = drafts.add_shot("good", b"1")
    broken = drafts.add_shot("broken", b"2").parent
    (broken / drafts.LABEL_FILE).write_bytes(b"")
    (drafts.drafts_dir() / "not-a-class-folder").mkdir()
    assert drafts.list_shots() == {"good": [path]}


@pytest.mark.parametrize(("label", "data"), [("", b"1"), ("ok", b"")])
def test_bad_input_is_refused(label, data):
    with pytest.raises(ValueError):
        drafts.add_shot(label, data)


def test_rename_moves_the_pictures_after_those_of_the_new_name():
    drafts.add_shot("old", b"1")
    drafts.add_shot("old", b"2")
    drafts.add_shot("new", b"0")
    assert drafts.rename_shots("old", " new ") == 2
    shots = drafts.list_shots()
    assert list(shots) == ["new"] and [p.read_bytes() for p in shots["new"]] == [b"0", b"1", b"2"]
    assert drafts.rename_shots("new", "new") == 0
    with pytest.raises(ValueError):
        drafts.rename_shots("new", "   ")
