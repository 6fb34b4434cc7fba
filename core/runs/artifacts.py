"""Convert a Keras model to each export format, and run the artifact that comes out.

Everything except ``keras`` needs TensorFlow as the Keras backend; another backend gets a
:class:`BackendError` that says so.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.runs.formats import (
    FORMATS,
    TF_ONLY_FORMATS,
    TFLITE_FORMATS,
)
from core.runs.predict import predict_arrays

ONNX_OPSET = 17


class BackendError(RuntimeError):
    """The active Keras backend cannot produce this format (it needs TensorFlow)."""


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


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def write_savedmodel(model: Any, target: Path) -> None:
    # model.export prints the signature on stdout; keep stdout for results.
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(target), format="tf_saved_model", verbose=False)


def tflite_bytes(
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
        write_savedmodel(model, saved)
        for select_ops in (False, True) if not full_int else (False,):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            try:
                return configure(converter, select_ops).convert()
            except Exception as error:  # as above; every attempt is reported if all fail
                errors.append(f"from a SavedModel (select TF ops: {select_ops}): {error}")
    raise RuntimeError(f"TFLite conversion ({fmt}) failed. " + " | ".join(errors))


def onnx_bytes(model: Any, size: int) -> bytes:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image: Any) -> Any:
        return {"probabilities": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    return proto.SerializeToString()


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
