"""Hold-to-record frames: each is stored once, checked like an upload, and a burst undone."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from core.data import capture, drafts


def _jpeg_b64(seed: int, size=(224, 168)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _message(recorder: str, frames: list[tuple[int, str, int]]) -> dict:
    return {
        "recorder": recorder,
        "frames": [
            {"seq": seq, "label": label, "burst": burst, "data": _jpeg_b64(seq)}
            for seq, label, burst in frames
        ],
    }


def test_a_resent_batch_is_kept_once_and_bursts_are_grouped():
    acked: dict[str, int] = {}
    first = _message("r1", [(1, "cat", 1), (2, "cat", 1), (3, "cat", 1)])
    frames, problems = capture.new_frames(first, acked)
    assert [f.seq for f in frames] == [1, 2, 3] and problems == []
    kept = capture.keep_frames(frames)
    acked["r1"] = frames[-1].seq
    assert kept.count == 3 and list(kept.bursts) == ["r1:1"]
    # The browser had not seen the answer yet: it sends 1..3 again with 4..5.
    again = _message(
        "r1", [(1, "cat", 1), (2, "cat", 1), (3, "cat", 1), (4, "dog", 2), (5, "dog", 2)]
    )
    frames, _ = capture.new_frames(again, acked)
    assert [f.seq for f in frames] == [4, 5]
    kept = capture.keep_frames(frames)
    assert kept.bursts["r1:2"][0] == "dog"
    shots = drafts.list_shots()
    assert {label: len(paths) for label, paths in shots.items()} == {"cat": 3, "dog": 2}
    with Image.open(shots["cat"][0]) as picture:
        assert picture.format == "JPEG" and picture.size == (224, 168)
    # Another page (another recorder id) starts its own numbering.
    frames, _ = capture.new_frames(_message("r2", [(1, "cat", 1)]), acked)
    assert len(frames) == 1


def test_frames_that_are_not_images_are_refused_with_a_reason():
    message = _message("r1", [(1, "cat", 1)])
    message["frames"].append(
        {"seq": 2, "label": "cat", "burst": 1, "data": base64.b64encode(b"not a jpeg").decode()}
    )
    message["frames"].append({"seq": 3, "label": "cat", "burst": 1, "data": "%%%"})
    message["frames"].append({"seq": "4", "label": "cat", "burst": 1, "data": "AAAA"})
    message["frames"].append({"seq": 5, "label": "  ", "burst": 1, "data": _jpeg_b64(5)})
    frames, problems = capture.new_frames(message, {})
    assert [f.seq for f in frames] == [1, 2, 5]
    assert len(problems) == 2 and "not valid base64" in problems[0] and "seq='4'" in problems[1]
    kept = capture.keep_frames(frames)
    assert kept.count == 1
    assert len(kept.refused) == 2
    assert kept.refused[0].startswith("Frame 2 of “cat” was not kept")
    assert len(drafts.list_shots()["cat"]) == 1


@pytest.mark.parametrize("value", [None, "text", 3, {"frames": []}, {"recorder": "r", "frames": 7}])
def test_malformed_messages_give_no_frames(value):
    frames, _ = capture.new_frames(value, {})
    assert frames == []


def test_oversized_frames_are_refused_before_decoding():
    with pytest.raises(ValueError, match="Received: 2097153"):
        capture.decode_frame("A" * (capture.MAX_FRAME_CHARS + 1))
    with pytest.raises(ValueError, match="Received: bytes"):
        capture.decode_frame(b"AAAA")


def test_undo_removes_exactly_the_burst_and_refuses_foreign_files(tmp_path):
    frames, _ = capture.new_frames(
        _message("r1", [(1, "cat", 1), (2, "cat", 2), (3, "cat", 2)]), {}
    )
    kept = capture.keep_frames(frames)
    label, burst = kept.bursts["r1:2"]
    assert capture.undo_burst(burst) == 2
    assert capture.undo_burst(burst) == 0  # already gone
    assert [p.name for p in drafts.list_shots()["cat"]] == ["shot-00001.jpg"]
    foreign = tmp_path / "shot-00001.jpg"
    foreign.write_bytes(b"mine")
    with pytest.raises(ValueError, match="Not a kept webcam picture"):
        capture.undo_burst([foreign])
    assert foreign.read_bytes() == b"mine"


def test_uploaded_files_are_checked_and_kept_as_drafts_of_their_class():
    good = base64.b64decode(_jpeg_b64(7).partition(",")[2])
    kept = capture.keep_files("cat", [("a.jpg", good), ("broken.jpg", good[:40])])
    assert kept.count == 1 and len(drafts.list_shots()["cat"]) == 1
    assert len(kept.refused) == 1 and "“broken.jpg” was not kept" in kept.refused[0]
