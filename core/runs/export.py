"""Export a trained run to the formats people deploy, and prove each export behaves the same.

Formats (see :data:`FORMATS`):

- ``keras``: a ``.keras`` file of built-in Keras layers only (opens with plain Keras);
- ``savedmodel``: a TensorFlow SavedModel written by ``model.export`` (endpoint ``serve``);
- ``tflite``: TFLite / LiteRT float32;
- ``tflite-fp16``: TFLite with float16 weights (float in, float out, half the size);
- ``tflite-int8``: TFLite with int8 weights, float activations ("dynamic range");
- ``tflite-int8-full``: full-integer TFLite (int8 input, activations and output), calibrated
  on training images: what an Edge TPU or a microcontroller needs;
- ``onnx``: ONNX converted by tf2onnx, run with onnxruntime;
- ``web``: ONNX plus a static page that runs it in the browser with a vendored
  onnxruntime-web (dropped or chosen picture, or the webcam live).

Every export is a self-contained folder (see :mod:`core.runs.bundle`): the artifact,
``labels.txt``, a standalone ``predict.py``, a pinned ``requirements.txt`` and a model card
``README.md``, plus a zip of it for download. The **parity check** runs the bundle's own
``predict.py`` in a clean process (``python -I``, the bundle as working directory, this project
not importable) on the validation and test images and compares it with the in-app model (the
same path as ``core predict``): top-1 agreement, largest absolute probability difference and
accuracy of both per split. Results are stored in ``<run>/exports/parity.json``.

An export only ever writes into a folder it made itself, an empty folder, or a folder holding
a previous export of the same format that it marked (:data:`MARKER_FILE`); anything else is
refused with :class:`ExportTargetError`, and a sibling ``<out>.zip`` it did not write is never
replaced.

Everything except ``keras`` needs TensorFlow as the Keras backend; another backend gets a
:class:`BackendError` that says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.models.model_io import read_model_metadata, save_model
from core.runs import bundle as bundle_mod
from core.runs.formats import (
    ARTIFACT_NAMES,
    FORMAT_TITLES,
    FORMATS,
    TF_ONLY_FORMATS,
    TFLITE_FORMATS,
)
from core.runs.predict import image_to_array, load_batch, load_run_model, predict_arrays
from core.runs.store import MODEL_FILE, now_iso, resolve_run_dir

PARITY_FILE = "parity.json"
EXPORTS_DIR = "exports"
MARKER_FILE = ".transfer-studio-export.json"
MARKER_KIND = "transfer-studio-export"
ONNX_OPSET = 17
DEFAULT_PARITY_IMAGES = 200
CALIBRATION_IMAGES = 100
PARITY_TIMEOUT_S = 900
# Files an export wrote before it left a marker: a folder at the default location holding
# only these is a previous export and may be replaced.
_LEGACY_FILES = {"labels.txt", "README.md", "predict.py", "Classify.kt"}

Progress = Callable[[str], None]


class BackendError(RuntimeError):
    """The active Keras backend cannot produce this format (it needs TensorFlow)."""


class ExportTargetError(ValueError):
    """The output folder (or its zip) holds something this export did not write."""


@dataclass
class ExportResult:
    """One finished export.

    Attributes:
        format: One of :data:`FORMATS`.
        path: The artifact (file, or folder for ``savedmodel``).
        bytes: Size of the artifact on disk.
        folder: The export folder (the bundle: artifact, labels, predict.py, README ...).
        bundle: Zip of ``folder``, what the app offers for download.
        parity: ``top1_agreement``, ``max_abs_diff``, ``n``, ``source``, ``runtime``,
            ``clean_process``, ``splits`` (per split ``n``, ``accuracy``,
            ``reference_accuracy``) and overall ``accuracy`` / ``reference_accuracy``.
        seconds: Time the conversion took.
        quantization: Input/output ``dtype``, ``scale``, ``zero_point`` of integer models.
    """

    format: str
    path: Path
    bytes: int
    folder: Path
    bundle: Path
    parity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    quantization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings)."""
        data = asdict(self)
        for key in ("path", "folder", "bundle"):
            data[key] = str(data[key])
        return data


def check_format(fmt: str) -> None:
    """Raises ValueError naming the allowed formats when ``fmt`` is unknown."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}. Received: format={fmt!r}")


def check_backend(fmt: str, backend: str | None = None) -> None:
    """Raises :class:`BackendError` when ``fmt`` needs TensorFlow and Keras runs on another.

    Args:
        fmt: One of :data:`FORMATS`.
        backend: The Keras backend to check; defaults to the active one.
    """
    check_format(fmt)
    if fmt not in TF_ONLY_FORMATS:
        return
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"Export format {fmt!r} needs the TensorFlow backend, but Keras is running on "
            f"{backend!r}. Export as 'keras' instead, or restart with KERAS_BACKEND=tensorflow."
        )


def available_formats(backend: str | None = None) -> dict[str, str | None]:
    """Format -> None if it can be exported on ``backend`` (default: the active one), else why."""
    reasons: dict[str, str | None] = {}
    for fmt in FORMATS:
        try:
            check_backend(fmt, backend)
            reasons[fmt] = None
        except BackendError as error:
            reasons[fmt] = str(error)
    return reasons


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --------------------------------------------------------------------------- conversions


def _write_savedmodel(model: Any, target: Path) -> None:
    # model.export prints the signature on stdout; keep stdout for results.
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(target), format="tf_saved_model", verbose=False)


def _tflite_bytes(
    model: Any, fmt: str, *, workdir: Path, calibration: np.ndarray | None = None
) -> bytes:
    """Converts with the TFLite converter: from the Keras model, else via a SavedModel.

    Args:
        model: The (built-in layers only) transfer model.
        fmt: One of :data:`TFLITE_FORMATS`.
        workdir: Scratch folder for the SavedModel fallback.
        calibration: Training images (N, S, S, 3) float32 for ``tflite-int8-full``.
    """
    import tensorflow as tf

    full_int = fmt == "tflite-int8-full"
    if full_int and (calibration is None or not len(calibration)):
        raise ValueError("Full-integer quantisation needs calibration images; none were given.")

    def representative():
        for image in calibration:
            yield [image[None].astype(np.float32)]

    def configure(converter: Any, select_ops: bool) -> Any:
        if fmt != "tflite":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if fmt == "tflite-fp16":
            converter.target_spec.supported_types = [tf.float16]
        if full_int:
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif select_ops:
            # Layers without a builtin TFLite kernel run as TF ops (Flex delegate).
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS,
                tf.lite.OpsSet.SELECT_TF_OPS,
            ]
        return converter

    errors = []
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return configure(tf.lite.TFLiteConverter.from_keras_model(model), False).convert()
        except Exception as error:  # the converter raises many types; fall back below
            errors.append(f"from the Keras model: {error}")
        saved = workdir / "saved_model_for_tflite"
        _write_savedmodel(model, saved)
        for select_ops in (False, True) if not full_int else (False,):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            try:
                return configure(converter, select_ops).convert()
            except Exception as error:  # as above; every attempt is reported if all fail
                errors.append(f"from a SavedModel (select TF ops: {select_ops}): {error}")
    raise RuntimeError(f"TFLite conversion ({fmt}) failed. " + " | ".join(errors))


def _onnx_bytes(model: Any, size: int) -> bytes:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image: Any) -> Any:
        return {"probabilities": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    return proto.SerializeToString()


# --------------------------------------------------------------------------- runtimes


def tflite_interpreter(path: str | os.PathLike[str]) -> Any:
    """Opens a ``.tflite`` file with LiteRT (``ai_edge_litert``, pinned in requirements.txt).

    Raises:
        RuntimeError: If ``ai-edge-litert`` is not installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise RuntimeError(
            "TFLite models run with LiteRT: install ai-edge-litert (pinned in requirements.txt)."
        ) from error
    return Interpreter(model_path=str(path))


def tflite_quantization(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Input/output ``dtype``, ``scale`` and ``zero_point`` of an integer TFLite model.

    Returns:
        ``{"input": {...}, "output": {...}}``, or None for a float-in, float-out model.
    """
    interpreter = tflite_interpreter(path)
    details = {
        "input": interpreter.get_input_details()[0],
        "output": interpreter.get_output_details()[0],
    }
    if all(d["dtype"] == np.float32 for d in details.values()):
        return None
    result = {}
    for key, detail in details.items():
        scale, zero_point = detail["quantization"]
        result[key] = {
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }
    return result


def _run_tflite(path: Path, batch: np.ndarray) -> np.ndarray:
    interpreter = tflite_interpreter(path)
    input_index = interpreter.get_input_details()[0]["index"]
    # One image at a time, like a phone would run it.
    interpreter.resize_tensor_input(input_index, [1, *batch.shape[1:]])
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    outputs = []
    for image in batch:
        x = image[None].astype(np.float32)
        if source["dtype"] != np.float32:
            scale, zero_point = source["quantization"]
            limits = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / scale + zero_point), limits.min, limits.max)
        interpreter.set_tensor(input_index, x.astype(source["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(target["index"])[0].copy()
        if target["dtype"] != np.float32:
            scale, zero_point = target["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        outputs.append(y)
    return np.stack(outputs).astype(np.float32)


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: batch[i : i + 16]})[0] for i in range(0, len(batch), 16)]
    return np.concatenate(outputs).astype(np.float32)


def _run_savedmodel(path: Path, batch: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    outputs = [loaded.serve(tf.constant(batch[i : i + 16])) for i in range(0, len(batch), 16)]
    return np.concatenate([np.asarray(o) for o in outputs]).astype(np.float32)


def _run_keras(path: Path, batch: np.ndarray) -> np.ndarray:
    import keras

    model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    return predict_arrays(model, batch)


RUNTIMES: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "keras": _run_keras,
    "savedmodel": _run_savedmodel,
    **{fmt: _run_tflite for fmt in TFLITE_FORMATS},
    "onnx": _run_onnx,
    "web": _run_onnx,
}


def run_artifact(fmt: str, path: str | os.PathLike[str], batch: np.ndarray) -> np.ndarray:
    """Runs an exported artifact in its own runtime, in this process, on a float32 NHWC batch.

    Returns:
        Probabilities, shape (N, classes).
    """
    check_format(fmt)
    return RUNTIMES[fmt](Path(path), np.asarray(batch, dtype=np.float32))


# --------------------------------------------------------------------------- parity


@dataclass
class ParityImages:
    """Image files for the parity check and what is known about them.

    Attributes:
        paths: Image files.
        truths: Class index of each image (-1 = unknown), or None when there are no labels.
        splits: The split each image belongs to (``val``, ``test``, ``train``, ``random``).
        source: ``val+test``, ``val``, ``train`` or ``random``.
    """

    paths: list[Path]
    truths: list[int] | None
    splits: list[str]
    source: str


def parity_files(
    run_model: Any, workdir: Path, *, limit: int = DEFAULT_PARITY_IMAGES
) -> ParityImages:
    """The images the parity check runs: validation and test images, else training ones.

    When the dataset is gone, deterministic noise images are written to ``workdir`` as PNG
    (lossless, so both sides see the same pixels).

    Args:
        run_model: The opened run.
        workdir: Scratch folder for generated images.
        limit: Most images per split.
    """
    dataset = _dataset_of(run_model)
    if dataset is not None:
        index = {label: i for i, label in enumerate(run_model.labels)}
        for splits in (("val", "test"), ("train",)):
            paths: list[Path] = []
            truths: list[int] = []
            names: list[str] = []
            for split in splits:
                frame = dataset.frame(split).head(limit)
                paths += [dataset.dir / p for p in frame["image"]]
                truths += [index.get(str(label), -1) for label in frame["label"]]
                names += [split] * len(frame)
            if paths:
                source = "+".join(sorted(set(names), key=splits.index))
                return ParityImages(paths, truths, names, source)
    from PIL import Image

    rng = np.random.default_rng(0)
    size = run_model.image_size
    paths = []
    for i in range(16):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = workdir / f"noise_{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return ParityImages(paths, None, ["random"] * len(paths), "random")


def _dataset_of(run_model: Any) -> Any:
    dataset_id = run_model.config.get("dataset")
    if not dataset_id:
        return None
    try:
        from core.data.store import load_dataset

        return load_dataset(dataset_id)
    except (FileNotFoundError, KeyError, ValueError):
        return None


def reference_predictions(run_model: Any, paths: list[Path]) -> np.ndarray:
    """The in-app model's probabilities on image files, the way ``core predict`` reads them."""
    from core.data.imageio import load_image

    size = run_model.image_size
    batch = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        batch[i] = image_to_array(load_image(path), size)
    return run_model.predict(batch)


def clean_env() -> dict[str, str]:
    """Environment for a process that must not see this project (no PYTHONPATH)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "OMP_NUM_THREADS")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONNOUSERSITE"] = "1"
    return env


# Runs a script with the interpreter's installed packages but without ``.pth`` hooks (an
# editable install of this project is one) and proves the project cannot be imported.
_CLEAN_BOOT = """import importlib.util, runpy, sys
sys.path[:0] = {paths!r}
if importlib.util.find_spec("core") is not None:
    raise SystemExit("not a clean process: Transfer Studio's 'core' package is importable")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def clean_python(script: str, *args: str) -> list[str]:
    """Command line running ``script`` in a Python that cannot import this project.

    ``python -I -S``: no PYTHONPATH, no user site, no script folder on the path and no ``.pth``
    files (an editable install of this project is one); only the interpreter's installed
    packages are added back. The child exits with an error if ``core`` is importable anyway.
    """
    import sysconfig

    paths = list(
        dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    )
    return [sys.executable, "-I", "-S", "-c", _CLEAN_BOOT.format(paths=paths), script, *args]


def run_clean(
    cwd: Path, script: str, *args: str, timeout: float = PARITY_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Runs ``script ARGS`` with :func:`clean_python` in ``cwd``; returns the finished process."""
    return subprocess.run(
        clean_python(script, *args),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_bundle_predict(folder: Path, paths: list[Path]) -> np.ndarray:
    """Runs ``folder/predict.py --json`` on image files in a clean process; returns probabilities.

    The child is :func:`clean_python` with the bundle as working directory, so it can only use
    the bundle and its runtime.

    Raises:
        RuntimeError: If ``predict.py`` fails or prints something unexpected.
    """
    completed = run_clean(folder, "predict.py", "--json", *[str(p) for p in paths])
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"The bundle's predict.py failed in a clean process (exit {completed.returncode}): "
            + " | ".join(tail)
        )
    rows = []
    for line in completed.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line)["probabilities"])
    if len(rows) != len(paths):
        raise RuntimeError(
            f"The bundle's predict.py answered for {len(rows)} of {len(paths)} images."
        )
    return np.asarray(rows, dtype=np.float32)


def compare(
    reference: np.ndarray, candidate: np.ndarray, truths: list[int] | None = None
) -> dict[str, Any]:
    """Parity numbers of two probability arrays of the same shape.

    Returns:
        ``{"top1_agreement", "max_abs_diff", "n"}`` plus ``accuracy`` and
        ``reference_accuracy`` when ``truths`` (class indices, -1 = unknown) is given.
    """
    if reference.shape != candidate.shape:
        raise ValueError(
            f"Output shapes differ: in-app model {reference.shape}, export {candidate.shape}"
        )
    n = len(reference)
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    result: dict[str, Any] = {
        "top1_agreement": float((ref_top == cand_top).mean()) if n else 1.0,
        "max_abs_diff": float(np.abs(reference - candidate).max()) if n else 0.0,
        "n": int(n),
    }
    if truths is not None and n:
        truth = np.asarray(truths)
        result["accuracy"] = float((cand_top == truth).mean())
        result["reference_accuracy"] = float((ref_top == truth).mean())
    return result


def _parity_record(
    images: ParityImages, reference: np.ndarray, candidate: np.ndarray
) -> dict[str, Any]:
    record = compare(reference, candidate, images.truths)
    record["source"] = images.source
    splits: dict[str, Any] = {}
    if images.truths is not None:
        names = np.asarray(images.splits)
        for split in dict.fromkeys(images.splits):
            chosen = names == split
            truths = list(np.asarray(images.truths)[chosen])
            part = compare(reference[chosen], candidate[chosen], truths)
            splits[split] = {k: part[k] for k in ("n", "accuracy", "reference_accuracy")}
    record["splits"] = splits
    return record


def read_parity(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored parity results of a run: format -> parity record (empty if none or unreadable)."""
    path = Path(run_dir) / EXPORTS_DIR / PARITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, dict)}


def _store_parity(run_dir: Path, fmt: str, record: dict[str, Any]) -> None:
    data = read_parity(run_dir)
    data[fmt] = record
    atomic_write_json(run_dir / EXPORTS_DIR / PARITY_FILE, data)


# --------------------------------------------------------------------------- docs


def snippet(fmt: str, *, size: int) -> str:
    """The bundle's ``predict.py`` for ``fmt`` (standalone Python inference code)."""
    check_format(fmt)
    return bundle_mod.predict_script(
        fmt, artifact=ARTIFACT_NAMES[fmt], size=size, title=FORMAT_TITLES[fmt]
    )


def kotlin_snippet(fmt: str, *, size: int) -> str:
    """Android (Kotlin, LiteRT) inference code for the float-input TFLite formats."""
    artifact = ARTIFACT_NAMES[fmt]
    return f"""// build.gradle: implementation("com.google.ai.edge.litert:litert:1.0.1")
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer
import java.nio.ByteOrder

fun classify(
    context: android.content.Context,
    bitmap: android.graphics.Bitmap,
): Pair<String, Float> {{
    val model = org.tensorflow.lite.support.common.FileUtil.loadMappedFile(context, "{artifact}")
    val labels = context.assets.open("labels.txt").bufferedReader().readLines()
    val scaled = android.graphics.Bitmap.createScaledBitmap(bitmap, {size}, {size}, true)
    val input = ByteBuffer.allocateDirect(4 * {size} * {size} * 3).order(ByteOrder.nativeOrder())
    for (y in 0 until {size}) for (x in 0 until {size}) {{
        val p = scaled.getPixel(x, y)  // raw RGB 0..255 floats: no normalisation
        input.putFloat(((p shr 16) and 0xFF).toFloat())
        input.putFloat(((p shr 8) and 0xFF).toFloat())
        input.putFloat((p and 0xFF).toFloat())
    }}
    val output = Array(1) {{ FloatArray(labels.size) }}
    Interpreter(model).use {{ it.run(input, output) }}
    val best = output[0].indices.maxBy {{ output[0][it] }}
    return labels[best] to output[0][best]
}}
"""


def _class_counts(dataset: Any, labels: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {label: {} for label in labels}
    if dataset is None:
        return counts
    for (label, split), n in dataset.manifest.groupby(["label", "split"]).size().items():
        counts.setdefault(str(label), {})[str(split)] = int(n)
    return counts


def _split_metrics(
    images: ParityImages, reference: np.ndarray, labels: list[str]
) -> dict[str, dict[str, Any]]:
    from core.runs.evaluate import compute_metrics

    if images.truths is None:
        return {}
    metrics: dict[str, dict[str, Any]] = {}
    names = np.asarray(images.splits)
    for split in ("val", "test"):
        chosen = np.flatnonzero(names == split)
        known = [i for i in chosen if images.truths[i] >= 0]
        if not known:
            continue
        y_true = [labels[images.truths[i]] for i in known]
        y_pred = [labels[int(reference[i].argmax())] for i in known]
        found = compute_metrics(y_true, y_pred, labels)
        metrics[split] = {
            "n": len(known),
            "accuracy": float(found["accuracy"]),
            "per_class": found["per_class"],
        }
    return metrics


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    settings: dict[str, Any] = {}
    for key in ("backbone", "weights", "image_size", "trainable", "pooling", "dense_units"):
        if key in model:
            settings[key] = model[key]
    if "dropout" in model:
        settings["dropout"] = model["dropout"]
    augment = model.get("augment")
    if isinstance(augment, dict):
        on = {k: v for k, v in augment.items() if v not in (0, 0.0, "none", False, None)}
        settings["augmentation"] = ", ".join(f"{k}={v}" for k, v in on.items()) or "none"
    for key, value in config.items():
        scalar = isinstance(value, str | int | float | bool) and value != ""
        if key not in ("model", "dataset") and scalar:
            settings[key] = value
    return settings


# --------------------------------------------------------------------------- output folder


def default_export_dir(run_dir: str | os.PathLike[str], fmt: str) -> Path:
    """``<run>/exports/<format>/``."""
    return Path(run_dir) / EXPORTS_DIR / fmt


def bundle_zip_path(folder: Path) -> Path:
    """The zip written beside an export folder: ``<folder>.zip``."""
    return folder.with_name(folder.name + ".zip")


def _read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ExportTargetError(
            f"Refusing to write into {folder}: its export marker {MARKER_FILE} is unreadable "
            f"({type(error).__name__}). Choose a new or empty folder."
        ) from error
    if not isinstance(data, dict) or data.get("kind") != MARKER_KIND:
        raise ExportTargetError(
            f"Refusing to write into {folder}: {MARKER_FILE} is not an export marker. "
            "Choose a new or empty folder."
        )
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_target(folder: Path, fmt: str, *, default: Path | None = None) -> None:
    """Proves an export may write ``folder`` and its ``<folder>.zip``; raises otherwise.

    Allowed: a folder that does not exist, an empty folder, or a folder holding a previous
    export of the same format (its marker lists every entry; at the default location
    ``<run>/exports/<format>``, a folder holding only an earlier version's export files).
    The zip beside it may be replaced only when the marker recorded its hash.

    Args:
        folder: The resolved output folder.
        fmt: The format about to be exported.
        default: The run's default export folder for ``fmt``.

    Raises:
        ExportTargetError: With a one-line reason, if anything there was not written by a
            previous export of this format.
    """
    zip_path = bundle_zip_path(folder)
    marker = None
    if folder.exists() or folder.is_symlink():
        if folder.is_symlink() or not folder.is_dir():
            raise ExportTargetError(
                f"Refusing to export into {folder}: it is a file or a link, not a folder."
            )
        entries = sorted(p.name for p in folder.iterdir())
        marker = _read_marker(folder)
        if marker is not None:
            if marker.get("format") != fmt:
                raise ExportTargetError(
                    f"Refusing to export {fmt!r} into {folder}: it holds a "
                    f"{marker.get('format')!r} export. Choose another folder."
                )
            owned = set(marker.get("files") or []) | {MARKER_FILE}
            foreign = [name for name in entries if name not in owned]
            if foreign:
                raise ExportTargetError(
                    f"Refusing to replace the export in {folder}: it also holds files the "
                    f"export did not write ({', '.join(foreign[:5])}). Move them or choose "
                    "another folder."
                )
        elif entries and not (
            default is not None
            and folder == default
            and set(entries) <= _LEGACY_FILES | {ARTIFACT_NAMES[fmt]}
        ):
            raise ExportTargetError(
                f"Refusing to export into {folder}: the folder is not empty and holds no "
                f"previous {fmt!r} export ({len(entries)} entries, e.g. {entries[0]!r}). "
                "Choose a new or empty folder."
            )
    if zip_path.exists() or zip_path.is_symlink():
        recorded = (marker or {}).get("bundle_sha256")
        legacy_default = marker is None and default is not None and folder == default
        if not legacy_default and (
            zip_path.is_symlink() or not zip_path.is_file() or recorded != _sha256(zip_path)
        ):
            raise ExportTargetError(
                f"Refusing to export to {folder}: {zip_path.name} already exists beside it and "
                "was not written by this export. Move it or choose another folder."
            )


def _replace_folder(staging: Path, folder: Path, fmt: str, default: Path) -> None:
    """Moves the finished ``staging`` folder to ``folder``, removing only what it owns."""
    check_target(folder, fmt, default=default)  # again: the folder may have changed meanwhile
    if folder.exists():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        folder.rmdir()
    os.replace(staging, folder)


# --------------------------------------------------------------------------- export


def export_run(
    run: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    *,
    run_model: Any = None,
    parity_limit: int = DEFAULT_PARITY_IMAGES,
    progress: Progress | None = None,
) -> ExportResult:
    """Exports a run's model as a self-contained bundle and checks it in a clean process.

    Args:
        run: The run folder or run id.
        fmt: One of :data:`FORMATS`.
        out: Export folder; defaults to ``<run>/exports/<format>/``. It must be new, empty,
            or a previous export of the same format (see :func:`check_target`).
        run_model: An already opened :class:`core.runs.predict.RunModel`.
        parity_limit: Most validation (and test) images the parity check uses, per split.
        progress: Optional callback receiving one message per stage.

    Returns:
        The :class:`ExportResult` (its parity is also stored in ``<run>/exports/parity.json``).

    Raises:
        ValueError: If ``fmt`` is unknown.
        ExportTargetError: If ``out`` holds anything this export did not write.
        BackendError: If ``fmt`` needs TensorFlow and Keras runs on another backend.
        FileNotFoundError: If the run has no model yet.
        RuntimeError: If the conversion fails, or the bundle fails in a clean process.
    """
    check_format(fmt)
    say = progress or (lambda _message: None)
    run_dir = resolve_run_dir(run)
    default = default_export_dir(run_dir, fmt).expanduser().resolve()
    folder = Path(out).expanduser().resolve() if out is not None else default
    check_target(folder, fmt, default=default)  # before anything slow: a refusal is instant
    check_backend(fmt)
    if fmt == "web":
        bundle_mod.web_runtime_dir()
    run_model = run_model or load_run_model(run_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt}.", dir=_ensure_parent(folder)))
    try:
        with tempfile.TemporaryDirectory(prefix="ts-export-") as work:
            workdir = Path(work)
            artifact = staging / ARTIFACT_NAMES[fmt]
            images = parity_files(run_model, workdir, limit=parity_limit)
            started = time.perf_counter()
            say(f"Converting to {FORMAT_TITLES[fmt]}")
            _write_artifact(run_dir, run_model, fmt, artifact, workdir)
            seconds = time.perf_counter() - started
            quantization = tflite_quantization(artifact) if fmt in TFLITE_FORMATS else None

            say("Checking the in-app model on the parity images")
            reference = reference_predictions(run_model, images.paths)
            metrics = _split_metrics(images, reference, run_model.labels)
            _write_bundle_files(staging, run_dir, run_model, fmt, quantization)
            say(f"Running the bundle's predict.py in a clean process ({len(images.paths)} images)")
            candidate = run_bundle_predict(staging, images.paths)
            parity = _parity_record(images, reference, candidate)
            parity["clean_process"] = True
            parity["runtime"] = bundle_mod.runtime_version(fmt)
            _write_card(staging, run_dir, run_model, fmt, metrics, parity, quantization)

        bundle_path = bundle_zip_path(folder)
        staging.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be shared
        _replace_folder(staging, folder, fmt, default)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in folder.iterdir())
    _zip_folder(folder, bundle_path)
    atomic_write_json(
        folder / MARKER_FILE,
        {
            "kind": MARKER_KIND,
            "format": fmt,
            "run": run_dir.name,
            "created": now_iso(),
            "files": files,
            "bundle": bundle_path.name,
            "bundle_sha256": _sha256(bundle_path),
        },
    )
    path = folder / ARTIFACT_NAMES[fmt]
    result = ExportResult(
        format=fmt,
        path=path,
        bytes=_size_of(path),
        folder=folder,
        bundle=bundle_path,
        parity=parity,
        seconds=round(seconds, 3),
        quantization=quantization,
    )
    _store_parity(
        run_dir,
        fmt,
        {
            **parity,
            "path": str(path),
            "bytes": result.bytes,
            "bundle": str(bundle_path),
            "bundle_bytes": bundle_path.stat().st_size,
            "quantization": quantization,
            "exported": now_iso(),
        },
    )
    return result


def _write_artifact(run_dir: Path, run_model: Any, fmt: str, artifact: Path, workdir: Path) -> None:
    model = run_model.model  # built-in layers only (load_model converts older files)
    if fmt == "keras":
        try:
            extra = read_model_metadata(run_dir / MODEL_FILE).get("extra") or {}
        except ValueError:
            extra = {}
        save_model(model, artifact, labels=run_model.labels, extra=extra)
    elif fmt == "savedmodel":
        _write_savedmodel(model, artifact)
    elif fmt in TFLITE_FORMATS:
        calibration = _calibration_images(run_model) if fmt == "tflite-int8-full" else None
        artifact.write_bytes(_tflite_bytes(model, fmt, workdir=workdir, calibration=calibration))
    else:
        artifact.write_bytes(_onnx_bytes(model, run_model.image_size))


def _calibration_images(run_model: Any) -> np.ndarray:
    """Training images for full-integer calibration (noise when the dataset is gone)."""
    dataset = _dataset_of(run_model)
    size = run_model.image_size
    if dataset is not None:
        frame = dataset.frame("train")
        if frame.empty:
            frame = dataset.manifest
        if len(frame) > CALIBRATION_IMAGES:
            frame = frame.sample(CALIBRATION_IMAGES, random_state=0)
        if len(frame):
            return load_batch([dataset.dir / p for p in frame["image"]], size)
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(16, size, size, 3)).astype(np.float32)


def _write_bundle_files(
    staging: Path, run_dir: Path, run_model: Any, fmt: str, quantization: dict[str, Any] | None
) -> None:
    labels, size = run_model.labels, run_model.image_size
    (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (staging / "predict.py").write_text(snippet(fmt, size=size), encoding="utf-8")
    (staging / "requirements.txt").write_text(
        bundle_mod.requirements_text(fmt) + "\n", encoding="utf-8"
    )
    if fmt in TFLITE_FORMATS and quantization is None:
        (staging / "Classify.kt").write_text(kotlin_snippet(fmt, size=size), encoding="utf-8")
    if fmt == "web":
        runtime = bundle_mod.web_runtime_dir()
        for entry in runtime.iterdir():
            target = staging / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copyfile(entry, target)
        model_info = {"model": ARTIFACT_NAMES[fmt], "size": size, "labels": labels}
        (staging / "model.json").write_text(
            json.dumps(model_info, indent=2, ensure_ascii=False), encoding="utf-8"
        )


def _write_card(
    staging: Path,
    run_dir: Path,
    run_model: Any,
    fmt: str,
    metrics: dict[str, dict[str, Any]],
    parity: dict[str, Any],
    quantization: dict[str, Any] | None,
) -> None:
    dataset = _dataset_of(run_model)
    extra_files = []
    if (staging / "Classify.kt").exists():
        extra_files.append(("Classify.kt", "Android (Kotlin, LiteRT) example."))
    if fmt == "web":
        extra_files += [
            ("index.html", "the web page (open it through a static server, see above)."),
            ("classifier.js", "loads the model and classifies pictures and webcam frames."),
            ("model.json", "input size and labels, read by the page."),
            ("ort/", "onnxruntime-web (WebAssembly), vendored from npm."),
        ]
    card = bundle_mod.model_card(
        fmt=fmt,
        title=FORMAT_TITLES[fmt],
        artifact=ARTIFACT_NAMES[fmt],
        run_id=run_dir.name,
        labels=run_model.labels,
        size=run_model.image_size,
        counts=_class_counts(dataset, run_model.labels),
        metrics=metrics,
        parity=parity,
        settings=_settings(run_model.config),
        quantization=quantization,
        dataset_name=getattr(dataset, "name", None),
        date=now_iso(),
        extra_files=extra_files,
    )
    (staging / "README.md").write_text(card, encoding="utf-8")


def _ensure_parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _zip_folder(folder: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file() and file.name != MARKER_FILE:
                    archive.write(file, Path(folder.name) / file.relative_to(folder))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
