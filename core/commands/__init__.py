"""Command modules of the CLI, in the order ``--help`` lists them.

Each module defines ``register(subparsers)``; see :mod:`core.cli`.
"""

COMMAND_MODULES: list[str] = [
    "core.commands.inspect",
    "core.commands.ingest",
    "core.commands.backbones",
    "core.commands.train",
    "core.commands.lr_find",
    "core.commands.runs",
    "core.commands.evaluate",
    "core.commands.predict",
    "core.commands.export",
    "core.commands.app",
    "core.commands.users",
]
