"""Benchmark 2 (and 6): fine-tuning throughput, Transfer Studio vs a plain ``model.fit`` loop.

For each backbone, image size and trainable setting (default ``top:3`` and ``all``), on the
same generated dataset (default 240 images, 4 classes, split 70/15/15), the same model
(``core.models.transfer.build_model`` with that trainable setting), batch size and learning
rate, in the same process, alternating which side goes first:

- **Transfer Studio**: a real run (``create_run`` + ``run_worker``, what the worker process
  executes) with every callback of a real run: live metrics, cancel checks, NaN guard,
  ``BackupAndRestore`` each epoch, best-model saves, TensorBoard.
- **Plain Keras**: ``build_model`` + ``compile(Adam)`` + ``fit(x, y, validation_data=...)`` on
  the same decoded arrays (read from the engine's image cache, built once beforehand).

Steady state, the same way on both sides: each repeat trains ``--epochs`` (default 2) epochs
and the first epoch (tracing, compilation, warm-up) is dropped; throughput is train images
per wall second of the later epochs (epoch-end to epoch-end, so validation and whatever runs
between epochs count on both sides). Target: Transfer Studio >= 0.95x plain Keras.

GPU (benchmark 6): the script measures on the device the Keras backend uses by default.
When a GPU is visible the figures are the GPU's (run again with ``CUDA_VISIBLE_DEVICES=""``
for the CPU's); when none is, it says so and prints ``SKIP``. The training path is written
against Keras 3 only, so ``KERAS_BACKEND=jax`` (or ``torch``) runs it too where installed.

Usage::

    python bench/finetune.py [--quick] [--backbones mobilenet_v2,efficientnet_lite0]
        [--sizes 160,224] [--modes top:3,all] [--repeats 3] [--images 240] [--epochs 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_RATIO = 0.95
LEARNING_RATE = 1e-4


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="generated images (240)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per repeat, first dropped")
    parser.add_argument("--modes", default=None, help="trainable settings (top:3,all)")
    args = parser.parse_args(argv)
    images = args.images or (60 if args.quick else 240)
    epochs = max(2, args.epochs)
    repeats = 1 if args.quick else max(1, args.repeats)
    modes = (args.modes or ("all" if args.quick else "top:3,all")).split(",")

    import keras

    from core.config import ModelConfig, TrainConfig

    verdicts = common.Verdicts()
    rows = []
    with common.workspace(args, "bench-finetune-") as tmp:
        common.banner("fine-tuning: Transfer Studio run vs plain model.fit, images/s")
        gpus = common.visible_gpus()
        device = "gpu" if gpus else "cpu"
        if not gpus:
            print("no GPU present (the GPU figures of benchmark 6 are skipped); measuring on CPU")
        with common.Stopwatch() as watch:
            dataset_id = common.make_dataset(tmp, images, size=256)
        print(
            f"dataset: {images} generated 256x256 JPEGs, 4 classes, ingested in "
            f"{watch.seconds:.1f}s; batch {args.batch_size}, {epochs} epochs per repeat "
            f"(first dropped), {repeats} repeats, learning rate {LEARNING_RATE:g}"
        )
        for backbone, size in common.configs(args):
            weights = common.weights_for(backbone)
            arrays = common.split_arrays(dataset_id, size)
            n_train = len(arrays.x_train)
            for mode in modes:
                model_config = ModelConfig(
                    backbone=backbone, weights=weights, image_size=size, trainable=mode
                )
                print(
                    f"\n-- {backbone} @ {size}px, trainable {mode}, weights={weights!r} "
                    f"(both sides); {n_train} train / {len(arrays.x_val)} val images",
                    flush=True,
                )
                plain_rate, studio_rate = common.Series(unit="img/s"), common.Series(unit="img/s")
                ratios = []
                for index in range(repeats):
                    order = ("plain", "studio") if index % 2 == 0 else ("studio", "plain")
                    result = {}
                    for side in order:
                        if side == "plain":
                            result[side] = common.plain_keras_fit(
                                arrays,
                                model_config,
                                epochs=epochs,
                                batch_size=args.batch_size,
                                learning_rate=LEARNING_RATE,
                            )
                        else:
                            run = TrainConfig(
                                dataset=dataset_id,
                                model=model_config,
                                epochs=epochs,
                                batch_size=args.batch_size,
                                learning_rate=LEARNING_RATE,
                                seed=42,
                            )
                            result[side] = common.studio_run(run)
                    p = n_train / result["plain"].steady_epoch_seconds()
                    s = n_train / result["studio"].steady_epoch_seconds()
                    plain_rate.add(p)
                    studio_rate.add(s)
                    ratios.append(s / p)
                    print(
                        f"  repeat {index + 1}: plain {p:.1f} img/s, studio {s:.1f} img/s, "
                        f"ratio {s / p:.3f} (load {common.load_average()})",
                        flush=True,
                    )
                ratio = statistics.median(ratios)
                rows.append(
                    [
                        f"{backbone}@{size}",
                        mode,
                        plain_rate.cell(1),
                        studio_rate.cell(1),
                        f"{ratio:.3f}",
                        f"{min(ratios):.3f}..{max(ratios):.3f}",
                    ]
                )
                verdicts.check(
                    f"finetune_ratio[{backbone}@{size},{mode},{device}]",
                    ratio,
                    TARGET_RATIO,
                    unit="x",
                    digits=3,
                )
        if not gpus:
            verdicts.skip("finetune_ratio[gpu]", "no GPU present on this machine")

    print(
        f"\nmedian (min..max) over {repeats} repeat(s), backend {keras.backend.backend()}, "
        f"{device}; ratio = median of per-repeat studio/plain; load average now "
        f"{common.load_average()} at {time.strftime('%H:%M:%S')}"
    )
    common.print_table(
        ["config", "trainable", "plain img/s", "studio img/s", "ratio", "ratio range"], rows
    )
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
