"""Benchmark 1: the frozen-backbone fast path vs ``model.fit`` over the full frozen model.

For each backbone and image size, on the same generated dataset (default 500 images, 4
classes, split 70/15/15), batch size, model (``core.models.transfer.build_model``, head only) and
number of epochs (default 10), in the same process and alternating the two sides:

- **Transfer Studio**: a real run (``create_run`` + ``run_worker``, what the worker process
  executes): the backbone's embeddings are computed once, then only the head trains on the
  vectors, with every callback of a real run (live metrics, checkpoints, best-model saves,
  TensorBoard). The embedding cache is deleted before each run, so every run pays for it.
- **Plain Keras**: ``build_model`` + ``compile`` + ``fit`` over the full frozen model on the
  same decoded arrays (read from the engine's image cache, built once beforehand so neither
  side decodes JPEGs in the timed part), with validation each epoch, then ``model.save``.

Per epoch is the median gap between epoch ends without the first epoch (tracing), so it
includes validation and whatever happens between epochs. End to end is the wall time of the
whole training: model build, embedding pass (Transfer Studio), all epochs, saving.

Targets: per epoch >= 20x, end to end (10 epochs incl. the embedding pass) >= 5x.

Usage::

    python bench/frozen.py [--quick] [--backbones mobilenet_v2,efficientnet_lite0]
        [--sizes 160,224] [--repeats 3] [--images 500] [--epochs 10] [--batch-size 32]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_EPOCH = 20.0
TARGET_END_TO_END = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="generated images (500)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training (10)")
    args = parser.parse_args(argv)
    images = args.images or (80 if args.quick else 500)
    epochs = max(2, 3 if args.quick else args.epochs)
    repeats = 1 if args.quick else max(1, args.repeats)

    from core.config import ModelConfig

    verdicts = common.Verdicts()
    rows = []
    with common.workspace(args, "bench-frozen-") as tmp:
        common.banner("frozen backbone: fast path vs model.fit over the frozen model")
        with common.Stopwatch() as watch:
            dataset_id = common.make_dataset(tmp, images, size=256, kind=args.data)
        print(
            f"dataset: {common.describe_data(args.data, images, 256)}, ingested in "
            f"{watch.seconds:.1f}s; batch {args.batch_size}, {epochs} epochs, "
            f"{repeats} repeats after a warm-up"
        )
        for backbone, size in common.configs(args):
            weights = common.weights_for(backbone)
            model_config = ModelConfig(
                backbone=backbone, weights=weights, image_size=size, trainable="head"
            )
            arrays = common.split_arrays(dataset_id, size)
            print(
                f"\n-- {backbone} @ {size}px, weights={weights!r} (both sides); "
                f"{len(arrays.x_train)} train / {len(arrays.x_val)} val images; image "
                f"cache built in {arrays.cache_seconds:.1f}s (not timed)",
                flush=True,
            )

            studio, plain = common.studio_and_plain(
                dataset_id,
                model_config,
                arrays,
                batch_size=args.batch_size,
                save_to=tmp / "plain.keras",
            )

            # Warm-up: both sides once, short (process-level warm caches, kernels).
            plain(2)
            studio(2)
            plain_epoch, studio_epoch = common.Series(unit="s"), common.Series(unit="s")
            plain_e2e, studio_e2e = common.Series(unit="s"), common.Series(unit="s")
            embed = common.Series(unit="s")
            for index in range(repeats):
                # Alternate which side goes first, so a load change hits both alike.
                order = ("plain", "studio") if index % 2 == 0 else ("studio", "plain")
                result = {}
                for side in order:
                    result[side] = plain(epochs) if side == "plain" else studio(epochs)
                p, s = result["plain"], result["studio"]
                plain_epoch.add(p.steady_epoch_seconds())
                studio_epoch.add(s.steady_epoch_seconds())
                plain_e2e.add(p.seconds)
                studio_e2e.add(s.seconds)
                summary = s.extra["summary"]
                embed.add(summary.get("embedding_seconds") or 0.0)
                if not summary.get("fast_path"):
                    print("  warning: the Transfer Studio run did not take the fast path")
                print(
                    f"  repeat {index + 1}: plain epoch {p.steady_epoch_seconds():.3f}s, "
                    f"studio epoch {s.steady_epoch_seconds():.3f}s, plain e2e "
                    f"{p.seconds:.1f}s, studio e2e {s.seconds:.1f}s "
                    f"(embedding {summary.get('embedding_seconds')}s)",
                    flush=True,
                )
            epoch_ratio = plain_epoch.median / studio_epoch.median
            e2e_ratio = plain_e2e.median / studio_e2e.median
            rows.append(
                [
                    f"{backbone}@{size}",
                    plain_epoch.cell(3),
                    studio_epoch.cell(3),
                    f"{epoch_ratio:.1f}x",
                    embed.cell(1),
                    plain_e2e.cell(1),
                    studio_e2e.cell(1),
                    f"{e2e_ratio:.1f}x",
                ]
            )
            verdicts.check(
                f"frozen_epoch_speedup[{backbone}@{size}]",
                epoch_ratio,
                TARGET_EPOCH,
                unit="x",
                digits=1,
            )
            verdicts.check(
                f"frozen_end_to_end_speedup[{backbone}@{size}]",
                e2e_ratio,
                TARGET_END_TO_END,
                unit="x",
                digits=1,
            )

    print(
        f"\nmedian (min..max) over {repeats} repeat(s); seconds; load average now "
        f"{common.load_average()} at {time.strftime('%H:%M:%S')}"
    )
    common.print_table(
        [
            "config",
            "plain epoch",
            "studio epoch",
            "epoch x",
            "embedding",
            f"plain {epochs} ep",
            f"studio {epochs} ep",
            "e2e x",
        ],
        rows,
    )
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
