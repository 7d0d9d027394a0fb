"""Models: the registry of versions, and the candidate-vs-champion review before approval."""
import streamlit as st

from ui import models_view as view
from ui import state
from ui.widgets import guard

st.title("Models")
with guard():  # app.py catches too, but a page opened by its URL can run without app.py around it
    ws, uri = state.workspace(), state.uri()
    names = state.model_names(uri)
    if not names:
        view.empty_registry()
    else:
        name = view.pick_model_name(names, ws.policy.model_name)
        frame = view.registry_frame(uri, name, tuple(r.metric for r in ws.policy.gate_rules))
        champion = state.champion(uri, name)
        view.show_flash()
        view.header(name, frame, champion)
        view.versions_table(frame)
        st.divider()
        number = view.pick_version(name, frame)
        if number is not None:
            selected = state.model_version(uri, name, number)
            view.comparison_section(selected, champion, ws.policy)
            st.divider()
            view.version_card(selected)
