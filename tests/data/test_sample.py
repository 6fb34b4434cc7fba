"""The generated datasets: the shape sample and the upscaled handwritten digits."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.data.ingest import ingest
from core.data.sample import write_digits_folders


def test_digits_are_ten_class_folders_of_real_handwriting_that_ingest(tmp_path, workspace):
    folder = write_digits_folders(tmp_path / "digits", per_class=3, size=48)
    classes = sorted(path.name for path in folder.iterdir())
    assert classes == [f"digit_{d}" for d in range(10)]
    files = sorted(folder.glob("digit_*/*.png"))
    assert len(files) == 30
    with Image.open(files[0]) as image:
        assert image.size == (48, 48) and image.mode == "RGB"
        pixels = np.asarray(image)
    # Ink on a dark background, not a blank or constant picture.
    assert pixels.max() > 200 and pixels.min() < 30
    report = ingest(folder, name="digits")
    assert report.dataset_id and report.rejected == []
    assert report.num_images == 30 and len(report.classes) == 10
