"""Benchmark: augmented head training through cached views vs plain ``fit`` with augmentation.

Both sides train the head of the same frozen model (``core.models.transfer.build_model``, head
only, the same augmentation layers: ``AugmentConfig.standard()``) on the same dataset
(default: 1,000 of scikit-learn's handwritten digits upscaled, 10 classes, split 70/15/15,
where a frozen EfficientNet-Lite0 head reaches ~0.76, so the accuracy comparison means
something; ``--data shapes`` gives the generated shapes, where both sides reach 1.000), with
the same batch size, optimizer (Adam 1e-3) and number of epochs (default 10), in the same
process, alternating sides:

- **Transfer Studio**: a real run (``create_run`` + ``run_worker``): ``K`` augmented views of
  each training image (default 4) and the plain embeddings of every image go through the
  backbone once, then the head trains on the vectors, one view per image per epoch,
  validating on un-augmented embeddings. The embedding cache is deleted before each run, so
  every run pays for both passes. The saved model is the whole network, augmentation
  inactive at inference.
- **Plain Keras**: ``compile`` + ``fit`` of the full frozen model with its augmentation layers
  active, on the same decoded arrays (the engine's image cache, built beforehand and not
  timed), validation each epoch, ``model.save`` at the end.

End to end is the wall time of the whole training. Accuracy is the best epoch's validation
accuracy on each side (Transfer Studio restores that epoch's weights; the plain script's
``fit`` history is read for its best epoch).

Targets: end to end >= 5x; validation accuracy no worse than the plain run's (1 point of
slack, one image in a hundred).

What bounds the ratio: a backbone pass costs about the same per image on both sides, so the
end-to-end ratio is at most ``epochs x (train + val) / (all images + K x train)``, which the
script prints: 2.2x for K = 4 over 10 epochs, 5.0x for K = 1 (70/15/15 split). The head
phase of a default run is not limited to 10 epochs (it trains until validation stops
improving), and each extra epoch costs the cached side a fraction of a second and the plain
side a full pass.

Usage::

    python bench/augment.py [--quick] [--backbones efficientnet_lite0] [--sizes 224]
        [--repeats 3] [--images 1000] [--data digits] [--epochs 10] [--views 4]
        [--batch-size 32]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_END_TO_END = 5.0
ACCURACY_SLACK = 0.01


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="dataset images (1000)")
    parser.set_defaults(data="digits")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training (10)")
    parser.add_argument("--views", type=int, default=4, help="augmented views per image (4)")
    args = parser.parse_args(argv)
    if not args.quick:
        # The only backbone with real (bundled) ImageNet weights: accuracy means something.
        args.backbones = args.backbones or ["efficientnet_lite0"]
        args.sizes = args.sizes or [224]
    images = args.images or (80 if args.quick else 1000)
    epochs = max(2, 3 if args.quick else args.epochs)
    repeats = 1 if args.quick else max(1, args.repeats)

    from core.config import AugmentConfig, ModelConfig

    augment = AugmentConfig.standard()
    augment = AugmentConfig(**{**augment.__dict__, "views": args.views})
    verdicts = common.Verdicts()
    rows = []
    with common.workspace(args, "bench-augment-") as tmp:
        common.banner("augmented head: cached views vs model.fit with augmentation layers")
        dataset_id = common.make_dataset(tmp, images, size=256, kind=args.data)
        print(
            f"dataset: {common.describe_data(args.data, images, 256)}; batch {args.batch_size}, "
            f"{epochs} epochs, {args.views} views, augmentation {augment}; {repeats} "
            "repeat(s) after a warm-up"
        )
        for backbone, size in common.configs(args):
            weights = common.weights_for(backbone)
            model_config = ModelConfig(
                backbone=backbone,
                weights=weights,
                image_size=size,
                trainable="head",
                augment=augment,
            )
            arrays = common.split_arrays(dataset_id, size)
            print(
                f"\n-- {backbone} @ {size}px, weights={weights!r} (both sides); "
                f"{len(arrays.x_train)} train / {len(arrays.x_val)} val images",
                flush=True,
            )

            studio, plain = common.studio_and_plain(
                dataset_id,
                model_config,
                arrays,
                batch_size=args.batch_size,
                save_to=tmp / "plain.keras",
            )

            plain(2)
            studio(2)
            plain_e2e, studio_e2e = common.Series(unit="s"), common.Series(unit="s")
            plain_acc, studio_acc = common.Series(), common.Series()
            for index in range(repeats):
                order = ("plain", "studio") if index % 2 == 0 else ("studio", "plain")
                result = {}
                for side in order:
                    result[side] = plain(epochs) if side == "plain" else studio(epochs)
                p, s = result["plain"], result["studio"]
                summary = s.extra["summary"]
                if not summary.get("fast_path") or summary.get("augmented_views") != args.views:
                    print("  warning: the Transfer Studio run did not train on cached views")
                p_acc = max(p.extra["history"]["val_accuracy"])
                s_acc = float(summary["val_accuracy"])
                plain_e2e.add(p.seconds)
                studio_e2e.add(s.seconds)
                plain_acc.add(p_acc)
                studio_acc.add(s_acc)
                print(
                    f"  repeat {index + 1}: plain {p.seconds:.1f}s val acc {p_acc:.3f}; "
                    f"studio {s.seconds:.1f}s (views {summary.get('views_seconds')}s, "
                    f"embeddings {summary.get('embedding_seconds')}s) val acc {s_acc:.3f}",
                    flush=True,
                )
            ratio = plain_e2e.median / studio_e2e.median
            # Images through the backbone on each side: what bounds the end-to-end ratio.
            total = len(arrays.x_train) + len(arrays.x_val)
            all_images = int(summary.get("num_train", 0) + summary.get("num_val", 0))
            all_images += int(summary.get("num_test") or 0)
            plain_passes = epochs * total
            studio_passes = all_images + args.views * len(arrays.x_train)
            print(
                f"  backbone passes: plain {epochs} x {total} = {plain_passes}, studio "
                f"{all_images} plain + {args.views} x {len(arrays.x_train)} views = "
                f"{studio_passes}: at equal cost per image the ratio is at most "
                f"{plain_passes / studio_passes:.1f}x"
            )
            rows.append(
                [
                    f"{backbone}@{size}",
                    plain_e2e.cell(1),
                    studio_e2e.cell(1),
                    f"{ratio:.1f}x",
                    plain_acc.cell(3),
                    studio_acc.cell(3),
                ]
            )
            verdicts.check(
                f"augmented_end_to_end_speedup[{backbone}@{size}]",
                ratio,
                TARGET_END_TO_END,
                unit="x",
                digits=1,
            )
            verdicts.check(
                f"augmented_val_accuracy_vs_plain[{backbone}@{size}]",
                studio_acc.median - plain_acc.median,
                -ACCURACY_SLACK,
                digits=3,
            )

    print(
        f"\nmedian (min..max) over {repeats} repeat(s); load average now "
        f"{common.load_average()} at {time.strftime('%H:%M:%S')}"
    )
    common.print_table(
        [
            "config",
            f"plain {epochs} ep (s)",
            f"studio {epochs} ep (s)",
            "e2e x",
            "plain val acc",
            "studio val acc",
        ],
        rows,
    )
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
