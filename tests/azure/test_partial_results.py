"""Partial results from Log Analytics are shown as partial, never as errors: the marker
types of ``services.telemetry`` survive ``st.cache_data`` (which pickles what it keeps),
and the Monitoring, Logs and Request lookup pages on the replayed workspace show the
warning *and* the data."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.drift import drift_for_endpoint
from services.entities import LogLine, RequestDetail, RequestRecord
from services.azure.replay.online import ONLINE_FIXTURES
from services.telemetry import (PartialList, PartialRequestDetail, mark, mark_frame, partial_warnings, warning_of,
                                window)

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LIMIT = "Query result set has exceeded the internal record count limit"
FIXTURE = json.loads((ONLINE_FIXTURES / "loganalytics.json").read_text())
RID = "7d3c9a52-0001-4c1e-9b1a-5f2e8c6d0a11"


def fixture_rows(view: str) -> list[dict]:
    table = FIXTURE[view]
    names = [c["name"] for c in table["columns"]]
    return [dict(zip(names, r)) for r in table["rows"]]


def _detail(cls=RequestDetail, **kw):
    record = RequestRecord(ts=None, endpoint="production", deployment="blue", model="m:1", status=200,
                           latency_ms=1.0, request_id=RID)
    return cls(record=record, log_lines=(LogLine(at=None, source="blue", text="x"),), **kw)


# --- the markers -------------------------------------------------------------------------------

def test_complete_results_carry_no_warning():
    assert mark([1, 2], None) == [1, 2] and type(mark([1, 2], None)) is list
    assert warning_of(mark_frame(pd.DataFrame({"a": [1]}), None)) is None
    assert warning_of(_detail()) is None and warning_of([]) is None and warning_of(None) is None
    assert partial_warnings([1], pd.DataFrame(), _detail()) == []


def test_partial_markers_survive_pickling_and_st_cache_data():
    calls = []

    @st.cache_data(ttl=60, show_spinner=False)
    def read(kind: str):
        calls.append(kind)
        if kind == "list":
            return mark([1, 2, 3], f"partial result: {LIMIT}")
        if kind == "frame":
            return mark_frame(pd.DataFrame({"requests": [5, 7]}), f"partial result: {LIMIT}")
        return _detail(PartialRequestDetail, warning=f"partial result: {LIMIT}")

    st.cache_data.clear()
    try:
        for kind in ("list", "frame", "detail"):
            first, kept = read(kind), read(kind)          # the second comes out of the cache (unpickled)
            assert calls.count(kind) == 1
            for value in (first, kept, pickle.loads(pickle.dumps(first))):
                assert LIMIT in warning_of(value)
        kept = read("list")
        assert isinstance(kept, PartialList) and kept.partial is True and list(kept) == [1, 2, 3]
        frame = read("frame")
        assert frame.attrs["partial"] is True and list(frame["requests"]) == [5, 7]
        detail = read("detail")
        assert isinstance(detail, PartialRequestDetail) and detail.partial and detail.record.request_id == RID
        assert partial_warnings(kept, frame, detail) == [f"partial result: {LIMIT}"]   # said once
    finally:
        st.cache_data.clear()


def test_drift_reports_say_when_the_collected_inputs_were_partial():
    class Telemetry:
        def collected_inputs(self, window, endpoint, model=None, limit=50_000):
            return mark_frame(pd.DataFrame(), f"partial result: {LIMIT}")

    class Ws:
        telemetry = Telemetry()

    reports = drift_for_endpoint(Ws(), "production", window("1h"))
    assert reports == [] and LIMIT in warning_of(reports)


# --- the pages on the replayed workspace -------------------------------------------------------

def _open(page: str, partial: tuple[str, ...], query: dict | None = None) -> AppTest:
    """The page rendered on a fresh replayed workspace whose Log Analytics answers the
    ``partial`` views with some rows and an error."""
    from ui import state
    st.cache_data.clear()
    st.cache_resource.clear()
    ws = state._workspace(state.uri())
    for view in partial:
        ws.replay.online.partial[view] = LIMIT
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if LIMIT in w.value]


def test_monitoring_shows_a_partial_answer_as_a_warning_beside_the_data(replay_env):
    at = _open("monitoring", ("stats", "series", "top_errors"))
    assert _warnings(at) and all("partial result" in w for w in _warnings(at))
    assert len(_warnings(at)) == len(set(_warnings(at)))
    assert not [e for e in at.error if LIMIT in e.value]            # a warning, not an error
    production = [r for r in fixture_rows("stats") if r["endpoint"] == "production"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == f"{sum(r['requests'] for r in production):,}"   # and the data
    assert at.get("plotly_chart") and not at.dataframe[0].value.empty


def test_monitoring_without_partial_answers_warns_of_nothing(replay_env):
    at = _open("monitoring", ())
    assert not _warnings(at) and not [w for w in at.warning if "partial result" in w.value]


def test_logs_and_request_lookup_show_partial_answers_with_their_data(replay_env):
    at = _open("logs", ("log_search",))
    assert _warnings(at)
    assert any(line["text"] in c.value for c in at.code for line in fixture_rows("log_search"))

    at = _open("request_lookup", ("lookup_logs",), {"request_id": RID})
    assert _warnings(at)
    assert RID in "\n".join(m.value for m in at.markdown) + "\n".join(s.value for s in at.success)
