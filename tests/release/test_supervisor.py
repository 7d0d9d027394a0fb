"""Crash recovery: the supervisor restarts what dies, records the incident, and a new
supervisor adopts what a killed one left running.

Production runs v1 on ``blue`` and v3 on ``green``. Requests keep flowing (20/s)
while a deployment process is killed with SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from services.errors import Forbidden
from services.local.processes import pid_alive
from services.permissions import SYSTEM_ACTOR

from .conftest import ADMIN, FEATURES_ROW, MODEL, Client, SteadyLoad, live_workspace, scoring, wait_for, wait_for_exit, \
    wait_telemetry, workspace_processes

GOOD = json.dumps({"data": [FEATURES_ROW]})


@pytest.fixture(scope="module")
def prod(demo_template, tmp_path_factory):
    with live_workspace(demo_template, tmp_path_factory.mktemp("supervisor")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        ws.releases.deploy(MODEL, 3, "production", SYSTEM_ACTOR)
        yield ws


def deployment(ws, name: str):
    return ws.db.one("SELECT * FROM deployments WHERE endpoint = 'production' AND name = ?", (name,))


def kill_and_wait_for_restart(ws, name: str) -> tuple[int, float, float]:
    """SIGKILL the deployment's process; returns its pid, the kill time and when it was healthy again."""
    before = deployment(ws, name)
    assert before["state"] == "healthy" and pid_alive(before["pid"])
    killed_at = time.time()
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: (d := deployment(ws, name))["pid"] != before["pid"] and d["state"] == "healthy",
             120, f"{name} to be restarted and healthy")
    return before["pid"], killed_at, time.time()


@pytest.mark.slow
def test_a_killed_deployment_is_restarted_and_its_peer_answers_meanwhile(prod):
    ws = prod
    ws.releases.set_traffic("production", {"blue": 50, "green": 50}, ADMIN, "two deployments serving")
    uri, key = scoring(ws, "production")
    restarts_before = deployment(ws, "green")["restarts"]
    trail_before = ws.releases.audit(1)[0].id

    with SteadyLoad(uri, key, rate=20, max_s=180) as load:
        time.sleep(2)
        old_pid, killed_at, healthy_at = kill_and_wait_for_restart(ws, "green")
        time.sleep(2)
    outcomes = load.outcomes

    # the gateway retried the other deployment: the client never saw the crash
    failed = [o for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
    # once the supervisor has seen the crash (a tick, 0.5 s) and until green is back, blue answers alone
    during = Counter(o.deployment for o in outcomes if killed_at + 1 < o.sent < healthy_at - 0.5)
    assert during["blue"] > 0 and during["green"] == 0, during
    assert any(o.deployment == "green" for o in outcomes if o.sent > healthy_at + 0.5), "green serves again"

    # the restart and the incident
    green = deployment(ws, "green")
    assert green["restarts"] == restarts_before + 1
    assert pid_alive(green["pid"]) and green["pid"] != old_pid
    assert f"process {old_pid} exited unexpectedly" in green["last_error"] and "restarted" in green["last_error"]
    shown = next(d for d in ws.endpoints.get("production").deployments if d.name == "green")
    assert (shown.state, shown.restarts, shown.last_error) == ("healthy", green["restarts"], green["last_error"])
    incidents = [e for e in ws.releases.audit() if e.id > trail_before and e.action == "deployment.crashed"]
    assert len(incidents) == 1
    incident = incidents[0]
    assert (incident.actor, incident.role, incident.target) == ("supervisor", "system", "production/green")
    assert incident.before == {"pid": old_pid, "state": "healthy", "model": f"{MODEL}:3"}
    assert incident.after == {"action": "restart", "restarts": restarts_before + 1}

    # one telemetry record per request, the crash notwithstanding
    rows = wait_telemetry(ws.root, load.request_ids)
    assert len(rows) == len(outcomes) and all(r["status"] == 200 for r in rows)


@pytest.mark.slow
def test_when_the_only_serving_deployment_dies_the_warm_one_answers_until_it_is_back(prod):
    """kill -9 of production's only deployment with traffic, under load: not one request fails.
    Requests in flight on the killed process and those sent before the supervisor noticed are
    retried by the gateway on the warm deployment (they had not been answered at all); from the
    supervisor's next tick until the restarted process is healthy, the warm deployment takes the
    traffic (failover), then gives it back (failback); both are in the audit trail."""
    ws = prod
    ws.releases.set_traffic("production", {"blue": 0, "green": 100}, ADMIN, "one deployment serving")
    uri, key = scoring(ws, "production")
    trail_before = ws.releases.audit(1)[0].id
    with SteadyLoad(uri, key, rate=20, max_s=180) as load:
        time.sleep(2)
        old_pid, killed_at, healthy_at = kill_and_wait_for_restart(ws, "green")
        time.sleep(2)
    outcomes = load.outcomes

    failed = [o for o in outcomes if not o.ok]
    print(f"\nonly deployment killed: {len(failed)} of {len(outcomes)} requests failed during the "
          f"{healthy_at - killed_at:.1f} s restart; answered by {dict(Counter(o.deployment for o in outcomes))}")
    assert not failed, f"{len(failed)} of {len(outcomes)} failed: {Counter(o.status for o in failed)} {failed[:3]}"
    during = Counter(o.deployment for o in outcomes if killed_at + 1 < o.sent < healthy_at - 0.5)
    assert during["blue"] > 0 and during["green"] == 0, during
    assert {o.model for o in outcomes if o.deployment == "blue"} == {f"{MODEL}:1"}
    resumed = [o for o in outcomes if o.sent > healthy_at + 1]
    assert resumed and all(o.deployment == "green" for o in resumed), "green took its traffic back"
    assert ws.endpoints.get("production").traffic == {"blue": 0, "green": 100}, "failover never moves the split"

    trail = [e for e in ws.releases.audit() if e.id > trail_before][::-1]  # oldest first
    assert [e.action for e in trail] == ["deployment.crashed", "endpoint.failover", "endpoint.failback"]
    failover, failback = trail[1], trail[2]
    assert (failover.actor, failover.role, failover.target) == ("supervisor", "system", "production")
    assert failover.before == {"deployment": "green", "model": f"{MODEL}:3", "traffic": 100}
    assert failover.after == {"deployment": "blue", "model": f"{MODEL}:1"}
    assert failback.before == {"deployment": "blue", "model": f"{MODEL}:1"}
    assert failback.after == {"deployment": "green", "model": f"{MODEL}:3", "traffic": 100}

    rows = wait_telemetry(ws.root, load.request_ids)
    assert len(rows) == len(outcomes) and all(r["status"] == 200 for r in rows)


@pytest.mark.slow
def test_a_new_up_after_the_supervisor_was_killed_adopts_what_runs_and_down_stops_everything(prod):
    ws = prod
    uri, key = scoring(ws, "production")
    client = Client()
    supervisor = ws.endpoints.supervisor_pid()
    gateways = {r["name"]: r["gateway_pid"] for r in ws.db.query("SELECT name, gateway_pid FROM endpoints")}
    deployments = {r["name"]: r["pid"] for r in ws.db.query("SELECT name, pid FROM deployments"
                                                            " WHERE endpoint = 'production' AND desired = 'running'")}
    assert supervisor and all(map(pid_alive, gateways.values())) and all(map(pid_alive, deployments.values()))

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not pid_alive(supervisor), 10, "the supervisor to die")
    assert ws.endpoints.supervisor_pid() is None
    # the data plane does not need the supervisor: production keeps answering
    assert client.post(uri, GOOD, key).status_code == 200

    with pytest.raises(Forbidden, match="support@contoso.com \\(support\\) may not start or stop the endpoints"):
        ws.endpoints.up("support@contoso.com")
    assert ws.endpoints.supervisor_pid() is None
    second = ws.endpoints.up("qa@contoso.com")
    assert second != supervisor
    started = ws.releases.audit(1)[0]
    assert (started.action, started.actor, started.role, started.after) == (
        "endpoints.up", "qa@contoso.com", "qa", {"supervisor_pid": second})
    time.sleep(2)  # a few reconciliation ticks
    assert ws.endpoints.up(SYSTEM_ACTOR) == second, "up is idempotent"
    assert ws.releases.audit(1)[0].id == started.id, "nothing to start: nothing recorded"
    now_gateways = {r["name"]: r["gateway_pid"] for r in ws.db.query("SELECT name, gateway_pid FROM endpoints")}
    now_deployments = {r["name"]: r["pid"] for r in ws.db.query("SELECT name, pid FROM deployments"
                                                                " WHERE endpoint = 'production' AND desired = 'running'")}
    assert (now_gateways, now_deployments) == (gateways, deployments), "adopted, not restarted"
    running = [cmd for _, cmd in workspace_processes(ws.root)]
    assert sum("services.local.gateway" in c for c in running) == len(gateways), running
    assert sum("services.local.supervisor" in c for c in running) == 1, running
    for name in deployments:
        r = client.post(uri, GOOD, key, deployment=name)
        assert r.status_code == 200 and r.headers["azureml-model-deployment"] == name

    assert ws.endpoints.down("admin@contoso.com") is True
    stopped = ws.releases.audit(1)[0]
    assert (stopped.action, stopped.actor, stopped.role) == ("endpoints.down", "admin@contoso.com", "admin")
    assert wait_for_exit(ws.root, 15) == []
    assert ws.endpoints.supervisor_pid() is None and not (ws.root / "supervisor.pid").exists()
    assert all(not pid_alive(p) for p in [*gateways.values(), *deployments.values()])
    assert all(d.state == "stopped" for d in ws.endpoints.get("production").deployments)
    assert ws.endpoints.down(SYSTEM_ACTOR) is False
