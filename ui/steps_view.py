"""A pipeline run's steps on the Runs page: status, start, end and the error of each, read when opened."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from services.entities import Run
from services.telemetry import warning_of

from . import state
from .widgets import STATUS_ICON, escaped, fmt_duration, guard


@st.cache_data(ttl=state.READ_TTL, show_spinner=False)
def run_steps(ws_uri: str, run_id: str) -> list[Run]:
    return state.workspace().jobs.steps(run_id)


def steps_frame(steps: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([{
        "step": s.display_name, "status": f"{STATUS_ICON[s.status]} {s.status.value}", "started": s.started_at,
        "ended": s.ended_at, "duration": fmt_duration(s.duration_s) if s.started_at else "—",
        "error": s.error or "",
    } for s in steps], columns=["step", "status", "started", "ended", "duration", "error"])


def render_steps(ws_uri: str, run: Run) -> None:
    """Collapsed; opening it reads the steps (one request to run history)."""
    box = st.expander("Pipeline steps", key=f"runs.steps.{run.id}", on_change="rerun", icon=":material/account_tree:")
    if not box.open:
        return
    with box, guard():
        steps = run_steps(ws_uri, run.id)
        warning = warning_of(steps)
        if warning:
            st.warning(escaped(warning), icon=":material/warning:")  # names what Azure sent
        if not steps:
            st.caption("No steps: a command job, or a pipeline that has not started any yet.")
            return
        st.dataframe(steps_frame(steps), hide_index=True, width="stretch", column_config={
            "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "ended": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "error": st.column_config.TextColumn("error", width="large"),  # the service's text, shown as text
        })
