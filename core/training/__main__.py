"""The worker's entry point: ``python -m core.training RUN_DIR [--resume] [--nice N]``.

:func:`core.training.jobs.start_run` launches this in a new process for a run folder made
by :func:`core.runs.store.create_run`; the process trains that run and owns its folder until
it ends. People start runs with ``python -m core train`` (or the app), not with this.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.training.priority import MAX_NICENESS, lower_priority

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    """Trains one run folder in this process; exit 0 when it completed, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m core.training",
        description="Training worker: trains the run in RUN_DIR (made by create_run).",
    )
    parser.add_argument("run_dir", help="The run folder (holds config.json).")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run.")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="Lower this process's CPU priority by N (0-19): the app stays quick while it trains.",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.nice <= MAX_NICENESS:
        parser.error(f"--nice must be between 0 and {MAX_NICENESS}, got {args.nice}")
    folder = Path(args.run_dir).resolve()
    if not (folder / "config.json").is_file():
        sys.stderr.write(f"error: run folder {str(folder)!r} holds no config.json\n")
        return 2

    # Before the training code (and TensorFlow, with its threads) is even imported.
    problem = lower_priority(args.nice)
    if problem:
        sys.stderr.write(f"warning: {problem}\n")
    from core.training.worker import run_worker

    final = run_worker(folder, resume=args.resume)
    sys.stdout.write(
        json.dumps({"run_id": folder.name, "state": final.state, "message": final.message}) + "\n"
    )
    return 0 if final.state == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
