"""The input preprocessing each backbone expects, as built-in Keras layers.

Pretrained networks were trained on differently scaled inputs, and feeding the wrong scale
silently ruins accuracy. Every model the app builds therefore starts with a layer named
``preprocess`` that turns raw RGB 0..255 into what its backbone expects, so an exported model
needs no outside preprocessing. That layer is always a **built-in** Keras layer, so a saved
model opens with plain ``keras.saving.load_model(path)`` (``safe_mode=True`` included) in a
process that has never heard of Transfer Studio:

- ``caffe``: RGB -> BGR, then subtract the ImageNet mean per channel (VGG16, ResNet50). A
  frozen 1x1 ``Conv2D`` whose kernel is the channel permutation and whose bias is minus the
  BGR means.
- ``torch``: scale to 0..1, then normalise with the ImageNet mean and standard deviation
  (DenseNet; what ConvNeXt's and EfficientNetV2-B0's built-in layers do). A ``Normalization``
  with mean ``255 * mean`` and variance ``(255 * std) ** 2`` (the same affine map).
- ``tf``: scale to -1..1 (MobileNetV2, MobileNetV3's built-in layer, Inception, Xception,
  ResNetV2, EfficientNet-Lite). A ``Rescaling(1 / 127.5, offset=-1)``.
- ``none``: ``Identity``, for backbones whose preprocessing is built into the network
  (EfficientNetB0 rescales and normalises inside the model).

Models saved by earlier versions used a custom layer registered as
``transfer_studio>Preprocess``; :class:`LegacyPreprocess` still reads them, and
:func:`core.models.transfer.to_builtin` rebuilds such models with the built-in layers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

PREPROCESSING_MODES = ("caffe", "torch", "tf", "none")
PREPROCESS_LAYER = "preprocess"

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


def preprocessing_layer(mode: str, *, name: str = PREPROCESS_LAYER) -> keras.layers.Layer:
    """A built-in Keras layer mapping raw RGB 0..255 (channels last) to a backbone's input.

    Args:
        mode: ``caffe``, ``torch``, ``tf`` or ``none``.
        name: The layer's name (the transfer model relies on ``"preprocess"``).

    Returns:
        A built (where it has weights), non-trainable built-in layer.

    Raises:
        ValueError: If ``mode`` is not a known mode.
    """
    check_mode(mode)
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if mode == "torch":
        mean = [255.0 * m for m in _TORCH_MEAN]
        variance = [(255.0 * s) ** 2 for s in _TORCH_STD]
        return keras.layers.Normalization(mean=mean, variance=variance, name=name)
    if mode == "caffe":
        layer = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
        layer.build((None, None, None, 3))
        # kernel[0, 0, c_in, c_out] = 1 where c_out is c_in's place in BGR order.
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for c_in in range(3):
            kernel[0, 0, c_in, 2 - c_in] = 1.0
        layer.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")])
        return layer
    return keras.layers.Identity(name=name)


def preprocess_numpy(images, mode: str) -> np.ndarray:
    """Applies a preprocessing mode to a numpy batch (float32), outside any model.

    Args:
        images: Array of shape ``(..., H, W, 3)`` with RGB values in 0..255.
        mode: ``caffe``, ``torch``, ``tf`` or ``none``.

    Returns:
        A float32 numpy array of the same shape.
    """
    array = np.asarray(images, dtype="float32")
    flat = array.reshape((-1, *array.shape[-3:])) if array.ndim >= 3 else array[None, None]
    out = np.asarray(preprocessing_layer(mode)(flat), dtype="float32")
    return out.reshape(array.shape)


@keras.saving.register_keras_serializable(package="transfer_studio", name="Preprocess")
class LegacyPreprocess(keras.layers.Layer):
    """The custom preprocessing layer of models saved by earlier versions (read-only use).

    New models never contain it: it is registered only so old ``model.keras`` files still
    load, after which :func:`core.models.transfer.to_builtin` swaps it for
    :func:`preprocessing_layer`.

    Args:
        mode: ``caffe``, ``torch``, ``tf`` or ``none``.
        backbone: Registry name of the backbone this layer feeds.
        pretrained: Whether that backbone started from pretrained weights.
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
