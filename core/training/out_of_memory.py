"""Out-of-memory failures: recognise them across backends, and retry at a smaller batch.

A step that does not fit in memory fails with a backend-specific error (TensorFlow's
``ResourceExhaustedError``, JAX's ``RESOURCE_EXHAUSTED``, PyTorch's ``OutOfMemoryError``, or
Python's ``MemoryError``). The trainer retries such a phase at half the batch size, down to
:data:`MIN_BATCH_SIZE`, and says so in the run's notes; below that the run fails with advice.
"""

from __future__ import annotations

#: The smallest batch size an out-of-memory retry goes down to.
MIN_BATCH_SIZE = 4


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is an allocation failure of any backend."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if "ResourceExhausted" in type(current).__name__:
            return True
        text = str(current)
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            return True
        if "OOM when allocating" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def out_of_memory_message(batch_size: int, phase: str = "") -> str:
    """The sentence shown when a run ran out of memory."""
    where = {
        "loading": " while building the model",
        "caching": " while caching images",
        "embedding": " while computing embeddings",
    }.get(phase, "")
    return (
        f"Out of memory at batch size {batch_size}{where}; try {max(1, batch_size // 2)}, "
        "or a smaller image size, backbone or head."
    )


def smaller_batch(error: BaseException, batch_size: int) -> int | None:
    """The batch size to retry at after ``error``, or None when a retry would not help.

    Args:
        error: What the phase raised.
        batch_size: The batch size it ran at.

    Returns:
        ``batch_size // 2`` when ``error`` is an out-of-memory failure and the half is at
        least :data:`MIN_BATCH_SIZE`; None otherwise.
    """
    if not is_out_of_memory(error):
        return None
    half = batch_size // 2
    return half if half >= MIN_BATCH_SIZE else None
