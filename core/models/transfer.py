"""The transfer model: raw RGB 0..255 in, class probabilities out.

Layers, by name (other modules rely on these names)::

    image (Input, float32 0..255, (size, size, 3))
    augmentation   Augmentation (a Sequential), only when enabled; acts only in training
    preprocess     a built-in layer from core.models.preprocessing.preprocessing_layer
    backbone       nested Model from the registry, called with training=False when pretrained
    pool           GlobalAveragePooling2D / GlobalMaxPooling2D / Flatten
    head           nested Sequential: [Dense(relu)]* -> Dropout -> Dense(softmax)

A pretrained backbone is always called with ``training=False`` so its BatchNorm layers run
in inference mode, and :func:`set_trainable` keeps every BatchNorm frozen when fine-tuning
(the Keras transfer-learning guide). A randomly initialised backbone (weights ``"none"``)
is the exception: frozen, untrained BatchNorm would make it untrainable, so it trains
normally. What trains is one setting: ``head``, ``top:N`` (the head plus the last N blocks
of the registry's block structure) or ``all``.

The model is named ``transfer_<backbone>``, which is how :func:`backbone_name` finds the
registry entry of a loaded model; whether the backbone is pretrained is read from the graph
(called with ``training=False``). A model is **saved** as :func:`to_builtin` returns it: the
inference graph without the training-only augmentation, so every saved layer is a built-in
Keras layer and the file opens without this project.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import keras

from core.config import AugmentConfig, ModelConfig, parse_trainable
from core.models import weights as weights_mod
from core.models.preprocessing import PREPROCESS_LAYER, LegacyPreprocess, preprocessing_layer
from core.models.registry import BackboneSpec, get_backbone

Progress = Callable[[int, int, str], None]

STEM = "stem"
HEAD = "head"
MODEL_PREFIX = "transfer_"

_POOLING_LAYERS = {
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
    "flatten": keras.layers.Flatten,
}


def build_backbone(
    spec: BackboneSpec | str,
    image_size: int,
    weights: str = "none",
    *,
    progress: Progress | None = None,
) -> keras.Model:
    """Builds a registry backbone (no classifier) named ``"backbone"`` with its weights.

    Args:
        spec: A :class:`BackboneSpec` or its registry name.
        image_size: Side of the square input.
        weights: ``"imagenet"``, ``"none"`` or a path to a ``.weights.h5`` file.
        progress: ``progress(done, total, message)`` for weight downloads.

    Returns:
        A functional Keras model mapping preprocessed images to a feature map.

    Raises:
        ValueError: For an unknown backbone or a size below its minimum.
        core.models.weights.WeightsUnavailableError: If ImageNet weights cannot be obtained.
        core.models.weights.WeightsFileError: If a weights file is not HDF5 or does not fit.
    """
    spec = get_backbone(spec) if isinstance(spec, str) else spec
    spec.check_size(image_size)
    imagenet_path = None
    if weights == "imagenet" and not spec.bundled:
        # Download (or find) the file before building, so an offline failure is fast.
        imagenet_path = weights_mod.imagenet_weights_path(spec, image_size, progress=progress)
    elif weights not in ("imagenet", "none"):
        weights_mod.check_weights_file(weights)
    kwargs = dict(spec.constructor_kwargs)
    if spec.bundled:
        kwargs["weights"] = weights if weights == "imagenet" else None
        kwargs["progress"] = progress
    else:
        kwargs["weights"] = None
    network = spec.build_fn()(include_top=False, input_shape=(image_size, image_size, 3), **kwargs)
    # Re-wrap under the fixed name other modules rely on (some constructors derive their
    # architecture or layer names from ``name``, so it cannot be passed to them).
    backbone = keras.Model(network.input, network.output, name="backbone")
    if imagenet_path is not None:
        if progress:
            progress(0, 1, f"Loading ImageNet weights into {spec.display_name}")
        backbone.load_weights(str(imagenet_path))
        if progress:
            progress(1, 1, f"Loaded ImageNet weights into {spec.display_name}")
    elif weights not in ("imagenet", "none"):
        weights_mod.load_weights_file(backbone, weights, what=f"backbone {spec.name}")
    return backbone


@keras.saving.register_keras_serializable(package="transfer_studio")
class Augmentation(keras.Sequential):
    """A Sequential of random layers that only acts when ``training=True`` is passed.

    Keras' random layers default to ``training=True`` when a model is called directly
    (``model(x)``); this wrapper makes the default ``False``, so inference through any path
    sees the untouched image and only ``fit`` augments.
    """

    def call(self, inputs, training=False, mask=None):
        if not training:
            return inputs
        return super().call(inputs, training=True, mask=mask)


@keras.saving.register_keras_serializable(package="transfer_studio")
class SymmetricShear(keras.layers.RandomShear):
    """``RandomShear`` with symmetric factors that survives a save/load round trip.

    Keras 3.15's ``RandomShear.get_config`` writes ``[-f, f]``, which its own constructor
    then rejects (negative factor); this subclass writes the scalar ``f`` back.
    """

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["x_factor"] = float(self.x_factor[1])
        config["y_factor"] = float(self.y_factor[1])
        return config


def build_augmentation(augment: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """The training-time augmentation pipeline (inactive at inference).

    Args:
        augment: Which augmentations, and how strong.
        seed: Optional seed for the random layers.

    Returns:
        A Sequential named ``"augmentation"`` working on 0..255 images.
    """
    stack: list[keras.layers.Layer] = []
    if augment.flip != "none":
        stack.append(keras.layers.RandomFlip(augment.flip, seed=seed, name="flip"))
    if augment.rotation:
        stack.append(keras.layers.RandomRotation(augment.rotation, fill_mode="reflect", seed=seed))
    if augment.zoom:
        stack.append(keras.layers.RandomZoom(augment.zoom, fill_mode="reflect", seed=seed))
    if augment.translation:
        stack.append(
            keras.layers.RandomTranslation(
                augment.translation, augment.translation, fill_mode="reflect", seed=seed
            )
        )
    if augment.shear:
        stack.append(SymmetricShear(augment.shear, augment.shear, seed=seed, name="shear"))
    if augment.contrast:
        stack.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255), seed=seed))
    if augment.brightness:
        stack.append(
            keras.layers.RandomBrightness(augment.brightness, value_range=(0, 255), seed=seed)
        )
    return Augmentation(stack, name="augmentation")


def build_head(
    input_dim: int, num_classes: int, *, dense_units: tuple[int, ...] = (), dropout: float = 0.2
) -> keras.Sequential:
    """The classifier head: pooled features -> class probabilities.

    Args:
        input_dim: Length of the pooled feature vector.
        num_classes: Number of output classes.
        dense_units: Hidden dense layer sizes (ReLU), in order; empty for a linear head.
        dropout: Dropout rate before the output layer (0 for none).

    Returns:
        A Sequential named ``"head"`` ending in a float32 softmax layer ``"predictions"``.
    """
    stack: list[keras.layers.Layer] = [keras.Input((input_dim,), name="features")]
    for index, units in enumerate(dense_units):
        stack.append(keras.layers.Dense(units, activation="relu", name=f"dense_{index}"))
    if dropout:
        stack.append(keras.layers.Dropout(dropout, name="dropout"))
    # float32 output keeps the softmax stable under a mixed-precision policy.
    stack.append(
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")
    )
    return keras.Sequential(stack, name=HEAD)


def build_model(
    config: ModelConfig, num_classes: int, *, progress: Progress | None = None
) -> keras.Model:
    """Builds the transfer model described by ``config``.

    Args:
        config: Backbone, weights, size, pooling, head and augmentation settings.
        num_classes: Number of classes (at least 2).
        progress: ``progress(done, total, message)`` for weight downloads and loading.

    Returns:
        An uncompiled Keras model taking raw RGB 0..255 float images of shape
        ``(image_size, image_size, 3)``, with ``config.trainable`` applied.

    Raises:
        ValueError: For an unknown backbone, a bad size or fewer than 2 classes.
        core.models.weights.WeightsUnavailableError: If ImageNet weights cannot be obtained.
        core.models.weights.WeightsFileError: If a weights file is not HDF5 or does not fit.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: {num_classes!r}")
    spec = get_backbone(config.backbone)
    size = spec.check_size(config.image_size)
    backbone = build_backbone(spec, size, config.weights, progress=progress)

    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if config.augment.enabled:
        x = build_augmentation(config.augment)(x)
    pretrained = config.weights != "none"
    x = preprocessing_layer(spec.preprocessing)(x)
    # Pretrained: BatchNorm always in inference mode (its statistics fit the pretrained
    # weights). Random init: BatchNorm must learn, so it follows the training flag.
    x = backbone(x, training=False) if pretrained else backbone(x)
    x = _POOLING_LAYERS[config.pooling](name="pool")(x)
    head = build_head(
        int(x.shape[-1]), num_classes, dense_units=config.dense_units, dropout=config.dropout
    )
    outputs = head(x)
    model = keras.Model(inputs, outputs, name=f"{MODEL_PREFIX}{spec.name}")
    set_trainable(model, config.trainable)
    return model


def _walk(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields the leaf layers inside ``layer`` (depth first), in model order."""
    children = getattr(layer, "layers", None)
    if children:
        for child in children:
            yield from _walk(child)
    else:
        yield layer


def backbone_name(model: keras.Model) -> str:
    """The registry name of the backbone inside a transfer model.

    Read from the model's name (``transfer_<backbone>``), or from the ``preprocess`` layer of
    a model saved by an earlier version.

    Raises:
        ValueError: If the model does not say which registry backbone it contains.
    """
    from core.models.registry import BACKBONES

    legacy = _legacy_preprocess(model)
    if legacy is not None and legacy.backbone:
        return legacy.backbone
    name = model.name[len(MODEL_PREFIX) :] if model.name.startswith(MODEL_PREFIX) else ""
    if name not in BACKBONES:
        raise ValueError(
            f"This model does not name a known backbone: its name must be "
            f"'{MODEL_PREFIX}<backbone>' with a registry backbone. Received: name={model.name!r}"
        )
    return name


def is_pretrained(model: keras.Model) -> bool:
    """Whether the model's backbone started from pretrained weights.

    A pretrained backbone is called with ``training=False`` (BatchNorm in inference mode), a
    randomly initialised one follows the training flag; that call is part of the saved graph.
    """
    legacy = _legacy_preprocess(model)
    if legacy is not None:
        return legacy.pretrained
    nodes = getattr(model.get_layer("backbone"), "_inbound_nodes", [])
    for node in nodes:
        if node.arguments.kwargs.get("training") is False:
            return True
    return not nodes


def _legacy_preprocess(model: keras.Model) -> LegacyPreprocess | None:
    if not _has_layer(model, PREPROCESS_LAYER):
        return None
    layer = model.get_layer(PREPROCESS_LAYER)
    return layer if isinstance(layer, LegacyPreprocess) else None


def needs_conversion(model: keras.Model) -> bool:
    """Whether saving ``model`` as it is would store layers that are not built-in Keras ones.

    True for a model with the training-time augmentation or with the custom preprocessing
    layer of earlier versions.
    """
    return _has_layer(model, "augmentation") or _legacy_preprocess(model) is not None


def to_builtin(model: keras.Model) -> keras.Model:
    """The model as it is saved: raw RGB in, probabilities out, only built-in Keras layers.

    Drops the augmentation (it only acts in training) and replaces the custom preprocessing
    layer of earlier versions by its built-in equivalent. The backbone, pooling and head are
    the same layer objects, so the weights are shared and the predictions identical. A model
    that needs nothing (see :func:`needs_conversion`) is returned as it is.

    Args:
        model: A transfer model (from :func:`build_model` or loaded from a file).

    Returns:
        A model whose every layer is a built-in Keras layer.
    """
    if not needs_conversion(model) or not _has_layer(model, "backbone"):
        return model
    legacy = _legacy_preprocess(model)
    pretrained = is_pretrained(model)
    name = backbone_name(model)
    inputs = keras.Input(model.input_shape[1:], name="image")
    preprocess = (
        preprocessing_layer(legacy.mode) if legacy is not None else model.get_layer("preprocess")
    )
    x = preprocess(inputs)
    backbone = model.get_layer("backbone")
    x = backbone(x, training=False) if pretrained else backbone(x)
    x = model.get_layer("pool")(x)
    outputs = model.get_layer(HEAD)(x)
    return keras.Model(inputs, outputs, name=f"{MODEL_PREFIX}{name}")


def assign_blocks(spec: BackboneSpec, layer_names: list[str]) -> list[str]:
    """Maps each backbone layer (in model order) to its block name.

    Args:
        spec: The backbone's registry entry (its block regex or end markers).
        layer_names: The backbone's top-level layer names, in order.

    Returns:
        One block name per layer: ``"stem"`` or a block name from the registry structure.
    """
    blocks: list[str] = []
    if spec.block_end_regex:
        end = re.compile(spec.block_end_regex)
        pending = 0
        for index, name in enumerate(layer_names):
            if index < spec.stem_layers:
                blocks.append(STEM)
                continue
            pending += 1
            blocks.append("")
            if end.match(name):
                blocks[-pending:] = [name] * pending
                pending = 0
        if pending:  # layers after the last marker join the last block
            last = next((b for b in reversed(blocks) if b), STEM)
            blocks[-pending:] = [last] * pending
        return blocks
    pattern = re.compile(spec.block_regex)
    current = STEM
    for name in layer_names:
        match = pattern.match(name)
        if match:
            current = match.group(1)
        blocks.append(current)
    return blocks


def block_groups(model: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The backbone's top-level layers grouped by block, in model order (stem first)."""
    spec = get_backbone(backbone_name(model))
    backbone = model.get_layer("backbone")
    layers = list(backbone.layers)
    names = assign_blocks(spec, [layer.name for layer in layers])
    groups: list[tuple[str, list[keras.layers.Layer]]] = []
    for name, layer in zip(names, layers, strict=True):
        if not groups or groups[-1][0] != name:
            groups.append((name, []))
        groups[-1][1].append(layer)
    return groups


def num_blocks(backbone: str) -> int:
    """Number of blocks after the stem (the maximum of the "top N" slider)."""
    return get_backbone(backbone).num_blocks


def set_trainable(model: keras.Model, trainable: str) -> None:
    """Chooses what trains: ``head``, ``top:N`` (head + last N blocks) or ``all``.

    For a pretrained backbone, BatchNormalization layers always stay frozen (and, since the
    backbone is called with ``training=False``, keep using their moving statistics). A
    backbone trained from random initialisation (weights ``"none"``) cannot learn without
    BatchNorm, so there they train with their block. The caller must recompile the model
    afterwards for the change to take effect in training.

    Args:
        model: A model from :func:`build_model`.
        trainable: ``"head"``, ``"top:N"`` (N >= 1) or ``"all"``.

    Raises:
        ValueError: If ``trainable`` is malformed or N exceeds the number of blocks.
    """
    policy, count = parse_trainable(trainable)
    backbone = model.get_layer("backbone")
    model.get_layer(HEAD).trainable = True
    if policy == "head":
        backbone.trainable = False
        return
    groups = block_groups(model)
    blocks = [name for name, _ in groups if name != STEM]
    if policy == "top" and count > len(blocks):
        raise ValueError(
            f"trainable 'top:N' must have N between 1 and {len(blocks)} for "
            f"{backbone_name(model)}. Received: trainable={trainable!r}"
        )
    backbone.trainable = True
    unfrozen = set(blocks[len(blocks) - count :]) if policy == "top" else None
    for name, layers in groups:
        for layer in layers:
            layer.trainable = unfrozen is None or name in unfrozen
    if is_pretrained(model):
        for layer in _walk(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def _size(variables: list[Any]) -> int:
    total = 0
    for variable in variables:
        count = 1
        for dim in variable.shape:
            count *= int(dim)
        total += count
    return total


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable, frozen and total parameter counts (BatchNorm statistics count as frozen)."""
    trainable = _size(model.trainable_weights)
    frozen = _size(model.non_trainable_weights)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def block_table(model: keras.Model) -> list[dict[str, Any]]:
    """Per-block rows for the UI's block diagram, stem first and head last.

    Returns:
        A list of ``{"name", "params", "trainable", "trainable_params", "layers"}``;
        ``trainable`` is True when any weight of the block trains.
    """
    rows = []
    for name, layers in block_groups(model):
        params = sum(_size(layer.weights) for layer in layers)
        train = sum(_size(layer.trainable_weights) for layer in layers)
        rows.append(
            {
                "name": name,
                "params": params,
                "trainable": train > 0,
                "trainable_params": train,
                "layers": len(layers),
            }
        )
    head = model.get_layer(HEAD)
    train = _size(head.trainable_weights)
    rows.append(
        {
            "name": HEAD,
            "params": _size(head.weights),
            "trainable": train > 0,
            "trainable_params": train,
            "layers": len(head.layers),
        }
    )
    return rows


def feature_extractor(model: keras.Model) -> keras.Model:
    """Raw image -> pooled feature vector, sharing the model's weights (no augmentation).

    Used for the embedding fast path: compute features once, train the head on them.
    """
    backbone = model.get_layer("backbone")
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = model.get_layer("preprocess")(inputs)
    x = backbone(x, training=False)
    x = model.get_layer("pool")(x)
    return keras.Model(inputs, x, name="feature_extractor")


def head_of(model: keras.Model) -> keras.Model:
    """The head (pooled features -> probabilities) of a transfer model."""
    return model.get_layer(HEAD)


def last_conv_layer_name(backbone: str | keras.Model) -> str | None:
    """Grad-CAM target: the last convolutional feature layer of a backbone.

    Args:
        backbone: A registry name (returns the registry's layer name, which may be ``None``
            when Keras generates it) or a transfer model / backbone model (always returns the
            name of a layer inside the ``"backbone"`` sub-model).
    """
    if isinstance(backbone, str):
        return get_backbone(backbone).gradcam_layer
    model = backbone
    inner = model.get_layer("backbone") if _has_layer(model, "backbone") else model
    spec_name = backbone_name(model) if _has_layer(model, "preprocess") else None
    wanted = get_backbone(spec_name).gradcam_layer if spec_name else None
    if wanted and _has_layer(inner, wanted):
        return wanted
    return inner.layers[-1].name


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def gradcam_model(model: keras.Model) -> keras.Model:
    """Backbone sub-model returning ``(conv feature map, backbone output)`` for Grad-CAM.

    Feed it preprocessed images (``model.get_layer("preprocess")(raw)``); compute the class
    score from the backbone output with ``model.get_layer("pool")`` and the head.
    """
    inner = model.get_layer("backbone")
    target = inner.get_layer(last_conv_layer_name(model))
    return keras.Model(inner.input, [target.output, inner.output], name="gradcam")
