"""Where an export writes, and the proof that it owns what it replaces.

An export only ever writes into a folder it made itself, an empty folder, or a folder holding
a previous export of the same format that it marked (:data:`MARKER_FILE`); anything else is
refused with :class:`ExportTargetError`, and a sibling ``<out>.zip`` it did not write is never
replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from core.runs.formats import (
    ARTIFACT_NAMES,
)

EXPORTS_DIR = "exports"


MARKER_FILE = ".transfer-studio-export.json"


MARKER_KIND = "transfer-studio-export"


# Files an export wrote before it left a marker: a folder at the default location holding
# only these is a previous export and may be replaced.
_LEGACY_FILES = {"labels.txt", "README.md", "predict.py", "Classify.kt"}


class ExportTargetError(ValueError):
    """The output folder (or its zip) holds something this export did not write."""


def default_export_dir(run_dir: str | os.PathLike[str], fmt: str) -> Path:
    """``<run>/exports/<format>/``."""
    return Path(run_dir) / EXPORTS_DIR / fmt


def bundle_zip_path(folder: Path) -> Path:
    """The zip written beside an export folder: ``<folder>.zip``."""
    return folder.with_name(folder.name + ".zip")


def _read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ExportTargetError(
            f"Refusing to write into {folder}: its export marker {MARKER_FILE} is unreadable "
            f"({type(error).__name__}). Choose a new or empty folder."
        ) from error
    if not isinstance(data, dict) or data.get("kind") != MARKER_KIND:
        raise ExportTargetError(
            f"Refusing to write into {folder}: {MARKER_FILE} is not an export marker. "
            "Choose a new or empty folder."
        )
    return data


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_target(folder: Path, fmt: str, *, default: Path | None = None) -> None:
    """Proves an export may write ``folder`` and its ``<folder>.zip``; raises otherwise.

    Allowed: a folder that does not exist, an empty folder, or a folder holding a previous
    export of the same format (its marker lists every entry; at the default location
    ``<run>/exports/<format>``, a folder holding only an earlier version's export files).
    The zip beside it may be replaced only when the marker recorded its hash.

    Args:
        folder: The resolved output folder.
        fmt: The format about to be exported.
        default: The run's default export folder for ``fmt``.

    Raises:
        ExportTargetError: With a one-line reason, if anything there was not written by a
            previous export of this format.
    """
    zip_path = bundle_zip_path(folder)
    marker = None
    if folder.exists() or folder.is_symlink():
        if folder.is_symlink() or not folder.is_dir():
            raise ExportTargetError(
                f"Refusing to export into {folder}: it is a file or a link, not a folder."
            )
        entries = sorted(p.name for p in folder.iterdir())
        marker = _read_marker(folder)
        if marker is not None:
            if marker.get("format") != fmt:
                raise ExportTargetError(
                    f"Refusing to export {fmt!r} into {folder}: it holds a "
                    f"{marker.get('format')!r} export. Choose another folder."
                )
            owned = set(marker.get("files") or []) | {MARKER_FILE}
            foreign = [name for name in entries if name not in owned]
            if foreign:
                raise ExportTargetError(
                    f"Refusing to replace the export in {folder}: it also holds files the "
                    f"export did not write ({', '.join(foreign[:5])}). Move them or choose "
                    "another folder."
                )
        elif entries and not (
            default is not None
            and folder == default
            and set(entries) <= _LEGACY_FILES | {ARTIFACT_NAMES[fmt]}
        ):
            raise ExportTargetError(
                f"Refusing to export into {folder}: the folder is not empty and holds no "
                f"previous {fmt!r} export ({len(entries)} entries, e.g. {entries[0]!r}). "
                "Choose a new or empty folder."
            )
    if zip_path.exists() or zip_path.is_symlink():
        recorded = (marker or {}).get("bundle_sha256")
        legacy_default = marker is None and default is not None and folder == default
        if not legacy_default and (
            zip_path.is_symlink() or not zip_path.is_file() or recorded != sha256(zip_path)
        ):
            raise ExportTargetError(
                f"Refusing to export to {folder}: {zip_path.name} already exists beside it and "
                "was not written by this export. Move it or choose another folder."
            )


def replace_folder(staging: Path, folder: Path, fmt: str, default: Path) -> None:
    """Moves the finished ``staging`` folder to ``folder``, removing only what it owns."""
    check_target(folder, fmt, default=default)  # again: the folder may have changed meanwhile
    if folder.exists():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        folder.rmdir()
    os.replace(staging, folder)


def ensure_parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def zip_folder(folder: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file() and file.name != MARKER_FILE:
                    archive.write(file, Path(folder.name) / file.relative_to(folder))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
