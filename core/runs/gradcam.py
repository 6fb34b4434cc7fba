"""Grad-CAM: where in the picture the model looked to choose a class.

The app's models are ``input -> [augmentation] -> preprocess -> backbone -> pool -> head``,
with ``backbone`` a nested Keras model. In Keras 3 the layers inside a nested model are not
part of the outer graph, so "outer input -> inner layer output" cannot be one functional
model. Instead the forward pass is split in two at the backbone's last convolutional block:

1. ``features``: a model over the backbone's own graph, ``backbone input -> last conv block
   feature map`` (by default the backbone's output, which for every registered backbone is
   the activation of its last conv block), fed with the output of the outer layers before
   the backbone (``preprocess``; augmentation is skipped);
2. the layers after it (the rest of the backbone when a deeper layer was chosen, then
   ``pool`` and ``head``) are applied to that feature map under a ``tf.GradientTape``.

The gradient of the class score with respect to the feature map, averaged over space, gives
each channel's weight (Selvaraju et al., 2017); the weighted sum of channels, ReLU'd,
upsampled to the image's size and scaled to 0..1, is the heatmap. TensorFlow backend only.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from core.runs.predict import image_to_array, model_input_size

SKIPPED_LAYERS = ("augmentation",)


def _outer_layers(model: Any) -> tuple[list[Any], Any, list[Any]]:
    """Splits the outer model's layers into (before backbone, backbone, after backbone)."""
    import keras

    try:
        backbone = model.get_layer("backbone")
    except ValueError as error:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"Grad-CAM needs a layer named 'backbone' in the model. Received layers: {names}"
        ) from error
    before, after, seen = [], [], False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in SKIPPED_LAYERS:
            continue
        if layer is backbone:
            seen = True
        elif seen:
            after.append(layer)
        else:
            before.append(layer)
    return before, backbone, after


def _is_feature_map(tensor: Any) -> bool:
    shape = tuple(tensor.shape)
    return len(shape) == 4 and shape[1] is not None and shape[2] is not None


def last_conv_layer(backbone: Any) -> str:
    """Name of the backbone layer whose output Grad-CAM explains.

    The backbone's output itself when it is a spatial feature map (the last conv block for
    every Keras application built with ``include_top=False``), otherwise the last layer
    with a 4-D output.

    Raises:
        ValueError: If the backbone has no spatial feature map at all.
    """
    if _is_feature_map(backbone.outputs[0]):
        return backbone.layers[-1].name
    for layer in reversed(backbone.layers):
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        if not isinstance(output, list | tuple) and _is_feature_map(output):
            return layer.name
    raise ValueError(f"Backbone {backbone.name!r} has no 4-D feature map for Grad-CAM.")


class GradCam:
    """A reusable Grad-CAM explainer for one model (build once, explain many images).

    Args:
        model: The app's classifier (raw RGB 0..255 in, probabilities out).
        layer_name: Backbone layer to explain; defaults to :func:`last_conv_layer`.

    Raises:
        ValueError: If the model has no ``backbone`` or the layer is not a feature map.
    """

    def __init__(self, model: Any, layer_name: str | None = None) -> None:
        import keras

        self.model = model
        self.before, backbone, self.after = _outer_layers(model)
        if layer_name is None:
            from core.models.transfer import last_conv_layer_name

            layer_name = last_conv_layer_name(model)
        self.layer_name = layer_name or last_conv_layer(backbone)
        target = backbone.get_layer(self.layer_name).output
        if not _is_feature_map(target):
            raise ValueError(
                f"layer_name must name a 4-D feature map of the backbone. Received: "
                f"layer_name={self.layer_name!r} with output shape {tuple(target.shape)}"
            )
        self._forward_graph: Any = None
        self._graph_lock = threading.Lock()
        self._traced = False
        if target is backbone.outputs[0]:
            self.features = keras.Model(backbone.inputs, target)
            self.rest = None
        else:
            # Deeper layer chosen: the remainder of the backbone maps it to the output.
            self.features = keras.Model(backbone.inputs, [target, backbone.outputs[0]])
            self.rest = True

    def __call__(self, image: Image.Image | np.ndarray, class_index: int | None = None) -> Any:
        """Heatmap for one image; see :func:`gradcam`."""
        return self.explain(image, class_index)

    def explain(
        self, image: Image.Image | np.ndarray, class_index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Computes the Grad-CAM of one image.

        Args:
            image: A PIL image (any size; resized to the model input) or an array
                (H, W, 3) of raw RGB 0..255.
            class_index: Class to explain; defaults to the predicted class.

        Returns:
            ``(heatmap, probabilities)``: heatmap float32 (H, W) of the *given image's* size,
            scaled 0..1; probabilities of the model for this image.
        """
        import tensorflow as tf

        size = model_input_size(self.model)
        if isinstance(image, Image.Image):
            height, width = image.height, image.width
            batch = image_to_array(image, size)[None]
        else:
            array = np.asarray(image, dtype=np.float32)
            if array.ndim != 3 or array.shape[-1] != 3:
                raise ValueError(f"image must be (H, W, 3). Received shape {array.shape}")
            height, width = array.shape[:2]
            batch = image_to_array(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)), size)
            batch = batch[None]
        # The traced graph once :meth:`warm` made it; eager until then (no trace to wait for).
        forward = self._forward_graph if self._traced else self._forward
        outputs = forward(tf.convert_to_tensor(batch))
        fmap = outputs[0] if self.rest else outputs
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            y = self._after_features(fmap)
            probabilities = y[0]
            index = int(tf.argmax(probabilities)) if class_index is None else int(class_index)
            score = probabilities[index]
        grads = tape.gradient(score, fmap)
        heatmap = _cam(fmap[0].numpy(), grads[0].numpy())
        return resize_heatmap(heatmap, (height, width)), probabilities.numpy()

    def _forward(self, x: Any) -> Any:
        """Raw image batch -> the explained feature map (and the backbone's output)."""
        for layer in self.before:
            x = layer(x, training=False)
        return self.features(x, training=False)

    @property
    def is_warm(self) -> bool:
        """Whether the forward graph is traced (the next image takes milliseconds)."""
        return self._traced

    def warm(self) -> None:
        """Traces the forward pass as one graph; later images use it.

        Until then :meth:`explain` runs eagerly, so a caller that wants the speed without
        the wait calls this in a background thread (:mod:`ui.model_cache` does).
        """
        import tensorflow as tf

        size = model_input_size(self.model)
        self._compiled_forward()(tf.zeros((1, size, size, 3), dtype=tf.float32))
        self._traced = True

    def _compiled_forward(self) -> Any:
        """:meth:`_forward` as one TensorFlow graph (traced by its first call).

        The forward pass up to the feature map holds almost all of the work and needs no
        gradient (only the layers after it run under the tape). Eager it costs ~65 ms per
        image for EfficientNet-Lite0 on a 2-core CPU; as a graph ~12 ms, after a trace of
        ~0.3 s paid once per explainer (every image has the model's input size).
        """
        with self._graph_lock:  # one graph, even when a background thread warms it
            if self._forward_graph is None:
                import tensorflow as tf

                self._forward_graph = tf.function(self._forward, reduce_retracing=True)
            return self._forward_graph

    def _after_features(self, fmap: Any) -> Any:
        y = fmap
        if self.rest:
            backbone = self.model.get_layer("backbone")
            index = [layer.name for layer in backbone.layers].index(self.layer_name)
            for layer in backbone.layers[index + 1 :]:
                y = layer(y, training=False)
        for layer in self.after:
            y = layer(y, training=False)
        return y


def _cam(fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    weights = grads.mean(axis=(0, 1))
    raw = np.tensordot(fmap, weights, axes=([2], [0]))
    cam = np.maximum(raw, 0)
    if cam.max() <= 1e-12:
        # Nothing speaks *for* the class (common in untrained networks): show the relative
        # map instead of a blank one, so the user still sees where the evidence is.
        cam = raw - raw.min()
    if cam.max() <= 1e-12:
        # Gradients vanished entirely: fall back to the feature map's energy.
        cam = np.abs(fmap).sum(axis=-1)
        cam = cam - cam.min()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).astype(np.float32)


def resize_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a heatmap to (H, W), rescaled to 0..1."""
    height, width = shape
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
        (int(width), int(height)), Image.Resampling.BILINEAR
    )
    out = np.asarray(resized, dtype=np.float32)
    low, high = float(out.min()), float(out.max())
    if high - low > 0:
        out = (out - low) / (high - low)
    return np.clip(out, 0.0, 1.0)


def gradcam(
    model: Any,
    image: Image.Image | np.ndarray,
    class_index: int | None = None,
    *,
    layer_name: str | None = None,
) -> np.ndarray:
    """Grad-CAM heatmap of one image against the backbone's last conv block.

    Args:
        model: The app's classifier.
        image: A PIL image or an (H, W, 3) array of raw RGB 0..255.
        class_index: Class to explain; defaults to the predicted class.
        layer_name: Backbone layer to explain; defaults to the last conv block.

    Returns:
        float32 array (H, W) with the image's height and width, values 0..1.
    """
    heatmap, _ = GradCam(model, layer_name).explain(image, class_index)
    return heatmap


def _jet(values: np.ndarray) -> np.ndarray:
    """A small 'jet'-like colormap: 0 blue -> cyan -> yellow -> 1 red; returns uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    red = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.45) -> Image.Image:
    """Blends a coloured heatmap over the image (resized to the image when needed).

    Args:
        image: The picture (any mode; shown as RGB).
        heatmap: (H, W) values 0..1, e.g. from :func:`gradcam`.
        alpha: Opacity of the heatmap, 0..1.

    Returns:
        A new RGB image of the picture's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1. Received: alpha={alpha}")
    rgb = image.convert("RGB")
    if heatmap.shape != (rgb.height, rgb.width):
        heatmap = resize_heatmap(heatmap, (rgb.height, rgb.width))
    colours = Image.fromarray(_jet(heatmap), "RGB")
    return Image.blend(rgb, colours, alpha)
