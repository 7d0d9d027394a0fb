"""The support commands (``telemetry``, ``lookup``, ``logs``, ``simulate``) as a script calls them.

Telemetry rows are written straight into the demo copy's ``telemetry.db`` with
``telemetry_store.append`` (what the gateways do), and log lines into the files the
gateways and inference servers write, so every expected number is known. The
simulator's request bodies are checked against ``score.py``'s own parser.
"""
from __future__ import annotations

import json
import math
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import score
from services.local.telemetry_store import RequestRecord, append, open_telemetry
from services.simulator import BAD_KINDS, GOOD, TrafficMix, training_frame
from services.errors import BackendUnavailable

from tests.test_cli import as_json, tollgate

QA = "qa@contoso.com"  # sending requests to production by hand needs qa or admin

M1, M3 = "diabetes-regressor:1", "diabetes-regressor:3"
NOW = time.time()
T_MAIN = NOW - 150        # most rows
T_GREEN = NOW - 90        # green's rows, alone in [NOW-100, NOW-80)
T_OLD = NOW - 2 * 3600    # outside 15m and 1h, inside 3h
T_LOOKUP = NOW - 200


def rec(ts, endpoint, deployment, model, status, latency_ms, request_id=None, body=None, response=None, error=None):
    return RequestRecord(ts=ts, endpoint=endpoint, deployment=deployment, model=model, status=status,
                         latency_ms=latency_ms, request_id=request_id or f"syn-{random.random():.12f}",
                         request_body=body, response_body=response, error=error)


BLUE_OK = [5.0 * (i + 1) for i in range(20)]         # 5 … 100 ms
ROWS = (
    [rec(T_MAIN + i * 0.5, "production", "blue", M1, 200, v) for i, v in enumerate(BLUE_OK)]
    + [rec(T_MAIN + 11, "production", "blue", M1, 500, 50.0, error="model crashed") for _ in range(3)]
    + [rec(T_MAIN + 12, "production", "blue", M1, 400, 2.0, error="row 0: expected 10 features") for _ in range(4)]
    + [rec(T_GREEN + i * 0.1, "production", "green", M3, 200, 20.0) for i in range(6)]
    + [rec(T_GREEN + 1, "production", "green", M3, 0, 30000.0, error="deployment 'green' is unavailable")]
    + [rec(T_MAIN + 13, "production", None, None, 401, 0.3, error="missing or invalid key") for _ in range(2)]
    + [rec(T_OLD + i, "production", "blue", M1, 200, 7.0) for i in range(5)]
    + [rec(T_MAIN + i, "staging", "blue", M3, 200, 8.0) for i in range(7)]
    + [rec(T_LOOKUP, "production", "blue", M1, 400, 4.0, "req-lookup-1", '{"data": [[1, 2]]}',
           '{"error": "row 0: expected 10 features, got 2"}', "row 0: expected 10 features, got 2")]
)


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f",{int(ts % 1 * 1000):03d}"


BLUE_LOG = [
    (T_OLD, "I [11] azmlinfsrv - an old line about ordinary things"),
    (T_LOOKUP - 0.5, "I [11] azmlinfsrv - a line half a second before the request"),
    (T_LOOKUP - 0.003, "I [11] azmlinfsrv - POST /score 400 0.4ms request_id=req-lookup-1"),
    (T_LOOKUP - 0.002, "I [11] azmlinfsrv - printed by score.py while serving"),
    (T_LOOKUP - 0.001, "I [11] azmlinfsrv - POST /score 200 0.4ms request_id=req-other"),
    (NOW - 60, "I [11] azmlinfsrv - customer note: ' OR 1=1 -- was in the payload"),
    (NOW - 59, "I [11] azmlinfsrv - note: OR 1=1 without the quote"),
    (NOW - 58, "I [11] azmlinfsrv - regex-looking text .* appears literally"),
    (NOW - 57, "I [11] azmlinfsrv - a.b and a*b are not it"),
    (NOW - 56, "I [11] azmlinfsrv - ORDINARY line in capitals"),
]
GATEWAY_LOG = [
    (T_LOOKUP - 0.0005, "W [22] gateway - POST /score 400 from blue (diabetes-regressor:1): "
                        "row 0: expected 10 features, got 2 request_id=req-lookup-1"),
    (NOW - 55, "I [22] gateway - discount 100% applied"),
    (NOW - 54, "I [22] gateway - one hundred percent, no sign"),
    (NOW - 53, "I [22] gateway - an ordinary routing line"),
]


@pytest.fixture(scope="module")
def ws_path(demo_ws_path) -> Path:
    db = open_telemetry(demo_ws_path)
    append(db, ROWS)
    db.close()
    folder = demo_ws_path / "endpoints" / "production"
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in [("blue", BLUE_LOG), ("gateway", GATEWAY_LOG)]:
        (folder / f"{name}.log").write_text("".join(f"{stamp(t)} {text}\n" for t, text in lines))
    return demo_ws_path


def expected(rows) -> dict:
    statuses = [r.status for r in rows]
    return {"requests": len(rows), "failures": sum(s >= 500 or s == 0 for s in statuses),
            "client_errors": sum(400 <= s < 500 for s in statuses)}


def in_window(endpoint, deployment, start, end=NOW + 3600):
    return [r for r in ROWS if r.endpoint == endpoint and r.deployment == deployment and start <= r.ts < end]


def rank_percentile(values, q) -> float:
    """The value at rank ceil(q * n), as the telemetry's histograms report it (within ±2.5 %)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# --- telemetry -------------------------------------------------------------------------------

def test_telemetry_json_counts_each_version_and_deployment_exactly(ws_path):
    data = as_json(tollgate(ws_path, "telemetry", "--env", "production", "--since", "15m", "--json"))
    assert [e["endpoint"] for e in data["endpoints"]] == ["production"]
    prod = data["endpoints"][0]
    start = NOW - 15 * 60
    recent = [r for r in ROWS if r.endpoint == "production" and r.ts >= start]
    assert {k: prod[k] for k in ("requests", "failures", "client_errors")} == expected(recent)
    assert prod["failure_rate"] == pytest.approx(expected(recent)["failures"] / len(recent))
    versions = {(v["deployment"], v["model"]): v for v in prod["versions"]}
    assert set(versions) == {("blue", M1), ("green", M3), (None, None)}
    for (deployment, model), v in versions.items():
        rows = in_window("production", deployment, start)
        assert {k: v[k] for k in ("requests", "failures", "client_errors")} == expected(rows), (deployment, v)
        assert v["failure_rate"] == pytest.approx(expected(rows)["failures"] / len(rows))
        latencies = [r.latency_ms for r in rows]
        for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert v[key] == pytest.approx(rank_percentile(latencies, q), rel=0.03), (deployment, key)
    # no gateway runs in this copy: the health rules say so
    assert prod["health"]["status"] == "down"
    assert any("gateway not running" in r for r in prod["health"]["reasons"])
    window = data["window"]
    assert window["since"] == "15m" and window["seconds"] == pytest.approx(900)


def test_telemetry_since_widens_the_window_and_env_filters(ws_path):
    data = as_json(tollgate(ws_path, "telemetry", "--since", "3h", "--json"))
    by_name = {e["endpoint"]: e for e in data["endpoints"]}
    assert set(by_name) == {"staging", "production"}
    blue = next(v for v in by_name["production"]["versions"] if v["deployment"] == "blue")
    assert blue["requests"] == len(in_window("production", "blue", NOW - 3 * 3600))  # the old rows count now
    assert by_name["staging"]["requests"] == len([r for r in ROWS if r.endpoint == "staging"])

    staging = as_json(tollgate(ws_path, "telemetry", "--env", "staging", "--json"))
    assert [e["endpoint"] for e in staging["endpoints"]] == ["staging"]
    [v] = staging["endpoints"][0]["versions"]
    assert (v["deployment"], v["model"]) == ("blue", M3)
    assert {k: v[k] for k in ("requests", "failures", "client_errors")} == \
        expected([r for r in ROWS if r.endpoint == "staging"])


def test_telemetry_from_to_counts_only_that_window(ws_path):
    start, end = datetime.fromtimestamp(NOW - 100, timezone.utc), datetime.fromtimestamp(NOW - 80, timezone.utc)
    data = as_json(tollgate(ws_path, "telemetry", "--env", "production", "--from", start.isoformat(),
                            "--to", end.isoformat(), "--json"))
    prod = data["endpoints"][0]
    green = in_window("production", "green", NOW - 100, NOW - 80)
    assert len(green) == 7
    assert {k: prod[k] for k in ("requests", "failures", "client_errors")} == expected(green)
    assert [(v["deployment"], v["model"]) for v in prod["versions"]] == [("green", M3)]


def test_telemetry_text_names_versions_and_health(ws_path):
    proc = tollgate(ws_path, "telemetry", "--env", "production")
    assert proc.returncode == 0, proc.stderr
    exp = expected([r for r in ROWS if r.endpoint == "production" and r.ts >= NOW - 900])
    assert (f"production: {exp['requests']} requests, {exp['failures']} failures "
            f"({exp['failures'] / exp['requests']:.1%}), {exp['client_errors']} client errors") in proc.stdout
    assert M1 in proc.stdout and M3 in proc.stdout and "DOWN" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--since", "5m"], "outside 15m"),
    (["--since", "31d"], "outside 15m"),
    (["--since", "fortnight"], "not a duration"),
    (["--env", "nowhere"], "does not exist"),
    (["--to", "2025-01-01T00:00:00"], "--to needs --from"),
])
def test_telemetry_refuses_bad_windows_and_endpoints(ws_path, args, message):
    proc = tollgate(ws_path, "telemetry", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


# --- lookup ----------------------------------------------------------------------------------

def test_lookup_json_has_the_request_payloads_and_its_log_lines(ws_path):
    data = as_json(tollgate(ws_path, "lookup", "req-lookup-1", "--json"))
    assert {k: data[k] for k in ("request_id", "endpoint", "deployment", "model", "status", "latency_ms",
                                 "request_body", "response_body", "error")} == {
        "request_id": "req-lookup-1", "endpoint": "production", "deployment": "blue", "model": M1, "status": 400,
        "latency_ms": 4.0, "request_body": '{"data": [[1, 2]]}',
        "response_body": '{"error": "row 0: expected 10 features, got 2"}',
        "error": "row 0: expected 10 features, got 2"}
    assert datetime.fromisoformat(data["ts"]).timestamp() == pytest.approx(T_LOOKUP, abs=1e-3)
    texts = [(line["source"], line["text"].split(" - ", 1)[1]) for line in data["log_lines"]]
    # the tagged lines of both sources first, then the deployment's untagged line written meanwhile
    assert texts == [("blue", "POST /score 400 0.4ms request_id=req-lookup-1"),
                     ("gateway", "POST /score 400 from blue (diabetes-regressor:1): row 0: expected 10 features, "
                                 "got 2 request_id=req-lookup-1"),
                     ("blue", "printed by score.py while serving")]


def test_lookup_text(ws_path):
    proc = tollgate(ws_path, "lookup", "req-lookup-1")
    assert proc.returncode == 0, proc.stderr
    assert '{"data": [[1, 2]]}' in proc.stdout and "request_id=req-lookup-1" in proc.stdout
    assert "status    400" in proc.stdout


@pytest.mark.parametrize("request_id", ["no-such-request", "' OR 1=1 --", "%", "req-lookup-%"])
def test_lookup_of_an_unknown_id_exits_2_with_a_message(ws_path, request_id):
    proc = tollgate(ws_path, "lookup", request_id, "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "no request with id" in proc.stderr and "x-request-id" in proc.stderr


# --- logs ------------------------------------------------------------------------------------

def log_lines(ws_path, *args) -> list[str]:
    proc = tollgate(ws_path, "logs", "--env", "production", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("text, wanted", [
    ("' OR 1=1 --", ["customer note: ' OR 1=1 -- was in the payload"]),
    ("%", ["discount 100% applied"]),
    (".*", ["regex-looking text .* appears literally"]),
    ("ordinary", ["ORDINARY line in capitals", "an ordinary routing line", "an old line about ordinary things"]),
])
def test_logs_grep_matches_literal_text_only(ws_path, text, wanted):
    lines = log_lines(ws_path, "--grep", text)
    assert sorted(line.split(" - ", 1)[1] for line in lines) == sorted(wanted)


def test_logs_are_prefixed_by_source_unless_one_is_chosen(ws_path):
    every = log_lines(ws_path, "--tail", "1000")
    assert len(every) == len(BLUE_LOG) + len(GATEWAY_LOG)
    assert all(line.startswith(("[blue] ", "[gateway] ")) for line in every)
    times = [line.split("] ", 1)[1][:23] for line in every]
    assert times == sorted(times)   # one time line across sources
    blue = log_lines(ws_path, "--deployment", "blue", "--tail", "1000")
    assert [line.split(" ", 2)[2] for line in blue] == [text for _, text in BLUE_LOG]
    gateway = log_lines(ws_path, "--deployment", "gateway", "--grep", "percent")
    assert [line.split(" - ", 1)[1] for line in gateway] == ["one hundred percent, no sign"]


def test_logs_since_and_tail(ws_path):
    recent = log_lines(ws_path, "--since", "1h", "--tail", "1000")
    assert len(recent) == sum(1 for t, _ in BLUE_LOG + GATEWAY_LOG if t >= NOW - 3600)
    assert not any("an old line" in line for line in recent)
    last_two = log_lines(ws_path, "--tail", "2")
    assert [line.split(" - ", 1)[1] for line in last_two] == ["one hundred percent, no sign",
                                                               "an ordinary routing line"]
    data = json.loads(tollgate(ws_path, "logs", "--env", "production", "--tail", "1", "--json").stdout)
    assert data == [{"at": data[0]["at"], "source": "gateway",
                     "text": f"{stamp(GATEWAY_LOG[-1][0])} {GATEWAY_LOG[-1][1]}"}]


@pytest.mark.parametrize("args, message", [
    (["--env", "nowhere"], "does not exist"),
    (["--env", "production", "--deployment", "purple"], "has no log 'purple'"),
    (["--env", "production", "--tail", "0"], "tail must be between"),
    (["--env", "../production"], "does not exist"),
])
def test_logs_refuse_unknown_sources_and_bad_input(ws_path, args, message):
    proc = tollgate(ws_path, "logs", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


# --- simulate --------------------------------------------------------------------------------

def test_simulate_against_a_stopped_endpoint_exits_2_and_says_how_to_start_it(ws_path):
    proc = tollgate(ws_path, "simulate", "--env", "production", "--rps", "5", "--duration", "1", actor=QA)
    assert proc.returncode == 2
    assert "endpoint production is not running" in proc.stderr
    assert "python tollgate.py up" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--rps", "0"], "rps must be above 0"),
    (["--duration", "-1"], "duration must be above 0"),
    (["--error-rate", "1.5"], "error rate must be between 0 and 1"),
])
def test_simulate_refuses_bad_parameters(ws_path, args, message):
    proc = tollgate(ws_path, "simulate", "--env", "production", *args, actor=QA)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_simulator_without_a_running_endpoint_raises(demo_ws):
    with pytest.raises(BackendUnavailable) as e:
        training_frame(demo_ws, "production")
    assert "tollgate.py up" in e.value.hint


@pytest.fixture(scope="module")
def mix_inputs(demo_ws):
    mv = demo_ws.models.get("diabetes-regressor", 1)
    frame = demo_ws.datasets.load(mv.dataset, mv.dataset_version)
    return frame, demo_ws.models.features(mv.name, mv.version)


def test_good_requests_are_rows_like_the_training_data_and_score_accepts_them(mix_inputs, monkeypatch):
    frame, features = mix_inputs
    monkeypatch.setattr(score, "features", features)
    plan = TrafficMix(frame, features, random.Random(1)).plan(300, 0.0)
    assert {p.kind for p in plan} == {GOOD}
    rows = np.array([json.loads(p.body)["data"][0] for p in plan], dtype=float)
    for p in plan:
        assert score.parse(p.body.decode()).shape == (1, len(features))
    lo, hi = frame[features].min().to_numpy(), frame[features].max().to_numpy()
    margin = 0.25 * (hi - lo)
    assert ((rows >= lo - margin) & (rows <= hi + margin)).all()
    # sampled, not constant: each feature varies, and its mean is near the data's
    assert (rows.std(axis=0) > 0).all()
    assert (np.abs(rows.mean(axis=0) - frame[features].mean().to_numpy())
            < 0.5 * frame[features].std().to_numpy()).all()
    assert len({tuple(r) for r in rows.tolist()}) > 250


def test_bad_requests_are_each_refused_by_score_py(mix_inputs, monkeypatch):
    frame, features = mix_inputs
    monkeypatch.setattr(score, "features", features)
    mix = TrafficMix(frame, features, random.Random(2))
    for kind in BAD_KINDS:
        for _ in range(20):
            p = mix.bad(kind)
            assert p.kind == kind
            if kind == "wrong_key":
                assert p.wrong_key and score.parse(p.body.decode()).shape == (1, len(features))
                continue
            with pytest.raises(score.BadRequest):
                score.parse(p.body.decode())


def test_the_error_rate_and_the_seed_decide_the_mix(mix_inputs):
    frame, features = mix_inputs
    plan = TrafficMix(frame, features, random.Random(3)).plan(2000, 0.2)
    bad = [p for p in plan if p.kind != GOOD]
    assert abs(len(bad) - 400) < 4 * math.sqrt(2000 * 0.2 * 0.8)
    assert {p.kind for p in bad} == set(BAD_KINDS)
    assert [p.body for p in TrafficMix(frame, features, random.Random(3)).plan(2000, 0.2)] == \
        [p.body for p in plan]
    assert [p.body for p in TrafficMix(frame, features, random.Random(4)).plan(2000, 0.2)] != \
        [p.body for p in plan]
    only = TrafficMix(frame, features, random.Random(5)).plan(200, 1.0, kinds=["empty_body"])
    assert {p.body for p in only} == {b""}
