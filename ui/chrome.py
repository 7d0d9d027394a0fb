"""The frame around every page: sidebar with the workspace and who is acting."""
from __future__ import annotations

import streamlit as st

from . import state


def sidebar() -> None:
    ws = state.workspace()
    with st.sidebar:
        kind = "Local workspace" if ws.info.kind == "local" else "Azure ML workspace"
        st.caption(f"**{kind}**  \n`{ws.info.description}`")
        if ws.info.kind == "local":
            st.text_input("Acting as (local mode: no sign-in)", key=state.ACTOR, value="local-user",
                          help="In the local workspace anyone can pick an identity; the name goes into the audit trail.")
