"""Auto-release to staging (``[release] auto_stage``): a run's candidate that passes the gate is
deployed to staging and smoke-tested by Tollgate itself, then awaits approval — with an audit
record naming the run, a notification, never production, never beside another release
operation; a failed smoke test leaves the version out with the reason shown. Real runs, real
endpoints (the workspace folder's tollgate.toml turns the switch on, as a team's would)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.entities import RunStatus, Stage, TrainingSpec
from services.errors import InvalidInput
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from services.policy import parse_policy
from services.release.auto_stage import ACTION, TAG, stage_candidate, unavailable
from tests.conftest import ROOT
from tests.delivery.faulty_model import register_flaky
from tests.release.conftest import MODEL, QA, live_workspace

SPEC = TrainingSpec(dataset="diabetes", dataset_version=2, estimator="gbr",
                    params={"n_estimators": 150, "learning_rate": 0.05, "max_depth": 3})


def policy_text(auto_stage: bool, wait_s: float) -> str:
    """The project's policy with the switch set, as a team's workspace would carry it."""
    text = (ROOT / "tollgate.toml").read_text()
    text, n = re.subn(r"(?m)^auto_stage\s*=.*$", f"auto_stage = {'true' if auto_stage else 'false'}", text)
    if n == 0:
        text = text.replace("[release]\n", f"[release]\nauto_stage = {'true' if auto_stage else 'false'}\n", 1)
    text, n = re.subn(r"(?m)^auto_stage_wait_s\s*=.*$", f"auto_stage_wait_s = {wait_s}", text)
    if n == 0:
        text = text.replace("[release]\n", f"[release]\nauto_stage_wait_s = {wait_s}\n", 1)
    return text


@pytest.fixture(scope="module")
def ws(demo_template, tmp_path_factory):
    """The demo workspace, its own policy with auto_stage on; nothing serves yet."""
    with live_workspace(demo_template, tmp_path_factory.mktemp("autostage")) as base:
        (base.root / "tollgate.toml").write_text(policy_text(True, 1.0))
        ws = LocalWorkspace(base.root)
        try:
            assert ws.policy.release.auto_stage and ws.policy.release.auto_stage_wait_s == 1.0
            yield ws
        finally:
            ws.close()


def last_auto_stage(ws) -> dict:
    record = next(r for r in ws.releases.audit(50) if r.action == ACTION)
    assert (record.actor, record.role) == (SYSTEM_ACTOR, "system")
    return record.after


def train(ws) -> tuple:
    run = ws.jobs.wait(ws.jobs.submit(SPEC, QA).id, timeout_s=600)
    assert run.status == RunStatus.COMPLETED and run.gate.passed and run.model_version, (run.status, run.error)
    return run, ws.models.get(MODEL, run.model_version)


def test_the_switch_is_off_unless_the_policy_turns_it_on():
    assert parse_policy("").release.auto_stage is False
    policy = parse_policy("[release]\nauto_stage = true\nauto_stage_wait_s = 30")
    assert policy.release.auto_stage and policy.release.auto_stage_wait_s == 30
    for bad, key in (('auto_stage = "yes"', "release.auto_stage"), ("auto_stage_wait_s = -1", "auto_stage_wait_s"),
                     ("auto_stage_wait_s = nan", "auto_stage_wait_s"), ("auto_stage = 1", "release.auto_stage")):
        with pytest.raises(InvalidInput, match=key):
            parse_policy(f"[release]\n{bad}")


def test_the_azure_workspace_says_it_cannot_auto_stage():
    from services import open_workspace
    azure = open_workspace("azure+replay://")
    try:
        off = parse_policy("")
        assert unavailable(azure.info, off) is None and unavailable(azure.info, azure.policy) is not None
        on = parse_policy("[release]\nauto_stage = true", source="team.toml")
        message = unavailable(azure.info, on)
        assert message and "azure workspace cannot auto-stage" in message and "team.toml" in message
        assert "does not register model versions" in message
    finally:
        azure.close()


def test_with_the_endpoints_stopped_a_run_deploys_nothing_and_says_why(ws):
    assert ws.endpoints.supervisor_pid() is None
    run, mv = train(ws)
    assert ws.releases.state(MODEL, mv.version).stage == Stage.REGISTERED
    assert f"auto-stage: {mv.ref} not deployed to staging: the local endpoints are not running" in ws.jobs.log(run.id)
    assert ws.endpoints.supervisor_pid() is None, "an automatic step does not start what an operator stopped"


def test_a_passing_candidate_is_staged_smoke_tested_and_awaits_approval(ws):
    ws.releases.deploy(MODEL, ws.models.champion(MODEL).version, "production", SYSTEM_ACTOR)  # endpoints up
    production = ws.endpoints.get("production").traffic
    events_before = {e.id for e in ws.notifications.events(200)}
    run, mv = train(ws)
    state = ws.releases.state(MODEL, mv.version)
    assert state.stage == Stage.AWAITING_APPROVAL and state.deployed_by == SYSTEM_ACTOR
    assert ws.endpoints.get("staging").live.model_ref == mv.ref
    assert ws.endpoints.get("production").traffic == production, "production is never touched"
    assert ws.releases.smoke_test_result(state.smoke_test_id).passed
    assert last_auto_stage(ws) == {"run": run.id, "model": mv.ref, "endpoint": "staging", "outcome": "staged"}
    new = [e for e in ws.notifications.events(200) if e.id not in events_before]
    assert [(e.model, e.actor) for e in new if e.event == "approval_requested"] == [(mv.ref, SYSTEM_ACTOR)]
    assert not [e for e in new if e.event == "auto_stage_failed"]
    log = ws.jobs.log(run.id)
    assert "== step: deploy to staging" in log and "auto-stage: staged" in log
    assert TAG not in ws.models.get(MODEL, mv.version).tags


def test_staging_held_by_another_operation_is_waited_for_then_skipped_with_the_reason(ws):
    candidate = max(ws.models.versions(MODEL), key=lambda m: m.version)
    staged_before = ws.endpoints.get("staging").live.model_ref
    events_before = {e.id for e in ws.notifications.events(200)}
    with ws.releases.ledger.exclusive("endpoint-staging", QA, "deploy", "endpoint staging"):
        result = stage_candidate(ws.releases, candidate, "run-held")
    assert result.outcome == "skipped" and "staging stayed busy" in result.reason and QA in result.reason
    assert ws.endpoints.get("staging").live.model_ref == staged_before, "nothing deployed meanwhile"
    after = last_auto_stage(ws)
    assert (after["run"], after["outcome"]) == ("run-held", "skipped") and "already running 'deploy'" in after["reason"]
    (event,) = [e for e in ws.notifications.events(200) if e.id not in events_before]
    assert (event.event, event.model, event.details["run"]) == ("auto_stage_failed", candidate.ref, "run-held")
    assert ws.models.get(MODEL, candidate.version).tags[TAG].startswith("skipped: staging stayed busy")


def test_a_failed_smoke_test_leaves_the_version_out_with_the_reason_on_models_and_releases(ws, tmp_path):
    serving = ws.endpoints.get("staging").live.model_ref
    best = min(ws.models.versions(MODEL), key=lambda m: m.metrics["rmse"])
    broken = ws.models.get(MODEL, register_flaky(ws, MODEL, best.version, tmp_path, failure_rate=1.0,
                                                 actor=QA, spare_smoke=False))
    result = stage_candidate(ws.releases, broken, "run-broken")
    assert result.outcome == "refused" and "smoke test" in result.reason and "failed" in result.reason
    assert ws.releases.state(MODEL, broken.version).stage == Stage.REGISTERED, "it stays out of staging"
    assert ws.endpoints.get("staging").live.model_ref == serving, "staging still serves what it served"
    smoke = next(t for t in ws.releases.smoke_tests(20) if t.model_version == broken.version)   # Releases' evidence
    assert not smoke.passed and smoke.summary in result.reason
    assert ws.models.get(MODEL, broken.version).tags[TAG].startswith("refused: smoke test of ")   # Models page
    after = last_auto_stage(ws)
    assert (after["run"], after["model"], after["outcome"]) == ("run-broken", broken.ref, "refused")


def test_the_demo_policy_turns_it_on():
    """`make run` uses the project's tollgate.toml: auto_stage is on there (seeding trains before
    the endpoints start, so it places its own candidate, as before)."""
    demo = parse_policy((ROOT / "tollgate.toml").read_text())
    assert demo.release.auto_stage is True
