"""The decode pool: reads, hashes, validates and stores planned files, in source order.

A small pool (threads by default, a fork server's processes on request) runs
:func:`core.data.decode.ingest_batch` on batches of files. Results are consumed in
submission order, so duplicates are resolved in the source's order, and only a few batches
per worker are in flight, so memory stays bounded however many images there are.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import store as datasets
from core.data.archive import EntryRejected
from core.data.decode import ingest_batch, stored_name
from core.data.imageio import ImageRejected, PreparedImage
from core.data.limits import IngestLimits, ProgressFn
from core.data.sources import Item

EXECUTORS = ("auto", "serial", "thread", "process")
_POOL_THRESHOLD = 48  # below this many files a pool costs more than it saves
_AUTO_EXECUTOR = "thread"  # what "auto" picks for bigger jobs (see bench/ingest.py)


@dataclass
class Seen:
    file: str
    label: str
    group: list[str] | None = None
    rejected: str | None = None


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    cross_class: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Progress:
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


def make_executor(
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
    # core.data.decode (Pillow + numpy only), so later pools start in milliseconds.
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
    context.set_forkserver_preload(["core.data.decode"])
    return context


def process_items(
    items: Sequence[Item],
    limits: IngestLimits,
    *,
    dataset_dir: Path | None,
    progress: ProgressFn | None,
    workers: int | None,
    executor: str,
    seen: dict[str, Seen] | None = None,
    live: bool = False,
) -> Outcome:
    """Reads, deduplicates, validates and (when ``dataset_dir`` is set) stores every item.

    Results are consumed in submission order, so "the first copy is kept" means the first
    in the source's order however the pool schedules the work. ``live`` means
    ``dataset_dir`` is a published dataset (files are then written atomically).
    """
    outcome = Outcome()
    seen = {} if seen is None else seen
    tracker = Progress(len(items), progress)
    tracker.start(f"Reading {len(items)} files")
    if dataset_dir is not None:
        (dataset_dir / datasets.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    pool, batch_size, in_flight = make_executor(executor, workers, len(items))
    options = (limits.max_pixels, limits.max_side, limits.jpeg_quality, limits.keep_clean_jpeg)
    target = None if dataset_dir is None else str(dataset_dir)
    pending: deque[tuple[list[Item], futures.Future]] = deque()
    batch_items: list[Item] = []
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
    outcome: Outcome,
    seen: dict[str, Seen],
    item: Item,
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
    seen[sha] = Seen(item.file, item.label, rejected=str(value) if kind != "ok" else None)
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
    outcome: Outcome, first: Seen, item: Item, reject: Callable[[str, str], None]
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
