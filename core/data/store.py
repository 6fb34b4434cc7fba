"""The dataset store: normalised images plus a manifest, one folder per dataset.

Layout of ``workspace/datasets/<id>/``::

    dataset.json   id, name, created, updated, classes, val_fraction, test_fraction,
                   seed, report (what ingest found)
    manifest.csv   image, label, split, sha256, width, height, original_name, source
    images/        the normalised JPEGs, under generated names

The manifest is the single source of truth: every mutation reads it, changes it and
replaces it atomically (temp file + ``os.replace``) under a per-dataset lock, so a reader
never sees half a manifest and two tabs editing the same dataset do not lose each other's
changes. A new dataset is built in a hidden staging folder and renamed into place when
complete, so a crash never leaves a half-built dataset in the list.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_write_bytes, atomic_write_json
from core.data.splits import (
    SPLITS,
)
from core.jsonfile import CorruptFileError, check_fields, read_json
from core.workspace import datasets_dir, resolve_under

try:  # POSIX advisory locks; on other systems mutations simply are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST_COLUMNS = [
    "image",
    "label",
    "split",
    "sha256",
    "width",
    "height",
    "original_name",
    "source",
]
META_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
IMAGES_DIR = "images"
STAGING_PREFIX = ".staging-"

_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")
_MAX_LABEL_LENGTH = 120


class DatasetError(ValueError):
    """A dataset cannot be created or changed as asked; the message says what to do.

    Attributes:
        report: The :class:`core.data.ingest.IngestReport` of what was read, when there is one
            (this module sits below ingest, so the type is not imported here).
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class DatasetNotFoundError(DatasetError):
    """No dataset has the requested id."""


def clean_label(raw: str) -> str:
    """Returns a class name fit for display and for ``labels.txt``.

    Unicode is NFC-normalised (macOS writes decomposed accents), surrounding whitespace is
    stripped and control characters (newlines, tabs) become spaces. Emoji, spaces and
    any script are kept as they are.

    Args:
        raw: A folder name, CSV cell or text typed by a user.

    Returns:
        The cleaned class name.

    Raises:
        ValueError: If nothing is left, or the name is over 120 characters.
    """
    if not isinstance(raw, str):
        raise ValueError(f"A class name must be text. Received: {raw!r}")
    text = unicodedata.normalize("NFC", raw)
    text = "".join(" " if unicodedata.category(char).startswith("C") else char for char in text)
    text = " ".join(text.split())
    if not text:
        raise ValueError(f"A class name cannot be empty. Received: {raw!r}")
    if len(text) > _MAX_LABEL_LENGTH:
        raise ValueError(
            f"A class name can have at most {_MAX_LABEL_LENGTH} characters. "
            f"Received {len(text)}: {text[:40]!r}..."
        )
    return text


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def new_dataset_id(name: str) -> str:
    """Makes a fresh, path-safe dataset id from a display name (e.g. ``flowers-3f9a1c2b``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'dataset'}-{secrets.token_hex(4)}"


def dataset_path(dataset_id: str) -> Path:
    """The folder of ``dataset_id`` (which need not exist), validated against path tricks.

    Raises:
        DatasetNotFoundError: If ``dataset_id`` is not a well-formed id.
    """
    if not isinstance(dataset_id, str) or not _ID_PATTERN.match(dataset_id):
        raise DatasetNotFoundError(
            "A dataset id has lowercase letters, digits and dashes, e.g. 'flowers-3f9a1c2b'. "
            f"Received: {dataset_id!r}"
        )
    return resolve_under(datasets_dir(), dataset_id)


@dataclass
class Dataset:
    """One stored dataset.

    Attributes:
        id: The dataset id (its folder name).
        dir: Absolute path of its folder.
        name: The name a person gave it.
        manifest: One row per image; see :data:`MANIFEST_COLUMNS`.
        meta: The contents of ``dataset.json``.
    """

    id: str
    dir: Path
    name: str
    manifest: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """Class names, sorted."""
        return sorted(set(self.manifest["label"]))

    @property
    def fingerprint(self) -> str:
        """A hash of the set of images; changes whenever an image is added or removed."""
        keys = sorted(
            f"{image}:{sha}"
            for image, sha in zip(self.manifest["image"], self.manifest["sha256"], strict=True)
        )
        return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()[:16]

    @property
    def labels_fingerprint(self) -> str:
        """A hash of images, labels and splits; changes with any manifest edit."""
        rows = sorted(
            "\t".join(row)
            for row in self.manifest[["image", "sha256", "label", "split"]].itertuples(
                index=False, name=None
            )
        )
        return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]

    @property
    def created(self) -> str:
        """Creation time (ISO 8601, UTC)."""
        return str(self.meta.get("created", ""))

    @property
    def val_fraction(self) -> float:
        """The validation share used for the current split."""
        return float(self.meta.get("val_fraction", 0.15))

    @property
    def test_fraction(self) -> float:
        """The test share used for the current split."""
        return float(self.meta.get("test_fraction", 0.15))

    @property
    def seed(self) -> int:
        """The seed of the current split."""
        return int(self.meta.get("seed", 42))

    def _check_split(self, split: str | None) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None. Received: split={split!r}")

    def frame(self, split: str | None = None) -> pd.DataFrame:
        """Manifest rows, optionally of one split only (a copy)."""
        self._check_split(split)
        if split is None:
            return self.manifest.copy()
        return self.manifest[self.manifest["split"] == split].reset_index(drop=True)

    def paths(self, split: str | None = None) -> list[Path]:
        """Absolute paths of the stored images, optionally of one split."""
        return [self.dir / image for image in self.frame(split)["image"]]

    def labels(self, split: str | None = None) -> list[str]:
        """Labels aligned with :meth:`paths`."""
        return list(self.frame(split)["label"])

    def counts(self) -> pd.DataFrame:
        """Images per class and split: rows are classes, columns train/val/test/total."""
        table = pd.crosstab(self.manifest["label"], self.manifest["split"])
        table = table.reindex(index=self.classes, columns=list(SPLITS), fill_value=0)
        table = table.astype(int)
        table["total"] = table.sum(axis=1)
        table.index.name = "class"
        table.columns.name = None
        return table

    def problems(self) -> list[str]:
        """What stops this dataset from being trained on as it is (empty when fine)."""
        problems = []
        classes = self.classes
        if len(classes) < 2:
            problems.append(
                f"the dataset has {len(classes)} class{'es' * (len(classes) != 1)}; "
                "training needs at least 2"
            )
        counts = self.counts()
        for label in classes:
            missing = [
                split
                for split, fraction in (
                    ("train", 1.0),
                    ("val", self.val_fraction),
                    ("test", self.test_fraction),
                )
                if fraction > 0 and counts.loc[label, split] == 0
            ]
            if missing:
                problems.append(
                    f"class {label!r} has no images in {' or '.join(missing)}; "
                    "re-split the dataset (or add images)"
                )
        return problems


def _read_manifest(directory: Path) -> pd.DataFrame:
    path = directory / MANIFEST_FILE
    shown = f"{MANIFEST_FILE} of {directory.name!r}"  # no server path: it may reach a browser
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8"
        )
    except FileNotFoundError as error:
        raise DatasetError(f"{shown} is missing") from error
    except (ValueError, OSError) as error:  # empty, binary, not CSV (pandas errors are ValueErrors)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{shown} cannot be read as a manifest ({first})") from error
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise DatasetError(f"{shown} lacks the columns {missing}")
    for column in ("width", "height"):
        try:
            frame[column] = frame[column].astype(int)
        except ValueError as error:
            raise DatasetError(f"{shown} has a non-number in its {column!r} column") from error
    escaping = [image for image in frame["image"] if not _inside(image)]
    if escaping:
        raise DatasetError(
            f"{directory / MANIFEST_FILE} lists images outside the dataset folder "
            f"(e.g. {escaping[0]!r}); refusing to use it"
        )
    return frame[MANIFEST_COLUMNS]


def _inside(relative: str) -> bool:
    """True for a plain relative path that stays inside the dataset folder."""
    parts = relative.replace("\\", "/").split("/")
    return (
        bool(relative)
        and not relative.startswith(("/", "\\"))
        and ".." not in parts
        and (":" not in parts[0])
    )


def manifest_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Builds a manifest DataFrame with the standard columns from row dicts."""
    frame = pd.DataFrame(list(rows), columns=MANIFEST_COLUMNS)
    for column in ("width", "height"):
        frame[column] = frame[column].astype(int)
    return frame


def write_manifest(directory: Path, manifest: pd.DataFrame) -> None:
    """Writes ``manifest.csv`` atomically."""
    buffer = io.StringIO()
    manifest[MANIFEST_COLUMNS].to_csv(buffer, index=False)
    atomic_write_bytes(directory / MANIFEST_FILE, buffer.getvalue().encode("utf-8"))


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    try:
        meta = read_json(path)
        if meta is None:
            raise CorruptFileError(path, "is missing")
        check_fields(path, meta, _META_TYPES)
    except CorruptFileError as error:
        raise DatasetError(str(error)) from error
    return meta


_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "created": str,
    "updated": str,
    "val_fraction": (int, float),
    "test_fraction": (int, float),
    "seed": int,
}


@dataclass(frozen=True)
class BrokenDataset:
    """A dataset folder whose files cannot be read.

    Attributes:
        id: The folder name.
        dir: The folder.
        reason: What is wrong, and what to do.
    """

    id: str
    dir: Path
    reason: str


def _open(directory: Path, dataset_id: str) -> Dataset:
    meta = _read_meta(directory)
    return Dataset(
        id=dataset_id,
        dir=directory,
        name=str(meta.get("name", dataset_id)),
        manifest=_read_manifest(directory),
        meta=meta,
    )


def load_dataset(dataset_id: str) -> Dataset:
    """Loads a stored dataset.

    Args:
        dataset_id: The id, as returned by ingest or :func:`list_datasets`.

    Returns:
        The :class:`Dataset`.

    Raises:
        DatasetNotFoundError: If no dataset has that id (the message lists the known ids).
    """
    directory = dataset_path(dataset_id)
    if not (directory / META_FILE).is_file():
        known = [path.name for path in _dataset_dirs()]
        hint = f" Known datasets: {', '.join(known[:20])}" if known else " No datasets exist yet."
        raise DatasetNotFoundError(f"Unknown dataset id {dataset_id!r}.{hint}")
    return _open(directory, dataset_id)


def _dataset_dirs() -> list[Path]:
    return sorted(
        path
        for path in datasets_dir().iterdir()
        if path.is_dir() and not path.name.startswith(".") and (path / META_FILE).is_file()
    )


def scan_datasets() -> tuple[list[Dataset], list[BrokenDataset]]:
    """Every stored dataset, newest first, and the dataset folders that cannot be read.

    Returns:
        ``(datasets, broken)``; each broken one names its damaged file and what to do.
    """
    datasets = []
    broken = []
    for directory in _dataset_dirs():
        try:
            datasets.append(_open(directory, directory.name))
        except (OSError, ValueError, KeyError) as error:
            broken.append(
                BrokenDataset(
                    directory.name,
                    directory,
                    f"{error}. Its images are untouched; delete the folder {directory.name!r} "
                    "(under the workspace's datasets folder) if the dataset is not needed, or "
                    "ingest the images again.",
                )
            )
    return sorted(datasets, key=lambda dataset: dataset.created, reverse=True), broken


def list_datasets() -> list[Dataset]:
    """All readable stored datasets, newest first (see :func:`scan_datasets` for the rest)."""
    return scan_datasets()[0]


def broken_datasets() -> list[BrokenDataset]:
    """Dataset folders whose ``dataset.json`` or ``manifest.csv`` cannot be read."""
    return scan_datasets()[1]


def delete_dataset(dataset_id: str) -> None:
    """Deletes a dataset and its images.

    Raises:
        DatasetNotFoundError: If no dataset has that id.
    """
    directory = load_dataset(dataset_id).dir
    # Rename first so the dataset vanishes from listings at once, then remove the files.
    doomed = directory.with_name(f".deleting-{directory.name}-{secrets.token_hex(3)}")
    os.replace(directory, doomed)
    shutil.rmtree(doomed)


@contextlib.contextmanager
def locked(dataset_id: str) -> Iterator[Dataset]:
    """Holds the dataset's lock and yields it freshly loaded (for read-modify-write)."""
    dataset = load_dataset(dataset_id)
    with (dataset.dir / ".lock").open("a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield load_dataset(dataset_id)
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def save_dataset(dataset: Dataset, manifest: pd.DataFrame, **meta_changes: Any) -> Dataset:
    """Replaces the manifest (and updates ``dataset.json``) of an existing dataset.

    Call inside :func:`locked`.
    """
    meta = dict(dataset.meta)
    meta.update(meta_changes)
    meta["classes"] = sorted(set(manifest["label"]))
    meta["num_images"] = len(manifest)
    meta["updated"] = _now()
    manifest = manifest.reset_index(drop=True)
    write_manifest(dataset.dir, manifest)
    atomic_write_json(dataset.dir / META_FILE, meta)
    return Dataset(dataset.id, dataset.dir, str(meta.get("name", dataset.id)), manifest, meta)


def staging_path(dataset_id: str) -> Path:
    """The hidden folder a new dataset is built in before :func:`publish_dataset`."""
    dataset_path(dataset_id)  # validates the id
    return datasets_dir() / f"{STAGING_PREFIX}{dataset_id}"


def publish_dataset(
    staging: Path,
    dataset_id: str,
    *,
    name: str,
    manifest: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    report: dict[str, Any],
) -> Dataset:
    """Writes the manifest and metadata into ``staging`` and renames it into place."""
    created = _now()
    meta = {
        "id": dataset_id,
        "name": name,
        "created": created,
        "updated": created,
        "classes": sorted(set(manifest["label"])),
        "num_images": len(manifest),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "report": report,
    }
    write_manifest(staging, manifest)
    atomic_write_json(staging / META_FILE, meta)
    final = dataset_path(dataset_id)
    os.replace(staging, final)
    return Dataset(dataset_id, final, name, manifest.reset_index(drop=True), meta)
