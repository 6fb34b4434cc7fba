"""Hostile inputs stay cheap: the cost of a deeply nested zip grows linearly with its depth,
a refused HDF5 shape bomb allocates almost nothing, and the polyglot check adds little to
keeping a clean JPEG.

- ``nesting``: ``inspect`` of a zip whose class folders sit under one chain of D wrapper
  folders, for D and 4 x D; the time ratio must stay near 4 (linear), far from 64 (cubic).
  Deeper than the cap (32) the files are rejected, so the chain here stays under it and a
  second measurement covers a chain of thousands (refused, still linear).
- ``hdf5``: peak Python allocations (``tracemalloc``) while refusing a weights file of a few
  KB that declares a 1 GB dataset.
- ``jpeg``: ``prepare_for_store`` of a clean JPEG with and without the polyglot check.
"""

from __future__ import annotations

import io
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
from _common import Stopwatch, Verdicts, banner, base_parser, print_table, repeat, workspace
from PIL import Image


def _jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _nested_zip(depth: int, per_class: int) -> bytes:
    chain = "/".join(f"w{i}" for i in range(depth))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for offset, label in enumerate(("cats", "dogs")):
            for index in range(per_class):
                image = _jpeg(offset * 100_000 + index)  # distinct images: no duplicates
                archive.writestr(f"{chain}/{label}/{index}.jpg", image)
    return buffer.getvalue()


def _inspect_seconds(data: bytes) -> float:
    from core.data.ingest import ZipSource, inspect

    with Stopwatch() as watch:
        inspect(ZipSource(data), executor="serial")
    return watch.seconds


def _hdf5_peak_bytes(folder: Path) -> float:
    import h5py

    from core.models.transfer import build_backbone
    from core.models.weights import WeightsFileError, load_weights_file

    backbone = build_backbone("mobilenet_v3_small", 32, "none")
    path = folder / "bomb.weights.h5"
    backbone.save_weights(str(path))
    with h5py.File(path, "r+") as handle:
        handle.create_dataset(
            "layers/bomb/vars/0",
            shape=(16384, 16384),
            dtype="float32",
            chunks=(512, 512),
            compression="gzip",
        )
    tracemalloc.start()
    try:
        load_weights_file(backbone, path, what="backbone mobilenet_v3_small")
    except WeightsFileError:
        pass
    else:
        raise SystemExit("the shape bomb was not refused")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _jpeg_seconds(data: bytes, checked: bool, count: int) -> float:
    from core.data import imageio

    original = imageio.jpeg_holds_only_the_image
    if not checked:
        imageio.jpeg_holds_only_the_image = lambda _data: True
    try:
        with Stopwatch() as watch:
            for _ in range(count):
                assert imageio.prepare_for_store(data, max_side=None).data is None
        return watch.seconds
    finally:
        imageio.jpeg_holds_only_the_image = original


def main() -> int:
    parser = base_parser(__doc__)
    args = parser.parse_args()
    banner("hostile inputs stay cheap")
    verdicts = Verdicts()
    depth, per_class, photos = (6, 3, 20) if args.quick else (7, 20, 300)
    with workspace(args, "bench-hostile-"), tempfile.TemporaryDirectory() as tmp:
        shallow = _nested_zip(depth, per_class)
        deep = _nested_zip(4 * depth, per_class)
        thousands = _nested_zip(5000, per_class)
        near = repeat(lambda: _inspect_seconds(shallow), args.repeats)
        far = repeat(lambda: _inspect_seconds(deep), args.repeats)
        huge = repeat(lambda: _inspect_seconds(thousands), args.repeats)
        peak = _hdf5_peak_bytes(Path(tmp)) / 2**20
        photo = _jpeg(0, size=64 if args.quick else 1024)
        plain = repeat(lambda: _jpeg_seconds(photo, False, photos), args.repeats)
        checked = repeat(lambda: _jpeg_seconds(photo, True, photos), args.repeats)
    print_table(
        ["measure", "median (min..max)"],
        [
            [f"inspect, {depth} wrapper folders (s)", near.cell(3)],
            [f"inspect, {4 * depth} wrapper folders (s)", far.cell(3)],
            ["inspect, 5000 wrapper folders, refused (s)", huge.cell(3)],
            ["peak allocations refusing a 1 GB HDF5 bomb (MB)", f"{peak:.1f}"],
            [f"keep {photos} clean JPEGs, no polyglot check (s)", plain.cell(3)],
            [f"keep {photos} clean JPEGs, with the check (s)", checked.cell(3)],
        ],
    )
    if args.quick:
        verdicts.skip("nesting_ratio", "--quick: figures mean nothing on tiny data")
    else:
        verdicts.check("nesting_4x_depth_ratio", far.median / near.median, 8.0, at_most=True)
    verdicts.check("hdf5_bomb_peak_mb", peak, 64.0, at_most=True, unit="MB")
    if not args.quick:
        verdicts.check("polyglot_check_overhead", checked.median / plain.median, 1.10, at_most=True)
    return verdicts.finish()


if __name__ == "__main__":
    sys.exit(main())
