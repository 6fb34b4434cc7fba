"""What goes into an export bundle besides the model: ``predict.py``, requirements, model card.

A bundle must work on a machine that has never seen Transfer Studio: copied alone, with only
its own ``requirements.txt`` installed, its ``predict.py`` classifies images exactly as the app
does (same resizing, same probabilities up to the runtime's rounding). Nothing here imports
Keras or TensorFlow; :mod:`core.runs.export` writes the artifact and runs the parity check
through the generated ``predict.py`` in a clean process.

The browser runtime (``index.html``, ``classifier.js`` and a vendored onnxruntime-web under
``ort/``) lives in ``core/web/runtime/``; :func:`web_runtime_dir` points at it so the web export
and any page of the app can serve the same files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

WEB_RUNTIME = Path(__file__).resolve().parents[1] / "web" / "runtime"

# The runtime each format needs, as distribution names (pinned to the installed versions).
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "keras": ("keras", "tensorflow"),
    "savedmodel": ("tensorflow",),
    "tflite": ("ai-edge-litert",),
    "onnx": ("onnxruntime",),
}
COMMON_PACKAGES = ("numpy", "pillow")


def runtime_of(fmt: str) -> str:
    """The runtime family of a format: ``keras``, ``savedmodel``, ``tflite`` or ``onnx``."""
    if fmt.startswith("tflite"):
        return "tflite"
    if fmt == "web":
        return "onnx"
    return fmt


def pinned(distribution: str) -> str:
    """``name==version`` of an installed distribution.

    Raises:
        RuntimeError: If the distribution is not installed (the export cannot pin or check
            its runtime).
    """
    try:
        return f"{distribution}=={metadata.version(distribution)}"
    except metadata.PackageNotFoundError as error:
        raise RuntimeError(
            f"The runtime package {distribution!r} is not installed, so this export cannot be "
            f"checked. Install the pinned version from requirements.txt "
            f"(pip install -r requirements.txt)."
        ) from error


def requirements_text(fmt: str) -> str:
    """The bundle's ``requirements.txt``: the pinned runtime ``predict.py`` needs."""
    lines = [pinned(name) for name in (*RUNTIME_PACKAGES[runtime_of(fmt)], *COMMON_PACKAGES)]
    return "# What predict.py needs (pinned): pip install -r requirements.txt\n" + "\n".join(lines)


def runtime_version(fmt: str) -> str:
    """``name version`` of the runtime that runs ``fmt`` (for the parity record)."""
    name = RUNTIME_PACKAGES[runtime_of(fmt)][-1]
    return pinned(name).replace("==", " ")


# --------------------------------------------------------------------------- predict.py

_RUNNERS = {
    "keras": '''import keras


class Model:
    """model.keras opened with plain Keras (safe_mode: no code runs on load)."""

    def __init__(self):
        self.model = keras.saving.load_model(str(HERE / "{artifact}"), compile=False)

    def __call__(self, batch):
        return np.asarray(self.model(batch, training=False), dtype=np.float32)
''',
    "savedmodel": '''import tensorflow as tf


class Model:
    """The SavedModel's ``serve`` endpoint."""

    def __init__(self):
        self.model = tf.saved_model.load(str(HERE / "{artifact}"))

    def __call__(self, batch):
        return np.asarray(self.model.serve(tf.constant(batch)), dtype=np.float32)
''',
    "tflite": '''from ai_edge_litert.interpreter import Interpreter


class Model:
    """LiteRT interpreter, one image at a time (as on a phone). Integer models are fed
    quantised pixels (value / scale + zero_point) and their output is dequantised."""

    def __init__(self):
        self.interpreter = Interpreter(model_path=str(HERE / "{artifact}"))
        self.input = self.interpreter.get_input_details()[0]
        self.interpreter.resize_tensor_input(self.input["index"], [1, SIZE, SIZE, 3])
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, batch):
        results = []
        for image in batch:
            x = image[None]
            if self.input["dtype"] != np.float32:
                scale, zero_point = self.input["quantization"]
                limits = np.iinfo(self.input["dtype"])
                x = np.clip(np.round(x / scale + zero_point), limits.min, limits.max)
            self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.output["index"])[0]
            if self.output["dtype"] != np.float32:
                scale, zero_point = self.output["quantization"]
                y = (y.astype(np.float32) - zero_point) * scale
            results.append(np.asarray(y, dtype=np.float32))
        return np.stack(results)
''',
    "onnx": '''import onnxruntime as ort


class Model:
    """ONNX Runtime on the CPU."""

    def __init__(self):
        self.session = ort.InferenceSession(
            str(HERE / "{artifact}"), providers=["CPUExecutionProvider"]
        )
        self.name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return np.asarray(self.session.run(None, {{self.name: batch}})[0], dtype=np.float32)
''',
}

_PREDICT = '''"""Classify images with this model ({title}); exported by Transfer Studio.

    pip install -r requirements.txt
    python predict.py photo.jpg [more.jpg ...] [--json] [--top K]

Input contract: RGB, values 0..255 (not scaled), squashed to {size}x{size} with bilinear
filtering after the EXIF rotation; transparent pixels are composited on white. The
preprocessing of the backbone is inside the model.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
SIZE = {size}
LABELS = [line for line in (HERE / "labels.txt").read_text(encoding="utf-8").splitlines() if line]


def load(path):
    """One picture as float32 (SIZE, SIZE, 3), RGB 0..255, prepared as the app prepares it."""
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    image = image.convert("RGB")
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.float32)


{runner}

def main(argv=None):
    parser = argparse.ArgumentParser(description="Classify images with this model.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--top", type=int, default=3, help="classes to print per image")
    args = parser.parse_args(argv)
    model = Model()
    for start in range(0, len(args.images), 16):
        paths = args.images[start : start + 16]
        probabilities = model(np.stack([load(path) for path in paths]))
        for path, row in zip(paths, probabilities):
            best = int(np.argmax(row))
            if args.json:
                record = {{
                    "image": path,
                    "label": LABELS[best],
                    "probability": float(row[best]),
                    "probabilities": [float(value) for value in row],
                }}
                print(json.dumps(record, ensure_ascii=False))
            else:
                ranked = np.argsort(row)[::-1][: args.top]
                print(path + ": " + ", ".join(f"{{LABELS[i]}} {{row[i]:.1%}}" for i in ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def predict_script(fmt: str, *, artifact: str, size: int, title: str) -> str:
    """The bundle's standalone ``predict.py`` (imports only its runtime, numpy and Pillow).

    Args:
        fmt: The export format (its runtime family picks the model runner).
        artifact: File or folder name of the model inside the bundle.
        size: Side of the model's square input.
        title: Human name of the format, for the docstring.
    """
    runner = _RUNNERS[runtime_of(fmt)].format(artifact=artifact)
    return _PREDICT.format(title=title, size=size, runner=runner)


# --------------------------------------------------------------------------- model card


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _signed(value: int) -> str:
    return f" + {value}" if value >= 0 else f" - {-value}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _margin(accuracy: float | None, n: int) -> str:
    """95% normal-approximation half-width, so a card never overstates a small test set."""
    if accuracy is None or n <= 0:
        return ""
    half = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-9) / n)
    return f" (± {100 * half:.0f} points at 95%, {n} images)"


def model_card(
    *,
    fmt: str,
    title: str,
    artifact: str,
    run_id: str,
    labels: Sequence[str],
    size: int,
    counts: dict[str, dict[str, int]],
    metrics: dict[str, dict[str, Any]],
    parity: dict[str, Any],
    settings: dict[str, Any],
    quantization: dict[str, Any] | None,
    dataset_name: str | None,
    date: str,
    extra_files: Sequence[tuple[str, str]] = (),
) -> str:
    """The bundle's ``README.md``: what the model knows, how good it is, how to run it.

    Args:
        fmt: The export format.
        title: Human name of the format.
        artifact: File or folder name of the model in the bundle.
        run_id: The run it came from.
        labels: Class names in output order.
        size: Side of the square input.
        counts: label -> split -> number of images (``train``, ``val``, ``test``).
        metrics: split -> ``{"n", "accuracy", "per_class": {label: {"f1", ...}}}`` of the
            in-app float model.
        parity: The clean-process parity record (see :func:`core.runs.export.export_run`).
        settings: Backbone and training settings to list (name -> value).
        quantization: For integer models, ``{"input": {...}, "output": {...}}`` with
            ``dtype``, ``scale`` and ``zero_point``; None otherwise.
        dataset_name: The dataset's name, if known.
        date: Export date (ISO 8601).
        extra_files: More ``(file, what it is)`` rows for the Files section.

    Returns:
        Markdown text.
    """
    splits = ("train", "val", "test")
    totals = {
        split: sum(counts.get(label, {}).get(split, 0) for label in labels) for split in splits
    }
    count_rows = [[label, *(counts.get(label, {}).get(s, 0) for s in splits)] for label in labels]
    count_rows.append(["**total**", *(totals[s] for s in splits)])
    parts = [
        f"# Image classifier: {', '.join(labels)}",
        "",
        f"{title} export of Transfer Studio run `{run_id}`"
        + (f", trained on the dataset “{dataset_name}”" if dataset_name else "")
        + f". Exported {date}.",
        "",
        "## Classes",
        "",
        "Images per class and split (the test split was never used to choose the model):",
        "",
        _table(["Class", "Train", "Validation", "Test"], count_rows),
        "",
        "## How good it is",
        "",
    ]
    split_rows = []
    for split in ("val", "test"):
        found = metrics.get(split)
        exported = parity.get("splits", {}).get(split, {})
        if not found:
            split_rows.append([split, 0, "n/a", "n/a"])
            continue
        split_rows.append(
            [
                split,
                found["n"],
                _percent(found["accuracy"]) + _margin(found["accuracy"], found["n"]),
                _percent(exported.get("accuracy")),
            ]
        )
    parts += [
        _table(["Split", "Images", "Accuracy (app, float)", "Accuracy (this export)"], split_rows),
        "",
    ]
    f1_rows = []
    for label in labels:
        f1_rows.append(
            [
                label,
                *(
                    metrics.get(split, {}).get("per_class", {}).get(label, {}).get("f1")
                    for split in ("val", "test")
                ),
            ]
        )
    parts += ["Per-class F1 (app, float):", "", _table(["Class", "F1 val", "F1 test"], f1_rows), ""]
    parts += [
        "## Input contract",
        "",
        "- A batch of images, each height x width x 3 colour values (NHWC): "
        f"shape `(batch, {size}, {size}, 3)`"
        + (", batch 1 for TFLite" if fmt.startswith("tflite") else "")
        + ".",
        "- **RGB** channel order (not BGR), raw pixel values **0..255**: do not scale or "
        "normalise; the backbone's preprocessing is inside the model.",
        f"- Resize the whole picture to {size}x{size} (squash, no crop, bilinear) after "
        "applying its EXIF rotation; transparent pixels on white.",
    ]
    if quantization:
        q_in, q_out = quantization["input"], quantization["output"]
        parts += [
            f"- Full-integer model: the input tensor is **{q_in['dtype']}**. Quantise each "
            f"pixel value v as `round(v / {q_in['scale']:.8g}{_signed(q_in['zero_point'])})` "
            f"(clipped to the type's range); scale {q_in['scale']:.8g}, zero point "
            f"{q_in['zero_point']}.",
            f"- The output tensor is **{q_out['dtype']}**: probability = "
            f"`(q{_signed(-q_out['zero_point'])}) * {q_out['scale']:.8g}`; scale "
            f"{q_out['scale']:.8g}, zero point {q_out['zero_point']}.",
        ]
    else:
        parts.append("- float32 input.")
    parts += [
        f"- Output: `(batch, {len(labels)})` softmax probabilities in the order of `labels.txt`.",
        "",
        "## How to run it",
        "",
        "```",
        "pip install -r requirements.txt",
        "python predict.py photo.jpg",
        "```",
        "",
        "`predict.py --json` prints one JSON object per image (label, probability, all "
        "probabilities).",
        "",
    ]
    if fmt == "web":
        parts += [
            "### In a browser",
            "",
            "The page needs no server code, only static files. Serve this folder and open it:",
            "",
            "```",
            "python -m http.server 8000",
            "# then open http://localhost:8000/ in a browser",
            "```",
            "",
            "Choose or drop a picture, or allow the webcam for live predictions. The model runs "
            "in the browser with onnxruntime-web (WebAssembly, files in `ort/`, no CDN); no "
            "picture leaves the computer. Opening `index.html` straight from the disk "
            "(file://) does not work: browsers refuse to load WebAssembly that way.",
            "",
        ]
    parts += [
        "## Parity check",
        "",
        _parity_sentence(parity),
        "",
        "## Training settings",
        "",
        _table(["Setting", "Value"], [[key, value] for key, value in settings.items()]),
        "",
        "## Limitations",
        "",
        *_limitations(labels, counts, totals, metrics, quantization),
        "",
        "## Files",
        "",
        f"- `{artifact}`: the model.",
        "- `labels.txt`: class names, one per line, in output order.",
        "- `predict.py`: classifies image files (standalone: its runtime, numpy and Pillow).",
        "- `requirements.txt`: the pinned packages `predict.py` needs.",
        *(f"- `{name}`: {what}" for name, what in extra_files),
        "",
    ]
    return "\n".join(parts)


def _parity_sentence(parity: dict[str, Any]) -> str:
    if not parity:
        return "Not checked."
    source = {
        "val": "validation images",
        "val+test": "validation and test images",
        "train": "training images (the dataset has no validation split)",
        "random": "random noise images (the dataset was not available)",
    }.get(str(parity.get("source")), str(parity.get("source")))
    return (
        f"This bundle's own `predict.py` was run in a clean Python process (isolated mode, "
        f"the bundle folder as working directory, Transfer Studio not importable) with "
        f"{parity.get('runtime', 'its runtime')} on {parity.get('n', 0)} {source}. Its top "
        f"class agreed with the app on {_percent(parity.get('top1_agreement'))} of them; the "
        f"largest difference in a probability was {parity.get('max_abs_diff', 0.0):.2e}."
    )


def _limitations(
    labels: Sequence[str],
    counts: dict[str, dict[str, int]],
    totals: dict[str, int],
    metrics: dict[str, dict[str, Any]],
    quantization: dict[str, Any] | None,
) -> list[str]:
    total = sum(totals.values())
    lines = [
        f"- It was trained on {totals['train']} images ({total} in all, with validation and "
        f"test). It knows only these {len(labels)} classes and always answers one of them, "
        "even for a picture of something else: a low top probability is the only hint.",
        "- It learnt from the pictures it was given: other lighting, backgrounds, cameras or "
        "points of view than those in the dataset can make it wrong without warning.",
    ]
    small = [label for label in labels if counts.get(label, {}).get("train", 0) < 20]
    if small:
        lines.append(
            "- Classes with fewer than 20 training images (less reliable): "
            + ", ".join(small)
            + "."
        )
    test = metrics.get("test")
    if not test or not test.get("n"):
        lines.append("- There was no test split: the accuracy above is not independent.")
    elif test["n"] < 100:
        lines.append(
            f"- The test split has only {test['n']} images, so its accuracy is a rough "
            "estimate (see the ± margin)."
        )
    if quantization:
        lines.append(
            "- Full-integer quantisation: probabilities come in steps of "
            f"{quantization['output']['scale']:.4g}; compare its accuracy above with the "
            "float model's."
        )
    return lines


def web_runtime_dir() -> Path:
    """The browser runtime folder (``index.html``, ``classifier.js``, ``ort/``).

    Raises:
        FileNotFoundError: If the vendored files are missing (a broken install).
    """
    needed = ("index.html", "classifier.js", "ort")
    missing = [name for name in needed if not (WEB_RUNTIME / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"The browser runtime is incomplete: {missing} missing under {WEB_RUNTIME}. "
            "Reinstall Transfer Studio, or run `npm ci && npm run vendor` in core/web."
        )
    return WEB_RUNTIME
