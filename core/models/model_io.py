"""Saving and loading transfer models as ``.keras`` files that carry their labels.

A saved model is a normal Keras ``.keras`` zip (``keras.saving.load_model`` still opens it)
with one extra entry, ``transfer_studio.json``, holding the class labels and metadata
(backbone, image size, preprocessing, anything the caller adds). Files are written to a
temporary sibling and renamed into place, so a crash never leaves a half-written model.
Loading always uses ``safe_mode=True``: a model containing a ``Lambda`` (arbitrary code) is
refused.

Only built-in Keras layers are saved (:func:`core.models.transfer.to_builtin` drops the
training-time augmentation), so the file opens with plain Keras in a process that cannot import
this project. Models saved by earlier versions (custom ``transfer_studio>Preprocess`` layer)
still load and come back converted to built-in layers, with the same predictions.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from core.atomic import atomic_target

METADATA_ENTRY = "transfer_studio.json"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is not a usable Keras file (wrong format, unsafe, or missing labels)."""


def _model_facts(model: Any) -> dict[str, Any]:
    from core.models.registry import get_backbone
    from core.models.transfer import backbone_name

    facts: dict[str, Any] = {}
    try:
        name = backbone_name(model)
    except ValueError:
        name = None
    if name is not None:
        facts["backbone"] = name
        facts["preprocessing"] = get_backbone(name).preprocessing
    shape = model.input_shape
    if isinstance(shape, tuple) and len(shape) == 4:
        facts["image_size"] = int(shape[1]) if shape[1] else None
        facts["input_shape"] = list(shape[1:])
    facts["num_classes"] = int(model.output_shape[-1])
    return facts


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    labels: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Saves ``model`` as a ``.keras`` file with labels and metadata embedded, atomically.

    What is written is :func:`core.models.transfer.to_builtin` of the model: the inference
    graph (no augmentation), built-in Keras layers only.

    Args:
        model: A Keras model (normally from :func:`core.models.transfer.build_model`).
        path: Destination; must end in ``.keras``.
        labels: Class names, in output order; their count must equal the model's outputs.
        extra: More JSON-ready metadata to embed (run id, metrics ...).

    Returns:
        The path written.

    Raises:
        ValueError: If the path does not end in ``.keras`` or the labels do not match.
    """
    from core.models.transfer import to_builtin

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"path must end in '.keras'. Received: path={str(path)!r}")
    labels = [str(label) for label in labels]
    model = to_builtin(model)
    facts = _model_facts(model)
    if len(labels) != facts["num_classes"]:
        raise ValueError(
            f"labels must have one name per model output ({facts['num_classes']}). "
            f"Received {len(labels)} labels: {labels[:10]}"
        )
    metadata = {
        "format": "transfer_studio",
        "format_version": FORMAT_VERSION,
        **facts,
        "labels": labels,
        "extra": dict(extra or {}),
    }
    tmp = atomic_target(path)
    try:
        model.save(str(tmp))
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=2, ensure_ascii=False))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_keras_file(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {str(path)!r}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path.name} is not a Keras file: expected a '.keras' zip archive written by "
            "Keras (model.save('model.keras'))."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(
                    f"{path.name} is not a Keras file: the archive has no 'config.json' entry."
                )
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(
                    f"{path.name} declares a model config of {info.file_size:,} bytes, over the "
                    f"{MAX_CONFIG_BYTES:,} a model of this app ever needs; refused unread."
                )
            raw = archive.read("config.json")
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"{path.name} is a damaged zip archive ({error}).") from error
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path.name} has a damaged model config ({error}).") from error
    check_model_config(config, path.name)


#: Largest ``config.json`` inside a ``.keras`` file (the app's models need well under 1 MB).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: Keras classes the app never builds and that run code or read files when deserialised.
REFUSED_CLASSES = frozenset(
    {"Lambda", "TFSMLayer", "StringLookup", "IntegerLookup", "TextVectorization", "function"}
)
_OWN_PREFIX = "transfer_studio>"


def check_model_config(config: Any, name: str = "the model") -> None:
    """Refuses a model config that names anything but Keras' own classes and the app's layers.

    Keras' ``safe_mode`` stops ``Lambda`` layers, but a foreign config can still name any
    importable callable (``os.system``, ``builtins.exec``) or a lookup layer whose vocabulary
    is a file path (read when the layer is built). Every object in the config that names a
    module must name ``keras`` (or a ``keras.`` module) with a class the app may build, or one
    of the app's registered layers.

    Args:
        config: The parsed ``config.json`` of a ``.keras`` file.
        name: The file's name, for messages.

    Raises:
        ModelFileError: Naming the first refused class and why.
    """
    pending = [config]
    seen = 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > 2_000_000:
            raise ModelFileError(f"{name} has a model config too large to check; refused.")
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        module = node.get("module")
        class_name = node.get("class_name")
        registered = node.get("registered_name")
        if module is not None or (class_name is not None and class_name != "__keras_tensor__"):
            own = isinstance(registered, str) and registered.startswith(_OWN_PREFIX)
            keras_module = isinstance(module, str) and (
                module == "keras" or module.startswith("keras.")
            )
            if class_name in REFUSED_CLASSES:
                raise ModelFileError(
                    f"Refused to load {name}: it contains a {class_name!s:.40} object, which "
                    "runs code or reads files when loaded. Only models built by the app load."
                )
            if module is not None and not (keras_module or own):
                raise ModelFileError(
                    f"Refused to load {name}: it names {str(module)[:60]}.{str(class_name)[:60]}, "
                    "which is not a Keras or Transfer Studio layer. Only models built by the "
                    "app load."
                )
        pending.extend(node.values())


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads the embedded metadata of a saved model without loading its weights.

    Args:
        path: A ``.keras`` file written by :func:`save_model`.

    Returns:
        The metadata dictionary (``labels``, ``backbone``, ``image_size``, ``preprocessing``,
        ``num_classes``, ``extra`` ...) plus ``keras_version`` from Keras' own metadata.
        A plain Keras file without our entry gives ``{"labels": [], ...}`` with what Keras
        recorded.

    Raises:
        ModelFileError: If the file is not a Keras file.
    """
    path = Path(path)
    _check_keras_file(path)
    metadata: dict[str, Any] = {"labels": [], "extra": {}}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        ours = _zip_json(archive, METADATA_ENTRY, path.name) if METADATA_ENTRY in names else {}
        metadata.update(ours)
        if "metadata.json" in names:
            keras_meta = _zip_json(archive, "metadata.json", path.name)
            metadata["keras_version"] = keras_meta.get("keras_version")
    labels = metadata.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ModelFileError(f"{path.name} has damaged labels in its metadata ({labels!r:.80}).")
    return metadata


def _zip_json(archive: zipfile.ZipFile, entry: str, name: str) -> dict[str, Any]:
    """One small JSON object of a ``.keras`` archive, checked before and after reading."""
    if archive.getinfo(entry).file_size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{name}: its {entry} is too large to be metadata; refused unread.")
    try:
        value = json.loads(archive.read(entry))
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(f"{name}: its {entry} is damaged ({error}).") from error
    if not isinstance(value, dict):
        raise ModelFileError(f"{name}: its {entry} holds {type(value).__name__}, not an object.")
    return value


def load_model(path: str | os.PathLike[str], *, compile: bool = False) -> tuple[Any, list[str]]:
    """Loads a saved model and its labels, with ``safe_mode=True``.

    Args:
        path: A ``.keras`` file. Labels come from the embedded metadata, or from a
            ``labels.txt`` beside the file for plain Keras files.
        compile: Whether to restore the training configuration too.

    Returns:
        ``(model, labels)``; a model saved by an earlier version comes back converted to
        built-in layers (:func:`core.models.transfer.to_builtin`).

    Raises:
        ModelFileError: If the file is not a Keras file, contains unsafe code (a ``Lambda``
            layer) or has no labels.
    """
    import keras

    # Registers the layers of models saved by earlier versions (LegacyPreprocess, Augmentation,
    # SymmetricShear), so those files still load and can be converted.
    from core.models.transfer import to_builtin

    path = Path(path)
    metadata = read_model_metadata(path)
    labels = list(metadata.get("labels") or [])
    if not labels:
        labels_file = path.with_name("labels.txt")
        if labels_file.is_file():
            labels = [line for line in labels_file.read_text().splitlines() if line.strip()]
    if not labels:
        raise ModelFileError(
            f"{path.name} carries no class labels (no '{METADATA_ENTRY}' entry and no "
            "labels.txt beside it)."
        )
    try:
        model = keras.saving.load_model(str(path), compile=compile, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "lambda" in str(error).lower():
            raise ModelFileError(
                f"Refused to load {path.name}: it contains code (a Lambda layer or custom "
                f"function) that would run when loaded. Only models built by the app can be "
                f"loaded. Details: {error}"
            ) from error
        raise ModelFileError(
            f"{path.name} could not be loaded as a Keras model: {error}"
        ) from error
    except (TypeError, KeyError, AttributeError, IndexError, OSError) as error:
        # A config Keras cannot make sense of (foreign or damaged): one sentence, no trace.
        first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelFileError(
            f"{path.name} could not be loaded as a Keras model ({type(error).__name__}: {first})."
        ) from error
    if int(model.output_shape[-1]) != len(labels):
        raise ModelFileError(
            f"{path.name} has {model.output_shape[-1]} outputs but {len(labels)} labels."
        )
    return to_builtin(model), labels
