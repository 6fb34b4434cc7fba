"""The learning-rate finder (fastai's ``lr_find``): loss against an exponentially rising rate.

Starting from a tiny learning rate, each training step multiplies the rate by the same
factor, from ``start_lr`` to ``end_lr`` over ``steps`` steps, and records the loss. The
curve is flat where the rate is too small to learn, falls where the model learns, and
shoots up where the rate is too large. The suggested rate is fastai's "valley": a point in
the longest stretch of falling loss, a little past its start, where learning is fast and
still stable.

The sweep trains a throw-away copy of the configured model from its starting weights:

- **head only** (the fast path): on the cached backbone embeddings, so it takes seconds
  (and leaves the embeddings cached for the training run);
- anything else: through the whole model on the image cache, with what the config trains
  (``top:N`` or ``all``), which costs one training step per point.

:func:`lr_find` runs in the calling process; the app runs ``python -m core lr-find --json``
in a child process with :func:`lr_find_in_subprocess`, so the page never imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import TrainConfig
from core.training.context import CancelToken

Progress = Callable[[int, int, str], None]

START_LR = 1e-7
END_LR = 10.0
FAST_STEPS = 300
MODEL_STEPS = 100
# Stop once the smoothed loss is this many times its minimum: the rate is far too large.
DIVERGE_FACTOR = 4.0
SMOOTHING = 0.98
MIN_SUGGESTED, MAX_SUGGESTED = 1e-8, 10.0


@dataclass
class LrFindResult:
    """One sweep.

    Attributes:
        learning_rates: The rate of each step.
        losses: The smoothed training loss after each step (what the plot shows).
        raw_losses: The loss of each step's batch, unsmoothed.
        suggestion: The suggested learning rate (fastai's valley).
        fast_path: Whether the sweep trained the head on cached embeddings.
        trainable: What trained during the sweep (``head``, ``top:N``, ``all``).
        steps: Steps taken (fewer than asked when the loss diverged first).
        seconds: Wall time of the sweep (the embedding pass included).
        diverged: Whether the sweep stopped early because the loss shot up.
    """

    learning_rates: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    fast_path: bool
    trainable: str
    steps: int
    seconds: float
    diverged: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LrFindResult:
        """Rebuilds a result from :meth:`to_dict` output, checking its shape.

        Raises:
            ValueError: If ``data`` is not a dictionary of the expected fields and types.
        """
        if not isinstance(data, dict):
            raise ValueError(f"An lr-find result must be a JSON object. Received: {data!r:.80}")
        try:
            result = cls(**{key: data[key] for key in cls.__dataclass_fields__})
        except KeyError as error:
            raise ValueError(f"An lr-find result lacks the field {error}.") from error
        lengths = {len(result.learning_rates), len(result.losses), len(result.raw_losses)}
        if len(lengths) != 1 or not isinstance(result.suggestion, int | float):
            raise ValueError("An lr-find result has curves of different lengths or no rate.")
        return result


def rate_schedule(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """``steps`` learning rates rising exponentially from ``start_lr`` to ``end_lr``."""
    if not 0 < start_lr < end_lr:
        raise ValueError(
            f"start_lr and end_lr must satisfy 0 < start_lr < end_lr. Received: "
            f"start_lr={start_lr!r}, end_lr={end_lr!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 10 <= steps <= 10000:
        raise ValueError(f"steps must be an integer between 10 and 10000. Received: {steps!r}")
    return np.geomspace(start_lr, end_lr, steps)


def suggest_learning_rate(learning_rates: list[float], losses: list[float]) -> float:
    """fastai's "valley" suggestion on a (smoothed) loss curve.

    Finds the longest run of decreasing loss (longest decreasing subsequence by index) and
    returns the rate a little past a third of the way along it. Falls back to a tenth of the
    rate at the lowest loss when the curve is too short.

    Args:
        learning_rates: Rates in increasing order.
        losses: Loss at each rate.

    Returns:
        The suggested learning rate.
    """
    rates = np.asarray(learning_rates, dtype="float64")
    values = np.asarray(losses, dtype="float64")
    count = len(values)
    if count != len(rates) or count == 0:
        raise ValueError(
            f"learning_rates and losses must be non-empty and of equal length. Received: "
            f"{len(rates)} rates and {count} losses"
        )
    if count < 5:
        return float(rates[int(np.argmin(values))] / 10)
    lengths = np.ones(count, dtype=np.int64)
    best_start = best_end = 0
    for i in range(1, count):
        for j in range(i):
            if values[i] < values[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
        if lengths[best_end] < lengths[i]:
            best_end = i
            best_start = best_end - lengths[best_end]
    section = (best_end - best_start) / 3
    index = min(count - 1, max(0, best_start + int(section) + int(section / 2)))
    return float(rates[index])


class _SweepContext:
    """Enough of :class:`core.training.context.RunContext` for data loading and embeddings."""

    def __init__(self, progress: Progress | None, token: CancelToken) -> None:
        self.summary: dict[str, Any] = {}
        self.notes: list[str] = []
        self.token = token
        self._progress = progress

    def set(self, **fields: Any) -> None:
        if self._progress is not None and fields.get("message"):
            self._progress(0, 0, str(fields["message"]))

    def emit(self, event: dict[str, Any]) -> None:
        pass  # a sweep writes no run folder

    def note(self, message: str) -> None:
        self.notes.append(message)

    def progress(self, done: int, total: int, message: str) -> None:
        if self._progress is not None:
            self._progress(done, total, message)


def lr_find(
    config: TrainConfig,
    *,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    steps: int | None = None,
    progress: Progress | None = None,
    token: CancelToken | None = None,
) -> LrFindResult:
    """Sweeps the learning rate for ``config``'s first phase and suggests one.

    Args:
        config: The training config; its dataset, model, trainable policy, optimizer, batch
            size, label smoothing and seed are used (its learning rate and epochs are not).
        start_lr: The first (smallest) learning rate.
        end_lr: The last (largest) learning rate.
        steps: Steps of the sweep; default 300 on the fast path, 100 through the model.
        progress: ``progress(done, total, message)`` while caching, embedding and sweeping.
        token: A cancel token; the sweep stops at the next step when it is set.

    Returns:
        The curve and the suggestion.

    Raises:
        ValueError: For a bad range or step count, or a dataset that cannot be trained on.
        core.training.context.TrainingCancelled: When ``token`` was set.
    """
    import keras

    from core.models.transfer import build_model, head_of, set_trainable
    from core.training.fast_path import embed_dataset
    from core.training.phases import compile_model, make_optimizer, plan_phases, uses_fast_path
    from core.training.prepare import prepare_data, prepare_device

    started = time.monotonic()
    phase = plan_phases(config)[0]
    fast = uses_fast_path(config, phase)
    steps = steps if steps is not None else (FAST_STEPS if fast else MODEL_STEPS)
    rates = rate_schedule(start_lr, end_lr, steps)
    ctx = _SweepContext(progress, token or CancelToken())
    jit_compile, dist = prepare_device(config, ctx)
    data = prepare_data(config, ctx)
    with dist.scope():
        model = build_model(config.model, len(data.classes))
        set_trainable(model, phase.trainable)
        if fast:
            fit_model = head_of(model)
            embeddings = embed_dataset(config, ctx, data, model, dist)
            source = np.asarray(embeddings[data.train_rows], dtype="float32")
            rows = np.arange(len(source))
        else:
            fit_model, source, rows = model, data.cache.array, data.train_rows
        constant = config.replace(schedule="constant")
        optimizer = make_optimizer(constant, float(rates[0]), 1)
        compile_model(fit_model, constant, optimizer, jit_compile)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(rows))
    batch = min(config.batch_size, len(rows))
    position = 0
    smoothed, average, best = [], 0.0, math.inf
    raw: list[float] = []
    diverged = False
    for step, rate in enumerate(rates):
        ctx.token.raise_if_set()
        if position + batch > len(order):
            order, position = rng.permutation(len(rows)), 0
        picks = np.sort(order[position : position + batch])
        position += batch
        x = np.asarray(source[rows[picks]], dtype="float32")
        y = data.train_targets[picks]
        fit_model.optimizer.learning_rate = float(rate)
        fit_model.reset_metrics()  # the loss logged is this batch's, not a running mean
        logs = fit_model.train_on_batch(x, y, return_dict=True)
        loss = float(keras.ops.convert_to_numpy(logs["loss"]))
        if not math.isfinite(loss):
            diverged = True
            break
        raw.append(loss)
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))
        smoothed.append(value)
        best = min(best, value)
        if progress is not None:
            progress(step + 1, steps, "Sweeping the learning rate")
        if step > 10 and value > DIVERGE_FACTOR * best:
            diverged = True
            break
    taken = len(smoothed)
    if taken == 0:
        raise ValueError(
            f"The loss was not finite at the first learning rate ({start_lr:g}); lower "
            "start_lr or check the data."
        )
    suggestion = suggest_learning_rate(list(rates[:taken]), smoothed)
    suggestion = float(min(MAX_SUGGESTED, max(MIN_SUGGESTED, suggestion)))
    return LrFindResult(
        learning_rates=[float(r) for r in rates[:taken]],
        losses=smoothed,
        raw_losses=raw,
        suggestion=suggestion,
        fast_path=fast,
        trainable=phase.trainable,
        steps=taken,
        seconds=round(time.monotonic() - started, 3),
        diverged=diverged,
    )


def lr_find_command(config_path: str | os.PathLike[str], steps: int | None = None) -> list[str]:
    """The command line that sweeps the config saved at ``config_path`` and prints JSON."""
    command = [sys.executable, "-m", "core", "lr-find", "--config", str(config_path), "--json"]
    if steps is not None:
        command += ["--steps", str(int(steps))]
    return command


def lr_find_in_subprocess(
    config: TrainConfig, *, steps: int | None = None, timeout: float = 1800.0
) -> LrFindResult:
    """Runs the sweep in a child process (``python -m core lr-find --json``) and returns it.

    The app calls this so that TensorFlow is never imported into the server process.

    Raises:
        RuntimeError: When the child fails, times out or prints no result; the message
            carries its last error line.
    """
    import core

    repo_root = Path(core.__file__).resolve().parent.parent
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(repo_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    with tempfile.TemporaryDirectory(prefix="lr-find-") as folder:
        path = Path(folder) / "config.json"
        config.save(path)
        try:
            done = subprocess.run(
                lr_find_command(path, steps),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=str(repo_root),
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"The learning-rate sweep took over {timeout:.0f} s.") from error
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    if done.returncode != 0 or not lines:
        reason = errors[-1] if errors else (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"The learning-rate sweep failed (exit {done.returncode}): {reason}")
    try:
        return LrFindResult.from_dict(json.loads(lines[-1]))
    except (json.JSONDecodeError, ValueError) as error:
        raise RuntimeError(
            f"The learning-rate sweep printed no readable result: {error}"
        ) from error
