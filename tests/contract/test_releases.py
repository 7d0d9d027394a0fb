"""The release workflow, as a contract of ``ws.releases``: the same tests on the local workspace
(real processes: supervisor, gateways, inference servers) and on ``azure+replay://`` (the real
azure-ai-ml SDK on the replay transport).

One workspace per backend for the module, with the champion serving production; the tests
build on each other in order, as a release team would: every refusal first (nothing changes),
then a version through staging, four eyes, two promotes at once, rollback, a second rollback
refused; a slow version refused by the latency gate and then rolled back by its canary; a
healthy canary to 100 %. The backend hooks (``conftest``) only make a version slow and serve
the champion at the start.
"""
from __future__ import annotations

import json
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

import pytest

from services import canary as cn
from services.entities import ENDPOINT_PROCESSES, Stage
from services.errors import Conflict, Forbidden, GateFailed, InvalidInput, NotFound, ServiceError, Unsupported
from services.evaluation import evaluation_split
from services.permissions import SYSTEM_ACTOR
from services.policy import parse_policy
from tests.conftest import ROOT

QA, LEAD, LEE, SUPPORT, ADMIN = ("qa@contoso.com", "lead@contoso.com", "lee@contoso.com", "support@contoso.com",
                                 "admin@contoso.com")
NOBODY = "nobody@contoso.com"
SLOW_S = 0.6          # how much slower the slow version answers
PROD, STAGING = "production", "staging"


def policy_text() -> str:
    roles = tomllib.loads((ROOT / "tollgate.toml").read_text())["roles"]
    return "\n".join([
        "[smoke_test]", "cases = 2", "latency_requests = 20",
        "[gate]", "max_p95_regression = 1.0", "p95_allowance_ms = 250.0",
        "[canary]", "steps = [50, 100]", "step_seconds = 1.0", "min_requests = 20", "max_step_seconds = 120.0",
        'on_low_traffic = "rollback"', "max_failure_rate = 0.02", "max_failure_rate_increase = 0.01",
        # a shared 2-core machine: latency noise must not decide, a model 600 ms slower must
        "max_p95_ratio = 2.0", "max_p95_increase_ms = 250.0",
        "[roles]", *[f"{json.dumps(k)} = {json.dumps(v)}" for k, v in roles.items()], ""])


@pytest.fixture(scope="module")
def ws(backend):
    workspace = backend.demo(policy_text())
    backend.serve_champion(workspace)
    yield workspace
    backend.release(workspace)


@pytest.fixture(scope="module")
def versions(ws):
    """The champion and three candidates never released that pass the gate against it, by number
    (the local demo numbers its versions in the order its training runs finished)."""
    name = ws.policy.model_name
    champion = ws.models.champion(name).version
    candidates = sorted(v.version for v in ws.models.versions(name) if v.version != champion
                        and ws.releases.state(name, v.version).stage == Stage.REGISTERED
                        and ws.evaluation.gate(name, v.version).passed)
    assert len(candidates) >= 3, candidates
    return champion, candidates[0], candidates[1], candidates[2]


def model(ws) -> str:
    return ws.policy.model_name


def trail_size(ws) -> int:
    return len(ws.releases.audit())


def actions_since(ws, size: int) -> list[str]:
    """The actions recorded since the trail had ``size`` records, oldest first."""
    trail = ws.releases.audit()
    return [r.action for r in reversed(trail[:len(trail) - size])]


def rows(ws, n: int = 40) -> list[list[float]]:
    """Held-out rows to send as traffic, beyond the smoke test's own."""
    champion = ws.models.champion(model(ws))
    X, _ = evaluation_split(ws.datasets.load(champion.dataset, champion.dataset_version), ws.policy)
    return [[float(v) for v in row] for row in X.iloc[ws.policy.smoke.cases:ws.policy.smoke.cases + n].values]


def send(ws, env: str, n: int) -> list:
    """``n`` scoring requests as clients send them (four at a time)."""
    data = rows(ws)
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: ws.endpoints.invoke(env, {"data": [data[i % len(data)]]}), range(n)))


def run_rollout(ws, timeout_s: float = 180) -> cn.Rollout:
    """Send traffic and tick (``canary.advance_rollouts``: locally the supervisor ticks too) until the rollout ends."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = ws.releases.rollout(PROD)
        if not r.active:
            return r
        assert time.monotonic() < deadline, f"the rollout did not end: {r.state}, {r.step_label}, {r.reason}"
        send(ws, PROD, 12)
        cn.advance_rollouts(ws)


def event_kinds(ws, since_id: int) -> list[str]:
    """The release events since ``since_id`` (not the health scan's: a slow canary can make an
    endpoint degraded and then recovered meanwhile)."""
    return [e.event for e in reversed(ws.notifications.events(200))
            if e.id > since_id and not e.event.startswith("endpoint_")]


def last_event_id(ws) -> int:
    events = ws.notifications.events(1)
    return events[0].id if events else 0


# --- refusals: nothing changes --------------------------------------------------------------

def test_roles_refuse_every_release_write_with_the_role_needed_and_record_nothing(ws, versions):
    champion, a, _, _ = versions
    m = model(ws)
    writes = {
        "deploy": lambda who: ws.releases.deploy(m, a, STAGING, who),
        "approve": lambda who: ws.releases.approve(m, a, who, "ok"),
        "reject": lambda who: ws.releases.reject(m, a, who, "no"),
        "promote": lambda who: ws.releases.promote(m, a, who, "go"),
        "canary": lambda who: ws.releases.start_canary(m, a, who, "go"),
        "rollback": lambda who: ws.releases.rollback(PROD, who, "back"),
        "traffic": lambda who: ws.releases.set_traffic(STAGING, {"blue": 100}, who),
        "keys": lambda who: ws.releases.regenerate_key(PROD, "primary", who),
        "smoke": lambda who: ws.releases.smoke_test(STAGING, who),
        "pause": lambda who: ws.releases.pause_canary(PROD, who),
        "abort": lambda who: ws.releases.abort_canary(PROD, who, "stop"),
    }
    size = trail_size(ws)
    before = ws.endpoints.get(PROD).traffic
    for who in (SUPPORT, NOBODY):
        for action, write in writes.items():
            with pytest.raises(Forbidden) as refused:
                write(who)
            assert who in str(refused.value) and "that needs" in str(refused.value), (action, str(refused.value))
    with pytest.raises(Forbidden, match="may not approve a model version: that needs admin or ml_lead"):
        ws.releases.approve(m, a, QA)
    assert trail_size(ws) == size and ws.endpoints.get(PROD).traffic == before


def test_starting_and_stopping_endpoints_is_role_checked_or_not_this_backends(ws):
    expected = Forbidden if ws.info.can(ENDPOINT_PROCESSES) else Unsupported
    for call in (ws.endpoints.up, ws.endpoints.down):
        with pytest.raises(expected):
            call(SUPPORT)


def test_transitions_that_are_not_allowed_are_refused_with_the_reason(ws, versions):
    champion, a, b, _ = versions
    m = model(ws)
    size = trail_size(ws)
    with pytest.raises(Conflict, match=f"{m}:{b} is registered \\(not deployed\\); only a version that passed its staging"):
        ws.releases.approve(m, b, LEAD)
    with pytest.raises(Conflict, match="only an approved version can be promoted"):
        ws.releases.promote(m, b, QA)
    with pytest.raises(Conflict, match="production is reached by promote, not deploy"):
        ws.releases.deploy(m, b, PROD, ADMIN)
    with pytest.raises(InvalidInput, match="a rejection needs a comment saying why"):
        ws.releases.reject(m, b, LEAD, "  ")
    with pytest.raises(InvalidInput, match="a rollback needs a comment saying why"):
        ws.releases.rollback(PROD, QA, "")
    with pytest.raises(NotFound, match="endpoint 'nope' does not exist"):
        ws.releases.rollback("nope", QA, "why")
    with pytest.raises(Conflict, match=f"{m}:{champion} is the champion and cannot be archived"):
        ws.models.archive(m, champion, actor=ADMIN)
    assert trail_size(ws) == size


def test_approve_can_require_a_comment(backend, ws, versions):
    text = (ROOT / "tollgate.toml").read_text()
    assert "approve_comment_required = false" in text
    strict = backend.with_policy(ws, parse_policy(text.replace("approve_comment_required = false",
                                                               "approve_comment_required = true")))
    with pytest.raises(InvalidInput, match="an approval needs a comment saying why"):
        strict.releases.approve(model(ws), versions[1], LEAD, "")
    assert strict.releases.plan_approve(model(ws), versions[1]).comment == "required"


# --- a version through staging, four eyes, two promotes at once, rollback --------------------

def test_deploy_to_staging_then_four_eyes_whatever_the_letter_case(ws, versions):
    champion, a, _, _ = versions
    m = model(ws)
    plan = ws.releases.plan_deploy(m, a, STAGING)
    assert plan.refused is None and plan.deployment in ("blue", "green") and plan.traffic_after[plan.deployment] == 100
    steps = []
    ep = ws.releases.deploy(m, a, STAGING, LEE, plan=plan, progress=steps.append)
    assert ep.live.model_ref == f"{m}:{a}" and ep.live.name == plan.deployment
    assert [s.key for s in steps if s.state == "done"][:4] == ["created", "healthy", "smoke_test", "traffic"]
    state = ws.releases.state(m, a)
    assert (state.stage, state.deployed_by) == (Stage.AWAITING_APPROVAL, LEE)
    smoke = ws.releases.smoke_test_result(state.smoke_test_id)
    assert smoke.passed and smoke.latency.requests == 20 and smoke.latency.candidate_p95_ms is not None
    with pytest.raises(Forbidden, match="four eyes"):
        ws.releases.approve(m, a, "Lee@Contoso.com", "it is mine, spelt otherwise")
    assert "four eyes" in ws.releases.plan_approve(m, a, "LEE@contoso.com").refused
    approved = ws.releases.approve(m, a, LEAD, "better than the champion")
    assert (approved.stage, approved.decided_by, approved.approved_against) == (Stage.APPROVED, LEAD, f"{m}:{champion}")


def test_an_archived_version_cannot_be_promoted_and_one_in_review_cannot_be_archived(backend, ws, versions):
    _, a, _, _ = versions
    m = model(ws)
    with pytest.raises(Conflict, match=f"{m}:{a} serves {STAGING}"):
        ws.models.archive(m, a, actor=ADMIN)
    backend.archive_outside_tollgate(ws, m, a)          # e.g. in the Azure portal, behind Tollgate's back
    size = trail_size(ws)
    with pytest.raises(Conflict, match=f"{m}:{a} is archived: an archived version cannot be promoted"):
        ws.releases.promote(m, a, QA, "go")
    assert "is archived" in ws.releases.plan_promote(m, a).refused
    assert ws.models.get(m, a).archived and trail_size(ws) == size, "refused: nothing un-archived, nothing recorded"
    ws.models.restore(m, a, actor=ADMIN)


def test_two_promotes_of_one_version_at_once_swap_once_and_keep_the_rollback_target(ws, versions):
    champion, a, _, _ = versions
    m = model(ws)
    plan = ws.releases.plan_promote(m, a)
    assert plan.strategy == "blue_green" and plan.champion_after == f"{m}:{a}" and plan.refused is None
    size = trail_size(ws)
    outcomes: list = []
    barrier = threading.Barrier(2)

    def press() -> None:
        barrier.wait()
        try:
            outcomes.append(ws.releases.promote(m, a, QA, "weekly release"))
        except ServiceError as e:
            outcomes.append(e)
    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(refused) <= 1, outcomes
    assert all(isinstance(e, Conflict) and "is already running 'promote'" in str(e) for e in refused)
    assert ws.releases.promote(m, a, QA, "once more").live.model_ref == f"{m}:{a}"    # a third, later: nothing
    recorded = actions_since(ws, size)
    assert recorded.count("promote") == 1 and recorded.count("promote.started") == 1, recorded
    prod = ws.endpoints.get(PROD)
    warm = [d for d in prod.deployments if d.traffic == 0 and d.state == "healthy"]
    assert prod.live.model_ref == f"{m}:{a}" and [d.model_ref for d in warm] == [f"{m}:{champion}"]
    assert ws.models.champion(m).version == a
    assert ws.releases.state(m, a).stage == Stage.PRODUCTION and ws.releases.state(m, champion).stage == Stage.RETIRED


def test_rollback_then_a_second_rollback_is_refused_and_the_rolled_back_version_needs_a_new_approval(ws, versions):
    champion, a, _, _ = versions
    m = model(ws)
    since = last_event_id(ws)
    plan = ws.releases.plan_rollback(PROD)
    assert plan.refused is None and plan.champion_after == f"{m}:{champion}"
    ep = ws.releases.rollback(PROD, QA, "p95 doubled", plan=plan)
    assert ep.live.model_ref == f"{m}:{champion}" and ws.models.champion(m).version == champion
    assert ws.releases.state(m, a).stage == Stage.ROLLED_BACK
    assert ws.releases.state(m, champion).stage == Stage.PRODUCTION
    rec = next(r for r in ws.releases.audit(20) if r.action == "rollback")
    assert (rec.actor, rec.role, rec.comment) == (QA, "qa", "p95 doubled")
    assert event_kinds(ws, since) == ["rolled_back"]

    size = trail_size(ws)
    refusal = ws.releases.plan_rollback(PROD).refused
    assert refusal and "which was itself rolled back" in refusal
    with pytest.raises(Conflict, match="which was itself rolled back"):
        ws.releases.rollback(PROD, QA, "again")
    with pytest.raises(Conflict, match=f"{m}:{a} is rolled back; only an approved version can be promoted"):
        ws.releases.promote(m, a, QA)
    with pytest.raises(Conflict, match="only a version that passed its staging smoke test can be approved"):
        ws.releases.approve(m, a, LEAD)
    assert ws.endpoints.get(PROD).live.model_ref == f"{m}:{champion}" and trail_size(ws) == size


def test_a_plan_is_executed_only_if_the_endpoint_did_not_change(ws, versions):
    champion = versions[0]
    m = model(ws)
    running = [d.name for d in ws.endpoints.get(PROD).deployments if d.state != "stopped"]
    live = ws.endpoints.get(PROD).live.name
    other = next(n for n in running if n != live)            # the warm one, kept by the promote
    plan = ws.releases.plan_traffic(PROD, {live: 100, other: 0})
    ws.releases.set_traffic(PROD, {live: 90, other: 10}, ADMIN, "a tenth to the warm one")
    with pytest.raises(Conflict, match="changed since the plan was made"):
        ws.releases.set_traffic(PROD, {live: 100, other: 0}, ADMIN, "stale", plan=plan)
    ws.releases.set_traffic(PROD, {live: 100, other: 0}, ADMIN, "back", plan=ws.releases.plan_traffic(
        PROD, {live: 100, other: 0}))
    assert ws.endpoints.get(PROD).live.model_ref == f"{m}:{champion}"
    assert [r.action for r in ws.releases.audit(4)].count("traffic") == 2


# --- latency and canaries ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow(backend, ws, versions, tmp_path_factory):
    """A version answering ``SLOW_S`` slower, through staging and approved."""
    m = model(ws)
    v = backend.slow_version(ws, versions[2], tmp_path_factory.mktemp("slow"), SLOW_S)
    ws.releases.deploy(m, v, STAGING, QA)
    ws.releases.approve(m, v, LEAD, "metrics are fine")
    return v


def test_the_latency_gate_refuses_a_promote_and_the_evidence_shows_both_latencies(backend, ws, versions, slow):
    champion = versions[0]
    m = model(ws)
    plan = ws.releases.plan_promote(m, slow)
    backend.slow_down(ws, PROD, plan.deployment, SLOW_S)
    with pytest.raises(GateFailed, match=r"latency: .* more than the limit of \d+ ms \(\[gate\] max_p95_regression\)"):
        ws.releases.promote(m, slow, QA, "fast enough?", plan=plan)
    smoke = ws.releases.smoke_tests(1)[0]
    lat = smoke.latency
    assert (smoke.model_version, smoke.passed, lat.passed, lat.live_deployment) == (slow, False, False, "blue")
    assert lat.candidate_p95_ms > SLOW_S * 1000 > lat.live_p95_ms and lat.limit_p95_ms < lat.candidate_p95_ms
    assert ws.endpoints.get(PROD).live.model_ref == f"{m}:{champion}"
    assert ws.releases.state(m, slow).stage == Stage.APPROVED


def test_a_slow_canary_is_rolled_back_automatically_with_the_reason_recorded_and_announced(backend, ws, versions, slow):
    champion = versions[0]
    m = model(ws)
    since, size = last_event_id(ws), trail_size(ws)
    plan = ws.releases.plan_promote(m, slow, strategy="canary")
    assert plan.action == "canary" and plan.traffic_after[plan.deployment] == 50
    backend.slow_down(ws, PROD, plan.deployment, SLOW_S)
    r = ws.releases.start_canary(m, slow, QA, "canary of the slow one", plan=plan)
    assert (r.state, r.traffic, r.stable_model) == (cn.RUNNING, 50, f"{m}:{champion}")
    ended = run_rollout(ws)
    assert ended.state == cn.ROLLED_BACK and ended.reason.startswith("automatic rollback: canary p95 "), ended.reason
    assert ws.endpoints.get(PROD).live.model_ref == f"{m}:{champion}"
    assert ws.releases.state(m, slow).stage == Stage.ROLLED_BACK
    rec = next(x for x in ws.releases.audit(30) if x.action == "canary.rolled_back")
    assert rec.actor == SYSTEM_ACTOR and rec.role == "system" and rec.comment.startswith("canary p95 ")
    recorded = actions_since(ws, size)
    assert recorded[:2] == ["canary.deploy", "smoke_test"] and "canary.started" in recorded
    assert recorded[-2:] == ["canary.rolled_back", "release.stage"], recorded
    events = [e for e in reversed(ws.notifications.events(50)) if e.id > since]
    assert [e.event for e in events] == ["canary_step", "rolled_back"]
    assert events[-1].details["automatic"] is True and events[-1].details["reasons"] == [rec.comment]


def test_a_healthy_canary_goes_to_100_percent_and_becomes_the_champion(backend, ws, versions):
    champion, _, _, c = versions
    m = model(ws)
    ws.releases.deploy(m, c, STAGING, QA)
    ws.releases.approve(m, c, LEAD, "a canary this time")
    since = last_event_id(ws)
    plan = ws.releases.plan_promote(m, c, strategy="canary")
    backend.slow_down(ws, PROD, plan.deployment, 0.0)     # as fast as any other version
    r = ws.releases.start_canary(m, c, QA, "healthy canary", plan=plan)
    ended = run_rollout(ws)
    assert ended.state == cn.SUCCEEDED, ended.reason
    assert [a.traffic for a in ended.history] == [50, 100] and all(a.verdict == cn.PASS for a in ended.history)
    prod = ws.endpoints.get(PROD)
    assert prod.live.model_ref == f"{m}:{c}" and prod.traffic[r.stable_deployment] == 0
    assert ws.models.champion(m).version == c
    assert ws.releases.state(m, c).stage == Stage.PRODUCTION and ws.releases.state(m, champion).stage == Stage.RETIRED
    assert event_kinds(ws, since) == ["canary_step", "canary_step", "promoted"]
    promoted = ws.notifications.events(1)[0]
    assert promoted.details["strategy"] == "canary" and promoted.model == f"{m}:{c}"
    # the previous champion stays warm: a rollback returns to it
    assert ws.releases.plan_rollback(PROD).champion_after == f"{m}:{champion}"
