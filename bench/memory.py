"""Benchmark 5: peak memory of a training worker must not grow with the dataset.

Generates two datasets of 224x224 JPEGs (default 20,000 and 1,000; ``--quick``: 2,000 and
200), ingests each, then for each runs the real worker process (``python -m core.training
<run>``, what ``core.training.jobs.start_run`` launches) for one
epoch of a small model at 224x224 (default ``mobilenet_v3_small``, random weights, the head
and the top block trainable, so the normal path feeds every batch from the memory-mapped
image cache; ``--path fast`` takes the embedding fast path instead), starting with no caches:
the worker decodes every image into its cache, then trains. While it runs, this script polls
``/proc/<pid>/status`` for:

- ``VmHWM``: the kernel's peak resident set (what ``top``'s RES peaks at): anonymous memory
  plus file-backed pages mapped into the process, so pages of a memory-mapped cache that was
  read count in it while they stay mapped;
- ``RssAnon``: peak anonymous memory (heap, tensors, decoded batches): memory the process
  really holds, which only swap can take away;
- ``RssFile``: peak file-backed resident pages (libraries, mapped cache files), which the
  kernel drops under memory pressure.

Two verdicts. ``memory_anon_ratio``: peak ``RssAnon`` (what a bigger dataset would make the
process really hold) of the big run is at most 1.3x the small run's (or, failing that,
``memory_anon_growth``: at most 300 MB more). ``memory_peak_rss_growth``: ``VmHWM`` (what a
person sees in ``top``) grows by at most 300 MB. 300 MB is about 2,000 cached 224x224 images
(150 KB each): a fixed working set, while a 20,000-image cache is 3 GB, so a worker that
held its cache (or a growing share of it) resident fails clearly. The engine unmaps cache
pages after reading them (``core.data.image_cache.release_pages``), so the file-backed share stays
flat too; before that fix ``VmHWM`` grew with the whole cache.

Usage::

    python bench/memory.py [--quick] [--large 20000] [--small 1000] [--backbone NAME]
        [--path full|fast] [--repeats 1]
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

TARGET_RATIO = 1.3
TARGET_GROWTH_MB = 300.0
BASES_PER_CLASS = 4


def _write_images(folder: str, label: str, class_index: int, start: int, count: int) -> int:
    """Writes ``count`` 224x224 JPEGs of one class: a few drawn shapes plus fresh noise each.

    Drawing a shape costs more than encoding a JPEG, so each class reuses a handful of drawn
    images and varies every copy with random noise (which also makes every file unique, so
    ingest keeps them all).
    """
    import io

    import numpy as np
    from PIL import Image

    from core.data.sample import SAMPLE_CLASSES, draw_shape

    shape = SAMPLE_CLASSES[class_index % len(SAMPLE_CLASSES)]
    rng = np.random.default_rng([class_index, start])
    bases = [
        np.asarray(draw_shape(shape, (224, 224), rng), dtype=np.int16)
        for _ in range(BASES_PER_CLASS)
    ]
    target = Path(folder) / label
    target.mkdir(parents=True, exist_ok=True)
    for number in range(start, start + count):
        noise = rng.integers(-12, 13, size=(224, 224, 3), dtype=np.int16)
        pixels = np.clip(bases[number % len(bases)] + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        (target / f"{label}_{number:06d}.jpg").write_bytes(buffer.getvalue())
    return count


def generate(folder: Path, images: int, classes: int = 4) -> float:
    """Writes ``images`` JPEGs in ``classes`` class folders using every core; returns seconds."""
    started = time.perf_counter()
    labels = common.class_names(classes)
    per_class = [images // classes + (1 if i < images % classes else 0) for i in range(classes)]
    chunk = 500
    jobs = []
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=common.cores(), mp_context=context) as pool:
        for index, (label, count) in enumerate(zip(labels, per_class, strict=True)):
            for start in range(0, count, chunk):
                jobs.append(
                    pool.submit(
                        _write_images, str(folder), label, index, start, min(chunk, count - start)
                    )
                )
        written = sum(job.result() for job in jobs)
    if written != images:
        raise RuntimeError(f"wrote {written} images, expected {images}")
    return time.perf_counter() - started


def measure(dataset_id: str, args, log: Path):
    """Runs one worker process on ``dataset_id`` from cold caches; returns its memory."""
    import shutil

    from core.config import ModelConfig, TrainConfig
    from core.runs.store import create_run, read_summary
    from core.training.jobs import worker_command
    from core.workspace import HOME_ENV, cache_dir, workspace_root

    shutil.rmtree(cache_dir(), ignore_errors=True)
    # Augmentation no longer leaves the fast path (cached views): a trainable top block is
    # what makes every batch come from the image cache through the whole network.
    config = TrainConfig(
        dataset=dataset_id,
        model=ModelConfig(
            backbone=args.backbone,
            weights="none",
            image_size=224,
            trainable="head" if args.path == "fast" else "top:1",
        ),
        epochs=1,
        batch_size=args.batch_size,
        seed=42,
    )
    folder = create_run(config)
    env = dict(os.environ)
    env[HOME_ENV] = str(workspace_root())
    env["PYTHONPATH"] = str(common.REPO_ROOT)
    memory = common.run_child_measuring_memory(worker_command(folder), env=env, log=log)
    summary = read_summary(folder) or {}
    if memory.returncode != 0 or summary.get("state") != "completed":
        raise RuntimeError(
            f"worker exited {memory.returncode}, state {summary.get('state')}: "
            f"{summary.get('message')} (log: {log})"
        )
    return memory, summary


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--large", type=int, default=None, help="big dataset (20000)")
    parser.add_argument("--small", type=int, default=None, help="small dataset (1000)")
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument(
        "--path",
        choices=("full", "fast"),
        default="full",
        help="full: batches from the image cache (default); fast: embeddings",
    )
    parser.set_defaults(repeats=1)
    args = parser.parse_args(argv)
    large = args.large or (2000 if args.quick else 20000)
    small = args.small or (200 if args.quick else 1000)

    from core.data.ingest import ingest

    verdicts = common.Verdicts()
    rows = []
    results = {}
    with common.workspace(args, "bench-memory-") as tmp:
        common.banner("memory: peak RSS of a worker, big dataset vs small")
        print(
            f"model {args.backbone} @ 224px, weights 'none', 1 epoch, batch {args.batch_size}, "
            f"path {args.path}; {args.repeats} run(s) per size",
            flush=True,
        )
        datasets = {}
        for images in (small, large):
            source = tmp / f"images-{images}"
            if not source.exists():
                seconds = generate(source, images)
                print(f"generated {images} 224x224 JPEGs in {seconds:.1f}s", flush=True)
            with common.Stopwatch() as watch:
                report = ingest(source, name=f"memory-{images}")
            datasets[images] = report.dataset_id
            print(f"ingested {report.num_images} images in {watch.seconds:.1f}s", flush=True)
        for images in (small, large):
            peaks = {
                "rss": common.Series(unit="MB"),
                "anon": common.Series(unit="MB"),
                "file": common.Series(unit="MB"),
            }
            for index in range(args.repeats):
                memory, summary = measure(datasets[images], args, tmp / f"worker-{images}.log")
                peaks["rss"].add(common.megabytes(memory.peak_rss))
                peaks["anon"].add(common.megabytes(memory.peak_anon))
                peaks["file"].add(common.megabytes(memory.peak_file))
                print(
                    f"  {images} images, run {index + 1}: VmHWM "
                    f"{common.megabytes(memory.peak_rss):.0f} MB, RssAnon "
                    f"{common.megabytes(memory.peak_anon):.0f} MB, RssFile "
                    f"{common.megabytes(memory.peak_file):.0f} MB, ru_maxrss "
                    f"{common.megabytes(memory.maxrss_children):.0f} MB, {memory.seconds:.0f}s "
                    f"(cache {summary.get('cache_seconds')}s, {summary.get('num_train')} train"
                    f" images, load {common.load_average()})",
                    flush=True,
                )
            results[images] = peaks
            rows.append(
                [f"{images}", peaks["rss"].cell(0), peaks["anon"].cell(0), peaks["file"].cell(0)]
            )

    print(
        f"\npeak memory (MB, median (min..max) over {args.repeats} run(s)); load average now "
        f"{common.load_average()} at {time.strftime('%H:%M:%S')}"
    )
    common.print_table(["images", "VmHWM (peak RSS)", "peak RssAnon", "peak RssFile"], rows)
    anon_big, anon_small = results[large]["anon"].median, results[small]["anon"].median
    rss_big, rss_small = results[large]["rss"].median, results[small]["rss"].median
    ratio, growth = anon_big / anon_small, anon_big - anon_small
    print(
        f"RssAnon: {ratio:.2f}x, +{growth:.0f} MB; VmHWM: {rss_big / rss_small:.2f}x, "
        f"+{rss_big - rss_small:.0f} MB ({large} vs {small} images)"
    )
    if ratio <= TARGET_RATIO:
        verdicts.check("memory_anon_ratio", ratio, TARGET_RATIO, at_most=True, unit="x")
    else:
        verdicts.check(
            "memory_anon_growth", growth, TARGET_GROWTH_MB, at_most=True, unit="MB", digits=0
        )
    verdicts.check(
        "memory_peak_rss_growth",
        rss_big - rss_small,
        TARGET_GROWTH_MB,
        at_most=True,
        unit="MB",
        digits=0,
    )
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
