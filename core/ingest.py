"""Turning whatever a user uploads into a clean, validated dataset, and saying what was wrong.

Sources: a folder of class folders (also inside one extra wrapper folder, or already split
into ``train/``, ``val/``, ``test/``), a ``.zip`` of the same, a CSV with ``filename,label``
columns next to the images or inside the zip, and loose uploads per class.

The pipeline streams: the main thread lists the files and reads zip members through
:class:`core.archive.SafeZip` (which enforces the zip-bomb limits while decompressing);
a small pool reads files on disk, hashes, decodes, validates, normalises and stores them
under names derived from their content (:mod:`core.ingest_worker`). Results are consumed
in submission order, so duplicates are resolved in the source's order. Only a few files
per worker are in flight, so memory stays bounded however many images there are.
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import functools
import io
import multiprocessing
import numbers
import os
import shutil
import stat
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core import datasets
from core.archive import ArchiveError, EntryRejected, SafeZip, ZipLimits
from core.datasets import DatasetError, clean_label
from core.imageio import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, ImageRejected, PreparedImage
from core.ingest_worker import ingest_batch, read_limited, stored_name, too_big
from core.splits import (
    SPLITS,
    assign_new,
    class_rng,
    split_problems,
    stratified_split,
    validate_fractions,
)

__all__ = [
    "DatasetError",
    "IngestLimits",
    "IngestReport",
    "ProgressFn",
    "add_to_dataset",
    "ingest_path",
    "ingest_uploads",
    "ingest_zip_bytes",
    "inspect_source",
    "inspect_uploads",
    "inspect_zip_bytes",
    "trainability_error",
]

ProgressFn = Callable[[int, int, str], None]

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Names (any path component, case-insensitive) that are system clutter, never data.
JUNK_NAMES = frozenset(
    {"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "@eadir", "system volume information"}
)
#: Top-level folder names that mean "already split"; images are pooled and re-split.
SPLIT_FOLDER_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"}
)
FILENAME_COLUMNS = ("filename", "file", "file_name", "image", "path", "filepath", "image_path")
LABEL_COLUMNS = ("label", "class", "category")
EXECUTORS = ("auto", "serial", "thread", "process")

_MAX_LISTED = 10  # examples quoted in one warning
_IMBALANCE_RATIO = 3.0
_FEW_IMAGES = 10
_POOL_THRESHOLD = 48  # below this many files a pool costs more than it saves
_AUTO_EXECUTOR = "thread"  # what "auto" picks for bigger jobs (see bench/ingest.py)


@dataclass(frozen=True)
class IngestLimits:
    """Limits and knobs of one ingest; every field is configurable.

    Attributes:
        max_file_bytes: Largest single file (an upload, or a zip member once expanded).
        max_archive_bytes: Largest zip accepted (its own size).
        max_entries: Most members a zip may list.
        max_total_bytes: Most bytes all members of a zip may expand to.
        max_ratio: Largest compression ratio of a zip member and of the whole zip.
        max_pixels: Largest width x height of an image (decompression bombs).
        max_side: Longest side of stored images (bigger ones are shrunk); None keeps size.
        jpeg_quality: Quality of re-encoded JPEGs.
        keep_clean_jpeg: Store JPEGs that are already RGB, upright and small enough byte for
            byte instead of re-encoding them (lossless and much faster).
    """

    max_file_bytes: int = 64 * MiB
    max_archive_bytes: int = 8 * GiB
    max_entries: int = 200_000
    max_total_bytes: int = 32 * GiB
    max_ratio: float = 100.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int | None = 1024
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    keep_clean_jpeg: bool = True

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_archive_bytes", "max_entries", "max_total_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
        if not isinstance(self.max_pixels, int) or self.max_pixels <= 0:
            raise ValueError(
                f"max_pixels must be a positive integer. Received: max_pixels={self.max_pixels!r}"
            )
        if not self.max_ratio > 1:
            raise ValueError(f"max_ratio must be above 1. Received: max_ratio={self.max_ratio!r}")
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 32):
            raise ValueError(
                f"max_side must be None or an integer >= 32. Received: max_side={self.max_side!r}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(
                f"jpeg_quality must be in [1, 100]. Received: jpeg_quality={self.jpeg_quality!r}"
            )

    def zip_limits(self) -> ZipLimits:
        """The subset :class:`core.archive.SafeZip` enforces."""
        return ZipLimits(
            max_archive_bytes=self.max_archive_bytes,
            max_entries=self.max_entries,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_ratio=self.max_ratio,
        )


@dataclass
class IngestReport:
    """What an ingest (or an inspection) found.

    Attributes:
        classes: Class name -> number of usable images (after duplicates are skipped).
        num_images: Total usable images.
        rejected: ``{"file": ..., "reason": ...}`` for every file that was not used.
        duplicates: Groups of identical files; the first one of each group is kept.
        warnings: Sentences worth reading (label noise, imbalance, animations, ...).
        dataset_id: Id of the dataset created (None for an inspection or a refusal).
        dataset_dir: Its folder.
        error: Why the data cannot be trained on; None when it can.
        splits: Class -> {"train": n, "val": n, "test": n} once a dataset is created.
        ignored: Number of system files skipped (``__MACOSX``, ``.DS_Store``, hidden ...).
        source: What was read (folder, zip or "upload").
    """

    classes: dict[str, int] = field(default_factory=dict)
    num_images: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dataset_id: str | None = None
    dataset_dir: str | None = None
    error: str | None = None
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    ignored: int = 0
    source: str = ""

    @property
    def trainable(self) -> bool:
        """True when the data can be trained on (no blocking error)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "classes": dict(self.classes),
            "num_images": self.num_images,
            "rejected": [dict(row) for row in self.rejected],
            "duplicates": [list(group) for group in self.duplicates],
            "warnings": list(self.warnings),
            "trainable": self.trainable,
            "error": self.error,
            "dataset_id": self.dataset_id,
            "dataset_dir": self.dataset_dir,
            "splits": {label: dict(counts) for label, counts in self.splits.items()},
            "ignored": self.ignored,
            "source": self.source,
        }


# --------------------------------------------------------------------------- sources


@dataclass
class _Entry:
    """One file of a source, before its class is known."""

    parts: tuple[str, ...]
    read: Callable[[], bytes]
    path: Path | None = None  # set for files on disk: workers read them in parallel

    @property
    def name(self) -> str:
        return "/".join(self.parts)


@dataclass
class _Source:
    name: str
    entries: list[_Entry]
    directories: list[tuple[str, ...]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    forced_csv: tuple[str, ...] | None = None


@dataclass
class _Item:
    """One file with its class, ready to be processed."""

    file: str
    label: str
    read: Callable[[], bytes]
    path: Path | None = None


@dataclass
class _Plan:
    items: list[_Item] = field(default_factory=list)
    empty_classes: set[str] = field(default_factory=set)
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loose: int = 0  # files lying beside the class folders instead of inside one


def _is_junk(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_NAMES


def _folder_source(root: Path, limits: IngestLimits) -> _Source:
    source = _Source(name=root.name or str(root), entries=[])
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(current)
        relative = here.relative_to(root).parts
        kept_dirs = []
        for dirname in sorted(dirnames):
            if _is_junk(dirname):
                source.ignored += 1
            elif (here / dirname).is_symlink():
                source.rejected.append(
                    {
                        "file": "/".join((*relative, dirname)),
                        "reason": "symbolic link; not followed",
                    }
                )
            else:
                kept_dirs.append(dirname)
                source.directories.append((*relative, dirname))
        dirnames[:] = kept_dirs
        for filename in sorted(filenames):
            parts = (*relative, filename)
            path = here / filename
            if _is_junk(filename):
                source.ignored += 1
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                source.rejected.append(
                    {"file": "/".join(parts), "reason": "symbolic link; not followed"}
                )
            elif not stat.S_ISREG(mode):
                source.rejected.append(
                    {"file": "/".join(parts), "reason": "not a regular file (pipe, device ...)"}
                )
            else:
                read = functools.partial(read_limited, path, limits.max_file_bytes)
                source.entries.append(_Entry(parts, read, path))
    return source


def _zip_source(archive: SafeZip) -> _Source:
    source = _Source(name=archive.display_name, entries=[])
    source.rejected = [{"file": name, "reason": reason} for name, reason in archive.rejected]
    for member in archive.members:
        if any(_is_junk(part) for part in member.parts):
            source.ignored += 1
            continue
        source.entries.append(_Entry(member.parts, functools.partial(archive.read, member)))
    source.directories = [
        parts for parts in archive.directories if not any(_is_junk(part) for part in parts)
    ]
    return source


# --------------------------------------------------------------------------- layout


def _decode_csv(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "was not UTF-8; read it as Windows-1252"


def _label_columns(header: Sequence[str]) -> tuple[int, int] | None:
    names = [cell.strip().lower() for cell in header]
    file_index = next((names.index(c) for c in FILENAME_COLUMNS if c in names), None)
    label_index = next((names.index(c) for c in LABEL_COLUMNS if c in names), None)
    if file_index is None or label_index is None:
        return None
    return file_index, label_index


def _parse_label_csv(entry: _Entry) -> list[tuple[str, str]] | str:
    """Returns ``(filename, label)`` rows, or a reason the CSV is not a label file."""
    try:
        data = entry.read()
    except EntryRejected as rejection:
        return rejection.reason
    text, note = _decode_csv(data)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    columns = _label_columns(rows[0]) if rows else None
    if columns is None:
        return (
            f"has no filename and label columns (expected a header like "
            f"'filename,label'{'; ' + note if note else ''})"
        )
    file_index, label_index = columns
    width = max(columns) + 1
    return [(row[file_index], row[label_index]) for row in rows[1:] if len(row) >= width]


def _plan_from_csv(csv_entry: _Entry, rows: list[tuple[str, str]], others: list[_Entry]) -> _Plan:
    """Labels files from a CSV; names are matched against the files found, never opened."""
    plan = _Plan()
    base = csv_entry.parts[:-1]
    csv_name = csv_entry.name
    by_path = {entry.parts: entry for entry in others}
    by_basename: dict[str, list[_Entry]] = {}
    for entry in others:
        by_basename.setdefault(entry.parts[-1], []).append(entry)
    used: dict[tuple[str, ...], str] = {}
    for raw_name, raw_label in rows:
        name = raw_name.strip().replace("\\", "/")
        if not name:
            continue
        parts = tuple(part for part in name.split("/") if part not in ("", "."))
        if ".." in parts or name.startswith("/"):
            plan.rejected.append(
                {"file": name, "reason": f"path in {csv_name} leaves its folder; refused"}
            )
            continue
        entry = by_path.get(base + parts) or by_path.get(parts)
        if entry is None and len(by_basename.get(parts[-1], [])) == 1:
            entry = by_basename[parts[-1]][0]
        if entry is None:
            plan.rejected.append({"file": name, "reason": f"listed in {csv_name} but not found"})
            continue
        try:
            label = clean_label(raw_label)
        except ValueError:
            plan.rejected.append({"file": entry.name, "reason": f"no label in {csv_name}"})
            continue
        if entry.parts in used:
            if used[entry.parts] != label:
                plan.warnings.append(
                    f"{entry.name} is listed twice in {csv_name} with different labels "
                    f"({used[entry.parts]!r}, {label!r}); kept the first"
                )
            continue
        used[entry.parts] = label
        plan.items.append(_Item(entry.name, label, entry.read, entry.path))
    unlisted = len(others) - len(used)
    if unlisted:
        plan.warnings.append(f"{unlisted} file(s) not listed in {csv_name} were ignored")
    return plan


def _dir_paths(source: _Source) -> set[tuple[str, ...]]:
    paths = set(source.directories)
    for entry in source.entries:
        for depth in range(1, len(entry.parts)):
            paths.add(entry.parts[:depth])
    return paths


def _unwrap(entries: list[_Entry], dirs: set[tuple[str, ...]]) -> tuple[str, ...]:
    """Descends through wrapper folders: a lone folder (no files beside it) whose own
    children are folders."""
    prefix: tuple[str, ...] = ()
    while True:
        depth = len(prefix)
        if any(len(e.parts) == depth + 1 and e.parts[:depth] == prefix for e in entries):
            return prefix
        children = {p[: depth + 1] for p in dirs if len(p) > depth and p[:depth] == prefix}
        if len(children) != 1:
            return prefix
        (child,) = children
        if not any(len(p) > depth + 1 and p[: depth + 1] == child for p in dirs):
            return prefix
        prefix = child


def _plan_from_folders(source: _Source, entries: list[_Entry]) -> _Plan:
    """Labels files by class folder (after unwrapping, and pooling train/val/test folders)."""
    plan = _Plan()
    dirs = _dir_paths(source)
    prefix = _unwrap(entries, dirs)
    depth = len(prefix)
    top = {p[depth] for p in dirs if len(p) > depth and p[:depth] == prefix}
    label_at = depth
    if (
        top
        and {name.lower() for name in top} <= SPLIT_FOLDER_NAMES
        and all(len(e.parts) >= depth + 3 for e in entries)
        and entries
    ):
        label_at = depth + 1
        plan.warnings.append(
            f"the images were already split into {', '.join(sorted(top))}; they were pooled "
            "by class and split again with the requested fractions and seed"
        )
    cleaned: dict[str, str] = {}
    for path in dirs:
        if len(path) == label_at + 1 and path[:depth] == prefix:
            try:
                cleaned[path[label_at]] = clean_label(path[label_at])
            except ValueError as error:
                plan.rejected.append({"file": "/".join(path), "reason": str(error)})
    for entry in entries:
        if len(entry.parts) < label_at + 2:
            plan.rejected.append({"file": entry.name, "reason": "not inside a class folder"})
            plan.loose += 1
            continue
        label = cleaned.get(entry.parts[label_at])
        if label is None:
            continue  # its folder's name was rejected above
        plan.items.append(_Item(entry.name, label, entry.read, entry.path))
    used = {item.label for item in plan.items}
    plan.empty_classes = set(cleaned.values()) - used
    return plan


def _plan(source: _Source) -> _Plan:
    """Decides each file's class: from a label CSV when there is one, else from folders."""
    csv_entries = [e for e in source.entries if e.parts[-1].lower().endswith(".csv")]
    others = [e for e in source.entries if not e.parts[-1].lower().endswith(".csv")]
    if source.forced_csv is not None:
        csv_entries = [e for e in csv_entries if e.parts == source.forced_csv]
    label_csvs: list[tuple[_Entry, list[tuple[str, str]]]] = []
    notes: list[str] = []
    for entry in sorted(csv_entries, key=lambda e: (len(e.parts), e.parts)):
        parsed = _parse_label_csv(entry)
        if isinstance(parsed, str):
            notes.append(f"{entry.name} {parsed}; ignored")
        else:
            label_csvs.append((entry, parsed))
    if label_csvs:
        shallowest = [c for c in label_csvs if len(c[0].parts) == len(label_csvs[0][0].parts)]
        if len(shallowest) > 1:
            names = ", ".join(c[0].name for c in shallowest)
            raise _LayoutError(f"Found several label CSV files ({names}); keep only one")
        entry, rows = label_csvs[0]
        plan = _plan_from_csv(entry, rows, others)
    else:
        if source.forced_csv is not None:
            raise _LayoutError(
                notes[0].removesuffix("; ignored") if notes else "The CSV file could not be read"
            )
        plan = _plan_from_folders(source, others)
    plan.warnings[:0] = notes
    plan.rejected[:0] = source.rejected
    return plan


class _LayoutError(Exception):
    """The source's layout cannot be understood (message for the report)."""


# --------------------------------------------------------------------------- processing


@dataclass
class _Seen:
    file: str
    label: str
    group: list[str] | None = None
    rejected: str | None = None


@dataclass
class _Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    cross_class: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Progress:
    def __init__(self, total: int, callback: ProgressFn | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback
        self.every = max(1, total // 100)

    def start(self, message: str) -> None:
        if self.callback:
            self.callback(0, self.total, message)

    def step(self, message: str) -> None:
        self.done += 1
        if self.callback and (self.done % self.every == 0 or self.done == self.total):
            self.callback(self.done, self.total, message)


class _InlineExecutor(futures.Executor):
    """Runs each task at submission: the pool-free path for small jobs and for tests."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: futures.Future = futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _make_executor(
    executor: str, workers: int | None, count: int
) -> tuple[futures.Executor, int, int]:
    """Returns ``(pool, batch size, batches in flight)`` for ``count`` files."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}. Received: executor={executor!r}")
    cores = available_cores()
    if executor == "auto":
        executor = _AUTO_EXECUTOR if count >= _POOL_THRESHOLD and cores >= 2 else "serial"
    if executor == "serial":
        return _InlineExecutor(), 1, 1
    if executor == "thread":
        # Decoding, hashing and file I/O release the GIL; twice as many threads as cores
        # keeps the cores busy while some threads wait on the disk (measured best on 2 cores).
        size = workers or min(8, 2 * cores)
        pool = futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="ingest")
        return pool, 1, 4 * size
    # Workers come from a fork server: a clean single-threaded process (safe to fork even
    # when this process runs threads, unlike plain fork) started once and preloaded with
    # core.ingest_worker (Pillow + numpy only), so later pools start in milliseconds.
    # Files travel in batches so one pickling round trip serves several images.
    size = workers or cores
    pool = futures.ProcessPoolExecutor(max_workers=size, mp_context=_process_context())
    return pool, 8, 3 * size


@functools.cache
def _process_context() -> multiprocessing.context.BaseContext:
    """The fork-server context where available (POSIX), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["core.ingest_worker"])
    return context


def _process(
    items: Sequence[_Item],
    limits: IngestLimits,
    *,
    dataset_dir: Path | None,
    progress: ProgressFn | None,
    workers: int | None,
    executor: str,
    seen: dict[str, _Seen] | None = None,
    live: bool = False,
) -> _Outcome:
    """Reads, deduplicates, validates and (when ``dataset_dir`` is set) stores every item.

    Results are consumed in submission order, so "the first copy is kept" means the first
    in the source's order however the pool schedules the work. ``live`` means
    ``dataset_dir`` is a published dataset (files are then written atomically).
    """
    outcome = _Outcome()
    seen = {} if seen is None else seen
    tracker = _Progress(len(items), progress)
    tracker.start(f"Reading {len(items)} files")
    if dataset_dir is not None:
        (dataset_dir / datasets.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    pool, batch_size, in_flight = _make_executor(executor, workers, len(items))
    options = (limits.max_pixels, limits.max_side, limits.jpeg_quality, limits.keep_clean_jpeg)
    target = None if dataset_dir is None else str(dataset_dir)
    pending: deque[tuple[list[_Item], futures.Future]] = deque()
    batch_items: list[_Item] = []
    batch_tasks: list[tuple] = []

    def reject(file: str, reason: str) -> None:
        outcome.rejected.append({"file": file, "reason": reason})

    def submit() -> None:
        if batch_items:
            pending.append((list(batch_items), pool.submit(ingest_batch, list(batch_tasks))))
            batch_items.clear()
            batch_tasks.clear()

    def finish() -> None:
        batch, future = pending.popleft()
        for item, (sha, kind, value) in zip(batch, future.result(), strict=True):
            tracker.step(item.file)
            _collect(outcome, seen, item, sha, kind, value, reject)

    try:
        with pool:
            for item in items:
                if item.path is not None:
                    source: bytes | str = str(item.path)
                else:
                    try:
                        source = item.read()
                    except (EntryRejected, ImageRejected) as rejection:
                        reject(item.file, rejection.reason)
                        tracker.step(item.file)
                        continue
                batch_items.append(item)
                batch_tasks.append((source, limits.max_file_bytes, target, live, options))
                if len(batch_items) >= batch_size:
                    submit()
                while len(pending) >= in_flight:
                    finish()
            submit()
            while pending:
                finish()
    finally:
        for _, future in pending:
            future.cancel()
    return outcome


def _collect(
    outcome: _Outcome,
    seen: dict[str, _Seen],
    item: _Item,
    sha: str | None,
    kind: str,
    value: object,
    reject: Callable[[str, str], None],
) -> None:
    """Files one worker result: a rejection, a duplicate, or a new manifest row."""
    if sha is None:
        reject(item.file, str(value))
        return
    first = seen.get(sha)
    if first is not None:
        _record_duplicate(outcome, first, item, reject)
        return
    seen[sha] = _Seen(item.file, item.label, rejected=str(value) if kind != "ok" else None)
    if kind != "ok":
        reject(item.file, str(value))
        return
    assert isinstance(value, PreparedImage)
    outcome.rows.append(
        {
            "image": stored_name(sha),
            "label": item.label,
            "split": "",
            "sha256": sha,
            "width": value.width,
            "height": value.height,
            "original_name": item.file,
            "source": "",
        }
    )
    outcome.notes.extend(f"{item.file}: {note}" for note in value.warnings)


def _record_duplicate(
    outcome: _Outcome, first: _Seen, item: _Item, reject: Callable[[str, str], None]
) -> None:
    if first.rejected is not None:
        reject(item.file, f"identical to {first.file}, which was rejected: {first.rejected}")
        return
    if first.group is None:
        first.group = [first.file]
        outcome.groups.append(first.group)
    first.group.append(item.file)
    if item.label != first.label:
        outcome.cross_class.append((first.file, first.label, item.file, item.label))


# --------------------------------------------------------------------------- reporting


def _examples(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:_MAX_LISTED])
    return shown + (
        f"; ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    )


def _summarise(outcome: _Outcome, counts: Mapping[str, int]) -> list[str]:
    warnings: list[str] = []
    if outcome.cross_class:
        pairs = [f"{a!r} ({la}) = {b!r} ({lb})" for a, la, b, lb in outcome.cross_class]
        warnings.append(
            f"label noise: {len(pairs)} image(s) appear in two different classes; only the "
            f"first copy was kept, fix the labels if it is in the wrong class: {_examples(pairs)}"
        )
    skipped = sum(len(group) - 1 for group in outcome.groups) - len(outcome.cross_class)
    if skipped > 0:
        warnings.append(
            f"{skipped} duplicate image(s) within a class were skipped (see duplicates)"
        )
    if outcome.notes:
        warnings.append(_examples(outcome.notes))
    nonzero = {label: n for label, n in counts.items() if n > 0}
    if len(nonzero) >= 2:
        big = max(nonzero, key=nonzero.__getitem__)
        small = min(nonzero, key=nonzero.__getitem__)
        if nonzero[big] >= _IMBALANCE_RATIO * nonzero[small]:
            warnings.append(
                f"classes are imbalanced: {big!r} has {nonzero[big]} images, {small!r} has "
                f"{nonzero[small]} ({nonzero[big] / nonzero[small]:.1f}x); consider 'balanced' "
                f"class weights or more images of {small!r}"
            )
    few = sorted(label for label, n in nonzero.items() if n < _FEW_IMAGES)
    if few and all(n >= 1 for n in nonzero.values()):
        warnings.append(
            f"{len(few)} class(es) have fewer than {_FEW_IMAGES} images "
            f"({', '.join(map(repr, few[:_MAX_LISTED]))}); 20+ per class give a more reliable model"
        )
    folded: dict[str, list[str]] = {}
    for label in counts:
        folded.setdefault(label.casefold(), []).append(label)
    for variants in folded.values():
        if len(variants) > 1:
            warnings.append(
                f"classes {', '.join(map(repr, sorted(variants)))} differ only in case; "
                "rename one if they are the same class"
            )
    return warnings


def trainability_error(
    counts: Mapping[str, int], val_fraction: float, test_fraction: float, *, loose: int = 0
) -> str | None:
    """Says why these class counts cannot be trained on, or None when they can.

    Args:
        counts: Class name -> number of usable images.
        val_fraction: Validation share the split will use.
        test_fraction: Test share the split will use.
        loose: Files found outside any class folder (mentioned in the message).

    Returns:
        A message that names the problem and what to do, or None.
    """
    if len(counts) < 2:
        found = (
            f"found {len(counts)} class ({next(iter(counts))!r})" if counts else "found no classes"
        )
        loose_note = f" ({loose} files are not inside any class folder)" if loose else ""
        return (
            f"Training needs at least 2 classes but {found}{loose_note}. Put each class's "
            "images in its own folder (e.g. cats/ and dogs/) or list them in a CSV with "
            "filename,label columns."
        )
    problems = split_problems(counts, val_fraction, test_fraction)
    if problems:
        return "Some classes are too small to split: " + "; ".join(problems) + "."
    return None


def _report_for(
    plan: _Plan,
    outcome: _Outcome,
    source: _Source,
    val_fraction: float,
    test_fraction: float,
) -> IngestReport:
    counts = Counter(row["label"] for row in outcome.rows)
    labels = {item.label for item in plan.items} | plan.empty_classes
    classes = {label: counts.get(label, 0) for label in sorted(labels)}
    report = IngestReport(
        classes=classes,
        num_images=sum(classes.values()),
        rejected=plan.rejected + outcome.rejected,
        duplicates=[list(group) for group in outcome.groups],
        warnings=plan.warnings + _summarise(outcome, classes),
        ignored=source.ignored,
        source=source.name,
    )
    report.error = trainability_error(classes, val_fraction, test_fraction, loose=plan.loose)
    return report


# --------------------------------------------------------------------------- entry points


def _open_path(path: Path, limits: IngestLimits) -> tuple[_Source, SafeZip | None]:
    if not path.exists():
        raise _LayoutError(f"No such file or folder: {path}")
    if path.is_dir():
        return _folder_source(path, limits), None
    if zipfile.is_zipfile(path):
        archive = SafeZip(path, limits.zip_limits(), display_name=path.name)
        return _zip_source(archive), archive
    if path.suffix.lower() == ".csv":
        source = _folder_source(path.parent, limits)
        source.forced_csv = (path.name,)
        source.name = path.name
        return source, None
    raise _LayoutError(
        f"Expected a folder of class folders, a .zip or a labels .csv; received the file "
        f"{path.name!r}"
    )


_Opener = Callable[[], tuple["_Source", "_Plan", "SafeZip | None"]]


def _path_opener(path: Path, limits: IngestLimits) -> _Opener:
    def open_source() -> tuple[_Source, _Plan, SafeZip | None]:
        source, archive = _open_path(path, limits)
        try:
            return source, _plan(source), archive
        except BaseException:
            if archive is not None:
                archive.close()
            raise

    return open_source


def _run(
    open_source: _Opener,
    *,
    name: str | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limits: IngestLimits,
    progress: ProgressFn | None,
    workers: int | None,
    executor: str,
) -> IngestReport:
    """Shared driver: inspect when ``name`` is None, else build and publish a dataset."""
    validate_fractions(val_fraction, test_fraction)
    store = name is not None
    if store and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string. Received: name={name!r}")
    if store and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
    seed = int(seed)
    name = name.strip() if store else None
    report = IngestReport()
    staging: Path | None = None
    archive: SafeZip | None = None
    try:
        source, plan, archive = open_source()
        report.source = source.name
        report.ignored = source.ignored
        report.rejected = list(plan.rejected)
        report.warnings = list(plan.warnings)
        if store:
            early = Counter(item.label for item in plan.items)
            early.update({label: 0 for label in plan.empty_classes})
            error = trainability_error(early, val_fraction, test_fraction, loose=plan.loose)
            if error:
                report.classes = dict(sorted(early.items()))
                report.num_images = sum(early.values())
                report.error = error
                raise DatasetError(error, report)
            dataset_id = datasets.new_dataset_id(name)
            staging = datasets.staging_path(dataset_id)
        outcome = _process(
            plan.items,
            limits,
            dataset_dir=staging,
            progress=progress,
            workers=workers,
            executor=executor,
        )
        report = _report_for(plan, outcome, source, val_fraction, test_fraction)
        if report.error and store:
            raise DatasetError(report.error, report)
        if not store:
            return report
        for row in outcome.rows:
            row["source"] = source.name
        outcome.rows.sort(key=lambda row: (row["label"], row["original_name"]))
        manifest = datasets.manifest_frame(outcome.rows)
        manifest["split"] = stratified_split(
            list(manifest["label"]),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        report.splits = _split_counts(manifest)
        report.dataset_id = dataset_id
        report.dataset_dir = str(datasets.dataset_path(dataset_id))
        datasets.publish_dataset(
            staging,
            dataset_id,
            name=name,
            manifest=manifest,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            report=report.to_dict(),
        )
        staging = None
        return report
    except (_LayoutError, ArchiveError) as error:
        report.error = str(error)
        if store:
            raise DatasetError(report.error, report) from error
        return report
    except OSError as error:  # disk full, permissions: nothing is kept, say why
        if not store:
            raise
        report.error = f"Could not write the dataset: {error}"
        raise DatasetError(report.error, report) from error
    finally:
        if archive is not None:
            archive.close()
        if staging is not None and staging.exists():
            shutil.rmtree(staging)


def _split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for label, split in zip(manifest["label"], manifest["split"], strict=True):
        counts.setdefault(label, dict.fromkeys(SPLITS, 0))[split] += 1
    return dict(sorted(counts.items()))


def _default_name(path: Path) -> str:
    return path.stem if path.suffix.lower() in (".zip", ".csv") else path.name


def inspect_source(
    path: str | os.PathLike[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Reads a folder, zip or labels CSV and reports what ingest would do; writes nothing.

    Args:
        path: A folder of class folders, a ``.zip``, or a CSV with filename,label columns.
        val_fraction: Validation share used to judge whether classes are big enough.
        test_fraction: Test share, likewise.
        limits: Ingest limits (defaults when None).
        progress: ``progress(done, total, message)``.
        workers: Decoding workers (default: every available core).
        executor: ``"auto"``, ``"serial"``, ``"thread"`` or ``"process"``.

    Returns:
        The report; ``report.error`` says why the data cannot be trained on, if so.
    """
    limits = limits or IngestLimits()
    return _run(
        _path_opener(Path(path), limits),
        name=None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=0,
        limits=limits,
        progress=progress,
        workers=workers,
        executor=executor,
    )


def ingest_path(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Builds a dataset from a folder of class folders, a ``.zip`` or a labels CSV.

    Args:
        path: The source (see :func:`inspect_source`).
        name: Display name of the dataset (default: the folder or file name).
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the final test.
        seed: Seed of the stratified split.
        limits: Ingest limits (defaults when None).
        progress: ``progress(done, total, message)``.
        workers: Decoding workers (default: every available core).
        executor: ``"auto"``, ``"serial"``, ``"thread"`` or ``"process"``.

    Returns:
        The report, with ``dataset_id`` and ``dataset_dir`` set.

    Raises:
        DatasetError: If no dataset can be made (fewer than 2 classes, a class too small,
            a zip bomb, ...); ``error.report`` holds what was read.
        ValueError: If a fraction is out of range.
    """
    limits = limits or IngestLimits()
    path = Path(path)
    return _run(
        _path_opener(path, limits),
        name=name or _default_name(path),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limits=limits,
        progress=progress,
        workers=workers,
        executor=executor,
    )


def _zip_bytes_opener(data: bytes, display_name: str, limits: IngestLimits) -> _Opener:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes. Received: {type(data).__name__}")

    def open_source() -> tuple[_Source, _Plan, SafeZip | None]:
        archive = SafeZip(data, limits.zip_limits(), display_name=display_name)
        try:
            source = _zip_source(archive)
            return source, _plan(source), archive
        except BaseException:
            archive.close()
            raise

    return open_source


def ingest_zip_bytes(
    data: bytes,
    *,
    name: str,
    filename: str = "upload.zip",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Builds a dataset from the bytes of an uploaded zip (see :func:`ingest_path`).

    Args:
        data: The zip file's bytes.
        name: Display name of the dataset.
        filename: The uploaded file's name, for messages.

    Raises:
        DatasetError: As :func:`ingest_path`.
    """
    limits = limits or IngestLimits()
    return _run(
        _zip_bytes_opener(data, filename, limits),
        name=name,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limits=limits,
        progress=progress,
        workers=workers,
        executor=executor,
    )


def inspect_zip_bytes(
    data: bytes,
    *,
    filename: str = "upload.zip",
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Reports on an uploaded zip without storing anything (see :func:`inspect_source`)."""
    limits = limits or IngestLimits()
    return _run(
        _zip_bytes_opener(data, filename, limits),
        name=None,
        val_fraction=0.15,
        test_fraction=0.15,
        seed=0,
        limits=limits,
        progress=progress,
        workers=None,
        executor="auto",
    )


def _upload_reader(data: bytes, max_bytes: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if len(data) > max_bytes:
            raise EntryRejected(too_big(max_bytes))
        return bytes(data)

    return read


def _uploads_opener(
    files_by_class: Mapping[str, Iterable[tuple[str, bytes]]], limits: IngestLimits
) -> _Opener:
    """Validates the uploads up front (type errors surface at the call) and plans them."""
    if not isinstance(files_by_class, Mapping):
        raise TypeError(
            "files_by_class must be a dict of class name -> list of (filename, bytes). "
            f"Received: {type(files_by_class).__name__}"
        )
    plan = _Plan()
    source = _Source(name="upload", entries=[])
    for raw_label, files in files_by_class.items():
        try:
            label = clean_label(raw_label)
        except ValueError as error:
            raise DatasetError(f"Invalid class name: {error}") from error
        count = 0
        for pair in files:
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise TypeError(f"Each file must be a (filename, bytes) pair. Received: {pair!r}")
            filename, data = pair
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(
                    f"File {filename!r} must be given as bytes. Received: {type(data).__name__}"
                )
            base = str(filename).replace("\\", "/").rsplit("/", 1)[-1] or "unnamed"
            if _is_junk(base):
                source.ignored += 1
                continue
            plan.items.append(
                _Item(f"{label}/{base}", label, _upload_reader(data, limits.max_file_bytes))
            )
            count += 1
        if count == 0:
            plan.empty_classes.add(label)
    plan.items.sort(key=lambda item: (item.label, item.file))
    return lambda: (source, plan, None)


def inspect_uploads(
    files_by_class: Mapping[str, Iterable[tuple[str, bytes]]],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Reports on loose uploads without storing anything (see :func:`ingest_uploads`)."""
    limits = limits or IngestLimits()
    return _run(
        _uploads_opener(files_by_class, limits),
        name=None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=0,
        limits=limits,
        progress=progress,
        workers=None,
        executor="auto",
    )


def ingest_uploads(
    files_by_class: Mapping[str, Iterable[tuple[str, bytes]]],
    *,
    name: str,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: str = "auto",
) -> IngestReport:
    """Builds a dataset from files uploaded per class (what the Data page hands over).

    Args:
        files_by_class: Class name -> list of ``(filename, bytes)``. Filenames are only
            shown in reports; images are stored under generated names.
        name: Display name of the dataset.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the final test.
        seed: Seed of the stratified split.
        limits: Ingest limits (``max_file_bytes`` caps each upload).
        progress: ``progress(done, total, message)``.
        workers: Decoding workers (default: every available core).
        executor: ``"auto"``, ``"serial"``, ``"thread"`` or ``"process"``.

    Returns:
        The report, with ``dataset_id`` and ``dataset_dir`` set.

    Raises:
        DatasetError: If no dataset can be made; ``error.report`` holds what was read.
        TypeError: If ``files_by_class`` is not shaped as described.
    """
    limits = limits or IngestLimits()
    return _run(
        _uploads_opener(files_by_class, limits),
        name=name,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limits=limits,
        progress=progress,
        workers=workers,
        executor=executor,
    )


def add_to_dataset(
    dataset_id: str,
    label: str,
    files: Sequence[tuple[str, bytes]],
    *,
    limits: IngestLimits | None = None,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Adds uploaded files to one class of an existing dataset (see
    :func:`core.datasets.add_images`, which is the public name)."""
    limits = limits or IngestLimits()
    label = clean_label(label)
    opener = _uploads_opener({label: files}, limits)
    source, plan, _ = opener()
    with datasets.locked(dataset_id) as dataset:
        manifest = dataset.manifest
        seen = {
            sha: _Seen(image, existing_label)
            for sha, image, existing_label in zip(
                manifest["sha256"], manifest["image"], manifest["label"], strict=True
            )
        }
        outcome = _process(
            plan.items,
            limits,
            dataset_dir=dataset.dir,
            progress=progress,
            workers=None,
            executor="auto",
            seen=seen,
            live=True,
        )
        new_rows = pd.DataFrame(outcome.rows, columns=datasets.MANIFEST_COLUMNS)
        new_rows["source"] = source.name
        if len(new_rows):
            existing = manifest.loc[manifest["label"] == label, "split"].value_counts().to_dict()
            rng = class_rng(dataset.seed + len(manifest), label)
            new_rows["split"] = assign_new(
                existing,
                len(new_rows),
                val_fraction=dataset.val_fraction,
                test_fraction=dataset.test_fraction,
                rng=rng,
            )
            merged = pd.concat([manifest, datasets.manifest_frame(new_rows.to_dict("records"))])
            updated = datasets.save_dataset(dataset, merged)
        else:
            updated = dataset
    classes = dict(Counter(row["label"] for row in outcome.rows)) or {label: 0}
    report = IngestReport(
        classes=classes,
        num_images=len(outcome.rows),
        rejected=plan.rejected + outcome.rejected,
        duplicates=[list(group) for group in outcome.groups],
        warnings=_summarise(outcome, {}) + updated.problems(),
        dataset_id=updated.id,
        dataset_dir=str(updated.dir),
        splits=_split_counts(updated.manifest[updated.manifest["label"] == label]),
        ignored=source.ignored,
        source=source.name,
    )
    if not outcome.rows:
        report.error = (
            f"No image was added to {label!r}: none of the {len(files)} file(s) was usable."
        )
    return report
