"""Benchmark: our ingest vs ``keras.utils.image_dataset_from_directory`` on the same photos.

Generates photo-like JPEGs (default 1,000 at 800x600, 4 classes) in a temporary folder,
then, in one run and alternating the two so background load hits both alike, measures:

- our ingest (``core.data.ingest.ingest``: read, hash, validating decode, normalise, store,
  split, manifest) in images per second;
- Keras reading the same files with ``image_dataset_from_directory`` (decode + resize to
  ``--image-size``) and iterating every batch, in images per second.

Each is warmed up once, then repeated (median, min, max are printed). The last lines are
``PASS|FAIL ingest_ratio <ours/keras> >=1.0`` and ``PASS|FAIL ingest_images_per_s <ours>
>=150``; the exit code is 1 when a target is missed.

Usage: ``python bench/ingest.py [--images 1000] [--repeats 3] [--compare-executors]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET_RATIO = 1.0
TARGET_IMAGES_PER_S = 150.0


def _generate_class(folder: str, label: str, count: int, size: tuple[int, int], seed: int) -> int:
    from core.data.sample import write_class_folders

    write_class_folders(folder, {label: count}, size=size, seed=seed)
    return count


def generate(folder: Path, images: int, classes: int, size: tuple[int, int]) -> None:
    """Writes ``images`` JPEGs spread over ``classes`` class folders, using every core."""
    from core.data.sample import SAMPLE_CLASSES

    labels = [
        SAMPLE_CLASSES[i % len(SAMPLE_CLASSES)] + ("" if i < 4 else f"_{i}") for i in range(classes)
    ]
    per_class = [images // classes + (1 if i < images % classes else 0) for i in range(classes)]
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=context) as pool:
        jobs = [
            pool.submit(_generate_class, str(folder), label, count, size, index)
            for index, (label, count) in enumerate(zip(labels, per_class, strict=True))
        ]
        for job in jobs:
            job.result()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_ingest(source: Path, *, executor: str, workers: int | None, keep_clean_jpeg: bool):
    """One ingest run; returns (images per second, CPU ms per image)."""
    from core.data.ingest import IngestLimits, ingest
    from core.data.store import delete_dataset

    limits = IngestLimits(keep_clean_jpeg=keep_clean_jpeg)
    cpu = cpu_seconds()
    start = time.perf_counter()
    report = ingest(source, name="bench", limits=limits, executor=executor, workers=workers)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    delete_dataset(report.dataset_id)
    return report.num_images / elapsed, 1000 * cpu / report.num_images


def time_keras(source: Path, image_size: int):
    """One pass of image_dataset_from_directory over every batch; (images/s, CPU ms/image)."""
    import keras

    cpu = cpu_seconds()
    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        source,
        image_size=(image_size, image_size),
        batch_size=32,
        shuffle=False,
        verbose=False,
    )
    count = 0
    for batch, _ in dataset:
        count += int(batch.shape[0])
    elapsed = time.perf_counter() - start
    return count / elapsed, 1000 * (cpu_seconds() - cpu) / count


def summary(name: str, rates: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(rates):.1f} img/s "
        f"(min {min(rates):.1f}, max {max(rates):.1f}, {len(rates)} repeats)"
    )


def verdict(name: str, value: float, target: float) -> str:
    return f"{'PASS' if value >= target else 'FAIL'} {name} {value:.2f} >={target:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--size", default="800x600", help="generated photo size WxH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224, help="Keras resize target")
    parser.add_argument("--executor", default="auto", help="auto, serial, thread or process")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--compare-executors",
        action="store_true",
        help="also time serial, thread pools of 2 and 4 and a process pool of 2",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one serial ingest with cProfile"
    )
    parser.add_argument(
        "--reencode", action="store_true", help="also time re-encoding every JPEG (no byte copy)"
    )
    parser.add_argument("--photos", default=None, help="reuse (or create) photos in this folder")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        os.environ["TRANSFER_STUDIO_HOME"] = str(Path(tmp) / "workspace")
        photos = Path(args.photos) if args.photos else Path(tmp) / "photos"
        existing = sum(1 for _ in photos.rglob("*.jpg")) if photos.exists() else 0
        if existing != args.images:
            start = time.perf_counter()
            generate(photos, args.images, args.classes, (width, height))
            print(
                f"generated {args.images} {width}x{height} JPEGs in "
                f"{time.perf_counter() - start:.1f}s",
                flush=True,
            )
        from core.data.ingest import available_cores

        print(f"cores available: {available_cores()}", flush=True)
        import keras  # imported before timing: its import is not part of reading images

        print(f"keras {keras.__version__}, backend {keras.backend.backend()}", flush=True)

        # Warm-up (page cache, imports, pool start-up paths, TF graph building).
        time_ingest(photos, executor=args.executor, workers=args.workers, keep_clean_jpeg=True)
        time_keras(photos, args.image_size)
        ours, theirs, our_cpu, their_cpu = [], [], [], []
        for _ in range(args.repeats):
            rate, cpu = time_ingest(
                photos, executor=args.executor, workers=args.workers, keep_clean_jpeg=True
            )
            ours.append(rate)
            our_cpu.append(cpu)
            rate, cpu = time_keras(photos, args.image_size)
            theirs.append(rate)
            their_cpu.append(cpu)
            print(
                f"  ours {ours[-1]:.1f} img/s ({our_cpu[-1]:.2f} CPU ms/img), "
                f"keras {theirs[-1]:.1f} img/s ({their_cpu[-1]:.2f} CPU ms/img)",
                flush=True,
            )

        extra = []
        if args.compare_executors:
            for executor, workers in (("serial", 1), ("thread", 2), ("thread", 4), ("process", 2)):
                rates = [
                    time_ingest(photos, executor=executor, workers=workers, keep_clean_jpeg=True)[0]
                    for _ in range(args.repeats)
                ]
                extra.append(summary(f"ingest executor={executor} workers={workers}", rates))
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(
                time_ingest, photos, executor="serial", workers=1, keep_clean_jpeg=True
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        if args.reencode:
            rates = [
                time_ingest(
                    photos, executor=args.executor, workers=args.workers, keep_clean_jpeg=False
                )[0]
                for _ in range(args.repeats)
            ]
            extra.append(summary("ingest re-encoding every JPEG (q95)", rates))

    ratio = statistics.median(ours) / statistics.median(theirs)
    print(summary(f"ingest (ours, executor={args.executor})", ours))
    print(summary(f"keras image_dataset_from_directory @{args.image_size}", theirs))
    print(
        f"CPU per image (median, user+system): ours {statistics.median(our_cpu):.2f} ms, "
        f"keras {statistics.median(their_cpu):.2f} ms"
    )
    print(f"load average at the end (contention from other processes): {os.getloadavg()}")
    for line in extra:
        print(line)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")
    print(f"ratio ours/keras: {ratio:.2f}")
    lines = [
        verdict("ingest_ratio", ratio, TARGET_RATIO),
        verdict("ingest_images_per_s", statistics.median(ours), TARGET_IMAGES_PER_S),
    ]
    for line in lines:
        print(line)
    return 0 if all(line.startswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
