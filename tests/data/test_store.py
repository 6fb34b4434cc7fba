"""The dataset store and its mutations (what the Data and Evaluate pages call)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from core.data import store as datasets
from core.data.edits import delete_images, relabel_images, rename_class, resplit
from core.data.ingest import UploadSource, add_images, ingest
from core.data.store import (
    DatasetError,
    DatasetNotFoundError,
    clean_label,
    delete_dataset,
    list_datasets,
    load_dataset,
)

_RNG = np.random.default_rng(7)


def jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = _RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def make(name="pets", counts=None):
    counts = counts or {"cats": 6, "dogs": 6, "NA": 4}
    files = {label: [(f"{label}{i}.jpg", jpeg()) for i in range(n)] for label, n in counts.items()}
    return load_dataset(ingest(UploadSource(files), name=name, seed=1).dataset_id)


def test_dataset_api_and_manifest_round_trip():
    dataset = make()
    assert dataset.classes == ["NA", "cats", "dogs"]  # "NA" stays a string, never NaN
    meta = json.loads((dataset.dir / "dataset.json").read_text())
    assert {
        "id",
        "name",
        "created",
        "classes",
        "val_fraction",
        "test_fraction",
        "seed",
        "report",
    } <= set(meta)
    assert meta["report"]["classes"] == {"NA": 4, "cats": 6, "dogs": 6}
    counts = dataset.counts()
    assert list(counts.columns) == ["train", "val", "test", "total"]
    assert counts.loc["cats", "total"] == 6 and counts["total"].sum() == 16
    train = dataset.frame("train")
    assert set(train["split"]) == {"train"}
    assert len(dataset.paths("val")) == len(dataset.labels("val")) == counts["val"].sum()
    assert all(path.is_absolute() and path.is_file() for path in dataset.paths())
    assert dataset.manifest["width"].dtype.kind == "i"
    assert dataset.problems() == []
    with pytest.raises(ValueError, match="split must be one of"):
        dataset.frame("validation")


def test_unknown_and_malformed_ids_are_clear():
    make()
    with pytest.raises(
        DatasetNotFoundError, match="Unknown dataset id 'nope-123'. Known datasets: pets-"
    ):
        load_dataset("nope-123")
    with pytest.raises(DatasetNotFoundError, match="lowercase letters"):
        load_dataset("../../etc")


def test_list_newest_first_and_delete():
    first = make("first")
    second = make("second")
    assert [d.id for d in list_datasets()] == [second.id, first.id]
    delete_dataset(first.id)
    assert [d.id for d in list_datasets()] == [second.id]
    assert not first.dir.exists()


def test_delete_images_removes_rows_and_files_and_changes_fingerprint():
    dataset = make()
    doomed = list(dataset.manifest["image"][:2])
    updated = delete_images(dataset.id, doomed)
    assert len(updated.manifest) == 14
    assert not any((dataset.dir / image).exists() for image in doomed)
    assert updated.fingerprint != dataset.fingerprint
    assert len(load_dataset(dataset.id).manifest) == 14
    with pytest.raises(DatasetError, match="not in dataset"):
        delete_images(dataset.id, ["images/none.jpg"])


def test_relabel_keeps_split_and_images():
    dataset = make()
    rows = dataset.manifest[dataset.manifest["label"] == "cats"].head(2)
    updated = relabel_images(dataset.id, list(rows["image"]), "  lynx\n")
    moved = updated.manifest.set_index("image").loc[list(rows["image"])]
    assert set(moved["label"]) == {"lynx"}
    assert list(moved["split"]) == list(rows["split"])
    assert updated.fingerprint == dataset.fingerprint  # same images
    assert updated.labels_fingerprint != dataset.labels_fingerprint
    assert "lynx" in updated.classes
    # Two images cannot cover train, val and test: the dataset says so.
    assert any("'lynx'" in problem for problem in updated.problems())


def test_rename_and_merge_classes():
    dataset = make()
    renamed = rename_class(dataset.id, "NA", "Nicht zugeordnet 🐾")
    assert "Nicht zugeordnet 🐾" in renamed.classes and "NA" not in renamed.classes
    merged = rename_class(dataset.id, "dogs", "cats")
    assert merged.counts().loc["cats", "total"] == 12
    with pytest.raises(DatasetError, match="has no class 'wolves'"):
        rename_class(dataset.id, "wolves", "x")
    with pytest.raises(ValueError, match="cannot be empty"):
        rename_class(dataset.id, "cats", "   ")


def test_resplit_changes_splits_and_refuses_small_classes():
    dataset = make(counts={"a": 20, "b": 20})
    updated = resplit(dataset.id, 0.25, 0.0, 7)
    counts = updated.counts()
    assert (counts["test"] == 0).all() and (counts["val"] == 5).all()
    assert updated.meta["val_fraction"] == 0.25 and updated.seed == 7
    small = make("small", counts={"a": 3, "b": 3})
    one_a = small.manifest[small.manifest["label"] == "a"]["image"].iloc[0]
    delete_images(small.id, [one_a])
    with pytest.raises(DatasetError, match="class 'a' has 2 images; it needs at least 3"):
        resplit(small.id, 0.3, 0.3, 1)
    with pytest.raises(ValueError, match="val_fraction"):
        resplit(small.id, 2.0, 0.0, 1)


def test_add_images_keeps_existing_splits_and_skips_duplicates():
    dataset = make()
    existing = dataset.manifest[dataset.manifest["label"] == "cats"]
    already = (dataset.dir / existing["image"].iloc[0]).read_bytes()
    new = [(f"new{i}.jpg", jpeg()) for i in range(4)]
    report = add_images(dataset.id, "cats", [*new, ("again.jpg", already), ("bad.jpg", b"nope")])
    assert report.num_images == 4 and report.classes == {"cats": 4}
    assert report.duplicates == [[existing["image"].iloc[0], "cats/again.jpg"]]
    assert [row["file"] for row in report.rejected] == ["cats/bad.jpg"]
    updated = load_dataset(dataset.id)
    assert len(updated.manifest) == 20
    before = dataset.manifest.set_index("image")["split"]
    after = updated.manifest.set_index("image")["split"]
    assert after.loc[before.index].equals(before)
    fresh = add_images(dataset.id, "birds", [(f"b{i}.png", jpeg()) for i in range(3)])
    counts = load_dataset(dataset.id).counts()
    assert fresh.dataset_id == dataset.id
    assert counts.loc["birds", ["train", "val", "test"]].tolist() == [1, 1, 1]
    nothing = add_images(dataset.id, "birds", [("x.jpg", b"not an image")])
    assert nothing.error and "No image was added" in nothing.error


def test_clean_label():
    assert clean_label("Cafe\u0301\t crème ") == "Café crème"
    assert clean_label("🐱 cats") == "🐱 cats"
    with pytest.raises(ValueError, match="at most 120"):
        clean_label("x" * 121)
    with pytest.raises(ValueError, match="must be text"):
        clean_label(3)


def test_staging_and_dataset_ids_are_path_safe():
    assert datasets.new_dataset_id("../../Ünïcode Cats!!").startswith("unicode-cats-")
    assert datasets.new_dataset_id("🐱").startswith("dataset-")


def test_a_tampered_manifest_is_refused():
    dataset = make()
    manifest_path = dataset.dir / "manifest.csv"
    text = manifest_path.read_text(encoding="utf-8")
    first_image = dataset.manifest["image"].iloc[0]
    manifest_path.write_text(text.replace(first_image, "../../outside.jpg"), encoding="utf-8")
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        load_dataset(dataset.id)


def test_deleting_every_image_leaves_an_empty_but_valid_dataset():
    dataset = make(counts={"a": 3, "b": 3})
    empty = delete_images(dataset.id, list(dataset.manifest["image"]))
    assert empty.classes == [] and len(empty.counts()) == 0
    assert "training needs at least 2" in empty.problems()[0]
    assert load_dataset(dataset.id).manifest.empty
