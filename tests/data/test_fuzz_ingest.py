"""Fuzzing ingest with hypothesis: random bytes and random zips never cause an unhandled
error and never make anything appear outside the workspace."""

from __future__ import annotations

import io
import os
import uuid
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.data.imageio import ImageRejected, check_image, load_image, prepare_for_store
from core.data.ingest import DatasetError, IngestLimits, ZipSource, ingest, inspect

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LIMITS = IngestLimits(max_file_bytes=200_000, max_total_bytes=2_000_000, max_entries=50)


def _image(fmt: str, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, fmt)
    return buffer.getvalue()


VALID = [_image("PNG", (255, 0, 0)), _image("JPEG", (0, 255, 0)), _image("GIF", (0, 0, 255))]
CONTENTS = st.one_of(
    st.sampled_from(VALID),
    st.sampled_from(VALID).map(lambda data: data[: len(data) // 2]),
    st.binary(max_size=300),
)
PART = st.one_of(
    st.sampled_from(["..", ".", "", "cats", "dogs", "__MACOSX", ".hidden", "C:", "~", " "]),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=12,
    ),
)
NAME = st.tuples(
    st.sampled_from(["", "/", "\\", "../", "..\\", "./", "/tmp/"]),
    st.lists(PART, min_size=1, max_size=4),
    st.sampled_from(["/", "\\"]),
).map(lambda t: t[0] + t[2].join(t[1]))


def _snapshot(root) -> set[str]:
    return {str(path) for path in root.rglob("*")}


@FUZZ
@given(data=st.binary(max_size=2_000))
def test_random_bytes_are_only_ever_rejected(data):
    for reader in (load_image, prepare_for_store, check_image):
        try:
            reader(data)
        except ImageRejected as rejection:
            assert rejection.reason


@FUZZ
@given(data=st.binary(max_size=2_000))
def test_random_bytes_as_a_zip_upload(data):
    report = inspect(ZipSource(data), limits=LIMITS)
    assert report.error


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(
    entries=st.lists(st.tuples(NAME, CONTENTS), min_size=0, max_size=10),
    store=st.booleans(),
)
def test_random_zips_never_escape_or_crash(tmp_path, workspace, entries, store):
    marker = f"/tmp/fuzz-{uuid.uuid4().hex}"
    # zipfile itself cannot write a member with an empty name (IndexError in writestr).
    entries = [entry for entry in entries if entry[0]] + [(marker + "/x.png", VALID[0])]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    outside_before = _snapshot(tmp_path) - _snapshot(workspace)
    if store:
        try:
            report = ingest(ZipSource(buffer.getvalue()), name="fuzz", limits=LIMITS)
        except DatasetError as error:
            report = error.report
            assert report is not None and report.error
    else:
        report = inspect(ZipSource(buffer.getvalue()), limits=LIMITS)
    assert isinstance(report.to_dict(), dict)
    assert _snapshot(tmp_path) - _snapshot(workspace) == outside_before
    assert not os.path.exists(marker)
    datasets = workspace / "datasets"
    if datasets.exists():
        assert not [p for p in datasets.iterdir() if p.name.startswith(".staging-")]
        for path in datasets.rglob("*"):
            assert path.resolve().is_relative_to(datasets.resolve())
