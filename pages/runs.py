"""Runs: find, inspect and compare training runs; start a retraining run and watch it."""
import streamlit as st

from ui import runs_compare
from ui import runs_view as view
from ui import state
from ui.widgets import guard

st.title("Runs")
st.caption("Every training run of this workspace: its parameters, metrics, quality-gate decision and log. "
           "Tick one run for its details, two or more to compare them.")

with guard():  # app.py catches too, but a page opened by its URL can run without app.py around it
    ws_uri = state.uri()
    if not view.has_runs(ws_uri):
        view.first_run(ws_uri)
    else:
        top = st.container()  # the retraining form and the live run go first, the filters feed the table
        flt = view.filters(ws_uri)
        shown = view.find_runs(ws_uri, flt)
        view.partial_notice(shown)
        everything = view.find_runs(ws_uri, flt, with_status=False) if flt.statuses else shown
        with top:
            view.retrain_form(ws_uri)
            view.watch_panel()
        if not everything.empty:
            view.status_counts(everything, flt)
        if shown.empty:
            view.no_match()
        else:
            selected = view.table_with_picker(shown, flt)
            view.pager(shown, flt)
            runs = view.load_runs(ws_uri, tuple(selected)) if selected else []
            if len(runs) == 1:
                view.run_details(ws_uri, runs[0])
            elif runs:
                runs_compare.run_comparison(runs)
