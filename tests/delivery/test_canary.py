"""Canary analysis and the rollout state machine, with an injected clock and stats.

The pure parts (``analyze``, ``decide``) are checked on figures; ``advance_rollouts`` runs
first against an in-memory release service, then against the real local one on a
workspace whose production endpoint is arranged in the database (no processes: the
gateway is not running, so traffic changes need no routing wait). The live test with
real processes and traffic is ``test_canary_live.py``.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest

from services import canary as cn
from services.canary import Side, analyze, decide
from services.entities import Stage, VersionStats
from services.errors import Conflict, Forbidden, InvalidInput
from services.local.workspace import LocalWorkspace
from services.policy import CanaryPolicy, Policy, parse_policy
from tests.conftest import copy_workspace

from .arrange import arrange_rollout

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = CanaryPolicy()  # steps 10/50/100, 300 s, min 50 requests, 2 % / +1 %, p95 x1.5 or +25 ms
MODEL = "diabetes-regressor"
QA, SUPPORT, ADMIN = "qa@contoso.com", "support@contoso.com", "admin@contoso.com"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- analysis -------------------------------------------------------------------

def test_a_failing_canary_is_judged_with_the_reason_in_words():
    a = analyze(Side(100, 18, 40.0), Side(900, 0, 40.0), RULES, T0, at(300))
    assert a.verdict == cn.FAIL
    assert a.reasons == ("canary failure rate 18.0 % > 2.0 % (stable 0.0 %)",)
    assert a.max_failure_rate == 0.02


def test_a_healthy_canary_passes_and_says_which_limits_it_met():
    a = analyze(Side(100, 1, 42.0), Side(900, 9, 40.0), RULES, T0, at(300))
    assert a.verdict == cn.PASS
    assert a.reasons == ("canary failure rate 1.0 % ≤ 2.0 % (stable 1.0 %)", "canary p95 42 ms ≤ 65 ms (stable 40 ms)")


def test_the_failure_limit_follows_a_stable_version_that_fails_too():
    # stable 5 %: the canary may fail up to 6 % (5 % + 1 %), not only the absolute 2 %
    assert analyze(Side(200, 11, 10.0), Side(800, 40, 10.0), RULES, T0, at(300)).verdict == cn.PASS
    a = analyze(Side(200, 13, 10.0), Side(800, 40, 10.0), RULES, T0, at(300))
    assert a.verdict == cn.FAIL and a.reasons == ("canary failure rate 6.5 % > 6.0 % (stable 5.0 %)",)


def test_latency_fails_over_the_ratio_and_the_additive_allowance_whichever_is_larger():
    assert analyze(Side(100, 0, 64.0), Side(900, 0, 40.0), RULES, T0, at(300)).verdict == cn.PASS   # 40 + 25
    a = analyze(Side(100, 0, 400.0), Side(900, 0, 200.0), RULES, T0, at(300))                      # 200 x 1.5
    assert a.verdict == cn.FAIL and a.reasons == ("canary p95 400 ms > 300 ms (stable 200 ms)",)


def test_latency_is_not_judged_on_fewer_requests_than_make_a_p95():
    rules = dataclasses.replace(RULES, min_requests=8)
    a = analyze(Side(12, 0, 300.0), Side(100, 0, 26.0), rules, T0, at(3))
    assert a.verdict == cn.PASS and a.reasons[1] == "canary p95 not judged on 12 requests (20 make a p95)"
    assert analyze(Side(20, 0, 300.0), Side(100, 0, 26.0), rules, T0, at(3)).verdict == cn.FAIL


def test_too_few_canary_requests_wait_unless_the_failures_already_decide():
    wait = analyze(Side(20, 0, 10.0), Side(200, 0, 10.0), RULES, T0, at(300))
    assert wait.verdict == cn.WAIT and wait.reasons == ("the canary served 20 of the 50 requests needed to judge it",)
    # 2 failures are more than 2 % of the 50 requests needed, whatever the rest would do
    fail = analyze(Side(20, 2, 10.0), Side(200, 0, 10.0), RULES, T0, at(300))
    assert fail.verdict == cn.FAIL and fail.reasons[0].startswith("canary failure rate 10.0 % > 2.0 % (stable 0.0 %)")
    assert analyze(Side(20, 1, 10.0), Side(200, 0, 10.0), RULES, T0, at(300)).verdict == cn.WAIT


def test_without_stable_traffic_the_last_steps_figures_or_the_absolute_limits_apply():
    baseline = (Side(500, 25, 40.0), "stable in step 2")
    a = analyze(Side(1000, 55, 50.0), Side(0, 0, None), RULES, T0, at(300), baseline=baseline)
    assert a.verdict == cn.PASS and a.baseline == "stable in step 2" and a.max_failure_rate == pytest.approx(0.06)
    b = analyze(Side(1000, 30, 600.0), Side(0, 0, None), RULES, T0, at(300), absolute_p95_ms=500.0)
    assert b.verdict == cn.FAIL and b.baseline == "absolute limits"
    assert b.reasons == ("canary failure rate 3.0 % > 2.0 % (no stable traffic to compare)",
                         "canary p95 600 ms > 500 ms (absolute limit)")


def test_sides_add_up_deployment_rows_and_keep_the_worst_p95():
    rows = [VersionStats("production", "green", f"{MODEL}:6", 30, 3, 1, 5.0, 20.0, 30.0),
            VersionStats("production", "green", f"{MODEL}:6", 10, 1, 0, 5.0, 35.0, 40.0)]
    assert Side.of(rows) == Side(40, 4, 35.0)
    assert Side.of([]) == Side(0, 0, None)


# --- decide -----------------------------------------------------------------------

def rollout(**kw) -> cn.Rollout:
    base = dict(id=1, endpoint="production", model_name=MODEL, model_version=6, canary_deployment="green",
                stable_deployment="blue", stable_model=f"{MODEL}:1", steps=(10, 50, 100), rules=RULES, step_index=0,
                state=cn.RUNNING, started_at=T0, started_by=QA, step_started_at=T0, updated_at=T0)
    return cn.Rollout(**{**base, **kw})


GOOD, BAD, STABLE = Side(100, 0, 40.0), Side(100, 30, 40.0), Side(900, 0, 40.0)


@pytest.mark.parametrize("kw, now, canary, action", [
    ({}, 299.9, BAD, cn.NOTHING),                                     # the step is not over
    ({}, 300, GOOD, cn.NEXT),
    ({"step_index": 2}, 300, GOOD, cn.COMPLETE),                      # the last step passed
    ({}, 300, BAD, cn.ROLLBACK),
    ({"state": cn.PAUSED}, 10_000, BAD, cn.NOTHING),                  # a paused rollout is left alone
    ({}, 600, Side(10, 0, 40.0), cn.NOTHING),                         # waits for traffic ...
    ({}, 900, Side(10, 0, 40.0), cn.PAUSE),                           # ... until max_step_seconds: pause
    ({"rules": dataclasses.replace(RULES, on_low_traffic="rollback")}, 900, Side(10, 0, 40.0), cn.ROLLBACK),
])
def test_decide(kw, now, canary, action):
    assert decide(rollout(**kw), at(now), canary, STABLE, 500.0).action == action


def test_a_low_traffic_decision_says_how_much_traffic_there_was():
    d = decide(rollout(), at(900), Side(10, 0, 40.0), STABLE, 500.0)
    assert d.reason == "not enough traffic to judge step 1 of 3 (10 %): 10 canary request(s) in 900 s, 50 needed"


# --- the tick, against an in-memory release service ------------------------------------

class MemoryReleases:
    def __init__(self, r: cn.Rollout):
        self.r, self.applied = r, []

    def rollouts(self, active: bool = False):
        return [self.r] if self.r.active or not active else []

    def apply_canary(self, r, d, now):
        assert r == self.r
        self.applied.append((d.action, (now - T0).total_seconds(), r.traffic))
        if d.action == cn.NEXT:
            self.r = dataclasses.replace(r, step_index=r.step_index + 1, step_started_at=now, history=r.history + (d.analysis,))
        else:
            self.r = dataclasses.replace(r, state={cn.COMPLETE: cn.SUCCEEDED, cn.ROLLBACK: cn.ROLLED_BACK,
                                                   cn.PAUSE: cn.PAUSED}[d.action], reason=d.reason)
        return self.r


class FakeWorkspace:
    def __init__(self, r):
        self.releases, self.policy = MemoryReleases(r), Policy()


def traffic_stats(ws, rps: float, canary_failure: float, canary_p95: float = 40.0):
    """Stats of a window as the gateway would record them: rps split by the rollout's current step."""
    def stats(window, endpoint):
        r = ws.releases.r
        total = rps * window.seconds
        n_canary = round(total * r.traffic / 100)
        n_stable = round(total) - n_canary
        return [VersionStats(endpoint, r.canary_deployment, r.model_ref, n_canary, round(n_canary * canary_failure),
                             0, 5.0, canary_p95, canary_p95),
                VersionStats(endpoint, r.stable_deployment, r.stable_model, n_stable, 0, 0, 5.0, 40.0, 40.0)]
    return stats


def run_clock(ws, stats, until_s: float, tick_s: float = 0.5):
    t = 0.0
    while t <= until_s and ws.releases.r.active:
        cn.advance_rollouts(ws, at(t), stats)
        t += tick_s
    return ws.releases.applied


def test_a_healthy_canary_moves_10_50_100_then_succeeds_one_step_every_step_seconds():
    ws = FakeWorkspace(rollout())
    applied = run_clock(ws, traffic_stats(ws, rps=20, canary_failure=0.0), 2000)
    assert applied == [(cn.NEXT, 300, 10), (cn.NEXT, 600, 50), (cn.COMPLETE, 900, 100)]
    assert ws.releases.r.state == cn.SUCCEEDED
    assert [a.traffic for a in ws.releases.r.history] == [10, 50]
    assert ws.releases.r.history[0].canary.requests == 600 and ws.releases.r.history[1].stable.requests == 3000


def test_a_broken_canary_is_rolled_back_at_its_first_step():
    ws = FakeWorkspace(rollout())
    applied = run_clock(ws, traffic_stats(ws, rps=20, canary_failure=0.3), 2000)
    assert applied == [(cn.ROLLBACK, 300, 10)]
    assert ws.releases.r.state == cn.ROLLED_BACK
    assert ws.releases.r.reason == "canary failure rate 30.0 % > 2.0 % (stable 0.0 %)"


def test_a_slow_canary_is_rolled_back_at_the_step_where_it_is_slow():
    ws = FakeWorkspace(rollout())
    applied = run_clock(ws, traffic_stats(ws, rps=20, canary_failure=0.0, canary_p95=90.0), 2000)
    assert applied == [(cn.ROLLBACK, 300, 10)]
    assert ws.releases.r.reason == "canary p95 90 ms > 65 ms (stable 40 ms)"


def test_a_canary_without_enough_traffic_waits_then_pauses():
    ws = FakeWorkspace(rollout())
    applied = run_clock(ws, traffic_stats(ws, rps=0.1, canary_failure=0.0), 2000)
    assert applied == [(cn.PAUSE, 900, 10)] and ws.releases.r.state == cn.PAUSED


def test_a_tick_repeated_at_the_same_time_changes_nothing():
    ws = FakeWorkspace(rollout())
    stats = traffic_stats(ws, rps=20, canary_failure=0.0)
    cn.advance_rollouts(ws, at(300), stats)
    cn.advance_rollouts(ws, at(300), stats)
    assert ws.releases.applied == [(cn.NEXT, 300, 10)]


# --- the tick and the operations, against the local release service ---------------------

@pytest.fixture
def arranged(demo_template, tmp_path):
    """Production serving v1 on blue, v3 on green at 10 % as step 1 of a running rollout started at T0."""
    ws = LocalWorkspace(copy_workspace(demo_template, tmp_path / "ws"))
    arrange_rollout(ws, T0, RULES)
    yield ws
    ws.close()


def local_stats(ws, canary_failure: float):
    def stats(window, endpoint):
        traffic = ws.endpoints.get("production").traffic
        total = 20 * window.seconds
        n = round(total * traffic["green"] / 100)
        return [VersionStats(endpoint, "green", f"{MODEL}:3", n, round(n * canary_failure), 0, 5.0, 40.0, 40.0),
                VersionStats(endpoint, "blue", f"{MODEL}:1", round(total) - n, 0, 0, 5.0, 40.0, 40.0)]
    return stats


def events(ws, kind: str | None = None):
    rows = ws.db.query("SELECT * FROM outbox ORDER BY id")
    return [r for r in rows if kind is None or r["event"] == kind]


def test_the_local_store_rolls_a_failing_canary_back_once_with_its_reasons(arranged):
    ws = arranged
    stats = local_stats(ws, 0.3)
    assert cn.advance_rollouts(ws, at(299), stats) == []
    (done,) = cn.advance_rollouts(ws, at(300), stats)
    assert done[1].action == cn.ROLLBACK
    assert cn.advance_rollouts(ws, at(301), stats) == [], "an ended rollout is not touched again"
    r = ws.releases.rollout("production")
    assert (r.state, r.step_index, r.traffic) == (cn.ROLLED_BACK, 0, 0)
    assert r.reason == "automatic rollback: canary failure rate 30.0 % > 2.0 % (stable 0.0 %)"
    assert r.last_analysis.canary == Side(600, 180, 40.0)
    ep = ws.endpoints.get("production")
    assert ep.traffic == {"blue": 100, "green": 0}
    assert ws.db.one("SELECT desired FROM deployments WHERE name = 'green'")["desired"] == "stopped"
    assert ws.releases.state(MODEL, 3).stage == Stage.ROLLED_BACK
    assert ws.releases.state(MODEL, 1).stage == Stage.PRODUCTION
    rec = next(a for a in ws.releases.audit() if a.action == "canary.rolled_back")
    assert rec.actor == "tollgate-system" and rec.comment == "canary failure rate 30.0 % > 2.0 % (stable 0.0 %)"
    assert rec.after["traffic"] == {"blue": 100, "green": 0}
    (event,) = events(ws, "rolled_back")
    details = json.loads(event["details_json"])
    assert details["automatic"] is True and details["reasons"] == [rec.comment]
    assert "rolled back automatically at step 1 of 3 (10 %)" in event["summary"]


def test_the_local_store_moves_a_healthy_canary_to_production(arranged):
    ws = arranged
    stats = local_stats(ws, 0.0)
    for t, traffic in ((300, {"blue": 50, "green": 50}), (600, {"blue": 0, "green": 100})):
        (done,) = cn.advance_rollouts(ws, at(t), stats)
        assert done[1].action == cn.NEXT and ws.endpoints.get("production").traffic == traffic
    (done,) = cn.advance_rollouts(ws, at(900), stats)
    assert done[1].action == cn.COMPLETE
    r = ws.releases.rollout("production")
    assert r.state == cn.SUCCEEDED and [a.traffic for a in r.history] == [10, 50, 100]
    assert ws.releases.state(MODEL, 3).stage == Stage.PRODUCTION and ws.releases.state(MODEL, 1).stage == Stage.RETIRED
    assert ws.models.get(MODEL, 3).version == ws.db.one(
        "SELECT version FROM model_aliases WHERE name = ? AND alias = 'champion'", (MODEL,))[0]
    assert [e["event"] for e in events(ws)] == ["canary_step", "canary_step", "promoted"]
    assert json.loads(events(ws, "promoted")[0]["details_json"])["strategy"] == "canary"
    assert [a.action for a in ws.releases.audit() if a.action.startswith("canary.")] == \
        ["canary.succeeded", "canary.step", "canary.step"]


def test_pause_and_resume_are_role_checked_idempotent_audited_and_announced(arranged):
    ws = arranged
    with pytest.raises(Forbidden, match="support"):
        ws.releases.pause_canary("production", SUPPORT)
    r = ws.releases.pause_canary("production", QA, "looking at the logs")
    assert (r.state, r.reason) == (cn.PAUSED, "paused by qa@contoso.com: looking at the logs")
    assert ws.releases.pause_canary("production", QA).state == cn.PAUSED
    assert cn.advance_rollouts(ws, at(10_000), local_stats(ws, 0.3)) == [], "a paused rollout does not move"
    before = datetime.now(timezone.utc)
    r = ws.releases.resume_canary("production", QA)
    assert r.state == cn.RUNNING and r.step_started_at >= before, "the step is judged afresh after a pause"
    assert [a.action for a in ws.releases.audit() if a.action.startswith("canary.")] == ["canary.resumed", "canary.paused"]
    assert [e["event"] for e in events(ws)] == ["canary_paused", "canary_step"]


def test_a_decision_on_a_rollout_that_moved_on_is_not_applied(arranged):
    ws = arranged
    stale = ws.releases.rollout("production")
    ws.releases.pause_canary("production", QA)
    decision = cn.decide(stale, at(300), Side(100, 30, 40.0), STABLE, 500.0)
    assert ws.releases.apply_canary(stale, decision, at(300)) is None
    assert ws.releases.rollout("production").state == cn.PAUSED
    assert ws.endpoints.get("production").traffic == {"blue": 90, "green": 10}


def test_other_operations_wait_and_a_rollback_aborts_the_canary(arranged):
    ws = arranged
    with pytest.raises(Conflict, match="canary rollout of diabetes-regressor:3 is running on production"):
        ws.releases.set_traffic("production", {"blue": 100, "green": 0}, ADMIN)
    with pytest.raises(Conflict, match="already running on production"):
        ws.releases.start_canary(MODEL, 3, QA)
    with pytest.raises(Forbidden):
        ws.releases.abort_canary("production", SUPPORT)
    ws.releases.rollback("production", QA, "customers complain")
    r = ws.releases.rollout("production")
    assert (r.state, r.reason) == (cn.ABORTED, "aborted by qa@contoso.com: customers complain")
    assert ws.endpoints.get("production").traffic == {"blue": 100, "green": 0}
    assert ws.releases.state(MODEL, 3).stage == Stage.ROLLED_BACK
    (event,) = events(ws, "canary_aborted")
    assert event["actor"] == QA and "customers complain" in event["summary"]
    with pytest.raises(Conflict, match="no canary rollout is running"):
        ws.releases.abort_canary("production", QA, "again")
    with pytest.raises(InvalidInput, match="a rollback needs a comment saying why"):
        ws.releases.abort_canary("production", QA)


# --- policy -----------------------------------------------------------------------

def test_the_canary_table_is_parsed():
    p = parse_policy("[canary]\nsteps = [5, 25, 100]\nstep_seconds = 60\nmin_requests = 10\nmax_step_seconds = 120\n"
                     'on_low_traffic = "rollback"\nstrategy = "canary"\n')
    assert (p.canary.steps, p.canary.step_seconds, p.canary.min_requests, p.canary.on_low_traffic,
            p.canary.strategy) == ((5, 25, 100), 60.0, 10, "rollback", "canary")


@pytest.mark.parametrize("text, mentions", [
    ("steps = [10, 50]", "ending at 100"),
    ("steps = [50, 10, 100]", "increasing"),
    ("steps = [0, 100]", "whole percentages"),
    ("step_seconds = 0", "step_seconds must be positive"),
    ("step_seconds = 1000", "max_step_seconds (900) must be at least step_seconds (1000)"),
    ('on_low_traffic = "wait"', "'pause' or 'rollback'"),
    ("max_p95_ratio = -1", "must not be negative"),
    ("step = 10", "unknown key(s) step"),
])
def test_a_malformed_canary_table_is_refused(text, mentions):
    with pytest.raises(InvalidInput) as err:
        parse_policy("[canary]\n" + text + "\n", source="t.toml")
    assert mentions in str(err.value)
