"""``python -m core ingest PATH --name NAME``: build a dataset in the workspace."""

from __future__ import annotations

import argparse

from core.cli import EXIT_OK, CommandError
from core.commands.inspect import (
    StderrProgress,
    add_source_arguments,
    limits_from_args,
    one_line,
    print_report,
)


def run(args: argparse.Namespace) -> int:
    """Handler of ``ingest``."""
    from core.data.ingest import DatasetError, ingest

    try:
        report = ingest(
            args.path,
            name=args.name,
            val_fraction=args.val_split,
            test_fraction=args.test_split,
            seed=args.seed,
            limits=limits_from_args(args),
            progress=StderrProgress("ingest"),
        )
    except DatasetError as error:
        if error.report is not None:
            print_report(error.report, args)
        raise CommandError(one_line(str(error))) from error
    except ValueError as error:
        raise CommandError(one_line(str(error))) from error
    print_report(report, args)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``ingest`` command."""
    parser = subparsers.add_parser(
        "ingest",
        help="build a dataset from a folder, .zip or labels CSV of images",
        description=(
            "Validates and normalises every image, skips duplicates, splits train/val/test "
            "(stratified, seeded) and stores the dataset in the workspace. Prints the report "
            "with dataset_id and dataset_dir. Exit 2 when no dataset can be made."
        ),
    )
    add_source_arguments(parser)
    parser.add_argument("--name", default=None, help="dataset name (default: the folder name)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split")
    parser.set_defaults(handler=run)
