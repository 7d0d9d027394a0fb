"""Firing: schedules and dataset triggers start each run once — across restarts, two schedulers,
a crash between deciding and submitting, and downtime (only the latest missed occurrence).

Most tests drive ``Scheduler.tick(now)`` with a chosen clock (minutes pass in milliseconds);
the last one runs the real scheduler process, kills it with SIGKILL and starts it again.
Every firing starts a real training run (ridge: a few seconds each).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services import schedules as rules
from services.demo import diabetes_v2
from services.entities import RunStatus
from services.local import scheduler as daemon
from services.local.scheduler import Scheduler
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from tests.conftest import copy_workspace
from tests.release.conftest import wait_for

LEAD = "lead@contoso.com"
RECIPE = dict(estimator="ridge", params={"alpha": "1"})
MINUTE = timedelta(minutes=1)


def next_minute(after: datetime | None = None) -> datetime:
    """A minute boundary in the (near) future: simulated times stay after a new schedule's creation."""
    now = after or datetime.now(timezone.utc)
    return now.replace(second=0, microsecond=0) + MINUTE


def dues(ws, schedule_id: int) -> list[datetime]:
    return sorted(f.due_at for f in ws.schedules.firings(0, schedule_id=schedule_id))


def fire_events(ws, target: str) -> list:
    return [e for e in ws.releases.audit() if e.action in ("schedule.fire", "trigger.fire") and e.target == target]


def wait_runs_done(ws, run_ids, timeout_s: float = 300) -> list:
    return [ws.jobs.wait(r, timeout_s=timeout_s) for r in run_ids if r]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def ws(demo_ws):
    yield demo_ws
    # the runs the firings started: let them finish before the workspace copy goes away
    wait_runs_done(demo_ws, [r.id for r in demo_ws.jobs.list() if not r.status.is_terminal])


# --- schedules, with a chosen clock ---------------------------------------------------------

def test_every_minute_fires_once_per_minute_across_a_restart_and_beside_a_second_scheduler(ws):
    s = ws.schedules.add("diabetes", "* * * * *", LEAD, **RECIPE)
    t = next_minute()
    first = Scheduler.of(ws)
    fired = []
    for seconds in range(-15, 91, 15):                      # t-15s … t+1:30, every 15 s
        fired += first.tick(t + timedelta(seconds=seconds))
    assert [f.due_at for f in fired] == [t, t + MINUTE]

    # restart: a new scheduler over a new connection, starting at the instant the first one stopped
    restarted_ws = LocalWorkspace(ws.root)
    try:
        restarted = Scheduler.of(restarted_ws)
        for seconds in range(90, 151, 15):                  # t+1:30 … t+2:30
            fired += restarted.tick(t + timedelta(seconds=seconds))
        # both at once (a CLI `scheduler tick` beside the daemon): t+2:45 … t+3:15, each instant ticked twice
        for seconds in range(165, 196, 15):
            for scheduler in (first, restarted):
                fired += scheduler.tick(t + timedelta(seconds=seconds))
    finally:
        restarted_ws.close()

    expected = [t + n * MINUTE for n in range(4)]
    assert [f.due_at for f in fired] == expected
    assert dues(ws, s.id) == expected, "exactly one firing per minute, none twice"
    assert all(f.skipped == 0 and f.error is None and f.run_id for f in fired)
    assert len({f.run_id for f in fired}) == 4
    for f in fired:
        run = ws.jobs.get(f.run_id)
        assert run.created_by == SYSTEM_ACTOR and run.dataset == "diabetes" and run.estimator == "ridge"
        assert run.display_name == f"ridge alpha=1.0 · schedule #{s.id} {f.due_at:%Y-%m-%d %H:%M}Z"
    events = fire_events(ws, f"schedule #{s.id}")
    assert sorted((e.after["due_at"], e.after["run_id"]) for e in events) == \
        sorted((rules.due_text(f.due_at), f.run_id) for f in fired)
    assert {(e.actor, e.role) for e in events} == {(SYSTEM_ACTOR, "system")}
    assert ws.schedules.get(s.id).last_firing.due_at == expected[-1]
    ws.schedules.remove(s.id, LEAD)


def test_after_downtime_only_the_latest_missed_occurrence_fires_once(ws):
    s = ws.schedules.add("diabetes", "*/5 * * * *", LEAD, **RECIPE)
    t = next_minute(datetime.now(timezone.utc) + timedelta(minutes=5)).replace(minute=0) + timedelta(hours=1)
    scheduler = Scheduler.of(ws)
    assert [f.due_at for f in scheduler.tick(t)] == [t]
    # down for 47 minutes: t+5 … t+40 were missed; t+45 is the latest due
    caught_up = scheduler.tick(t + timedelta(minutes=47))
    assert [(f.due_at, f.skipped) for f in caught_up] == [(t + timedelta(minutes=45), 8)]
    assert scheduler.tick(t + timedelta(minutes=47, seconds=30)) == []
    assert dues(ws, s.id) == [t, t + timedelta(minutes=45)]
    event = fire_events(ws, f"schedule #{s.id}")[0]  # newest first
    assert event.after["skipped"] == 8 and event.comment.startswith("8 earlier missed occurrences not run")
    ws.schedules.remove(s.id, LEAD)


def test_paused_and_removed_schedules_do_not_fire(ws):
    paused = ws.schedules.add("diabetes", "* * * * *", LEAD, enabled=False, **RECIPE)
    removed = ws.schedules.add("diabetes", "* * * * *", LEAD, **RECIPE)
    ws.schedules.remove(removed.id, LEAD)
    assert Scheduler.of(ws).tick(next_minute() + 10 * MINUTE) == []
    assert dues(ws, paused.id) == [] and dues(ws, removed.id) == []
    ws.schedules.remove(paused.id, LEAD)


def test_concurrent_schedulers_decide_once_and_the_table_refuses_a_second_decision(ws):
    s = ws.schedules.add("diabetes", "0 * * * *", LEAD, **RECIPE)
    due = next_minute().replace(minute=0) + timedelta(hours=1)
    workspaces = [LocalWorkspace(ws.root) for _ in range(4)]
    barrier, results, errors = threading.Barrier(4), [], []

    def tick(w):
        try:
            barrier.wait()
            results.extend(Scheduler.of(w).tick(due + timedelta(seconds=5)))
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)
    threads = [threading.Thread(target=tick, args=(w,)) for w in workspaces]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for w in workspaces:
        w.close()
    assert not errors, errors
    assert [f.due_at for f in results] == [due] and dues(ws, s.id) == [due]

    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        with ws.db.write() as c:
            c.execute("INSERT INTO firings (kind, schedule_id, due_at, dataset, estimator, params_json, claimed_at,"
                      " claimed_pid) VALUES ('schedule', ?, ?, 'diabetes', 'ridge', '{}', ?, ?)",
                      (s.id, rules.due_text(due), rules.due_text(due), os.getpid()))
    ws.schedules.remove(s.id, LEAD)


def test_a_crash_between_deciding_and_submitting_is_completed_once_by_the_next_scheduler(ws):
    s = ws.schedules.add("diabetes", "30 * * * *", LEAD, **RECIPE)
    due = next_minute().replace(minute=30) + timedelta(hours=2)
    crashed = Scheduler.of(ws)

    # 1. it decided (the firing row committed) and died before submitting: the next tick submits it
    firing_id = crashed.claim_schedule(s.id, due)
    with ws.db.write() as c:
        c.execute("UPDATE firings SET claimed_pid = ? WHERE id = ?", (dead_pid(), firing_id))
    recovered = Scheduler.of(ws).tick(due + timedelta(seconds=10))
    assert [(f.id, f.due_at) for f in recovered] == [(firing_id, due)] and recovered[0].run_id
    assert Scheduler.of(ws).tick(due + timedelta(seconds=20)) == []

    # 2. it got as far as submitting the run, then died: the run is linked, no second run starts
    later = due + timedelta(hours=1)
    firing_id = crashed.claim_schedule(s.id, later)
    firing = next(f for f in ws.schedules.firings(5, schedule_id=s.id) if f.id == firing_id)
    crashed.jobs.submit(crashed_spec(firing), SYSTEM_ACTOR)
    with ws.db.write() as c:
        c.execute("UPDATE firings SET claimed_pid = ? WHERE id = ?", (dead_pid(), firing_id))
    # a claim held by a live process is left alone (it may be submitting right now)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as busy:
        try:
            with ws.db.write() as c:
                c.execute("UPDATE firings SET claimed_pid = ?, claimed_at = ? WHERE id = ?",
                          (busy.pid, datetime.now(timezone.utc).isoformat(), firing_id))
            assert Scheduler.of(ws).tick(later + timedelta(seconds=5)) == []
        finally:
            busy.kill()
    linked = Scheduler.of(ws).tick(later + timedelta(seconds=10))
    assert [f.id for f in linked] == [firing_id]
    name = Scheduler.run_name(firing)
    runs = [r for r in ws.jobs.list() if r.display_name == name]
    assert len(runs) == 1 and linked[0].run_id == runs[0].id, "the run submitted before the crash, not a second one"
    assert [e.after["run_id"] for e in fire_events(ws, f"schedule #{s.id}")] == [runs[0].id, recovered[0].run_id]
    ws.schedules.remove(s.id, LEAD)


def crashed_spec(firing):
    from services.entities import TrainingSpec
    return TrainingSpec(dataset=firing.dataset, estimator=firing.estimator, params=dict(firing.params),
                        display_name=Scheduler.run_name(firing))


# --- dataset triggers -------------------------------------------------------------------------

def test_feature_only_versions_are_recorded_as_skipped_not_trained(ws, tmp_path):
    ws.schedules.set_trigger("diabetes", True, LEAD, **RECIPE)
    features = diabetes_v2().drop(columns=["target"]).head(200)
    path = tmp_path / "inputs.csv"
    features.to_csv(path, index=False)
    dv = ws.datasets.register("diabetes", path, description="collected inputs, no labels", actor=LEAD)
    assert Scheduler.of(ws).tick() == []
    firing = ws.schedules.firings(1, dataset="diabetes")[0]
    assert (firing.dataset_version, firing.run_id) == (dv.version, None) and "no 'target' column" in firing.error
    assert not [r for r in ws.jobs.list() if r.dataset_version == dv.version]
    assert ws.releases.audit(1)[0].action == "trigger.skip"
    assert Scheduler.of(ws).tick() == [], "recorded once, never retried"
    ws.schedules.set_trigger("diabetes", False, LEAD)


def test_a_version_that_fails_its_data_tests_is_recorded_as_skipped_not_trained(ws, tmp_path):
    ws.schedules.set_trigger("diabetes", True, LEAD, **RECIPE)
    path = tmp_path / "no-bmi.csv"
    diabetes_v2().drop(columns=["bmi"]).to_csv(path, index=False)
    dv = ws.datasets.register("diabetes", path, description="a broken export", actor=LEAD)
    assert dv.tests_status.value == "fail"
    runs_before = len(ws.jobs.list())
    assert Scheduler.of(ws).tick() == []
    firing = ws.schedules.firings(1, dataset="diabetes")[0]
    assert (firing.dataset_version, firing.run_id) == (dv.version, None)
    assert "failed its data tests" in firing.error
    assert len(ws.jobs.list()) == runs_before
    assert ws.releases.audit(1)[0].action == "trigger.skip"
    ws.schedules.set_trigger("diabetes", False, LEAD)


# --- the real process: kill -9 and restart ---------------------------------------------------------

@pytest.mark.slow
def test_the_scheduler_process_fires_a_new_version_and_each_minute_once_across_kill_and_restart(demo_template,
                                                                                              tmp_path):
    ws = LocalWorkspace(copy_workspace(demo_template, tmp_path / "ws"))
    try:
        run_scheduler_across_a_crash(ws, tmp_path)
    finally:
        daemon.stop(ws.root)
        wait_runs_done(ws, [r.id for r in ws.jobs.list() if not r.status.is_terminal])
        ws.close()
    assert daemon.scheduler_pid(ws.root) is None


def run_scheduler_across_a_crash(ws, tmp_path: Path) -> None:
    seeded = {r.id for r in ws.jobs.list()}  # the demo's runs (seeded by Tollgate itself, as SYSTEM_ACTOR)
    ws.schedules.set_trigger("diabetes", True, LEAD, **RECIPE)
    s = ws.schedules.add("diabetes", "* * * * *", LEAD, **RECIPE)
    # created two minutes ago (as if the console had been up): the current minute is due at once
    with ws.db.write() as c:
        c.execute("UPDATE schedules SET active_since = ? WHERE id = ?",
                  (rules.due_text(datetime.now(timezone.utc) - 2 * MINUTE), s.id))
    pid, started = ws.schedules.start_scheduler()
    assert started and ws.schedules.scheduler().running and ws.schedules.scheduler().pid == pid
    assert ws.schedules.start_scheduler() == (pid, False), "one scheduler per workspace"

    # new data arrives: no other action than registering it
    path = tmp_path / "new.csv"
    diabetes_v2().to_csv(path, index=False)
    dv = ws.datasets.register("diabetes", path, description="new data", actor=LEAD)
    by_trigger = wait_for(lambda: next((f for f in ws.schedules.firings(0, dataset="diabetes")
                                        if f.kind == "dataset" and f.run_id), None), 60, "the dataset trigger")
    first = wait_for(lambda: ws.schedules.firings(0, schedule_id=s.id), 60, "the schedule's first firing")[0]

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: daemon.scheduler_pid(ws.root) is None, 10, "the killed scheduler to be gone")
    new_pid, started = ws.schedules.start_scheduler()
    assert started and new_pid != pid
    beat = ws.schedules.scheduler().last_tick_at
    wait_for(lambda: ws.schedules.scheduler().last_tick_at > beat + timedelta(seconds=2), 15, "ticks after restart")

    # the minute after the first firing fires once, by the restarted scheduler
    second_due = first.due_at + MINUTE
    wait_for(lambda: any(f.due_at == second_due and f.run_id for f in ws.schedules.firings(0, schedule_id=s.id)),
             90, f"the firing due {second_due}")
    beat = ws.schedules.scheduler().last_tick_at
    wait_for(lambda: ws.schedules.scheduler().last_tick_at > beat + timedelta(seconds=2), 15, "more ticks")

    firings = ws.schedules.firings(0, schedule_id=s.id)
    due_list = sorted(f.due_at for f in firings)
    assert len(due_list) == len(set(due_list)), f"an occurrence fired twice: {due_list}"
    assert due_list[0] == first.due_at and second_due in due_list
    assert all(b - a == MINUTE for a, b in zip(due_list, due_list[1:])), due_list
    assert due_list[-1] <= datetime.now(timezone.utc)
    assert [f.dataset_version for f in ws.schedules.firings(0, dataset="diabetes") if f.kind == "dataset"] == [dv.version]

    # the new version's run reaches a gate decision on its own
    run = ws.jobs.wait(by_trigger.run_id, timeout_s=300)
    assert run.status == RunStatus.COMPLETED, run.error
    assert (run.dataset, run.dataset_version, run.created_by) == ("diabetes", dv.version, SYSTEM_ACTOR)
    assert run.gate is not None and run.gate.evaluated_on == f"diabetes:{dv.version}"
    assert [e.after["run_id"] for e in fire_events(ws, f"dataset diabetes:{dv.version}")] == [run.id]
    events = fire_events(ws, f"schedule #{s.id}")
    assert sorted(e.after["run_id"] for e in events) == sorted(f.run_id for f in firings)
    runs = [r for r in ws.jobs.list() if r.created_by == SYSTEM_ACTOR and r.id not in seeded]
    assert len(runs) == len(firings) + 1, "one run per firing: nothing started twice"
