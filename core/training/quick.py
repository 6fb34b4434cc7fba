"""Quick mode's engine: the class cards' pictures become a dataset, and a fast run starts.

Quick mode (a single page for classroom demos) keeps the pictures of each class card as draft
pictures (:mod:`core.data.drafts`) until Train is pressed. Train then makes the dataset from
them with the ordinary ingest, or adds them to the dataset Quick mode made before (the same
checks as the Data page), drops the drafts that are now in the dataset, and starts a run with
the fast defaults: the offline EfficientNet-Lite0, head only (backbone features computed once),
epochs, learning rate and patience on auto.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.config import ModelConfig, TrainConfig
from core.data import drafts, edits, ingest, store
from core.data.limits import ProgressFn
from core.data.report import IngestReport
from core.data.splits import min_images_per_class
from core.models.registry import DEFAULT_BACKBONE

#: Name of the datasets and runs Quick mode makes (how a later visit finds them again).
QUICK_NAME = "Quick mode"
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
#: The fewest pictures a class needs: one each to learn from, to check and to test.
MIN_PICTURES = min_images_per_class(VAL_FRACTION, TEST_FRACTION)


@dataclass
class DatasetUpdate:
    """What Train did to the dataset: its id, and one ingest report per batch of pictures."""

    dataset_id: str
    reports: list[IngestReport] = field(default_factory=list)

    @property
    def added(self) -> int:
        """How many pictures went into the dataset."""
        return sum(report.num_images for report in self.reports)

    @property
    def identical(self) -> int:
        """How many pictures were exact copies of another one, and so were kept only once."""
        return sum(len(group) - 1 for report in self.reports for group in report.duplicates)

    @property
    def rejected(self) -> list[dict]:
        """Every file the ingest refused, with why."""
        return [entry for report in self.reports for entry in report.rejected]


def quick_config(dataset_id: str) -> TrainConfig:
    """The run Quick mode starts: offline EfficientNet-Lite0, head only, auto settings.

    Args:
        dataset_id: The dataset to train on.
    """
    model = ModelConfig(backbone=DEFAULT_BACKBONE, weights="imagenet", trainable="head")
    return TrainConfig(dataset=dataset_id, model=model, name=QUICK_NAME)


def existing_dataset(dataset_id: str | None) -> store.Dataset | None:
    """The dataset ``dataset_id`` when it can be opened, else None (gone, or never made)."""
    if not dataset_id:
        return None
    try:
        return store.load_dataset(dataset_id)
    except (KeyError, ValueError, FileNotFoundError, OSError):
        return None


def card_counts(labels: Iterable[str], dataset_id: str | None = None) -> dict[str, int]:
    """Pictures per card: the drafts of its class plus the images the dataset already holds.

    Args:
        labels: The cards' class names.
        dataset_id: Quick mode's dataset, if it made one.
    """
    shots = drafts.list_shots()
    dataset = existing_dataset(dataset_id)
    stored = dataset.manifest["label"].value_counts().to_dict() if dataset is not None else {}
    return {label: len(shots.get(label, [])) + int(stored.get(label, 0)) for label in labels}


def rename_card(old: str, new: str, others: Sequence[str], dataset_id: str | None = None) -> str:
    """Renames a card's class: its draft pictures and, if there, its class in the dataset.

    Args:
        old: The card's current class name.
        new: The name typed.
        others: The class names of the other cards.
        dataset_id: Quick mode's dataset, if it made one.

    Returns:
        The new name as it is stored (cleaned).

    Raises:
        ValueError: If ``new`` is not a usable class name or another card already has it.
    """
    new = store.clean_label(new)
    if new == old:
        return new
    if new in others:
        raise ValueError(f"Another class is already called “{new}”: pick another name.")
    drafts.rename_shots(old, new)
    dataset = existing_dataset(dataset_id)
    if dataset is not None and old in dataset.classes:
        edits.rename_class(dataset.id, old, new)
    return new


def update_dataset(
    labels: Sequence[str], dataset_id: str | None = None, *, progress: ProgressFn | None = None
) -> DatasetUpdate:
    """Puts the cards' draft pictures into Quick mode's dataset (made on first use).

    The pictures go through the ingest (same checks as uploads on the Data page); the drafts
    that were read are deleted afterwards, as the Data page does once a dataset holds them.

    Args:
        labels: The cards' class names (cards without pictures are left out).
        dataset_id: The dataset made by an earlier Train, or None to make a new one.
        progress: ``progress(done, total, message)`` of the ingest.

    Returns:
        The dataset's id and the ingest reports.

    Raises:
        DatasetError: If the ingest refuses the pictures (fewer than 2 classes, a class too
            small) or the updated dataset cannot be trained on (the message says why).
    """
    shots = drafts.list_shots()
    taken = {label: shots[label] for label in labels if shots.get(label)}
    dataset = existing_dataset(dataset_id)
    if dataset is None:
        report = ingest.ingest(
            ingest.UploadSource(drafts.shots_as_files(taken)),
            name=QUICK_NAME,
            val_fraction=VAL_FRACTION,
            test_fraction=TEST_FRACTION,
            progress=progress,
        )
        update = DatasetUpdate(report.dataset_id, [report])
    else:
        update = DatasetUpdate(dataset.id)
        for label, files in drafts.shots_as_files(taken).items():
            update.reports.append(ingest.add_images(dataset.id, label, files, progress=progress))
    for paths in taken.values():
        for path in paths:
            drafts.delete_shot(path)
    problems = store.load_dataset(update.dataset_id).problems()
    if problems:
        raise store.DatasetError("The pictures cannot be trained on yet: " + "; ".join(problems))
    return update


def start_quick_run(dataset_id: str) -> str:
    """Starts Quick mode's run on ``dataset_id`` (it waits in the queue if another runs).

    Returns:
        The run id.
    """
    from core.training.jobs import start_run

    return start_run(quick_config(dataset_id))
