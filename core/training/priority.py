"""The training worker's CPU priority: below the app's, so clicks stay quick while it trains.

A process's nice value only orders it against processes of its own scheduling group. On
Linux with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on by
default in many distributions), every session is its own group, and groups share the CPU
equally whatever their processes' nice values. The worker runs in a session of its own (so
that a signal to the app does not reach it), so its nice value alone would not make it yield
to the app: the group's nice has to be lowered as well.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")
MAX_NICENESS = 19


def lower_priority(niceness: int, *, autogroup: Path = AUTOGROUP) -> str | None:
    """Lowers this process's CPU priority by ``niceness``, and its session's when it leads one.

    Args:
        niceness: How much to lower it, 0 to 19 (19 is the lowest priority).
        autogroup: The process's autogroup file (tests pass another path).

    Returns:
        None when both were lowered (or there is no autogroup to lower: not Linux, or the
        process does not lead its session, whose group is then its parent's); otherwise
        why the group could not be lowered, for the run's log.

    Raises:
        ValueError: If ``niceness`` is not an integer from 0 to 19.
    """
    if isinstance(niceness, bool) or not isinstance(niceness, int):
        raise ValueError(f"niceness must be an integer from 0 to 19. Received: {niceness!r}")
    if not 0 <= niceness <= MAX_NICENESS:
        raise ValueError(f"niceness must be from 0 to {MAX_NICENESS}. Received: {niceness}")
    if niceness == 0:
        return None
    os.nice(niceness)
    if os.getsid(0) != os.getpid() or not autogroup.exists():
        # Not a session leader: the group is shared with the parent (lowering it would slow
        # the app too). No file: no autogroup scheduling here, the nice value is enough.
        return None
    try:
        autogroup.write_text(f"{niceness}\n")
    except OSError as error:
        return f"could not lower the CPU priority of the worker's session ({autogroup}): {error}"
    return None
