"""The parity check: an export's own predict.py, in a clean process, against the app's model.

The bundle's ``predict.py`` runs with ``python -I -S`` (the bundle as working directory, this
project not importable) on the validation and test images; its probabilities are compared with
the in-app model's (the same path as ``core predict``): top-1 agreement, largest absolute
probability difference and accuracy of both per split. Results are stored in
``<run>/exports/parity.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_json
from core.runs.export_folder import EXPORTS_DIR
from core.runs.predict import image_to_array

PARITY_FILE = "parity.json"


DEFAULT_PARITY_IMAGES = 200


PARITY_TIMEOUT_S = 900


@dataclass
class ParityImages:
    """Image files for the parity check and what is known about them.

    Attributes:
        paths: Image files.
        truths: Class index of each image (-1 = unknown), or None when there are no labels.
        splits: The split each image belongs to (``val``, ``test``, ``train``, ``random``).
        source: ``val+test``, ``val``, ``train`` or ``random``.
    """

    paths: list[Path]
    truths: list[int] | None
    splits: list[str]
    source: str


def parity_files(
    run_model: Any, workdir: Path, *, limit: int = DEFAULT_PARITY_IMAGES
) -> ParityImages:
    """The images the parity check runs: validation and test images, else training ones.

    When the dataset is gone, deterministic noise images are written to ``workdir`` as PNG
    (lossless, so both sides see the same pixels).

    Args:
        run_model: The opened run.
        workdir: Scratch folder for generated images.
        limit: Most images per split.
    """
    dataset = dataset_of(run_model)
    if dataset is not None:
        index = {label: i for i, label in enumerate(run_model.labels)}
        for splits in (("val", "test"), ("train",)):
            paths: list[Path] = []
            truths: list[int] = []
            names: list[str] = []
            for split in splits:
                frame = dataset.frame(split).head(limit)
                paths += [dataset.dir / p for p in frame["image"]]
                truths += [index.get(str(label), -1) for label in frame["label"]]
                names += [split] * len(frame)
            if paths:
                source = "+".join(sorted(set(names), key=splits.index))
                return ParityImages(paths, truths, names, source)
    from PIL import Image

    rng = np.random.default_rng(0)
    size = run_model.image_size
    paths = []
    for i in range(16):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = workdir / f"noise_{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return ParityImages(paths, None, ["random"] * len(paths), "random")


def dataset_of(run_model: Any) -> Any:
    dataset_id = run_model.config.get("dataset")
    if not dataset_id:
        return None
    try:
        from core.data.store import load_dataset

        return load_dataset(dataset_id)
    except (FileNotFoundError, KeyError, ValueError):
        return None


def reference_predictions(run_model: Any, paths: list[Path]) -> np.ndarray:
    """The in-app model's probabilities on image files, the way ``core predict`` reads them."""
    from core.data.imageio import load_image

    size = run_model.image_size
    batch = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        batch[i] = image_to_array(load_image(path), size)
    return run_model.predict(batch)


def clean_env() -> dict[str, str]:
    """Environment for a process that must not see this project (no PYTHONPATH)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "OMP_NUM_THREADS")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONNOUSERSITE"] = "1"
    return env


# Runs a script with the interpreter's installed packages but without ``.pth`` hooks (an
# editable install of this project is one) and proves the project cannot be imported.
_CLEAN_BOOT = """import importlib.util, runpy, sys
sys.path[:0] = {paths!r}
if importlib.util.find_spec("core") is not None:
    raise SystemExit("not a clean process: Transfer Studio's 'core' package is importable")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def clean_python(script: str, *args: str) -> list[str]:
    """Command line running ``script`` in a Python that cannot import this project.

    ``python -I -S``: no PYTHONPATH, no user site, no script folder on the path and no ``.pth``
    files (an editable install of this project is one); only the interpreter's installed
    packages are added back. The child exits with an error if ``core`` is importable anyway.
    """
    import sysconfig

    paths = list(
        dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    )
    return [sys.executable, "-I", "-S", "-c", _CLEAN_BOOT.format(paths=paths), script, *args]


def run_clean(
    cwd: Path, script: str, *args: str, timeout: float = PARITY_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Runs ``script ARGS`` with :func:`clean_python` in ``cwd``; returns the finished process."""
    return subprocess.run(
        clean_python(script, *args),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_bundle_predict(folder: Path, paths: list[Path]) -> np.ndarray:
    """Runs ``folder/predict.py --json`` on image files in a clean process; returns probabilities.

    The child is :func:`clean_python` with the bundle as working directory, so it can only use
    the bundle and its runtime.

    Raises:
        RuntimeError: If ``predict.py`` fails or prints something unexpected.
    """
    completed = run_clean(folder, "predict.py", "--json", *[str(p) for p in paths])
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"The bundle's predict.py failed in a clean process (exit {completed.returncode}): "
            + " | ".join(tail)
        )
    rows = []
    for line in completed.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line)["probabilities"])
    if len(rows) != len(paths):
        raise RuntimeError(
            f"The bundle's predict.py answered for {len(rows)} of {len(paths)} images."
        )
    return np.asarray(rows, dtype=np.float32)


def compare(
    reference: np.ndarray, candidate: np.ndarray, truths: list[int] | None = None
) -> dict[str, Any]:
    """Parity numbers of two probability arrays of the same shape.

    Returns:
        ``{"top1_agreement", "max_abs_diff", "n"}`` plus ``accuracy`` and
        ``reference_accuracy`` when ``truths`` (class indices, -1 = unknown) is given.
    """
    if reference.shape != candidate.shape:
        raise ValueError(
            f"Output shapes differ: in-app model {reference.shape}, export {candidate.shape}"
        )
    n = len(reference)
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    result: dict[str, Any] = {
        "top1_agreement": float((ref_top == cand_top).mean()) if n else 1.0,
        "max_abs_diff": float(np.abs(reference - candidate).max()) if n else 0.0,
        "n": int(n),
    }
    if truths is not None and n:
        truth = np.asarray(truths)
        result["accuracy"] = float((cand_top == truth).mean())
        result["reference_accuracy"] = float((ref_top == truth).mean())
    return result


def parity_record(
    images: ParityImages, reference: np.ndarray, candidate: np.ndarray
) -> dict[str, Any]:
    record = compare(reference, candidate, images.truths)
    record["source"] = images.source
    splits: dict[str, Any] = {}
    if images.truths is not None:
        names = np.asarray(images.splits)
        for split in dict.fromkeys(images.splits):
            chosen = names == split
            truths = list(np.asarray(images.truths)[chosen])
            part = compare(reference[chosen], candidate[chosen], truths)
            splits[split] = {k: part[k] for k in ("n", "accuracy", "reference_accuracy")}
    record["splits"] = splits
    return record


def read_parity(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored parity results of a run: format -> parity record (empty if none or unreadable)."""
    path = Path(run_dir) / EXPORTS_DIR / PARITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, dict)}


def store_parity(run_dir: Path, fmt: str, record: dict[str, Any]) -> None:
    data = read_parity(run_dir)
    data[fmt] = record
    atomic_write_json(run_dir / EXPORTS_DIR / PARITY_FILE, data)
