"""The Azure release workflow through the real azure-ai-ml ``MLClient`` on a replay transport.

Every test opens the replayed demo workspace (``open_replay``: ``MLClient`` and
``LogsQueryClient`` built with ``transport=ReplayTransport`` and a fake credential) and
checks what the adapter *sent*: the REST calls of deploy, promote and rollback in order,
the scoring requests pinned with ``azureml-model-deployment``, the refusals that send
nothing, and the messages of 403/404/429/5xx.
"""
from __future__ import annotations

import re
import threading

import pytest

from services.azure.audit import SEGMENT_SPAN, BlobAudit
from services.azure.replay.online import AUDIT_CONTAINER
from services.azure.workspace import open_replay
from services.entities import Stage
from services.errors import BackendUnavailable, Conflict, Forbidden, GateFailed, NotFound

ARM = "management.azure.com"
MODEL = "diabetes-regressor"
QA, LEAD, SUPPORT, ADMIN = "qa@contoso.com", "lead@contoso.com", "support@contoso.com", "admin@contoso.com"

# model files produced by the fixtures' recipe (trained on first read), kept across tests
_BLOBS: dict[str, bytes] = {}


@pytest.fixture
def ws():
    workspace = open_replay()
    t = workspace.replay
    for path, data in _BLOBS.items():
        t.blobs.put(path, data)
    t.arm.lro_polls = 1               # every ARM long-running operation answers InProgress once
    workspace.endpoints.poll_s = 0.01
    yield workspace
    _BLOBS.update({p: d for p, d in t.blobs.blobs.items() if p.endswith("/model.pkl") and d != b"not a pickle"})
    workspace.close()


def short(path: str) -> str:
    return re.sub(r"^.*/workspaces/[^/]+", "", path)


def endpoint_writes(t) -> list[tuple[str, str]]:
    """ARM writes on online endpoints and deployments, in order."""
    return [(c.method, short(c.path)) for c in t.calls
            if c.host == ARM and c.method in ("PUT", "PATCH", "DELETE") and "/onlineEndpoints" in c.path]


def writes(t) -> list:
    """Every request that changes something (ARM writes, actions, blob writes, scoring)."""
    return [c for c in t.calls if c.method not in ("GET", "HEAD")
            and not c.path.endswith(("/listKeys", "/getLogs"))]


def traffic(t, env: str) -> dict:
    return t.online.traffic(env)


# --- reads -------------------------------------------------------------------------------

def test_endpoints_show_deployments_traffic_and_masked_keys(ws):
    t = ws.replay
    t.reset_calls()
    eps = {e.name: e for e in ws.endpoints.list()}
    assert list(eps) == ["staging", "production"]
    prod = eps["production"]
    assert prod.scoring_uri == "https://production.westeurope.inference.ml.azure.com/score"
    assert prod.gateway_up and prod.traffic == {"blue": 100}
    assert (prod.live.model_name, prod.live.model_version, prod.live.state) == (MODEL, 1, "healthy")
    assert eps["staging"].live.model_ref == f"{MODEL}:3"
    # one listing, then the deployments per endpoint: bounded, not per row; no keys in a listing
    assert [(c.method, short(c.path)) for c in t.calls] == [
        ("GET", "/onlineEndpoints"), ("GET", "/onlineEndpoints/staging/deployments"),
        ("GET", "/onlineEndpoints/production/deployments")]
    assert prod.primary_key_masked == prod.secondary_key_masked == ""
    # masked keys where they are shown: one listKeys POST, kept briefly
    full = t.online.keys["production"]["primaryKey"]
    t.reset_calls()
    masked = ws.endpoints.masked_keys("production")
    assert masked[0] == f"{full[:4]}…{full[-4:]}" and full not in repr(masked)
    assert ws.endpoints.masked_keys("production") == masked
    assert [(c.method, short(c.path)) for c in t.calls] == [("POST", "/onlineEndpoints/production/listKeys")]
    assert ws.endpoints.get("production").primary_key_masked == masked[0]   # one endpoint: with its keys
    assert full not in repr(ws.endpoints.get("production"))
    with pytest.raises(Forbidden, match="support@contoso.com .* may not see endpoint keys"):
        ws.endpoints.keys("production", SUPPORT)
    assert ws.endpoints.keys("production", QA) == (full, t.online.keys["production"]["secondaryKey"])


def test_progress_polling_is_cached_briefly_and_writes_clear_it(ws):
    t = ws.replay
    ws.endpoints.get("staging")
    t.reset_calls()
    for _ in range(10):                 # what the Releases page does twice a second during a deploy
        assert ws.endpoints.get("staging").traffic == {"blue": 100}
    assert t.calls == []
    ws.releases.deploy(MODEL, 4, "staging", QA)
    assert ws.endpoints.get("staging").traffic == {"blue": 0, "green": 100}


def test_unknown_endpoint_is_not_found(ws):
    with pytest.raises(NotFound, match="'canary' does not exist"):
        ws.endpoints.get("canary")


def test_invoke_posts_to_the_scoring_uri_with_key_and_deployment_header(ws):
    t = ws.replay
    row = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.86, 87]
    res = ws.endpoints.invoke("staging", {"data": [row]}, deployment="blue")
    call = t.find("POST", r"^/score$")[-1]
    assert call.host == "staging.westeurope.inference.ml.azure.com"
    assert call.headers["Authorization"] == "Bearer " + t.online.keys["staging"]["primaryKey"]
    assert call.headers["azureml-model-deployment"] == "blue"
    assert res.status == 200 and len(res.body["predictions"]) == 1
    assert (res.deployment, res.model) == ("blue", f"{MODEL}:3")
    # the prediction is the registered model's (score.py's parsing, the model's predict)
    model = ws.models.load(MODEL, 3)
    import pandas as pd
    expected = float(model.predict(pd.DataFrame([row], columns=list(model.feature_names_in_)))[0])
    assert res.body["predictions"][0] == pytest.approx(expected)
    assert ws.endpoints.invoke("staging", {"data": [[1, 2, 3]]}).status == 400
    assert ws.endpoints.invoke("staging", {"data": [row]}, deployment="green").status == 404
    assert ws.endpoints.invoke("staging", {"data": [row]}, key="not-the-key").status == 401
    # no call leaked a header into the next one (the SDK's invoke() would)
    assert "azureml-model-deployment" not in t.find("POST", r"^/score$")[-1].headers


def test_console_log_comes_from_get_logs(ws):
    text = ws.endpoints.console_log("production", "blue", tail=3)
    assert text.splitlines()[-1].endswith("POST /score 400 1.804ms 101") and len(text.splitlines()) == 3
    call = ws.replay.find("POST", r"/getLogs$")[-1]
    assert short(call.path) == "/onlineEndpoints/production/deployments/blue/getLogs" and call.json["tail"] == 3
    with pytest.raises(NotFound):
        ws.endpoints.console_log("production", "green")


# --- deploy, promote, rollback: the REST calls in order -----------------------------------

def test_deploy_is_blue_green_put_deployment_smoke_then_put_traffic(ws):
    t = ws.replay
    said: list = []
    seen = threading.Event()

    def progress(step) -> None:                 # a ProgressStep: when it starts, changes and ends
        said.append(step)
        if "InProgress" in step.detail:
            seen.set()

    def status(req):                  # the operation stays in progress until the caller has said so
        seen.wait(10)
        return t.arm.operation(req.match["op"], "Status")
    t.add("GET", r"/mfeOperationsStatus/(?P<op>[^/?]+)$", status)
    t.reset_calls()
    ep = ws.releases.deploy(MODEL, 4, "staging", QA, progress=progress)

    assert endpoint_writes(t) == [("PUT", "/onlineEndpoints/staging/deployments/green"),
                                  ("PUT", "/onlineEndpoints/staging")]
    put_dep = next(c for c in t.calls if c.method == "PUT" and short(c.path).endswith("/deployments/green"))
    assert put_dep.json["properties"]["model"].endswith(f"/models/{MODEL}/versions/4")
    # the new deployment copies the serving one's environment, code and instance type
    blue = t.arm.get(t.online.endpoint_path("staging") + "/deployments/blue")["properties"]
    assert put_dep.json["properties"]["environmentId"] == blue["environmentId"]
    assert put_dep.json["properties"]["codeConfiguration"] == blue["codeConfiguration"]
    assert put_dep.json["properties"]["instanceType"] == blue["instanceType"]
    assert put_dep.json["tags"]["tollgate.deployed_by"] == QA

    # the smoke test ran between the two PUTs, pinned to the new deployment: its cases, then the latency
    # requests to it and to the live one (blue), one for one
    order = [i for i, c in enumerate(t.calls) if c.method == "PUT" and "/onlineEndpoints" in c.path]
    scored = [i for i, c in enumerate(t.calls) if c.path == "/score"]
    assert order[0] < min(scored) and max(scored) < order[1]
    pinned = [t.calls[i].headers["azureml-model-deployment"] for i in scored]
    cases = ws.policy.smoke.cases + 1
    n = ws.policy.smoke.latency_requests
    assert pinned == ["green"] * cases + ["green", "blue"] * n
    put_ep = t.calls[order[1]]
    assert put_ep.json["properties"]["traffic"] == {"green": 100}   # blue: 0 (azure-ai-ml drops zeroes)

    assert traffic(t, "staging") == {"green": 100}
    assert ep.traffic == {"blue": 0, "green": 100} and ep.live.model_ref == f"{MODEL}:4"
    assert seen.is_set() and said[0].label == "deployment green (diabetes-regressor:4) created at 0 %"
    done = [(s.key, s.label) for s in said if s.state == "done"]
    assert done == [("created", "deployment green (diabetes-regressor:4) created at 0 %"),
                    ("healthy", "green healthy"), ("smoke_test", "smoke test of green"),
                    ("traffic", "traffic shifted to green"), ("warm", "blue (diabetes-regressor:3) kept warm for rollback")]
    assert all(s.seconds is not None and s.seconds >= 0 for s in said if s.state == "done")
    assert any(s.key == "healthy" and s.detail == "create deployment staging/green: InProgress" for s in said)

    state = ws.releases.state(MODEL, 4)
    assert (state.stage, state.deployed_by) == (Stage.AWAITING_APPROVAL, QA)
    smoke = ws.releases.smoke_test_result(state.smoke_test_id)
    assert smoke.passed and (smoke.endpoint, smoke.deployment, smoke.model_version) == ("staging", "green", 4)
    lat = smoke.latency
    assert (lat.requests, lat.live_deployment, lat.candidate_failures) == (n, "blue", 0)
    assert lat.candidate_p95_ms >= lat.candidate_p50_ms > 0 and lat.live_p95_ms >= lat.live_p50_ms > 0
    assert lat.limit_p95_ms is None and lat.passed     # a staging deploy measures; a promote judges
    parity = [c for c in smoke.cases if c.expected is not None]
    assert len(parity) == ws.policy.smoke.cases and all(c.got == pytest.approx(c.expected) for c in parity)
    assert smoke.cases[-1].status == 400
    actions = [r.action for r in ws.releases.audit(10)]
    assert actions.index("release.stage") < actions.index("deploy") < actions.index("smoke_test") \
        < actions.index("deploy.started")
    # the release state is on the model version in the workspace: a second console sees it
    other = open_replay(transport=t)
    assert other.releases.state(MODEL, 4).stage == Stage.AWAITING_APPROVAL
    assert other.releases.audit(1)[0] == ws.releases.audit(1)[0]


def test_deploy_to_staging_keeps_the_evaluation_its_reviewers_read(ws):
    t = ws.replay
    ws.releases.deploy(MODEL, 4, "staging", QA)
    kept = [c.path for c in t.calls if c.method == "PUT" and f"/tollgate/evaluations/{MODEL}/4/vs-v1-" in c.path]
    assert len(kept) == 1
    reviewer = open_replay(transport=t)            # another console: nothing in memory
    t.reset_calls()
    comparison = reviewer.evaluation.compare(MODEL, 4)
    assert comparison.champion.version == 1 and comparison.evaluated_on == "diabetes:2"
    blob_reads = [c.path for c in t.calls if c.method == "GET" and "/tollgate/" in c.path]
    assert blob_reads == kept                      # one small file, no model or data download
    assert comparison == ws.evaluation.compare(MODEL, 4)


def test_promote_then_rollback_are_traffic_shifts(ws):
    t = ws.replay
    ws.releases.approve(MODEL, 3, LEAD, "better rmse on diabetes:2")
    t.reset_calls()
    ep = ws.releases.promote(MODEL, 3, QA, "weekly release")
    assert endpoint_writes(t) == [("PUT", "/onlineEndpoints/production/deployments/green"),
                                  ("PUT", "/onlineEndpoints/production")]
    assert traffic(t, "production") == {"green": 100}
    assert ep.live.model_ref == f"{MODEL}:3" and {d.name: d.traffic for d in ep.deployments} == {"blue": 0, "green": 100}
    assert ws.models.champion(MODEL).version == 3
    assert ws.releases.state(MODEL, 3).stage == Stage.PRODUCTION
    assert ws.releases.state(MODEL, 1).stage == Stage.RETIRED

    t.reset_calls()
    ep = ws.releases.rollback("production", QA, "p95 regression")
    # rollback: one endpoint PUT, no deployment is touched (the previous one stayed warm)
    assert endpoint_writes(t) == [("PUT", "/onlineEndpoints/production")]
    assert t.find("PUT", r"/onlineEndpoints/production$")[0].json["properties"]["traffic"] == {"blue": 100}
    assert ep.live.model_ref == f"{MODEL}:1"
    assert ws.models.champion(MODEL).version == 1
    assert ws.releases.state(MODEL, 3).stage == Stage.ROLLED_BACK
    assert ws.releases.state(MODEL, 1).stage == Stage.PRODUCTION
    last = ws.releases.audit(20)
    rb = next(r for r in last if r.action == "rollback")
    assert (rb.actor, rb.role, rb.comment) == (QA, "qa", "p95 regression")
    assert rb.before == {"traffic": {"blue": 0, "green": 100}} and rb.after == {"traffic": {"blue": 100, "green": 0}}


def test_promote_is_idempotent_and_needs_approval(ws):
    with pytest.raises(Conflict, match="only an approved version can be promoted"):
        ws.releases.promote(MODEL, 3, QA)
    ws.releases.approve(MODEL, 3, LEAD)
    ws.releases.promote(MODEL, 3, QA)
    t = ws.replay
    t.reset_calls()
    ws.releases.promote(MODEL, 3, QA)
    assert writes(t) == []


def test_set_traffic_and_regenerate_key_are_admin_only(ws):
    t = ws.replay
    ws.releases.deploy(MODEL, 4, "staging", QA)
    with pytest.raises(Forbidden):
        ws.releases.set_traffic("staging", {"blue": 50, "green": 50}, QA)
    ep = ws.releases.set_traffic("staging", {"blue": 50, "green": 50}, ADMIN, "canary")
    assert ep.traffic == {"blue": 50, "green": 50} and traffic(t, "staging") == {"blue": 50, "green": 50}

    old = t.online.keys["production"]["primaryKey"]
    ws.releases.regenerate_key("production", "primary", ADMIN)
    new = t.online.keys["production"]["primaryKey"]
    assert new != old and t.find("POST", r"/onlineEndpoints/production/regenerateKeys$")
    row = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.86, 87]
    assert ws.endpoints.invoke("production", {"data": [row]}, key=old).status == 401
    assert ws.endpoints.invoke("production", {"data": [row]}).status == 200


# --- roles: refused in services, nothing sent ----------------------------------------------

@pytest.mark.parametrize("action", [
    lambda r: r.deploy(MODEL, 4, "staging", SUPPORT),
    lambda r: r.promote(MODEL, 3, SUPPORT),
    lambda r: r.rollback("production", SUPPORT),
    lambda r: r.approve(MODEL, 3, SUPPORT),
    lambda r: r.reject(MODEL, 3, SUPPORT, "no"),
    lambda r: r.set_traffic("production", {"blue": 100}, QA),
    lambda r: r.regenerate_key("production", "primary", QA),
    lambda r: r.approve(MODEL, 3, QA),
    lambda r: r.smoke_test("staging", SUPPORT),
], ids=["deploy", "promote", "rollback", "approve", "reject", "traffic", "keys", "qa-approve", "smoke"])
def test_roles_are_refused_without_any_request(ws, action):
    t = ws.replay
    t.reset_calls()
    with pytest.raises(Forbidden, match="may not"):
        action(ws.releases)
    assert t.calls == []


def test_four_eyes_on_azure(ws):
    # lee is ml_lead and qa: deploys v4, then may not approve it
    ws.releases.deploy(MODEL, 4, "staging", "lee@contoso.com")
    with pytest.raises(Forbidden, match="four eyes"):
        ws.releases.approve(MODEL, 4, "lee@contoso.com")
    assert ws.releases.approve(MODEL, 4, LEAD).stage == Stage.APPROVED


# --- failures leave production as it was -------------------------------------------------

def test_failed_smoke_test_deletes_the_new_deployment_and_keeps_traffic(ws):
    t = ws.replay
    t.online.broken[("staging", "green")] = "wrong"      # answers, but not what the model predicts
    t.reset_calls()
    with pytest.raises(GateFailed, match="smoke test of diabetes-regressor:4 on staging/green failed") as e:
        ws.releases.deploy(MODEL, 4, "staging", QA)
    assert "differs from the offline prediction" in e.value.hint
    assert endpoint_writes(t) == [("PUT", "/onlineEndpoints/staging/deployments/green"),
                                  ("DELETE", "/onlineEndpoints/staging/deployments/green")]
    assert traffic(t, "staging") == {"blue": 100}
    assert [d.name for d in ws.endpoints.get("staging").deployments] == ["blue"]
    assert ws.releases.state(MODEL, 4).stage == Stage.REGISTERED
    failed = next(r for r in ws.releases.audit(5) if r.action == "deploy.failed")
    assert failed.after["deleted"] is True and "cases failed" in failed.after["summary"]


def test_failed_provisioning_reports_the_console_log_and_keeps_traffic(ws):
    t = ws.replay
    t.online.logs[("staging", "green")] = "ModuleNotFoundError: No module named 'sklearn'"
    t.fail_next("GET", r"/mfeOperationsStatus/", 200,
                {"status": "Failed", "error": {"code": "DeploymentFailed", "message": "container crashed"}})
    t.reset_calls()
    with pytest.raises(GateFailed, match="failed to provision") as e:
        ws.releases.deploy(MODEL, 4, "staging", QA)
    assert "No module named 'sklearn'" in e.value.hint
    assert ("PUT", "/onlineEndpoints/staging") not in endpoint_writes(t)
    assert traffic(t, "staging") == {"blue": 100}


def test_smoke_test_without_an_offline_model_checks_answers_and_says_parity_was_not_checked(ws):
    t = ws.replay
    t.online.predictor = lambda name, version, frame: [100.0] * len(frame)   # the deployment answers
    container = ws.blobs._container(ws.settings.datastore).container_name
    t.blobs.put(f"/{container}/tollgate/models/{MODEL}/4/model.pkl", b"not a pickle")   # cannot be loaded here
    ws.releases.deploy(MODEL, 4, "staging", QA)
    smoke = ws.releases.smoke_test_result(ws.releases.state(MODEL, 4).smoke_test_id)
    assert smoke.passed and "parity not checked" in smoke.summary
    assert all(c.expected is None for c in smoke.cases[:-1]) and smoke.cases[0].got == 100.0


def test_a_smoke_test_that_cannot_run_deletes_the_deployment(ws):
    t = ws.replay
    t.fail_next("POST", r"/onlineEndpoints/staging/listKeys$", 403, times=10)
    with pytest.raises(GateFailed, match="could not run"):
        ws.releases.deploy(MODEL, 4, "staging", QA)
    assert ("DELETE", "/onlineEndpoints/staging/deployments/green") in endpoint_writes(t)
    assert traffic(t, "staging") == {"blue": 100}


# --- one operation per endpoint ----------------------------------------------------------

def test_a_second_operation_on_the_endpoint_is_refused_while_one_runs(ws):
    t = ws.replay
    inside, release = threading.Event(), threading.Event()
    real = t.arm.handle

    def slow_put(req):       # the first deploy's PUT deployment takes its time
        inside.set()
        release.wait(30)
        return real(req)
    route = t.add("PUT", r"/onlineEndpoints/staging/deployments/green$", slow_put)
    errors: list[BaseException] = []
    first = threading.Thread(target=lambda: _catch(errors, ws.releases.deploy, MODEL, 4, "staging", QA))
    first.start()
    try:
        assert inside.wait(30)
        other = open_replay(transport=t)        # another console on the same workspace
        with pytest.raises(Conflict, match=r"qa@contoso.com is already running 'deploy' on endpoint staging"):
            other.releases.deploy(MODEL, 5, "staging", "lee@contoso.com")
        with pytest.raises(Conflict):
            other.releases.set_traffic("staging", {"blue": 100}, ADMIN)
    finally:
        release.set()
        first.join(60)
        t.remove(route)
    assert errors == [] and traffic(t, "staging") == {"green": 100}
    # the lock is free again
    ws.releases.set_traffic("staging", {"blue": 100, "green": 0}, ADMIN)


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


def test_an_operation_started_outside_tollgate_is_respected(ws):
    t = ws.replay
    path = t.online.endpoint_path("production") + "/deployments/blue"
    dep = t.arm.get(path)
    dep["properties"]["provisioningState"] = "Updating"
    t.arm.put_raw(path, dep)
    ws.releases.approve(MODEL, 3, LEAD)
    t.reset_calls()
    with pytest.raises(Conflict, match="deployment blue is updating"):
        ws.releases.promote(MODEL, 3, QA)
    assert endpoint_writes(t) == []


def test_a_lock_left_by_a_crashed_console_expires(ws):
    t = ws.replay
    store = t.online.audit
    now = [1000.0]
    store.clock = lambda: now[0]
    container = ws.locks.container
    crashed = container.get_blob_client("locks/endpoint-staging")
    try:
        crashed.upload_blob(b"", overwrite=False)
    except Exception:  # noqa: BLE001 - it may exist already
        pass
    crashed.acquire_lease(lease_duration=60)             # and never released
    with pytest.raises(Conflict):
        ws.releases.set_traffic("staging", {"blue": 100}, ADMIN)
    now[0] += 61
    ws.releases.set_traffic("staging", {"blue": 100}, ADMIN)


# --- the audit trail ---------------------------------------------------------------------

def test_audit_trail_is_append_only_ordered_and_spans_segments(ws):
    t = ws.replay
    store = t.online.audit
    before = bytes(store.blobs[f"/{AUDIT_CONTAINER}/audit/000000.jsonl"])
    console = ws.audit_trail
    now = [0.0]
    console.clock = lambda: now[0]
    seeded = ws.releases.audit()
    assert [r.action for r in seeded][:2] == ["release.stage", "deploy"] and len(seeded) == len(store.lines())
    trail = BlobAudit(console.container)        # another console (or pipeline) appending
    store.max_blocks = store.blocks[f"/{AUDIT_CONTAINER}/audit/000000.jsonl"] + 2
    console.max_blocks = store.max_blocks       # the replay's small limit stands for Azure's 50,000
    ids = [trail.record(ADMIN, "note", f"n{i}", role="admin", comment=f"#{i}").id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert ids[2] // SEGMENT_SPAN == 1 and ids[0] // SEGMENT_SPAN == 0     # a full segment rolls over
    after = bytes(store.blobs[f"/{AUDIT_CONTAINER}/audit/000000.jsonl"])
    assert after.startswith(before)                                         # only appended
    t.reset_calls()
    assert ws.releases.audit(6) == seeded[:6] and t.calls == []           # within the snapshot's TTL: no request
    now[0] += console.snapshot_ttl_s                                        # later: the other console's records
    newest = ws.releases.audit(6)
    assert [r.comment for r in newest[:5]] == ["#4", "#3", "#2", "#1", "#0"]
    assert newest[5] == seeded[0]
    assert trail.get(ids[3]).comment == "#3"
    with pytest.raises(NotFound):
        trail.get(ids[4] + 7)


def test_audit_reads_large_trails_in_ranges(ws):
    trail = ws.audit_trail
    import services.azure.audit as audit_mod
    for i in range(40):
        trail.record(ADMIN, "note", f"n{i}", role="admin", comment="x" * 300)
    old = audit_mod.CHUNK
    audit_mod.CHUNK = 1024                      # records straddle the range reads
    try:
        got = trail.audit(45)
    finally:
        audit_mod.CHUNK = old
    assert [r.target for r in got[:40]] == [f"n{i}" for i in reversed(range(40))]
    assert got[40:] == ws.releases.audit()[40:45]
    ranged = [c for c in ws.replay.calls if c.path.endswith("000000.jsonl") and c.method == "GET"]
    assert all("x-ms-range" in c.headers or "Range" in c.headers for c in ranged)


# --- Azure errors, each with a clear message ---------------------------------------------

@pytest.mark.parametrize("status,error,match", [
    (403, Forbidden, "no permission to list the online endpoints"),
    (404, NotFound, "not found while trying to list the online endpoints"),
    (429, BackendUnavailable, "throttling"),
    (500, BackendUnavailable, r"service error \(500\)"),
])
def test_azure_errors_have_clear_messages(ws, status, error, match):
    t = ws.replay
    t.fail_next("GET", r"/onlineEndpoints$", status, headers={"Retry-After": "1"} if status == 429 else None,
                times=10)
    t.reset_calls()
    with pytest.raises(error, match=match) as e:
        ws.endpoints.list()
    assert e.value.hint
    listed = t.count("GET", r"/onlineEndpoints$")
    assert listed > 1 if status in (429, 500) else listed == 1     # retried with back-off
    if status == 429:
        assert 1.0 in t.sleeps


def test_forbidden_deployment_put_keeps_traffic(ws):
    t = ws.replay
    t.fail_next("PUT", r"/onlineEndpoints/staging/deployments/green$", 403,
                {"error": {"code": "AuthorizationFailed", "message": "The client does not have authorization to "
                           "perform action 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/write'"}})
    with pytest.raises(Forbidden, match="no permission to create deployment staging/green"):
        ws.releases.deploy(MODEL, 4, "staging", QA)
    assert traffic(t, "staging") == {"blue": 100}
