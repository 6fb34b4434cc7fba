"""Export: download the model in the format you deploy, proven to behave like the app's."""

from functools import partial
from pathlib import Path

import streamlit as st

from core.runs.artifacts import BackendError, available_formats
from core.runs.export import export_run, kotlin_snippet, snippet
from core.runs.formats import FORMAT_TITLES, FORMATS
from core.runs.parity import read_parity
from ui.eval_common import choose_run, open_run
from ui.router import require_router

require_router()

DESCRIPTIONS = {
    "keras": "The model as Keras saves it (built-in layers only, labels inside). For Python.",
    "savedmodel": "TensorFlow's serving format (TF Serving, TensorFlow C++, TF.js converter).",
    "tflite": "TFLite / LiteRT float32: Android, iOS, Raspberry Pi. Same answers as the app.",
    "tflite-fp16": "TFLite with float16 weights: half the size, practically the same answers; "
    "fast on phone GPUs.",
    "tflite-int8": "TFLite with int8 weights and float activations (dynamic range): about 4x "
    "smaller, float input and output.",
    "tflite-int8-full": "Full-integer TFLite (int8 input, activations and output), calibrated "
    "on your training images: for a Coral Edge TPU or a microcontroller.",
    "onnx": "ONNX for onnxruntime, C#, Java, C++, TensorRT...",
    "web": "A web page that runs the model in the browser (ONNX + onnxruntime-web, no server "
    "code): drop a picture or use the webcam live.",
}


def _percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def _size(value) -> str:
    return "—" if not value else f"{value / 1e6:.1f} MB"


def _exports_table(records: dict) -> list[dict]:
    rows = []
    for name in FORMATS:
        record = records.get(name)
        if not record:
            continue
        splits = record.get("splits") or {}
        test = splits.get("test") or splits.get("val") or {}
        rows.append(
            {
                "Format": FORMAT_TITLES[name],
                "Model size": _size(record.get("bytes")),
                "Top-1 agreement": _percent(record.get("top1_agreement")),
                "Max |Δ probability|": f"{record.get('max_abs_diff', 0.0):.1e}",
                "Accuracy (export)": _percent(test.get("accuracy")),
                "Accuracy (app)": _percent(test.get("reference_accuracy")),
                "Split": "test" if "test" in splits else ("val" if splits else "—"),
            }
        )
    return rows


st.title("Export")
st.caption(
    "Every export is a folder that works on its own: the model, labels.txt, a predict.py, a "
    "pinned requirements.txt and a model card. Each one is checked: its own predict.py runs in "
    "a clean Python process (Transfer Studio not importable) on your validation and test "
    "images, and its answers are compared with the app's model."
)

run_dir = choose_run("export", what="download it")
if run_dir is None:
    st.stop()

records = read_parity(run_dir)
summary = st.container()  # filled below, after a possible export in this run of the page

reasons = available_formats()
fmt = st.radio(
    "Format",
    FORMATS,
    format_func=lambda f: FORMAT_TITLES[f] + ("" if reasons[f] is None else " (unavailable)"),
    key="export_format",
    horizontal=True,
)
st.caption(DESCRIPTIONS[fmt])
if reasons[fmt] is not None:
    st.warning(reasons[fmt])

if st.button(
    "Export and check parity",
    icon=":material/output:",
    type="primary",
    disabled=reasons[fmt] is not None,
    key="export_go",
):
    try:
        with st.status(f"Exporting to {FORMAT_TITLES[fmt]}...", expanded=True) as status:
            export_run(run_dir, fmt, run_model=open_run(run_dir), progress=st.write)
            status.update(label="Export finished", state="complete", expanded=False)
        records = read_parity(run_dir)
    except (BackendError, FileNotFoundError, ValueError, RuntimeError) as error:
        st.error(f"Export failed: {error}")


table = _exports_table(records)
if table:
    with summary:
        st.subheader("Exports of this run")
        st.dataframe(table, hide_index=True, width="stretch")


def _read_bytes(path: str) -> bytes:
    """Reads the bundle only when the user clicks download (nothing kept in session state)."""
    return Path(path).read_bytes()


record = records.get(fmt)
bundle = Path(record["bundle"]) if record and record.get("bundle") else None
if record is None or bundle is None or not bundle.exists():
    st.info("Not exported in this format yet. Press the button above.", icon=":material/info:")
else:
    with st.container(border=True):
        cols = st.columns(4)
        agreement = record["top1_agreement"]
        cols[0].metric("Top-1 agreement", f"{agreement:.1%}", help="Same top class as the app")
        cols[1].metric("Max |Δ probability|", f"{record['max_abs_diff']:.1e}")
        cols[2].metric("Images checked", record["n"], help=f"From the {record['source']} split(s)")
        cols[3].metric("Model size", _size(record.get("bytes")))
        splits = record.get("splits") or {}
        if splits:
            acc_cols = st.columns(len(splits) * 2)
            for index, (split, values) in enumerate(splits.items()):
                name = {"val": "validation", "test": "test"}.get(split, split)
                exported, app = values.get("accuracy"), values.get("reference_accuracy")
                acc_cols[2 * index].metric(
                    f"Accuracy of this export ({name})",
                    _percent(exported),
                    delta=None if exported is None else f"{exported - app:+.1%} vs app",
                )
                acc_cols[2 * index + 1].metric(f"Accuracy of the app ({name})", _percent(app))
        quantization = record.get("quantization")
        if quantization:
            q_in, q_out = quantization["input"], quantization["output"]
            st.caption(
                f"Integer tensors: input {q_in['dtype']} (scale {q_in['scale']:.6g}, zero point "
                f"{q_in['zero_point']}), output {q_out['dtype']} (scale {q_out['scale']:.6g}, "
                f"zero point {q_out['zero_point']}). The model card explains how to feed it."
            )
        st.download_button(
            f"Download {FORMAT_TITLES[fmt]} (zip, {_size(record.get('bundle_bytes'))})",
            data=partial(_read_bytes, str(bundle)),
            file_name=f"{run_dir.name}-{fmt}.zip",
            mime="application/zip",
            icon=":material/download:",
            type="primary",
            key="export_download",
            on_click="ignore",
        )
        if agreement < 1.0 and fmt not in ("tflite-int8", "tflite-int8-full"):
            st.warning("The export disagrees with the app on some images; please report it.")
        if not record.get("clean_process"):
            st.warning("This export was checked by an older version: export it again.")
        st.caption(f"Saved in `{Path(record['path']).parent}` (and the zip beside it).")

    size = open_run(run_dir).image_size
    st.subheader("Use it")
    if fmt == "web":
        st.markdown(
            "Unzip it, then serve the folder with any static file server and open the page "
            "(browsers do not run it from a file:// address):"
        )
        st.code("cd web\npython -m http.server 8000\n# open http://localhost:8000/", "bash")
    st.markdown("`pip install -r requirements.txt`, then `python predict.py photo.jpg`:")
    st.code(snippet(fmt, size=size), language="python")
    if fmt.startswith("tflite") and not record.get("quantization"):
        st.markdown("On Android (Kotlin, LiteRT):")
        st.code(kotlin_snippet(fmt, size=size), language="kotlin")

st.subheader("Reproducible recipe")
st.caption(
    "A standalone plain-Keras script plus this run's config.json that retrains the same model "
    "from a folder of class folders: read exactly what the app did."
)
recipe_path = run_dir / "exports" / "recipe.zip"
if st.button("Prepare recipe", icon=":material/description:", key="export_recipe"):
    from core.runs.recipe import write_recipe

    try:
        write_recipe(run_dir, recipe_path)
    except (FileNotFoundError, ValueError) as error:
        st.error(f"Could not write the recipe: {error}")
if recipe_path.exists():
    st.download_button(
        "Download recipe (train.py + config.json)",
        data=partial(_read_bytes, str(recipe_path)),
        file_name=f"{run_dir.name}-recipe.zip",
        mime="application/zip",
        icon=":material/download:",
        key="export_recipe_download",
        on_click="ignore",
    )
