"""Webcam frames recorded in bursts (hold-to-record): decoded, checked, kept as drafts.

The browser sends frames as base64 JPEG (at most :data:`MAX_FRAME_SIDE` px on their longest
side), numbered by a per-page recorder id and a sequence number, and re-sends every frame the
app has not acknowledged yet. :func:`new_frames` picks what is not stored yet, so a batch that
arrives twice (or a later batch that repeats an earlier one) is kept once. Each frame goes
through the ingest's image check before it is kept with :func:`core.data.drafts.add_shot`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import drafts
from core.data.imageio import ImageRejected, check_image

MAX_FRAME_SIDE = 224
MAX_FRAME_CHARS = 2 * 1024 * 1024  # base64 text of one frame; a 224 px JPEG is ~15 kB


@dataclass
class Frame:
    """One recorded frame: who sent it, its number, class, burst and JPEG bytes."""

    recorder: str
    seq: int
    label: str
    burst: int
    data: bytes


@dataclass
class Kept:
    """What one batch added: pictures per burst, and the frames refused (with why)."""

    bursts: dict[str, tuple[str, list[Path]]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many pictures were kept."""
        return sum(len(paths) for _, paths in self.bursts.values())


def decode_frame(text: Any) -> bytes:
    """The bytes of one base64 frame (a ``data:image/jpeg;base64,`` prefix is allowed).

    Raises:
        ValueError: If ``text`` is not a string of valid base64 under the size limit.
    """
    if not isinstance(text, str) or not 0 < len(text) <= MAX_FRAME_CHARS:
        size = len(text) if isinstance(text, str) else type(text).__name__
        raise ValueError(
            f"A frame must be base64 text of 1 to {MAX_FRAME_CHARS} characters. Received: {size}"
        )
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"A frame is not valid base64: {error}") from error


def new_frames(value: Any, acked: Mapping[str, int]) -> tuple[list[Frame], list[str]]:
    """The frames of a recorder message that were not stored yet.

    Args:
        value: The component's value: ``{"recorder": id, "frames": [{"seq", "label",
            "burst", "data"}]}`` (anything else gives no frames).
        acked: The highest sequence number already stored, per recorder id.

    Returns:
        ``(frames in sequence order, messages for malformed entries)``.
    """
    if not isinstance(value, Mapping):
        return [], []
    recorder, entries = value.get("recorder"), value.get("frames")
    if not isinstance(recorder, str) or not recorder or not isinstance(entries, list):
        return [], ["A recorder message without its id or frames was ignored."]
    done = acked.get(recorder, 0)
    frames, problems = [], []
    for entry in entries:
        try:
            seq, label, burst = entry["seq"], entry["label"], entry["burst"]
            if not (isinstance(seq, int) and isinstance(burst, int) and isinstance(label, str)):
                raise TypeError(f"seq={seq!r}, burst={burst!r}, label={label!r}")
            if seq <= done:
                continue
            frames.append(Frame(recorder, seq, label, burst, decode_frame(entry["data"])))
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"A recorded frame was ignored: {error}")
    frames.sort(key=lambda frame: frame.seq)
    return frames, problems


def keep_frames(frames: list[Frame]) -> Kept:
    """Checks each frame like an upload and keeps it as a draft picture of its class.

    Args:
        frames: From :func:`new_frames`.

    Returns:
        The kept pictures per burst (key ``"<recorder>:<burst>"``) and the refusals.
    """
    kept = Kept()
    for frame in frames:
        try:
            check_image(frame.data)
            path = drafts.add_shot(frame.label, frame.data)
        except (ImageRejected, ValueError) as error:
            kept.refused.append(f"Frame {frame.seq} of “{frame.label}” was not kept: {error}")
            continue
        key = f"{frame.recorder}:{frame.burst}"
        kept.bursts.setdefault(key, (frame.label, []))[1].append(path)
    return kept


def keep_files(label: str, files: list[tuple[str, bytes]]) -> Kept:
    """Checks uploaded pictures like any upload and keeps them as drafts of class ``label``.

    Args:
        label: The class the pictures go into.
        files: ``(file name, bytes)`` pairs.

    Returns:
        The kept pictures (one burst, key ``"upload"``) and the refusals, each naming the file.
    """
    kept = Kept()
    for name, data in files:
        try:
            check_image(data)
            path = drafts.add_shot(label, data)
        except (ImageRejected, ValueError) as error:
            kept.refused.append(f"“{name}” was not kept: {error}")
            continue
        kept.bursts.setdefault("upload", (label, []))[1].append(path)
    return kept


def undo_burst(paths: list[Path]) -> int:
    """Deletes the pictures of one burst that are still there; returns how many.

    Raises:
        ValueError: If a path is not a picture :mod:`core.data.drafts` kept.
    """
    removed = 0
    for path in paths:
        if Path(path).exists():
            drafts.delete_shot(path)
            removed += 1
    return removed
