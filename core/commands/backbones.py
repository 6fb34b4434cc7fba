"""``python -m core backbones``: list the registered backbones and their weights status."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``backbones`` command."""
    parser = subparsers.add_parser(
        "backbones",
        help="list pretrained backbones and whether their weights are available",
        description=(
            "List every registered backbone with its input sizes, preprocessing, size, "
            "ImageNet top-1 and whether its ImageNet weights are bundled, cached, "
            "downloadable or unavailable right now. Works offline."
        ),
    )
    parser.add_argument("--json", action="store_true", help="Print one line of JSON.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from core.cli import EXIT_OK, emit_json
    from core.models.weights import describe_backbones

    rows = describe_backbones()
    if args.json:
        emit_json({"backbones": rows})
        return EXIT_OK
    header = f"{'name':20} {'input':>5} {'prep':6} {'params':>11} {'top1':>5}  weights"
    print(header)
    for row in rows:
        marker = " (default)" if row["default"] else ""
        print(
            f"{row['name']:20} {row['default_size']:>5} {row['preprocessing']:6} "
            f"{row['params']:>11,} {row['imagenet_top1']:>5.1f}  {row['weights_status']}{marker}"
        )
    return EXIT_OK
