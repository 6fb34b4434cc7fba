"""Runs: every training run (from the app or the CLI), compared side by side."""

import streamlit as st

from core.runs.listing import list_runs
from core.runs.metrics import MetricsReader
from ui import engine, runs_view
from ui.figures import compare_figure
from ui.router import require_router
from ui.state import set_run
from ui.text import md

require_router()

st.title("Runs")
st.caption(
    "Every run on this machine, whether started here or with `python -m core train`. "
    "Tick one to open it, two or more to compare them."
)

runs = list_runs()
if not runs:
    st.info("No runs yet. Start one on the **Train** page.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

dataset_names = {}
for info in runs:
    dataset_id = (info.config or {}).get("dataset", "")
    if dataset_id and dataset_id not in dataset_names:
        found = engine.dataset_or_error(dataset_id)[0]
        dataset_names[dataset_id] = found.name if found is not None else f"{dataset_id} (deleted)"
table = runs_view.runs_frame(runs, dataset_names)
picked = st.dataframe(
    table.drop(columns=["run id"]),
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="multi-row",
    key="runs_table",
    placeholder="–",
    column_config={
        "date": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        "val accuracy": st.column_config.NumberColumn(
            "val acc.",
            format="percent",
            help="Validation accuracy of the saved model (the best epoch, restored).",
        ),
        "test accuracy": st.column_config.NumberColumn(
            "test acc.",
            format="percent",
            help="Accuracy of the saved model on the test images, never used to pick it.",
        ),
    },
)
chosen = [runs[i] for i in (picked.selection.rows if picked is not None else [])]

if len(chosen) == 1:
    info = chosen[0]
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].markdown(
        f"Selected: **{md(table.iloc[runs.index(info)]['name'])}** · {md(info.run_id)}"
    )
    if info.problems:
        st.warning(md(info.status.message if info.broken else "; ".join(info.problems)))
    if cols[1].button("Open in Train", icon=":material/model_training:", key="runs_open_train"):
        set_run(info.run_id)
        st.switch_page("pages/train.py", query_params={"run": info.run_id})
    if cols[2].button(
        "Open in Evaluate",
        icon=":material/fact_check:",
        key="runs_open_eval",
        disabled=not info.has_model,
    ):
        set_run(info.run_id)
        st.switch_page("pages/evaluate.py", query_params={"run": info.run_id})
elif len(chosen) >= 2:
    st.subheader(f"Comparing {len(chosen)} runs")
    labels = runs_view.short_labels(chosen, table)
    histories = {labels[c.run_id]: MetricsReader(c.dir).all() for c in chosen}
    charts = st.columns(2)
    charts[0].plotly_chart(compare_figure(histories, "val_accuracy"), key="runs_cmp_acc")
    charts[1].plotly_chart(compare_figure(histories, "val_loss"), key="runs_cmp_loss")
    differences = runs_view.setting_differences({labels[c.run_id]: c.config or {} for c in chosen})
    st.markdown("**Settings that differ**")
    if differences.empty:
        st.caption("The runs used the same settings (only the random start differs).")
    else:
        st.dataframe(differences, width="stretch")
else:
    st.caption("Tick a row to open the run; tick two or more to compare their curves.")

with st.expander("All settings of the runs", icon=":material/tune:"):
    st.dataframe(
        runs_view.settings_table({r.run_id: r.config or {} for r in runs}), width="stretch"
    )
