"""Canary rollouts and notifications on an Azure workspace (the replay), and what drives them.

The release contract suite (``tests/contract/test_releases.py``) runs the same canaries on
both backends; here what is Azure's own: the notification outbox kept in the audit trail
and delivered with retries under a lease, the rollout state on the trail's lines, and the
two drivers of a rollout where no supervisor runs — ``canary start --wait`` and ``agent``.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import tomllib

import pytest

import tollgate
from services import canary as cn
from services.azure.replay import FIXTURES
from services.azure.workspace import open_replay
from services.entities import Stage
from services.notify import PostResult
from tests.conftest import ROOT

MODEL = "diabetes-regressor"
QA, LEAD = "qa@contoso.com", "lead@contoso.com"
ROW = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.86, 87]
T0 = 1_800_000_000.0


def policy(**canary) -> str:
    roles = tomllib.loads((ROOT / "tollgate.toml").read_text())["roles"]
    # failures decide here; the replay's latency on a busy machine must not
    rules = {"steps": [50, 100], "step_seconds": 0.5, "min_requests": 5, "max_step_seconds": 60.0,
             "on_low_traffic": "rollback", "max_p95_ratio": 5.0, "max_p95_increase_ms": 1000.0, **canary}
    return "\n".join(["[canary]", *[f"{k} = {json.dumps(v)}" for k, v in rules.items()],
                      "[notifications]", "backoff_s = 60.0", "max_attempts = 3",
                      "[[notifications.webhooks]]", 'name = "ops"', 'url = "https://hooks.example.invalid/ops"',
                      "[roles]", *[f"{json.dumps(k)} = {json.dumps(v)}" for k, v in roles.items()], ""])


@pytest.fixture
def ws(tmp_path):
    folder = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "tollgate.toml").write_text(policy())
    workspace = open_replay(folder)
    workspace.replay.arm.lro_polls = 1
    workspace.endpoints.poll_s = 0.01
    yield workspace
    workspace.close()


def traffic(ws, stop: threading.Event) -> None:
    while not stop.is_set():
        ws.endpoints.invoke("production", {"data": [ROW]})
        time.sleep(0.01)


class Hook:
    """A webhook receiver standing in for ``post_json``: answers with the statuses given, in turn."""

    def __init__(self, *statuses: int):
        self.statuses, self.got = list(statuses), []

    def __call__(self, url: str, body: dict, timeout_s: float) -> PostResult:
        self.got.append(body)
        status = self.statuses.pop(0) if self.statuses else 200
        return PostResult(status, None if status < 300 else f"HTTP {status}", 3.0)


def test_events_ride_on_the_audit_records_of_their_change_and_are_delivered_with_retries(ws):
    ws.releases.deploy(MODEL, 4, "staging", QA)
    (event,) = ws.notifications.events()
    assert event.event == "approval_requested" and event.model == f"{MODEL}:4"
    carrier = next(r for r in ws.releases.audit(10) if r.id == event.id)
    assert carrier.action == "release.stage", "the event is on the line of the change it announces"

    hook = Hook(503)
    assert ws.notifications.deliver_due(T0, send=hook) == 1            # 503: tried again later
    (pending,) = ws.notifications.deliveries()
    assert (pending.state, pending.attempts, pending.last_status) == ("pending", 1, 503)
    assert ws.notifications.deliver_due(T0 + 59, send=hook) == 0       # not before the back-off
    other = open_replay(transport=ws.replay)                            # another process: the state is in a blob
    assert other.notifications.deliver_due(T0 + 60, send=hook) == 1
    assert [d.state for d in ws.notifications.deliveries()] == ["delivered"]
    assert [b["event"] for b in hook.got] == ["approval_requested"] * 2
    done = next(r for r in other.releases.audit(5) if r.action == "notification.delivered")
    assert (done.actor, done.target, done.after["status"], done.after["attempt"]) == \
        ("tollgate-system", "webhook/ops", 200, 2)
    assert ws.notifications.deliver_due(T0 + 10_000, send=hook) == 0, "delivered once"


def test_one_deliverer_at_a_time(ws):
    ws.releases.deploy(MODEL, 4, "staging", QA)
    with ws.locks.hold("notifications", "someone", "deliver", "the notification deliveries"):
        assert ws.notifications.deliver_due(T0, send=Hook()) == 0
    assert ws.notifications.deliver_due(T0, send=Hook()) == 1


def test_a_failing_canary_is_rolled_back_on_azure_with_its_records_and_events(ws):
    t = ws.replay
    ws.releases.approve(MODEL, 3, LEAD, "better rmse")
    plan = ws.releases.plan_promote(MODEL, 3, strategy="canary")
    r = ws.releases.start_canary(MODEL, 3, QA, "canary on Azure", plan=plan)
    assert t.online.traffic("production") == {"blue": 50, plan.deployment: 50}   # one PUT of the endpoint's traffic
    t.online.broken[("production", plan.deployment)] = 500
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(ws, stop), daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while ws.releases.rollout("production").active:
            assert time.monotonic() < deadline
            cn.advance_rollouts(ws)
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join(10)
    ended = ws.releases.rollout("production")
    assert ended.id == r.id and ended.state == cn.ROLLED_BACK and "canary failure rate" in ended.reason
    assert t.online.traffic("production") == {"blue": 100}
    assert [d.name for d in ws.endpoints.get("production").deployments] == ["blue"], "the canary was deleted"
    assert ws.releases.state(MODEL, 3).stage == Stage.ROLLED_BACK
    rec = next(x for x in ws.releases.audit(20) if x.action == "canary.rolled_back")
    assert rec.actor == "tollgate-system" and rec.after["traffic"] == {"blue": 100, plan.deployment: 0}
    kinds = [e.event for e in reversed(ws.notifications.events())]
    assert kinds[-2:] == ["canary_step", "rolled_back"]
    # the rollout's state is the trail's: another console reads the same
    assert open_replay(transport=t).releases.rollout("production") == ended


def test_canary_start_wait_drives_the_rollout_where_no_supervisor_does(ws, monkeypatch, capsys):
    ws.releases.approve(MODEL, 3, LEAD, "better rmse")
    monkeypatch.setattr(tollgate, "open_workspace", lambda uri=None: ws)
    monkeypatch.setattr(ws, "close", lambda: None)
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(ws, stop), daemon=True)
    sender.start()
    try:
        code = tollgate.main(["--as", QA, "canary", "start", "--model", MODEL, "--version", "3", "--wait",
                              "--timeout", "60"])
    finally:
        stop.set()
        sender.join(10)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "succeeded: step 2 of 2 (100 %)" in out and f"canary of {MODEL}:3 on production: succeeded" in out
    assert "✓ deployment green (diabetes-regressor:3) created at 0 %" in err       # the steps, as they ended
    assert ws.models.champion(MODEL).version == 3


def test_the_agent_ticks_once_on_azure_and_is_not_needed_locally(ws, monkeypatch, capsys, demo_ws_path):
    monkeypatch.setattr(tollgate, "open_workspace", lambda uri=None: ws)
    monkeypatch.setattr(ws, "close", lambda: None)
    assert tollgate.main(["agent", "--once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"decisions": [], "deliveries": 0}
    monkeypatch.undo()
    code = tollgate.main(["--workspace", f"local://{demo_ws_path}", "agent", "--once"])
    assert code == 2 and "supervisor advances rollouts" in capsys.readouterr().err
