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
``README.md``, plus a zip of it for download. Conversions and runtimes are in
:mod:`core.runs.artifacts`, the clean-process parity check in :mod:`core.runs.parity`, and the
proof that an export owns the folder it replaces in :mod:`core.runs.export_folder`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.models.model_io import read_model_metadata, save_model
from core.runs import bundle as bundle_mod
from core.runs.artifacts import (
    check_backend,
    check_format,
    onnx_bytes,
    size_of,
    tflite_bytes,
    tflite_quantization,
    write_savedmodel,
)
from core.runs.export_folder import (
    MARKER_FILE,
    MARKER_KIND,
    bundle_zip_path,
    check_target,
    default_export_dir,
    ensure_parent,
    replace_folder,
    sha256,
    zip_folder,
)
from core.runs.formats import (
    ARTIFACT_NAMES,
    FORMAT_TITLES,
    TFLITE_FORMATS,
)
from core.runs.parity import (
    DEFAULT_PARITY_IMAGES,
    ParityImages,
    dataset_of,
    parity_files,
    parity_record,
    reference_predictions,
    run_bundle_predict,
    store_parity,
)
from core.runs.predict import load_batch, load_run_model
from core.runs.store import MODEL_FILE, now_iso, resolve_run_dir

CALIBRATION_IMAGES = 100

Progress = Callable[[str], None]


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
    staging = Path(tempfile.mkdtemp(prefix=f".{fmt}.", dir=ensure_parent(folder)))
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
            parity = parity_record(images, reference, candidate)
            parity["clean_process"] = True
            parity["runtime"] = bundle_mod.runtime_version(fmt)
            _write_card(staging, run_dir, run_model, fmt, metrics, parity, quantization)

        bundle_path = bundle_zip_path(folder)
        staging.chmod(0o755)  # mkdtemp makes it private; the bundle is meant to be shared
        replace_folder(staging, folder, fmt, default)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in folder.iterdir())
    zip_folder(folder, bundle_path)
    atomic_write_json(
        folder / MARKER_FILE,
        {
            "kind": MARKER_KIND,
            "format": fmt,
            "run": run_dir.name,
            "created": now_iso(),
            "files": files,
            "bundle": bundle_path.name,
            "bundle_sha256": sha256(bundle_path),
        },
    )
    path = folder / ARTIFACT_NAMES[fmt]
    result = ExportResult(
        format=fmt,
        path=path,
        bytes=size_of(path),
        folder=folder,
        bundle=bundle_path,
        parity=parity,
        seconds=round(seconds, 3),
        quantization=quantization,
    )
    store_parity(
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
        write_savedmodel(model, artifact)
    elif fmt in TFLITE_FORMATS:
        calibration = _calibration_images(run_model) if fmt == "tflite-int8-full" else None
        artifact.write_bytes(tflite_bytes(model, fmt, workdir=workdir, calibration=calibration))
    else:
        artifact.write_bytes(onnx_bytes(model, run_model.image_size))


def _calibration_images(run_model: Any) -> np.ndarray:
    """Training images for full-integer calibration (noise when the dataset is gone)."""
    dataset = dataset_of(run_model)
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
    dataset = dataset_of(run_model)
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
