"""Monitoring, Logs, Request lookup and Drift pages, and endpoint health on Overview.

The workspace is a demo copy with synthetic telemetry, log files and a promote in the
audit trail written straight to disk (``monitoring_data.seed_monitoring``): no endpoint
runs. Every number asserted is one that was written.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from services.drift import drift_for_endpoint, is_feature_only
from services.entities import AuditRecord, Deployment, Endpoint, EndpointHealth, HealthStatus
from services.local.workspace import LocalWorkspace
from services.telemetry import window
from tests.conftest import copy_workspace
from tests.contract.helpers import snapshot
from tests.pages.helpers import as_read
from tests.pages.monitoring_data import PROMOTER, ROW, V1, V2, Seeded, seed_drift, seed_monitoring
from ui import drift_view as dv, logs_view, lookup_view, monitoring_view as mv, state

APP = str(Path(__file__).resolve().parents[2] / "app.py")

# lines whose search text would mean something else to SQL, LIKE or a regex
HOSTILE_LINES = [
    ("blue", "client sent name=' OR 1=1 -- and was refused"),
    ("blue", "progress 100% done"),
    ("blue", "plain words only here"),
    ("green", "pattern .* appears literally"),
    ("green", "brackets [a-z]+ and (group) and back\\slash"),
    ("gateway", "semicolon; DROP TABLE requests"),
]


def add_deployment(root: Path, endpoint: str, name: str, version: int) -> None:
    """A deployment the database says should run (as after `tollgate.py down`): nothing runs."""
    ws = LocalWorkspace(root)
    try:
        ws.endpoints.list()  # creates the endpoints' rows
        with ws.db.write() as c:
            c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, desired, state,"
                      " created_at, created_by) VALUES (?, ?, 'diabetes-regressor', ?, 100, 'running', 'healthy', ?,"
                      " 'qa@contoso.com')", (endpoint, name, version, datetime.now(timezone.utc).isoformat()))
    finally:
        ws.close()


@pytest.fixture(scope="module")
def seeded(demo_ws_path) -> Seeded:
    seeded = seed_monitoring(demo_ws_path, extra_log_lines=HOSTILE_LINES)
    add_deployment(demo_ws_path, "production", "green", 2)  # v2 serves production, as the telemetry says
    return seeded


@pytest.fixture
def env(seeded, demo_env):
    return seeded


def open_page(page: str, query: dict | None = None, actor: str | None = None) -> AppTest:
    from streamlit import cache_data
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    if actor:
        at.session_state[state.ACTOR] = actor
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if query:
        at.query_params.update(query)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return as_read("\n".join(str(e.value) for e in getattr(at, kind)))


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(v) -> list:
    """A trace's x or y as a list: plotly sends numeric arrays base64-encoded (``bdata``)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def page_links(at: AppTest) -> list:
    return [el.proto for el in at.get("page_link")]


# --- Monitoring ---------------------------------------------------------------------

ONE_HOUR = {"window": "1h"}  # the seeded traffic spans 40 minutes (and one request 2 hours ago)

def test_monitoring_per_version_table_equals_what_was_written(env):
    at = open_page("pages/monitoring.py", ONE_HOUR)
    assert at.selectbox(key=mv.ENDPOINT_KEY).value == "production"
    table = frame_with(at, "requests")
    rows = {(r["deployment"], r["model version"]): r for _, r in table.iterrows()}
    for (deployment, model), counts in env.counts.items():
        row = rows[(deployment or "—", model or "—")]
        assert row["requests"] == counts["requests"]
        assert row["failures"] == counts["failures"]
        assert row["client errors"] == counts["client_errors"]
        assert row["failure rate"] == pytest.approx(counts["failures"] / counts["requests"])
    assert len(rows) == len(env.counts)  # the 2-hour-old request is outside the 1h window
    total = sum(c["requests"] for c in env.counts.values())
    assert {m.label: m.value for m in at.metric}["Requests"] == f"{total:,}"
    # latencies: v1's 200s took 3-8 ms, v2's 8-14 ms (histogram buckets: ±2.5 %)
    assert rows[("blue", V1)]["p50 ms"] == pytest.approx(5.5, abs=3)
    assert 8 * 0.97 <= rows[("green", V2)]["p50 ms"] <= 14 * 1.03


def test_monitoring_figure_has_a_trace_per_version_and_the_promote_marker(env):
    at = open_page("pages/monitoring.py", ONE_HOUR)
    main = next(f for f in figures(at) if len(f["data"]) > 3)
    names = {t.get("name") for t in main["data"] if t.get("showlegend", True) is not False}
    assert {"v1", "v2", "no model", "release events"} <= names
    # one colour per version, the same in each of the three rows
    for version in ("v1", "v2"):
        colours = {t["line"]["color"] for t in main["data"] if t.get("legendgroup") == f"diabetes-regressor:{version[1]}"}
        assert len(colours) == 1
    events = next(t for t in main["data"] if t.get("name") == "release events")
    assert len(events["x"]) == 1
    hover = events["hovertext"][0]
    assert "promote" in hover and PROMOTER in hover and "v2 approved by lead" in hover
    assert "green (v2) 0 → 100 %" in hover and "blue (v1) 100 → 0 %" in hover  # deployments named by model
    shapes = main["layout"].get("shapes", [])
    assert len(shapes) == 3  # the promote's line through each row
    # the requests-per-minute series of v2 covers exactly what v2 served
    bins = window("1h").bin_seconds
    v2 = next(t for t in main["data"] if t.get("name") == "v2" and t.get("xaxis", "x") == "x")
    assert sum(y * bins / 60 for y in values(v2["y"])) == pytest.approx(env.count("green", V2))


def test_monitoring_status_mix_and_top_errors_link_to_lookup(env):
    at = open_page("pages/monitoring.py", ONE_HOUR)
    status = next(f for f in figures(at) if f["layout"].get("barmode") == "stack")
    per_code: dict[str, int] = {}
    for t in status["data"]:
        for code, n in zip(values(t["x"]), values(t["y"])):
            per_code[code] = per_code.get(code, 0) + n
    assert per_code == {"0 · no answer": 1, "200": 144, "400": 3, "500": 3}
    links = [p for p in page_links(at) if p.page.endswith("request_lookup")]
    labels = [p.label for p in links]
    assert env.error_id in labels  # the newest 500 is its group's sample
    assert any("ValueError: Input contains NaN" in c.value for c in at.code)
    slow = frame_with(at, "latency ms")
    assert slow.iloc[0]["request"].endswith("request_id=req-none-0001")  # 5 s: the unanswered one
    assert list(slow["latency ms"]) == sorted(slow["latency ms"], reverse=True)


def test_monitoring_window_6h_includes_the_old_request(env):
    at = open_page("pages/monitoring.py", ONE_HOUR)
    at.button_group(key=mv.WINDOW_KEY).set_value("6h").run()
    table = frame_with(at, "requests")
    blue = table[table["deployment"] == "blue"].iloc[0]
    assert blue["requests"] == env.count("blue", V1) + 1


def test_monitoring_health_badge_names_the_reason(env):
    at = open_page("pages/monitoring.py")
    markdown = texts(at, "markdown")
    assert ":red-badge[:material/error: down]" in markdown
    assert "the endpoint does not answer (gateway not running)" in markdown
    at = open_page("pages/monitoring.py", {"endpoint": "staging"})
    assert ":gray-badge[:material/block: not deployed]" in texts(at, "markdown")  # not "down": nothing to be down


def test_monitoring_empty_endpoint_says_what_to_do(env):
    at = open_page("pages/monitoring.py", {"endpoint": "staging"})
    assert at.selectbox(key=mv.ENDPOINT_KEY).value == "staging"
    info = texts(at, "info")
    assert "No requests reached staging in the last 15m" in info, "no window has any: the health window"
    assert "tollgate.py simulate --env staging" in info
    assert not at.get("plotly_chart")


def test_monitoring_auto_refresh_is_off_by_default(env):
    at = open_page("pages/monitoring.py", ONE_HOUR)
    assert at.toggle(key=mv.REFRESH_KEY).value is False
    at.toggle(key=mv.REFRESH_KEY).set_value(True).run()
    assert not at.exception
    assert frame_with(at, "requests")["requests"].sum() == sum(c["requests"] for c in env.counts.values())


def test_monitoring_opens_on_the_window_its_health_line_describes(env):
    at = open_page("pages/monitoring.py")
    assert at.button_group(key=mv.WINDOW_KEY).value == "15m"  # [health] window_minutes = 15
    assert "last 15 min" in texts(at, "markdown")
    assert at.get("plotly_chart"), "production had requests in the last 15 minutes: a chart, not a message"


def test_monitoring_opens_on_the_shortest_window_with_requests():
    has = {"6h", "24h", "7d", "30d"}  # e.g. a burst three hours ago
    assert mv.opening_window(15, has.__contains__) == "6h"
    assert mv.opening_window(15, lambda since: True) == "15m"
    assert mv.opening_window(20, lambda since: True) == "1h", "the smallest window covering the health window"
    assert mv.opening_window(15, lambda since: False) == "15m", "no data anywhere: the health window"
    assert mv.opening_window(60 * 24 * 90, lambda since: False) == "30d"


# --- Logs ----------------------------------------------------------------------------

def all_log_lines(root: Path, endpoint: str = "production") -> list[tuple[str, str]]:
    folder = root / "endpoints" / endpoint
    return [(p.stem, line) for p in sorted(folder.glob("*.log")) for line in p.read_text().splitlines() if line]


def shown_lines(at: AppTest) -> list[str]:
    """The log block's lines without the ``[source]`` prefix."""
    block = next(c.value for c in at.code if "[" in c.value and "]" in c.value)
    return [line.split("] ", 1)[1].lstrip() if line.startswith("[") else line for line in block.splitlines()]


def search_logs(text: str, range_: str = logs_view.ALL_TIME, tail: int = 5000) -> AppTest:
    at = open_page("pages/logs.py")
    at.selectbox(key=logs_view.KEY.format("range")).set_value(range_)
    at.selectbox(key=logs_view.KEY.format("tail")).set_value(tail)
    at.text_input(key=logs_view.KEY.format("text")).input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_logs_shows_the_latest_lines_of_all_sources_newest_last(env, demo_ws_path):
    at = open_page("pages/logs.py")
    assert at.selectbox(key=logs_view.KEY.format("source")).options == [logs_view.ALL, "blue", "green", "gateway"]
    at.selectbox(key=logs_view.KEY.format("tail")).set_value(50).run()
    lines = shown_lines(at)
    written = sorted((line for _, line in all_log_lines(demo_ws_path)), key=lambda line: line[:23])
    assert len(written) > 50 and len(lines) == 50
    stamps = [line[:23] for line in lines]
    assert stamps == sorted(stamps)  # oldest first: the newest at the bottom
    assert set(lines) <= set(written) and stamps[-1] == written[-1][:23] and stamps[0] >= written[-50][:23]
    assert any(b.label == "Download" for b in at.get("download_button"))
    assert "The last 50 line(s)" in texts(at, "caption")


@pytest.mark.parametrize("needle", ["' OR 1=1 --", "%", "_", ".*", "[a-z]+", "(group)", "\\", "; DROP TABLE",
                                    "req-v2-0042"])
def test_log_search_is_a_literal_substring(env, demo_ws_path, needle):
    at = search_logs(needle)
    expected = [line for _, line in all_log_lines(demo_ws_path) if needle.lower() in line.lower()]
    assert expected, "the fixture wrote a line for each needle"
    assert sorted(shown_lines(at)) == sorted(expected)


def test_log_search_by_source(env, demo_ws_path):
    at = open_page("pages/logs.py")
    at.selectbox(key=logs_view.KEY.format("source")).set_value("gateway")
    at.selectbox(key=logs_view.KEY.format("range")).set_value(logs_view.ALL_TIME).run()
    gateway = [line for source, line in all_log_lines(demo_ws_path) if source == "gateway"]
    block = next(c.value for c in at.code if "gateway" in c.value)
    assert block.splitlines() == gateway  # one source: no prefix, exactly its lines


def test_log_search_without_match_says_what_to_check(env):
    at = search_logs("no-such-text-anywhere")
    info = texts(at, "info")
    assert "No lines containing “no-such-text-anywhere”" in info
    assert "plain text, case-insensitive" in info
    assert not any("[blue]" in c.value for c in at.code)


# --- Request lookup -----------------------------------------------------------------

def test_lookup_from_the_query_param_shows_payloads_and_log_lines(env):
    at = open_page("pages/request_lookup.py", {"request_id": env.sample_id})
    assert at.text_input(key=lookup_view.INPUT).value == env.sample_id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "200" and metrics["Model version"] == "v2" and metrics["Deployment"] == "green"
    codes = [c.value for c in at.code]
    request = next(c for c in codes if '"data"' in c)
    assert json.loads(request) == {"data": [ROW]}
    assert json.dumps(ROW) in request.replace(", ", ", ")  # the feature row stays on one line
    response = next(c for c in codes if "predictions" in c)
    assert json.loads(response) == {"predictions": [env.sample_prediction]}
    logs = next(c for c in codes if "request_id=" in c)
    assert f"request_id={env.sample_id}" in logs and "[green]" in logs


def test_all_logs_from_a_request_searches_for_its_id(env):
    at = open_page("pages/request_lookup.py", {"request_id": env.sample_id})
    [link] = [p for p in page_links(at) if p.page.endswith("logs")]
    params = dict(part.split("=", 1) for part in link.query_string.split("&"))
    assert params["q"] == env.sample_id and params["endpoint"] == "production"
    assert params["range"] in ("15m", "1h"), "the shortest range holding a request of the last 20 minutes"

    logs = open_page("pages/logs.py", params)
    assert logs.text_input(key=logs_view.KEY.format("text")).value == env.sample_id
    assert logs.selectbox(key=logs_view.KEY.format("range")).value == params["range"]
    shown = next(c.value for c in logs.code if env.sample_id in c.value).splitlines()
    assert shown and all(env.sample_id in line for line in shown)
    logs.text_input(key=logs_view.KEY.format("text")).input("").run()
    assert logs.text_input(key=logs_view.KEY.format("text")).value == "", "then the search is the user's"


def test_covering_range_is_the_shortest_that_holds_the_age():
    from datetime import timedelta
    assert logs_view.covering_range(timedelta(minutes=3)) == "15m"
    assert logs_view.covering_range(timedelta(minutes=20)) == "1h"
    assert logs_view.covering_range(timedelta(hours=2)) == "6h"
    assert logs_view.covering_range(timedelta(days=45)) == logs_view.ALL_TIME


def test_lookup_typed_shows_the_error(env):
    at = open_page("pages/request_lookup.py")
    at.text_input(key=lookup_view.INPUT).input(f"  {env.error_id} ").run()
    assert at.query_params["request_id"] == env.error_id  # shareable address
    assert env.error_message in texts(at, "error")
    assert "HTTP 500 · server error" in texts(at, "error")
    assert {m.label: m.value for m in at.metric}["Model version"] == "v1"


def test_lookup_unknown_id_says_what_to_check(env):
    at = open_page("pages/request_lookup.py", {"request_id": "no-such-request"})
    warning = texts(at, "warning")
    assert "No request with id `no-such-request`" in warning
    assert "x-request-id" in warning and "workspace" in warning
    assert not at.metric


def test_lookup_empty_input_explains_where_ids_come_from(env):
    at = open_page("pages/request_lookup.py")
    assert "follow a link from the Monitoring page" in texts(at, "caption")
    assert not at.warning and not at.metric


# --- data shaping --------------------------------------------------------------------

def record(id_, at, action, target, before=None, after=None, actor="qa@contoso.com", comment=""):
    return AuditRecord(id_, at, actor, "qa", action, target, before, after, comment)


def test_release_events_keep_the_endpoints_traffic_changes_in_the_window():
    now = datetime.now(timezone.utc)
    w = window("1h", end=now)
    records = [
        record(1, now - timedelta(minutes=30), "deploy.started", "staging/blue", after={"model": V1}),
        record(2, now - timedelta(minutes=29), "deploy", "staging", {"traffic": {}}, {"traffic": {"blue": 100}}),
        record(3, now - timedelta(minutes=20), "promote.started", "staging/green", after={"model": V2}),
        record(4, now - timedelta(minutes=19), "promote.failed", "staging/green",
               after={"model": V2, "summary": "1 of 6 cases failed"}),
        record(5, now - timedelta(minutes=10), "rollback", "staging", {"traffic": {"blue": 0, "green": 100}},
               {"traffic": {"blue": 100, "green": 0}}, comment="slow"),
        record(6, now - timedelta(minutes=5), "approve", f"{V2}"),
        record(7, now - timedelta(minutes=5), "deploy", "production", {"traffic": {}}, {"traffic": {"blue": 100}}),
        record(8, now - timedelta(hours=2), "deploy", "staging", {"traffic": {}}, {"traffic": {"blue": 100}}),
        record(9, now - timedelta(minutes=4), "key.regenerate", "staging/primary"),
    ]
    events = mv.release_events(records, "staging", w, "diabetes-regressor")
    assert [e.action for e in events] == ["deploy", "promote.failed", "rollback"]
    assert events[0].what == "traffic: blue (v1) 0 → 100 %"
    assert events[1].what == "green (v2): 1 of 6 cases failed; traffic unchanged"
    assert events[2].what == "traffic: blue (v1) 0 → 100 %, green (v2) 100 → 0 %"
    assert "“slow”" in mv.event_hover(events[2])


def test_complete_series_fills_zero_rate_only_while_a_version_served():
    end = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    w = window("1h", end=end)
    size = w.bin_seconds
    t0 = pd.Timestamp(end - timedelta(minutes=40)).floor(f"{size}s")
    series = pd.DataFrame({"bin": [t0, t0 + pd.Timedelta(seconds=3 * size)], "endpoint": "p", "model": V1,
                           "requests": [2, 4], "failures": [0, 1], "client_errors": [0, 0], "rpm": [4.0, 8.0],
                           "failure_rate": [0.0, 0.25], "p50_ms": [5.0, 6.0], "p95_ms": [7.0, 8.0],
                           "p99_ms": [9.0, 9.5]})
    full = mv.complete_series(series, w)
    assert list(full["rpm"]) == [4.0, 0.0, 0.0, 8.0]           # the gap is zero traffic
    assert full["failure_rate"].isna().tolist() == [False, True, True, False]  # and no rate
    assert full["bin"].min() == t0 and full["bin"].max() == t0 + pd.Timedelta(seconds=3 * size)


def test_version_colours_are_stable_and_distinct():
    a = mv.version_colours([V2, "diabetes-regressor:10", V1, mv.NO_MODEL])
    b = mv.version_colours([V1, V2, "diabetes-regressor:10"])
    assert a[V1] == b[V1] and a[V2] == b[V2] and a["diabetes-regressor:10"] == b["diabetes-regressor:10"]
    assert len({a[V1], a[V2], a["diabetes-regressor:10"], a[mv.NO_MODEL]}) == 4


def test_pretty_json_keeps_rows_on_one_line_and_shows_bad_payloads_raw():
    text, language = lookup_view.pretty('{"data": [[1, 2.5, 3]], "columns": ["a", "b", "c"]}')
    assert language == "json" and "[1, 2.5, 3]" in text and '"columns": ["a", "b", "c"]' in text
    assert json.loads(text) == {"data": [[1, 2.5, 3]], "columns": ["a", "b", "c"]}
    assert lookup_view.pretty('{"data": [[1, 2') == ('{"data": [[1, 2', None)
    assert lookup_view.pretty(None) == ("(none)", None)


# --- Overview: health per endpoint -----------------------------------------------------

def deployment(name: str, state_: str, traffic: int) -> Deployment:
    return Deployment(endpoint="production", name=name, model_name="diabetes-regressor", model_version=1,
                      traffic=traffic, state=state_, restarts=0, last_error=None, created_at=datetime.now(timezone.utc),
                      created_by="qa@contoso.com")


def test_health_badge_per_status():
    ep = Endpoint("production", "http://127.0.0.1:1/score", (deployment("blue", "healthy", 100),), "key", "a…b",
                  "c…d", True)
    degraded = EndpointHealth("production", HealthStatus.DEGRADED, ("failure rate 5.0% > 2.0%",), 15, 100, 0.05,
                              30.0, 1, 1)
    assert mv.health_badge(degraded, ep) == ("degraded", "orange", ":material/warning:",
                                             ["failure rate 5.0% > 2.0%"])
    idle = EndpointHealth("production", HealthStatus.IDLE, ("3 request(s)",), 15, 3, 0.0, None, 1, 1)
    assert mv.health_badge(idle, ep)[:2] == ("idle", "gray")
    nothing = Endpoint("staging", "", (), "key", "a…b", "c…d", False)
    down = EndpointHealth("staging", HealthStatus.DOWN, ("the endpoint does not answer",), 15, 0, 0.0, None, 0, 0)
    assert mv.health_badge(down, nothing)[:2] == ("not deployed", "gray")
    retired = Endpoint("staging", "", (deployment("blue", "stopped", 0),), "key", "a…b", "c…d", False)
    assert mv.health_badge(down, retired)[:2] == ("not deployed", "gray")


def test_overview_shows_a_down_endpoint_with_its_reason(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "ws")
    add_deployment(path, "production", "blue", 1)  # should run, but nothing is running
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    from streamlit import cache_data
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Health :red-badge[down]" in texts(at, "markdown")
    assert "the endpoint does not answer (gateway not running)" in texts(at, "caption")
    links = [p for p in page_links(at) if p.page.endswith("monitoring")]
    assert [p.label for p in links] == ["Monitoring · production"]  # staging has nothing deployed


# --- Drift ---------------------------------------------------------------------------

DRIFT_ROWS = 600


@pytest.fixture(scope="module")
def drifted(seeded, demo_ws_path) -> list[str]:
    """Staging: 600 answered requests of v2's training rows with bmi shifted, 2-3 hours ago."""
    return seed_drift(demo_ws_path, "staging", V2, rows=DRIFT_ROWS, shift={"bmi": 6.0},
                      now=datetime.now(timezone.utc) - timedelta(hours=2))


@pytest.fixture
def drift_env(drifted, env):
    return drifted


def open_drift(endpoint: str = "staging", actor: str | None = None, window_: str | None = None) -> AppTest:
    return open_page("pages/drift.py", {"endpoint": endpoint, **({"window": window_} if window_ else {})}, actor)


def test_drift_shows_the_services_numbers_and_a_failing_feature(drift_env, demo_ws_path):
    at = open_drift()
    assert at.selectbox(key=dv.KEY.format("endpoint")).value == "staging"
    assert ":red-badge[drift: fail]" in texts(at, "markdown")
    ws = LocalWorkspace(demo_ws_path)
    try:
        [report] = drift_for_endpoint(ws, "staging", window("24h"))
    finally:
        ws.close()
    table = frame_with(at, "PSI")
    assert list(table["feature"]) == [f.feature for f in report.features]
    for (_, row), f in zip(table.iterrows(), report.features):
        assert row["PSI"] == pytest.approx(f.psi) and row["KS"] == pytest.approx(f.ks)
        assert row["live rows"] == DRIFT_ROWS
        assert row["status"] == dv.STATUS_TEXT[f.status]
    bmi = table.set_index("feature").loc["bmi"]
    assert bmi["status"] == "❌ fail" and bmi["PSI"] > 0.25
    plot = next(f for f in figures(at) if f["layout"].get("barmode") == "overlay")
    titles = {a["text"]: a["font"]["color"] for a in plot["layout"]["annotations"]}
    bmi_title = next(t for t in titles if t.startswith("bmi ·"))
    assert titles[bmi_title] == dv.STATUS_COLOUR[report.feature("bmi").status]
    assert len([t for t in plot["data"] if t.get("showlegend")]) == 2  # reference and live, once


def test_drift_under_min_rows_is_not_judged_and_says_how_many(drift_env):
    at = open_drift("production", window_="1h")
    markdown = texts(at, "markdown")
    assert ":gray-badge[not judged]" in markdown
    assert "not judged:" in markdown and "at least 500 needed" in markdown


def test_drift_without_collected_inputs_says_so(drift_env):
    at = open_drift(window_="1h")  # staging's requests are 2-3 hours old
    assert "No inputs collected from staging in the last 1h" in texts(at, "info")
    assert at.button(key=dv.KEY.format("register")).disabled


@pytest.mark.parametrize("who, has", [("support@contoso.com", "support"), ("nobody@contoso.com", "no role")])
def test_register_collected_inputs_is_refused_to_support_and_to_no_role(drift_env, demo_ws_path, who, has):
    ws = LocalWorkspace(demo_ws_path)
    try:
        before = snapshot(ws)
        at = open_drift(actor=who)
        at.button(key=dv.KEY.format("register")).click().run()
        dialog = texts(at, "markdown")
        assert "feature-only: these requests carried no labels" in dialog
        assert "cannot be used for training until it is labelled" in dialog
        assert f"{DRIFT_ROWS:,} feature rows" in dialog
        assert "you need the role admin or ml_lead" in texts(at, "warning") and "will be refused" in texts(at, "warning")
        at.button(key=dv.KEY.format("dialog.confirm")).click().run()
        assert f"{who} ({has}) may not register collected inputs" in texts(at, "error")
        assert "that needs admin or ml_lead" in texts(at, "error")
        assert snapshot(ws) == before, "nothing registered, nothing audited"
    finally:
        ws.close()


def test_register_collected_inputs_as_the_lead_makes_a_feature_only_version(drift_env, demo_ws_path):
    at = open_drift(actor="lead@contoso.com")
    at.button(key=dv.KEY.format("register")).click().run()
    at.button(key=dv.KEY.format("dialog.confirm")).click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert "Registered **staging-inputs:1**: 600 rows, feature-only" in texts(at, "success")
    assert not any(b.key == dv.KEY.format("dialog.confirm") for b in at.button)  # closed
    ws = LocalWorkspace(demo_ws_path)
    try:
        [version] = [v for v in ws.datasets.all_versions() if v.name == "staging-inputs"]
        assert version.rows == DRIFT_ROWS and is_feature_only(version, ws.policy.target)
        assert version.created_by == "lead@contoso.com"
    finally:
        ws.close()
