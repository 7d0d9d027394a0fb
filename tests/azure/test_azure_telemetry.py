"""Azure telemetry and logs through the real ``LogsQueryClient`` on the replay transport.

The replay answers Log Analytics from ``services/azure/fixtures/online/loganalytics.json``
by the view each query names in its first line; it does not execute KQL, so these tests
check what the adapter sends (the KQL module's query, the escaped literals, the
workspace id and timespan) and what it makes of the answer: the fixture's numbers as
entities, the model version per (endpoint, deployment), partial results marked as
partial (not raised), and errors as clear messages.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pandas as pd
import pytest

from services.azure import kql
from services.azure.replay import arm_error
from services.azure.replay.online import ONLINE_FIXTURES
from services.azure.telemetry import AzureLogs, AzureTelemetry, PartialList, PartialRequestDetail, warning_of
from services.azure.workspace import open_replay
from services.errors import BackendUnavailable, Forbidden, InvalidInput, NotFound
from services.telemetry import window

FIXTURE = json.loads((ONLINE_FIXTURES / "loganalytics.json").read_text())
M1, M3 = "diabetes-regressor:1", "diabetes-regressor:3"
RID = "7d3c9a52-0001-4c1e-9b1a-5f2e8c6d0a11"
WINDOW = window("1h", end=datetime(2026, 11, 21, 11, 0, tzinfo=timezone.utc))


@pytest.fixture
def ws():
    workspace = open_replay()
    yield workspace
    workspace.close()


@pytest.fixture
def tel(ws):
    return AzureTelemetry(ws.logs_client, ws.settings.log_analytics_workspace_id, ws.endpoints)


@pytest.fixture
def logs(ws):
    return AzureLogs(ws.logs_client, ws.settings.log_analytics_workspace_id, ws.endpoints)


def queries(ws) -> list[tuple[str, str]]:
    return ws.replay.online.queries


def log_calls(ws):
    return [c for c in ws.replay.calls if c.host == "api.loganalytics.io"]


def rows(view: str) -> list[dict]:
    t = FIXTURE[view]
    return [dict(zip([c["name"] for c in t["columns"]], r)) for r in t["rows"]]


# --- the views return the fixture's numbers --------------------------------------------------

def test_stats_are_the_fixture_numbers_with_the_model_of_each_endpoints_deployment(ws, tel):
    stats = tel.stats(WINDOW)
    assert not isinstance(stats, PartialList) and warning_of(stats) is None
    got = {(s.endpoint, s.deployment): s for s in stats}
    for r in rows("stats"):
        s = got[(r["endpoint"], r["deployment"])]
        assert (s.requests, s.failures, s.client_errors) == (r["requests"], r["failures"], r["client_errors"])
        assert (s.p50_ms, s.p95_ms, s.p99_ms) == (r["p50_ms"], r["p95_ms"], r["p99_ms"])
    # "blue" serves v1 on production and v3 on staging: each row keeps its own endpoint's model
    assert got[("production", "blue")].model == M1 and got[("staging", "blue")].model == M3
    assert got[("production", "blue")].failure_rate == pytest.approx(6 / 1200)

    call = log_calls(ws)[-1]
    assert (call.method, call.path) == ("POST", f"/v1/workspaces/{ws.settings.log_analytics_workspace_id}/query")
    assert call.json["query"].startswith("// tollgate:stats\nAmlOnlineEndpointTrafficLog")
    assert call.json["timespan"].startswith("2026-11-21T10:00:00")       # the window, as ISO 8601
    assert call.headers["Authorization"] == "Bearer replay-token"


def test_an_endpoint_filter_enters_the_query_as_an_escaped_literal(ws, tel):
    stats = tel.stats(WINDOW, "production")
    assert [(s.endpoint, s.model) for s in stats] == [("production", M1)]
    text = queries(ws)[-1][1]
    assert f"EndpointName =~ {kql.kql_string('production')}" in text
    assert 'case(DeploymentName == "blue", "diabetes-regressor:1", "")' in text   # production's own mapping
    hostile = 'production" or 1==1 | take 1 //'
    tel.stats(WINDOW, hostile)
    assert kql.kql_string(hostile) in queries(ws)[-1][1]


def test_series_bins_per_endpoint_and_model(tel):
    df = tel.series(WINDOW)
    assert list(df.columns) == ["bin", "endpoint", "model", "requests", "failures", "client_errors", "rpm",
                                "failure_rate", "p50_ms", "p95_ms", "p99_ms"]
    prod = df[df.endpoint == "production"]
    assert list(prod.requests) == [r["requests"] for r in rows("series") if r["endpoint"] == "production"]
    assert set(prod.model) == {M1} and set(df[df.endpoint == "staging"].model) == {M3}
    assert list(prod.rpm) == [400 * 60 / WINDOW.bin_seconds] * 3
    assert list(prod.failure_rate) == pytest.approx([2 / 400] * 3)
    assert str(df.bin.dtype).startswith("datetime64") and df.bin.iloc[0] == pd.Timestamp("2026-11-21T10:00:00Z")
    assert "partial" not in df.attrs


def test_status_mix_queries_each_endpoint_when_deployment_names_repeat(ws, tel):
    df = tel.status_mix(WINDOW)
    views = [v for v, _ in queries(ws)]
    assert views == ["status_mix", "status_mix"]                        # staging, production
    mix = {(r.status, r.model): r.requests for r in df.itertuples()}
    assert mix == {(r["status"], r["model"]): r["requests"] for r in rows("status_mix")}
    one = tel.status_mix(WINDOW, "staging")
    assert {(r.status, r.model): r.requests for r in one.itertuples()} == {(200, M3): 76, (400, M3): 4}


def test_top_errors_slowest_and_lookup(tel):
    errors = tel.top_errors(WINDOW, "production", limit=5)
    assert [(e.message, e.status, e.count) for e in errors] == [
        (r["message"], r["status"], r["count"]) for r in rows("top_errors") if r["endpoint"] == "production"]
    assert errors[0].models == (M1,) and errors[0].first_seen == datetime(2026, 11, 21, 10, 0, 4, tzinfo=timezone.utc)

    slow = tel.slowest(WINDOW, limit=3)
    assert [(r.request_id, r.status, r.latency_ms) for r in slow] == [
        (r["request_id"], r["status"], r["latency_ms"]) for r in rows("slowest")]
    assert slow[0].error == "upstream request timeout" and slow[2].model == M3

    detail = tel.lookup(RID)
    assert not isinstance(detail, PartialRequestDetail)
    assert (detail.record.request_id, detail.record.status, detail.record.model) == (RID, 200, M1)
    assert detail.log_lines[0].text.endswith(f"x-request-id={RID}") and len(detail.log_lines) == 2
    with pytest.raises(NotFound, match="no request with id 'no-such-id'"):
        tel.lookup("no-such-id")
    with pytest.raises(InvalidInput):
        tel.lookup("")


def test_collected_inputs_say_clearly_when_unavailable(ws, tel):
    with pytest.raises(BackendUnavailable, match="collected inputs are unavailable") as e:
        tel.collected_inputs(WINDOW, "production")
    assert "AML_APP_INSIGHTS_ENABLED" in e.value.hint
    assert log_calls(ws) == []
    on = AzureTelemetry(ws.logs_client, ws.settings.log_analytics_workspace_id, ws.endpoints, collect_inputs=True)
    df = on.collected_inputs(WINDOW, "production")
    # two complete records; the third was cut by the exporter and is skipped
    assert list(df.request_id) == [RID, "7d3c9a52-0002-4c1e-9b1a-5f2e8c6d0a12"]
    assert list(df.columns[:10]) == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert df.loc[0, "bmi"] == 32.1 and set(df.model) == {M1}
    assert queries(ws)[-1][1].startswith("// tollgate:collected_inputs\nAppTraces")


def test_log_sources_and_search(ws, logs):
    assert logs.sources("production") == ["blue", "gateway"]
    lines = logs.search("production", text="TIMEOUT", tail=50)
    assert [line.text for line in lines] == ["2026-11-21T10:01:19,000 | gunicorn.error | WARNING | "
                                             "Worker timeout: request took 30 s"]
    assert kql.kql_string("TIMEOUT") in queries(ws)[-1][1] and "| top 50 by at desc" in queries(ws)[-1][1]
    everything = logs.search("production")
    assert [line.source for line in everything] == ["blue", "blue", "gateway"]
    with pytest.raises(InvalidInput):
        logs.search("production", tail=0)


# --- partial results: shown as partial, not as errors ------------------------------------------

def test_partial_results_are_returned_and_marked(ws, tel, logs):
    online = ws.replay.online
    for view in ("stats", "series", "lookup_logs", "log_search", "status_mix"):
        online.partial[view] = "Query result set has exceeded the internal record count limit"
    stats = tel.stats(WINDOW)
    assert isinstance(stats, PartialList) and stats.partial and len(stats) == 2
    assert "partial result" in stats.warning and "record count limit" in warning_of(stats)
    df = tel.series(WINDOW)
    assert df.attrs["partial"] is True and "record count limit" in warning_of(df) and len(df) == 4
    assert warning_of(tel.status_mix(WINDOW, "staging"))
    detail = tel.lookup(RID)
    assert isinstance(detail, PartialRequestDetail) and detail.record.request_id == RID
    assert "record count limit" in detail.warning and len(detail.log_lines) == 2
    found = logs.search("production")
    assert isinstance(found, PartialList) and len(found) == 3
    # complete answers stay unmarked
    assert warning_of(tel.top_errors(WINDOW)) is None and warning_of(tel.slowest(WINDOW)) is None


# --- errors: clear messages ----------------------------------------------------------------------

@pytest.mark.parametrize("status,error,match", [
    (403, Forbidden, "Log Analytics Reader"),
    (429, BackendUnavailable, "throttling"),
    (500, BackendUnavailable, r"service error \(500\)"),
    (400, InvalidInput, "Log Analytics refused the query"),
])
def test_log_analytics_errors_have_clear_messages(ws, tel, status, error, match):
    code = {403: "InsufficientAccessError", 429: "TooManyRequests", 500: "InternalServerError",
            400: "BadArgumentError"}[status]
    ws.replay.online.log_errors["stats"] = arm_error(status, code, f"replayed {status}",
                                                     {"Retry-After": "1"} if status == 429 else None)
    with pytest.raises(error) as e:
        tel.stats(WINDOW)
    text = str(e.value) + " " + (e.value.hint or "")
    assert re.search(match, text), text
    sent = [v for v, _ in queries(ws) if v == "stats"]
    assert len(sent) > 1 if status in (429, 500) else len(sent) == 1        # retried with back-off


def test_no_log_analytics_workspace_is_a_clear_message(ws):
    tel = AzureTelemetry(ws.logs_client, "", ws.endpoints)
    with pytest.raises(BackendUnavailable, match="Log Analytics workspace") as e:
        tel.stats(WINDOW)
    assert "TOLLGATE_LOG_ANALYTICS_WORKSPACE_ID" in e.value.hint


# --- HTTP requests: bounded ----------------------------------------------------------------------

def test_a_monitoring_render_sends_a_bounded_number_of_requests(ws, tel):
    t = ws.replay
    t.reset_calls()
    tel.stats(WINDOW)
    series = tel.series(WINDOW, "production")
    mix = tel.status_mix(WINDOW, "production")
    errors = tel.top_errors(WINDOW, "production")
    slow = tel.slowest(WINDOW, "production")
    # the deployment → model map is read once (1 listing + 1 per endpoint); stats alone, then the
    # series with what a monitoring page shows beside it in one $batch request
    assert len([c for c in t.calls if c.host == "management.azure.com"]) == 3
    assert [c.path for c in log_calls(ws)] == [f"/v1/workspaces/{ws.settings.log_analytics_workspace_id}/query",
                                               "/v1/$batch"]
    batch = log_calls(ws)[1].json["requests"]
    assert [r["body"]["query"].split("\n", 1)[0] for r in batch] == [
        "// tollgate:series", "// tollgate:status_mix", "// tollgate:top_errors", "// tollgate:slowest"]
    assert {r["workspace"] for r in batch} == {ws.settings.log_analytics_workspace_id}
    assert all('"production"' in r["body"]["query"] for r in batch)
    # the prefetched answers are the ones a query of their own gets
    fresh = AzureTelemetry(ws.logs_client, ws.settings.log_analytics_workspace_id, ws.endpoints)
    assert errors == fresh.top_errors(WINDOW, "production") and slow == fresh.slowest(WINDOW, "production")
    assert mix.equals(fresh.status_mix(WINDOW, "production")) and not series.empty
    # each is used once: asked again, it is queried again
    t.reset_calls()
    assert tel.top_errors(WINDOW, "production") == errors and len(log_calls(ws)) == 1


def test_prefetched_answers_are_used_only_for_the_same_view_and_while_fresh(ws):
    now = [0.0]
    tel = AzureTelemetry(ws.logs_client, ws.settings.log_analytics_workspace_id, ws.endpoints, clock=lambda: now[0])
    tel.series(WINDOW, "production")
    ws.replay.reset_calls()
    tel.top_errors(WINDOW, "staging")                    # another endpoint
    tel.top_errors(WINDOW, "production", limit=5)        # another limit
    later = window("1h", end=WINDOW.end.replace(minute=5))
    tel.slowest(later, "production")                     # a window ending five minutes later
    assert len(log_calls(ws)) == 3
    now[0] += tel.PREFETCH_S + 1                         # too old
    ws.replay.reset_calls()
    tel.status_mix(WINDOW, "production")
    assert len(log_calls(ws)) == 1


def test_a_failed_query_in_the_batch_is_asked_alone_for_its_error(ws, tel):
    ws.replay.online.log_errors["top_errors"] = arm_error(400, "BadArgumentError", "replayed 400")
    assert not tel.series(WINDOW, "production").empty    # the series' own answer is used
    ws.replay.reset_calls()
    with pytest.raises(InvalidInput, match="Log Analytics refused the query"):
        tel.top_errors(WINDOW, "production")
    assert len(log_calls(ws)) == 1
