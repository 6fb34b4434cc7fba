"""Hostile layouts: folders nested thousands deep, class names equal up to Unicode form."""

from __future__ import annotations

import unicodedata

from core.data.ingest import ZipSource, ingest, inspect
from core.data.sources import MAX_FOLDER_DEPTH
from tests.data.test_ingest import image_bytes, zip_of


def _classes(*names: str, count: int = 3) -> list[tuple[str, bytes]]:
    return [(f"{name}/{i}.jpg", image_bytes()) for name in names for i in range(count)]


def test_files_nested_too_deep_are_rejected_with_a_reason():
    deep = "/".join(["d"] * (MAX_FOLDER_DEPTH + 40)) + "/deep.jpg"
    report = inspect(ZipSource(zip_of([*_classes("cats", "dogs"), (deep, image_bytes())])))
    assert report.classes == {"cats": 3, "dogs": 3}
    reasons = [row["reason"] for row in report.rejected]
    assert any(f"nested more than {MAX_FOLDER_DEPTH} folders deep" in r for r in reasons)


def test_a_zip_nested_thousands_of_folders_deep_is_answered():
    """One chain of 5000 wrapper folders: the cubic layout search never finished on this."""
    chain = "/".join(f"w{i}" for i in range(5000))
    entries = [(f"{chain}/{name}", data) for name, data in _classes("cats", "dogs")]
    report = inspect(ZipSource(zip_of(entries)))
    assert report.classes == {}
    assert report.error
    assert len(report.rejected) == 6
    assert all("folders deep" in row["reason"] for row in report.rejected)


def test_class_folders_equal_up_to_unicode_form_are_reported_as_merged():
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    report = ingest(ZipSource(zip_of(_classes(nfc, nfd, "tea"))), name="cafe")
    assert report.classes == {"café": 6, "tea": 3}
    merged = [w for w in report.warnings if "merged into one class 'café'" in w]
    assert len(merged) == 1 and "Unicode" in merged[0]


def test_split_folders_of_one_class_are_not_reported_as_merged():
    entries = [
        (f"{split}/{name}/{i}.jpg", image_bytes())
        for split in ("train", "val")
        for name in ("cats", "dogs")
        for i in range(3)
    ]
    report = inspect(ZipSource(zip_of(entries)))
    assert report.classes == {"cats": 6, "dogs": 6}
    assert not any("merged" in w for w in report.warnings)
