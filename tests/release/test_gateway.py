"""The gateway in front of a local online endpoint, seen from a client.

Production serves v3 on ``green`` (100 %) with v1 warm on ``blue`` (0 %). Every
request goes through ``Client`` (plain ``requests``) so that the last test can
check that the telemetry holds exactly one record per request sent.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import requests
import uvicorn

from services.errors import Forbidden
from services.local.gateway import Gateway, Upstream
from services.permissions import SYSTEM_ACTOR

from .conftest import (ADMIN, FEATURES_ROW, MODEL, QA, Client, live_workspace, scoring, sent_id, telemetry_rows,
                       wait_for, wait_telemetry)

GOOD = json.dumps({"data": [FEATURES_ROW]})
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def prod(demo_template, tmp_path_factory):
    with live_workspace(demo_template, tmp_path_factory.mktemp("gateway")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        ws.releases.deploy(MODEL, 3, "production", SYSTEM_ACTOR)  # v1 stays warm at 0 %
        assert ws.endpoints.get("production").traffic == {"blue": 0, "green": 100}
        ws.started_serving_tests_at = time.time()
        yield ws


@pytest.fixture(scope="module")
def client():
    return Client()


def offline_prediction(ws, version: int, rows: list[list[float]]) -> list[float]:
    model = ws.models.load(MODEL, version)
    frame = pd.DataFrame(np.asarray(rows, dtype=float), columns=ws.models.features(MODEL, version))
    return [float(p) for p in model.predict(frame)]


def test_the_issue_client_code_gets_predictions(prod, client):
    scoring_uri, key = scoring(prod, "production")
    data = {"data": [FEATURES_ROW]}
    # the client code of the issue, unchanged
    r = requests.post(scoring_uri, json.dumps(data),
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    client.sent.append(r.headers["x-request-id"])
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == pytest.approx(offline_prediction(prod, 3, [FEATURES_ROW]), rel=1e-9)

    two_rows = [FEATURES_ROW, [48, 1, 21.6, 87, 183, 103.2, 70, 3, 3.8918, 69]]
    r = client.post(scoring_uri, json.dumps({"data": two_rows}), key)
    assert r.status_code == 200
    assert r.json()["predictions"] == pytest.approx(offline_prediction(prod, 3, two_rows), rel=1e-9)


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-key", "Bearer ", "Basic {key}", "{key}"],
                         ids=["no-key", "wrong-key", "empty-bearer", "basic-scheme", "no-scheme"])
def test_a_request_without_a_valid_key_gets_401(prod, client, authorization):
    scoring_uri, key = scoring(prod, "production")
    extra = {"Authorization": authorization.format(key=key)} if authorization else {}
    r = client.post(scoring_uri, GOOD, None, extra=extra)
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "Unauthorized",
                                  "message": "missing or invalid key: send 'Authorization: Bearer <endpoint key>'"}}
    assert "azureml-model-deployment" not in r.headers  # refused before routing


def test_the_secondary_key_works_too(prod, client):
    uri = prod.endpoints.get("production").scoring_uri
    primary, secondary = prod.endpoints.keys("production", QA)
    assert primary != secondary
    assert client.post(uri, GOOD, secondary).status_code == 200
    assert client.post(uri, GOOD, f"{secondary}x").status_code == 401


def test_a_regenerated_key_replaces_the_old_one(prod, client):
    uri = prod.endpoints.get("production").scoring_uri
    old_primary, secondary = prod.endpoints.keys("production", QA)
    with pytest.raises(Forbidden, match="may not regenerate endpoint keys"):
        prod.releases.regenerate_key("production", "primary", QA)

    prod.releases.regenerate_key("production", "primary", ADMIN)
    new_primary, same_secondary = prod.endpoints.keys("production", QA)
    assert new_primary != old_primary and same_secondary == secondary
    # regenerate returns once the gateway serves the new configuration: the old key is refused at once
    health = requests.get(uri.removesuffix("score"), timeout=5).json()
    assert health["config_version"] == prod.db.one("SELECT config_version FROM endpoints WHERE name = 'production'")[0]
    assert client.post(uri, GOOD, old_primary).status_code == 401
    assert client.post(uri, GOOD, new_primary).status_code == 200
    assert client.post(uri, GOOD, secondary).status_code == 200
    assert prod.releases.audit(1)[0].action == "key.regenerate" and prod.releases.audit(1)[0].actor == ADMIN


BAD_INPUTS = {
    "malformed-json": ('{"data": [[59, 2, 32.1', "the body is not valid JSON"),
    "nine-features": (json.dumps({"data": [FEATURES_ROW[:9]]}),
                      "row 0: expected 10 features (age, sex, bmi, bp, s1, s2, s3, s4, s5, s6), got 9"),
    "nan": ('{"data": [[NaN, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]}', "NaN is not allowed in the input"),
    "infinity": ('{"data": [[59, 2, Infinity, 101, 157, 93.2, 38, 4, 4.8598, 87]]}', "Infinity is not allowed"),
    "string-value": (json.dumps({"data": [[59, 2, "abc", 101, 157, 93.2, 38, 4, 4.8598, 87]]}),
                     "row 0, feature 'bmi': expected a number, got 'abc'"),
    "no-data-field": (json.dumps({"rows": [FEATURES_ROW]}), 'expected a JSON object with a "data" field'),
    "empty-data": (json.dumps({"data": []}), '"data" must be a non-empty list of rows'),
    # hostile: nesting the parser cannot follow, numbers the model cannot take
    "nested-1000-deep": ("[" * 1000 + "]" * 1000, "the JSON is nested more than 32 levels deep"),
    "nested-100-deep": ('{"data": ' + "[" * 100 + "]" * 100 + "}", "the JSON is nested more than 32 levels deep"),
    "1e308": (json.dumps({"data": [[1e308] + FEATURES_ROW[1:]]}),
              "row 0, feature 'age': 1e+308 is out of range (at most 1e+15 in magnitude)"),
    "huge-integer": ('{"data": [[' + "9" * 400 + ", 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]}",
                     "row 0, feature 'age': 9999"),
    "list-as-value": (json.dumps({"data": [[[1, 2]] + FEATURES_ROW[1:]]}),
                      "row 0, feature 'age': expected a number, got a list of 2 item(s)"),
}


@pytest.mark.parametrize("body,problem", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_endpoint_keeps_serving(prod, client, body, problem):
    uri, key = scoring(prod, "production")
    r = client.post(uri, body, key)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BadRequest" and problem in r.json()["error"]["message"]
    assert r.headers["x-tollgate-model"] == f"{MODEL}:3"  # the model's own score.py refused it
    after = client.post(uri, GOOD, key)
    assert after.status_code == 200 and len(after.json()["predictions"]) == 1


def test_a_payload_over_the_limit_gets_413(prod, client):
    uri, key = scoring(prod, "production")
    limit = prod.policy.endpoints.max_payload_bytes
    big = '{"data": [[' + " " * limit + "]]}"
    r = client.post(uri, big, key)
    assert r.status_code == 413
    assert r.json()["error"] == {"code": "RequestEntityTooLarge",
                                 "message": f"payload of {len(big)} bytes exceeds the limit of {limit} bytes"}

    # without a Content-Length (chunked upload) the gateway counts the bytes as they arrive
    chunks = (b" " * 65536 for _ in range(limit // 65536 + 2))
    r = client.post(uri, chunks, key)
    assert r.status_code == 413
    assert r.json()["error"]["message"] == f"payload exceeds the limit of {limit} bytes"

    just_under = json.dumps({"data": [FEATURES_ROW]}).ljust(limit)
    assert client.post(uri, just_under, key).status_code == 200


def test_the_deployment_header_reaches_a_deployment_at_zero_percent(prod, client):
    uri, key = scoring(prod, "production")
    for _ in range(5):
        pinned = client.post(uri, GOOD, key, deployment="blue")
        assert pinned.status_code == 200
        assert (pinned.headers["azureml-model-deployment"], pinned.headers["x-tollgate-model"]) == ("blue", f"{MODEL}:1")
        assert pinned.json()["predictions"] == pytest.approx(offline_prediction(prod, 1, [FEATURES_ROW]), rel=1e-9)
    for _ in range(10):
        routed = client.post(uri, GOOD, key)
        assert (routed.headers["azureml-model-deployment"], routed.headers["x-tollgate-model"]) == ("green", f"{MODEL}:3")


def test_an_unknown_deployment_name_gets_404(prod, client):
    uri, key = scoring(prod, "production")
    r = client.post(uri, GOOD, key, deployment="purple")
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "NotFound", "message": "deployment 'purple' does not exist on endpoint "
                                                                "'production' (known: blue, green)"}


def test_response_headers_name_the_request_the_deployment_and_the_model(prod, client):
    uri, key = scoring(prod, "production")
    r = requests.post(uri, GOOD, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    client.sent.append(r.headers["x-request-id"])
    assert UUID.match(r.headers["x-request-id"]), r.headers
    assert r.headers["x-ms-request-id"] == r.headers["x-request-id"]
    assert r.headers["azureml-model-deployment"] == "green"
    assert r.headers["x-tollgate-model"] == f"{MODEL}:3"

    # the client's own id is a correlation id: echoed, never the request's id
    mine = client.post(uri, GOOD, key, request_id="order-4711-attempt-1")
    assert UUID.match(mine.headers["x-request-id"]) and mine.headers["x-ms-client-request-id"] == "order-4711-attempt-1"
    refused = client.post(uri, GOOD, "wrong", request_id="order-4711-attempt-2")
    assert refused.status_code == 401 and UUID.match(refused.headers["x-request-id"])
    assert refused.headers["x-ms-client-request-id"] == "order-4711-attempt-2"


def test_telemetry_has_exactly_one_record_per_request_including_refused_ones(prod, client):
    uri, key = scoring(prod, "production")
    mine = {
        "ok": client.post(uri, GOOD, key),
        "pinned": client.post(uri, GOOD, key, deployment="blue"),
        "no-key": client.post(uri, GOOD, None),
        "bad-input": client.post(uri, BAD_INPUTS["nine-features"][0], key),
        "unknown-deployment": client.post(uri, GOOD, key, deployment="purple"),
        "too-big": client.post(uri, " " * (prod.policy.endpoints.max_payload_bytes + 1), key),
    }
    ids = {what: r.headers["x-request-id"] for what, r in mine.items()}
    rows = {r["request_id"]: r for r in wait_telemetry(prod.root, list(ids.values()))}
    got = {what: (rows[i]["status"], rows[i]["deployment"], rows[i]["model"]) for what, i in ids.items()}
    assert got == {
        "ok": (200, "green", f"{MODEL}:3"),
        "pinned": (200, "blue", f"{MODEL}:1"),
        "no-key": (401, None, None),
        "bad-input": (400, "green", f"{MODEL}:3"),
        "unknown-deployment": (404, None, None),
        "too-big": (413, None, None),
    }
    ok, bad = rows[ids["ok"]], rows[ids["bad-input"]]
    assert ok["request_body"] == GOOD and json.loads(ok["response_body"])["predictions"] and ok["error"] is None
    assert ok["endpoint"] == "production" and 0 < ok["latency_ms"] < 30_000
    assert "expected 10 features" in bad["error"] and "expected 10 features" in bad["response_body"]
    assert rows[ids["no-key"]]["error"].startswith("missing or invalid key")

    # over the whole module: one row per request this client sent, no more, no fewer
    wait_telemetry(prod.root, client.sent)
    since = [r for r in telemetry_rows(prod.root) if r["ts"] >= prod.started_serving_tests_at]
    assert len(since) == len(client.sent) and sorted(sent_id(r) for r in since) == sorted(client.sent)


# --- the gateway's upstream client, against scripted HTTP servers ------------------

def test_the_upstream_client_reads_every_kind_of_http_answer_and_reuses_kept_connections():
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n" b'{"predictions":[1',  # kept
        b"HTTP/1.1 400 BAD REQUEST\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n{\"err\r\n9;ext=1\r\nor\": \"x\"}\r\n0\r\n\r\n",                                                 # kept
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",               # closed
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",                                                     # closed
    ]
    connections, requests_seen = [], []

    async def serve(reader, writer):
        connections.append(writer)
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            requests_seen.append(head + await reader.readexactly(length))
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                break
        writer.close()

    async def scenario():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream = Upstream()
        got = [await upstream.post(port, b'{"data": []}', b"application/json", b"rid-%d" % i) for i in range(4)]
        upstream.close()
        server.close()
        return got

    got = asyncio.run(scenario())
    assert got == [(200, b'{"predictions":[1', b"application/json"), (400, b'{"error": "x"}', b"application/json"),
                   (200, b"until the end", b"text/plain"), (200, b"ok", b"application/json")]
    assert len(connections) == 2, "the first three answers came over one kept connection"
    assert all(r.startswith(b"POST /score HTTP/1.1\r\n") and r.endswith(b'\r\n\r\n{"data": []}') for r in requests_seen)
    assert b"x-request-id: rid-0\r\n" in requests_seen[0] and b"Content-Length: 12\r\n" in requests_seen[0]


def test_the_upstream_client_retries_a_kept_connection_the_server_closed_and_reports_a_dead_one():
    async def serve_once_then_close(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # says keep-alive, then closes
        await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(serve_once_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream = Upstream()
        first = await upstream.post(port, b"{}", b"application/json", b"a")
        await asyncio.sleep(0.1)
        second = await upstream.post(port, b"{}", b"application/json", b"b")  # the kept one is dead: a new one
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await upstream.post(port, b"{}", b"application/json", b"c")  # nobody listens any more
        upstream.close()
        return first, second

    assert asyncio.run(scenario()) == ((200, b"ok", b"application/json"), (200, b"ok", b"application/json"))


# --- hostile and careless clients (after the count above: these send outside ``client``) -------

def error_shape(r: requests.Response) -> dict:
    """The one error body every 4xx/5xx of an endpoint has."""
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), body
    return body["error"]


def test_json_sent_as_a_form_is_scored_as_json(prod):
    uri, key = scoring(prod, "production")
    # what `curl -d '{"data": ...}'` sends
    r = requests.post(uri, GOOD, headers={"Content-Type": "application/x-www-form-urlencoded",
                                          "Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == pytest.approx(offline_prediction(prod, 3, [FEATURES_ROW]), rel=1e-9)
    # and a form that is not JSON is told so
    r = requests.post(uri, "age=59&sex=2", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                    "Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 400 and "the body is not valid JSON" in error_shape(r)["message"]


def test_every_error_of_the_gateway_the_inference_server_and_score_py_has_one_shape(prod):
    uri, key = scoring(prod, "production")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    base = uri.removesuffix("/score")
    answers = {
        "gateway 401": requests.post(uri, GOOD, timeout=30),
        "gateway 404 deployment": requests.post(uri, GOOD, headers={**auth, "azureml-model-deployment": "x"}),
        "gateway 413": requests.post(uri, b" " * (prod.policy.endpoints.max_payload_bytes + 1), headers=auth),
        "gateway 405": requests.get(uri, headers=auth, timeout=30),
        "gateway 404 path": requests.post(f"{base}/predict", GOOD, headers=auth, timeout=30),
        "gateway 400 client id": requests.post(uri, GOOD, headers={**auth, "x-request-id": "x" * 201}, timeout=30),
        "inference server 400": requests.post(uri, b'{"data": [[\xff]]}', headers=auth, timeout=30),
        "score.py 400": requests.post(uri, '{"data": []}', headers=auth, timeout=30),
    }
    got = {what: (r.status_code, error_shape(r)["code"]) for what, r in answers.items()}
    assert got == {"gateway 401": (401, "Unauthorized"), "gateway 404 deployment": (404, "NotFound"),
                   "gateway 413": (413, "RequestEntityTooLarge"), "gateway 405": (405, "MethodNotAllowed"),
                   "gateway 404 path": (404, "NotFound"), "gateway 400 client id": (400, "BadRequest"),
                   "inference server 400": (400, "BadRequest"), "score.py 400": (400, "BadRequest")}
    assert "cannot be decoded as UTF-8" in answers["inference server 400"].json()["error"]["message"]
    assert "POST /score" in answers["gateway 405"].json()["error"]["message"]
    assert "1 to 200 printable ASCII" in answers["gateway 400 client id"].json()["error"]["message"]


def test_a_reused_client_request_id_never_merges_two_requests(prod, capsys):
    import tollgate

    from services.errors import Conflict
    uri, key = scoring(prod, "production")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "x-request-id": "retry-me"}
    first = requests.post(uri, GOOD, headers=headers, timeout=30)
    second = requests.post(uri, json.dumps({"data": []}), headers=headers, timeout=30)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert ids[0] != ids[1] and all(UUID.match(i) for i in ids)
    rows = {r["request_id"]: r for r in wait_telemetry(prod.root, ids)}
    assert {i: (rows[i]["status"], rows[i]["client_request_id"]) for i in ids} == \
        {ids[0]: (200, "retry-me"), ids[1]: (400, "retry-me")}

    records = [prod.telemetry.lookup(i).record for i in ids]
    assert [(r.request_id, r.status, r.client_request_id) for r in records] == \
        [(ids[0], 200, "retry-me"), (ids[1], 400, "retry-me")]
    with pytest.raises(Conflict, match="2 requests carry the client request id 'retry-me'") as refused:
        prod.telemetry.lookup("retry-me")
    assert ids[0] in refused.value.hint and ids[1] in refused.value.hint
    # the deployment's log lines are found by the gateway's id, which it forwarded
    assert any(line.source == "blue" or line.source == "green" for line in prod.telemetry.lookup(ids[0]).log_lines)

    assert tollgate.main(["--workspace", f"local://{prod.root}", "lookup", ids[1]]) == 0
    out = capsys.readouterr().out
    assert f"request   {ids[1]}" in out and "client id retry-me" in out and "upload" in out


def raw_post(port: int, head: bytes, parts: list[bytes], pause_s: float) -> tuple[int, dict, bytes]:
    """A client on a slow line: the head, then the body in ``parts`` with a pause before each."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for part in parts:
            time.sleep(pause_s)
            try:
                sock.sendall(part)
            except OSError:  # the server has answered and closed: read what it said
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < content_length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_text, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_text.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), {k.strip().lower(): v.strip() for k, v in
                                         (line.split(":", 1) for line in lines)}, body


def content_length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def post_head(port: int, key: str, length: int) -> bytes:
    return (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n\r\n").encode()


def test_a_slow_upload_is_recorded_apart_and_not_as_the_models_latency(prod):
    uri, key = scoring(prod, "production")
    port = int(uri.split(":")[2].split("/")[0])
    body = GOOD.encode()
    thirds = [body[:10], body[10:20], body[20:]]
    status, headers, answer = raw_post(port, post_head(port, key, len(body)), thirds, pause_s=0.6)
    assert status == 200, answer
    [row] = wait_telemetry(prod.root, [headers["x-request-id"]])
    assert row["upload_ms"] >= 1700, row             # three pauses of 0.6 s while the body trickled in
    assert row["latency_ms"] < 1500, row             # the answer itself: milliseconds, not the 1.8 s upload


@pytest.fixture
def impatient_gateway(prod):
    """The production gateway's code in this process, with a 1 s body timeout, on its own port."""
    gateway = Gateway(prod.root, "production", prod.policy.endpoints.max_payload_bytes, timeout_s=30,
                      body_timeout_s=1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(gateway.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15, "the in-process gateway to start")
    yield port
    server.should_exit = True
    thread.join(15)


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_is_closed(prod, impatient_gateway):
    port, key = impatient_gateway, scoring(prod, "production")[1]
    status, headers, answer = raw_post(port, post_head(port, key, 100) + b'{"data": [', [b"[59"], pause_s=3)
    assert status == 408, answer
    assert json.loads(answer) == {"error": {"code": "RequestTimeout", "message": "the request body did not "
                                            "arrive within 1 s (10 bytes received)"}}
    assert headers["connection"] == "close"
    [row] = wait_telemetry(prod.root, [headers["x-request-id"]])
    assert (row["status"], row["deployment"]) == (408, None)
    assert row["upload_ms"] >= 900 and row["latency_ms"] < 500, row  # a slow client is not a slow model
