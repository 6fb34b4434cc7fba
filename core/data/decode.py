"""The per-file work of ingest, in a module light enough for worker processes.

One task reads a file (or takes bytes already read from a zip or an upload), hashes it,
validates and normalises it with :mod:`core.data.imageio` and stores the result under a name
derived from its content hash. Importing this module pulls in Pillow and numpy only (no
pandas, no TensorFlow), so fork-server or ``spawn`` workers start quickly, and every
function here is top level, so any start method can pickle it. Rejections travel as
values, never as exceptions, so only genuine bugs (or a full disk) cross a process
boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

from core.data.archive import EntryRejected
from core.data.imageio import PreparedImage, normalise_task

#: Folder of stored images inside a dataset (same as ``core.data.store.IMAGES_DIR``).
IMAGES_DIR = "images"

Result = tuple[str | None, str, object]


def too_big(max_bytes: int) -> str:
    """The rejection reason for a file over ``max_bytes``."""
    return f"the file is larger than the limit of {max_bytes:,} bytes (max_file_bytes)"


def read_limited(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Reads a regular file, refusing it past ``max_bytes`` without reading it all.

    Raises:
        EntryRejected: If the file is too big or cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > max_bytes:
                raise EntryRejected(too_big(max_bytes))
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise EntryRejected(f"could not read the file ({error.strerror or error})") from error
    if len(data) > max_bytes:
        raise EntryRejected(too_big(max_bytes))
    return data


def stored_name(sha: str) -> str:
    """Where an image with this content hash lives, relative to the dataset folder.

    Images are spread over 256 sub-folders by the first two hex digits: creating thousands
    of files in one folder measured about 5x slower per file on ext4 than sharded folders.
    """
    return f"{IMAGES_DIR}/{sha[:2]}/{sha[:24]}.jpg"


def store_image(
    dataset_dir: str | os.PathLike[str], sha: str, data: bytes, *, atomic: bool = True
) -> None:
    """Writes a stored image under its content-derived name.

    Two identical files in flight write the same bytes to the same name, so concurrent
    writers cannot disagree, and an image already stored is never rewritten.

    Args:
        dataset_dir: The dataset (or staging) folder.
        sha: The content hash of the source file.
        data: The bytes to store.
        atomic: Write a temporary file and rename it, so a reader never sees a partial
            image (needed in a live dataset). A fresh staging folder, which nobody reads
            and which is discarded on failure, takes the direct write: one file-system
            operation fewer per image.
    """
    target = Path(dataset_dir) / stored_name(sha)
    if not atomic:
        # FileExistsError: an identical file in flight got there first.
        with contextlib.suppress(FileExistsError):
            _write(target, data, "xb")
        return
    if target.exists():
        return
    temporary = target.with_name(f".{target.stem}.{os.getpid()}-{threading.get_ident()}.tmp")
    _write(temporary, data, "wb")
    os.replace(temporary, target)


def _write(path: Path, data: bytes, mode: str) -> None:
    try:
        handle = path.open(mode)
    except FileNotFoundError:  # first image of this shard: make the folder once
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open(mode)
    with handle:
        handle.write(data)


def ingest_one(task: tuple) -> Result:
    """Reads (for files on disk), hashes, validates, normalises and stores one image.

    Args:
        task: ``(source, max_file_bytes, dataset_dir or None, atomic, options)``:
            ``source`` is the file's bytes or its path; ``atomic`` is passed to
            :func:`store_image`; ``options`` is ``(max_pixels, max_side, quality,
            keep_clean_jpeg)``. Without a ``dataset_dir`` the image is only validated.

    Returns:
        ``(sha256 or None, "ok" | "rejected", PreparedImage | reason)``.
    """
    source, max_file_bytes, dataset_dir, atomic, options = task
    try:
        data = source if isinstance(source, bytes) else read_limited(source, max_file_bytes)
    except EntryRejected as rejection:
        return None, "rejected", rejection.reason
    sha = hashlib.sha256(data).hexdigest()
    kind, value = normalise_task((data, dataset_dir is not None, *options))
    if kind == "ok" and dataset_dir is not None:
        assert isinstance(value, PreparedImage)
        store_image(dataset_dir, sha, data if value.data is None else value.data, atomic=atomic)
    return sha, kind, value


def ingest_batch(tasks: list[tuple]) -> list[Result]:
    """Runs :func:`ingest_one` over a batch (one round trip per batch for process pools)."""
    return [ingest_one(task) for task in tasks]
