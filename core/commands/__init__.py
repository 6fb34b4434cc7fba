"""Command modules of the CLI, in the order ``--help`` lists them.

Each module defines ``register(subparsers)``; see :mod:`core.cli`.
"""

COMMAND_MODULES: list[str] = [
]
