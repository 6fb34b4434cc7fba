"""``python -m core export``: export a run's model and check parity with the in-app model."""

from __future__ import annotations

import argparse
import contextlib
import sys

from core.cli import EXIT_FAILED, EXIT_OK, CommandError, emit_json, progress
from core.runs.formats import FORMATS

FORMAT_CHOICES = FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``export`` command."""
    parser = subparsers.add_parser(
        "export",
        help="export a run to keras / SavedModel / TFLite / ONNX / web, with a parity check",
        description=(
            "Exports a run's model to OUT, a self-contained folder (artifact, labels.txt, "
            "predict.py, pinned requirements.txt, model card README.md) plus OUT.zip, and runs "
            "the bundle's predict.py in a clean process on validation and test images. OUT must "
            "be new, empty, or a previous export of the same format; anything else is refused."
        ),
    )
    parser.add_argument("--run", required=True, help="run folder or run id")
    parser.add_argument("--format", required=True, choices=FORMAT_CHOICES, dest="fmt")
    parser.add_argument("--out", help="export folder (default: RUN/exports/FORMAT)")
    parser.add_argument(
        "--parity-images", type=int, default=200, help="most parity images per split"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``export``."""
    from core.runs.artifacts import BackendError
    from core.runs.export import export_run

    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = export_run(
                args.run, args.fmt, args.out, parity_limit=args.parity_images, progress=progress
            )
    except (FileNotFoundError, ValueError, BackendError) as error:
        # Includes ExportTargetError: OUT holds something the export did not write.
        raise CommandError(str(error)) from error
    except RuntimeError as error:  # conversion failed, or the bundle failed in a clean process
        raise CommandError(str(error), EXIT_FAILED) from error
    data = result.to_dict()
    if args.json:
        emit_json(data)
    else:
        parity = result.parity
        print(
            f"{result.format}: {result.path} ({result.bytes} bytes); parity top-1 "
            f"{parity['top1_agreement']:.3f}, max |diff| {parity['max_abs_diff']:.2e}, "
            f"n={parity['n']} (clean process, {parity['runtime']})"
        )
        print(f"bundle: {result.folder} (zip: {result.bundle})")
    return EXIT_OK
