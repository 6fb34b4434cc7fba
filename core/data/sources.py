"""Where images come from: one source object per kind, and how its files become classes.

- :class:`FolderSource`: a folder of class folders (also inside one extra wrapper folder, or
  already split into ``train/``, ``val/``, ``test/``), or with a labels CSV beside the images;
- :class:`ZipSource`: a ``.zip`` of the same, as a file or as uploaded bytes;
- :class:`CsvSource`: a CSV with ``filename,label`` columns next to the images;
- :class:`UploadSource`: loose files uploaded per class (the Data page, the webcam).

``source.open(limits)`` lists the files (a :class:`Listing`) and plans them into labelled
:class:`Item` s (a :class:`Plan`); the ingest driver (:mod:`core.data.ingest`) reads and
stores them. Nothing here decodes an image.
"""

from __future__ import annotations

import functools
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.data.archive import EntryRejected, SafeZip
from core.data.decode import read_limited, too_big
from core.data.label_csv import read_label_csv
from core.data.limits import IngestLimits
from core.data.store import DatasetError, clean_label

#: Names (any path component, case-insensitive) that are system clutter, never data.
JUNK_NAMES = frozenset(
    {"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "@eadir", "system volume information"}
)
#: Top-level folder names that mean "already split"; images are pooled and re-split.
SPLIT_FOLDER_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"}
)


@dataclass
class Entry:
    """One file of a source, before its class is known."""

    parts: tuple[str, ...]
    read: Callable[[], bytes]
    path: Path | None = None  # set for files on disk: workers read them in parallel

    @property
    def name(self) -> str:
        return "/".join(self.parts)


@dataclass
class Listing:
    name: str
    entries: list[Entry]
    directories: list[tuple[str, ...]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    forced_csv: tuple[str, ...] | None = None
    #: NFC path component -> the raw forms it was written in (zips normalise while listing).
    unicode_forms: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Item:
    """One file with its class, ready to be processed."""

    file: str
    label: str
    read: Callable[[], bytes]
    path: Path | None = None


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    empty_classes: set[str] = field(default_factory=set)
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loose: int = 0  # files lying beside the class folders instead of inside one


def is_junk(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_NAMES


def list_folder(root: Path, limits: IngestLimits) -> Listing:
    source = Listing(name=root.name or str(root), entries=[])
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(current)
        relative = here.relative_to(root).parts
        kept_dirs = []
        for dirname in sorted(dirnames):
            if is_junk(dirname):
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
            if is_junk(filename):
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
                source.entries.append(Entry(parts, read, path))
    return source


def list_zip(archive: SafeZip) -> Listing:
    source = Listing(name=archive.display_name, entries=[])
    source.rejected = [{"file": name, "reason": reason} for name, reason in archive.rejected]
    for member in archive.members:
        if any(is_junk(part) for part in member.parts):
            source.ignored += 1
            continue
        source.entries.append(Entry(member.parts, functools.partial(archive.read, member)))
    source.directories = [
        parts for parts in archive.directories if not any(is_junk(part) for part in parts)
    ]
    source.unicode_forms = archive.unicode_forms
    return source


# --------------------------------------------------------------------------- layout


def _plan_from_csv(csv_entry: Entry, rows: list[tuple[str, str]], others: list[Entry]) -> Plan:
    """Labels files from a CSV; names are matched against the files found, never opened."""
    plan = Plan()
    base = csv_entry.parts[:-1]
    csv_name = csv_entry.name
    by_path = {entry.parts: entry for entry in others}
    by_basename: dict[str, list[Entry]] = {}
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
        plan.items.append(Item(entry.name, label, entry.read, entry.path))
    unlisted = len(others) - len(used)
    if unlisted:
        plan.warnings.append(f"{unlisted} file(s) not listed in {csv_name} were ignored")
    return plan


#: Deepest folder nesting a source may have (class folders sit 1-3 levels down in practice).
MAX_FOLDER_DEPTH = 32


class _Folder:
    """One folder of a source: its sub-folders by name and whether files lie directly in it."""

    __slots__ = ("children", "has_files")

    def __init__(self) -> None:
        self.children: dict[str, _Folder] = {}
        self.has_files = False

    def child(self, name: str) -> _Folder:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = _Folder()
        return node


def _folder_tree(source: Listing, entries: list[Entry]) -> _Folder:
    """The folder tree of a source, built in time linear in the total number of path parts."""
    root = _Folder()
    for parts in source.directories:
        node = root
        for part in parts:
            node = node.child(part)
    for entry in entries:
        node = root
        for part in entry.parts[:-1]:
            node = node.child(part)
        node.has_files = True
    return root


def _unwrap(root: _Folder) -> tuple[tuple[str, ...], _Folder]:
    """Descends through wrapper folders: a lone folder (no files beside it) whose own
    children are folders. Returns the prefix and its folder."""
    prefix: tuple[str, ...] = ()
    node = root
    while not node.has_files and len(node.children) == 1:
        ((name, child),) = node.children.items()
        if not child.children:
            break
        prefix += (name,)
        node = child
    return prefix, node


def _too_deep(source: Listing, entries: list[Entry], plan: Plan) -> list[Entry]:
    """Drops files and folders nested deeper than :data:`MAX_FOLDER_DEPTH`, with a reason."""
    kept = [e for e in entries if len(e.parts) <= MAX_FOLDER_DEPTH + 1]
    if len(kept) != len(entries):
        reason = (
            f"nested more than {MAX_FOLDER_DEPTH} folders deep; put class folders at most "
            "a few levels down"
        )
        plan.rejected.extend(
            {"file": e.name[:300], "reason": reason}
            for e in entries
            if len(e.parts) > MAX_FOLDER_DEPTH + 1
        )
    source.directories = [d for d in source.directories if len(d) <= MAX_FOLDER_DEPTH]
    return kept


def _plan_from_folders(source: Listing, entries: list[Entry]) -> Plan:
    """Labels files by class folder (after unwrapping, and pooling train/val/test folders).

    Runs in time linear in the number of path parts (folder nesting is also capped at
    :data:`MAX_FOLDER_DEPTH`), so a zip nested thousands of folders deep stays cheap.
    """
    plan = Plan()
    entries = _too_deep(source, entries, plan)
    prefix, node = _unwrap(_folder_tree(source, entries))
    depth = len(prefix)
    top = set(node.children)
    label_at = depth
    class_folders: list[tuple[tuple[str, ...], str]] = [
        ((*prefix, name), name) for name in sorted(node.children)
    ]
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
        class_folders = [
            ((*prefix, split, name), name)
            for split in sorted(node.children)
            for name in sorted(node.children[split].children)
        ]
    cleaned: dict[str, str] = {}
    raw_forms: dict[str, str] = {}
    for path, name in class_folders:
        try:
            cleaned[name] = clean_label(name)
        except ValueError as error:
            plan.rejected.append({"file": "/".join(path), "reason": str(error)})
            continue
        for form in source.unicode_forms.get(name, {name}):
            raw_forms[form] = cleaned[name]
    plan.warnings.extend(merged_label_warnings(raw_forms))
    for entry in entries:
        if len(entry.parts) < label_at + 2 or entry.parts[:depth] != prefix:
            plan.rejected.append({"file": entry.name, "reason": "not inside a class folder"})
            plan.loose += 1
            continue
        label = cleaned.get(entry.parts[label_at])
        if label is None:
            continue  # its folder's name was rejected above
        plan.items.append(Item(entry.name, label, entry.read, entry.path))
    used = {item.label for item in plan.items}
    plan.empty_classes = set(cleaned.values()) - used
    return plan


def merged_label_warnings(cleaned: Mapping[str, str]) -> list[str]:
    """Says which different raw names became one class once cleaned (NFC/NFD, spaces).

    Args:
        cleaned: Raw name -> cleaned class name.

    Returns:
        One warning per class that several raw names were merged into.
    """
    by_label: dict[str, list[str]] = {}
    for raw, label in cleaned.items():
        by_label.setdefault(label, []).append(raw)
    warnings = []
    for label, raws in sorted(by_label.items()):
        if len(raws) < 2:
            continue
        forms = ", ".join(ascii(raw) for raw in sorted(raws))
        warnings.append(
            f"{len(raws)} folder names differ only in Unicode form or spacing ({forms}) and "
            f"were merged into one class {label!r}; rename them if they are different classes"
        )
    return warnings


def plan_listing(source: Listing) -> Plan:
    """Decides each file's class: from a label CSV when there is one, else from folders."""
    csv_entries = [e for e in source.entries if e.parts[-1].lower().endswith(".csv")]
    others = [e for e in source.entries if not e.parts[-1].lower().endswith(".csv")]
    if source.forced_csv is not None:
        csv_entries = [e for e in csv_entries if e.parts == source.forced_csv]
    label_csvs: list[tuple[Entry, list[tuple[str, str]]]] = []
    notes: list[str] = []
    for entry in sorted(csv_entries, key=lambda e: (len(e.parts), e.parts)):
        parsed = read_label_csv(entry)
        if isinstance(parsed, str):
            notes.append(f"{entry.name} {parsed}; ignored")
        else:
            label_csvs.append((entry, parsed))
    if label_csvs:
        shallowest = [c for c in label_csvs if len(c[0].parts) == len(label_csvs[0][0].parts)]
        if len(shallowest) > 1:
            names = ", ".join(c[0].name for c in shallowest)
            raise LayoutError(f"Found several label CSV files ({names}); keep only one")
        entry, rows = label_csvs[0]
        plan = _plan_from_csv(entry, rows, others)
    else:
        if source.forced_csv is not None:
            raise LayoutError(
                notes[0].removesuffix("; ignored") if notes else "The CSV file could not be read"
            )
        plan = _plan_from_folders(source, others)
    plan.warnings[:0] = notes
    plan.rejected[:0] = source.rejected
    return plan


class LayoutError(Exception):
    """The source's layout cannot be understood (message for the report)."""


Opened = tuple[Listing, Plan, "SafeZip | None"]


def _planned(listing: Listing, archive: SafeZip | None) -> Opened:
    try:
        return listing, plan_listing(listing), archive
    except BaseException:
        if archive is not None:
            archive.close()
        raise


@dataclass(frozen=True)
class FolderSource:
    """A folder of class folders on disk (or one that holds a labels CSV)."""

    path: Path

    @property
    def default_name(self) -> str:
        """The dataset name used when the user gives none."""
        return self.path.name

    def open(self, limits: IngestLimits) -> Opened:
        """Lists and plans the folder; raises :class:`LayoutError` if it is not one."""
        if not self.path.is_dir():
            raise LayoutError(f"No such folder: {self.path}")
        return _planned(list_folder(self.path, limits), None)


@dataclass(frozen=True)
class CsvSource:
    """A CSV with ``filename,label`` columns; the files lie in the CSV's folder."""

    path: Path

    @property
    def default_name(self) -> str:
        """The dataset name used when the user gives none."""
        return self.path.stem

    def open(self, limits: IngestLimits) -> Opened:
        """Lists the CSV's folder and plans the files the CSV names."""
        if not self.path.is_file():
            raise LayoutError(f"No such file: {self.path}")
        listing = list_folder(self.path.parent, limits)
        listing.forced_csv = (self.path.name,)
        listing.name = self.path.name
        return _planned(listing, None)


@dataclass(frozen=True)
class ZipSource:
    """A zip of class folders (or with a labels CSV): a file on disk or uploaded bytes.

    Args:
        data: The zip's path, or its bytes.
        filename: The name shown in messages (default: the file's name, or "upload.zip").
    """

    data: Path | str | bytes
    filename: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            object.__setattr__(self, "data", Path(self.data))
        if not isinstance(self.data, Path | bytes | bytearray | memoryview):
            raise TypeError(f"data must be a path or bytes. Received: {type(self.data).__name__}")

    @property
    def display_name(self) -> str:
        """The zip's name for messages."""
        if self.filename:
            return self.filename
        return self.data.name if isinstance(self.data, Path) else "upload.zip"

    @property
    def default_name(self) -> str:
        """The dataset name used when the user gives none."""
        return Path(self.display_name).stem

    def open(self, limits: IngestLimits) -> Opened:
        """Opens the zip with the zip-bomb limits, lists and plans its members."""
        archive = SafeZip(self.data, limits.zip_limits(), display_name=self.display_name)
        try:
            listing = list_zip(archive)
        except BaseException:
            archive.close()
            raise
        return _planned(listing, archive)


@dataclass(frozen=True)
class UnreadableSource:
    """A path that is neither a folder, a zip nor a CSV; opening it says so."""

    path: Path
    reason: str

    @property
    def default_name(self) -> str:
        """The dataset name used when the user gives none."""
        return self.path.stem

    def open(self, limits: IngestLimits) -> Opened:  # noqa: ARG002 - the Source interface
        """Raises :class:`LayoutError` with the reason."""
        raise LayoutError(self.reason)


def _upload_reader(data: bytes, max_bytes: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if len(data) > max_bytes:
            raise EntryRejected(too_big(max_bytes))
        return bytes(data)

    return read


class UploadSource:
    """Files uploaded per class, as ``{class name: [(filename, bytes), ...]}``.

    The shape is checked here, so a caller's mistake surfaces at construction.

    Raises:
        TypeError: If ``files_by_class`` is not shaped as described.
        DatasetError: If a class name is not allowed.
    """

    default_name = None

    def __init__(self, files_by_class: Mapping[str, Iterable[tuple[str, bytes]]]) -> None:
        if not isinstance(files_by_class, Mapping):
            raise TypeError(
                "files_by_class must be a dict of class name -> list of (filename, bytes). "
                f"Received: {type(files_by_class).__name__}"
            )
        self.files: list[tuple[str, str, bytes]] = []  # (label, base name, bytes)
        self.empty_classes: set[str] = set()
        self.ignored = 0
        for raw_label, files in files_by_class.items():
            try:
                label = clean_label(raw_label)
            except ValueError as error:
                raise DatasetError(f"Invalid class name: {error}") from error
            count = 0
            for pair in files:
                if not (isinstance(pair, tuple | list) and len(pair) == 2):
                    raise TypeError(
                        f"Each file must be a (filename, bytes) pair. Received: {pair!r}"
                    )
                filename, data = pair
                if not isinstance(data, bytes | bytearray | memoryview):
                    raise TypeError(
                        f"File {filename!r} must be given as bytes. Received: {type(data).__name__}"
                    )
                base = str(filename).replace("\\", "/").rsplit("/", 1)[-1] or "unnamed"
                if is_junk(base):
                    self.ignored += 1
                    continue
                self.files.append((label, base, data))
                count += 1
            if count == 0:
                self.empty_classes.add(label)

    def open(self, limits: IngestLimits) -> Opened:
        """Plans the uploads (one item per file, its class given)."""
        plan = Plan(empty_classes=set(self.empty_classes))
        listing = Listing(name="upload", entries=[], ignored=self.ignored)
        for label, base, data in self.files:
            plan.items.append(
                Item(f"{label}/{base}", label, _upload_reader(data, limits.max_file_bytes))
            )
        plan.items.sort(key=lambda item: (item.label, item.file))
        return listing, plan, None


Source = FolderSource | CsvSource | ZipSource | UploadSource | UnreadableSource


def source_for_path(path: str | os.PathLike[str]) -> Source:
    """The source for a path: a folder, a zip file or a labels CSV (told apart by content).

    A missing path or another kind of file gives a source whose ``open`` says what is wrong,
    so the report carries the message like any other problem with the data.
    """
    path = Path(path)
    if not path.exists():
        return UnreadableSource(path, f"No such file or folder: {path}")
    if path.is_dir():
        return FolderSource(path)
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    if path.suffix.lower() == ".csv":
        return CsvSource(path)
    return UnreadableSource(
        path,
        f"Expected a folder of class folders, a .zip or a labels .csv; received the file "
        f"{path.name!r}",
    )


def as_source(source: Source | str | os.PathLike[str]) -> Source:
    """``source`` itself, or the source for a path given as a string or path."""
    if isinstance(source, str | os.PathLike):
        return source_for_path(source)
    if not hasattr(source, "open"):
        raise TypeError(
            "source must be a path or one of FolderSource, CsvSource, ZipSource, UploadSource. "
            f"Received: {type(source).__name__}"
        )
    return source
