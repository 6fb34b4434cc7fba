"""Model: pick a pretrained backbone, its weights, what retrains, the head and augmentation."""

import streamlit as st

from core.config import POOLINGS, ModelConfig, parse_trainable
from core.models.registry import get_backbone
from ui import engine, model_view
from ui.devices import device_info
from ui.figures import block_diagram_spec
from ui.labels import trainable_phrase
from ui.model_sections import augmentation_section, backbone_section
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
backbone, size, weights, source = backbone_section(current, dataset, n_train, n_val, device)
spec = get_backbone(backbone)

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
diagram_data, diagram_spec = block_diagram_spec(
    blocks, title=f"{spec.display_name}: grey blocks stay frozen, coloured ones learn"
)
d[0].vega_lite_chart(diagram_data, diagram_spec, key="model_diagram")
with d[1]:
    st.metric("Trainable parameters", f"{params['trainable']:,}")
    st.metric("Frozen parameters", f"{params['frozen']:,}")
    st.caption(f"{params['trainable'] / max(params['total'], 1):.1%} of {params['total']:,} learn.")

# ---- 4. augmentation -------------------------------------------------------------------
augment = augmentation_section(current, dataset)

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
