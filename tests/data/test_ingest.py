"""Ingest end to end: every layout and bad input is built by the test itself."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from core.data.ingest import (
    DatasetError,
    IngestLimits,
    UploadSource,
    ZipSource,
    ingest,
    inspect,
)
from core.data.sample import write_class_folders
from core.data.store import list_datasets, load_dataset
from core.workspace import datasets_dir

_RNG = np.random.default_rng(1234)


def image_bytes(fmt: str = "JPEG", size=(24, 24), mode: str = "RGB", **params) -> bytes:
    """A unique little image (random noise, so no two calls are duplicates)."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = _RNG.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(), mode if mode != "L" else None).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def class_folders(root, counts: dict[str, int]):
    return write_class_folders(root, counts, size=(32, 32))


def zip_of(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def no_staging_left():
    return [path.name for path in datasets_dir().iterdir() if path.name.startswith(".")] == []


def test_folder_of_class_folders_becomes_a_dataset(tmp_path):
    src = class_folders(tmp_path / "src", {"cats": 7, "dogs": 7})
    report = ingest(src, name="Pets", seed=3)
    assert report.trainable and report.error is None
    assert report.classes == {"cats": 7, "dogs": 7} and report.num_images == 14
    dataset = load_dataset(report.dataset_id)
    assert dataset.name == "Pets" and str(dataset.dir) == report.dataset_dir
    manifest = dataset.manifest
    assert list(manifest.columns) == [
        "image",
        "label",
        "split",
        "sha256",
        "width",
        "height",
        "original_name",
        "source",
    ]
    counts = dataset.counts()
    assert (counts[["train", "val", "test"]] >= 1).all().all()
    for path, original in zip(dataset.paths(), manifest["original_name"], strict=True):
        assert path.is_file() and path.suffix == ".jpg"
        assert path.name not in original  # generated name, never the uploaded one
        assert Image.open(path).format == "JPEG"
    assert report.splits["cats"]["train"] + report.splits["cats"]["val"] >= 2
    assert no_staging_left()


def test_extra_top_level_folder_and_junk_are_understood(tmp_path):
    src = tmp_path / "download"
    class_folders(src / "my photos", {"cats": 4, "dogs": 4})
    write(src / "__MACOSX" / "my photos" / "cats" / "._cat_0000.jpg", b"\x00\x05\x16\x07junk")
    write(src / "my photos" / "cats" / "._cat_0000.jpg", b"\x00\x05\x16\x07junk")
    write(src / "my photos" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(src / "my photos" / "dogs" / "Thumbs.db", b"junk")
    write(src / "my photos" / ".hidden" / "x.jpg", image_bytes())
    write(src / "my photos" / "dogs" / "desktop.ini", b"[.ShellClassInfo]")
    report = inspect(src)
    assert report.classes == {"cats": 4, "dogs": 4}
    assert report.rejected == []
    assert report.ignored >= 5
    assert report.trainable
    # The same thing zipped, as macOS Archive Utility would make it.
    entries = [
        (path.relative_to(tmp_path).as_posix(), path.read_bytes())
        for path in sorted(src.rglob("*"))
        if path.is_file()
    ]
    zipped = ingest(ZipSource(zip_of(entries)), name="zipped")
    assert zipped.classes == {"cats": 4, "dogs": 4} and zipped.rejected == []


def test_already_split_folders_are_pooled(tmp_path):
    class_folders(tmp_path / "data" / "train", {"cats": 4, "dogs": 4})
    class_folders(tmp_path / "data" / "val", {"cats": 2, "dogs": 2})
    # Different seeds per folder so images are not duplicates of each other.
    write_class_folders(tmp_path / "data" / "val", {"cats": 2, "dogs": 2}, size=(32, 32), seed=9)
    report = inspect(tmp_path / "data")
    assert set(report.classes) == {"cats", "dogs"}
    assert any("already split" in warning for warning in report.warnings)


def test_csv_next_to_a_folder_inside_a_zip_and_as_the_path(tmp_path):
    root = tmp_path / "flat"
    rows = ["filename,label"]
    for index in range(8):
        label = "ripe" if index % 2 else "raw"
        write(root / "images" / f"img{index}.png", image_bytes("PNG"))
        rows.append(f"images/img{index}.png,{label}" if index < 6 else f"img{index}.png,{label}")
    rows.append("images/missing.png,raw")
    write(root / "labels.csv", "\n".join(rows).encode())
    for source in (root, root / "labels.csv"):
        report = inspect(source)
        assert report.classes == {"ripe": 4, "raw": 4}, source
        assert {"file": "images/missing.png", "reason": "listed in labels.csv but not found"} in (
            report.rejected
        )
    entries = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in root.rglob("*.*")]
    report = ingest(ZipSource(zip_of(entries)), name="csv in zip")
    assert report.classes == {"ripe": 4, "raw": 4}
    assert load_dataset(report.dataset_id).classes == ["raw", "ripe"]


def test_loose_uploads_with_unicode_emoji_and_space_names():
    files = {
        "🐱 chats tigrés": [(f"IMG {i}.jpg", image_bytes()) for i in range(4)],
        "Hunde": [(f"C:\\fakepath\\dog{i}.png", image_bytes("PNG")) for i in range(4)]
        + [(".DS_Store", b"junk")],
    }
    report = ingest(UploadSource(files), name="Uploads")
    assert report.classes == {"Hunde": 4, "🐱 chats tigrés": 4}
    assert report.ignored == 1
    dataset = load_dataset(report.dataset_id)
    assert dataset.classes == ["Hunde", "🐱 chats tigrés"]
    assert all(path.name.isascii() for path in dataset.paths())
    assert "Hunde/dog0.png" in set(dataset.manifest["original_name"])


def test_file_over_the_configurable_limit_names_the_limit():
    big = image_bytes("PNG", size=(120, 120))
    files = {
        "a": [("big.png", big)] + [(f"{i}.jpg", image_bytes()) for i in range(3)],
        "b": [(f"{i}.jpg", image_bytes()) for i in range(3)],
    }
    report = inspect(UploadSource(files), limits=IngestLimits(max_file_bytes=len(big) - 1))
    assert report.rejected == [
        {
            "file": "a/big.png",
            "reason": f"the file is larger than the limit of "
            f"{len(big) - 1:,} bytes (max_file_bytes)",
        }
    ]
    assert report.classes == {"a": 3, "b": 3}


def test_lying_extensions_and_non_images(tmp_path):
    src = tmp_path / "src"
    class_folders(src, {"a": 3, "b": 3})
    write(src / "a" / "really_a_png.jpg", image_bytes("PNG"))
    write(src / "a" / "webp_photo.webp", image_bytes("WEBP"))
    write(src / "b" / "notes.jpg", b"these are my notes, not a photo\n")
    write(src / "b" / "iphone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" * 4)
    write(src / "b" / "logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    write(src / "b" / "broken.jpg", image_bytes(size=(64, 64))[:300])
    report = inspect(src)
    assert report.classes == {"a": 5, "b": 3}
    reasons = {row["file"]: row["reason"] for row in report.rejected}
    assert "text file" in reasons["b/notes.jpg"]
    assert "HEIC" in reasons["b/iphone.heic"]
    assert "SVG" in reasons["b/logo.svg"]
    assert "truncated" in reasons["b/broken.jpg"] or "damaged" in reasons["b/broken.jpg"]


def test_odd_modes_exif_and_animation_are_stored_as_upright_rgb(tmp_path):
    src = tmp_path / "src"
    exif = Image.Exif()
    exif[0x0112] = 6
    landscape = Image.new("RGB", (40, 20), (0, 0, 255))
    landscape.paste((255, 0, 0), (0, 0, 20, 20))
    rotated = io.BytesIO()
    landscape.save(rotated, "JPEG", exif=exif.tobytes(), quality=95)
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    sixteen = io.BytesIO()
    Image.fromarray(np.full((9, 9), 40000, np.uint16)).save(sixteen, "PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (9, 9), (0, 200, 200, 10)).save(cmyk, "JPEG")
    write(src / "odd" / "rotated.jpg", rotated.getvalue())
    write(src / "odd" / "anim.gif", gif.getvalue())
    write(src / "odd" / "sixteen.png", sixteen.getvalue())
    write(src / "odd" / "cmyk.jpg", cmyk.getvalue())
    write(src / "odd" / "rgba.png", image_bytes("PNG", mode="RGBA"))
    write(src / "odd" / "grey.png", image_bytes("PNG", mode="L"))
    class_folders(src, {"plain": 4})
    report = ingest(src, name="modes")
    assert report.classes == {"odd": 6, "plain": 4}, report.rejected
    assert any("anim.gif" in w and "first frame" in w for w in report.warnings)
    dataset = load_dataset(report.dataset_id)
    for path in dataset.paths():
        with Image.open(path) as stored:
            assert stored.format == "JPEG" and stored.mode == "RGB"
    row = dataset.manifest[dataset.manifest["original_name"] == "odd/rotated.jpg"].iloc[0]
    assert (row["width"], row["height"]) == (20, 40)
    upright = Image.open(dataset.dir / row["image"]).convert("RGB")
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 5))[0] > 200 and upright.getpixel((10, 35))[2] > 200


def test_duplicates_within_and_across_classes():
    same = image_bytes()
    noise = image_bytes()
    files = {
        "cats": [("a.jpg", same), ("a copy.jpg", same)]
        + [(f"c{i}.jpg", image_bytes()) for i in range(3)],
        "dogs": [("looks like a cat.jpg", noise)]
        + [(f"d{i}.jpg", image_bytes()) for i in range(3)],
        "foxes": [("fox.jpg", noise)] + [(f"f{i}.jpg", image_bytes()) for i in range(3)],
    }
    report = ingest(UploadSource(files), name="dups")
    groups = sorted(sorted(group) for group in report.duplicates)
    assert groups == [
        ["cats/a copy.jpg", "cats/a.jpg"],
        ["dogs/looks like a cat.jpg", "foxes/fox.jpg"],
    ]
    assert report.classes == {"cats": 4, "dogs": 4, "foxes": 3}
    assert any("label noise" in w and "fox.jpg" in w for w in report.warnings)
    assert any("duplicate" in w and "within a class" in w for w in report.warnings)
    assert len(load_dataset(report.dataset_id).manifest) == 11


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"only": 5}, "at least 2 classes but found 1 class ('only')"),
        ({}, "found no classes"),
        ({"a": 5, "b": 1}, "class 'b' has 1 image; it needs at least 3"),
        ({"a": 5, "b": 0}, "class 'b' has 0 images; it needs at least 3"),
    ],
)
def test_untrainable_sources_are_refused_with_what_to_do(tmp_path, counts, message):
    src = tmp_path / "src"
    src.mkdir()
    for label in counts:
        (src / label).mkdir()
    class_folders(src, {label: count for label, count in counts.items() if count})
    with pytest.raises(DatasetError) as caught:
        ingest(src, name="nope")
    assert message in str(caught.value)
    assert caught.value.report is not None and caught.value.report.error
    assert list_datasets() == [] and no_staging_left()
    inspected = inspect(src)
    assert not inspected.trainable and message in inspected.error


def test_small_class_is_fine_without_a_test_split(tmp_path):
    src = class_folders(tmp_path / "src", {"a": 2, "b": 5})
    with pytest.raises(DatasetError, match="add 1 more or lower"):
        ingest(src, name="x")
    report = ingest(src, name="x", test_fraction=0.0)
    counts = load_dataset(report.dataset_id).counts()
    assert counts.loc["a", "train"] == 1 and counts.loc["a", "val"] == 1
    assert (counts["test"] == 0).all()


def test_loose_files_without_class_folders_explain_themselves(tmp_path):
    for index in range(4):
        write(tmp_path / "flat" / f"{index}.jpg", image_bytes())
    report = inspect(tmp_path / "flat")
    assert "4 files are not inside any class folder" in report.error
    assert report.rejected[0]["reason"] == "not inside a class folder"


def test_zip_bomb_upload_is_refused_and_nothing_is_kept():
    images = [(f"{label}/{i}.jpg", image_bytes()) for label in ("cats", "dogs") for i in range(3)]
    bomb = zip_of([*images, ("dogs/zeros.bmp", b"\x00" * (16 * 2**20))])
    with pytest.raises(DatasetError, match="zip bomb") as caught:
        ingest(ZipSource(bomb, "innocent.zip"), name="bomb")
    assert "innocent.zip" in caught.value.report.error
    assert list_datasets() == [] and no_staging_left()


def test_zip_slip_entries_are_reported_and_nothing_escapes(tmp_path):
    entries = [(f"cats/{i}.jpg", image_bytes()) for i in range(3)]
    entries += [(f"dogs/{i}.jpg", image_bytes()) for i in range(3)]
    entries += [("../../escaped.jpg", image_bytes()), ("/tmp/abs.jpg", image_bytes())]
    archive = tmp_path / "in" / "slip.zip"
    write(archive, zip_of(entries))
    report = ingest(archive, name="slip")
    assert report.classes == {"cats": 3, "dogs": 3}
    reasons = {row["file"]: row["reason"] for row in report.rejected}
    assert "zip slip" in reasons["../../escaped.jpg"] and "absolute" in reasons["/tmp/abs.jpg"]
    assert not list(tmp_path.rglob("escaped.jpg")) and not os.path.exists("/tmp/abs.jpg")
    dataset_root = load_dataset(report.dataset_id).dir
    stored = {p.relative_to(dataset_root).parts[0] for p in dataset_root.rglob("*") if p.is_file()}
    assert stored <= {"images", "manifest.csv", "dataset.json", ".lock"}


def test_cp437_zip_names_become_readable_class_names():
    entries = [(f"CafX/{i}.jpg", image_bytes()) for i in range(3)]
    entries += [(f"QQQ/{i}.jpg", image_bytes()) for i in range(3)]
    data = zip_of(entries).replace(b"CafX/", b"Caf\x82/").replace(b"QQQ/", "猫".encode() + b"/")
    report = ingest(ZipSource(data), name="names")
    assert report.classes == {"Café": 3, "猫": 3}


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def test_decompression_bomb_and_symlinks_in_a_folder_are_rejected(tmp_path):
    src = class_folders(tmp_path / "src", {"a": 3, "b": 3})
    write(src / "a" / "bomb.png", png_header_only(20_000, 20_000))
    write(tmp_path / "secret" / "passwd.jpg", image_bytes())
    (src / "b" / "link.jpg").symlink_to(tmp_path / "secret" / "passwd.jpg")
    (src / "linked_dir").symlink_to(tmp_path / "secret", target_is_directory=True)
    report = inspect(src, limits=IngestLimits(max_pixels=1_000_000))
    reasons = {row["file"]: row["reason"] for row in report.rejected}
    assert (
        "decompression bomb" in reasons["a/bomb.png"] or "over the limit" in reasons["a/bomb.png"]
    )
    assert "symbolic link" in reasons["b/link.jpg"]
    assert "symbolic link" in reasons["linked_dir"]
    assert report.classes == {"a": 3, "b": 3}


def test_progress_is_reported_in_order(tmp_path):
    src = class_folders(tmp_path / "src", {"a": 30, "b": 30})
    calls = []
    ingest(src, name="p", progress=lambda done, total, msg: calls.append((done, total)))
    assert calls[0] == (0, 60) and calls[-1] == (60, 60)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_every_executor_gives_the_same_dataset(tmp_path, executor):
    src = class_folders(tmp_path / "src", {"a": 30, "b": 30})
    write(src / "a" / "bad.jpg", b"not an image")
    report = ingest(src, name=executor, executor=executor, workers=2, seed=1)
    assert report.classes == {"a": 30, "b": 30} and len(report.rejected) == 1
    manifest = load_dataset(report.dataset_id).manifest
    assert manifest["sha256"].is_unique and len(manifest) == 60


def test_inspect_writes_nothing(tmp_path, workspace):
    src = class_folders(tmp_path / "src", {"a": 3, "b": 3})
    before = sorted(workspace.rglob("*"))
    report = inspect(src)
    assert report.trainable and report.dataset_id is None
    assert sorted(workspace.rglob("*")) == before


def test_imbalance_is_warned_about(tmp_path):
    src = class_folders(tmp_path / "src", {"big": 15, "small": 4})
    report = inspect(src)
    assert any("imbalanced" in warning and "'small'" in warning for warning in report.warnings)


def test_bad_arguments_say_what_is_allowed(tmp_path):
    src = class_folders(tmp_path / "src", {"a": 3, "b": 3})
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        ingest(src, name="x", val_fraction=1.5)
    with pytest.raises(ValueError, match="max_side"):
        IngestLimits(max_side=3)
    with pytest.raises(DatasetError, match="No such file or folder"):
        ingest(tmp_path / "missing", name="x")
    write(tmp_path / "a.tar", b"not a zip")
    with pytest.raises(DatasetError, match="Expected a folder"):
        ingest(tmp_path / "a.tar", name="x")
    with pytest.raises(TypeError, match="files_by_class"):
        ingest(UploadSource([("a.jpg", b"")]), name="x")


def test_csv_problems_are_explained(tmp_path):
    root = tmp_path / "csvs"
    for index in range(3):
        write(root / f"{index}.png", image_bytes("PNG"))
    write(root / "notes.csv", b"name,comment\n0.png,nice\n")
    with pytest.raises(DatasetError, match="has no filename and label columns"):
        ingest(root / "notes.csv", name="x")
    write(root / "a.csv", b"filename,label\n0.png,x\n")
    write(root / "b.csv", b"file,class\n1.png,y\n")
    report = inspect(root)
    assert "Found several label CSV files (a.csv, b.csv)" in report.error
    (root / "b.csv").unlink()
    write(root / "a.csv", b"filename,label\n0.png,x\n1.png,\n0.png,y\n")
    report = inspect(root)
    assert {"file": "1.png", "reason": "no label in a.csv"} in report.rejected
    assert any("listed twice" in warning for warning in report.warnings)
    assert any("notes.csv has no filename and label columns" in w for w in report.warnings)


def test_worker_and_store_agree_on_the_layout(tmp_path):
    from core.data import decode as ingest_worker
    from core.data import store as datasets

    assert ingest_worker.IMAGES_DIR == datasets.IMAGES_DIR
    sha = "ab" + "0" * 62
    assert ingest_worker.stored_name(sha) == f"images/ab/ab{'0' * 22}.jpg"
    ingest_worker.store_image(tmp_path, sha, b"first")
    ingest_worker.store_image(tmp_path, sha, b"second")  # already stored: never rewritten
    assert (tmp_path / ingest_worker.stored_name(sha)).read_bytes() == b"first"
    assert list((tmp_path / "images" / "ab").iterdir()) == [
        tmp_path / ingest_worker.stored_name(sha)
    ]


def test_a_write_failure_is_a_clear_refusal_and_leaves_nothing(tmp_path, workspace, monkeypatch):
    from core.data import decode as ingest_worker

    src = class_folders(tmp_path / "src", {"a": 3, "b": 3})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest_worker, "_write", disk_full)
    with pytest.raises(DatasetError, match="Could not write the dataset: .*No space left"):
        ingest(src, name="full", executor="serial")
    assert list_datasets() == [] and no_staging_left()
