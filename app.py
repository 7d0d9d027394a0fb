"""Tollgate — the operator console. ``streamlit run app.py`` (or ``make run``)."""
import streamlit as st

from services.errors import ServiceError
from ui import chrome
from ui.widgets import show_error

st.set_page_config(page_title="Tollgate", page_icon="🚦", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/model_training:"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
    st.Page("pages/endpoints.py", title="Endpoints", icon=":material/api:"),
    st.Page("pages/releases.py", title="Releases", icon=":material/rocket_launch:"),
    st.Page("pages/schedules.py", title="Schedules", icon=":material/event_repeat:"),
]
# support's pages: endpoint health and telemetry, logs, one request, data drift
MONITOR = [
    st.Page("pages/monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    st.Page("pages/logs.py", title="Logs", icon=":material/article:"),
    st.Page("pages/request_lookup.py", title="Request lookup", icon=":material/manage_search:"),
    st.Page("pages/drift.py", title="Drift", icon=":material/query_stats:"),
]

page = st.navigation({"": PAGES, "Monitor": MONITOR})
try:
    chrome.sidebar()
    page.run()
except ServiceError as e:  # anything a page did not handle itself: a message, never a traceback
    show_error(e)
