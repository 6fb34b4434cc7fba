"""Benchmark 7: images/s of one run on 1 device vs N devices (``--cpu-replicas``, or GPUs).

Each side is a real training process (``python -m core train ... --json``), because a
process's devices are fixed once TensorFlow has made them: one with the default strategy, one
split into N logical CPU devices with ``MirroredStrategy`` (or, on a machine with several
GPUs, all of them: the strategy is picked automatically). Same dataset, model, global batch,
epochs and seed. Reported: training images per second (``images_per_second`` of the run's
summary, steady-state training steps), the ratio, and the validation accuracy of both.

On a CPU the logical devices share the same cores, so expect no speed-up (the ratio is about
1x or a bit below, from the cost of splitting each batch); the point is that the distributed
path runs, and that it scales where the devices are real. With a GPU machine running the JAX
backend (``KERAS_BACKEND=jax``), the run uses ``keras.distribution.DataParallel`` over the
visible devices instead.

Targets: the N-device run completes with ``replicas == N``; its accuracy within 0.15 of the
one-device run. Speed is printed, not judged.

Usage::

    python bench/distribute.py [--quick] [--replicas 2] [--backbones mobilenet_v2]
        [--sizes 96] [--images 240] [--epochs 3] [--batch-size 32] [--trainable all]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _train(dataset_id: str, backbone: str, size: int, args, replicas: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "core",
        "train",
        "--data",
        dataset_id,
        "--backbone",
        backbone,
        "--weights",
        common.weights_for(backbone),
        "--image-size",
        str(size),
        "--trainable",
        args.trainable,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        "1",
        "--json",
    ]
    if replicas > 1:
        command += ["--cpu-replicas", str(replicas)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"training failed ({replicas} devices): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--replicas", type=int, default=2, help="devices of the second run (2)")
    parser.add_argument("--images", type=int, default=None, help="generated images (240)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (3)")
    parser.add_argument(
        "--trainable", default="all", help="what trains (default all: the full forward pass)"
    )
    args = parser.parse_args(argv)
    images = args.images or (40 if args.quick else 240)
    if args.quick:
        args.epochs = 2
    verdicts = common.Verdicts()
    rows = []
    with common.workspace(args, "bench-distribute-") as tmp:
        common.banner(f"1 device vs {args.replicas} devices (MirroredStrategy)")
        dataset_id = common.make_dataset(tmp, images, size=128, kind=args.data)
        print(
            f"dataset: {common.describe_data(args.data, images, 128)}; trainable {args.trainable}, "
            f"global batch {args.batch_size}, {args.epochs} epochs; one process per run"
        )
        for backbone, size in common.configs(args, quick_sizes=(64,)):
            single = _train(dataset_id, backbone, size, args, 1)
            multi = _train(dataset_id, backbone, size, args, args.replicas)
            speed_1, speed_n = single["images_per_second"], multi["images_per_second"]
            ratio = speed_n / speed_1 if speed_1 and speed_n else float("nan")
            rows.append(
                [
                    f"{backbone}@{size}",
                    f"{speed_1:.1f}",
                    f"{speed_n:.1f} ({multi['strategy']}, {multi['replicas']} replicas)",
                    f"{ratio:.2f}x",
                    f"{single['best_val_accuracy']:.3f} / {multi['best_val_accuracy']:.3f}",
                ]
            )
            name = f"{backbone}@{size}"
            verdicts.check(f"{name}-replicas", float(multi["replicas"]), float(args.replicas))
            verdicts.check(
                f"{name}-accuracy-gap",
                abs(multi["best_val_accuracy"] - single["best_val_accuracy"]),
                0.15,
                at_most=True,
                digits=3,
            )
    common.print_table(
        ["config", "1 device img/s", f"{args.replicas} devices img/s", "ratio", "val acc 1 / N"],
        rows,
    )
    if not common.visible_gpus():
        verdicts.skip("gpu", "no GPU visible to this backend: the N devices are logical CPUs")
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
