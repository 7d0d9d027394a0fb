"""Where a run or a model version came from: who asked, the code version, the environment.

Shown on Runs (a run's overview) and on Models (a version's card); the same table and the
same download of the run's full package list (``environment.txt``) in both.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from services.entities import Provenance
from services.errors import ServiceError

from . import state

ENVIRONMENT_FILE = "environment.txt"


def provenance_rows(origin: Provenance) -> list[dict[str, str]]:
    """Label/value rows as people read them (plain text: shown in a table, never as markdown)."""
    packages = ", ".join(f"{k} {v}" for k, v in sorted(origin.packages.items()))
    code = origin.code_version or "not recorded"
    if origin.code_commit and origin.code_sha256:
        code += f" (files sha256 {origin.code_sha256[:12]})"
    return [
        {"": "Requested by", "value": origin.requested_by},
        {"": "Trigger", "value": origin.trigger or "none: submitted directly"},
        {"": "Code", "value": code},
        {"": "Python", "value": origin.python or "not recorded"},
        {"": "Packages", "value": packages or "not recorded"},
        {"": "Environment", "value": origin.environment or "not recorded"},
    ]


def _environment_file(run_id: str):
    """The run's ``environment.txt``, read when the button is clicked (a blob read on Azure)."""
    def read() -> bytes:
        try:
            return state.workspace().jobs.artifact(run_id, ENVIRONMENT_FILE)
        except ServiceError as e:
            return f"# {e}\n".encode()
    return read


def provenance_block(origin: Provenance | None, run_id: str | None, key: str) -> None:
    """The provenance table and, when the run is known, the download of its full package list."""
    if origin is None:
        st.caption("Not recorded: trained before Tollgate recorded who asked, the code version and the "
                   "environment.")
        return
    st.dataframe(pd.DataFrame(provenance_rows(origin)), hide_index=True, width="stretch",
                 column_config={"": st.column_config.TextColumn(width=110),
                                "value": st.column_config.TextColumn(width="large")})
    if run_id and origin.environment:
        st.download_button("Full package list (pip freeze)", _environment_file(run_id),
                           file_name=f"{run_id}-{ENVIRONMENT_FILE}", mime="text/plain",
                           icon=":material/download:", key=f"{key}.environment", on_click="ignore")
