"""Reading JSON files that anything may have damaged: truncated, empty, binary or of the wrong
type. Every reader of an on-disk JSON file goes through :func:`read_json`, so a broken file
becomes one :class:`CorruptFileError` with the reason, never a traceback elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Largest JSON file read (status, config, summary and dataset files are a few KB).
MAX_JSON_BYTES = 16 * 1024 * 1024


class CorruptFileError(ValueError):
    """An on-disk file exists but cannot be used; ``reason`` says why, for a person.

    Attributes:
        path: The file.
        reason: What is wrong with it (``"is empty"``, ``"is not valid JSON ..."``).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        # Names only, never the server's path: the message may reach a browser.
        super().__init__(f"{self.path.name} of {self.path.parent.name!r} {reason}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_json(
    path: str | os.PathLike[str], *, expect: type = dict, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """Reads a JSON file and checks the type of its top-level value.

    Args:
        path: The file.
        expect: The type the top-level value must have (``dict`` or ``list``).
        max_bytes: Larger files are refused unread.

    Returns:
        The parsed value, or ``None`` when the file does not exist.

    Raises:
        CorruptFileError: If the file is not a readable file, is empty, too big, not UTF-8
            text, not valid JSON, or holds another type than ``expect``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise CorruptFileError(path, f"is {size:,} bytes, over the {max_bytes:,} allowed")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as error:
        raise CorruptFileError(path, "is a folder, not a file") from error
    except OSError as error:
        raise CorruptFileError(path, f"cannot be read ({error.strerror or error})") from error
    if not data.strip():
        raise CorruptFileError(path, "is empty (the write that made it was cut short)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorruptFileError(path, "is not text (binary content)") from error
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CorruptFileError(
            path, f"is not valid JSON (truncated or damaged: {error.msg} at line {error.lineno})"
        ) from error
    if not isinstance(value, expect):
        expected = "an object" if expect is dict else f"a {expect.__name__}"
        raise CorruptFileError(path, f"holds a JSON {_kind(value)}, expected {expected}")
    return value


def check_fields(
    path: str | os.PathLike[str], data: dict[str, Any], types: dict[str, type | tuple[type, ...]]
) -> None:
    """Checks the types of the fields of a JSON object that are present.

    ``bool`` is not accepted where ``int`` or ``float`` is asked for (JSON ``true`` is no
    epoch count).

    Args:
        path: The file the object came from (for the message).
        data: The object.
        types: Field name -> allowed type(s).

    Raises:
        CorruptFileError: Naming the first field of the wrong type and what it holds.
    """
    for name, allowed in types.items():
        if name not in data:
            continue
        value = data[name]
        allowed_types = allowed if isinstance(allowed, tuple) else (allowed,)
        is_bool = isinstance(value, bool) and bool not in allowed_types
        if is_bool or not isinstance(value, allowed_types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed_types)
            raise CorruptFileError(
                path, f"has a field {name!r} holding {_kind(value)} {value!r:.60}, expected {names}"
            )


def read_json_cache(path: str | os.PathLike[str], *, expect: type = dict) -> Any:
    """Reads a JSON file that can always be rebuilt (a cache index, a cached result).

    Returns:
        The value, or None when the file is missing or damaged in any way (the caller
        rebuilds it).
    """
    try:
        return read_json(path, expect=expect)
    except CorruptFileError:
        return None
