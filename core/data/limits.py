"""``IngestLimits``: the bounds and knobs of one ingest (zip bombs, big files, pixels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.data.archive import ZipLimits
from core.data.imageio import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS

#: ``progress(done, total, message)``, called while files are read.
ProgressFn = Callable[[int, int, str], None]

MiB = 1024 * 1024
GiB = 1024 * MiB


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
        """The subset :class:`core.data.archive.SafeZip` enforces."""
        return ZipLimits(
            max_archive_bytes=self.max_archive_bytes,
            max_entries=self.max_entries,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_ratio=self.max_ratio,
        )
