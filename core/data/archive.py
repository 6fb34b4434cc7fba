"""Reading a user's zip file without trusting anything written in it.

A zip can lie about everything: its member names (``../../etc/passwd``, ``/abs``,
``C:\\x``), the type of a member (symbolic links), and the sizes in its headers (zip
bombs). :class:`SafeZip` lists the members, refuses the unsafe ones with a reason, and
streams each member in chunks while counting the bytes really produced, so the limits on
bytes per member, total bytes and compression ratio hold no matter what the headers say.
Nothing is ever extracted to disk by name: callers get bytes.

Only stored and deflated members are read: for deflate, Python's decompressor honours a
maximum output size per call, so one chunk of input can never expand unboundedly in
memory. BZIP2 and LZMA members are refused with a reason (they are rare in zips people
make, and their decompressors cannot be bounded per call).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MiB = 1024 * 1024
GiB = 1024 * MiB

_CHUNK = 256 * 1024
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_UNICODE_PATH_EXTRA = 0x7075
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


class ArchiveError(ValueError):
    """The archive as a whole is refused (not a zip, too big, a zip bomb)."""


class EntryRejected(Exception):
    """One member of the archive is refused; the rest can still be read.

    Attributes:
        reason: One sentence a person understands.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.reason,))


@dataclass(frozen=True)
class ZipLimits:
    """Limits enforced while a zip is read.

    Attributes:
        max_archive_bytes: Largest zip file accepted (its size on disk / as uploaded).
        max_entries: Most members the zip may list.
        max_file_bytes: Most bytes one member may expand to.
        max_total_bytes: Most bytes all members together may expand to.
        max_ratio: Largest compression ratio (expanded / compressed) of a member, and of
            the whole archive (expanded total / zip size).
        ratio_floor_bytes: Ratios are only judged past this many expanded bytes, so a tiny
            blank image that compresses well is not mistaken for a bomb.
    """

    max_archive_bytes: int = 8 * GiB
    max_entries: int = 200_000
    max_file_bytes: int = 64 * MiB
    max_total_bytes: int = 32 * GiB
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1 * MiB


@dataclass(frozen=True)
class ZipMember:
    """A regular-file member that passed the name and type checks.

    Attributes:
        name: The member's path, decoded (UTF-8 or cp437), with ``/`` separators.
        parts: ``name`` split into path components (no empty or ``.`` parts).
        info: The ``zipfile.ZipInfo`` (its sizes are claims, not facts).
    """

    name: str
    parts: tuple[str, ...]
    info: zipfile.ZipInfo


def _unicode_path_extra(extra: bytes) -> str | None:
    """The UTF-8 name from an Info-ZIP Unicode Path extra field (0x7075), if present."""
    offset = 0
    while offset + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, offset)
        body = extra[offset + 4 : offset + 4 + size]
        if header_id == _UNICODE_PATH_EXTRA and len(body) > 5 and body[0] == 1:
            try:
                return body[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
        offset += 4 + size
    return None


def _reread_as_utf8(cp437_name: str) -> str | None:
    """Re-reads a name zipfile decoded as cp437 as UTF-8; None if the bytes are not UTF-8."""
    try:
        return cp437_name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def decode_member_name(info: zipfile.ZipInfo) -> str:
    """Returns the member name as the person who made the zip saw it.

    Names flagged UTF-8 are used as they are. Otherwise the Info-ZIP Unicode Path field is
    used when present; then the raw bytes are tried as UTF-8 (what macOS and Linux tools
    write without setting the flag); then cp437, the zip format's legacy code page.
    The result is NFC-normalised (macOS stores decomposed accents) with ``/`` separators.
    """
    return unicodedata.normalize("NFC", _raw_member_name(info)).replace("\\", "/")


def _raw_member_name(info: zipfile.ZipInfo) -> str:
    name = info.orig_filename
    if not info.flag_bits & _UTF8_FLAG:
        name = _unicode_path_extra(info.extra) or _reread_as_utf8(name) or name
    return name


def check_member_name(name: str) -> tuple[str, ...]:
    """Splits a member name into safe path parts.

    Args:
        name: A decoded member name.

    Returns:
        The path components.

    Raises:
        EntryRejected: For absolute paths, drive letters, ``..`` components and NUL bytes.
    """
    if "\x00" in name:
        raise EntryRejected("the name contains a NUL byte; refused")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        raise EntryRejected("absolute path inside the zip; refused (never written outside)")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise EntryRejected("path climbs out of the zip with '..'; refused (zip slip)")
    return parts


def _check_member_type(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise EntryRejected("the file is password-protected; refused")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise EntryRejected("symbolic link inside the zip; refused")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise EntryRejected("not a regular file (device, pipe or socket); refused")
    if info.compress_type not in _READABLE_METHODS:
        raise EntryRejected(
            f"compressed with method {info.compress_type}, which is not accepted; "
            "re-create the zip with standard (deflate) compression"
        )


def _declared_entry_count(handle: BinaryIO, size: int) -> tuple[int, int] | None:
    """Reads (entries, central directory size) from the end records, before zipfile does.

    zipfile materialises the whole central directory, so a zip listing millions of members
    must be refused before it is opened. Returns None when the records cannot be found
    (zipfile will then report the file as not a zip).
    """
    tail_size = min(size, _EOCD.size + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    position = tail.rfind(b"PK\x05\x06")
    if position < 0 or position + _EOCD.size > len(tail):
        return None
    fields = _EOCD.unpack_from(tail, position)
    entries, cd_size = fields[4], fields[5]
    locator_at = position - _ZIP64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        _, _, eocd64_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
        if 0 <= eocd64_offset <= size - _ZIP64_EOCD.size:
            handle.seek(eocd64_offset)
            record = handle.read(_ZIP64_EOCD.size)
            if record[:4] == b"PK\x06\x06":
                fields64 = _ZIP64_EOCD.unpack(record)
                entries, cd_size = fields64[7], fields64[8]
    return entries, cd_size


class SafeZip:
    """A zip opened for safe, streaming reads.

    Args:
        source: A path to a zip file, its bytes, or a seekable binary file object.
        limits: The limits to enforce.
        display_name: How to call the archive in messages.

    Attributes:
        members: Regular-file members that passed the checks, in archive order.
        directories: Path parts of directory members (so empty folders are known).
        rejected: ``(name, reason)`` for each member refused while listing.
        unicode_forms: For each non-ASCII path component (NFC), the distinct forms it was
            written in; two forms mean two folders were merged by normalisation.

    Raises:
        ArchiveError: If the file is not a zip, is too big, or lists too many members.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes | BinaryIO,
        limits: ZipLimits | None = None,
        *,
        display_name: str = "the zip",
    ) -> None:
        self.limits = limits or ZipLimits()
        self.display_name = display_name
        self.members: list[ZipMember] = []
        self.directories: list[tuple[str, ...]] = []
        self.rejected: list[tuple[str, str]] = []
        self.unicode_forms: dict[str, set[str]] = {}
        self._total = 0
        self._entries_read = 0
        handle: BinaryIO
        self._owns_handle = True
        if isinstance(source, bytes | bytearray | memoryview):
            handle = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            # Lives as long as this object; close() closes it.
            handle = Path(source).open("rb")  # noqa: SIM115
        else:
            handle = source
            self._owns_handle = False
        self._handle = handle
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        limits = self.limits
        self._handle.seek(0, os.SEEK_END)
        self.archive_size = self._handle.tell()
        if self.archive_size > limits.max_archive_bytes:
            raise ArchiveError(
                f"{self.display_name} is {self.archive_size:,} bytes, over the upload limit "
                f"of {limits.max_archive_bytes:,} bytes (max_archive_bytes)"
            )
        declared = _declared_entry_count(self._handle, self.archive_size)
        if declared is not None:
            entries, cd_size = declared
            if entries > limits.max_entries or cd_size > limits.max_entries * 1024:
                raise ArchiveError(
                    f"{self.display_name} lists {entries:,} members, over the limit of "
                    f"{limits.max_entries:,} (max_entries); refusing to open it"
                )
        self._handle.seek(0)
        try:
            self._zip = zipfile.ZipFile(self._handle)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
            raise ArchiveError(
                f"{self.display_name} is not a readable zip file ({error})"
            ) from error
        if len(infos) > limits.max_entries:
            raise ArchiveError(
                f"{self.display_name} lists {len(infos):,} members, over the limit of "
                f"{limits.max_entries:,} (max_entries)"
            )
        for info in infos:
            raw = _raw_member_name(info)
            name = unicodedata.normalize("NFC", raw).replace("\\", "/")
            if not raw.isascii():
                for part in raw.replace("\\", "/").split("/"):
                    self.unicode_forms.setdefault(unicodedata.normalize("NFC", part), set()).add(
                        part
                    )
            try:
                parts = check_member_name(name)
                _check_member_type(info)
            except EntryRejected as rejection:
                self.rejected.append((name, rejection.reason))
                continue
            if info.is_dir() or stat.S_ISDIR(info.external_attr >> 16):
                if parts:
                    self.directories.append(parts)
            elif parts:
                self.members.append(ZipMember("/".join(parts), parts, info))

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the archive (and the file, when this object opened it)."""
        zip_file = getattr(self, "_zip", None)
        if zip_file is not None:
            zip_file.close()
        if self._owns_handle:
            self._handle.close()

    @property
    def total_bytes_read(self) -> int:
        """Expanded bytes produced so far, over all members."""
        return self._total

    def _chunks(self, member: ZipMember) -> Iterator[bytes]:
        try:
            with self._zip.open(member.info) as stream:
                while chunk := stream.read(_CHUNK):
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
            raise EntryRejected(f"the file is damaged inside the zip ({error})") from error
        except NotImplementedError as error:
            raise EntryRejected(f"cannot decompress this member ({error})") from error

    def read(self, member: ZipMember) -> bytes:
        """Reads one member, enforcing every limit on the bytes actually produced.

        Args:
            member: One of :attr:`members`.

        Returns:
            The member's bytes.

        Raises:
            EntryRejected: The member is damaged or bigger than ``max_file_bytes``.
            ArchiveError: A zip-bomb limit was hit (ratio, total bytes, member count);
                reading stopped at that chunk.
        """
        limits = self.limits
        self._entries_read += 1
        if self._entries_read > limits.max_entries:
            raise ArchiveError(
                f"{self.display_name} has more than {limits.max_entries:,} members "
                "(max_entries); stopped"
            )
        claimed_compressed = max(1, min(member.info.compress_size, self.archive_size))
        buffer = bytearray()
        with contextlib.closing(self._chunks(member)) as chunks:
            for chunk in chunks:
                self._total += len(chunk)
                self._check_limits(member, len(buffer) + len(chunk), claimed_compressed)
                buffer += chunk
        return bytes(buffer)

    def _check_limits(self, member: ZipMember, expanded: int, claimed_compressed: int) -> None:
        """Raises as soon as the bytes produced so far break a limit."""
        limits = self.limits
        name = self.display_name
        if self._total > limits.max_total_bytes:
            raise ArchiveError(
                f"{name} expands to more than {limits.max_total_bytes:,} bytes "
                f"(max_total_bytes); stopped at {member.name!r}"
            )
        if expanded > limits.ratio_floor_bytes and expanded > limits.max_ratio * claimed_compressed:
            raise ArchiveError(
                f"{name} looks like a zip bomb: {member.name!r} expands more than "
                f"{limits.max_ratio:g}x its compressed size (max_ratio); stopped"
            )
        if (
            self._total > limits.ratio_floor_bytes
            and self._total > limits.max_ratio * self.archive_size
        ):
            raise ArchiveError(
                f"{name} looks like a zip bomb: it expands to more than "
                f"{limits.max_ratio:g}x its own size (max_ratio); stopped"
            )
        if expanded > limits.max_file_bytes:
            raise EntryRejected(
                f"the file is larger than the limit of {limits.max_file_bytes:,} bytes "
                "(max_file_bytes)"
            )
