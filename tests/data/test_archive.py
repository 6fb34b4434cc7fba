"""Safe zip reading: every hostile archive is built here with zipfile (and a few byte patches)."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib

import pytest

from core.data.archive import (
    ArchiveError,
    EntryRejected,
    SafeZip,
    ZipLimits,
    check_member_name,
    decode_member_name,
)

TINY = b"\xff\xd8not-really-a-jpeg"


def make_zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """``entries``: (name or ZipInfo, bytes) pairs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def central_offset(data: bytes, name: bytes) -> int:
    """Offset of the central directory header of member ``name``."""
    position = 0
    while True:
        position = data.index(b"PK\x01\x02", position)
        name_length = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46 : position + 46 + name_length] == name:
            return position
        position += 4


def rejected_names(archive: SafeZip) -> dict[str, str]:
    return dict(archive.rejected)


def test_zip_slip_and_absolute_paths_are_refused():
    data = make_zip(
        [
            ("cats/ok.jpg", TINY),
            ("../evil.jpg", TINY),
            ("cats/../../evil2.jpg", TINY),
            ("/etc/evil3.jpg", TINY),
            ("C:/Windows/evil4.jpg", TINY),
            ("..\\..\\evil5.jpg", TINY),
        ]
    )
    with SafeZip(data) as archive:
        assert [member.name for member in archive.members] == ["cats/ok.jpg"]
        reasons = rejected_names(archive)
    assert "zip slip" in reasons["../evil.jpg"]
    assert "zip slip" in reasons["cats/../../evil2.jpg"]
    assert "absolute path" in reasons["/etc/evil3.jpg"]
    assert "absolute path" in reasons["C:/Windows/evil4.jpg"]
    assert "zip slip" in reasons["../../evil5.jpg"]


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/x", "\x00x", "C:x", "c:/x"])
def test_check_member_name_refuses_escapes(name):
    with pytest.raises(EntryRejected):
        check_member_name(name)


def test_symlink_and_special_entries_are_refused():
    link = zipfile.ZipInfo("cats/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("cats/pipe.jpg")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    data = make_zip([(link, b"/etc/passwd"), (fifo, b""), ("cats/a.jpg", TINY)])
    with SafeZip(data) as archive:
        reasons = rejected_names(archive)
        assert [member.name for member in archive.members] == ["cats/a.jpg"]
    assert "symbolic link" in reasons["cats/link.jpg"]
    assert "not a regular file" in reasons["cats/pipe.jpg"]


def test_bomb_by_ratio_stops_while_streaming():
    data = make_zip([("cats/zeros.bmp", b"\x00" * (20 * 1024 * 1024))])
    assert len(data) < 100_000
    with SafeZip(data) as archive:
        with pytest.raises(ArchiveError, match="zip bomb.*max_ratio"):
            archive.read(archive.members[0])
        # Stopped after about max_ratio x compressed size, long before 20 MiB.
        assert archive.total_bytes_read < 4 * 1024 * 1024


def test_bomb_by_entry_count_is_refused_before_reading():
    data = make_zip([(f"cats/{index}.jpg", TINY) for index in range(30)])
    with pytest.raises(ArchiveError, match="max_entries"):
        SafeZip(data, ZipLimits(max_entries=10))


def test_bomb_by_total_bytes_stops_while_streaming():
    blobs = [(f"cats/{index}.bin", os.urandom(60_000)) for index in range(3)]
    data = make_zip(blobs)
    with SafeZip(data, ZipLimits(max_total_bytes=100_000)) as archive:
        assert len(archive.read(archive.members[0])) == 60_000
        with pytest.raises(ArchiveError, match="max_total_bytes"):
            archive.read(archive.members[1])
        assert archive.total_bytes_read <= 100_000 + 256 * 1024


def test_member_over_the_per_file_limit_is_rejected_and_the_rest_still_read():
    data = make_zip([("cats/big.bin", os.urandom(100_000)), ("cats/small.bin", b"x" * 10)])
    with SafeZip(data, ZipLimits(max_file_bytes=50_000)) as archive:
        with pytest.raises(EntryRejected, match="limit of 50,000 bytes"):
            archive.read(archive.members[0])
        assert archive.read(archive.members[1]) == b"x" * 10


def test_sizes_in_headers_are_not_trusted():
    payload = os.urandom(5_000)
    data = bytearray(make_zip([("cats/a.bin", payload)]))
    # Claim a 2 GiB member in both headers: the real bytes are what count.
    at = central_offset(bytes(data), b"cats/a.bin")
    struct.pack_into("<L", data, at + 24, 2**31)
    struct.pack_into("<L", data, data.index(b"PK\x03\x04") + 22, 2**31)
    with SafeZip(bytes(data), ZipLimits(max_file_bytes=10_000)) as archive:
        assert archive.read(archive.members[0]) == payload
    # Claim 100 bytes for a big member: reading never yields more than the limit.
    big = bytearray(make_zip([("cats/b.bin", os.urandom(300_000))]))
    at = central_offset(bytes(big), b"cats/b.bin")
    struct.pack_into("<L", big, at + 24, 100)
    with (
        SafeZip(bytes(big), ZipLimits(max_file_bytes=200_000)) as archive,
        pytest.raises(EntryRejected),
    ):
        archive.read(archive.members[0])


def test_archive_over_the_upload_limit_names_the_limit():
    data = make_zip([("cats/a.bin", os.urandom(5_000))])
    with pytest.raises(ArchiveError, match="upload limit of 1,000 bytes"):
        SafeZip(data, ZipLimits(max_archive_bytes=1_000))


def test_not_a_zip():
    with pytest.raises(ArchiveError, match="not a readable zip"):
        SafeZip(b"this is not a zip at all" * 10)


def test_cp437_and_utf8_names_without_the_flag_are_decoded():
    # zipfile always flags non-ASCII names as UTF-8, so write ASCII placeholders of the
    # same length and patch the raw name bytes in afterwards (no flag is set).
    data = make_zip([("CafX/a.jpg", TINY), ("QQQ/b.jpg", TINY)])
    data = data.replace(b"CafX/", b"Caf\x82/")  # cp437 0x82 is e-acute
    data = data.replace(b"QQQ/", "猫".encode()[:3] + b"/")  # UTF-8 bytes, no flag
    with SafeZip(data) as archive:
        names = sorted(member.name for member in archive.members)
    assert names == ["Café/a.jpg", "猫/b.jpg"]


def test_flagged_utf8_emoji_and_space_names():
    data = make_zip([("🐱 my cats/a.jpg", TINY), ("Ünïcödé dogs/b.jpg", TINY)])
    with SafeZip(data) as archive:
        assert sorted(m.parts[0] for m in archive.members) == ["Ünïcödé dogs", "🐱 my cats"]


def test_unicode_path_extra_field_wins():
    info = zipfile.ZipInfo("x/a.jpg")
    real = "Größe/a.jpg".encode()
    info.extra = struct.pack("<HHBL", 0x7075, 5 + len(real), 1, zlib.crc32(b"x/a.jpg")) + real
    data = make_zip([(info, TINY)])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert decode_member_name(archive.infolist()[0]) == "Größe/a.jpg"


def test_nfd_names_are_normalised_to_nfc():
    data = make_zip([("Cafe\u0301/a.jpg", TINY)])
    with SafeZip(data) as archive:
        assert archive.members[0].parts[0] == "Caf\u00e9"


def test_bzip2_and_encrypted_members_are_refused():
    bz = make_zip([("cats/a.jpg", TINY)], compression=zipfile.ZIP_BZIP2)
    with SafeZip(bz) as archive:
        assert "deflate" in rejected_names(archive)["cats/a.jpg"]
    data = bytearray(make_zip([("cats/b.jpg", TINY)]))
    at = central_offset(bytes(data), b"cats/b.jpg")
    struct.pack_into("<H", data, at + 8, 1)  # general purpose flag: encrypted
    with SafeZip(bytes(data)) as archive:
        assert "password" in rejected_names(archive)["cats/b.jpg"]


def test_directories_are_listed_and_damaged_members_rejected():
    data = bytearray(make_zip([("empty/", b""), ("cats/a.bin", os.urandom(2_000))]))
    # Flip bytes inside the compressed data: CRC or inflate fails -> that member rejected.
    start = data.index(b"cats/a.bin") + len(b"cats/a.bin") + 10
    for offset in range(start, start + 40):
        data[offset] ^= 0xFF
    with SafeZip(bytes(data)) as archive:
        assert ("empty",) in archive.directories
        with pytest.raises(EntryRejected, match="damaged"):
            archive.read(archive.members[0])


def test_reads_from_a_path_and_closes(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip([("cats/a.jpg", TINY)]))
    with SafeZip(path) as archive:
        assert archive.read(archive.members[0]) == TINY
