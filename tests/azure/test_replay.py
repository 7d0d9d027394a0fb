"""ReplayTransport: the real SDKs' requests answered in memory — routes, ARM state, long-running
operations, faults, blobs, MLflow, Log Analytics — and nothing else answered at all."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from azure.ai.ml import MLClient
from azure.ai.ml.entities import ManagedOnlineEndpoint, Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.monitor.query import LogsQueryClient, LogsQueryStatus
from azure.storage.blob import BlobClient

from services.azure.mlflow_rest import make_client
from services.azure.replay import (FakeCredential, Reply, ReplayTransport, arm_error, logs_table,
                                   partial_result)

SUB, RG, WS = "00000000-0000-0000-0000-00000000abcd", "rg", "ws"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"


@pytest.fixture
def t():
    transport = ReplayTransport()
    transport.arm.put_raw(SCOPE, {"location": "westeurope", "properties": {}})
    return transport


@pytest.fixture
def ml(t):
    return MLClient(FakeCredential(), SUB, RG, WS, transport=t, enable_telemetry=False)


def test_unknown_routes_answer_404_and_are_recorded(t, ml):
    with pytest.raises(ResourceNotFoundError):
        ml.models.get("nope", version="1")
    client = make_client("https://example.invalid", FakeCredential(), t)
    resp = client.send_request(HttpRequest("GET", "https://example.invalid/anything?x=1"))
    assert resp.status_code == 404
    last = t.calls[-1]
    assert (last.method, last.host, last.path, last.query, last.status) == \
        ("GET", "example.invalid", "/anything", {"x": "1"}, 404)
    assert all(c.status < 500 for c in t.calls)
    assert t.sleeps == [], "a 404 is not retried"


def test_put_then_get_returns_the_updated_entity(t, ml):
    path = "azureml://datastores/workspaceblobstore/paths/m/1/"
    ml.models.create_or_update(Model(name="m", version="1", path=path, tags={"a": "1"}))
    ml.models.create_or_update(Model(name="m", version="1", path=path, tags={"a": "2", "b": "3"}))
    assert ml.models.get("m", "1").tags == {"a": "2", "b": "3"}
    put = t.find("PUT", r"/models/m/versions/1$")[-1]
    assert put.json["properties"]["tags"] == {"a": "2", "b": "3"}
    assert [m.version for m in ml.models.list(name="m")] == ["1"]
    container = t.arm.get(f"{SCOPE}/models/m")
    assert container["properties"]["latestVersion"] == "1", "the container is created and kept up to date"


def test_a_version_is_immutable_apart_from_its_metadata(t, ml):
    ml.models.create_or_update(Model(name="m", version="1", path="azureml://datastores/d/paths/a/"))
    with pytest.raises(HttpResponseError) as err:
        ml.models.create_or_update(Model(name="m", version="1", path="azureml://datastores/d/paths/b/"))
    assert err.value.status_code == 409 and "modelUri" in str(err.value)


def test_routes_take_handlers_with_state_and_the_newest_route_wins(t):
    seen = []

    def handler(req):
        seen.append((req.match["name"], req.json))
        return {"echo": req.json, "count": len(seen)}
    t.add("POST", r"^/things/(?P<name>[^/]+)$", handler)
    client = make_client("https://svc.invalid", None, t)
    for i in range(2):
        resp = client.send_request(HttpRequest("POST", "https://svc.invalid/things/a", json={"i": i}))
        assert resp.json() == {"echo": {"i": i}, "count": i + 1}
    t.add("POST", r"^/things/", (418, {"teapot": True}))
    assert client.send_request(HttpRequest("POST", "https://svc.invalid/things/a", json={})).status_code == 418
    assert seen == [("a", {"i": 0}), ("a", {"i": 1})]


def test_long_running_operations_poll_until_succeeded_without_sleeping(t, ml):
    t.arm.lro_polls = 2
    ep = ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="prod", auth_mode="key")).result()
    assert ep.name == "prod" and ep.provisioning_state == "Succeeded"
    put = t.find("PUT", r"/onlineEndpoints/prod$")
    polls = t.find("GET", r"/mfeOperationsStatus/")
    assert len(put) == 1 and put[0].status == 201
    assert [c.status for c in polls] == [200, 200, 200], "two InProgress answers, then Succeeded"
    assert t.calls[-1].path.endswith("/onlineEndpoints/prod"), "the final GET of the resource"
    ml.online_endpoints.begin_delete("prod").result()
    assert t.find("DELETE", r"/onlineEndpoints/prod$")[0].status == 202
    assert t.arm.get(f"{SCOPE}/onlineEndpoints/prod") is None


def test_fail_next_injects_a_throttle_that_the_sdk_retries_after_retry_after(t, ml):
    t.fail_next("GET", r"/models$", 429, headers={"Retry-After": "7"})
    assert list(ml.models.list()) == []
    assert [c.status for c in t.find("GET", r"/models$")] == [429, 200]
    assert 7.0 in t.sleeps, "the back-off honoured Retry-After (recorded, not slept)"


def test_fail_next_counts_down(t, ml):
    t.fail_next("GET", r"/models$", 503, times=2)
    assert list(ml.models.list()) == []
    assert [c.status for c in t.find("GET", r"/models$")] == [503, 503, 200]
    t.fail_next("GET", r"/models$", 403, body={"error": {"code": "AuthorizationFailed", "message": "no"}})
    with pytest.raises(HttpResponseError) as err:
        list(ml.models.list())
    assert err.value.status_code == 403


def test_blobs_upload_and_download_in_blocks_and_ranges(t):
    data = bytes(range(256)) * 40
    blob = BlobClient("https://acct.blob.core.windows.net", "c", "dir/big.bin", credential=FakeCredential(),
                      transport=t, max_single_put_size=1000, max_block_size=1000,
                      max_single_get_size=1000, max_chunk_get_size=1000)
    blob.upload_blob(data, overwrite=True)
    assert t.blobs.read("/c/dir/big.bin") == data
    assert blob.download_blob().readall() == data
    assert len(t.find("PUT", r"/c/dir/big.bin")) > 2, "staged blocks, then the block list"
    assert len(t.find("GET", r"/c/dir/big.bin")) > 2, "ranged reads"


def test_lazy_blobs_are_produced_once(t):
    made = []
    t.blobs.put_lazy("/c/x", lambda: made.append(1) or b"made")
    blob = BlobClient("https://acct.blob.core.windows.net", "c", "x", credential=FakeCredential(), transport=t)
    assert blob.download_blob().readall() == b"made" and blob.download_blob().readall() == b"made"
    assert made == [1]


def test_mlflow_search_history_and_paging(t):
    for i in range(3):
        t.mlflow.add_run({"info": {"run_id": f"r{i}", "start_time": i}, "data": {"metrics": [], "tags": []}},
                         {"loss": [{"key": "loss", "value": 1.0 / (s + 1), "step": s, "timestamp": s} for s in range(4)]})
    client = make_client("https://westeurope.api.azureml.ms", FakeCredential(), t)
    base = "https://westeurope.api.azureml.ms/mlflow/v1.0" + SCOPE + "/api/2.0/mlflow"
    body = {"filter": "attributes.run_id IN ('r0', 'r2')", "max_results": 1}
    first = client.send_request(HttpRequest("POST", base + "/runs/search", json=body)).json()
    second = client.send_request(HttpRequest("POST", base + "/runs/search",
                                             json={**body, "page_token": first["next_page_token"]})).json()
    assert [r["info"]["run_id"] for r in first["runs"] + second["runs"]] == ["r2", "r0"]
    assert "next_page_token" not in second
    hist = client.send_request(HttpRequest("GET", base + "/metrics/get-history",
                                           params={"run_id": "r1", "metric_key": "loss"})).json()
    assert [p["step"] for p in hist["metrics"]] == [0, 1, 2, 3]
    missing = client.send_request(HttpRequest("GET", base + "/runs/get", params={"run_id": "nope"}))
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert t.calls[0].headers["Authorization"] == "Bearer replay-token"


def test_log_analytics_tables_partial_results_and_errors(t):
    logs = LogsQueryClient(FakeCredential(), transport=t)
    asked = []

    def answer(query, timespan):
        asked.append((query, timespan))
        if "partial" in query:
            return partial_result([logs_table("PrimaryResult", [("n", "long")], [[1]])], "limit reached")
        if "bad" in query:
            return arm_error(400, "BadArgumentError", "syntax error")
        return [logs_table("PrimaryResult", [("TimeGenerated", "datetime"), ("n", "long")],
                           [["2026-01-01T00:00:00Z", 3]])]
    t.set_logs_handler(answer)
    ok = logs.query_workspace("ws-id", "AppRequests | count", timespan=timedelta(hours=1))
    assert ok.status == LogsQueryStatus.SUCCESS and ok.tables[0].rows[0][1] == 3
    part = logs.query_workspace("ws-id", "partial", timespan=timedelta(hours=1))
    assert part.status == LogsQueryStatus.PARTIAL and [list(r) for r in part.partial_data[0].rows] == [[1]]
    assert "limit reached" in str(part.partial_error)
    with pytest.raises(HttpResponseError):
        logs.query_workspace("ws-id", "bad", timespan=timedelta(hours=1))
    assert asked[0][0] == "AppRequests | count" and asked[0][1] == "PT3600.0S"  # the SDK's ISO 8601 duration
    assert t.find("POST", r"^/v1/workspaces/ws-id/query$")[0].json["query"] == "AppRequests | count"


def test_without_a_logs_handler_log_analytics_answers_404(t):
    logs = LogsQueryClient(FakeCredential(), transport=t)
    with pytest.raises(HttpResponseError) as err:
        logs.query_workspace("ws-id", "x", timespan=timedelta(hours=1))
    assert err.value.status_code == 404


def test_the_fake_credential_hands_out_a_fixed_token():
    cred = FakeCredential("abc")
    assert cred.get_token("https://management.azure.com/.default").token == "abc"
    assert cred.scopes == [("https://management.azure.com/.default",)]


def test_the_demo_fixtures_answer_like_a_workspace(ws):
    t = ws.replay
    info = ws.ml.workspaces.get(ws.settings.workspace_name)
    assert info.mlflow_tracking_uri.startswith("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/")
    assert {d.name for d in ws.ml.data.list()} == {"diabetes"}
    assert {m.name for m in ws.ml.models.list()} == {"diabetes-regressor"}
    assert len([j for j in ws.ml.jobs.list() if j is not None]) == 5
    assert ws.ml.datastores.get("workspaceblobstore").account_name == t.settings["storage_account"]
    assert all(c.status < 400 for c in t.calls), t.calls


def test_reply_objects_and_tuples(t):
    t.add("GET", r"^/r$", lambda req: Reply(202, None, headers={"Location": "https://svc.invalid/r"}))
    t.add("GET", r"^/bytes$", lambda req: (200, b"\x00\x01", {"Content-Type": "application/octet-stream"}))
    client = make_client("https://svc.invalid", None, t)
    r = client.send_request(HttpRequest("GET", "https://svc.invalid/r"))
    assert r.status_code == 202 and r.headers["Location"] == "https://svc.invalid/r"
    b = client.send_request(HttpRequest("GET", "https://svc.invalid/bytes"))
    assert b.content == b"\x00\x01"
    assert json.loads(json.dumps([c.method for c in t.calls])) == ["GET", "GET"]
