"""Models: the registry of versions, and the candidate-vs-champion review before approval."""
import streamlit as st

from ui import models_view as view
from ui import state
from ui.widgets import guard

st.title("Models")
with guard():  # app.py catches too, but a page opened by its URL can run without app.py around it
    ws = state.workspace()
    all_versions = state.model_versions(state.uri())
    if not all_versions:
        view.empty_registry()
    else:
        name = view.pick_model_name(all_versions, ws.policy.model_name)
        versions = [v for v in all_versions if v.name == name]
        champion = next((v for v in versions if v.is_champion), None)
        view.show_flash()
        view.header(name, versions, champion)
        view.versions_table(versions, view.table_metrics(ws.policy, versions))
        st.divider()
        selected = view.pick_version(name, versions)
        if selected is not None:
            view.comparison_section(selected, champion, ws.policy)
            st.divider()
            view.version_card(selected)
