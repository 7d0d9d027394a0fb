"""The review of a version registered outside Tollgate: evaluated on a dataset version and target
column the reviewer picks, against the champion on the same rows (``services.picked_evaluation``).

Nothing is computed until the reviewer asks (loading data and models is the slow part); the result
is kept in the session for that version and pick. A read: anyone who may open the page may ask.
"""
from __future__ import annotations

import streamlit as st

from services.entities import Comparison, DatasetVersion, ModelVersion
from services.errors import ServiceError
from services.picked_evaluation import evaluate_on

from . import state
from .widgets import code, show_error

RESULT = "models.picked.result.{}"


def target_choices(dv: DatasetVersion) -> list[str]:
    """The columns a model can predict, from the version's profile (numeric ones: they have a mean);
    empty when the version was never profiled (registered outside Tollgate): the reviewer types it."""
    return [c.name for c in dv.columns if c.mean is not None]


def picked_comparison(mv: ModelVersion, champion: ModelVersion | None, policy_target: str) -> Comparison | None:
    """The form, and the comparison once the reviewer asked for it with the pick shown (else None)."""
    uri = state.uri()
    readable = [d for d in state.dataset_versions(uri) if not d.unreadable]
    if not readable:
        st.caption("No dataset version Tollgate can read to evaluate it on: register one on the Datasets page.")
        return None
    with st.container(border=True):
        st.markdown(f"**Evaluate v{mv.version} on data you pick** — "
                    + (f"champion v{champion.version} is scored on the same rows; " if champion else "")
                    + "nothing is recorded (it is not a gate decision).")
        left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
        by_ref = {d.ref: d for d in readable}
        picked = by_ref[left.selectbox("Dataset version", list(by_ref), key=f"models.picked.dataset.{mv.ref}",
                                       help="Any readable version of any dataset of the workspace")]
        columns = target_choices(picked)
        if columns:
            target = middle.selectbox("Target column", columns, key=f"models.picked.target.{mv.ref}.{picked.ref}",
                                      index=columns.index(policy_target) if policy_target in columns else len(columns) - 1,
                                      help="The numeric column the model predicts")
        else:
            target = middle.text_input("Target column", value=policy_target, key=f"models.picked.target.{mv.ref}",
                                       help="This version was never profiled: type the column the model predicts")
        asked = right.button("Evaluate", type="primary", icon=":material/science:", width="stretch",
                             key=f"models.picked.go.{mv.ref}")
        key, pick = RESULT.format(mv.ref), (picked.ref, target, champion.ref if champion else None)
        if asked:
            try:
                with st.spinner(f"Scoring v{mv.version}" + (f" and champion v{champion.version}" if champion else "")
                                + f" on {picked.ref}…"):
                    st.session_state[key] = (pick, evaluate_on(state.workspace(), mv.name, mv.version, picked.name,
                                                               picked.version, target))
            except ServiceError as e:
                st.session_state.pop(key, None)
                show_error(e)
                return None
        held = st.session_state.get(key)
        if held is None or held[0] != pick:
            st.caption(f"Pick the data and the column {code(mv.ref)} predicts, then Evaluate.")
            return None
        return held[1]
