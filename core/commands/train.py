"""``python -m core train``: train a model in the foreground (or start a background run).

Examples::

    python -m core train --data photos/ --backbone efficientnet_lite0 --epochs 5 --json
    python -m core train --config my_config.json --json
    python -m core train --data DATASET_ID --background --json   # returns at once

The last line of stdout (with ``--json``) is the run's summary: run_id, run_dir, state,
epochs_completed, metrics, best_val_accuracy, val_accuracy and test_accuracy (of the saved,
restored best model), settings (the epochs, learning rate and patience used, and which were
auto), images_per_second, num_train, num_val, num_test, classes, seconds. Settings left
out are auto: with the backbone frozen the head trains until validation loss stops
improving. Exit 0 completed, 1 failed or cancelled, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from core.cli import EXIT_FAILED, EXIT_OK, CommandError, emit_json, progress

RESULT_KEYS = (
    "epochs_completed",
    "metrics",
    "best_epoch",
    "best_val_accuracy",
    "val_accuracy",
    "test_accuracy",
    "settings",
    "images_per_second",
    "num_train",
    "num_val",
    "num_test",
    "classes",
    "seconds",
    "device",
    "fast_path",
    "strategy",
    "replicas",
    "workers",
    "weights_sha256",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="Train a model (foreground, or --background to queue a worker).",
        description="Train a transfer-learning model on a dataset or an image folder/zip.",
    )
    add_config_arguments(parser)
    devices = parser.add_argument_group("devices")
    devices.add_argument(
        "--cpu-replicas",
        type=int,
        metavar="N",
        help="Split the CPU into N logical devices and train with MirroredStrategy over them "
        "(tests the multi-device path without GPUs; also TRANSFER_STUDIO_CPU_REPLICAS). With "
        "TF_CONFIG set, every worker runs this command and worker 0 writes the run.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--runs-dir", help="Folder for the run folder (default workspace/runs).")
    run.add_argument(
        "--background", action="store_true", help="Start a worker process and return at once."
    )
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    parser.set_defaults(handler=handle)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags that describe a TrainConfig (shared by ``train`` and ``lr-find``)."""
    source = parser.add_argument_group("what to train on")
    source.add_argument("--data", help="Dataset id, or a folder/zip of class folders to ingest.")
    source.add_argument("--config", help="A TrainConfig JSON file (e.g. a run's config.json).")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", help="Backbone name (see `python -m core backbones`).")
    model.add_argument("--weights", help="imagenet, none or a .weights.h5 file.")
    model.add_argument("--image-size", type=int, help="Input side in pixels.")
    model.add_argument("--trainable", help="head, top:N or all.")
    model.add_argument("--dropout", type=float)
    model.add_argument("--augment", action="store_true", help="Standard photo augmentation.")
    model.add_argument(
        "--augment-views",
        type=int,
        metavar="K",
        help="Augmented views of each training image embedded once when only the head "
        "trains (default 4).",
    )
    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=int, help="Epoch cap of the first phase (default: auto).")
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--learning-rate", type=float, help="Default: auto (chosen for what trains).")
    fit.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop.")
    fit.add_argument("--weight-decay", type=float)
    fit.add_argument("--schedule", help="constant, cosine or reduce_on_plateau.")
    fit.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="Epochs without val_loss improvement before stopping; 0 = off (default: auto, "
        "on for a head-only first phase).",
    )
    fit.add_argument("--label-smoothing", type=float)
    fit.add_argument("--class-weights", help="off or balanced.")
    fit.add_argument("--fine-tune-epochs", type=int)
    fit.add_argument("--fine-tune-trainable", help="top:N or all (second phase).")
    fit.add_argument("--fine-tune-lr-mult", type=float)
    fit.add_argument("--mixed-precision", action="store_true")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--name", help="A label for the run.")
    fit.add_argument(
        "--init-from",
        metavar="RUN",
        help="Start from this finished run's trained model (same backbone and image size; "
        "new classes get fresh outputs, removed ones are dropped).",
    )


_MODEL_FLAGS = {
    "backbone": "backbone",
    "weights": "weights",
    "image_size": "image_size",
    "trainable": "trainable",
    "dropout": "dropout",
}
_TRAIN_FLAGS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "schedule": "schedule",
    "early_stopping": "early_stopping_patience",
    "label_smoothing": "label_smoothing",
    "class_weights": "class_weights",
    "fine_tune_epochs": "fine_tune_epochs",
    "fine_tune_trainable": "fine_tune_trainable",
    "fine_tune_lr_mult": "fine_tune_lr_mult",
    "seed": "seed",
    "name": "name",
    "init_from": "init_from",
}


def _resolve_dataset(data: str) -> str:
    """Returns a dataset id for ``--data``: an existing id, or the id of a fresh ingest."""
    path = Path(data).expanduser()
    if path.exists() and (path.is_dir() or path.is_file()):
        from core.data.ingest import ingest

        progress(f"Ingesting {path} ...")
        try:
            report = ingest(
                path,
                name=path.stem or path.name,
                progress=lambda done, total, msg: None,
            )
        except ValueError as error:
            raise CommandError(f"cannot use {data!r} as a dataset: {error}") from error
        if getattr(report, "error", None) or not getattr(report, "dataset_id", None):
            raise CommandError(f"cannot use {data!r} as a dataset: {report.error}")
        progress(f"Ingested {report.num_images} images as dataset {report.dataset_id}.")
        return report.dataset_id
    from core.data.store import load_dataset

    try:
        return load_dataset(data).id
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise CommandError(
            f"--data must be a dataset id, a folder or a zip file. Received: {data!r} ({error})"
        ) from error


def build_config(args: argparse.Namespace):
    """The TrainConfig the flags describe (``--config`` first, flags override it)."""
    from core.config import AugmentConfig, TrainConfig

    try:
        base = TrainConfig.load(args.config).to_dict() if args.config else None
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as error:
        raise CommandError(f"cannot read --config {args.config!r}: {error}") from error
    if base is None:
        if not args.data:
            raise CommandError("give --data DATASET_OR_FOLDER or --config FILE")
        base = {"dataset": "pending", "model": {}}
    model = dict(base.get("model") or {})
    for flag, key in _MODEL_FLAGS.items():
        if getattr(args, flag) is not None:
            model[key] = getattr(args, flag)
    if args.augment:
        model["augment"] = AugmentConfig.standard().__dict__
    if args.augment_views is not None:
        model["augment"] = {**(model.get("augment") or {}), "views": args.augment_views}
    base["model"] = model
    for flag, key in _TRAIN_FLAGS.items():
        if getattr(args, flag) is not None:
            base[key] = getattr(args, flag)
    if args.mixed_precision:
        base["mixed_precision"] = True
    try:
        config = TrainConfig.from_dict(base)
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    if args.data:
        config = config.replace(dataset=_resolve_dataset(args.data))
    if config.init_from:
        config = _check_parent(config, args.runs_dir)
    return config


def _check_parent(config: Any, runs_dir: str | None) -> Any:
    """Refuses (exit 2) a parent run that cannot start this run, before anything trains."""
    from core.data.store import DatasetError, load_dataset
    from core.runs.lineage import IncompatibleParentError, plan_start

    try:
        classes = list(load_dataset(config.dataset).classes)
        plan = plan_start(config, classes, root=runs_dir)
    except (IncompatibleParentError, DatasetError) as error:
        raise CommandError(str(error)) from error
    progress(plan.sentence())
    return config.replace(init_from=str(plan.parent_dir))


def result_of(folder: Path) -> dict[str, Any]:
    """The JSON result of a run: id, folder, state and the summary's key facts."""
    from core.runs.store import read_status, read_summary

    status = read_status(folder)
    summary = read_summary(folder) or {}
    result = {
        "run_id": folder.name,
        "run_dir": str(folder),
        "state": status.state,
        "message": status.message,
    }
    for key in RESULT_KEYS:
        result[key] = summary.get(key)
    if result["epochs_completed"] is None:
        result["epochs_completed"] = status.epoch
    return result


def echo_event(event: dict[str, Any]) -> None:
    """Prints epoch events and notes as progress lines on stderr."""
    if event.get("type") == "epoch":
        parts = [f"epoch {event['epoch']}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if event.get(key) is not None:
                parts.append(f"{key} {event[key]:.4f}")
        parts.append(f"{event['seconds']:.1f}s")
        progress("  ".join(parts))
    elif event.get("type") == "note":
        progress(f"note: {event['message']}")


def run_foreground(folder: Path, *, resume: bool, as_json: bool) -> int:
    """Runs the worker for ``folder`` in this process and reports like the CLI contract."""
    from core.training.worker import run_worker

    final = run_worker(folder, resume=resume, echo=None if as_json else echo_event)
    result = result_of(folder)
    if as_json:
        emit_json(result)
    else:
        progress(f"run {result['run_id']}: {final.state}. {final.message}")
    if final.state == "completed":
        return EXIT_OK
    progress(f"error: {final.message}")
    return EXIT_FAILED


def _set_cpu_replicas(value: int | None) -> None:
    from core.training.distribute import CPU_REPLICAS_ENV

    if value is None:
        return
    if not 1 <= value <= 64:
        raise CommandError(f"--cpu-replicas must be 1 to 64. Received: {value}")
    # Through the environment: a background worker inherits it, and the strategy is made
    # when the training process starts.
    os.environ[CPU_REPLICAS_ENV] = str(value)
    if value > 1:
        # The JAX backend takes its CPU device count from XLA before it starts.
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={value}"


def run_as_cluster_worker(config: Any, index: int, *, as_json: bool) -> int:
    """Trains as a non-chief worker of a multi-worker run, writing nothing into the runs.

    The worker takes part in every step, but keeps its status, metrics and model in a
    folder of its own that is deleted at the end; it prints one JSON line with
    ``"role": "worker"``. Only the chief (worker 0) writes the run folder.
    """
    import shutil
    import tempfile

    from core.runs.store import create_run, read_summary
    from core.training.worker import run_worker

    scratch = Path(tempfile.mkdtemp(prefix=f"transfer-studio-worker{index}-"))
    try:
        folder = create_run(config, scratch)
        final = run_worker(folder, echo=None if as_json else echo_event)
        summary = read_summary(folder) or {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # made above: ours to delete
    result = {
        "role": "worker",
        "index": index,
        "state": final.state,
        "message": final.message,
        **{
            key: summary.get(key) for key in ("strategy", "replicas", "workers", "epochs_completed")
        },
        "weights_sha256": summary.get("weights_sha256"),
    }
    if as_json:
        emit_json(result)
    else:
        progress(f"worker {index}: {final.state}. {final.message}")
    return EXIT_OK if final.state == "completed" else EXIT_FAILED


def handle(args: argparse.Namespace) -> int:
    """Handler of ``train``."""
    from core.runs.store import create_run, find_run
    from core.training.distribute import ClusterConfigError, read_cluster

    _set_cpu_replicas(args.cpu_replicas)
    try:
        cluster = read_cluster()
    except ClusterConfigError as error:
        raise CommandError(str(error)) from error
    config = build_config(args)
    if cluster is not None and args.background:
        raise CommandError("--background cannot be used with TF_CONFIG: run each worker itself")
    if cluster is not None and not cluster.is_chief:
        return run_as_cluster_worker(config, cluster.index, as_json=args.json)
    if args.background:
        from core.training.jobs import start_run

        run_id = start_run(config, root=args.runs_dir)
        folder = find_run(run_id, args.runs_dir)
        emit_json(result_of(folder)) if args.json else progress(f"started run {run_id}")
        return EXIT_OK
    folder = create_run(config, args.runs_dir)
    progress(f"run {folder.name} in {folder}")
    return run_foreground(folder, resume=False, as_json=args.json)
