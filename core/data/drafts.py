"""Webcam pictures kept before a dataset exists: on disk, so a refresh does not lose them.

The Data page lets someone take pictures into named classes before any dataset exists. They
live under ``<workspace>/drafts/webcam/<folder>/`` (one folder per class, its name a hash of
the class name, the class name itself in ``label.txt``) until the user deletes them or makes a
dataset from them; then :func:`clear_shots` removes what this module wrote, and only that.

Every reader survives a truncated, empty or foreign file: a folder whose ``label.txt`` cannot
be read is skipped, and files that are not ``shot-*.jpg`` are never listed or deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from core.data.store import clean_label
from core.workspace import workspace_root

LABEL_FILE = "label.txt"
_SHOT = re.compile(r"^shot-(\d{5})\.jpg$")
_FOLDER = re.compile(r"^[0-9a-f]{16}$")
MAX_SHOT_BYTES = 20 * 1024 * 1024


def drafts_dir() -> Path:
    """``<workspace>/drafts/webcam`` (created on first use)."""
    path = workspace_root() / "drafts" / "webcam"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _folder(label: str) -> Path:
    return drafts_dir() / hashlib.sha256(label.encode("utf-8")).hexdigest()[:16]


def add_shot(label: str, data: bytes) -> Path:
    """Keeps one webcam picture for class ``label``; returns where it was written.

    Args:
        label: The class name (cleaned like any class name).
        data: The picture as the browser sent it (JPEG or PNG bytes).

    Returns:
        The path of the stored picture.

    Raises:
        ValueError: If the class name is not usable, or ``data`` is empty or over
            :data:`MAX_SHOT_BYTES`.
    """
    label = clean_label(label)
    if not data or len(data) > MAX_SHOT_BYTES:
        raise ValueError(
            f"A webcam picture must have 1 to {MAX_SHOT_BYTES} bytes. Received: {len(data)}"
        )
    folder = _folder(label)
    folder.mkdir(exist_ok=True)
    (folder / LABEL_FILE).write_text(label, encoding="utf-8")
    numbers = [int(m.group(1)) for m in map(_SHOT.match, os.listdir(folder)) if m]
    path = folder / f"shot-{max(numbers, default=0) + 1:05d}.jpg"
    temporary = path.with_suffix(".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path


def _label_of(folder: Path) -> str | None:
    try:
        label = (folder / LABEL_FILE).read_text(encoding="utf-8").strip()
        return clean_label(label)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def list_shots() -> dict[str, list[Path]]:
    """The kept pictures: class name -> picture paths, oldest first (classes sorted)."""
    shots: dict[str, list[Path]] = {}
    for folder in sorted(drafts_dir().iterdir()):
        if not (folder.is_dir() and _FOLDER.match(folder.name)):
            continue
        label = _label_of(folder)
        pictures = sorted(p for p in folder.iterdir() if _SHOT.match(p.name) and p.is_file())
        if label is not None and pictures:
            shots[label] = pictures
    return dict(sorted(shots.items()))


def shots_as_files(shots: dict[str, list[Path]]) -> dict[str, list[tuple[str, bytes]]]:
    """``list_shots()`` read into ``{class: [(file name, bytes)]}`` for the ingest."""
    return {
        label: [(f"webcam-{i + 1}.jpg", path.read_bytes()) for i, path in enumerate(paths)]
        for label, paths in shots.items()
    }


def _owned(path: Path) -> Path:
    """``path`` resolved, when it is a kept picture in a class folder of this module."""
    resolved = Path(path).resolve()
    root = drafts_dir().resolve()
    if (
        resolved.parent.parent != root
        or not _FOLDER.match(resolved.parent.name)
        or not _SHOT.match(resolved.name)
    ):
        raise ValueError(f"Not a kept webcam picture under {root}. Received: {str(path)!r}")
    return resolved


def delete_shot(path: str | os.PathLike[str]) -> None:
    """Deletes one kept picture (and its class folder once it holds no picture).

    Raises:
        ValueError: If ``path`` is not a picture this module kept.
    """
    resolved = _owned(Path(path))
    resolved.unlink(missing_ok=True)
    _drop_empty(resolved.parent)


def _drop_empty(folder: Path) -> None:
    if any(_SHOT.match(p.name) for p in folder.iterdir()):
        return
    (folder / LABEL_FILE).unlink(missing_ok=True)
    for leftover in folder.glob("shot-*.part"):
        leftover.unlink()
    if not any(folder.iterdir()):  # something this module did not write stays, with its folder
        folder.rmdir()


def rename_shots(old: str, new: str) -> int:
    """Moves the kept pictures of class ``old`` into class ``new``; returns how many.

    Pictures already kept for ``new`` stay; those of ``old`` are added after them.

    Raises:
        ValueError: If ``new`` is not a usable class name.
    """
    new = clean_label(new)
    if old == new:
        return 0
    moved = 0
    for path in list_shots().get(old, []):
        add_shot(new, path.read_bytes())
        delete_shot(path)
        moved += 1
    return moved


def clear_shots(label: str | None = None) -> int:
    """Deletes the kept pictures of ``label`` (all classes when None); returns how many."""
    removed = 0
    for name, paths in list_shots().items():
        if label is not None and name != label:
            continue
        for path in paths:
            delete_shot(path)
            removed += 1
    return removed
