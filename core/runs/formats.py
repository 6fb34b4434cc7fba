"""The export formats: names, titles and artifact file names (no heavy imports).

The command line builds its ``--format`` choices from here, so ``--help`` stays fast;
:mod:`core.runs.export` does the work.
"""

from __future__ import annotations

FORMATS = (
    "keras",
    "savedmodel",
    "tflite",
    "tflite-fp16",
    "tflite-int8",
    "tflite-int8-full",
    "onnx",
    "web",
)
TF_ONLY_FORMATS = tuple(fmt for fmt in FORMATS if fmt != "keras")
TFLITE_FORMATS = ("tflite", "tflite-fp16", "tflite-int8", "tflite-int8-full")
FORMAT_TITLES = {
    "keras": "Keras (.keras)",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite / LiteRT float32",
    "tflite-fp16": "TFLite / LiteRT float16",
    "tflite-int8": "TFLite / LiteRT int8 weights (dynamic range)",
    "tflite-int8-full": "TFLite / LiteRT full-integer int8 (Edge TPU, microcontrollers)",
    "onnx": "ONNX",
    "web": "Web page (ONNX + onnxruntime-web)",
}
ARTIFACT_NAMES = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-int8": "model_int8.tflite",
    "tflite-int8-full": "model_int8_full.tflite",
    "onnx": "model.onnx",
    "web": "model.onnx",
}
