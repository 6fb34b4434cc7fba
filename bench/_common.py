"""Helpers shared by the ``bench/`` scripts: arguments, repeats, tables, verdicts, memory.

Every benchmark compares Transfer Studio with the same work done by plain Keras, in the same
process and run, because the machines these run on are shared and noisy: a ratio measured
side by side means more than any absolute number. Each script

- takes ``--quick`` (tiny data, for CI smoke tests), ``--backbones``, ``--sizes`` and
  ``--repeats``;
- prints a banner (date, load average, cores, Keras version and backend, devices), a small
  table of ``median (min..max)`` over the repeats after a warm-up, and the ratios;
- ends with one line per target: ``PASS name measured target`` or ``FAIL name measured
  target``, and exits 1 when a target failed (0 otherwise, 0 too for a SKIP).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
DEFAULT_SIZES = (160, 224)
#: Generated datasets a benchmark can train on (``--data``).
DATASETS = ("shapes", "digits")
# Weights used for each backbone: MobileNetV2's ImageNet weights cannot be downloaded on an
# offline machine, so it runs with random weights ("none"); both sides always use the same.
OFFLINE_WEIGHTS = {"efficientnet_lite0": "imagenet"}


def weights_for(backbone: str) -> str:
    """The weights a benchmark uses for ``backbone`` (``imagenet`` only where bundled)."""
    return OFFLINE_WEIGHTS.get(backbone, "none")


# --- arguments -------------------------------------------------------------------------------


def _csv(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list. Received: {text!r}")
        return values

    return parse


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny data and one config: proves the script runs"
    )
    parser.add_argument(
        "--backbones",
        type=_csv(str),
        default=None,
        help=f"comma-separated backbones (default {','.join(DEFAULT_BACKBONES)})",
    )
    parser.add_argument(
        "--sizes",
        type=_csv(int),
        default=None,
        help=f"comma-separated image sizes (default {','.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--data",
        choices=DATASETS,
        default="shapes",
        help="generated shapes (4 classes, default) or scikit-learn's handwritten digits "
        "(10 classes, upscaled): a set where accuracy is not trivially 1.000",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both sides")
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep the workspace and generated images here (default: a temporary folder)",
    )
    return parser


def configs(args: argparse.Namespace, quick_backbones=("mobilenet_v2",), quick_sizes=(96,)):
    """The (backbone, size) pairs to measure: the defaults, ``--quick``'s, or what was asked."""
    backbones = args.backbones or (list(quick_backbones) if args.quick else DEFAULT_BACKBONES)
    sizes = args.sizes or (list(quick_sizes) if args.quick else DEFAULT_SIZES)
    return [(backbone, size) for backbone in backbones for size in sizes]


@contextlib.contextmanager
def workspace(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """A fresh ``TRANSFER_STUDIO_HOME`` (under ``--workdir`` or a temporary folder)."""
    if args.workdir:
        root = Path(args.workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        os.environ["TRANSFER_STUDIO_HOME"] = str(root / "workspace")
        yield root
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.environ["TRANSFER_STUDIO_HOME"] = str(Path(tmp) / "workspace")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the machine -----------------------------------------------------------------------------


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"3.10 2.80 2.01"``."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """Names of the GPUs the active Keras backend can see (empty on a CPU machine)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(device) for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def banner(title: str) -> None:
    """Prints what the figures below were measured on (so a reader can judge the noise)."""
    import keras

    print(f"== {title}")
    print(
        f"date {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, host {platform.node()}, "
        f"{cores()} cores, load average {load_average()}"
    )
    print(
        f"python {platform.python_version()}, keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, GPUs: {visible_gpus() or 'none'}"
    )
    sys.stdout.flush()


# --- statistics and output ------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one quantity.

    Attributes:
        values: One value per timed repeat.
        unit: Unit shown in tables (``s``, ``img/s``, ``MB``, ...).
    """

    values: list[float] = field(default_factory=list)
    unit: str = ""

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def cell(self, digits: int = 2) -> str:
        """``median (min..max)`` as text."""
        if not self.values:
            return "-"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}..{self.high:.{digits}f})"


def repeat(fn: Callable[[], float], repeats: int, *, warmup: int = 1) -> Series:
    """Calls ``fn`` ``warmup`` times untimed, then ``repeats`` times, collecting its results.

    ``fn`` returns the measured quantity itself (e.g. seconds or images/s), so it can time
    exactly the part that matters.
    """
    for _ in range(warmup):
        fn()
    series = Series()
    for _ in range(repeats):
        series.add(fn())
    return series


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a plain, aligned text table."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(value.ljust(widths[i]) for i, value in enumerate(row)))
    sys.stdout.flush()


@dataclass
class Verdicts:
    """Collects the ``PASS``/``FAIL``/``SKIP`` lines printed at the end of a benchmark."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def check(
        self,
        name: str,
        measured: float,
        target: float,
        *,
        at_most: bool = False,
        unit: str = "",
        digits: int = 2,
    ) -> bool:
        """Records ``measured >= target`` (or ``<=`` with ``at_most``)."""
        ok = measured <= target if at_most else measured >= target
        sign = "<=" if at_most else ">="
        self.lines.append(
            f"{'PASS' if ok else 'FAIL'} {name} {measured:.{digits}f}{unit} {sign}{target:g}{unit}"
        )
        self.failed = self.failed or not ok
        return ok

    def skip(self, name: str, reason: str) -> None:
        """Records a target that could not be measured here, and why."""
        self.lines.append(f"SKIP {name} - {reason}")

    def finish(self) -> int:
        """Prints the verdict lines; returns the exit code (1 when a target failed)."""
        print()
        for line in self.lines:
            print(line)
        sys.stdout.flush()
        return 1 if self.failed else 0


# --- data ------------------------------------------------------------------------------------


def class_names(count: int) -> list[str]:
    """``count`` class names (the sample shapes first, then numbered variants)."""
    from core.data.sample import SAMPLE_CLASSES

    return [
        SAMPLE_CLASSES[i % len(SAMPLE_CLASSES)] + ("" if i < len(SAMPLE_CLASSES) else f"_{i}")
        for i in range(count)
    ]


def make_dataset(
    folder: Path,
    images: int,
    *,
    classes: int = 4,
    size: int = 256,
    name: str = "bench",
    kind: str = "shapes",
) -> str:
    """Writes ``images`` images in class folders, ingests them, returns the dataset id.

    ``kind`` is ``"shapes"`` (the sample generator, ``classes`` classes at ``size`` px) or
    ``"digits"`` (scikit-learn's handwritten digits upscaled to ``size`` px, always 10
    classes, ``images // 10`` of each). Split 70/15/15 (the app's default fractions), seed 42.
    """
    from core.data.ingest import ingest
    from core.data.sample import write_class_folders, write_digits_folders

    if kind not in DATASETS:
        raise ValueError(f"kind must be one of {DATASETS}. Received: kind={kind!r}")
    source = folder / f"src-{name}-{kind}-{images}"
    if not source.exists():
        if kind == "digits":
            write_digits_folders(source, per_class=max(1, images // 10), size=size)
        else:
            labels = class_names(classes)
            counts = {
                label: images // classes + (1 if i < images % classes else 0)
                for i, label in enumerate(labels)
            }
            write_class_folders(source, counts, size=(size, size), seed=7)
    report = ingest(source, name=name)
    if not report.dataset_id:
        raise RuntimeError(f"ingest of {source} made no dataset: {report.error}")
    return report.dataset_id


def describe_data(kind: str, images: int, size: int) -> str:
    """How a benchmark's dataset is printed: ``"200 generated 256x256 shape JPEGs, 4 classes"``."""
    if kind == "digits":
        return (
            f"{images // 10 * 10} handwritten digits (scikit-learn's, upscaled to "
            f"{size}x{size}), 10 classes"
        )
    return f"{images} generated {size}x{size} shape JPEGs, 4 classes"


def clear_embedding_cache() -> None:
    """Removes cached backbone embeddings, so the next fast-path run computes them again."""
    from core.workspace import cache_dir

    shutil.rmtree(cache_dir() / "embeddings", ignore_errors=True)


def clear_keras() -> None:
    """Frees the previous models' graphs between measurements."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


# --- peak memory of a child process ------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile``, ``RssShmem`` of ``pid`` in bytes."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


@dataclass
class ChildMemory:
    """Peak memory of a child process.

    Attributes:
        returncode: The child's exit status.
        seconds: Wall time of the child.
        peak_rss: Kernel high-water mark of resident memory (``VmHWM``; anonymous and
            file-backed pages, so a memory-mapped file that was read counts in it).
        peak_anon: Largest anonymous resident memory seen by polling (heap, tensors): what a
            big dataset must not grow.
        peak_file: Largest file-backed resident memory seen by polling (mapped files,
            libraries); the kernel can drop these pages under pressure.
        maxrss_children: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the child exited
            (the largest of any waited-for child so far, a cross-check of ``peak_rss``).
    """

    returncode: int
    seconds: float
    peak_rss: int
    peak_anon: int
    peak_file: int
    maxrss_children: int


def run_child_measuring_memory(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    poll_seconds: float = 0.1,
    timeout: float | None = None,
) -> ChildMemory:
    """Runs ``command`` and polls ``/proc/<pid>/status`` for its peak memory.

    Args:
        command: The child's command line.
        env: Its environment (default: this process's).
        cwd: Its working directory (default: the repository root).
        log: File receiving its stdout and stderr (default: discarded).
        poll_seconds: Seconds between two looks at ``/proc``.
        timeout: Seconds after which the child is killed (None: no limit).

    Returns:
        Its exit code, wall time and peaks (bytes).
    """
    import resource

    sink = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            list(command), env=env, cwd=cwd or REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
        peaks = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
        lock = threading.Lock()

        def poll() -> None:
            while process.poll() is None:
                values = _proc_status(process.pid)
                with lock:
                    for key in peaks:
                        peaks[key] = max(peaks[key], values.get(key, 0))
                time.sleep(poll_seconds)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        watcher.join()
    finally:
        if log:
            sink.close()
    seconds = time.perf_counter() - started
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return ChildMemory(
        returncode=returncode,
        seconds=seconds,
        peak_rss=max(peaks["VmHWM"], 0),
        peak_anon=peaks["RssAnon"],
        peak_file=peaks["RssFile"],
        maxrss_children=maxrss,
    )


def megabytes(value: float) -> float:
    """Bytes to MB (10**6, as ``ps`` and most tools print)."""
    return value / 1e6


# --- the two sides: a Transfer Studio run, and plain Keras on the same arrays --------------------


@dataclass
class SplitArrays:
    """A dataset's train and val splits at one size, read from the engine's image cache.

    Attributes:
        x_train, y_train, x_val, y_val: float32 images (0..255) and one-hot targets.
        classes: Class names in output order.
        cache_seconds: Seconds the image cache took to build here (0 when it existed).
    """

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    classes: list[str]
    cache_seconds: float


def split_arrays(dataset_id: str, size: int) -> SplitArrays:
    """Builds (or reuses) the engine's image cache and returns the splits as arrays.

    The cache is the one a Transfer Studio run uses (same key), so building it here means
    neither side pays for decoding JPEGs in the timed part.
    """
    import numpy as np

    from core.data.image_cache import build_image_cache
    from core.data.store import load_dataset

    dataset = load_dataset(dataset_id)
    classes = list(dataset.classes)
    cache = build_image_cache(
        dataset.dir, [str(v) for v in dataset.manifest["image"]], dataset.fingerprint, size
    )
    index = {name: i for i, name in enumerate(classes)}

    def split(name: str):
        frame = dataset.frame(name)
        rows = cache.rows(list(frame["image"]))
        x = np.asarray(cache.array[np.sort(rows)], dtype="float32")
        order = np.argsort(rows)
        labels = np.array([index[v] for v in frame["label"]])[order]
        y = np.zeros((len(labels), len(classes)), dtype="float32")
        y[np.arange(len(labels)), labels] = 1.0
        return x, y

    x_train, y_train = split("train")
    x_val, y_val = split("val")
    return SplitArrays(x_train, y_train, x_val, y_val, classes, cache.built_seconds)


@dataclass
class Fit:
    """Timings of one training, either side.

    Attributes:
        seconds: Wall time of the whole thing (build, compile, fit, save, ...).
        epoch_ends: ``time.time()`` at the end of each epoch.
        fit_start: ``time.time()`` when the (last) ``fit`` started.
        extra: Side-specific facts (embedding seconds, summary, ...).
    """

    seconds: float
    epoch_ends: list[float]
    fit_start: float
    extra: dict[str, Any] = field(default_factory=dict)

    def epoch_seconds(self) -> list[float]:
        """Wall seconds of each epoch, the first measured from the start of ``fit``.

        Each later epoch is the gap between two epoch ends, so it includes everything the
        training loop does between epochs (validation, checkpoints, callbacks).
        """
        ends = [self.fit_start, *self.epoch_ends]
        return [b - a for a, b in zip(ends, ends[1:], strict=False)]

    def steady_epoch_seconds(self) -> float:
        """Median epoch time without the first epoch (tracing, compilation)."""
        times = self.epoch_seconds()[1:]
        if not times:
            raise ValueError("steady-state needs at least 2 epochs")
        return statistics.median(times)


def plain_keras_fit(
    arrays: SplitArrays,
    model_config,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    seed: int = 42,
    save_to: Path | None = None,
) -> Fit:
    """The plain Keras script: same model (``build_model``), ``compile``, ``fit`` on arrays.

    What a person would write by hand: Adam, categorical cross-entropy, accuracy, validation
    data, ``fit(x, y, batch_size, epochs, shuffle=True)``, and ``model.save`` at the end when
    ``save_to`` is given. Only a callback noting epoch-end times is added.
    """
    import keras

    from core.models.transfer import build_model

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.time())

    clear_keras()
    clock = EpochClock()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(model_config, len(arrays.classes))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit_start = time.time()
    history = model.fit(
        arrays.x_train,
        arrays.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(arrays.x_val, arrays.y_val),
        shuffle=True,
        callbacks=[clock],
        verbose=0,
    )
    if save_to is not None:
        model.save(save_to)
    seconds = time.perf_counter() - started
    return Fit(
        seconds=seconds,
        epoch_ends=clock.ends,
        fit_start=fit_start,
        extra={"history": {k: [float(v) for v in vs] for k, vs in history.history.items()}},
    )


def studio_and_plain(
    dataset_id: str, model_config, arrays: SplitArrays, *, batch_size: int, save_to: Path
) -> tuple[Callable[[int], Fit], Callable[[int], Fit]]:
    """The two sides of a head-only comparison, as ``side(epochs) -> Fit``.

    Transfer Studio's side is a real run with the plain side's hyperparameters (Adam at
    1e-3, no early stopping, seed 42), so both do the same number of epochs of the same
    training; its embedding cache is deleted first, so every run pays for its passes.
    """
    from core.config import TrainConfig

    def studio(epochs: int) -> Fit:
        clear_embedding_cache()
        run = TrainConfig(
            dataset=dataset_id,
            model=model_config,
            epochs=epochs,
            learning_rate=1e-3,
            early_stopping_patience=0,
            batch_size=batch_size,
            seed=42,
        )
        return studio_run(run)

    def plain(epochs: int) -> Fit:
        return plain_keras_fit(
            arrays, model_config, epochs=epochs, batch_size=batch_size, save_to=save_to
        )

    return studio, plain


def studio_run(config) -> Fit:
    """A Transfer Studio run of ``config``, through the worker code, in this process.

    ``create_run`` + ``run_worker`` is exactly what the worker process executes (minus the
    interpreter and TensorFlow start-up, which the plain side does not pay either).

    Raises:
        RuntimeError: If the run did not complete.
    """
    from core.runs.metrics import MetricsReader
    from core.runs.store import create_run, read_summary
    from core.training.worker import run_worker

    clear_keras()
    folder = create_run(config)
    started = time.perf_counter()
    status = run_worker(folder)
    seconds = time.perf_counter() - started
    if status.state != "completed":
        raise RuntimeError(f"run {folder.name} ended {status.state}: {status.message}")
    events = MetricsReader(folder).all()
    phases = [e for e in events if e.get("type") == "phase"]
    epochs = [e for e in events if e.get("type") == "epoch"]
    summary = read_summary(folder) or {}
    return Fit(
        seconds=seconds,
        epoch_ends=[e["time"] for e in epochs],
        fit_start=phases[-1]["time"] if phases else epochs[0]["time"],
        extra={"summary": summary, "folder": folder, "events": events},
    )
