"""Fast fine-tuning: train the top blocks and the head on the frozen bottom's cached output.

:func:`prepare_cached_top` decides, for one ``top:N`` phase, whether the backbone can be cut
below its trainable blocks (:func:`core.models.cut.find_cut`), whether the cache fits the disk
budget, and builds (or reuses) the cache (:mod:`core.training.activations`). When it cannot,
it says why in one sentence and the phase trains the whole network as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.config import parse_trainable
from core.training.activations import (
    ActivationCache,
    activation_key,
    budget_bytes,
    cache_bytes,
    cached_activations,
    describe_bytes,
    weights_digest,
)

if TYPE_CHECKING:
    import keras

    from core.config import TrainConfig
    from core.training.context import RunContext
    from core.training.distribute import Distribution


@dataclass
class CachedTop:
    """The trainable top of a cut model and the cached activations it trains on.

    Attributes:
        top: Activation at the cut -> probabilities, sharing the full model's layers.
        cache: The cached activations of the training (or their views) and validation images.
        bottom: Images -> activation at the cut (the frozen part), sharing the same layers.
        batch_size: Images per forward pass of ``bottom`` when the cache was made (its
            compiled step is reused at that size).
    """

    top: keras.Model
    cache: ActivationCache
    bottom: keras.Model
    batch_size: int


@dataclass(frozen=True)
class FastFinetuneDecision:
    """Whether a phase fine-tunes on cached activations, and why (not).

    Attributes:
        applies: True when the phase trains on cached activations.
        reason: One sentence for the user.
        cached: The top model and cache when it applies.
    """

    applies: bool
    reason: str
    cached: CachedTop | None = None


def prepare_cached_top(
    config: TrainConfig,
    ctx: RunContext,
    data: Any,
    model: keras.Model,
    trainable: str,
    dist: Distribution,
) -> FastFinetuneDecision:
    """Builds or reuses the activation cache of a ``top:N`` phase, when it can be used.

    Args:
        config: The run's settings (augmentation, seed, batch size).
        ctx: The run's context (progress, cancel, summary).
        data: The run's :class:`core.training.prepare.TrainingData`.
        model: The transfer model with ``trainable`` applied.
        trainable: What trains in this phase.
        dist: The devices the run trains on.

    Returns:
        A :class:`FastFinetuneDecision`.
    """
    from core.models.cut import find_cut, split_at_cut
    from core.training.embeddings import augmented_extractor

    policy, _ = parse_trainable(trainable)
    if policy != "top":
        return FastFinetuneDecision(
            False, "Everything trains, so every epoch runs the whole network."
        )
    if dist.distributed:
        return FastFinetuneDecision(
            False,
            "The frozen part's output is cached for one device; with several devices every "
            "epoch runs the whole network.",
        )
    plan = find_cut(model, trainable)
    if not plan.possible:
        return FastFinetuneDecision(False, plan.reason)
    augment = config.model.augment
    views = augment.views if augment.enabled else 0
    need = cache_bytes(plan.values_per_image, len(data.train_rows), len(data.val_rows), views=views)
    budget = budget_bytes()
    if need > budget:
        return FastFinetuneDecision(
            False,
            f"Caching the frozen part's output would take {describe_bytes(need)}, more than "
            f"the {describe_bytes(budget)} allowed on this disk: every epoch runs the whole "
            "network (fewer trainable blocks, a smaller image size or fewer augmented copies "
            "make the cache smaller).",
        )
    estimate = FastFinetuneDecision(
        True,
        f"{plan.reason} About {describe_bytes(need)} on disk ({describe_bytes(budget)} allowed).",
    )
    ctx.note(fast_finetune_note(estimate))
    bottom, top = split_at_cut(model, plan)
    key = activation_key(
        data.fingerprint,
        config.model.backbone,
        config.model.image_size,
        plan.block,
        weights_digest(bottom),
        augment=augment if views else None,
        seed=config.seed,
    )
    ctx.set(phase="embedding", message="Caching the frozen part's output once.")
    names = data.cache.images
    batch_size = min(64, max(8, config.batch_size))
    cache = cached_activations(
        bottom,
        top,
        data.cache.array,
        data.train_rows,
        data.val_rows,
        [names[row] for row in data.train_rows],
        [names[row] for row in data.val_rows],
        key,
        augmented_bottom=augmented_extractor(model, augment, config.seed, through=bottom)
        if views
        else None,
        views=views,
        batch_size=batch_size,
        progress=ctx.progress,
        should_stop=ctx.token.raise_if_set,
    )
    images = len(data.train_rows) * max(views, 1) + len(data.val_rows)
    ctx.summary.update(
        {
            "fast_finetune": True,
            "activation_block": plan.block,
            "activation_shape": list(plan.shape),
            "activation_cache": str(cache.folder),
            "activation_cache_bytes": cache.nbytes,
            "activation_dtype": cache.dtype,
            "activation_views": views,
            "activation_seconds": round(cache.seconds, 3),
            "activation_reused": cache.reused,
            "activation_images_per_second": round(images / cache.seconds, 2)
            if cache.seconds and not cache.reused
            else None,
        }
    )
    reason = f"{plan.reason} Kept on disk: {describe_bytes(cache.nbytes)}."
    return FastFinetuneDecision(True, reason, CachedTop(top, cache, bottom, batch_size))


def fast_finetune_note(decision: FastFinetuneDecision) -> str:
    """The run's note about fast fine-tuning: that it applies, or why it does not."""
    reason = decision.reason[:1].lower() + decision.reason[1:]
    return f"{'Fast fine-tuning' if decision.applies else 'No fast fine-tuning'}: {reason}"
