"""The headless command line: ``python -m core <command> ...`` or ``transfer-studio <command>``.

Each command lives in its own module under ``core.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``handler(args) -> int`` (the exit code). Command modules import heavy libraries
(TensorFlow, Keras) inside their handlers, so ``python -m core --help`` stays fast.

Exit codes: 0 success, 1 the work ran and failed (e.g. a training run failed),
2 bad input (with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from typing import Any

from core.commands import COMMAND_MODULES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """An error a command reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def emit_json(obj: Any) -> None:
    """Prints ``obj`` as one line of JSON on stdout (the last line a command prints)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """Writes a progress line to stderr (stdout is reserved for results)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    """Builds the top-level parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="transfer-studio",
        description="Transfer Studio engine: ingest images, train, evaluate and export models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command and returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_OK
    try:
        return int(args.handler(args))
    except CommandError as error:
        sys.stderr.write(f"error: {one_line(str(error))}\n")
        return error.exit_code
    except OSError as error:
        sys.stderr.write(f"error: {os_error_line(error)}\n")
        return EXIT_BAD_INPUT
    except ValueError as error:  # damaged files (CorruptFileError), refused models, bad values
        sys.stderr.write(f"error: {one_line(str(error) or type(error).__name__)}\n")
        return EXIT_BAD_INPUT


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line, cut to ``limit`` characters (messages never print a traceback)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def os_error_line(error: OSError) -> str:
    """One sentence for a file-system error: what failed, on which path, and what to do.

    Args:
        error: The error.

    Returns:
        The sentence.
    """
    name = str(error.filename) if error.filename is not None else ""
    shown = name if len(name) <= 120 else name[:60] + "…" + name[-40:]
    reason = error.strerror or str(error)
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        home = os.environ.get("TRANSFER_STUDIO_HOME") or "./workspace"
        return one_line(
            f"cannot write {shown!r}: {reason}. The workspace ({home}) must be writable; set "
            "TRANSFER_STUDIO_HOME to a folder you can write to."
        )
    if error.errno == errno.ENAMETOOLONG:
        return one_line(
            f"a name is too long for the file system ({len(name)} characters): {shown!r}"
        )
    if error.errno == errno.ENOSPC:
        return one_line(f"the disk is full while writing {shown!r}; free some space and retry.")
    return one_line(f"{reason}: {shown!r}" if shown else reason)
