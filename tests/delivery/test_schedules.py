"""Retraining schedules and dataset triggers as people edit them: validation, roles, audit,
pause/resume, removal, next fire times; and the cron model (UTC, catch-up counting).

Nothing here fires (``test_triggers.py`` does): no run is started.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from services import schedules as rules
from services.errors import Forbidden, InvalidInput, NotFound
from services.protocols import ScheduleService
from services.permissions import SYSTEM_ACTOR
from tests.conftest import ROOT

LEAD, ADMIN, QA, SUPPORT, NOBODY = ("lead@contoso.com", "admin@contoso.com", "qa@contoso.com",
                                    "support@contoso.com", "someone@elsewhere.org")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def last_event(ws):
    return ws.releases.audit(1)[0]


# --- the cron model ---------------------------------------------------------------------

@pytest.mark.parametrize("expr, normal", [("*/5 * * * *", "*/5 * * * *"), ("  0   2 * *   1-5 ", "0 2 * * 1-5"),
                                          ("30 6 1 1,7 *", "30 6 1 1,7 *")])
def test_five_field_expressions_are_accepted_and_normalised(expr, normal):
    assert rules.parse_cron(expr) == normal


@pytest.mark.parametrize("expr, says", [
    ("*/5 * * *", "five fields"), ("* * * * * *", "five fields"), ("@daily", "five fields"), ("", "five fields"),
    ("61 * * * *", "not a valid cron expression"), ("* 24 * * *", "not a valid cron expression"),
    ("0 0 31 2 *", "never fires"),
])
def test_bad_expressions_are_refused_with_the_format_in_the_hint(expr, says):
    with pytest.raises(InvalidInput) as e:
        rules.parse_cron(expr)
    assert says in str(e.value) and "UTC" in e.value.hint


def test_latest_due_includes_now_itself_and_respects_the_activation_time():
    expr = "*/5 * * * *"
    assert rules.latest_due(expr, utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 9)) == utc(2024, 5, 1, 10, 5)
    assert rules.latest_due(expr, utc(2024, 5, 1, 10, 4, 59, 999999), utc(2024, 5, 1, 9)) == utc(2024, 5, 1, 10, 0)
    # created at 10:02: the 10:00 occurrence was before it and never fires
    assert rules.latest_due(expr, utc(2024, 5, 1, 10, 3), utc(2024, 5, 1, 10, 2)) is None
    assert rules.latest_due(expr, utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 10, 2)) == utc(2024, 5, 1, 10, 5)


def test_cron_is_read_in_utc_whatever_the_time_zone_of_now():
    cet = timezone(timedelta(hours=1))
    # 03:30 in UTC+1 is 02:30 UTC: the 02:00 UTC daily occurrence is the latest due
    assert rules.latest_due("0 2 * * *", datetime(2024, 5, 1, 3, 30, tzinfo=cet), utc(2024, 1, 1)) == utc(2024, 5, 1, 2)
    assert rules.next_times("0 2 * * *", datetime(2024, 5, 1, 3, 30, tzinfo=cet), 2) == (utc(2024, 5, 2, 2),
                                                                                           utc(2024, 5, 3, 2))


def test_catch_up_counts_the_missed_occurrences_it_skips():
    every_minute = "* * * * *"
    # last fired 10:05, back at 10:30: 10:30 fires, 10:06 … 10:29 (24) are skipped
    assert rules.count_missed(every_minute, utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 9), utc(2024, 5, 1, 10, 30)) == 24
    # resumed at 10:20:30 after a pause: what fell due while paused is not "missed"
    assert rules.count_missed(every_minute, utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 10, 20, 30),
                              utc(2024, 5, 1, 10, 30)) == 9
    # never fired, active since 10:00 exactly: 10:00 … 10:29
    assert rules.count_missed(every_minute, None, utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 30)) == 30


def test_counting_missed_occurrences_stops_at_a_bound_so_a_long_downtime_stays_cheap():
    a = utc(2024, 5, 1)
    assert rules.count_between("* * * * *", a, a + timedelta(days=365)) == rules.MAX_COUNTED
    assert rules.describe_missed(rules.MAX_COUNTED).startswith(f"{rules.MAX_COUNTED} or more earlier missed")
    assert rules.describe_missed(1).startswith("1 earlier missed occurrence not run")
    assert rules.describe_missed(0) == ""


def test_the_display_name_of_a_triggered_run_names_its_firing():
    a = rules.run_name("ridge", {"alpha": 1.0}, schedule_id=3, due_at=utc(2024, 5, 1, 10, 5))
    b = rules.run_name("ridge", {"alpha": 1.0}, schedule_id=3, due_at=utc(2024, 5, 1, 10, 6))
    c = rules.run_name("ridge", {"alpha": 1.0}, dataset_ref="diabetes:3")
    assert a == "ridge alpha=1.0 · schedule #3 2024-05-01 10:05Z" and c == "ridge alpha=1.0 · new data diabetes:3"
    assert len({a, b, c}) == 3


# --- the store: edits, roles, audit ------------------------------------------------------

def test_the_local_workspace_implements_the_protocol(demo_ws):
    assert isinstance(demo_ws.schedules, ScheduleService)


def test_an_ml_lead_adds_a_schedule_with_next_fire_times_and_an_audit_record(demo_ws):
    before = datetime.now(timezone.utc)
    s = demo_ws.schedules.add("diabetes", "*/15  * * * *", LEAD, estimator="gbr",
                              params={"n_estimators": "50", "learning_rate": "0.1"})
    assert (s.dataset, s.estimator, s.cron, s.enabled, s.created_by) == ("diabetes", "gbr", "*/15 * * * *", True, LEAD)
    assert s.params == {"n_estimators": 50, "learning_rate": 0.1}  # cast to the estimator's types
    assert len(s.next_fire_at) == 3 and all(t.minute % 15 == 0 and t.second == 0 for t in s.next_fire_at)
    assert before < s.next_fire_at[0] <= before + timedelta(minutes=15)
    assert s.last_firing is None and s.active_since >= before
    assert s.id in [x.id for x in demo_ws.schedules.list()]
    event = last_event(demo_ws)
    assert (event.actor, event.role, event.action, event.target) == (LEAD, "ml_lead", "schedule.add", f"schedule #{s.id}")
    assert event.after["cron"] == "*/15 * * * *" and event.after["params"] == {"n_estimators": 50, "learning_rate": 0.1}


def test_without_a_recipe_a_schedule_retrains_the_champions_estimator_and_parameters(demo_ws):
    champion = demo_ws.models.champion(demo_ws.policy.model_name)
    run = demo_ws.jobs.get(champion.run_id)
    s = demo_ws.schedules.add("diabetes", "0 3 * * *", ADMIN)
    assert (s.estimator, dict(s.params)) == (run.estimator, dict(run.params))
    assert last_event(demo_ws).role == "admin"


@pytest.mark.parametrize("actor, role", [(QA, "qa"), (SUPPORT, "support"), (NOBODY, "no role")])
def test_only_ml_leads_and_admins_change_schedules_and_triggers(demo_ws, actor, role):
    count = len(demo_ws.schedules.list())
    existing = demo_ws.schedules.add("diabetes", "0 4 * * *", LEAD)
    trail = len(demo_ws.releases.audit())
    for change in (lambda: demo_ws.schedules.add("diabetes", "* * * * *", actor),
                   lambda: demo_ws.schedules.set_enabled(existing.id, False, actor),
                   lambda: demo_ws.schedules.remove(existing.id, actor),
                   lambda: demo_ws.schedules.set_trigger("diabetes", True, actor)):
        with pytest.raises(Forbidden) as e:
            change()
        assert f"{actor} ({role}) may not change retraining schedules" in str(e.value)
        assert "admin or ml_lead" in str(e.value)
    assert len(demo_ws.schedules.list()) == count + 1 and demo_ws.schedules.get(existing.id).enabled
    assert demo_ws.schedules.trigger("diabetes") is None or not demo_ws.schedules.trigger("diabetes").enabled
    assert len(demo_ws.releases.audit()) == trail, "a refusal writes nothing"
    # reading is open to everyone (no identity is needed to read)
    assert existing.id in [s.id for s in demo_ws.schedules.list()]


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(dataset="nope", cron="* * * * *"), NotFound, "dataset 'nope' does not exist"),
    (dict(dataset="diabetes", cron="every minute"), InvalidInput, "five fields"),
    (dict(dataset="diabetes", cron="* * * * *", estimator="svm"), InvalidInput, "unknown estimator 'svm'"),
    (dict(dataset="diabetes", cron="* * * * *", estimator="ridge", params={"alhpa": "1"}), InvalidInput, "alhpa"),
    (dict(dataset="diabetes", cron="* * * * *", estimator="ridge", params={"alpha": "lots"}), InvalidInput, "alpha"),
])
def test_a_bad_schedule_is_refused_before_anything_is_written(demo_ws, kwargs, error, says):
    count = len(demo_ws.schedules.list())
    with pytest.raises(error) as e:
        demo_ws.schedules.add(actor=LEAD, **kwargs)
    assert says in str(e.value)
    assert len(demo_ws.schedules.list()) == count


def test_pause_resume_and_remove(demo_ws):
    s = demo_ws.schedules.add("diabetes", "*/10 * * * *", LEAD)
    paused = demo_ws.schedules.set_enabled(s.id, False, LEAD)
    assert not paused.enabled and paused.next_fire_at == ()
    assert last_event(demo_ws).action == "schedule.disable"
    resumed = demo_ws.schedules.set_enabled(s.id, True, ADMIN)
    assert resumed.enabled and resumed.active_since > s.active_since, "resuming starts afresh"
    assert len(resumed.next_fire_at) == 3 and last_event(demo_ws).action == "schedule.enable"
    trail = len(demo_ws.releases.audit())
    demo_ws.schedules.set_enabled(s.id, True, ADMIN)  # already enabled: nothing changes, nothing recorded
    assert len(demo_ws.releases.audit()) == trail

    removed = demo_ws.schedules.remove(s.id, LEAD)
    assert removed.id == s.id and s.id not in [x.id for x in demo_ws.schedules.list()]
    event = last_event(demo_ws)
    assert (event.action, event.target, event.before["cron"]) == ("schedule.remove", f"schedule #{s.id}", "*/10 * * * *")
    with pytest.raises(NotFound, match=f"schedule #{s.id} does not exist"):
        demo_ws.schedules.get(s.id)
    with pytest.raises(NotFound):
        demo_ws.schedules.remove(s.id, LEAD)
    with pytest.raises(NotFound):
        demo_ws.schedules.set_enabled(s.id, True, LEAD)
    again = demo_ws.schedules.add("diabetes", "*/10 * * * *", LEAD)
    assert again.id > s.id, "ids are never reused: (schedule_id, due_at) stays unique forever"


def test_a_dataset_trigger_fires_for_versions_after_the_one_it_was_turned_on_at(demo_ws):
    latest = demo_ws.datasets.versions("diabetes")[0].version
    t = demo_ws.schedules.set_trigger("diabetes", True, LEAD, estimator="lasso", params={"alpha": "0.5"})
    assert (t.dataset, t.enabled, t.estimator, dict(t.params), t.since_version) == \
        ("diabetes", True, "lasso", {"alpha": 0.5}, latest)
    event = last_event(demo_ws)
    assert (event.action, event.target, event.after["fires_after_version"]) == ("trigger.on", "dataset diabetes", latest)
    off = demo_ws.schedules.set_trigger("diabetes", False, LEAD)
    assert not off.enabled and (off.estimator, dict(off.params)) == ("lasso", {"alpha": 0.5}), "toggling keeps the recipe"
    assert last_event(demo_ws).action == "trigger.off"
    assert [x.dataset for x in demo_ws.schedules.triggers()] == ["diabetes"]
    with pytest.raises(NotFound):
        demo_ws.schedules.set_trigger("nope", True, LEAD)


def test_system_actor_may_edit_but_cannot_be_chosen_from_the_cli(demo_ws_path):
    assert rules.authorize_edit(None, SYSTEM_ACTOR) == "system"
    proc = cli(demo_ws_path, "schedule", "add", "--dataset", "diabetes", "--cron", "* * * * *", "--as", SYSTEM_ACTOR)
    assert proc.returncode == 2 and "reserved" in proc.stderr


# --- the CLI --------------------------------------------------------------------------

def cli(ws_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TOLLGATE_AS", "TOLLGATE_WORKSPACE", "GITHUB_OUTPUT")}
    return subprocess.run([sys.executable, "tollgate.py", "--workspace", f"local://{ws_path}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_the_cli_adds_lists_pauses_and_removes_schedules(demo_ws_path):
    added = cli(demo_ws_path, "schedule", "add", "--dataset", "diabetes", "--cron", "*/5 * * * *",
                "--estimator", "ridge", "--param", "alpha=2.5", "--as", LEAD, "--json")
    assert added.returncode == 0, added.stderr
    s = json.loads(added.stdout)
    assert (s["cron"], s["estimator"], s["params"], s["enabled"]) == ("*/5 * * * *", "ridge", {"alpha": 2.5}, True)

    listing = json.loads(cli(demo_ws_path, "schedules", "--json").stdout)
    shown = next(x for x in listing["schedules"] if x["id"] == s["id"])
    assert len(shown["next_fire_at"]) == 3 and shown["last_firing"] is None
    assert listing["scheduler"]["running"] is False and "not running" in listing["scheduler"]["detail"]
    text = cli(demo_ws_path, "schedules").stdout
    assert "ridge alpha=2.5" in text and "*/5 * * * *" in text and "scheduler: not running" in text

    paused = cli(demo_ws_path, "schedule", "disable", str(s["id"]), "--as", LEAD)
    assert paused.returncode == 0 and paused.stdout.strip() == f"schedule #{s['id']}: paused"
    removed = cli(demo_ws_path, "schedule", "remove", str(s["id"]), "--as", ADMIN)
    assert removed.returncode == 0 and f"removed schedule #{s['id']}" in removed.stdout
    assert s["id"] not in [x["id"] for x in json.loads(cli(demo_ws_path, "schedules", "--json").stdout)["schedules"]]


@pytest.mark.parametrize("args, says", [
    (("schedule", "add", "--dataset", "diabetes", "--cron", "* * * * *", "--as", SUPPORT), "may not change"),
    (("schedule", "add", "--dataset", "diabetes", "--as", LEAD), "needs --dataset and --cron"),
    (("schedule", "add", "--dataset", "diabetes", "--cron", "*/5 * *", "--as", LEAD), "five fields"),
    (("schedule", "add", "--dataset", "diabetes", "--cron", "* * * * *", "--param", "alpha", "--as", LEAD),
     "expected KEY=VALUE"),
    (("schedule", "remove", "--as", LEAD), "needs the schedule's ID"),
    (("schedule", "remove", "999", "--as", LEAD), "schedule #999 does not exist"),
    (("trigger", "on", "--dataset", "nope", "--as", LEAD), "dataset 'nope' does not exist"),
])
def test_cli_refusals_exit_2_with_the_reason(demo_ws_path, args, says):
    proc = cli(demo_ws_path, *args)
    assert proc.returncode == 2 and says in proc.stderr and proc.stdout == ""


def test_cli_trigger_on_and_off(demo_ws_path):
    on = cli(demo_ws_path, "trigger", "on", "--dataset", "diabetes", "--as", LEAD)
    assert on.returncode == 0, on.stderr
    assert on.stdout.startswith("diabetes: every version after v") and "the scheduler is not running" in on.stdout
    listing = json.loads(cli(demo_ws_path, "schedules", "--json").stdout)
    assert [(t["dataset"], t["enabled"]) for t in listing["triggers"]] == [("diabetes", True)]
    off = cli(demo_ws_path, "trigger", "off", "--dataset", "diabetes", "--as", LEAD)
    assert off.returncode == 0 and off.stdout.strip() == "diabetes: trigger off"
