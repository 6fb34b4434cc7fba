"""Benchmark 4: time from the start request to the first curve point.

On the sample dataset (``core.data.sample.write_sample_images``: 4 classes x 60 images,
ingested once beforehand) with the default model (``TrainConfig(dataset=...)``: the
default backbone, weights, size and head-only training), in the same run, alternating:

- **Transfer Studio**: ``core.training.jobs.start_run(config)`` (what the Train page calls: a new
  worker process) until the first ``batch`` event is in the run's ``metrics.jsonl``. Each
  repeat starts cold: the image and embedding caches are deleted first, so the worker starts
  Python and TensorFlow, decodes every image, builds the model and computes the embeddings
  before its first batch. The run is cancelled once the point is seen.
- **Plain Keras**: a fresh ``python`` process running the script a person would write:
  ``image_dataset_from_directory`` on the same sample images, the same model
  (``build_model``), ``compile``, ``fit``; the time of its first batch end.

Target: Transfer Studio < 15 s on this CPU (median of the repeats after a warm-up).

Usage: ``python bench/first_point.py [--quick] [--repeats 3] [--backbone NAME]``
(``--quick``: 4 x 12 images, ``mobilenet_v3_small`` at 32 px, no warm-up: a smoke test.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_SECONDS = 15.0

PLAIN_SCRIPT = r"""
import json, os, sys, time
start = float(sys.argv[1])
out = sys.argv[2]
folder = sys.argv[3]
config = json.loads(sys.argv[4])
sys.path.insert(0, sys.argv[5])
import keras
from core.config import ModelConfig
from core.models.transfer import build_model

model_config = ModelConfig(**config)
size = model_config.image_size
data = keras.utils.image_dataset_from_directory(
    folder, image_size=(size, size), batch_size=int(sys.argv[6]), label_mode="categorical",
    verbose=False,
)
model = build_model(model_config, len(data.class_names))
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])


class FirstBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        with open(out, "w") as handle:
            json.dump({"first_batch": time.time() - start}, handle)
        os._exit(0)


model.fit(data, epochs=1, callbacks=[FirstBatch()], verbose=0)
"""


def studio_first_point(config, timeout: float) -> dict:
    """Starts a run like the Train page does; seconds until its first batch event."""
    from core.runs.metrics import MetricsReader
    from core.runs.store import read_status, read_summary, run_dir
    from core.training.jobs import cancel_run, start_run

    started = time.time()
    run_id = start_run(config)
    folder = run_dir(run_id)
    reader = MetricsReader(folder)
    first = None
    fit_start = None
    while first is None and time.time() - started < timeout:
        for event in reader.poll():
            if event.get("type") == "phase" and fit_start is None:
                fit_start = event["time"] - started
            if event.get("type") == "batch":
                first = event
                break
            if event.get("type") == "end":
                raise RuntimeError(f"run {run_id} ended before a batch: {event}")
        time.sleep(0.02)
    seen = time.time() - started
    cancel_run(run_id, wait=True)
    if first is None:
        raise RuntimeError(f"no batch event within {timeout}s; status {read_status(folder)}")
    summary = read_summary(folder) or {}
    return {
        "event": first["time"] - started,
        "seen": seen,
        "fit_start": fit_start,
        "cache": summary.get("cache_seconds"),
        "embedding": summary.get("embedding_seconds"),
    }


def plain_first_point(folder: Path, model: dict, batch_size: int, tmp: Path) -> float:
    """Runs the plain Keras script in a fresh process; seconds until its first batch end."""
    out = tmp / "plain_first_batch.json"
    out.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN_SCRIPT,
            repr(started),
            str(out),
            str(folder),
            json.dumps(model),
            str(common.REPO_ROOT),
            str(batch_size),
        ],
        check=True,
        cwd=common.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())["first_batch"]


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--backbone", default=None, help="default: the app's default model")
    parser.add_argument("--per-class", type=int, default=60, help="sample images per class")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else max(1, args.repeats)

    from core.config import ModelConfig, TrainConfig
    from core.data.ingest import ingest
    from core.data.sample import write_sample_images
    from core.workspace import cache_dir

    verdicts = common.Verdicts()
    with common.workspace(args, "bench-first-point-") as tmp:
        common.banner("time to first curve point: start request -> first batch event")
        per_class = 12 if args.quick else args.per_class
        sample = write_sample_images(tmp / "sample", per_class=per_class)
        report = ingest(sample, name="sample")
        model = ModelConfig() if not args.backbone else ModelConfig(backbone=args.backbone)
        if args.quick:
            # CI smoke test: a tiny model, no warm-up; proves the script runs, not the target.
            model = ModelConfig(
                backbone=args.backbone or "mobilenet_v3_small", weights="none", image_size=32
            )
        config = TrainConfig(dataset=report.dataset_id, model=model, batch_size=args.batch_size)
        model_dict = config.to_dict()["model"]
        print(
            f"sample dataset: {report.num_images} images, classes {sorted(report.classes)}; "
            f"model {model.backbone} @ {model.image_size}px, weights {model.weights!r}, "
            f"trainable {model.trainable}, batch {args.batch_size}, up to {config.total_epochs} "
            "epochs"
        )

        def cold_studio() -> dict:
            shutil.rmtree(cache_dir(), ignore_errors=True)
            return studio_first_point(config, args.timeout)

        if not args.quick:
            cold_studio()  # warm-up (OS page cache, compiled Python files)
            plain_first_point(sample, model_dict, args.batch_size, tmp)
        studio, plain = common.Series(unit="s"), common.Series(unit="s")
        warm = common.Series(unit="s")
        for index in range(repeats):
            sides = ("studio", "plain") if index % 2 == 0 else ("plain", "studio")
            for side in sides:
                if side == "studio":
                    result = cold_studio()
                    studio.add(result["event"])
                    print(
                        f"  repeat {index + 1}: studio first batch event at "
                        f"{result['event']:.1f}s (cache {result['cache']}s, embedding "
                        f"{result['embedding']}s, fit started at {result['fit_start']:.1f}s; "
                        f"seen by the poller at {result['seen']:.1f}s)",
                        flush=True,
                    )
                else:
                    value = plain_first_point(sample, model_dict, args.batch_size, tmp)
                    plain.add(value)
                    print(
                        f"  repeat {index + 1}: plain Keras first batch at {value:.1f}s", flush=True
                    )
        # Second run on the same data: caches reused (what a user re-training sees).
        for _ in range(repeats):
            warm.add(studio_first_point(config, args.timeout)["event"])

    print(
        f"\nmedian (min..max) over {repeats} repeat(s), seconds; load average now "
        f"{common.load_average()} at {time.strftime('%H:%M:%S')}"
    )
    common.print_table(
        ["side", "first batch (s)"],
        [
            ["Transfer Studio, cold caches (start_run)", studio.cell(1)],
            ["Transfer Studio, caches reused", warm.cell(1)],
            ["plain Keras script (new process)", plain.cell(1)],
        ],
    )
    print(f"plain/studio ratio (cold): {plain.median / studio.median:.2f}x")
    verdicts.check(
        "first_point_seconds", studio.median, TARGET_SECONDS, at_most=True, unit="s", digits=1
    )
    return verdicts.finish()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
