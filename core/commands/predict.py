"""``python -m core predict``: classify image files with a finished run's model."""

from __future__ import annotations

import argparse
import contextlib
import sys

from core.cli import EXIT_FAILED, EXIT_OK, CommandError, emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``predict`` command."""
    parser = subparsers.add_parser(
        "predict",
        help="classify image files with a run's model",
        description="Predicts the class of each FILE. Unreadable files get an 'error' entry.",
    )
    parser.add_argument("--run", required=True, help="run folder or run id")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``predict``: exit 0 when at least one file was predicted."""
    from core.runs.predict import load_run_model, predict_sources

    try:
        with contextlib.redirect_stdout(sys.stderr):
            run_model = load_run_model(args.run)
            results = predict_sources(run_model, args.files, k=args.top_k)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    for entry in results:
        entry.pop("top_k", None)
    if args.json:
        emit_json(results)
    else:
        for entry in results:
            if "error" in entry:
                print(f"{entry['file']}: error: {entry['error']}")
            else:
                print(f"{entry['file']}: {entry['label']} ({entry['confidence']:.3f})")
    return EXIT_OK if any("error" not in entry for entry in results) else EXIT_FAILED
