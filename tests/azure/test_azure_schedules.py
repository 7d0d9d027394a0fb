"""Retraining schedules on Azure: Azure ML ``JobSchedule``s with a cron trigger, through the real
``MLClient`` on the replay transport (``services.azure.replay.schedules``).

The tests assert the REST calls (PUT of the schedule with its cron expression, time zone UTC
and the retraining job; the same PUT with ``isEnabled`` false to pause; DELETE to remove),
the role checks and audit records of the local store, what the Schedules page shows, and
that "retrain on new version" is refused with a way to do it on Azure.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.azure.audit import OperationLocks
from services.azure.schedules import TRIGGER_HINT, schedule_name
from services.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.protocols import ScheduleService
from services.permissions import SYSTEM_ACTOR

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LEAD, ADMIN, QA, SUPPORT, NOBODY = ("lead@contoso.com", "admin@contoso.com", "qa@contoso.com",
                                    "support@contoso.com", "nobody@contoso.com")
SCHEDULE = re.compile(r"/workspaces/tollgate-demo/schedules/(tollgate-retrain-\d+)$")


@pytest.fixture
def ws(ws):
    ws.replay.arm.lro_polls = 1          # schedule PUT/DELETE are long-running operations, polled once
    return ws


def schedule_calls(t) -> list[tuple[str, str]]:
    """(method, schedule name) of every write to a schedule, in order."""
    return [(c.method, SCHEDULE.search(c.path)[1]) for c in t.calls
            if c.method in ("PUT", "DELETE", "PATCH") and SCHEDULE.search(c.path)]


def put_body(t, name: str) -> dict:
    return [c for c in t.calls if c.method == "PUT" and c.path.endswith(f"/schedules/{name}")][-1].json


def last_event(ws):
    ws.audit_trail.clear_cache()
    return ws.releases.audit(1)[0]


def test_the_azure_workspace_has_a_schedule_service(ws):
    assert isinstance(ws.schedules, ScheduleService)
    assert ws.schedules.list() == [] and ws.schedules.triggers() == []
    assert ws.schedules.scheduler().running and "Azure ML" in ws.schedules.scheduler().detail


def test_add_puts_a_job_schedule_with_a_utc_cron_trigger_and_the_retraining_job(ws):
    t = ws.replay
    before = datetime.now(timezone.utc)
    t.reset_calls()
    s = ws.schedules.add("diabetes", "*/15  * * * *", LEAD, estimator="gbr",
                         params={"n_estimators": "50", "learning_rate": "0.1"})
    assert schedule_calls(t) == [("PUT", "tollgate-retrain-1")]
    body = put_body(t, "tollgate-retrain-1")["properties"]
    assert body["trigger"] == {"triggerType": "Cron", "expression": "*/15 * * * *", "timeZone": "UTC"}
    assert body["isEnabled"] is True
    assert body["action"]["actionType"] == "CreateJob"
    job = body["action"]["jobDefinition"]
    assert job["jobType"] == "Pipeline" and job["experimentName"] == ws.settings.experiment
    step = job["jobs"]["train"]
    # the same command job as AzureJobs.submit: pipeline.train on the compute, with the dataset as input
    assert step["computeId"].endswith(f"/computes/{ws.settings.compute}")
    assert step["inputs"]["data"]["uri"].endswith("/data/diabetes/versions/2")
    assert step["properties"]["tollgate.schedule"] == "tollgate-retrain-1"
    assert step["properties"]["tollgate.estimator"] == "gbr"
    assert job["properties"]["tollgate.cron"] == "*/15 * * * *"
    component = t.arm.get(step["componentId"])["properties"]["componentSpec"]
    assert component["command"].startswith("python -m pipeline.train --data ${{inputs.data}} --estimator gbr")
    assert "--param n_estimators=50" in component["command"]
    # what the Schedules page shows
    assert (s.id, s.dataset, s.estimator, dict(s.params), s.cron, s.enabled, s.created_by) == \
        (1, "diabetes", "gbr", {"n_estimators": 50, "learning_rate": 0.1}, "*/15 * * * *", True, LEAD)
    assert len(s.next_fire_at) == 3 and all(x.minute % 15 == 0 and x.second == 0 for x in s.next_fire_at)
    assert before < s.next_fire_at[0] <= before + timedelta(minutes=15) and s.active_since >= before
    assert [x.id for x in ws.schedules.list()] == [1]
    event = last_event(ws)
    assert (event.actor, event.role, event.action, event.target) == (LEAD, "ml_lead", "schedule.add", "schedule #1")
    assert event.after["cron"] == "*/15 * * * *" and event.after["azure_schedule"] == "tollgate-retrain-1"


def test_without_a_recipe_a_schedule_retrains_the_champions_recipe(ws):
    champion = ws.models.champion(ws.policy.model_name)
    run = ws.jobs.get(champion.run_id)
    s = ws.schedules.add("diabetes", "0 3 * * *", ADMIN)
    assert (s.estimator, dict(s.params)) == (run.estimator, dict(run.params))
    assert last_event(ws).role == "admin"


@pytest.mark.parametrize("actor, role", [(QA, "qa"), (SUPPORT, "support"), (NOBODY, "no role")])
def test_only_ml_leads_and_admins_change_schedules(ws, actor, role):
    t = ws.replay
    existing = ws.schedules.add("diabetes", "0 4 * * *", LEAD)
    trail = len(ws.releases.audit())
    t.reset_calls()
    for change in (lambda: ws.schedules.add("diabetes", "* * * * *", actor),
                   lambda: ws.schedules.set_enabled(existing.id, False, actor),
                   lambda: ws.schedules.remove(existing.id, actor),
                   lambda: ws.schedules.set_trigger("diabetes", True, actor)):
        with pytest.raises(Forbidden) as e:
            change()
        assert f"{actor} ({role}) may not change retraining schedules" in str(e.value)
    assert t.calls == [], "a refusal sends nothing"
    ws.audit_trail.clear_cache()
    assert len(ws.releases.audit()) == trail
    assert ws.schedules.get(existing.id).enabled          # reading is open to everyone


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(dataset="nope", cron="* * * * *"), NotFound, "dataset 'nope' does not exist"),
    (dict(dataset="diabetes", cron="every minute"), InvalidInput, "five fields"),
    (dict(dataset="diabetes", cron="61 * * * *"), InvalidInput, "not a valid cron expression"),
    (dict(dataset="diabetes", cron="* * * * *", estimator="svm"), InvalidInput, "unknown estimator 'svm'"),
    (dict(dataset="diabetes", cron="* * * * *", estimator="ridge", params={"alhpa": "1"}), InvalidInput, "alhpa"),
])
def test_a_bad_schedule_is_refused_before_anything_is_sent(ws, kwargs, error, says):
    t = ws.replay
    t.reset_calls()
    with pytest.raises(error) as e:
        ws.schedules.add(actor=LEAD, **kwargs)
    assert says in str(e.value)
    assert schedule_calls(t) == []


def test_the_replay_refuses_what_azure_ml_refuses(ws):
    """The service's own check, behind ours: a cron expression Azure ML cannot read is a 400."""
    from azure.ai.ml.entities import CronTrigger, JobSchedule
    from services.azure.errors import azure_call
    s = ws.schedules.add("diabetes", "0 5 * * *", LEAD)
    raw = ws.ml.schedules.get(schedule_name(s.id))
    bad = JobSchedule(name="tollgate-retrain-99", trigger=CronTrigger(expression="61 * * * *", time_zone="UTC"),
                      create_job=raw.create_job)
    with pytest.raises(InvalidInput, match="not valid"):
        with azure_call("add a schedule"):
            ws.ml.schedules.begin_create_or_update(bad).result()


def test_pause_resume_and_remove_are_a_put_with_is_enabled_and_a_delete(ws):
    t = ws.replay
    s = ws.schedules.add("diabetes", "*/10 * * * *", LEAD)
    name = schedule_name(s.id)
    t.reset_calls()
    paused = ws.schedules.set_enabled(s.id, False, LEAD)
    assert schedule_calls(t) == [("PUT", name)]
    sent = put_body(t, name)["properties"]
    assert sent["isEnabled"] is False and sent["trigger"]["expression"] == "*/10 * * * *"
    assert not paused.enabled and paused.next_fire_at == ()
    assert last_event(ws).action == "schedule.disable"

    t.reset_calls()
    resumed = ws.schedules.set_enabled(s.id, True, ADMIN)
    assert schedule_calls(t) == [("PUT", name)] and put_body(t, name)["properties"]["isEnabled"] is True
    assert resumed.enabled and resumed.active_since > s.active_since, "resuming starts afresh"
    assert len(resumed.next_fire_at) == 3 and last_event(ws).action == "schedule.enable"
    t.reset_calls()
    ws.schedules.set_enabled(s.id, True, ADMIN)             # already enabled: nothing sent, nothing recorded
    assert schedule_calls(t) == [] and last_event(ws).action == "schedule.enable"

    t.reset_calls()
    removed = ws.schedules.remove(s.id, LEAD)
    assert schedule_calls(t) == [("DELETE", name)]
    assert removed.id == s.id and ws.schedules.list() == [] and t.schedules.get(name) is None
    event = last_event(ws)
    assert (event.action, event.target, event.before["cron"]) == ("schedule.remove", f"schedule #{s.id}", "*/10 * * * *")
    for gone in (lambda: ws.schedules.get(s.id), lambda: ws.schedules.remove(s.id, LEAD),
                 lambda: ws.schedules.set_enabled(s.id, True, LEAD)):
        with pytest.raises(NotFound, match=f"schedule #{s.id} does not exist"):
            gone()
    again = ws.schedules.add("diabetes", "*/10 * * * *", LEAD)
    assert again.id > s.id, "ids are never reused: a removed schedule's firings stay its own"


def test_the_jobs_a_schedule_starts_are_its_firings(ws):
    t = ws.replay
    s = ws.schedules.add("diabetes", "*/5 * * * *", LEAD, estimator="ridge", params={"alpha": "2"})
    other = ws.schedules.add("diabetes", "0 * * * *", LEAD)
    at = datetime.now(timezone.utc).replace(second=3, microsecond=0)
    first = t.schedules.fire(schedule_name(s.id), at - timedelta(minutes=5))      # what Azure ML does on time
    second = t.schedules.fire(schedule_name(s.id), at)
    ws.jobs.cache.invalidate("jobs")
    firings = ws.schedules.firings()
    assert [f.run_id for f in firings] == [second["name"], first["name"]]
    f = firings[0]
    assert (f.kind, f.schedule_id, f.dataset, f.dataset_version, f.estimator, dict(f.params)) == \
        ("schedule", s.id, "diabetes", 2, "ridge", {"alpha": 2.0})
    assert f.fired_at == at and f.due_at == at.replace(minute=at.minute - at.minute % 5, second=0)
    assert ws.schedules.get(s.id).last_firing.run_id == second["name"]
    assert ws.schedules.get(other.id).last_firing is None and ws.schedules.firings(schedule_id=other.id) == []
    # the runs page lists them as runs of the experiment
    assert {second["name"], first["name"]} <= {r.id for r in ws.jobs.list()}
    ws.schedules.remove(s.id, LEAD)
    ws.jobs.cache.invalidate("jobs")
    assert len(ws.schedules.firings(schedule_id=s.id)) == 2, "its firings stay in the history"


def test_dataset_triggers_are_refused_with_how_to_do_it_on_azure(ws):
    t = ws.replay
    t.reset_calls()
    for enabled in (True, False):
        with pytest.raises(InvalidInput) as e:
            ws.schedules.set_trigger("diabetes", enabled, LEAD)
        assert "Azure ML" in str(e.value) and e.value.hint == TRIGGER_HINT
    assert "Event Grid" in TRIGGER_HINT and "tollgate.py retrain" in TRIGGER_HINT
    assert [c for c in t.calls if c.method != "GET"] == [] and ws.schedules.triggers() == []
    with pytest.raises(NotFound):
        ws.schedules.set_trigger("nope", True, LEAD)


def test_two_consoles_never_take_the_same_id(ws):
    held = OperationLocks(ws.audit_trail.container)
    with held.hold("schedules", ADMIN, "schedule.add", "the schedules"):
        with pytest.raises(Conflict, match="admin@contoso.com is already running 'schedule.add'"):
            ws.schedules.add("diabetes", "0 6 * * *", LEAD)
    assert ws.schedules.add("diabetes", "0 6 * * *", LEAD).id == 1


def test_the_system_actor_may_edit(ws):
    s = ws.schedules.add("diabetes", "0 7 * * *", SYSTEM_ACTOR)
    assert s.created_by == SYSTEM_ACTOR and last_event(ws).role == "system"


# --- the Schedules page on the replayed workspace ------------------------------------------------

def test_the_schedules_page_renders_the_azure_schedules(replay_env):
    from ui import state
    st.cache_data.clear()
    st.cache_resource.clear()
    ws = state._workspace(state.uri())
    ws.replay.arm.lro_polls = 0
    s = ws.schedules.add("diabetes", "0 2 * * *", LEAD, estimator="ridge", params={"alpha": "1"})
    ws.replay.schedules.fire(schedule_name(s.id), datetime.now(timezone.utc))
    ws.jobs.cache.invalidate("jobs")
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[state.ACTOR] = LEAD
    at.run()
    at.switch_page("pages/schedules.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["id"]) == [s.id] and list(table["cron (UTC)"]) == ["0 2 * * *"]
    assert list(table["state"]) == ["▶️ enabled"] and list(table["recipe"]) == ["ridge alpha=1.0"]
    firings = at.dataframe[-1].value
    assert list(firings["by"]) == [f"schedule #{s.id}"]
    # turning on "retrain on new version" shows why Azure cannot, and how to do it
    at.button(key="schedules.trigger.on").click().run()
    shown = "\n".join(e.value for e in at.error)
    assert "no trigger on new data asset versions" in shown and "Event Grid" in shown
    # pause through the page: the service's PUT
    ws.replay.reset_calls()
    at.button(key="schedules.toggle").click().run()
    assert schedule_calls(ws.replay) == [("PUT", schedule_name(s.id))]
    assert not ws.schedules.get(s.id).enabled
