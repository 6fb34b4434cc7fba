"""Export a trained run to the formats people deploy, and prove each export behaves the same.

Formats (see :data:`FORMATS`):

- ``keras``: the ``.keras`` file itself (labels and preprocessing inside);
- ``savedmodel``: a TensorFlow SavedModel written by ``model.export`` (endpoint ``serve``);
- ``tflite``: TFLite / LiteRT float32;
- ``tflite-int8``: TFLite with dynamic-range int8 weights (float in, float out);
- ``onnx``: ONNX converted by tf2onnx, run with onnxruntime.

Every export writes a folder with the artifact, ``labels.txt``, a ``README.md`` stating the
input contract (NHWC float32 RGB 0..255, the size, softmax out) and an inference snippet, and
a zip of that folder for download. Then the **parity check** runs the artifact in its own
runtime (``keras``, ``tf.saved_model.load``, the LiteRT/TFLite interpreter, onnxruntime) on
validation images and compares it with the in-app model: top-1 agreement, largest absolute
probability difference, and accuracy on those images for both. Results are stored in
``<run>/exports/parity.json``.

Everything except ``keras`` needs TensorFlow as the Keras backend; another backend gets a
:class:`BackendError` that says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.models.model_io import load_model
from core.runs.predict import load_batch, load_run_model, predict_arrays
from core.runs.store import MODEL_FILE, resolve_run_dir

FORMATS = ("keras", "savedmodel", "tflite", "tflite-int8", "onnx")
TF_ONLY_FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx")
FORMAT_TITLES = {
    "keras": "Keras (.keras)",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite / LiteRT float32",
    "tflite-int8": "TFLite / LiteRT int8 (dynamic range)",
    "onnx": "ONNX",
}
ARTIFACT_NAMES = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
PARITY_FILE = "parity.json"
EXPORTS_DIR = "exports"
ONNX_OPSET = 17
DEFAULT_PARITY_IMAGES = 64

Progress = Callable[[str], None]


class BackendError(RuntimeError):
    """The active Keras backend cannot produce this format (it needs TensorFlow)."""


@dataclass
class ExportResult:
    """One finished export.

    Attributes:
        format: One of :data:`FORMATS`.
        path: The artifact (file, or folder for ``savedmodel``).
        bytes: Size of the artifact on disk.
        folder: The export folder (artifact + labels.txt + README.md + snippet).
        bundle: Zip of ``folder``, what the app offers for download.
        parity: ``top1_agreement``, ``max_abs_diff``, ``n``, ``source`` and, when the images
            have labels, ``accuracy`` (artifact) and ``reference_accuracy`` (in-app model).
        seconds: Time the conversion took.
    """

    format: str
    path: Path
    bytes: int
    folder: Path
    bundle: Path
    parity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

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


def _tflite_bytes(model: Any, *, int8: bool, workdir: Path) -> bytes:
    """Converts with the TFLite converter: from the Keras model, else via a SavedModel."""
    import tensorflow as tf

    def configure(converter: Any, select_ops: bool) -> Any:
        if int8:
            # Dynamic range: int8 weights, float activations; no calibration data needed.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if select_ops:
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
        for select_ops in (False, True):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            try:
                return configure(converter, select_ops).convert()
            except Exception as error:  # as above; every attempt is reported if all fail
                errors.append(f"from a SavedModel (select TF ops: {select_ops}): {error}")
    raise RuntimeError("TFLite conversion failed. " + " | ".join(errors))


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
    """Opens a ``.tflite`` file with LiteRT (``ai_edge_litert``) or, if absent, ``tf.lite``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def _run_tflite(path: Path, batch: np.ndarray) -> np.ndarray:
    interpreter = tflite_interpreter(path)
    input_index = interpreter.get_input_details()[0]["index"]
    # One image at a time, like a phone would run it.
    interpreter.resize_tensor_input(input_index, [1, *batch.shape[1:]])
    interpreter.allocate_tensors()
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for image in batch:
        interpreter.set_tensor(input_index, image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
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
    model, _ = load_model(path)
    return predict_arrays(model, batch)


RUNTIMES: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "keras": _run_keras,
    "savedmodel": _run_savedmodel,
    "tflite": _run_tflite,
    "tflite-int8": _run_tflite,
    "onnx": _run_onnx,
}


def run_artifact(fmt: str, path: str | os.PathLike[str], batch: np.ndarray) -> np.ndarray:
    """Runs an exported artifact in its own runtime on a float32 NHWC batch (RGB 0..255).

    Returns:
        Probabilities, shape (N, classes).
    """
    check_format(fmt)
    return RUNTIMES[fmt](Path(path), np.asarray(batch, dtype=np.float32))


# --------------------------------------------------------------------------- parity


def parity_images(
    run_model: Any, *, limit: int = DEFAULT_PARITY_IMAGES
) -> tuple[np.ndarray, list[int] | None, str]:
    """Images for the parity check: the run's validation split, else deterministic noise.

    Returns:
        ``(batch, true indices or None, source)``; ``source`` is ``"val"``, ``"train"`` or
        ``"random"`` (when the dataset is gone).
    """
    dataset_id = run_model.config.get("dataset")
    if dataset_id:
        try:
            from core.data.store import load_dataset

            dataset = load_dataset(dataset_id)
        except (FileNotFoundError, KeyError, ValueError):
            dataset = None
        if dataset is not None:
            for split in ("val", "train"):
                frame = dataset.frame(split)
                if frame.empty:
                    continue
                frame = frame.head(limit)
                batch = load_batch([dataset.dir / p for p in frame["image"]], run_model.image_size)
                index = {label: i for i, label in enumerate(run_model.labels)}
                truths = [index.get(str(label), -1) for label in frame["label"]]
                return batch, truths, split
    rng = np.random.default_rng(0)
    size = run_model.image_size
    batch = rng.uniform(0, 255, size=(min(limit, 16), size, size, 3)).astype(np.float32)
    return batch, None, "random"


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


def read_parity(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored parity results of a run: format -> parity record (empty if none)."""
    path = Path(run_dir) / EXPORTS_DIR / PARITY_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _store_parity(run_dir: Path, fmt: str, record: dict[str, Any]) -> None:
    data = read_parity(run_dir)
    data[fmt] = record
    atomic_write_json(run_dir / EXPORTS_DIR / PARITY_FILE, data)


# --------------------------------------------------------------------------- docs


def readme_text(fmt: str, *, run_id: str, labels: list[str], size: int) -> str:
    """The README bundled with an export: what goes in, what comes out, how to run it."""
    artifact = ARTIFACT_NAMES[fmt]
    classes = ", ".join(labels)
    return f"""# {FORMAT_TITLES[fmt]} export of run `{run_id}`

Exported by Transfer Studio.

## Input contract
- One float32 tensor, **NHWC**: shape `(batch, {size}, {size}, 3)`.
- **RGB** channel order (not BGR), raw pixel values **0..255**: do not scale or normalise;
  the backbone's preprocessing is inside the model.
- Resize the picture to {size}x{size} (bilinear, no crop) after applying its EXIF rotation.

## Output
- float32 `(batch, {len(labels)})` softmax probabilities, in the order of `labels.txt`
  ({classes}).

## Files
- `{artifact}`: the model.
- `labels.txt`: class names, one per line, in output order.
- `{SNIPPET_FILES[fmt]}`: a minimal inference example.
"""


def snippet(fmt: str, *, size: int) -> str:
    """Copyable Python inference code for ``fmt`` (the Kotlin one: :func:`kotlin_snippet`)."""
    check_format(fmt)
    load_image = f"""from PIL import Image, ImageOps
import numpy as np

labels = open("labels.txt", encoding="utf-8").read().splitlines()
image = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")
x = np.asarray(image.resize(({size}, {size}), Image.BILINEAR), dtype=np.float32)[None]
"""
    runners = {
        "keras": """import keras

model = keras.saving.load_model("model.keras")
probabilities = model.predict(x, verbose=0)[0]
""",
        "savedmodel": """import tensorflow as tf

model = tf.saved_model.load("saved_model")
probabilities = model.serve(tf.constant(x)).numpy()[0]
""",
        "tflite": """from ai_edge_litert.interpreter import Interpreter  # or tf.lite.Interpreter

interpreter = Interpreter(model_path="model.tflite")
interpreter.allocate_tensors()
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
interpreter.invoke()
probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
""",
        "onnx": """import onnxruntime as ort

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
probabilities = session.run(None, {session.get_inputs()[0].name: x})[0][0]
""",
    }
    runners["tflite-int8"] = runners["tflite"].replace("model.tflite", "model_int8.tflite")
    show = """best = int(np.argmax(probabilities))
print(labels[best], float(probabilities[best]))
"""
    return load_image + "\n" + runners[fmt] + show


def kotlin_snippet(fmt: str, *, size: int) -> str:
    """Android (Kotlin, LiteRT) inference code for the TFLite formats."""
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


SNIPPET_FILES = {fmt: "predict.py" for fmt in FORMATS}


# --------------------------------------------------------------------------- export


def default_export_dir(run_dir: str | os.PathLike[str], fmt: str) -> Path:
    """``<run>/exports/<format>/``."""
    return Path(run_dir) / EXPORTS_DIR / fmt


def export_run(
    run: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    *,
    run_model: Any = None,
    parity_limit: int = DEFAULT_PARITY_IMAGES,
    progress: Progress | None = None,
) -> ExportResult:
    """Exports a run's model and checks the export against the in-app model.

    Args:
        run: The run folder or run id.
        fmt: One of :data:`FORMATS`.
        out: Export folder; defaults to ``<run>/exports/<format>/``. Replaced if it exists.
        run_model: An already opened :class:`core.runs.predict.RunModel`.
        parity_limit: Most validation images the parity check uses.
        progress: Optional callback receiving one message per stage.

    Returns:
        The :class:`ExportResult` (its parity is also stored in ``<run>/exports/parity.json``).

    Raises:
        ValueError: If ``fmt`` is unknown.
        BackendError: If ``fmt`` needs TensorFlow and Keras runs on another backend.
        FileNotFoundError: If the run has no model yet.
    """
    check_backend(fmt)
    say = progress or (lambda _message: None)
    run_dir = resolve_run_dir(run)
    run_model = run_model or load_run_model(run_dir)
    folder = Path(out) if out is not None else default_export_dir(run_dir, fmt)
    folder = folder.expanduser().resolve()
    if folder.is_file():
        raise ValueError(f"out must be a folder for the export bundle. Received a file: {folder}")
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt}.", dir=_ensure_parent(folder)))
    try:
        artifact = staging / ARTIFACT_NAMES[fmt]
        started = time.perf_counter()
        say(f"Converting to {FORMAT_TITLES[fmt]}")
        model = run_model.model
        if fmt == "keras":
            shutil.copyfile(run_dir / MODEL_FILE, artifact)
        elif fmt == "savedmodel":
            _write_savedmodel(model, artifact)
        elif fmt in ("tflite", "tflite-int8"):
            with tempfile.TemporaryDirectory() as work:
                artifact.write_bytes(
                    _tflite_bytes(model, int8=fmt == "tflite-int8", workdir=Path(work))
                )
        else:
            artifact.write_bytes(_onnx_bytes(model, run_model.image_size))
        seconds = time.perf_counter() - started
        labels, size = run_model.labels, run_model.image_size
        (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(
            readme_text(fmt, run_id=run_dir.name, labels=labels, size=size), encoding="utf-8"
        )
        (staging / SNIPPET_FILES[fmt]).write_text(snippet(fmt, size=size), encoding="utf-8")
        if fmt.startswith("tflite"):
            (staging / "Classify.kt").write_text(kotlin_snippet(fmt, size=size), encoding="utf-8")

        say(f"Checking parity of {FORMAT_TITLES[fmt]} against the in-app model")
        batch, truths, source = parity_images(run_model, limit=parity_limit)
        reference = run_model.predict(batch)
        candidate = run_artifact(fmt, artifact, batch)
        parity = compare(reference, candidate, truths if source != "random" else None)
        parity["source"] = source

        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bundle = folder.with_name(folder.name + ".zip")
    _zip_folder(folder, bundle)
    path = folder / ARTIFACT_NAMES[fmt]
    result = ExportResult(
        format=fmt,
        path=path,
        bytes=_size_of(path),
        folder=folder,
        bundle=bundle,
        parity=parity,
        seconds=round(seconds, 3),
    )
    _store_parity(
        run_dir,
        fmt,
        {**parity, "path": str(path), "bytes": result.bytes, "bundle": str(bundle)},
    )
    return result


def _ensure_parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _zip_folder(folder: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, Path(folder.name) / file.relative_to(folder))
    os.replace(tmp, target)
