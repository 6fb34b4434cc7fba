"""Predict: classify new pictures (uploads or the webcam) and see where the model looked."""

import streamlit as st

from core.runs.predict import predict_sources
from ui.eval_common import choose_run, explainer, open_run
from ui.evaluate_figures import probability_figure
from ui.router import require_router
from ui.text import md

require_router()

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
MAX_GRADCAM = 12

st.title("Predict")
st.caption(
    "Upload pictures, take one with your webcam, or watch the live camera. Each picture is "
    "rotated upright (EXIF) and converted to RGB exactly like your training images."
)

run_dir = choose_run("predict", what="classify new pictures")
if run_dir is None:
    st.stop()

source = (
    st.segmented_control(
        "Pictures from",
        ["Upload", "Webcam", "Live camera"],
        default="Upload",
        key="predict_source",
        help="Live camera: the model runs in your browser on every frame (nothing is uploaded).",
    )
    or "Upload"
)
if source == "Live camera":
    from ui.live_predict import live_prediction

    live_top = st.slider("Classes to show", 1, 10, 3, key="predict_live_top")
    live_prediction(run_dir, top=live_top, key="predict_live")
    st.stop()
files: list[tuple[str, bytes]] = []
if source == "Upload":
    uploads = st.file_uploader(
        "Images", type=IMAGE_TYPES, accept_multiple_files=True, key="predict_uploads"
    )
    files = [(upload.name, upload.getvalue()) for upload in uploads or []]
else:
    photo = st.camera_input("Take a photo", key="predict_camera")
    if photo is not None:
        files = [("webcam.jpg", photo.getvalue())]

options = st.columns(2)
k = options[0].slider("Classes to show", 1, 10, 3, key="predict_top_k")
show_cam = options[1].toggle("Grad-CAM overlay", value=True, key="predict_gradcam")

if not files:
    st.info("Add one or more pictures to see the model's answer.", icon=":material/image:")
    st.stop()

run_model = open_run(run_dir)
with st.spinner(f"Classifying {len(files)} picture(s)..."):
    results = predict_sources(run_model, files, k=k)

failed = [entry for entry in results if "error" in entry]
if failed:
    st.warning(
        f"{len(failed)} file(s) could not be read and were skipped:\n\n"
        + "\n".join(f"- **{entry['file']}**: {entry['error']}" for entry in failed)
    )

good = [
    (entry, payload)
    for entry, (_, payload) in zip(results, files, strict=True)
    if "error" not in entry
]
if show_cam and len(good) > MAX_GRADCAM:
    st.caption(f"Grad-CAM is shown for the first {MAX_GRADCAM} pictures.")

for index, (entry, payload) in enumerate(good):
    from core.data.imageio import load_image

    picture = load_image(payload)
    with st.container(border=True):
        st.markdown(
            f"**{md(entry['file'])}** → **{md(entry['label'])}** ({entry['confidence']:.1%})"
        )
        cols = st.columns([1, 1, 2]) if show_cam else st.columns([1, 2])
        cols[0].image(picture, width="stretch")
        if show_cam and index < MAX_GRADCAM:
            from core.runs.gradcam import overlay

            heatmap, _ = explainer(run_dir).explain(picture, run_model.labels.index(entry["label"]))
            cols[1].image(overlay(picture, heatmap), caption="Grad-CAM", width="stretch")
        cols[-1].plotly_chart(
            probability_figure(entry["top_k"], k=k),
            key=f"predict_bars_{index}",
            config={"displayModeBar": False},
        )
