"""The registry of pretrained backbones: one table of data, no per-network branches.

Each :class:`BackboneSpec` says how to build a network, what input it expects, how big it is,
how it splits into blocks for partial fine-tuning, where its ImageNet weights come from, and
which layer Grad-CAM should look at. The rest of the app reads these facts instead of
branching on names (fastai's per-architecture metadata table, in spirit).

Importing this module is cheap (no TensorFlow); building happens in :mod:`core.models.transfer`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_BACKBONE = "efficientnet_lite0"

WEIGHTS_STATUSES = ("bundled", "cached", "downloadable", "unavailable")

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the app knows about one pretrained network.

    Attributes:
        name: CLI / config name (snake_case), e.g. ``"mobilenet_v2"``.
        display_name: Name shown to people, e.g. ``"MobileNetV2"``.
        family: The ``keras.applications`` module whose ``preprocess_input`` this backbone's
            preprocessing matches (``"efficientnet_lite"`` for the offline Lite0).
        constructor: ``"module:attribute"`` of the function that builds the network. It is
            called as ``fn(include_top=False, weights=None, input_shape=..., name=...,
            **constructor_kwargs)``.
        constructor_kwargs: Extra keyword arguments, as ``(key, value)`` pairs.
        default_size: Input side the ImageNet weights were trained at.
        allowed_sizes: Sizes offered in the UI (any size >= ``min_size`` builds).
        min_size: Smallest input side the architecture accepts.
        preprocessing: ``caffe``, ``torch``, ``tf`` or ``none`` (built into the network).
        feature_dim: Channels of the last feature map (size of the pooled vector).
        params: Parameters of the network without its classifier, at the default size.
        imagenet_top1: ImageNet top-1 accuracy in percent, from the Keras documentation.
        block_regex: Prefix mode: a regex whose group 1, matched at the start of a layer's
            name, is the layer's block. Layers before the first match form the stem; unmatched
            layers after it belong to the block before them.
        block_end_regex: End mode (networks with generated layer names): a layer whose name
            matches closes a block named after it; the first ``stem_layers`` layers are the
            stem.
        stem_layers: Number of leading layers forming the stem in end mode.
        num_blocks: Number of blocks after the stem (what ``top:N`` counts).
        gradcam_layer: Name of the last convolutional feature layer, or ``None`` when it is the
            backbone's output layer (whose name Keras generates).
        weights_file: Keras' cache file name of the no-top ImageNet weights (``{size}`` is
            replaced by the weights size), or ``""`` for bundled weights.
        weights_url: Download URL (``{size}`` replaced likewise), or ``""``.
        weights_hash: md5 (32 hex) or sha256 (64 hex) Keras checks, or ``""`` when Keras has
            none for this file.
        weights_sizes: Sizes with their own weights file; other sizes use ``default_size``.
        bundled: True when the weights ship with an installed package (works offline).
        notes: One sentence for the UI.
    """

    name: str
    display_name: str
    family: str
    constructor: str
    default_size: int
    allowed_sizes: tuple[int, ...]
    min_size: int
    preprocessing: str
    feature_dim: int
    params: int
    imagenet_top1: float
    num_blocks: int
    constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    block_regex: str = ""
    block_end_regex: str = ""
    stem_layers: int = 0
    gradcam_layer: str | None = None
    weights_file: str = ""
    weights_url: str = ""
    weights_hash: str = ""
    weights_sizes: tuple[int, ...] = field(default_factory=tuple)
    bundled: bool = False
    notes: str = ""

    def build_fn(self) -> Callable[..., Any]:
        """Imports and returns the constructor function (imports Keras)."""
        module_name, attribute = self.constructor.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def weights_size(self, image_size: int) -> int:
        """The size whose weights file serves ``image_size``."""
        return image_size if image_size in self.weights_sizes else self.default_size

    def weights_filename(self, image_size: int | None = None) -> str:
        """Keras' cache file name for the weights used at ``image_size``."""
        size = self.weights_size(image_size or self.default_size)
        return self.weights_file.format(size=size)

    def weights_origin(self, image_size: int | None = None) -> str:
        """Download URL of the weights used at ``image_size``."""
        size = self.weights_size(image_size or self.default_size)
        return self.weights_url.format(size=size)

    def check_size(self, image_size: int) -> int:
        """Validates an input size for this backbone.

        Raises:
            ValueError: If ``image_size`` is below ``min_size``.
        """
        if isinstance(image_size, bool) or not isinstance(image_size, int):
            raise ValueError(f"image_size must be an integer. Received: image_size={image_size!r}")
        if image_size < self.min_size:
            raise ValueError(
                f"image_size for {self.name} must be at least {self.min_size}. "
                f"Received: image_size={image_size}"
            )
        return image_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready metadata."""
        data = asdict(self)
        data["constructor_kwargs"] = dict(self.constructor_kwargs)
        data["allowed_sizes"] = list(self.allowed_sizes)
        data["weights_sizes"] = list(self.weights_sizes)
        return data


def _keras(
    name: str,
    display_name: str,
    family: str,
    constructor: str,
    *,
    preprocessing: str,
    feature_dim: int,
    params: int,
    top1: float,
    num_blocks: int,
    weights_path: str,
    weights_hash: str,
    default_size: int = 224,
    allowed_sizes: tuple[int, ...] = (128, 160, 192, 224),
    min_size: int = 32,
    **extra: Any,
) -> BackboneSpec:
    folder, _, file_name = weights_path.rpartition("/")
    return BackboneSpec(
        name=name,
        display_name=display_name,
        family=family,
        constructor=f"keras.applications:{constructor}",
        default_size=default_size,
        allowed_sizes=allowed_sizes,
        min_size=min_size,
        preprocessing=preprocessing,
        feature_dim=feature_dim,
        params=params,
        imagenet_top1=top1,
        num_blocks=num_blocks,
        weights_file=file_name,
        weights_url=_KERAS_BASE + weights_path if folder else weights_path,
        weights_hash=weights_hash,
        **extra,
    )


_SPECS: tuple[BackboneSpec, ...] = (
    BackboneSpec(
        name="efficientnet_lite0",
        display_name="EfficientNet-Lite0 (offline)",
        family="efficientnet_lite",
        constructor="core.models.lite0:efficientnet_lite0",
        default_size=224,
        allowed_sizes=(128, 160, 192, 224),
        min_size=32,
        preprocessing="tf",
        feature_dim=1280,
        params=3_413_024,
        imagenet_top1=75.1,
        num_blocks=17,
        block_regex=r"^(block\d+[a-z]|top)_",
        gradcam_layer="top_activation",
        bundled=True,
        notes="ImageNet weights ship with the app: works with no internet.",
    ),
    _keras(
        "mobilenet_v2",
        "MobileNetV2",
        "mobilenet_v2",
        "MobileNetV2",
        preprocessing="tf",
        feature_dim=1280,
        params=2_257_984,
        top1=71.3,
        num_blocks=18,
        weights_path="mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}"
        "_no_top.h5",
        weights_hash="",
        allowed_sizes=(96, 128, 160, 192, 224),
        weights_sizes=(96, 128, 160, 192, 224),
        block_regex=r"^(expanded_conv|block_\d+|Conv_1)(?:_|$)",
        gradcam_layer="out_relu",
        notes="Fast and small; a good first choice on a CPU.",
    ),
    _keras(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        "mobilenet_v3",
        "MobileNetV3Small",
        preprocessing="tf",
        feature_dim=576,
        params=939_120,
        top1=68.1,
        num_blocks=12,
        weights_path="mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        weights_hash="d3e8ec802a04aa4fc771ee12a9a9b836",
        allowed_sizes=(96, 128, 160, 192, 224),
        constructor_kwargs=(("include_preprocessing", False),),
        block_regex=r"^(expanded_conv(?:_\d+)?|conv_1)(?:_|$)",
        notes="The smallest and fastest; built-in [-1, 1] scaling done by the app's layer.",
    ),
    _keras(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        "mobilenet_v3",
        "MobileNetV3Large",
        preprocessing="tf",
        feature_dim=960,
        params=2_996_352,
        top1=75.6,
        num_blocks=16,
        weights_path="mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        weights_hash="07fb09a5933dd0c8eaafa16978110389",
        allowed_sizes=(96, 128, 160, 192, 224),
        constructor_kwargs=(("include_preprocessing", False),),
        block_regex=r"^(expanded_conv(?:_\d+)?|conv_1)(?:_|$)",
        notes="Fast with good accuracy.",
    ),
    _keras(
        "efficientnet_b0",
        "EfficientNetB0",
        "efficientnet",
        "EfficientNetB0",
        preprocessing="none",
        feature_dim=1280,
        params=4_049_571,
        top1=77.1,
        num_blocks=17,
        weights_path="https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
        weights_hash="50bc09e76180e00e4465e1a485ddc09d",
        allowed_sizes=(128, 160, 192, 224, 256),
        block_regex=r"^(block\d+[a-z]|top)_",
        gradcam_layer="top_activation",
        notes="Rescaling and normalisation are built into the network.",
    ),
    _keras(
        "efficientnet_v2_b0",
        "EfficientNetV2B0",
        "efficientnet_v2",
        "EfficientNetV2B0",
        preprocessing="torch",
        feature_dim=1280,
        params=5_919_312,
        top1=78.7,
        num_blocks=22,
        weights_path="efficientnet_v2/efficientnetv2-b0_notop.h5",
        weights_hash="893217f2bb855e2983157299931e43ff",
        allowed_sizes=(128, 160, 192, 224, 256),
        constructor_kwargs=(("include_preprocessing", False),),
        block_regex=r"^(block\d+[a-z]|top)_",
        gradcam_layer="top_activation",
        notes="Accurate for its size; ImageNet mean/std input (as its built-in layers).",
    ),
    _keras(
        "resnet50",
        "ResNet50",
        "resnet",
        "ResNet50",
        preprocessing="caffe",
        feature_dim=2048,
        params=23_587_712,
        top1=74.9,
        num_blocks=16,
        weights_path="resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="4d473c1dd8becc155b73f8504c6f6626",
        block_regex=r"^(conv\d_block\d+)_",
        gradcam_layer="conv5_block3_out",
        notes="The classic residual network (BGR, mean-subtracted input).",
    ),
    _keras(
        "resnet50_v2",
        "ResNet50V2",
        "resnet_v2",
        "ResNet50V2",
        preprocessing="tf",
        feature_dim=2048,
        params=23_564_800,
        top1=76.0,
        num_blocks=16,
        weights_path="resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="fac2f116257151a9d068a22e544a4917",
        block_regex=r"^(conv\d_block\d+)_",
        gradcam_layer="post_relu",
        notes="Pre-activation ResNet with [-1, 1] input.",
    ),
    _keras(
        "vgg16",
        "VGG16",
        "vgg16",
        "VGG16",
        preprocessing="caffe",
        feature_dim=512,
        params=14_714_688,
        top1=71.3,
        num_blocks=5,
        weights_path="vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="6d6bbae143d832006294945121d1f1fc",
        block_regex=r"^(block\d)_",
        gradcam_layer="block5_conv3",
        notes="Simple and heavy; the classic Flatten + Dense head recipe uses it.",
    ),
    _keras(
        "densenet121",
        "DenseNet121",
        "densenet",
        "DenseNet121",
        preprocessing="torch",
        feature_dim=1024,
        params=7_037_504,
        top1=75.0,
        num_blocks=61,
        weights_path="densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="30ee3e1110167f948a6b9946edeeb738",
        block_regex=r"^(conv\d_block\d+|pool\d)_",
        gradcam_layer="relu",
        notes="Dense connections; each dense layer and transition is a block.",
    ),
    _keras(
        "inception_v3",
        "InceptionV3",
        "inception_v3",
        "InceptionV3",
        preprocessing="tf",
        feature_dim=2048,
        params=21_802_784,
        top1=77.9,
        num_blocks=11,
        weights_path="inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="bcbd6486424b2319ff4ef7d526e38f63",
        default_size=299,
        allowed_sizes=(139, 160, 224, 299),
        min_size=75,
        block_end_regex=r"^mixed\d+$",
        stem_layers=18,
        gradcam_layer="mixed10",
        notes="Trained at 299 px; blocks are the 11 'mixed' modules.",
    ),
    _keras(
        "xception",
        "Xception",
        "xception",
        "Xception",
        preprocessing="tf",
        feature_dim=2048,
        params=20_861_480,
        top1=79.0,
        num_blocks=14,
        weights_path="xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="b0042744bf5b25fce3cb969f33bebb97",
        default_size=299,
        allowed_sizes=(160, 224, 299),
        min_size=71,
        block_regex=r"^(block\d+)_",
        gradcam_layer="block14_sepconv2_act",
        notes="Depthwise-separable Inception; trained at 299 px.",
    ),
    _keras(
        "convnext_tiny",
        "ConvNeXtTiny",
        "convnext",
        "ConvNeXtTiny",
        preprocessing="torch",
        feature_dim=768,
        params=27_820_128,
        top1=81.3,
        num_blocks=21,
        weights_path="convnext/convnext_tiny_notop.h5",
        weights_hash="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
        constructor_kwargs=(("include_preprocessing", False),),
        block_regex=r"^.*?(stage_\d+_block_\d+|downsampling_block_\d+)",
        notes="The most accurate here and the slowest on a CPU.",
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def get_backbone(name: str) -> BackboneSpec:
    """Looks up a backbone by its registry name.

    Args:
        name: A registry name such as ``"mobilenet_v2"``.

    Returns:
        The backbone's :class:`BackboneSpec`.

    Raises:
        ValueError: If the name is not registered (the message lists the names).
    """
    spec = BACKBONES.get(name)
    if spec is None:
        raise ValueError(
            f"backbone must be one of {sorted(BACKBONES)}. Received: backbone={name!r}"
        )
    return spec
