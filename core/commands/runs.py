"""``python -m core runs | status RUN | cancel RUN | resume RUN``: manage training runs.

RUN is a run id (folder name under workspace/runs, or under ``--runs-dir``) or the path
of a run folder.
"""

from __future__ import annotations

import argparse

from core.cli import EXIT_OK, CommandError, emit_json, progress


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``runs``, ``status``, ``cancel`` and ``resume`` commands."""
    runs = subparsers.add_parser("runs", help="List training runs, newest first.")
    runs.add_argument("--runs-dir", help="Folder holding runs (default workspace/runs).")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=handle_runs)

    status = subparsers.add_parser("status", help="Show a run's status and summary.")
    status.add_argument("run", metavar="RUN")
    status.add_argument("--runs-dir")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=handle_status)

    cancel = subparsers.add_parser("cancel", help="Stop a queued or running run.")
    cancel.add_argument("run", metavar="RUN")
    cancel.add_argument("--runs-dir")
    cancel.add_argument("--no-wait", action="store_true", help="Return without waiting.")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(handler=handle_cancel)

    resume = subparsers.add_parser(
        "resume", help="Continue an interrupted, failed or cancelled run from its last epoch."
    )
    resume.add_argument("run", metavar="RUN")
    resume.add_argument("--runs-dir")
    resume.add_argument(
        "--background", action="store_true", help="Start a worker process and return at once."
    )
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(handler=handle_resume)


def _folder(args: argparse.Namespace):
    from core.runs.store import find_run

    try:
        return find_run(args.run, args.runs_dir)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from error


def handle_runs(args: argparse.Namespace) -> int:
    """Handler of ``runs``."""
    from core.runs.listing import list_runs

    runs = list_runs(args.runs_dir)
    if args.json:
        emit_json([run.to_dict() for run in runs])
        return EXIT_OK
    for run in runs:
        summary = run.summary if isinstance(run.summary, dict) else {}
        best_text = ""
        for key, label in (("val_accuracy", "val acc"), ("test_accuracy", "test acc")):
            value = summary.get(key)
            if key == "val_accuracy" and not isinstance(value, float):
                value = summary.get("best_val_accuracy")  # runs made before it was recorded
            if isinstance(value, float):
                best_text += f"  {label} {value:.3f}"
        print(
            f"{run.run_id}  {run.status.state:<11} epoch {run.status.epoch}/"
            f"{run.status.total_epochs}{best_text}"
        )
    return EXIT_OK


def handle_status(args: argparse.Namespace) -> int:
    """Handler of ``status``."""
    from core.runs.store import read_status, read_summary

    folder = _folder(args)
    status = read_status(folder)
    if args.json:
        emit_json(
            {
                "run_id": folder.name,
                "run_dir": str(folder),
                **status.to_dict(),
                "summary": read_summary(folder),
            }
        )
    else:
        print(
            f"{folder.name}: {status.state} ({status.phase or '-'}) epoch {status.epoch}/"
            f"{status.total_epochs} step {status.step}/{status.steps_per_epoch}. "
            f"{status.message}"
        )
    return EXIT_OK


def handle_cancel(args: argparse.Namespace) -> int:
    """Handler of ``cancel``."""
    from core.training.jobs import cancel_run

    folder = _folder(args)
    status = cancel_run(str(folder), wait=not args.no_wait)
    if args.json:
        emit_json({"run_id": folder.name, "run_dir": str(folder), **status.to_dict()})
    else:
        progress(f"{folder.name}: {status.state}. {status.message}")
    return EXIT_OK


def handle_resume(args: argparse.Namespace) -> int:
    """Handler of ``resume``."""
    from core.commands.train import result_of, run_foreground
    from core.training.jobs import prepare_resume, resume_run

    folder = _folder(args)
    try:
        if args.background:
            resume_run(str(folder))
            emit_json(result_of(folder)) if args.json else progress(f"resumed {folder.name}")
            return EXIT_OK
        prepare_resume(str(folder))
    except ValueError as error:
        raise CommandError(str(error)) from error
    return run_foreground(folder, resume=True, as_json=args.json)
