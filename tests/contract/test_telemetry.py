"""Telemetry and logs: exact counts for any window, percentiles within the histograms' 2.5 %,
series, status mix, top errors, slowest, request lookup, collected inputs, and log search
that treats every text as a literal.

Records go in through a hook of the backend (``record_requests``; for the local backend
``telemetry_store.append``, what the gateways' writer calls) and logs through
``write_log``; everything else goes through ``ws.telemetry`` / ``ws.logs`` only, and the
expected answers are computed here with numpy from the same synthetic rows
(``bench/telemetry_data.py``).
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.telemetry_data import generate
from services.entities import TimeWindow
from services.errors import InvalidInput, NotFound
from services.telemetry import between, window

TOLERANCE = 0.025      # the latency histograms' promise
END = 1_767_614_417.25  # 2026-01-05 12:00:17.25 UTC: ragged on purpose
M = 1_767_600_000      # a minute boundary (and a 2-hour bin boundary) for the edge cases
HOSTILE = ["' OR 1=1 --", "%", "_", ".*", "\\", "'; DROP TABLE requests; --", "[a-z]+", "*", "$(rm -rf /)"]


# --- the hooks under the protocols ---------------------------------------------------

class _LocalHooks:
    def record_requests(self, ws, records) -> None:
        from services.local.telemetry_store import append, open_telemetry
        db = open_telemetry(ws.root)  # a connection of its own, as a gateway's writer has
        try:
            append(db, records)
        finally:
            db.close()

    def write_log(self, ws, endpoint: str, source: str, lines: list[str]) -> None:
        folder = Path(ws.root) / "endpoints" / endpoint
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{source}.log", "a") as f:
            f.write("".join(line + "\n" for line in lines))


def hooks(backend):
    """The backend's own hooks when it has them, else the local ones (skip on another backend)."""
    if hasattr(backend, "record_requests") and hasattr(backend, "write_log"):
        return backend
    if backend.name != "local":
        pytest.skip(f"backend {backend.name} cannot inject telemetry records or log lines")
    return _LocalHooks()


def rec(ts, endpoint="ep", status=200, latency=5.0, model="m:1", deployment="blue", request_id=None,
        error=None, request_body=None, response_body=None):
    from services.local.telemetry_store import RequestRecord
    return RequestRecord(ts=float(ts), endpoint=endpoint, deployment=deployment, model=model, status=status,
                         latency_ms=float(latency), request_id=request_id or f"r-{ts!r}-{endpoint}",
                         request_body=request_body, response_body=response_body, error=error)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def stamp(ts: float) -> str:
    """A log line's time stamp (the inference server's format)."""
    return utc(ts).strftime("%Y-%m-%d %H:%M:%S") + f",{int(round(ts % 1 * 1000)) % 1000:03d}"


# --- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth():
    """Six hours of three endpoints: ~12,000 requests (promote, incident, errors: see telemetry_data)."""
    return generate(12_000, days=0.25, end=END, seed=11)


@pytest.fixture(scope="module")
def frame(synth) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": synth.ts, "endpoint": synth.endpoint_names(), "deployment": synth.deployment_names(),
        "model": synth.model_names(), "status": synth.status, "latency_ms": synth.latency_ms,
        "error": synth.error_messages(), "request_id": synth.request_ids})


@pytest.fixture(scope="module")
def busy(backend, synth):
    """A workspace holding the synthetic rows (written in batches, as a gateway's writer does)."""
    ws = backend.empty()
    h = hooks(backend)
    for lo in range(0, len(synth), 2_500):
        h.record_requests(ws, synth.records(lo, min(lo + 2_500, len(synth))))
    yield ws
    backend.release(ws)


@pytest.fixture
def fresh(backend, workspace):
    return workspace, hooks(backend)


def in_window(frame: pd.DataFrame, w: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
    sel = frame[(frame["ts"] >= w.start.timestamp()) & (frame["ts"] < w.end.timestamp())]
    return sel if endpoint is None else sel[sel["endpoint"] == endpoint]


def expected_counts(rows: pd.DataFrame, keys: list[str]) -> dict[tuple, tuple[int, int, int]]:
    status = rows["status"].to_numpy()
    rows = rows.assign(failure=(status >= 500) | (status == 0), client=(status >= 400) & (status < 500))
    g = rows.fillna({k: "(none)" for k in keys}).groupby(keys)
    agg = g.agg(requests=("status", "size"), failures=("failure", "sum"), client=("client", "sum"))
    return {k: tuple(int(v) for v in row) for k, row in zip(agg.index, agg.to_numpy())}


def stats_counts(stats) -> dict[tuple, tuple[int, int, int]]:
    return {(s.endpoint, s.deployment or "(none)", s.model or "(none)"): (s.requests, s.failures, s.client_errors)
            for s in stats}


def exact(values, q: float) -> float:
    """The nearest-rank percentile (the smallest value with at least q of the values at or below it)."""
    return float(np.percentile(np.asarray(values, dtype=float), q * 100, method="inverted_cdf"))


def ragged(synth, lo_offset: float, hi_offset: float, bin_seconds: int | None = None) -> TimeWindow:
    w = between(utc(synth.start + lo_offset), utc(synth.start + hi_offset))
    return w if bin_seconds is None else TimeWindow(w.start, w.end, bin_seconds)


# --- counts ------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi", [
    (0, 6 * 3600),                       # everything
    (1234.567891, 4 * 3600 + 17.123457),  # both edges mid-minute
    (3600 - 17.25, 7200 - 17.25),        # both edges exactly on minute boundaries (start is ragged: END is)
    (100.0, 130.0),                       # shorter than a minute, inside one
    (157.5, 197.5),                       # across one minute boundary, no whole minute
    (5000.25, 5000.25 + 86.5),            # one whole minute and two ragged edges
])
def test_counts_are_exact_for_any_window(busy, frame, synth, lo, hi):
    w = ragged(synth, lo, hi)
    want = expected_counts(in_window(frame, w), ["endpoint", "deployment", "model"])
    assert stats_counts(busy.telemetry.stats(w)) == want
    assert sum(v[0] for v in want.values()) == len(in_window(frame, w))
    for endpoint in ("production", "staging"):
        want_ep = {k: v for k, v in want.items() if k[0] == endpoint}
        assert stats_counts(busy.telemetry.stats(w, endpoint=endpoint)) == want_ep


def test_records_on_minute_boundaries_and_window_edges_are_counted_once(fresh):
    ws, h = fresh
    tiny = np.nextafter(float(M), 0.0)
    times = [M - 60, M - 30.5, M - 1e-6, tiny, M, M + 1e-6, M + 59.999999, M + 60, M + 60.25, M + 120, M + 150.75]
    h.record_requests(ws, [rec(t, request_id=f"edge-{i}") for i, t in enumerate(times)])

    def count(lo, hi, bin_seconds=None):
        w = TimeWindow(utc(lo), utc(hi), bin_seconds or 60)
        got = sum(s.requests for s in ws.telemetry.stats(w))
        series = int(ws.telemetry.series(w)["requests"].sum())
        return got, series

    for lo, hi in [(M - 60, M + 120), (M - 30.5, M + 60.25), (M - 60.5, M + 150.75), (M - 0.5, M + 0.5),
                   (M, M + 60), (M - 61, M + 121), (M - 1e-6, M + 60), (M + 1e-6, M + 120)]:
        w = TimeWindow(utc(lo), utc(hi), 60)
        lo_s, hi_s = w.start.timestamp(), w.end.timestamp()   # what a datetime makes of them
        want = sum(lo_s <= t < hi_s for t in times)
        for bin_seconds in (10, 60, 120):
            assert count(lo, hi, bin_seconds) == (want, want), (lo - M, hi - M, bin_seconds)


def test_bins_of_10_60_and_7200_seconds_give_the_same_totals(busy, frame, synth):
    lo, hi = 3 * 3600 + 11.5, 3 * 3600 + 11.5 + 3600 + 77.25
    base = ragged(synth, lo, hi)
    want = expected_counts(in_window(frame, base), ["endpoint", "model"])
    for bin_seconds in (10, 30, 60, 300, 7200):
        s = busy.telemetry.series(TimeWindow(base.start, base.end, bin_seconds))
        got = s.groupby(["endpoint", "model"])[["requests", "failures", "client_errors"]].sum()
        assert {k: tuple(int(x) for x in v) for k, v in zip(got.index, got.to_numpy())} == want, bin_seconds


def test_failures_and_client_errors_are_counted_apart(fresh):
    ws, h = fresh
    statuses = [200, 201, 299, 304, 400, 404, 413, 499, 500, 502, 503, 504]
    h.record_requests(ws, [rec(M + i, status=s, error=None if s < 400 else f"e{s}") for i, s in enumerate(statuses)]
                      + [rec(M + 20, status=0, model=None, deployment=None, error="no answer")])
    w = TimeWindow(utc(M - 0.5), utc(M + 30.5), 10)
    stats = {s.model: s for s in ws.telemetry.stats(w)}
    assert (stats["m:1"].requests, stats["m:1"].failures, stats["m:1"].client_errors) == (12, 4, 4)
    assert stats["m:1"].failure_rate == pytest.approx(4 / 12)
    assert (stats[None].requests, stats[None].failures, stats[None].client_errors) == (1, 1, 0)
    assert stats[None].deployment is None
    series = ws.telemetry.series(w)
    assert int(series["failures"].sum()) == 5 and int(series["client_errors"].sum()) == 4
    assert set(series["model"]) == {"m:1", "(none)"}


def test_an_empty_window_and_an_unknown_endpoint_have_no_rows(busy, synth):
    w = between(utc(synth.start - 7200), utc(synth.start - 3600))
    assert busy.telemetry.stats(w) == []
    assert busy.telemetry.series(w).empty and "rpm" in busy.telemetry.series(w).columns
    assert busy.telemetry.status_mix(w).empty
    w = ragged(synth, 0, 3600)
    for name in ("no-such-endpoint", "' OR 1=1 --", "%"):
        assert busy.telemetry.stats(w, endpoint=name) == []
        assert busy.telemetry.series(w, endpoint=name).empty
        assert busy.telemetry.top_errors(w, endpoint=name) == []


def test_a_workspace_without_requests_answers_with_nothing(workspace):
    for since in ("15m", "7d"):
        w = window(since, end=utc(END))
        assert workspace.telemetry.stats(w) == [] and workspace.telemetry.top_errors(w) == []
        assert workspace.telemetry.series(w).empty and workspace.telemetry.status_mix(w).empty
        assert workspace.telemetry.slowest(w) == []


# --- percentiles -------------------------------------------------------------------

def test_percentiles_are_within_the_histogram_tolerance(busy, frame, synth):
    for w in (ragged(synth, 0, 6 * 3600), ragged(synth, 777.777, 3 * 3600 + 33.3), ragged(synth, 60.5, 60.5 + 900)):
        rows = in_window(frame, w).fillna({"deployment": "(none)", "model": "(none)"})
        checked = 0
        for s in busy.telemetry.stats(w):
            mine = rows[(rows["endpoint"] == s.endpoint) & (rows["deployment"] == (s.deployment or "(none)"))
                        & (rows["model"] == (s.model or "(none)"))]["latency_ms"]
            for q, got in zip((0.5, 0.95, 0.99), (s.p50_ms, s.p95_ms, s.p99_ms)):
                want = exact(mine, q)
                assert abs(got - want) <= TOLERANCE * want, (s, q, got, want)
                checked += 1
        assert checked >= 9


def test_series_percentiles_are_within_tolerance_per_bin(busy, frame, synth):
    w = ragged(synth, 2 * 3600 + 41.5, 4 * 3600 + 3.25, bin_seconds=300)
    rows = in_window(frame, w).fillna({"model": "(none)"})
    origin = math.floor(w.start.timestamp() / 300) * 300
    rows = rows.assign(bin=pd.to_datetime(origin + (rows["ts"] - origin) // 300 * 300, unit="s", utc=True))
    series = busy.telemetry.series(w)
    assert len(series) > 40
    for point in series.itertuples():
        mine = rows[(rows["bin"] == point.bin) & (rows["endpoint"] == point.endpoint)
                    & (rows["model"] == point.model)]["latency_ms"]
        assert len(mine) == point.requests
        for q, got in zip((0.5, 0.95, 0.99), (point.p50_ms, point.p95_ms, point.p99_ms)):
            want = exact(mine, q)
            assert abs(got - want) <= TOLERANCE * want, (point, q, want)


def test_percentiles_of_a_known_distribution(fresh):
    ws, h = fresh
    latencies = np.arange(1, 1001, dtype=float)  # 1 … 1000 ms: p50 = 500, p95 = 950, p99 = 990
    h.record_requests(ws, [rec(M + 1 + i * 0.1, latency=v, request_id=f"k{i}") for i, v in enumerate(latencies)])
    [s] = ws.telemetry.stats(TimeWindow(utc(M), utc(M + 600), 60))
    for got, want in ((s.p50_ms, 500), (s.p95_ms, 950), (s.p99_ms, 990)):
        assert abs(got - want) <= TOLERANCE * want, (got, want)


# --- series --------------------------------------------------------------------------

def test_series_bins_are_aligned_and_rpm_is_requests_per_minute(busy, frame, synth):
    w = window("6h", end=utc(END - 1234.5))
    assert w.bin_seconds == 300
    series = busy.telemetry.series(w)
    assert list(series.columns) == ["bin", "endpoint", "model", "requests", "failures", "client_errors", "rpm",
                                    "failure_rate", "p50_ms", "p95_ms", "p99_ms"]
    starts = series["bin"].map(lambda t: t.timestamp())
    assert (starts % w.bin_seconds == 0).all()                       # on the clock, like KQL's bin()
    assert starts.min() > w.start.timestamp() - w.bin_seconds and starts.max() < w.end.timestamp()
    assert series["bin"].is_monotonic_increasing
    assert str(series["bin"].dt.tz) == "UTC"
    rows = in_window(frame, w).fillna({"model": "(none)"})
    rows = rows.assign(bin=(rows["ts"] // 300 * 300))
    want = rows.groupby(["bin", "endpoint", "model"]).size()
    got = series.assign(bin=starts).set_index(["bin", "endpoint", "model"])["requests"]
    assert got.sort_index().to_dict() == want.sort_index().to_dict()  # bins without requests are absent
    # requests per minute of the part of each bin inside the window: the cut first and last bins too
    inside = (np.minimum(starts + w.bin_seconds, w.end.timestamp()) - np.maximum(starts, w.start.timestamp()))
    assert np.allclose(series["rpm"], series["requests"] * 60 / inside)
    assert inside.min() < w.bin_seconds  # this window cuts bins (it ends mid-bin)
    assert np.allclose(series["failure_rate"], series["failures"] / series["requests"])
    # the promote in the middle: v1 before, v2 after, on production
    prod = series[series["endpoint"] == "production"]
    middle = synth.start + (synth.end - synth.start) / 2
    after = prod[prod["bin"].map(lambda t: t.timestamp()) >= middle + 300]
    assert set(after["model"]) <= {"diabetes-regressor:2", "(none)"} and len(after)


def test_series_for_one_endpoint(busy, frame, synth):
    w = ragged(synth, 1800.5, 3 * 3600 + 0.5)
    staging = busy.telemetry.series(w, endpoint="staging")
    assert set(staging["endpoint"]) == {"staging"}
    assert int(staging["requests"].sum()) == len(in_window(frame, w, "staging"))


# --- status mix, top errors, slowest -------------------------------------------------

def test_status_mix_counts_every_status_per_model(busy, frame, synth):
    for w in (ragged(synth, 0, 6 * 3600), ragged(synth, 999.9, 2 * 3600 + 5.5), ragged(synth, 30, 50)):
        rows = in_window(frame, w).fillna({"model": "(none)"})
        want = rows.groupby(["status", "model"]).size().to_dict()
        mix = busy.telemetry.status_mix(w)
        assert list(mix.columns) == ["status", "model", "requests"]
        assert {(int(r.status), r.model): int(r.requests) for r in mix.itertuples()} == want
        assert mix[["status", "model"]].apply(tuple, axis=1).is_monotonic_increasing
    w = ragged(synth, 0, 6 * 3600)
    only = busy.telemetry.status_mix(w, endpoint="sandbox")
    assert int(only["requests"].sum()) == len(in_window(frame, w, "sandbox"))


def test_top_errors_are_grouped_by_message_most_frequent_first(busy, frame, synth):
    w = ragged(synth, 300.5, 6 * 3600 - 10)
    rows = in_window(frame, w)
    failed = rows[(rows["status"] >= 400) | (rows["status"] == 0)]
    want = failed.groupby(["error", "status"]).agg(count=("ts", "size"), first=("ts", "min"), last=("ts", "max"))
    groups = busy.telemetry.top_errors(w, limit=50)
    assert {(g.message, g.status): g.count for g in groups} == want["count"].to_dict()
    assert [g.count for g in groups] == sorted((g.count for g in groups), reverse=True)
    ids = set(failed["request_id"])
    for g in groups:
        row = want.loc[(g.message, g.status)]
        assert abs(g.first_seen.timestamp() - row["first"]) < 1e-3 and abs(g.last_seen.timestamp() - row["last"]) < 1e-3
        mine = failed[(failed["error"] == g.message) & (failed["status"] == g.status)]
        assert set(g.models) == set(mine["model"].dropna())
        assert g.sample_request_id in ids and g.sample_request_id in set(mine["request_id"])
    assert any(g.status == 0 for g in groups), "no answer (status 0) is a failure too"
    assert any(400 <= g.status < 500 for g in groups) and any(g.status >= 500 for g in groups)
    assert busy.telemetry.top_errors(w, limit=3) == groups[:3]
    staging = busy.telemetry.top_errors(w, endpoint="staging", limit=50)
    assert sum(g.count for g in staging) == int(((failed["endpoint"] == "staging")).sum())


def test_slowest_are_ordered_slowest_first(busy, frame, synth):
    for w, endpoint in ((ragged(synth, 0, 6 * 3600), None), (ragged(synth, 4000.5, 9000.5), "staging")):
        rows = in_window(frame, w, endpoint).sort_values("latency_ms", ascending=False)
        slowest = busy.telemetry.slowest(w, endpoint=endpoint, limit=7)
        assert [r.request_id for r in slowest] == list(rows["request_id"].iloc[:7])
        assert [r.latency_ms for r in slowest] == sorted((r.latency_ms for r in slowest), reverse=True)
        assert all(w.start <= r.ts < w.end for r in slowest)
        assert endpoint is None or {r.endpoint for r in slowest} == {endpoint}
    with pytest.raises(InvalidInput):
        busy.telemetry.slowest(w, limit=0)
    with pytest.raises(InvalidInput):
        busy.telemetry.top_errors(w, limit=10_001)


# --- request lookup ------------------------------------------------------------------

def test_lookup_finds_a_request_with_its_payload_and_log_lines(fresh):
    ws, h = fresh
    body = json.dumps({"data": [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]})
    t = M + 12.345
    h.record_requests(ws, [rec(t, endpoint="production", request_id="abc-123", latency=40.0, request_body=body,
                               response_body='{"predictions": [151.2]}'),
                           rec(t + 0.5, endpoint="production", request_id="abc-1234")])
    h.write_log(ws, "production", "blue", [
        f"{stamp(t - 1)} I [7] azmlinfsrv - before the request",
        f"{stamp(t - 0.02)} I [7] azmlinfsrv - scoring 1 row request_id=abc-123",
        f"{stamp(t - 0.01)} I [7] score - an untagged line while serving",
        f"{stamp(t + 0.49)} I [7] azmlinfsrv - scoring request_id=abc-1234",
    ])
    h.write_log(ws, "production", "gateway", [
        f"{stamp(t)} I [9] gateway - POST /score 200 blue 40 ms request_id=abc-123",
        f"{stamp(t + 0.5)} I [9] gateway - POST /score 200 blue 5 ms request_id=abc-1234",
    ])
    detail = ws.telemetry.lookup("abc-123")
    r = detail.record
    assert (r.request_id, r.endpoint, r.deployment, r.model, r.status) == ("abc-123", "production", "blue", "m:1", 200)
    assert r.latency_ms == 40.0 and abs(r.ts.timestamp() - t) < 1e-3
    assert json.loads(r.request_body) == json.loads(body) and r.response_body == '{"predictions": [151.2]}'
    texts = [line.text for line in detail.log_lines]
    assert any("scoring 1 row" in x for x in texts) and any("POST /score 200 blue 40 ms" in x for x in texts)
    assert any("untagged line while serving" in x for x in texts)
    assert not any("abc-1234" in x for x in texts) and not any("before the request" in x for x in texts)
    assert ws.telemetry.lookup("  abc-123  ").record.request_id == "abc-123"


@pytest.mark.parametrize("request_id", ["no-such-id", "' OR '1'='1", "%", "_", "abc%", "*", "abc-12_"])
def test_lookup_of_an_unknown_or_hostile_id_is_not_found(fresh, request_id):
    ws, h = fresh
    h.record_requests(ws, [rec(M, request_id="abc-123")])
    with pytest.raises(NotFound):
        ws.telemetry.lookup(request_id)


@pytest.mark.parametrize("request_id", ["", "   ", "x" * 201, "' OR 1=1 --" * 40])
def test_lookup_refuses_ids_that_cannot_be_ids(workspace, request_id):
    with pytest.raises(InvalidInput):
        workspace.telemetry.lookup(request_id)


# --- collected inputs ----------------------------------------------------------------

def test_collected_inputs_parse_rows_and_skip_bad_bodies(fresh):
    ws, h = fresh
    bodies = [
        ('{"data": [[1, 2, 3], [4, 5, 6]]}', 200, "m:1"),
        ('{"columns": ["a", "b", "c"], "data": [[7, 8, 9]]}', 200, "m:2"),
        ('{"data": [{"a": 10, "b": 11, "c": 12}]}', 201, "m:2"),
        ("not json at all", 200, "m:1"),
        ('{"data": [[1, 2, 3]', 200, "m:1"),        # truncated
        ('[[1, 2, 3]]', 200, "m:1"),                 # not an object
        ('{"data": "1,2,3"}', 200, "m:1"),
        ('{"rows": [[1, 2, 3]]}', 200, "m:1"),
        (None, 200, "m:1"),
        ('{"data": [[13, 14, 15]]}', 400, "m:1"),  # refused: not collected
        ('{"data": [[16, 17, 18]]}', 500, "m:1"),  # failed: not collected
        ('{"data": [[19, 20, 21]]}', 200, "m:1"),  # another endpoint
    ]
    h.record_requests(ws, [rec(M + i, endpoint="other" if i == 11 else "ep", status=s, model=m, request_body=b,
                               request_id=f"c{i}") for i, (b, s, m) in enumerate(bodies)])
    w = TimeWindow(utc(M - 1), utc(M + 60), 60)
    got = ws.telemetry.collected_inputs(w, "ep")
    assert len(got) == 4 and {"model", "request_id"} <= set(got.columns)
    assert list(got["request_id"]) == ["c2", "c1", "c0", "c0"]   # newest first
    by_id = got.set_index("request_id")
    assert by_id.loc["c2", ["a", "b", "c"]].tolist() == [10, 11, 12]
    assert by_id.loc["c1", ["a", "b", "c"]].tolist() == [7, 8, 9] and by_id.loc["c1", "model"] == "m:2"
    assert sorted(by_id.loc["c0", "f0"].tolist()) == [1, 4]
    only_v1 = ws.telemetry.collected_inputs(w, "ep", model="m:1")
    assert set(only_v1["request_id"]) == {"c0"} and set(only_v1["model"]) == {"m:1"}
    assert len(ws.telemetry.collected_inputs(w, "ep", limit=1)) == 1
    assert ws.telemetry.collected_inputs(w, "' OR 1=1 --").empty


def test_collected_inputs_of_the_synthetic_traffic(busy, frame, synth):
    w = ragged(synth, 3600.5, 3600.5 + 600)
    got = busy.telemetry.collected_inputs(w, "staging")
    rows = in_window(frame, w, "staging")
    ok = rows[(rows["status"] >= 200) & (rows["status"] < 300)]
    per_request = dict(zip(synth.request_ids, synth.rows_per_request.tolist()))
    assert len(got) == sum(per_request[r] for r in ok["request_id"])
    assert [f"f{i}" for i in range(10)] == [c for c in got.columns if c.startswith("f")]
    assert set(got["request_id"]) == set(ok["request_id"])


# --- logs --------------------------------------------------------------------------

LOG_T0 = M + 3600


def log_lines() -> tuple[list[str], list[str]]:
    """A deployment log (with a traceback) and a gateway log, one line a second; the hostile
    texts appear literally in a few lines."""
    blue = [f"{stamp(LOG_T0 + i)} I [7] azmlinfsrv - scoring request {i} request_id=q{i}" for i in range(40)]
    blue[10] = f"{stamp(LOG_T0 + 10)} I [7] score - user said ' OR 1=1 -- in a field"
    blue[11] = f"{stamp(LOG_T0 + 11)} I [7] score - 100% of rows valid"
    blue[12] = f"{stamp(LOG_T0 + 12)} I [7] score - feature s_1 and pattern .* and [a-z]+ literally"
    blue[13] = f"{stamp(LOG_T0 + 13)} W [7] score - path C:\\models\\v2 and $(rm -rf /) and *"
    blue[20:21] = [f"{stamp(LOG_T0 + 20)} E [7] azmlinfsrv - Encountered Exception request_id=q20",
                   "Traceback (most recent call last):",
                   '  File "/var/azureml-app/score.py", line 31, in run',
                   "ZeroDivisionError: division by zero"]
    gateway = [f"{stamp(LOG_T0 + i + 0.5)} I [9] gateway - POST /score 200 blue request_id=q{i}" for i in range(40)]
    return blue, gateway


@pytest.fixture
def logged(fresh):
    ws, h = fresh
    blue, gateway = log_lines()
    h.write_log(ws, "production", "blue", blue)
    h.write_log(ws, "production", "gateway", gateway)
    return ws, blue, gateway


def test_log_sources_are_the_deployments_and_the_gateway(logged):
    ws, _, _ = logged
    assert ws.logs.sources("production") == ["blue", "gateway"]


@pytest.mark.parametrize("text", HOSTILE)
def test_log_search_treats_text_as_a_literal(logged, text):
    ws, blue, gateway = logged
    found = ws.logs.search("production", text=text, tail=5000)
    want = sorted(line for line in blue + gateway if text.lower() in line.lower())
    assert sorted(line.text for line in found) == want
    if text in ("' OR 1=1 --", "%", ".*", "\\", "*", "$(rm -rf /)", "[a-z]+"):
        assert 1 <= len(found) <= 2  # each is in one line; as a pattern it would match (nearly) every line


def test_log_search_is_case_insensitive_and_merges_sources_in_time_order(logged):
    ws, _, _ = logged
    found = ws.logs.search("production", text="REQUEST_ID=Q3", tail=5000)
    assert [(line.source, line.text.rsplit("=", 1)[1]) for line in found] == [
        ("blue", "q3"), ("gateway", "q3"), ("blue", "q30"), ("gateway", "q30"), ("blue", "q31"), ("gateway", "q31"),
        ("blue", "q32"), ("gateway", "q32"), ("blue", "q33"), ("gateway", "q33"), ("blue", "q34"), ("gateway", "q34"),
        ("blue", "q35"), ("gateway", "q35"), ("blue", "q36"), ("gateway", "q36"), ("blue", "q37"), ("gateway", "q37"),
        ("blue", "q38"), ("gateway", "q38"), ("blue", "q39"), ("gateway", "q39")]
    assert all(a.at <= b.at for a, b in zip(found, found[1:]))


def test_log_search_by_time_range(logged):
    ws, blue, _ = logged
    start, end = utc(LOG_T0 + 5), utc(LOG_T0 + 8)
    found = ws.logs.search("production", source="blue", start=start, end=end)
    assert [line.text for line in found] == blue[5:8]                     # [start, end)
    both = ws.logs.search("production", start=start, end=end)
    assert len(both) == 6 and all(start <= line.at < end for line in both)
    assert ws.logs.search("production", start=utc(LOG_T0 + 1000)) == []


def test_log_tail_is_the_last_lines_oldest_first(logged):
    ws, blue, gateway = logged
    assert [line.text for line in ws.logs.search("production", source="gateway", tail=3)] == gateway[-3:]
    everything = ws.logs.search("production", tail=5000)
    assert len(everything) == len(blue) + len(gateway)
    assert [line.text for line in ws.logs.search("production", tail=4)] == [x.text for x in everything[-4:]]


def test_traceback_lines_stay_with_their_stamped_head(logged):
    ws, blue, _ = logged
    head = blue.index(next(x for x in blue if "Encountered Exception" in x))
    found = ws.logs.search("production", source="blue", start=utc(LOG_T0 + 20), end=utc(LOG_T0 + 21))
    assert [line.text for line in found] == blue[head:head + 4]
    assert {line.at for line in found} == {utc(LOG_T0 + 20)}
    assert "Traceback" not in " ".join(x.text for x in ws.logs.search(
        "production", source="blue", start=utc(LOG_T0 + 21), end=utc(LOG_T0 + 30)))
    [line] = ws.logs.search("production", text="ZeroDivisionError")
    assert line.at == utc(LOG_T0 + 20) and line.source == "blue"
    # a window ending at the head's time leaves out the head and its traceback together
    assert [x.text for x in ws.logs.search("production", source="blue", start=utc(LOG_T0 + 19),
                                           end=utc(LOG_T0 + 20))] == [blue[19]]


@pytest.mark.parametrize("endpoint", ["../production", "..", ".", "a/b", "a\\b", "/etc", ".hidden", ""])
def test_log_endpoint_names_cannot_leave_the_workspace(logged, endpoint):
    ws, _, _ = logged
    with pytest.raises(InvalidInput):
        ws.logs.search(endpoint)
    with pytest.raises(InvalidInput):
        ws.logs.sources(endpoint)


@pytest.mark.parametrize("source", ["../gateway", "../../tollgate", "../production/blue", "/etc/passwd",
                                    "blue/../gateway", "nope"])
def test_log_source_names_cannot_leave_the_endpoint(logged, source):
    ws, _, _ = logged
    with pytest.raises((InvalidInput, NotFound)):
        ws.logs.search("production", source=source)


def test_log_search_limits(logged):
    ws, _, _ = logged
    with pytest.raises(InvalidInput):
        ws.logs.search("production", text="x" * 501)
    for tail in (0, 5001):
        with pytest.raises(InvalidInput):
            ws.logs.search("production", tail=tail)
