"""``python -m core lr-find``: sweep the learning rate and suggest one (fastai's ``lr_find``).

Examples::

    python -m core lr-find --data photos/ --json
    python -m core lr-find --data DATASET_ID --trainable top:2 --steps 80 --json
    python -m core lr-find --config run_config.json --json

The flags are those of ``train`` (what to train on, the model, the optimizer, the batch
size), plus the sweep's ``--steps``, ``--start-lr`` and ``--end-lr``. With the backbone
frozen the sweep trains the head on cached embeddings (seconds); otherwise it runs through
the model. The last line of stdout (with ``--json``) is the result: learning_rates, losses
(smoothed), raw_losses, suggestion, fast_path, trainable, steps, seconds, diverged.
Exit 0 done, 1 the sweep failed, 2 bad input.
"""

from __future__ import annotations

import argparse

from core.cli import EXIT_FAILED, EXIT_OK, CommandError, emit_json, progress
from core.commands.train import add_config_arguments, build_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``lr-find`` command."""
    parser = subparsers.add_parser(
        "lr-find",
        help="Sweep the learning rate and suggest one (loss vs learning rate).",
        description="Train a throw-away copy of the model while the learning rate rises "
        "exponentially; print the loss curve and a suggested learning rate.",
    )
    add_config_arguments(parser)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument(
        "--steps", type=int, help="Steps of the sweep (default 300 head only, 100 otherwise)."
    )
    sweep.add_argument("--start-lr", type=float, default=1e-7, help="First learning rate.")
    sweep.add_argument("--end-lr", type=float, default=10.0, help="Last learning rate.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    parser.set_defaults(handler=handle)


def _text_curve(result) -> None:
    """A few rows of the curve and the suggestion, for a person at a terminal."""
    count = len(result.learning_rates)
    for index in sorted({int(i) for i in range(0, count, max(1, count // 12))} | {count - 1}):
        progress(f"  lr {result.learning_rates[index]:9.2e}   loss {result.losses[index]:.4f}")
    how = (
        "head on cached embeddings"
        if result.fast_path
        else f"through the model ({result.trainable})"
    )
    progress(
        f"suggested learning rate {result.suggestion:.2e} ({result.steps} steps, {how}, "
        f"{result.seconds:.1f} s)"
    )


def handle(args: argparse.Namespace) -> int:
    """Handler of ``lr-find``."""
    from core.training.context import TrainingCancelled
    from core.training.lr_find import lr_find, rate_schedule

    config = build_config(args)
    try:
        rate_schedule(args.start_lr, args.end_lr, args.steps if args.steps is not None else 100)
    except ValueError as error:
        raise CommandError(str(error)) from error
    last = {"message": ""}

    def report(done: int, total: int, message: str) -> None:
        if message != last["message"]:
            last["message"] = message
            progress(message + ("" if not total else f" ({total})"))

    try:
        result = lr_find(
            config,
            start_lr=args.start_lr,
            end_lr=args.end_lr,
            steps=args.steps,
            progress=report,
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise CommandError(str(error)) from error
    except TrainingCancelled:
        progress("error: the sweep was cancelled")
        return EXIT_FAILED
    if args.json:
        emit_json(result.to_dict())
    else:
        _text_curve(result)
    return EXIT_OK
