"""Model: pick a pretrained backbone, its weights, what retrains, the head and augmentation."""

import contextlib
import dataclasses

import streamlit as st

from core.config import FLIPS, POOLINGS, AugmentConfig, ModelConfig, parse_trainable
from core.models.registry import BACKBONES, DEFAULT_BACKBONE, get_backbone
from core.models.weights import store_uploaded_weights
from ui import engine, model_view
from ui.devices import device_info
from ui.figures import block_diagram_figure
from ui.labels import trainable_phrase
from ui.router import require_router
from ui.state import model_config, set_model_config

require_router()

st.title("Model")
st.caption(
    "Start from a network that already learnt to see on ImageNet (1.3 million photos), then "
    "retrain only what your task needs. The defaults are a good first try."
)
current = model_config()
st.session_state["model_confirmed"] = True
dataset = (
    engine.dataset_or_error(st.session_state["dataset_id"])[0]
    if st.session_state["dataset_id"]
    else None
)
counts = engine.dataset_counts(dataset) if dataset is not None else None
n_train = int(counts["train"].sum()) if counts is not None else 1000
n_val = int(counts["val"].sum()) if counts is not None else 150
n_classes = len(dataset.classes) if dataset is not None else 2
device = device_info()

# ---- 1. backbone -----------------------------------------------------------------------
st.subheader("1 · Pretrained model")
frame = model_view.backbone_frame(
    n_train,
    n_val,
    size=current.image_size,
    trainable=current.trainable,
    augment=current.augment.enabled,
    cpu_cores=int(device.get("cpu_cores") or 1),
    gpu=device.get("kind") == "gpu",
    measured=model_view.measured_epochs(),
)
names = list(frame["name"])
picked = st.dataframe(
    frame.drop(columns=["name"]),
    height=35 * (len(frame) + 1) + 3,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    # Keyed by the saved choice and a counter the offline button moves on: a choice made
    # outside the table draws a new table with that row ticked, never one the browser still
    # remembers with the old row ticked.
    key=f"model_table_{current.backbone}_{st.session_state.get('model_table_round', 0)}",
    selection_default={"selection": {"rows": [names.index(current.backbone)]}},
    column_config={
        "ImageNet top-1 %": st.column_config.NumberColumn(format="%.1f"),
        "parameters (M)": st.column_config.NumberColumn(format="%.1f"),
        "notes": st.column_config.TextColumn(width="large"),
    },
)
rows = picked.selection.rows if picked is not None else []
backbone = names[rows[0]] if rows else current.backbone
spec = get_backbone(backbone)
where = (
    f"{n_train} training images" if dataset is not None else "1000 images (no dataset chosen yet)"
)
st.caption(
    f"Click a row to choose. **Times are rough estimates** for {where} on this machine "
    f"({device.get('label', 'unknown device')}), at your image size and training choice."
)

cols = st.columns([1, 2], gap="large")
sizes = model_view.size_options(backbone)
size_default = current.image_size if current.image_size in sizes else spec.default_size
size = cols[0].select_slider(
    "Image size (pixels)",
    sizes,
    size_default,
    key=f"model_size_{backbone}",
    help=f"{spec.display_name} learnt at {spec.default_size} px. Smaller is faster "
    "(160 px is about twice as fast as 224) and often accurate enough.",
)
status = model_view.weights_status(backbone, size)
sources = ["imagenet", "file", "none"]
source_names = {
    "imagenet": f"ImageNet ({model_view.WEIGHTS_WORDS[status]})",
    "file": "My weights file (.weights.h5)",
    "none": "Random (no pretraining)",
}
source_now = current.weights if current.weights in ("imagenet", "none") else "file"
source = cols[1].radio(
    "Start from",
    sources,
    sources.index(source_now),
    key=f"model_source_{backbone}",
    format_func=source_names.get,
    horizontal=True,
)
weights = source
# Saved before anything slower draws: a click elsewhere (another page) that cuts this rerun short
# still keeps the backbone just picked. A combination the new backbone cannot take (e.g. a retrain
# setting it lacks) is not saved here; the full check below reports it.
with contextlib.suppress(ValueError):
    set_model_config(
        dataclasses.replace(
            current,
            backbone=backbone,
            image_size=size,
            weights=source if source != "file" else current.weights,
        )
    )
if source == "imagenet" and status == "unavailable":
    cols[1].warning(
        f"The ImageNet weights of {spec.display_name} cannot be downloaded: this machine seems "
        "to be offline. Use the offline backbone (its weights ship with the app), upload a "
        "weights file, or start from random weights (needs much more data).",
        icon=":material/cloud_off:",
    )
    if backbone != DEFAULT_BACKBONE and cols[1].button(
        f"Use {BACKBONES[DEFAULT_BACKBONE].display_name}", key="model_use_offline"
    ):
        set_model_config(
            dataclasses.replace(current, backbone=DEFAULT_BACKBONE, weights="imagenet")
        )
        st.session_state["model_table_round"] = st.session_state.get("model_table_round", 0) + 1
        st.rerun()
elif source == "file":
    upload = cols[1].file_uploader(
        "Weights for this backbone",
        type=["h5"],
        key="model_weights_file",
        help="Weights only (saved with model.save_weights), never a whole model.",
    )
    weights = current.weights if current.weights.endswith(".weights.h5") else "none"
    if upload is not None:
        from core.models.weights import WeightsFileError

        try:
            weights = str(store_uploaded_weights(upload.name, upload.getvalue()))
        except WeightsFileError as error:
            cols[1].error(str(error))
    if weights.endswith(".weights.h5"):
        cols[1].caption(
            f"Using `{weights.rsplit('/', 1)[-1]}`; shapes are checked when training starts."
        )
    else:
        cols[1].info("No weights file yet: the run would start from random weights.")
elif source == "none":
    cols[1].caption("Random weights learn everything from your images: expect to need thousands.")

# ---- 2. what trains --------------------------------------------------------------------
st.subheader("2 · What trains")
policy_now, blocks_now = parse_trainable(current.trainable)
labels = {"head": "New last layer only", "top": "Last layer + top blocks", "all": "Everything"}
policy = (
    st.segmented_control(
        "What trains",
        list(labels),
        default=policy_now,
        key="model_policy",
        format_func=labels.get,
        label_visibility="collapsed",
    )
    or policy_now
)
st.markdown(f":material/lightbulb: {model_view.TRAINABLE_HELP[policy]}")
trainable = policy
if policy == "top":
    top = st.slider(
        "Blocks to retrain (counted from the output)",
        1,
        spec.num_blocks,
        min(max(blocks_now, 1), spec.num_blocks),
        key=f"model_top_{backbone}",
    )
    trainable = f"top:{top}"
diagram_slot = st.container()  # filled below, once the head is known

# ---- 3. head ---------------------------------------------------------------------------
st.subheader("3 · New last layers")
st.caption("The new layers that turn what the pretrained model sees into your classes.")
h = st.columns(3)
pooling = h[0].selectbox(
    "Pooling",
    POOLINGS,
    POOLINGS.index(current.pooling),
    key="model_pool",
    help="avg: the usual choice. max: keeps the strongest signals. flatten: "
    "keeps positions, many more parameters.",
)
unit_options = [0, 64, 128, 256, 512]
units_now = current.dense_units[0] if current.dense_units else 0
units = h[1].selectbox(
    "Hidden layer",
    unit_options,
    unit_options.index(units_now) if units_now in unit_options else 0,
    key="model_units",
    format_func=lambda u: "none (linear)" if u == 0 else f"{u} units",
    help="An extra dense layer can help with many classes; none is a fine start.",
)
dropout = h[2].slider(
    "Dropout",
    0.0,
    0.7,
    float(current.dropout),
    0.05,
    key="model_dropout",
    help="Randomly hides features while training, against over-fitting.",
)

tables = model_view.block_tables(
    backbone, size, pooling, (units,) if units else (), max(n_classes, 2)
)
blocks, params, cut = tables.get(trainable, tables["all"])
if policy == "top":
    views = current.augment.views if current.augment.enabled else 0
    diagram_slot.caption(
        model_view.fast_finetune_caption(
            cut, pretrained=weights != "none", n_train=n_train, n_val=n_val, views=views
        )
    )
d = diagram_slot.columns([3, 1], vertical_alignment="center")
d[0].plotly_chart(
    block_diagram_figure(
        blocks, title=f"{spec.display_name}: grey blocks stay frozen, coloured ones learn"
    ),
    key="model_diagram",
)
with d[1]:
    st.metric("Trainable parameters", f"{params['trainable']:,}")
    st.metric("Frozen parameters", f"{params['frozen']:,}")
    st.caption(f"{params['trainable'] / max(params['total'], 1):.1%} of {params['total']:,} learn.")

# ---- 4. augmentation -------------------------------------------------------------------
st.subheader("4 · Augmentation")
st.caption("Random changes to training images, so the model learns the object, not the photo.")
aug = current.augment
on = st.toggle(
    "Augment training images",
    aug.enabled,
    key="model_aug_on",
    help="With only the head training, a few augmented copies of each training image are "
    "embedded once and training stays on the fast path; when the backbone trains, every epoch "
    "augments and runs the whole network.",
)
augment = AugmentConfig()
if on:
    a = st.columns(3)
    base = aug if aug.enabled else AugmentConfig.standard()
    flip = a[0].selectbox("Flip", FLIPS, FLIPS.index(base.flip), key="model_aug_flip")
    rotation = a[0].slider(
        "Rotation (fraction of a turn)", 0.0, 0.5, base.rotation, 0.05, key="model_aug_rot"
    )
    zoom = a[1].slider("Zoom", 0.0, 0.5, base.zoom, 0.05, key="model_aug_zoom")
    shift = a[1].slider("Shift", 0.0, 0.5, base.translation, 0.05, key="model_aug_shift")
    contrast = a[2].slider("Contrast", 0.0, 0.5, base.contrast, 0.05, key="model_aug_contrast")
    bright = a[2].slider("Brightness", 0.0, 0.5, base.brightness, 0.05, key="model_aug_bright")
    views = st.slider(
        "Varied copies per image (new last layer only)",
        1,
        16,
        base.views,
        key="model_aug_views",
        help="When only the head trains, this many random versions of each training image "
        "are computed once; each epoch uses one of them. More copies: more variety, a longer "
        "first pass. Validation and test images are never changed.",
    )
    augment = AugmentConfig(
        flip=flip,
        rotation=rotation,
        zoom=zoom,
        translation=shift,
        contrast=contrast,
        brightness=bright,
        views=views,
    )
    if dataset is not None and augment.enabled:
        sample = dataset.frame("train").groupby("label").head(1).head(3)
        paths = tuple(str(dataset.dir / p) for p in sample["image"])
        grid = st.columns(12, gap="small")
        for i, row in enumerate(model_view.preview(paths, augment)):
            for k, image in enumerate(row):
                grid[4 * i + k].image(image, caption="original" if k == 0 else f"random {k}")
    elif dataset is None:
        st.caption("Choose a dataset to see these changes on your own images.")

try:
    config = ModelConfig(
        backbone=backbone,
        weights=weights,
        image_size=size,
        trainable=trainable,
        pooling=pooling,
        dense_units=(units,) if units else (),
        dropout=dropout,
        augment=augment,
    )
except ValueError as error:
    st.error(f"This combination cannot be used: {error}")
    st.stop()
set_model_config(config)
st.divider()
done = st.columns([3, 1], vertical_alignment="center")
weights_word = {"imagenet": "ImageNet", "file": "your", "none": "random"}[source]
extent = f" ({trainable_phrase(trainable).split(' +')[0]})" if policy == "top" else ""
done[0].success(
    f"**{spec.display_name}** at {size} px, {weights_word} weights, "
    f"{labels[policy].lower()}{extent}. Saved for the Train page.",
    icon=":material/check:",
)
done[1].page_link("pages/train.py", label="Next: Train", icon=":material/arrow_forward:")
