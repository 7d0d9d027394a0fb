"""The release rules, as a contract of ``ws.releases`` / ``ws.endpoints``.

Every forbidden transition is refused with the right error type and a message that
says why; the allowed journey (staging → approval → production → rollback) works
end to end on live endpoints, and each step lands in the audit trail with its actor
and role. Written against the service operations only (plus the workspace's own
files for breaking a model on purpose), so another backend can run it.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import requests

from services.entities import Stage
from services.errors import Conflict, Forbidden, GateFailed, InvalidInput, NotFound, ServiceError
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR

from .conftest import ADMIN, FEATURES_ROW, LEAD, LEE, MODEL, QA, SUPPORT, live_workspace, scoring

PAYLOAD = json.dumps({"data": [FEATURES_ROW]})


def last_event_id(ws) -> int:
    events = ws.releases.audit(1)
    return events[0].id if events else 0


def events_since(ws, event_id: int):
    return [e for e in reversed(ws.releases.audit()) if e.id > event_id]


def serving_model(uri: str, key: str) -> str:
    """The model version that answers a client's request (the gateway's response header)."""
    r = requests.post(uri, PAYLOAD, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1
    return r.headers["x-tollgate-model"]


def live_traffic(ws, env: str) -> dict[str, int]:
    return {name: pct for name, pct in ws.endpoints.get(env).traffic.items() if pct}


# --- refused before anything runs (no endpoint process needed) ----------------

ACTIONS = {
    "deploy": lambda ws, who: ws.releases.deploy(MODEL, 3, "staging", who),
    "promote": lambda ws, who: ws.releases.promote(MODEL, 3, who),
    "rollback": lambda ws, who: ws.releases.rollback("production", who, "test"),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("actor", [SUPPORT, "nobody@contoso.com", ""])
def test_support_and_unknown_identities_may_not_deploy_promote_or_roll_back(cold_ws, actor, action):
    before = last_event_id(cold_ws)
    with pytest.raises(Forbidden) as refused:
        ACTIONS[action](cold_ws, actor)
    message = str(refused.value)
    if actor:
        assert actor in message and "may not" in message and "needs" in message, message
    else:
        assert message == "no identity given"
    assert refused.value.hint
    assert last_event_id(cold_ws) == before, "a refused action must not write to the audit trail"
    assert cold_ws.endpoints.supervisor_pid() is None, "a refused action must not start anything"


def test_qa_may_not_approve(cold_ws):
    with pytest.raises(Forbidden, match=r"qa@contoso.com \(qa\) may not approve a model version: that needs admin or ml_lead"):
        cold_ws.releases.approve(MODEL, 3, QA, "looks good")


def test_approve_of_a_version_never_deployed_to_staging_is_a_conflict(cold_ws):
    assert cold_ws.releases.state(MODEL, 5).stage == Stage.REGISTERED
    with pytest.raises(Conflict, match="diabetes-regressor:5 is registered \\(not deployed\\); only a version that passed its staging"):
        cold_ws.releases.approve(MODEL, 5, LEAD, "looks good")
    assert cold_ws.releases.state(MODEL, 5).stage == Stage.REGISTERED


@pytest.mark.parametrize("comment", ["", "   "])
def test_reject_without_a_comment_is_invalid_input(cold_ws, comment):
    with pytest.raises(InvalidInput, match="a rejection needs a comment"):
        cold_ws.releases.reject(MODEL, 4, LEAD, comment)
    assert cold_ws.releases.state(MODEL, 4).stage != Stage.REJECTED


def test_promote_of_an_unapproved_version_is_a_conflict(cold_ws):
    with pytest.raises(Conflict, match="diabetes-regressor:5 is registered \\(not deployed\\); only an approved version can be promoted"):
        cold_ws.releases.promote(MODEL, 5, QA)


def test_promote_of_a_rejected_version_is_a_conflict(cold_ws):
    state = cold_ws.releases.reject(MODEL, 4, LEAD, "rmse worse than the champion on new data")
    assert (state.stage, state.decided_by) == (Stage.REJECTED, LEAD)
    with pytest.raises(Conflict, match="rejected by lead@contoso.com: rmse worse than the champion"):
        cold_ws.releases.promote(MODEL, 4, QA)
    with pytest.raises(Conflict, match="already rejected"):
        cold_ws.releases.reject(MODEL, 4, LEAD, "again")


@pytest.mark.parametrize("actor", [QA, ADMIN])
def test_deploy_straight_to_production_is_a_conflict(cold_ws, actor):
    with pytest.raises(Conflict, match="production is reached by promote, not deploy") as refused:
        cold_ws.releases.deploy(MODEL, 3, "production", actor)
    assert "tollgate.py promote --model diabetes-regressor --version 3" in refused.value.hint


def test_an_archived_version_cannot_be_deployed(cold_ws):
    cold_ws.models.archive(MODEL, 2, actor=ADMIN)
    try:
        with pytest.raises(Conflict, match="diabetes-regressor:2 is archived"):
            cold_ws.releases.deploy(MODEL, 2, "staging", QA)
    finally:
        cold_ws.models.restore(MODEL, 2, actor=ADMIN)


@pytest.mark.parametrize("operation", [
    lambda ws: ws.endpoints.get("nope"),
    lambda ws: ws.endpoints.keys("nope", QA),
    lambda ws: ws.releases.deploy(MODEL, 3, "nope", QA),
    lambda ws: ws.releases.smoke_test("nope", QA),
    lambda ws: ws.releases.rollback("nope", QA),
    lambda ws: ws.releases.set_traffic("nope", {"blue": 100}, ADMIN),
    lambda ws: ws.releases.regenerate_key("nope", "primary", ADMIN),
], ids=["get", "keys", "deploy", "smoke_test", "rollback", "set_traffic", "regenerate_key"])
def test_an_unknown_endpoint_is_not_found(cold_ws, operation):
    with pytest.raises(NotFound, match="endpoint 'nope' does not exist") as refused:
        operation(cold_ws)
    assert "staging" in refused.value.hint and "production" in refused.value.hint


def test_rollback_with_nothing_deployed_is_a_conflict(cold_ws):
    with pytest.raises(Conflict, match="endpoint production has no previous deployment to roll back to"):
        cold_ws.releases.rollback("production", QA, "test")


def test_the_audit_table_refuses_update_and_delete(cold_ws):
    """Local backend: the append-only trail is enforced by the database itself, not only by the code."""
    cold_ws.releases.reject(MODEL, 5, LEAD, "for the audit test")
    conn = sqlite3.connect(cold_ws.root / "tollgate.db")
    try:
        for sql in ["UPDATE events SET actor = 'mallory' WHERE action = 'reject'", "DELETE FROM events",
                    "DELETE FROM events WHERE action = 'reject'"]:
            with pytest.raises(sqlite3.DatabaseError, match="the audit trail is append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert any(e.action == "reject" and e.actor == LEAD and e.role == "ml_lead" for e in cold_ws.releases.audit())


# --- on live endpoints --------------------------------------------------------

@pytest.fixture(scope="module")
def live_ws(demo_template, tmp_path_factory):
    """The champion (v1) serving production, as after seeding the demo."""
    with live_workspace(demo_template, tmp_path_factory.mktemp("rules-live")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        yield ws


def with_smoke_tolerance(ws, monkeypatch, tolerance: float) -> None:
    policy = ws.releases.policy
    monkeypatch.setattr(ws.releases, "policy",
                        dataclasses.replace(policy, smoke=dataclasses.replace(policy.smoke, tolerance=tolerance)))


def worse_and_better(ws) -> tuple[int, int]:
    """Two candidates that both beat the champion v1, where the first (a) loses to the
    second (b) once b is the champion — found by the gate itself, not by number."""
    candidates = [m.version for m in ws.models.versions(MODEL) if m.version != 1]
    passing = [v for v in candidates if ws.evaluation.gate(MODEL, v).passed]
    for b in passing:
        for a in passing:
            if a != b and not ws.evaluation.compare(MODEL, a, champion_version=b).gate.passed:
                return a, b
    raise AssertionError(f"the demo has no such pair among {candidates}")


@pytest.mark.slow
def test_release_journey_staging_approval_production_rollback(live_ws, monkeypatch):
    ws = live_ws
    a, b = worse_and_better(ws)  # demo version numbers depend on which parallel run registered first
    start = last_event_id(ws)
    uri, key = scoring(ws, "production")
    assert serving_model(uri, key) == f"{MODEL}:1"

    # nothing warm to go back to yet
    with pytest.raises(Conflict, match="no previous deployment to roll back to"):
        ws.releases.rollback("production", QA, "too early")

    # a passes staging and is approved while v1 is the champion
    ws.releases.deploy(MODEL, a, "staging", QA)
    assert ws.releases.state(MODEL, a).stage == Stage.AWAITING_APPROVAL
    assert ws.releases.approve(MODEL, a, LEAD, "better than v1").stage == Stage.APPROVED

    # b deployed by lee (ml_lead and qa): lee may not also approve it (four eyes); another lead may
    staging = ws.releases.deploy(MODEL, b, "staging", LEE)
    assert staging.live.model_ref == f"{MODEL}:{b}"
    state = ws.releases.state(MODEL, b)
    assert (state.stage, state.deployed_by) == (Stage.AWAITING_APPROVAL, LEE)
    assert ws.releases.smoke_test_result(state.smoke_test_id).passed
    with pytest.raises(Forbidden, match=f"lee@contoso.com deployed diabetes-regressor:{b} and may not also approve it"):
        ws.releases.approve(MODEL, b, LEE, "my own work")
    with pytest.raises(Conflict, match="only an approved version can be promoted"):
        ws.releases.promote(MODEL, b, QA)
    approved = ws.releases.approve(MODEL, b, LEAD, "rmse 49.9 vs 54.9")
    assert (approved.stage, approved.decided_by, approved.decision_comment) == (Stage.APPROVED, LEAD, "rmse 49.9 vs 54.9")

    # a promote whose production smoke test fails leaves production as it was
    with_smoke_tolerance(ws, monkeypatch, -1.0)
    with pytest.raises(GateFailed, match=rf"smoke test of diabetes-regressor:{b} on production/\w+ failed: .*traffic unchanged") as failed:
        ws.releases.promote(MODEL, b, QA)
    assert "differs from the offline prediction" in failed.value.hint
    monkeypatch.undo()
    assert live_traffic(ws, "production") == {"blue": 100}
    assert serving_model(uri, key) == f"{MODEL}:1"
    assert ws.models.champion(MODEL).version == 1
    assert ws.releases.state(MODEL, b).stage == Stage.APPROVED

    # two QA engineers press promote at once: one promotes, the other is told the endpoint is busy
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def press(who: str) -> None:
        other = LocalWorkspace(ws.root)  # as another console session or CLI process would
        try:
            barrier.wait()
            outcomes[who] = other.releases.promote(MODEL, b, QA, f"release {b}")
        except ServiceError as e:
            outcomes[who] = e
        finally:
            other.close()

    threads = [threading.Thread(target=press, args=(who,)) for who in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert isinstance(errors[0], Conflict) and "is already running 'promote' on endpoint production" in str(errors[0])

    # production answers with b; the champion alias moved; v1 stays warm at 0 %
    production = ws.endpoints.get("production")
    assert production.live.model_ref == f"{MODEL}:{b}"
    warm = [d for d in production.deployments if d.traffic == 0 and d.state == "healthy"]
    assert [d.model_ref for d in warm] == [f"{MODEL}:1"]
    assert serving_model(uri, key) == f"{MODEL}:{b}"
    assert ws.models.champion(MODEL).version == b
    assert ws.releases.state(MODEL, b).stage == Stage.PRODUCTION
    assert ws.releases.state(MODEL, 1).stage == Stage.RETIRED

    # a was approved against v1, but it is worse than the new champion b: the quality gate refuses it
    with pytest.raises(GateFailed, match=f"diabetes-regressor:{a} does not pass the quality gate: .*rmse"):
        ws.releases.promote(MODEL, a, QA)
    assert ws.endpoints.get("production").traffic == production.traffic

    # rollback: the warm v1 takes the traffic back at once, and the champion alias with it
    back = ws.releases.rollback("production", QA, "latency regression")
    assert back.live.model_ref == f"{MODEL}:1"
    assert serving_model(uri, key) == f"{MODEL}:1"
    assert ws.models.champion(MODEL).version == 1
    assert ws.releases.state(MODEL, b).stage == Stage.ROLLED_BACK
    assert ws.releases.state(MODEL, 1).stage == Stage.PRODUCTION

    # the audit trail has every step, with who did it and in which role
    trail = [(e.actor, e.role, e.action, e.target) for e in events_since(ws, start)]
    expected = [
        (QA, "qa", "deploy", "staging"),
        (LEAD, "ml_lead", "approve", f"{MODEL}:{a}"),
        (LEE, "qa", "deploy", "staging"),
        (LEAD, "ml_lead", "approve", f"{MODEL}:{b}"),
        (QA, "qa", "promote.failed", None),
        (QA, "qa", "promote", "production"),
        (QA, None, "model.alias", f"{MODEL}@champion"),
        (QA, "qa", "rollback", "production"),
        (QA, None, "model.alias", f"{MODEL}@champion"),
    ]
    position = 0
    for actor, role, action, target in expected:
        while position < len(trail) and not (
                trail[position][0] == actor and trail[position][2] == action
                and (role is None or trail[position][1] == role) and (target is None or trail[position][3] == target)):
            position += 1
        assert position < len(trail), f"{(actor, role, action, target)} missing or out of order in {trail}"
        position += 1
    promote = next(e for e in events_since(ws, start) if e.action == "promote")
    assert promote.before["traffic"] == {"blue": 100, "green": 0} and promote.after["traffic"] == {"blue": 0, "green": 100}
    rollback = next(e for e in events_since(ws, start) if e.action == "rollback")
    assert rollback.comment == "latency regression" and rollback.after["traffic"] == {"blue": 100, "green": 0}
    approve = next(e for e in events_since(ws, start) if e.action == "approve" and e.target == f"{MODEL}:{b}")
    assert (approve.before, approve.after, approve.comment) == (
        {"stage": "awaiting_approval"}, {"stage": "approved"}, "rmse 49.9 vs 54.9")


@pytest.mark.slow
def untouched(ws) -> list[int]:
    """Candidate versions no earlier test of this module has released (by stage, not number)."""
    return [m.version for m in ws.models.versions(MODEL)
            if m.version != 1 and ws.releases.state(MODEL, m.version).stage == Stage.REGISTERED]


def test_a_model_that_fails_to_load_fails_its_health_probe_and_traffic_stays(live_ws):
    ws = live_ws
    v = max(untouched(ws))  # the smoke-test test below takes min(): they never break each other's
    model_dir = Path(ws.models.get(MODEL, v).uri)
    assert ws.root in model_dir.parents, "only ever break the test's own copy"
    (model_dir / "model.pkl").unlink()
    (model_dir / "model.pkl").write_bytes(b"this is not a pickle")
    staging_before, production_before = live_traffic(ws, "staging"), live_traffic(ws, "production")
    uri, key = scoring(ws, "production")
    production_model = serving_model(uri, key)

    with pytest.raises(GateFailed, match=r"deployment staging/\w+ failed its health probe .*traffic unchanged") as failed:
        ws.releases.deploy(MODEL, v, "staging", QA)
    hint = failed.value.hint
    assert hint.startswith("Its console log:") and "model.pkl" in hint, hint
    assert live_traffic(ws, "staging") == staging_before
    assert live_traffic(ws, "production") == production_before
    assert serving_model(uri, key) == production_model
    assert ws.releases.state(MODEL, v).stage == Stage.REGISTERED
    broken = [d for d in ws.endpoints.get("staging").deployments if d.model_ref == f"{MODEL}:{v}"]
    assert [(d.state, d.traffic) for d in broken] == [("stopped", 0)]


@pytest.mark.slow
def test_a_failing_smoke_test_refuses_the_deploy_and_traffic_stays(live_ws, monkeypatch):
    ws = live_ws
    staging_before = live_traffic(ws, "staging")
    start = last_event_id(ws)
    v = min(untouched(ws))
    with_smoke_tolerance(ws, monkeypatch, -1.0)  # no prediction can match: parity fails on every case
    with pytest.raises(GateFailed, match=rf"smoke test of diabetes-regressor:{v} on staging/\w+ failed: 5 of 6 cases failed; traffic unchanged") as failed:
        ws.releases.deploy(MODEL, v, "staging", QA)
    assert failed.value.hint.count("differs from the offline prediction") == 5
    assert live_traffic(ws, "staging") == staging_before
    assert ws.releases.state(MODEL, v).stage == Stage.REGISTERED
    smoke = ws.releases.smoke_tests(1)[0]
    assert (smoke.model_version, smoke.passed, smoke.summary) == (v, False, "5 of 6 cases failed")
    actions = [e.action for e in events_since(ws, start)]
    assert "deploy.failed" in actions and "deploy" not in actions
