"""``python -m core inspect PATH``: check a folder, zip or labels CSV without storing anything."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from core.cli import EXIT_OK, CommandError, emit_json, progress

if TYPE_CHECKING:
    from core.data.ingest import IngestLimits, IngestReport

_PROGRESS_EVERY_S = 0.5


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``inspect`` and ``ingest``."""
    parser.add_argument("path", help="a folder of class folders, a .zip, or a filename,label CSV")
    parser.add_argument(
        "--val-split", type=float, default=0.15, help="share of each class for validation"
    )
    parser.add_argument(
        "--test-split", type=float, default=0.15, help="share of each class for the final test"
    )
    parser.add_argument(
        "--max-file-mb",
        type=float,
        default=None,
        help="largest single image file in MiB (default 64)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as one JSON line on stdout"
    )


def limits_from_args(args: argparse.Namespace) -> IngestLimits:
    """Builds :class:`core.data.ingest.IngestLimits` from the shared arguments."""
    from core.data.ingest import IngestLimits

    if args.max_file_mb is None:
        return IngestLimits()
    if args.max_file_mb <= 0:
        raise CommandError(f"--max-file-mb must be positive. Received: {args.max_file_mb}")
    return IngestLimits(max_file_bytes=int(args.max_file_mb * 1024 * 1024))


class StderrProgress:
    """A progress callback that prints at most every half second (and at the end)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.last = 0.0

    def __call__(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done in (0, total) or now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            percent = 100 * done // total if total else 100
            progress(f"{self.verb}: {done}/{total} files ({percent}%)")


def print_report(report: IngestReport, args: argparse.Namespace) -> None:
    """Prints the report: JSON on the last stdout line with ``--json``, else a summary."""
    if args.json:
        emit_json(report.to_dict())
        return
    print(f"source: {report.source}")
    print(f"images: {report.num_images} in {len(report.classes)} classes")
    for label, count in report.classes.items():
        print(f"  {label}: {count}")
    if report.dataset_id:
        print(f"dataset: {report.dataset_id} ({report.dataset_dir})")
    for row in report.rejected:
        print(f"rejected: {row['file']}: {row['reason']}")
    for group in report.duplicates:
        print(f"duplicates: {' = '.join(group)}")
    for warning in report.warnings:
        print(f"warning: {warning}")


def one_line(text: str) -> str:
    """Collapses a message to one line (stderr errors are one line by contract)."""
    return " ".join(str(text).split())


def run(args: argparse.Namespace) -> int:
    """Handler of ``inspect``."""
    from core.data.ingest import inspect

    try:
        report = inspect(
            args.path,
            val_fraction=args.val_split,
            test_fraction=args.test_split,
            limits=limits_from_args(args),
            progress=StderrProgress("inspect"),
        )
    except ValueError as error:
        raise CommandError(one_line(str(error))) from error
    print_report(report, args)
    if report.error:
        raise CommandError(one_line(report.error))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``inspect`` command."""
    parser = subparsers.add_parser(
        "inspect",
        help="check a folder, .zip or labels CSV of images; writes nothing",
        description=(
            "Reads every image the way ingest would and reports classes, rejected files "
            "(with reasons), duplicates and warnings. Writes nothing. Exit 0 when the data "
            "can be trained on, 2 when it cannot."
        ),
    )
    add_source_arguments(parser)
    parser.set_defaults(handler=run)
