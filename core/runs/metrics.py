"""Reading a run's ``metrics.jsonl``: incrementally for live curves, and its epochs.

The worker appends one JSON object per line (see :mod:`core.runs.store` for the events).
:class:`MetricsReader` reads only what was appended since the last call and keeps back a
line still being written; :func:`epoch_events` keeps the last event of each epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class MetricsReader:
    """Reads ``metrics.jsonl`` incrementally; cheap enough to call every second.

    Each :meth:`poll` returns only the events appended since the previous call. A last line
    still being written (no newline yet) is kept back until it is complete.

    Args:
        folder: The run folder.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / METRICS_FILE
        self.offset = 0
        self.skipped = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Returns the events appended since the last call (possibly none)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            # The file was replaced by a shorter one: start over.
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return self._parse(lines)

    def _parse(self, lines: list[bytes]) -> list[dict[str, Any]]:
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                # A line cut short by a killed worker; the worker repairs the file on resume.
                self.skipped += 1
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def all(self) -> list[dict[str, Any]]:
        """Returns every complete event in the file (does not move the incremental cursor)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        lines.pop()
        return MetricsReader(self.path.parent)._parse(lines)


def epoch_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch events of ``events``, the last one kept per epoch (a resumed run may repeat).

    Events without an integer ``epoch`` (a damaged line) are left out.
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in events:
        epoch = event.get("epoch")
        if event.get("type") == "epoch" and isinstance(epoch, int) and not isinstance(epoch, bool):
            by_epoch[epoch] = event
    return [by_epoch[k] for k in sorted(by_epoch)]
