"""Export: download the model in the format you deploy, proven to behave like the app's."""

from functools import partial
from pathlib import Path

import streamlit as st

from core.runs.export import (
    FORMAT_TITLES,
    FORMATS,
    BackendError,
    available_formats,
    export_run,
    kotlin_snippet,
    read_parity,
    snippet,
)
from ui.eval_common import choose_run, open_run
from ui.router import require_router

require_router()

DESCRIPTIONS = {
    "keras": "The model as Keras saves it, labels and preprocessing inside. For Python.",
    "savedmodel": "TensorFlow's serving format (TF Serving, TF.js converter, TensorFlow C++).",
    "tflite": "TFLite / LiteRT float32: Android, iOS, Raspberry Pi and microcontrollers.",
    "tflite-int8": "TFLite with int8 weights: about 4x smaller, slightly different answers.",
    "onnx": "ONNX for onnxruntime, C#, Java, JavaScript, TensorRT...",
}

st.title("Export")
st.caption(
    "Every export is checked: the exported file runs in its own runtime on your validation "
    "images and its answers are compared with the app's model."
)

run_dir = choose_run("export", what="download it")
if run_dir is None:
    st.stop()

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
    except (BackendError, FileNotFoundError, ValueError, RuntimeError) as error:
        st.error(f"Export failed: {error}")


def _read_bytes(path: str) -> bytes:
    """Reads the bundle only when the user clicks download (nothing kept in session state)."""
    return Path(path).read_bytes()


record = read_parity(run_dir).get(fmt)
bundle = Path(record["bundle"]) if record and record.get("bundle") else None
if record is None or bundle is None or not bundle.exists():
    st.info("Not exported in this format yet. Press the button above.", icon=":material/info:")
else:
    with st.container(border=True):
        cols = st.columns(3)
        agreement = record["top1_agreement"]
        cols[0].metric("Top-1 agreement", f"{agreement:.1%}", help="Same top class as the app")
        cols[1].metric("Max |Δ probability|", f"{record['max_abs_diff']:.1e}")
        cols[2].metric("Images checked", record["n"], help=f"From the {record['source']} split")
        st.download_button(
            f"Download {FORMAT_TITLES[fmt]} ({record['bytes'] / 1e6:.1f} MB model, zip)",
            data=partial(_read_bytes, str(bundle)),
            file_name=f"{run_dir.name}-{fmt}.zip",
            mime="application/zip",
            icon=":material/download:",
            type="primary",
            key="export_download",
            on_click="ignore",
        )
        if "accuracy" in record:
            acc_cols = st.columns(2)
            acc_cols[0].metric(
                "Accuracy of this export",
                f"{record['accuracy']:.1%}",
                delta=f"{record['accuracy'] - record['reference_accuracy']:+.1%} vs app",
            )
            acc_cols[1].metric("Accuracy of the app's model", f"{record['reference_accuracy']:.1%}")
        if agreement < 1.0 and fmt != "tflite-int8":
            st.warning("The export disagrees with the app on some images; please report it.")
        st.caption(f"Saved in `{Path(record['path']).parent}` with labels.txt and a README.")

    size = open_run(run_dir).image_size
    st.subheader("Use it")
    st.code(snippet(fmt, size=size), language="python")
    if fmt.startswith("tflite"):
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
