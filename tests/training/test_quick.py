"""Quick mode's engine: drafts become a dataset, a later Train adds to it, renames follow."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.data import drafts
from core.data.store import DatasetError, load_dataset
from core.training import quick


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (value, 255 - value, (value * 7) % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def _shots(label: str, values: range) -> None:
    for value in values:
        drafts.add_shot(label, _jpeg(value))


def test_first_train_makes_the_dataset_and_a_later_one_adds_to_it():
    _shots("cat", range(0, 40, 8))
    _shots("dog", range(100, 140, 8))
    first = quick.update_dataset(["cat", "dog", "empty"])
    assert first.added == 10 and drafts.list_shots() == {}
    dataset = load_dataset(first.dataset_id)
    assert dataset.name == quick.QUICK_NAME and dataset.classes == ["cat", "dog"]
    assert quick.card_counts(["cat", "dog"], first.dataset_id) == {"cat": 5, "dog": 5}

    _shots("cat", range(200, 224, 8))
    _shots("bird", range(50, 90, 8))
    second = quick.update_dataset(["cat", "dog", "bird"], first.dataset_id)
    assert second.dataset_id == first.dataset_id and second.added == 8
    assert load_dataset(first.dataset_id).classes == ["bird", "cat", "dog"]
    assert quick.card_counts(["cat", "bird"], first.dataset_id) == {"cat": 8, "bird": 5}


def test_identical_pictures_are_kept_once_and_counted():
    _shots("cat", range(0, 40, 8))
    for _ in range(3):
        drafts.add_shot("cat", _jpeg(0))  # the camera saw the very same frame again
    _shots("dog", range(100, 140, 8))
    update = quick.update_dataset(["cat", "dog"])
    assert update.identical == 3
    assert update.added == 10
    assert quick.card_counts(["cat", "dog"], update.dataset_id) == {"cat": 5, "dog": 5}


def test_refused_pictures_stay_as_drafts_and_the_reason_is_given():
    _shots("cat", range(0, 40, 8))
    with pytest.raises(DatasetError, match="at least 2 classes"):
        quick.update_dataset(["cat"])
    assert len(drafts.list_shots()["cat"]) == 5


def test_rename_moves_drafts_and_the_dataset_class():
    _shots("cat", range(0, 40, 8))
    _shots("dog", range(100, 140, 8))
    dataset_id = quick.update_dataset(["cat", "dog"]).dataset_id
    _shots("cat", range(150, 160, 8))
    assert quick.rename_card("cat", " kitten ", ["dog"], dataset_id) == "kitten"
    assert list(drafts.list_shots()) == ["kitten"]
    assert load_dataset(dataset_id).classes == ["dog", "kitten"]
    with pytest.raises(ValueError, match="already called"):
        quick.rename_card("kitten", "dog", ["dog"], dataset_id)


def test_quick_config_is_the_offline_fast_path():
    config = quick.quick_config("some-dataset")
    assert config.model.backbone == "efficientnet_lite0" and config.model.weights == "imagenet"
    assert config.model.frozen_backbone and not config.model.augment.enabled
    assert config.auto_fields == ("epochs", "learning_rate", "early_stopping_patience")
