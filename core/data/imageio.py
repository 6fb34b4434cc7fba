"""Reading untrusted image bytes into clean RGB pictures, the same way everywhere.

Ingest and prediction both go through :func:`load_image`, so a photo is normalised
identically when a dataset is built and when a model is asked about it: the real format
is detected from the bytes (the file extension is never trusted), the pixel count is
capped before anything is decoded, the whole file is decoded (a truncated file is caught
here, not in the middle of a training epoch), the EXIF orientation is applied, the first
frame of an animation is used, transparency is composited on a fixed white background and
every mode ends up as 8-bit RGB (16-bit images are scaled, not clipped).

:func:`prepare_for_store` is the ingest variant: it also downsizes big photos (with
``Image.draft`` for JPEGs, so the decoder does most of the shrinking) and encodes the
result as JPEG. A JPEG that is already RGB, upright and small enough is kept byte for byte
(after a full validating decode), which saves a lossy re-encode and most of the time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Formats Pillow may try. A short list of magic-number formats on purpose: formats
#: without a signature (TGA, ...) would happily "open" random bytes.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF")

#: Default cap on width x height (64 megapixels: bigger than any phone photo).
DEFAULT_MAX_PIXELS = 64_000_000

#: The fixed background transparent pixels are composited on.
BACKGROUND = (255, 255, 255)

#: JPEG quality of stored images.
DEFAULT_JPEG_QUALITY = 95

_ORIENTATION_TAG = 0x0112
_JPEG_MAX_SIDE = 65_500
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"heif"}
_SUPPORTED_TEXT = "JPEG, PNG, GIF, BMP, TIFF, WebP or AVIF"


class ImageRejected(Exception):
    """An input that is not a usable image.

    Attributes:
        reason: One sentence a person understands, e.g. "the file is truncated".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self):  # keeps the reason when sent between processes
        return (type(self), (self.reason,))


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to be stored.

    Attributes:
        data: JPEG bytes to store, or ``None`` when the source bytes are already a clean
            JPEG and are stored unchanged.
        width: Width of the stored image.
        height: Height of the stored image.
        source_format: Format detected from the bytes (e.g. ``"PNG"``).
        warnings: Remarks worth showing (e.g. "animated GIF: used the first frame").
    """

    data: bytes | None
    width: int
    height: int
    source_format: str
    warnings: tuple[str, ...] = ()


def _sniff_unsupported(head: bytes) -> str | None:
    """Returns a reason for well-known non-image or unsupported content, else None."""
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return (
            "HEIC/HEIF photos are not supported; export them as JPEG "
            "(on an iPhone: Settings > Camera > Formats > Most Compatible)"
        )
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG is a vector drawing, not a pixel image; export it as PNG first"
    if text.startswith(b"%pdf"):
        return "this is a PDF document, not an image"
    if head.startswith(b"PK\x03\x04"):
        return "this is an archive (zip) inside the upload; archives inside archives are not opened"
    return None


def _describe_unreadable(head: bytes) -> str:
    sample = head[:512]
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in sample)
    if sample and printable == len(sample):
        return f"this looks like a text file, not an image (supported: {_SUPPORTED_TEXT})"
    return f"not an image in a supported format ({_SUPPORTED_TEXT})"


def _read_source(source: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        try:
            return Path(source).read_bytes()
        except OSError as error:
            raise ImageRejected(f"could not read the file: {error.strerror or error}") from error
    raise TypeError(f"source must be bytes or a path. Received: {type(source).__name__}")


@functools.cache
def _available_formats() -> tuple[str, ...]:
    """The allowed formats this Pillow build can open (AVIF support is optional)."""
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Opens (header only) and enforces the pixel cap. Call inside _untrusted()."""
    if not data:
        raise ImageRejected("the file is empty")
    reason = _sniff_unsupported(data[:1024])
    if reason:
        raise ImageRejected(reason)
    try:
        image = Image.open(io.BytesIO(data), formats=_available_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(
            f"the image claims too many pixels (decompression bomb?): {error}"
        ) from error
    except Image.UnidentifiedImageError as error:
        raise ImageRejected(_describe_unreadable(data)) from error
    except Exception as error:  # a corrupt header can raise nearly anything inside Pillow
        raise ImageRejected(f"the image header is damaged ({_short(error)})") from error
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageRejected(
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (a decompression bomb, or a photo that needs downsizing)"
        )
    return image


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def _untrusted() -> Iterator[None]:
    """The trust boundary around Pillow: every failure on untrusted bytes is a rejection.

    Pillow's ``DecompressionBombWarning`` is raised as an error inside the block. (The
    ``catch_warnings`` save/restore is not atomic across threads; a race can at worst leave
    that warning an error for the whole process, which is the policy anyway, and the
    explicit ``max_pixels`` check in :func:`_open` does not depend on warnings at all.)
    Any other exception from Pillow on damaged data (it raises OSError, SyntaxError,
    ValueError, struct.error, EOFError, ...) becomes an :class:`ImageRejected`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(
                f"the image has too many pixels (decompression bomb?): {_short(error)}"
            ) from error
        except Exception as error:  # untrusted bytes: anything Pillow raises means "unusable"
            raise ImageRejected(f"the image could not be read ({_short(error)})") from error


def _is_animated(image: Image.Image) -> bool:
    return bool(getattr(image, "is_animated", False)) or getattr(image, "n_frames", 1) > 1


def _decode(image: Image.Image) -> None:
    """Decodes every byte of the current frame; a damaged file is rejected here."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(
            f"the image has too many pixels (decompression bomb?): {error}"
        ) from error
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        detail = _short(error)
        if "truncated" in detail.lower():
            raise ImageRejected("the file is truncated (incomplete download or copy?)") from error
        raise ImageRejected(f"the image data is damaged ({detail})") from error


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scales 16/32-bit integer or float grayscale into 8 bits (scaled, never clipped)."""
    array = np.asarray(image)
    if image.mode == "F":
        array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(array.min()), float(array.max())
        scaled = array * 255.0 if low >= 0.0 and high <= 1.0 else np.clip(array, 0, 255)
    elif image.mode.startswith("I;16") or int(array.max(initial=0)) > 255:
        scaled = np.clip(array.astype(np.float64), 0, 65535) / 257.0
    else:
        scaled = array.astype(np.float64)
    gray = Image.fromarray(np.rint(np.clip(scaled, 0, 255)).astype(np.uint8), "L")
    return gray.convert("RGB")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Converts a loaded image of any mode to 8-bit RGB.

    Transparency (alpha channels, palette or single-colour ``transparency``) is composited
    on ``background``; CMYK, YCbCr, LAB and palette images are converted; 16-bit and 32-bit
    grayscale is scaled into 0..255.

    Args:
        image: A loaded Pillow image.
        background: The RGB colour behind transparent pixels.

    Returns:
        An RGB image (``image`` itself when it already is plain RGB).

    Raises:
        ImageRejected: If the mode cannot be converted.
    """
    mode = image.mode
    has_transparency = "transparency" in image.info
    if mode == "RGB" and not has_transparency:
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _sixteen_bit_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or has_transparency:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageRejected(f"images of mode {mode!r} cannot be converted to RGB") from error


def _frame_warning(image: Image.Image) -> tuple[str, ...]:
    if not _is_animated(image):
        return ()
    kind = "animated GIF" if image.format == "GIF" else f"multi-frame {image.format}"
    return (f"{kind}: used the first frame only",)


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright), or 0 when the EXIF block cannot be parsed."""
    try:
        value = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # untrusted metadata: any parse failure means "unknown", reported
        return 0
    return value if 1 <= value <= 8 else 1


_BAD_EXIF_NOTE = "the photo's EXIF data is damaged; its orientation was left as stored"


def _normalise(
    image: Image.Image, max_side: int | None, background: tuple[int, int, int]
) -> tuple[Image.Image, tuple[str, ...]]:
    """Loads, transposes, flattens and (optionally) downsizes an opened image."""
    notes = _frame_warning(image)
    orientation = _orientation(image)
    if max_side and max(image.size) > max_side and image.format in ("JPEG", "MPO"):
        # The JPEG decoder shrinks by 1/2, 1/4 or 1/8 almost for free.
        image.draft("RGB", _target_size(image.size, max_side))
    _decode(image)
    upright: Image.Image = image
    if orientation == 0:
        notes += (_BAD_EXIF_NOTE,)
    elif orientation != 1:
        upright = ImageOps.exif_transpose(image)
    rgb = to_rgb(upright, background)
    if max_side and max(rgb.size) > max_side:
        rgb = rgb.resize(_target_size(rgb.size, max_side), Image.Resampling.LANCZOS)
    return rgb, notes


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """Reads an image from bytes or a path and returns it upright, flattened, in RGB.

    Args:
        source: The file's bytes, or a path to it.
        max_pixels: Largest width x height accepted; bigger images are rejected before
            decoding (decompression bombs). Pillow's ``DecompressionBombWarning`` is
            treated as an error too.
        max_side: If given, the result is shrunk so its longest side is at most this.
        background: RGB colour behind transparent pixels (white by default).

    Returns:
        A fully loaded RGB ``PIL.Image.Image``.

    Raises:
        ImageRejected: If the bytes are not a supported, intact image; ``.reason`` says why.
        TypeError: If ``source`` is neither bytes nor a path.
    """
    data = _read_source(source)
    with _untrusted():
        image = _open(data, max_pixels)
        with image:
            rgb, _ = _normalise(image, max_side, background)
            rgb.load()
    return rgb


#: Most bytes of metadata (APPn and COM segments: EXIF, ICC, XMP, comments) a JPEG may carry
#: and still be stored byte for byte; beyond this it is re-encoded without them.
MAX_KEPT_JPEG_METADATA = 128 * 1024
#: Padding tolerated after a JPEG's end-of-image marker (some cameras add a few zero bytes).
_MAX_JPEG_TRAILER = 16
_METADATA_MARKERS = frozenset(range(0xE0, 0xF0)) | {0xFE}
#: Markers that stand alone (no length field): TEM, RST0-7.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_holds_only_the_image(data: bytes) -> bool:
    """Whether a JPEG's bytes are its image and a little metadata, and nothing else.

    A file can be a valid JPEG and also something else: a zip appended after the
    end-of-image marker (a polyglot), or megabytes hidden in APPn/COM segments. Such files
    are never kept byte for byte. The walk reads segment headers only (linear, no decoding).

    Args:
        data: The file's bytes (already known to open as a JPEG).

    Returns:
        True when metadata segments total at most :data:`MAX_KEPT_JPEG_METADATA` bytes,
        nothing but padding follows the end-of-image marker, and no zip directory is present.
    """
    if not data.startswith(b"\xff\xd8") or b"PK\x05\x06" in data or b"PK\x06\x06" in data:
        return False
    position = 2
    metadata = 0
    size = len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            return False
        if marker in _METADATA_MARKERS:
            metadata += length
            if metadata > MAX_KEPT_JPEG_METADATA:
                return False
        position += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                position = data.find(b"\xff", position)
                if position < 0 or position + 1 >= size:
                    return False
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    position += 1 if following == 0xFF else 2
                    continue
                break
            if data[position + 1] == 0xD9:  # end of image
                return size - (position + 2) <= _MAX_JPEG_TRAILER
    return False


def prepare_for_store(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = 1024,
    quality: int = DEFAULT_JPEG_QUALITY,
    keep_clean_jpeg: bool = True,
) -> PreparedImage:
    """Validates and normalises one image for the dataset store.

    Args:
        data: The file's bytes.
        max_pixels: See :func:`load_image`.
        max_side: Longest side of the stored image; ``None`` keeps the original size.
        quality: JPEG quality when the image is re-encoded.
        keep_clean_jpeg: Keep an RGB, upright JPEG that needs no resizing and holds nothing
            but the image (:func:`jpeg_holds_only_the_image`) byte for byte (``data`` is
            ``None`` in the result) after a full validating decode.

    Returns:
        A :class:`PreparedImage`.

    Raises:
        ImageRejected: If the bytes are not a supported, intact image.
    """
    with _untrusted():
        image = _open(data, max_pixels)
        with image:
            fits = not max_side or max(image.size) <= max_side
            if (
                keep_clean_jpeg
                and fits
                and image.format == "JPEG"
                and image.mode == "RGB"
                and _orientation(image) == 1
                and jpeg_holds_only_the_image(data)
            ):
                width, height = image.size
                # Decoding at 1/8 scale, luma only, still entropy-decodes every byte of the
                # file, so a truncated or broken JPEG is caught, at half the cost of a full
                # decode. The pixels are not needed: the file is kept as it is.
                image.draft("L", (1, 1))
                _decode(image)
                return PreparedImage(None, width, height, "JPEG")
            source_format = image.format or "unknown"
            rgb, notes = _normalise(image, max_side, BACKGROUND)
            if max(rgb.size) > _JPEG_MAX_SIDE:
                raise ImageRejected(
                    f"the image is {rgb.width}x{rgb.height}; JPEG cannot store a side over "
                    f"{_JPEG_MAX_SIDE:,} pixels (set max_side to shrink it)"
                )
            buffer = io.BytesIO()
            # Only pixels are stored: Pillow would otherwise copy the source's comment.
            rgb.info = {}
            rgb.save(buffer, "JPEG", quality=quality)
            return PreparedImage(buffer.getvalue(), rgb.width, rgb.height, source_format, notes)


def check_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PreparedImage:
    """Validates an image without keeping its pixels (what ``inspect`` needs).

    JPEGs are decoded at 1/8 scale (every byte is still read and checked); other formats
    are decoded in full.

    Args:
        data: The file's bytes.
        max_pixels: See :func:`load_image`.

    Returns:
        A :class:`PreparedImage` whose ``data`` is ``None`` and whose size is the size the
        image would be stored at without a ``max_side`` cap.

    Raises:
        ImageRejected: If the bytes are not a supported, intact image.
    """
    with _untrusted():
        image = _open(data, max_pixels)
        with image:
            notes = _frame_warning(image)
            width, height = image.size
            orientation = _orientation(image)
            if orientation == 0:
                notes += (_BAD_EXIF_NOTE,)
            source_format = image.format or "unknown"
            if image.format in ("JPEG", "MPO"):
                image.draft("L" if image.mode in ("RGB", "L") else None, (1, 1))
            _decode(image)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if image.mode not in ("RGB", "L", "RGBA", "LA", "P", "CMYK", "YCbCr", "1", "PA"):
                to_rgb(image)  # exotic modes: prove they convert
    return PreparedImage(None, width, height, source_format, notes)


def normalise_task(task: tuple) -> tuple[str, object]:
    """Worker entry point for ingest pools (top level, so ``spawn`` processes can import it).

    Args:
        task: ``(data, store, max_pixels, max_side, quality, keep_clean_jpeg)``.

    Returns:
        ``("ok", PreparedImage)`` or ``("rejected", reason)``; rejections travel as values
        so nothing but real bugs crosses a process boundary as an exception.
    """
    data, store, max_pixels, max_side, quality, keep_clean_jpeg = task
    try:
        if store:
            prepared = prepare_for_store(
                data,
                max_pixels=max_pixels,
                max_side=max_side,
                quality=quality,
                keep_clean_jpeg=keep_clean_jpeg,
            )
        else:
            prepared = check_image(data, max_pixels=max_pixels)
    except ImageRejected as rejection:
        return "rejected", rejection.reason
    return "ok", prepared
