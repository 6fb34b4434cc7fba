"""Labels CSVs: a ``filename,label`` table next to the images, the other way to name classes.

The header may call the columns by any of :data:`FILENAME_COLUMNS` and :data:`LABEL_COLUMNS`
(any case). A file that is not UTF-8 is read as Windows-1252, the usual spreadsheet export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Protocol

from core.data.archive import EntryRejected


class Readable(Protocol):
    """What a labels CSV is read from: a listing entry (:class:`core.data.sources.Entry`)."""

    def read(self) -> bytes:
        """The file's bytes (raises :class:`core.data.archive.EntryRejected` to refuse)."""
        ...


#: Header names of the column holding the image file name (compared in lower case).
FILENAME_COLUMNS = ("filename", "file", "file_name", "image", "path", "filepath", "image_path")
#: Header names of the column holding the class.
LABEL_COLUMNS = ("label", "class", "category")


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


def read_label_csv(entry: Readable) -> list[tuple[str, str]] | str:
    """The ``(filename, label)`` rows of a labels CSV, or why it is not one.

    Args:
        entry: The CSV's listing entry (its bytes are read through ``entry.read``).

    Returns:
        The rows (those too short for both columns are skipped), or a reason in words
        ("has no filename and label columns ..." or the archive's refusal).
    """
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
