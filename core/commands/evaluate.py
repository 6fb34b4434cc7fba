"""``python -m core evaluate``: metrics of a finished run on its validation or test split."""

from __future__ import annotations

import argparse
import contextlib
import sys

from core.cli import EXIT_OK, CommandError, emit_json, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, per-class metrics and confusion matrix of a run",
        description="Evaluates a finished run on its dataset's val or test split.",
    )
    parser.add_argument("--run", required=True, help="run folder or run id")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    parser.add_argument(
        "--predictions", action="store_true", help="include one record per image in the JSON"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``evaluate``."""
    from core.runs.evaluate import evaluate

    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluate(
                args.run,
                args.split,
                batch_size=args.batch_size,
                use_cache=not args.no_cache,
                progress=lambda done, total, _m: progress(f"evaluated {done}/{total}"),
            )
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    data = result.to_dict()
    if not args.predictions:
        data.pop("predictions")
    if args.json:
        emit_json(data)
        return EXIT_OK
    print(f"{result.run_id} on {result.split}: accuracy {result.accuracy:.4f} (n={result.n})")
    for label, row in result.per_class.items():
        print(
            f"  {label:>20}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
            f"f1 {row['f1']:.3f}  support {row['support']}"
        )
    return EXIT_OK
