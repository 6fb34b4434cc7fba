"""The input preprocessing each backbone expects, as a serialisable Keras layer.

Pretrained networks were trained on differently scaled inputs, and feeding the wrong scale
silently ruins accuracy. Every model the app builds therefore starts with a
:class:`Preprocess` layer that turns raw RGB 0..255 into what its backbone expects, so an
exported model needs no outside preprocessing. The layer is a registered class (not a
``Lambda``), so models load with ``safe_mode=True``.

Modes (the names used by ``keras.applications.imagenet_utils.preprocess_input``):

- ``caffe``: RGB -> BGR, then subtract the ImageNet mean per channel (VGG16, ResNet50).
- ``torch``: scale to 0..1, then normalise with the ImageNet mean and standard deviation
  (DenseNet; what ConvNeXt's and EfficientNetV2-B0's built-in layers do).
- ``tf``: scale to -1..1 (MobileNetV2, MobileNetV3's built-in layer, Inception, Xception,
  ResNetV2, EfficientNet-Lite).
- ``none``: identity, for backbones whose preprocessing is built into the network
  (EfficientNetB0 rescales and normalises inside the model).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PREPROCESSING_MODES = ("caffe", "torch", "tf", "none")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def check_mode(mode: str) -> str:
    """Validates a preprocessing mode name.

    Args:
        mode: One of ``caffe``, ``torch``, ``tf`` or ``none``.

    Returns:
        The mode, unchanged.

    Raises:
        ValueError: If ``mode`` is not a known mode.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"preprocessing mode must be one of {set(PREPROCESSING_MODES)}. Received: mode={mode!r}"
        )
    return mode


@keras.saving.register_keras_serializable(package="transfer_studio")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB 0..255 images (channels last) to a backbone's expected input.

    Args:
        mode: ``caffe``, ``torch``, ``tf`` or ``none``.
        backbone: Registry name of the backbone this layer feeds (metadata, so a loaded model
            knows which network it contains).
        pretrained: Whether that backbone started from pretrained weights (metadata: decides
            whether its BatchNorm layers stay frozen when fine-tuning).
        **kwargs: Standard layer arguments (``name``, ``dtype`` ...).
    """

    def __init__(
        self,
        mode: str = "tf",
        backbone: str | None = None,
        pretrained: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = check_mode(mode)
        self.backbone = backbone
        self.pretrained = bool(pretrained)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            bgr = ops.flip(x, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode, "backbone": self.backbone, "pretrained": self.pretrained})
        return config


def preprocess_numpy(images, mode: str):
    """Applies a preprocessing mode to a numpy batch (float32), outside any model.

    Args:
        images: Array of shape ``(..., 3)`` with RGB values in 0..255.
        mode: ``caffe``, ``torch``, ``tf`` or ``none``.

    Returns:
        A float32 numpy array of the same shape.
    """
    import numpy as np

    return np.asarray(Preprocess(mode)(np.asarray(images, dtype="float32")))
