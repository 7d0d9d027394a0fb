"""The traffic simulator against real endpoints, and what the support commands then report.

Production serves v1 and staging v3, each a real inference server behind its gateway.
``simulate`` sends paced requests over HTTP; ``telemetry`` must count exactly what
was sent in that window, ``lookup`` must find a request by the id a client got back,
with its payload and the deployment's log lines; several simulator processes on two
endpoints must lose no telemetry row while another process keeps reading it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import requests

from services.permissions import SYSTEM_ACTOR
from services.simulator import simulate
from services.telemetry import between

from .conftest import FEATURES_ROW, MODEL, live_workspace, scoring, telemetry_rows, wait_for

ROOT = Path(__file__).resolve().parents[2]
M1, M3 = f"{MODEL}:1", f"{MODEL}:3"


@pytest.fixture(scope="module")
def live(demo_template, tmp_path_factory):
    with live_workspace(demo_template, tmp_path_factory.mktemp("simulate")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        ws.releases.deploy(MODEL, 3, "staging", SYSTEM_ACTOR)
        yield ws


QA = "qa@contoso.com"  # sending requests to production by hand needs qa or admin


def tollgate(ws, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "tollgate.py", "--workspace", f"local://{ws.root}", "--as", QA, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def counted(ws, endpoint: str, start: str, end: str) -> int:
    window = between(datetime.fromisoformat(start), datetime.fromisoformat(end))
    return sum(s.requests for s in ws.telemetry.stats(window, endpoint))


def statuses(by_status: dict, test) -> int:
    return sum(n for s, n in by_status.items() if test(int(s)))


def test_telemetry_counts_exactly_what_simulate_sent(live):
    run = as_json(tollgate(live, "simulate", "--env", "production", "--rps", "20", "--duration", "3",
                           "--error-rate", "0.2", "--seed", "11", "--json"))
    assert run["planned"] == 60 and run["sent"] == 60 and run["answered"] == 60 and run["completed"]
    assert sum(run["by_status"].values()) == 60 and sum(run["by_kind"].values()) == 60
    assert run["by_status"]["200"] == run["by_kind"]["good"]                     # every good row scored
    assert run["by_status"].get("401", 0) == run["by_kind"].get("wrong_key", 0)  # refused by the gateway
    assert statuses(run["by_status"], lambda s: s == 400) == 60 - run["by_kind"]["good"] - \
        run["by_kind"].get("wrong_key", 0)                                        # refused by score.py
    assert run["achieved_rps"] == pytest.approx(20, rel=0.15)
    assert len(set(run["request_ids"])) == 60
    print(f"\nsimulate: target 20 rps, achieved {run['achieved_rps']:.2f} rps, p50 {run['p50_ms']} ms, "
          f"{run['elapsed_s']} s, statuses {run['by_status']}")

    # the gateway writes in batches: wait until the window holds them all, then ask the CLI
    wait_for(lambda: counted(live, "production", run["started_at"], run["ended_at"]) >= 60, 15,
             "the simulated requests in telemetry")
    data = as_json(tollgate(live, "telemetry", "--env", "production", "--from", run["started_at"],
                            "--to", run["ended_at"], "--json"))
    [prod] = data["endpoints"]
    assert prod["requests"] == run["sent"]
    assert prod["client_errors"] == statuses(run["by_status"], lambda s: 400 <= s < 500)
    assert prod["failures"] == statuses(run["by_status"], lambda s: s >= 500 or s == 0) == 0
    versions = {(v["deployment"], v["model"]): v["requests"] for v in prod["versions"]}
    live_dep = live.endpoints.get("production").live
    assert versions[(live_dep.name, M1)] == run["by_model"][M1]
    assert versions.get((None, None), 0) == run["by_status"].get("401", 0)
    print(f"telemetry: {prod['requests']} rows counted for {run['sent']} sent")
    # one row per request id, no more
    rows = telemetry_rows(live.root, run["request_ids"])
    assert sorted(r["request_id"] for r in rows) == sorted(run["request_ids"])


def test_lookup_finds_a_client_request_with_its_payload_and_log_lines(live):
    uri, key = scoring(live, "production")
    body = json.dumps({"data": [FEATURES_ROW]})
    r = requests.post(uri, body, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                      timeout=30)
    assert r.status_code == 200
    request_id, deployment = r.headers["x-request-id"], r.headers["azureml-model-deployment"]
    tag = f"request_id={request_id}"

    def found():
        try:
            detail = live.telemetry.lookup(request_id)
        except Exception:
            return None
        return detail if any(line.source == deployment and line.text.endswith(tag) for line in detail.log_lines) \
            else None
    wait_for(found, 15, "the request's row and its console log line")

    data = as_json(tollgate(live, "lookup", request_id, "--json"))
    assert (data["request_id"], data["endpoint"], data["deployment"], data["model"], data["status"]) == \
        (request_id, "production", deployment, r.headers["x-tollgate-model"], 200)
    assert data["request_body"] == body
    assert json.loads(data["response_body"]) == r.json()
    assert data["error"] is None
    console = [line for line in data["log_lines"] if line["source"] == deployment and line["text"].endswith(tag)]
    assert console, data["log_lines"]
    assert all(tag in line["text"] for line in data["log_lines"] if line["source"] == "gateway")

    text = tollgate(live, "lookup", request_id)
    assert text.returncode == 0 and body in text.stdout and tag in text.stdout


def test_lookup_of_a_simulated_bad_request_shows_what_was_wrong(live):
    run = simulate(live, "production", rps=10, duration_s=0.5, error_rate=1.0, seed=5, kinds=["null_value"],
                   actor=QA)
    assert run.completed and run.by_status == {400: 5}
    outcome = run.outcomes[-1]
    wait_for(lambda: telemetry_rows(live.root, [outcome.request_id]), 15, "the bad request's row")
    data = as_json(tollgate(live, "lookup", outcome.request_id, "--json"))
    assert data["status"] == 400 and data["request_body"] == outcome.body
    assert "expected a number, got None" in data["error"]
    assert any(line["source"] == "gateway" and line["text"].endswith(f"request_id={outcome.request_id}")
               for line in data["log_lines"])


READER = textwrap.dedent("""
    import contextlib, io, json, pathlib, sys, time
    sys.path.insert(0, sys.argv[1])
    import tollgate
    stop, args = pathlib.Path(sys.argv[2]), sys.argv[3:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        last = stop.exists()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = tollgate.main(args)
        counts = {e["endpoint"]: e["requests"] for e in json.loads(out.getvalue())["endpoints"]} if rc == 0 else None
        print(json.dumps({"rc": rc, "counts": counts}), flush=True)
        if last:
            break
""")


def test_concurrent_simulators_on_two_endpoints_lose_no_row_while_telemetry_is_read(live, tmp_path):
    t0 = datetime.now().astimezone().isoformat()
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(ROOT), str(stop), "--workspace",
                               f"local://{live.root}", "telemetry", "--json", "--from", t0],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plan = [("production", 1), ("production", 2), ("staging", 3), ("staging", 4)]
    sims = [subprocess.Popen([sys.executable, "tollgate.py", "--workspace", f"local://{live.root}", "--as", QA, "simulate",
                              "--env", env, "--rps", "15", "--duration", "3", "--error-rate", "0.1",
                              "--seed", str(seed), "--json"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for env, seed in plan]
    try:
        results = []
        for (env, _), proc in zip(plan, sims):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        stop.touch()
        for proc in sims:
            if proc.poll() is None:
                proc.kill()
        reads, reader_err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and "Traceback" not in reader_err, reader_err

    sent = Counter()
    for run in results:
        assert run["completed"] and run["sent"] == run["planned"] == 45 and run["answered"] == 45
        sent[run["endpoint"]] += run["sent"]
        print(f"\nsimulate {run['endpoint']}: achieved {run['achieved_rps']:.2f} of 15 rps")
    start = min(run["started_at"] for run in results)
    end = max(run["ended_at"] for run in results)
    for env in ("production", "staging"):
        wait_for(lambda: counted(live, env, start, end) >= sent[env], 20, f"{env}'s simulated requests in telemetry")
    data = as_json(tollgate(live, "telemetry", "--from", start, "--to", end, "--json"))
    got = {e["endpoint"]: e["requests"] for e in data["endpoints"]}
    assert got == dict(sent), (got, dict(sent))
    print(f"telemetry: {got} rows counted for {dict(sent)} sent")
    ids = [rid for run in results for rid in run["request_ids"]]
    assert len(ids) == len(set(ids)) == sum(sent.values())
    assert sorted(r["request_id"] for r in telemetry_rows(live.root, ids)) == sorted(ids)

    # the reader: never an error, and counts only grow while the rows are written
    reads = [json.loads(line) for line in reads.splitlines()]
    assert len(reads) >= 5, reads
    assert all(r["rc"] == 0 for r in reads), reader_err
    for env in ("production", "staging"):
        series = [r["counts"].get(env, 0) for r in reads]
        assert series == sorted(series), (env, series)
    print(f"reader: {len(reads)} reads during the run, last {reads[-1]['counts']}")


def test_simulate_against_a_stopped_endpoint_exits_2_with_the_way_to_start_it(live):
    live.endpoints.down(SYSTEM_ACTOR)
    proc = tollgate(live, "simulate", "--env", "production", "--rps", "5", "--duration", "1")
    assert proc.returncode == 2
    assert "endpoint production is not running" in proc.stderr
    assert "start the endpoints with `python tollgate.py up`" in proc.stderr
