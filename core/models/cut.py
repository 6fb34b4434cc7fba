"""Where a partly trainable backbone splits into a frozen bottom and a trainable top.

With ``trainable="top:N"`` the blocks below the first trainable block never change, and (with
the backbone's BatchNorm in inference mode) map an image to the same activation every epoch.
:func:`find_cut` finds the one tensor where the frozen bottom hands over to the trainable
top, using the registry's block structure; :func:`split_at_cut` returns the two halves as
models that share the transfer model's layers, so training the top trains the full model::

    bottom: raw image -> preprocess -> backbone up to the cut        (run once, cached)
    top:    activation at the cut -> rest of the backbone -> pool -> head   (trained)

``top(bottom(x))`` computes exactly what the full model computes: the same layers in the same
order, only the graph is split. A cut is possible where exactly one tensor crosses the block
boundary (the block's input, as in every registry family at its block boundaries); where it
is not, :class:`CutPlan` says why and the trainer runs the whole network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras

from core.config import parse_trainable
from core.models.transfer import HEAD, STEM, backbone_name, block_groups, is_pretrained


@dataclass(frozen=True)
class CutPlan:
    """Whether the frozen part of a model can be cached, and where.

    Attributes:
        possible: True when the backbone splits at one tensor below the trainable blocks.
        reason: One sentence for the user: what is cached, or why nothing can be.
        block: The first trainable block (the top half starts with it), or ``""``.
        shape: Shape of one image's activation at the cut, e.g. ``(7, 7, 160)``; ``()``
            when no cut is possible.
        tensor: The Keras tensor at the cut inside the backbone graph (None without a cut).
    """

    possible: bool
    reason: str
    block: str = ""
    shape: tuple[int, ...] = ()
    tensor: Any = None

    @property
    def values_per_image(self) -> int:
        """Numbers stored per image at the cut (0 without a cut)."""
        return math.prod(self.shape) if self.possible else 0


def _producer(tensor: Any) -> tuple[Any, Any]:
    """The operation that made ``tensor`` and the graph node of that call."""
    history = tensor._keras_history
    operation = history.operation
    return operation, operation._inbound_nodes[history.node_index]


def _operations_above(backbone: keras.Model, cut: Any) -> set[int] | None:
    """Ids of the operations computing the backbone's output from ``cut``.

    Returns:
        The ids, or None when the output also depends on the backbone's input through another
        path (more than one tensor crosses the cut).
    """
    inputs = {id(t) for t in backbone.inputs}
    seen: set[int] = set()
    stack = list(backbone.outputs)
    visited_tensors: set[int] = set()
    while stack:
        tensor = stack.pop()
        if tensor is cut or id(tensor) in visited_tensors:
            continue
        visited_tensors.add(id(tensor))
        if id(tensor) in inputs:
            return None
        operation, node = _producer(tensor)
        seen.add(id(operation))
        stack.extend(node.input_tensors)
    return seen


def _weighted_leaves(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    children = getattr(layer, "layers", None)
    if children:
        return [leaf for child in children for leaf in _weighted_leaves(child)]
    return [layer] if layer.weights else []


def find_cut(model: keras.Model, trainable: str, *, require_pretrained: bool = True) -> CutPlan:
    """Finds the tensor below the first trainable block of a transfer model.

    Args:
        model: A transfer model (from :func:`core.models.transfer.build_model`).
        trainable: The setting to plan for (already applied to ``model``): only ``top:N``
            can be cut.
        require_pretrained: Refuse a backbone trained from random weights (training does);
            False plans the cut of the same architecture with pretrained weights (the Model
            page, which draws the network with random weights).

    Returns:
        A :class:`CutPlan`; ``possible`` is False (with the reason) for ``head`` (the fast
        path caches the pooled features instead), ``all``, a backbone trained from random
        weights (its BatchNorm layers learn, so the frozen part is not fixed), and a block
        boundary that more than one tensor crosses.
    """
    policy, count = parse_trainable(trainable)
    if policy == "head":
        return CutPlan(False, "Only the last layer trains: its input features are cached.")
    if policy == "all":
        return CutPlan(False, "Everything trains, so every epoch runs the whole network.")
    if require_pretrained and not is_pretrained(model):
        return CutPlan(
            False,
            "The network starts from random weights, so its normalisation layers keep "
            "learning and the frozen part changes: every epoch runs the whole network.",
        )
    groups = block_groups(model)
    blocks = [name for name, _ in groups if name != STEM]
    if not 1 <= count <= len(blocks):
        raise ValueError(
            f"trainable 'top:N' must have N between 1 and {len(blocks)} for "
            f"{backbone_name(model)}. Received: trainable={trainable!r}"
        )
    first = blocks[len(blocks) - count]
    first_layer = next(layers[0] for name, layers in groups if name == first)
    backbone = model.get_layer("backbone")
    nodes = [
        node
        for depth in backbone._nodes_by_depth.values()
        for node in depth
        if node.operation is first_layer
    ]
    inputs = [t for node in nodes for t in node.input_tensors]
    if len(nodes) != 1 or len(inputs) != 1:
        return CutPlan(
            False,
            f"Block {first} does not start from one tensor, so the frozen part cannot be "
            "cached: every epoch runs the whole network.",
            block=first,
        )
    cut = inputs[0]
    above = _operations_above(backbone, cut)
    if above is None:
        return CutPlan(
            False,
            f"Layers above block {first} also use earlier results, so the frozen part "
            "cannot be cached: every epoch runs the whole network.",
            block=first,
        )
    for layer in backbone.layers:
        trains = any(leaf.trainable_weights for leaf in _weighted_leaves(layer))
        if trains and id(layer) not in above:
            return CutPlan(
                False,
                f"Layer {layer.name} trains below block {first}, so the frozen part cannot "
                "be cached: every epoch runs the whole network.",
                block=first,
            )
    shape = tuple(int(d) for d in cut.shape[1:])
    return CutPlan(
        True,
        "The frozen layers run once over the images and their output is kept; every epoch "
        f"then trains only the top {count} block{'s' if count > 1 else ''} and the last "
        "layer.",
        block=first,
        shape=shape,
        tensor=cut,
    )


def split_at_cut(model: keras.Model, plan: CutPlan) -> tuple[keras.Model, keras.Model]:
    """The frozen bottom and trainable top of a transfer model, sharing its layers.

    Args:
        model: The transfer model ``plan`` was found for (its trainable setting applied).
        plan: A possible :class:`CutPlan` from :func:`find_cut`.

    Returns:
        ``(bottom, top)``: ``bottom`` maps raw 0..255 images to the activation at the cut
        (no augmentation; BatchNorm in inference mode); ``top`` maps that activation to class
        probabilities. ``top(bottom(x))`` equals ``model(x)`` at inference.

    Raises:
        ValueError: If the plan holds no cut.
    """
    if not plan.possible:
        raise ValueError(f"This plan has no cut to split at. Received: plan={plan.reason!r}")
    backbone = model.get_layer("backbone")
    lower = keras.Model(backbone.inputs, plan.tensor, name="backbone_bottom")
    upper = keras.Model(plan.tensor, backbone.outputs[0], name="backbone_top")

    image = keras.Input(model.input_shape[1:], name="image")
    x = model.get_layer("preprocess")(image)
    bottom = keras.Model(image, lower(x, training=False), name="frozen_bottom")

    activation = keras.Input(plan.shape, name="activation")
    y = upper(activation, training=False)
    y = model.get_layer("pool")(y)
    top = keras.Model(activation, model.get_layer(HEAD)(y), name="trainable_top")
    return bottom, top
