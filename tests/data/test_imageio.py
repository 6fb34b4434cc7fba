"""Image normalisation: every odd input is built here, byte by byte where needed."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.data.imageio import (
    ImageRejected,
    check_image,
    load_image,
    normalise_task,
    prepare_for_store,
)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def close(pixel, expected, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_rgb_jpeg_round_trip_and_path_source(tmp_path):
    data = encode(Image.new("RGB", (40, 30), (10, 200, 30)), "JPEG", quality=95)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (40, 30)
        assert close(image.getpixel((20, 15)), (10, 200, 30))


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    image = load_image(data)
    assert image.mode == "RGB"
    assert close(image.getpixel((8, 8)), (255, 0, 0), tolerance=20)


def test_palette_png_with_transparency_composited_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.paste(1, (0, 0, 4, 8))  # left half red (index 1), right half index 0
    data = encode(image, "PNG", transparency=0)  # index 0 (blue) is transparent
    result = load_image(data)
    assert result.mode == "RGB"
    assert result.getpixel((1, 1)) == (255, 0, 0)
    assert result.getpixel((6, 6)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("LA", (0, 0), (255, 255, 255)),
        ("LA", (0, 255), (0, 0, 0)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
        ("L", 77, (77, 77, 77)),
    ],
)
def test_alpha_and_grey_modes(mode, colour, expected):
    data = encode(Image.new(mode, (6, 6), colour), "PNG")
    result = load_image(data)
    assert result.mode == "RGB"
    assert close(result.getpixel((3, 3)), expected, tolerance=2)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_is_scaled_not_clipped(fmt):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode.startswith("I;16")
    result = load_image(encode(source, fmt))
    grey = [result.getpixel((x, 0))[0] for x in range(4)]
    assert grey == [0, 64, 128, 255]


def test_exif_rotated_photo_ends_up_upright():
    # Stored landscape: left half red, right half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display", so the left (red) half must end up on top.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    image = load_image(data)
    assert image.size == (20, 40)
    assert close(image.getpixel((10, 5)), (255, 0, 0), tolerance=30)
    assert close(image.getpixel((10, 35)), (0, 0, 255), tolerance=30)
    prepared = prepare_for_store(data)
    assert prepared.data is not None  # re-encoded upright, not kept as is
    assert (prepared.width, prepared.height) == (20, 40)
    stored_back = Image.open(io.BytesIO(prepared.data))
    assert stored_back.size == (20, 40)
    assert close(stored_back.convert("RGB").getpixel((10, 5)), (255, 0, 0), tolerance=30)
    assert (check_image(data).width, check_image(data).height) == (20, 40)


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert close(load_image(data).getpixel((5, 5)), (255, 0, 0))
    prepared = prepare_for_store(data)
    assert any("first frame" in note for note in prepared.warnings)


def test_multi_frame_tiff_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert close(load_image(data).getpixel((5, 5)), (0, 255, 0))
    assert any("multi-frame TIFF" in note for note in check_image(data).warnings)


def test_webp_is_accepted():
    data = encode(Image.new("RGBA", (12, 12), (0, 255, 0, 255)), "WEBP", lossless=True)
    assert close(load_image(data).getpixel((6, 6)), (0, 255, 0))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b"%PDF-1.7\n...", "PDF"),
        (b"just some notes about my cats\n", "text file"),
        (b"", "empty"),
        (bytes(range(256)) * 4, "not an image"),
        (b"PK\x03\x04" + b"\x00" * 40, "archive"),
    ],
)
def test_non_images_are_rejected_with_a_reason(data, words):
    with pytest.raises(ImageRejected) as caught:
        load_image(data)
    assert words in caught.value.reason


def test_truncated_jpeg_is_rejected_on_every_path():
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    cut = data[: len(data) // 2]
    for reader in (load_image, prepare_for_store, check_image):
        with pytest.raises(ImageRejected, match="truncated"):
            reader(cut)


def test_pixel_cap_is_configurable():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageRejected, match="over the limit of 5,000 pixels"):
        load_image(data, max_pixels=5_000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)


def test_decompression_bomb_header_is_rejected():
    # 30000 x 30000 is past Pillow's hard limit: DecompressionBombError.
    with pytest.raises(ImageRejected, match="decompression bomb"):
        load_image(png_header_only(30_000, 30_000), max_pixels=10**10)
    # 10000 x 10000 only makes Pillow warn; the warning must count as an error.
    with pytest.raises(ImageRejected, match="decompression bomb"):
        load_image(png_header_only(10_000, 10_000), max_pixels=10**10)
    # Below Pillow's threshold, our own (lower) default cap rejects it before decoding.
    with pytest.raises(ImageRejected, match="over the limit"):
        check_image(png_header_only(9_000, 8_000))


def test_clean_jpeg_is_kept_byte_for_byte_and_big_ones_are_shrunk():
    data = encode(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG", quality=90)
    kept = prepare_for_store(data, max_side=128)
    assert kept.data is None and (kept.width, kept.height) == (64, 48)
    shrunk = prepare_for_store(data, max_side=32)
    assert (shrunk.width, shrunk.height) == (32, 24)
    assert Image.open(io.BytesIO(shrunk.data)).size == (32, 24)
    assert load_image(data, max_side=16).size == (16, 12)


def test_png_is_stored_as_rgb_jpeg():
    data = encode(Image.new("RGBA", (20, 10), (0, 0, 255, 255)), "PNG")
    prepared = prepare_for_store(data)
    stored = Image.open(io.BytesIO(prepared.data))
    assert stored.format == "JPEG" and stored.mode == "RGB"
    assert prepared.source_format == "PNG"


def test_worker_task_returns_rejections_as_values():
    kind, reason = normalise_task((b"nope", True, 10**6, 256, 95, True))
    assert kind == "rejected" and "not an image" in reason
    kind, prepared = normalise_task(
        (encode(Image.new("RGB", (8, 8)), "PNG"), False, 10**6, 256, 95, True)
    )
    assert kind == "ok" and prepared.width == 8


def test_rejection_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ImageRejected("the file is empty")))
    assert error.reason == "the file is empty"


def test_too_wide_for_jpeg_is_rejected_clearly():
    wide = encode(Image.new("RGB", (66_000, 2)), "PNG")
    with pytest.raises(ImageRejected, match="JPEG cannot store a side over 65,500"):
        prepare_for_store(wide, max_side=None)
    assert prepare_for_store(wide, max_side=1024).width == 1024


def test_gif_with_a_huge_second_frame_does_not_crash():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = bytearray(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    descriptors = [
        i for i in range(len(data) - 9) if data[i] == 0x2C and data[i + 5 : i + 9] == b"\n\0\n\0"
    ]
    struct.pack_into("<HH", data, descriptors[-1] + 5, 30_000, 30_000)
    for reader in (load_image, prepare_for_store, check_image):
        try:
            assert reader(bytes(data)) is not None
        except ImageRejected as rejection:
            assert rejection.reason


def _noise_jpeg(**params) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90, **params)


def _with_segments(jpeg: bytes, marker: int, payload: bytes, count: int) -> bytes:
    """``jpeg`` with ``count`` extra APPn/COM segments of ``payload`` right after SOI."""
    segment = bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment * count + jpeg[2:]


def test_a_jpeg_that_is_also_a_zip_is_stored_as_the_image_only():
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("payload.txt", "x" * 5000)
    polyglot = _noise_jpeg() + archive.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))
    assert Image.open(io.BytesIO(polyglot)).format == "JPEG"
    stored = prepare_for_store(polyglot, max_side=128)
    assert stored.data is not None
    assert not zipfile.is_zipfile(io.BytesIO(stored.data))
    assert b"payload.txt" not in stored.data


@pytest.mark.parametrize("marker", [0xE1, 0xEF, 0xFE])
def test_megabytes_of_metadata_are_not_stored(marker):
    junk = np.random.default_rng(3).bytes(60_000)
    bloated = _with_segments(_noise_jpeg(), marker, junk, count=40)  # 2.4 MB of metadata
    assert Image.open(io.BytesIO(bloated)).size == (64, 48)
    stored = prepare_for_store(bloated, max_side=128)
    assert stored.data is not None and len(stored.data) < 100_000
    assert junk[:1000] not in stored.data


def test_ordinary_metadata_keeps_the_fast_path():
    with_exif = _with_segments(_noise_jpeg(), 0xE1, b"Exif\x00\x00" + b"\x00" * 2000, count=1)
    assert prepare_for_store(with_exif, max_side=128).data is None
    progressive = _noise_jpeg(progressive=True, comment=b"a short caption")
    assert prepare_for_store(progressive, max_side=128).data is None


def test_a_re_encoded_image_drops_the_source_comment():
    png_comment = b"x" * 50_000
    bloated = _with_segments(_noise_jpeg(), 0xFE, png_comment, count=1)
    stored = prepare_for_store(bloated, max_side=32)  # shrunk, so re-encoded anyway
    assert stored.data is not None and png_comment[:100] not in stored.data
