"""Canary with automatic rollback, live: real endpoints, simulated traffic, a webhook receiver.

Production serves v1. A deliberately broken version (v3's estimator wrapped so that ``run()``
fails for half of the inputs in the inference server; it passed the gate and the staging smoke
test) is promoted as a canary under 40 requests/s: the supervisor rolls it back at its first
step, production's stable version never fails a request, and the audit trail and the webhook
message say why. Then v3 itself goes through 10 → 50 → 100 % and becomes the champion.

The policy of this workspace shortens the steps to 3 s (``[canary]``) and posts every
event to a receiver on 127.0.0.1 (``[notifications]``).
"""
from __future__ import annotations

import json
import threading
import time
import tomllib
from collections import Counter
from datetime import datetime

import pytest

from services import canary as cn
from services.entities import Stage
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from services.simulator import simulate
from tests.conftest import ROOT, copy_workspace
from tests.release.conftest import LEAD, MODEL, QA, telemetry_rows, wait_for, wait_for_exit

from .faulty_model import register_flaky
from .receiver import Receiver

RPS = 40
STEP_S = 3


def policy_text(ops_url: str, teams_url: str) -> str:
    roles = tomllib.loads((ROOT / "tollgate.toml").read_text())["roles"]
    return "\n".join([
        "[canary]", "steps = [10, 50, 100]", f"step_seconds = {STEP_S}", "min_requests = 12",
        "max_step_seconds = 30", 'on_low_traffic = "rollback"',
        "max_failure_rate = 0.02", "max_failure_rate_increase = 0.01",
        # a shared 2-core machine: latency noise must not decide this test, failures must
        "max_p95_ratio = 3.0", "max_p95_increase_ms = 250.0",
        "", "[notifications]", "backoff_s = 0.5", 'console_url = "http://127.0.0.1:8501"',
        "[[notifications.webhooks]]", 'name = "ops"', 'format = "generic"', f'url = "{ops_url}"',
        "[[notifications.webhooks]]", 'name = "teams"', 'format = "teams"', f'url = "{teams_url}"',
        'events = ["rolled_back", "promoted"]',
        "", "[roles]", *[f"{json.dumps(k)} = {json.dumps(v)}" for k, v in roles.items()], ""])


class Traffic:
    """Simulated clients (``services.simulator``) against production, in 2-second batches until stopped."""

    def __init__(self, ws, rps: float = RPS):
        self.ws, self.rps = ws, rps
        self.outcomes: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        seed = 0
        while not self._stop.is_set():
            seed += 1
            try:
                result = simulate(self.ws, "production", rps=self.rps, duration_s=2, error_rate=0.02, seed=seed,
                                  actor="qa@contoso.com")
                self.outcomes.extend(result.outcomes)
            except Exception as e:  # reported by the test, never swallowed
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.2)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def between(self, start: float, end: float) -> list:
        return [o for o in self.outcomes if start <= o.sent_at < end]


@pytest.fixture(scope="module")
def live(demo_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("canary-live")
    with Receiver() as rx:
        root = copy_workspace(demo_template, folder / "ws")
        (root / "tollgate.toml").write_text(policy_text(rx.url("/ops"), rx.url("/teams")))
        ws = LocalWorkspace(root)
        try:
            assert ws.policy.canary.step_seconds == STEP_S and len(ws.policy.notifications.webhooks) == 2
            ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
            yield ws, rx, folder
        finally:
            ws.endpoints.down(SYSTEM_ACTOR)
            leftovers = wait_for_exit(root, 15)
            ws.close()
            assert not leftovers, f"processes left behind by {root}: {leftovers}"


def wait_rollout_end(ws, timeout_s: float) -> cn.Rollout:
    return wait_for(lambda: (r := ws.releases.rollout("production")) and not r.active and r, timeout_s,
                    "the canary rollout to end")


@pytest.mark.slow
def test_a_broken_canary_is_rolled_back_at_its_first_step_while_production_keeps_serving(live):
    ws, rx, folder = live
    v1 = f"{MODEL}:1"
    broken = register_flaky(ws, MODEL, 3, folder, failure_rate=0.5)
    ref = f"{MODEL}:{broken}"
    ws.releases.deploy(MODEL, broken, "staging", QA)        # the smoke test does not catch it
    ws.releases.approve(MODEL, broken, LEAD, "gate passed")  # nor does the gate (offline it is v3)

    with Traffic(ws) as traffic:
        wait_for(lambda: len(traffic.outcomes) > RPS, 30, "traffic to flow")
        r = ws.releases.start_canary(MODEL, broken, QA, "chaos canary")
        assert (r.state, r.traffic, r.stable_model) == (cn.RUNNING, 10, v1)
        assert ws.endpoints.get("production").traffic == {r.stable_deployment: 90, r.canary_deployment: 10}
        ended = wait_rollout_end(ws, 60)
        ended_wall = time.time()
        time.sleep(2)  # traffic after the rollback
    assert not traffic.errors, traffic.errors

    # rolled back automatically at its first step, for the reason the analysis gives
    assert (ended.state, ended.step_index) == (cn.ROLLED_BACK, 0)
    assert ended.reason.startswith("automatic rollback: canary failure rate ")
    a = ended.last_analysis
    assert a.verdict == cn.FAIL and a.canary.failures > 0 and a.stable.failures == 0
    to_rollback = (ended.ended_at - ended.step_started_at).total_seconds()
    assert STEP_S <= to_rollback < STEP_S + 5
    assert ws.endpoints.get("production").traffic == {r.stable_deployment: 100, r.canary_deployment: 0}
    assert ws.releases.state(MODEL, broken).stage == Stage.ROLLED_BACK
    assert ws.releases.state(MODEL, 1).stage == Stage.PRODUCTION
    assert ws.models.get(MODEL, 1).version == ws.db.one(
        "SELECT version FROM model_aliases WHERE name = ? AND alias = 'champion'", (MODEL,))[0]

    # production kept serving the stable version: every 5xx came from the canary
    outcomes = traffic.outcomes
    failed = [o for o in outcomes if o.status >= 500 or o.status == 0]
    assert failed and {(o.deployment, o.model) for o in failed} == {(r.canary_deployment, ref)}
    stable = [o for o in outcomes if o.model == v1]
    assert stable and all(o.status < 500 for o in stable) and {o.deployment for o in stable} == {r.stable_deployment}
    start_ts, end_ts = r.step_started_at.timestamp(), ended.ended_at.timestamp()
    rows = [t for t in telemetry_rows(ws.root) if start_ts - 1 <= t["ts"] <= end_ts + 1]
    assert rows and not [t for t in rows if t["deployment"] == r.stable_deployment and t["status"] >= 500]
    after = traffic.between(ended_wall + 0.5, time.time())
    assert after and {o.model for o in after if o.model} == {v1}, "after the rollback only the stable version answers"
    assert all(0 < o.status < 500 for o in after)  # (a request with a wrong key is refused before any model)

    # the audit trail says why
    rec = next(x for x in ws.releases.audit() if x.action == "canary.rolled_back")
    assert rec.actor == SYSTEM_ACTOR and rec.comment.startswith("canary failure rate ")
    assert "> 2.0 % (stable 0.0 %)" in rec.comment and rec.after["reasons"] == [rec.comment]

    # ... and so does the webhook message
    (msg,) = rx.wait_for(lambda m: m.path == "/ops" and m.body.get("event") == "rolled_back", 30)
    body = msg.body
    assert body["model"] == ref and body["endpoint"] == "production" and body["details"]["automatic"] is True
    assert body["details"]["reasons"] == [rec.comment] and rec.comment in body["summary"]
    (teams,) = rx.wait_for(lambda m: m.path == "/teams", 30)
    assert rec.comment in json.dumps(teams.body["attachments"][0]["content"]["body"])
    latency = msg.at - datetime.fromisoformat(body["at"]).timestamp()
    delivered = next(x for x in ws.releases.audit() if x.action == "notification.delivered"
                     and x.target == "webhook/ops" and x.after["event"] == "rolled_back")
    assert delivered.after["status"] == 200 and delivered.after["attempt"] == 1

    canary_requests = [o for o in outcomes if o.deployment == r.canary_deployment]
    print(f"\nbroken canary: rolled back {to_rollback:.1f} s after its step began (step_seconds {STEP_S}); "
          f"{len(failed)} of {len(canary_requests)} canary requests failed "
          f"({len(outcomes)} requests in all, {len(stable)} answered by {v1}, none failed); "
          f"webhook delivered {latency * 1000:.0f} ms after the event; reason: {rec.comment}")


@pytest.mark.slow
def test_a_healthy_canary_goes_to_100_percent_and_becomes_the_champion(live):
    ws, rx, _ = live
    v3 = f"{MODEL}:3"
    ws.releases.deploy(MODEL, 3, "staging", QA)
    ws.releases.approve(MODEL, 3, LEAD, "better than the champion")
    with Traffic(ws) as traffic:
        wait_for(lambda: len(traffic.outcomes) > RPS, 30, "traffic to flow")
        r = ws.releases.start_canary(MODEL, 3, QA, "healthy canary")
        started = time.time()
        ended = wait_rollout_end(ws, 90)
        took = time.time() - started
        ended_wall = time.time()
        time.sleep(1.5)
    assert not traffic.errors, traffic.errors
    assert ended.state == cn.SUCCEEDED, (ended.state, ended.reason)
    assert [a.traffic for a in ended.history] == [10, 50, 100] and all(a.verdict == cn.PASS for a in ended.history)
    assert ws.endpoints.get("production").traffic == {r.canary_deployment: 100, r.stable_deployment: 0}
    assert ws.releases.state(MODEL, 3).stage == Stage.PRODUCTION and ws.releases.state(MODEL, 1).stage == Stage.RETIRED
    assert ws.db.one("SELECT version FROM model_aliases WHERE name = ? AND alias = 'champion'", (MODEL,))[0] == 3
    during = traffic.between(r.started_at.timestamp(), ended_wall)
    assert during and not [o for o in during if o.status >= 500 or o.status == 0]
    assert Counter(o.model for o in during)[v3] > 0
    after = traffic.between(ended_wall + 0.5, time.time())
    assert after and {o.model for o in after if o.model} == {v3}
    (promoted,) = rx.wait_for(lambda m: m.path == "/ops" and m.body.get("event") == "promoted"
                              and m.body["model"] == v3, 30)
    assert promoted.body["details"]["strategy"] == "canary"
    steps = [m.body["details"]["traffic"] for m in rx.received if m.path == "/ops"
             and m.body.get("event") == "canary_step" and m.body["model"] == v3]
    assert steps == [10, 50, 100]
    print(f"\nhealthy canary: 10 → 50 → 100 % in {took:.1f} s (3 steps of {STEP_S} s), "
          f"{len(during)} requests during the rollout, none failed; per step canary requests "
          f"{[a.canary.requests for a in ended.history]}")
