"""The Model page's two largest sections: the pretrained backbone (table, image size, which
weights) and the augmentation settings with a preview on the user's own images.

Each draws its widgets and returns what the user chose; the page combines the choices into a
:class:`core.config.ModelConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import streamlit as st

from core.config import FLIPS, AugmentConfig, ModelConfig
from core.models.registry import BACKBONES, DEFAULT_BACKBONE, get_backbone
from core.models.weights import store_uploaded_weights
from ui import model_view
from ui.state import set_model_config


def backbone_section(
    current: ModelConfig, dataset: Any, n_train: int, n_val: int, device: dict[str, Any]
) -> tuple[str, int, str, str]:
    """Section 1: the backbone table, the image size and what the weights start from.

    Args:
        current: The saved model choice.
        dataset: The current dataset, or None.
        n_train: Training images (for the time estimates).
        n_val: Validation images.
        device: :func:`ui.devices.device_info`.

    Returns:
        ``(backbone, image size, weights, source)``: ``weights`` as ModelConfig takes it
        (``"imagenet"``, ``"none"`` or a weights file's path), ``source`` one of
        ``"imagenet"``, ``"file"``, ``"none"``.
    """
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
        f"{n_train} training images"
        if dataset is not None
        else "1000 images (no dataset chosen yet)"
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
    # Saved before anything slower draws: a click elsewhere (another page) that cuts this
    # rerun short still keeps the backbone just picked. A combination the new backbone
    # cannot take (e.g. a retrain setting it lacks) is not saved here; the page's full check
    # reports it.
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
        cols[1].caption(
            "Random weights learn everything from your images: expect to need thousands."
        )
    return backbone, size, weights, source


def augmentation_section(current: ModelConfig, dataset: Any) -> AugmentConfig:
    """Section 4: augmentation on or off, its strengths, and a preview on the user's images.

    Returns:
        The augmentation settings (``AugmentConfig()``, i.e. off, when the toggle is off).
    """
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
    return augment
