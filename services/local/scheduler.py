"""The scheduler of a local workspace: fires retraining schedules and dataset triggers.

``python -m services.local.scheduler --workspace PATH`` (started by ``make run``
with the console, or by ``tollgate.py scheduler start``) calls ``Scheduler.tick``
every ``TICK_S``:

* **schedules** — for each enabled schedule, the latest cron occurrence at or
  before now (UTC) fires if it has not fired yet. After downtime only the latest
  missed occurrence fires, once; the earlier ones are counted as ``skipped``.
* **dataset triggers** — each version of a dataset registered after its trigger
  was turned on fires once. The scheduler *polls* for such versions instead of
  the register path firing: registering commits the version and is done, so a
  crash between registering and starting a run cannot lose the trigger — the next
  tick (or the next scheduler) sees the version without a firing and fires it.

Never twice: the decision to fire is an INSERT into ``firings`` inside the
``BEGIN IMMEDIATE`` transaction that re-checks the schedule, under
``UNIQUE (schedule_id, due_at)`` (and a unique index on dataset + version), so two
schedulers, a ``scheduler tick`` from the CLI beside the daemon, or a restart cannot
decide twice. The run is submitted after that commit and its id written back with
an audit record (actor ``tollgate-system``). A scheduler killed in between leaves a
claimed firing without a run; the next tick takes the claim over once the claiming
process is gone, finds the run by its display name (``schedules.run_name`` names the
firing) if it had been submitted, and submits it otherwise.

One daemon per workspace (an exclusive lock on ``scheduler.lock``); it touches
``scheduler.pid`` every tick as a heartbeat. Runs it starts are processes of their
own session: stopping or killing the scheduler does not stop them.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import provenance
from .paths import private_files
from .. import schedules as rules
from ..entities import CheckStatus, Firing, SchedulerStatus, TrainingSpec
from ..errors import BackendUnavailable, ServiceError
from ..permissions import SYSTEM_ACTOR
from . import audit
from . import jobs as jobs_module
from .db import parse_ts, utcnow
from .processes import pid_alive, run_single, running_pid, stop_process
from .schedules import to_firing

TICK_S = 1.0
PID_FILE = "scheduler.pid"
LOG_FILE = "scheduler.log"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --- the process, seen from outside ------------------------------------------------

def scheduler_pid(root: Path) -> int | None:
    return running_pid(root, "scheduler")  # this workspace's, never a copied folder's original


def status(root: Path) -> SchedulerStatus:
    pid = scheduler_pid(root)
    if not pid:
        return SchedulerStatus(False, detail="not running: schedules and dataset triggers do not fire "
                                             "(make run starts it with the console; or tollgate.py scheduler start)")
    try:
        beat = datetime.fromtimestamp((Path(root) / PID_FILE).stat().st_mtime, timezone.utc)
    except OSError:
        beat = None
    return SchedulerStatus(True, pid, beat, detail=f"running (pid {pid})")


def start(root: Path, timeout_s: float = 60) -> tuple[int, bool]:
    """Start the daemon unless one runs; returns ``(pid, started_now)``."""
    root = Path(root).resolve()
    pid = scheduler_pid(root)
    if pid:
        return pid, False
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / LOG_FILE, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.local.scheduler", "--workspace", str(root)],
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = scheduler_pid(root)
        if pid:
            return pid, pid == proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BackendUnavailable("the scheduler did not start", hint=f"See {logs / LOG_FILE}.")


def stop(root: Path, timeout_s: float = 10) -> bool:
    """Stop the daemon (SIGTERM, then SIGKILL). False if none ran. Runs it started go on."""
    pid = scheduler_pid(root)
    if not pid:
        return False
    stop_process(pid, timeout_s)
    return True


def process_started_at(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds), from /proc; None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def claim_is_live(pid: int, claimed_at: str) -> bool:
    """Is the process that claimed a firing still at work on it? (alive, and not a later
    process that reuses its pid)"""
    if not pid_alive(pid):
        return False
    started = process_started_at(pid)
    return started is None or started <= parse_ts(claimed_at).timestamp() + 1.0


# --- the work -------------------------------------------------------------------

class Scheduler:
    """Fires what is due. ``tick(now)`` takes the time, so tests can move the clock."""

    def __init__(self, db, policy, datasets, jobs):
        self.db, self.policy, self.datasets, self.jobs = db, policy, datasets, jobs
        self.pid = os.getpid()

    @classmethod
    def of(cls, ws) -> "Scheduler":
        return cls(ws.db, ws.policy, ws.datasets, ws.jobs)

    def tick(self, now: datetime | None = None) -> list[Firing]:
        """Fire everything due at ``now`` (default: the current time); returns the firings made."""
        now = rules.utc(now or datetime.now(timezone.utc))
        done = self.recover()
        done += self.fire_schedules(now)
        done += self.fire_dataset_triggers()
        return done

    # --- schedules ------------------------------------------------------------

    def fire_schedules(self, now: datetime) -> list[Firing]:
        done = []
        rows = self.db.query("SELECT s.id, s.cron, s.active_since, (SELECT MAX(f.due_at) FROM firings f"
                             " WHERE f.schedule_id = s.id) AS last_due FROM schedules s"
                             " WHERE s.enabled = 1 AND s.removed_at IS NULL ORDER BY s.id")
        for row in rows:  # a read-only look first: the write lock only when something is due
            due = rules.latest_due(row["cron"], now, parse_ts(row["active_since"]))
            if due is None or (row["last_due"] and row["last_due"] >= rules.due_text(due)):
                continue
            firing_id = self.claim_schedule(row["id"], now)
            if firing_id is not None:
                done.append(self.submit(firing_id))
        return done

    def claim_schedule(self, schedule_id: int, now: datetime) -> int | None:
        """Decide to fire ``schedule_id``'s latest due occurrence: the firing row, or None if it
        is not due (any more) or has fired. One transaction, so the decision is made once."""
        with self.db.write() as c:
            s = c.execute("SELECT * FROM schedules WHERE id = ? AND enabled = 1 AND removed_at IS NULL",
                          (schedule_id,)).fetchone()
            if s is None:
                return None
            active_since = parse_ts(s["active_since"])
            due = rules.latest_due(s["cron"], now, active_since)
            if due is None:
                return None
            last = c.execute("SELECT MAX(due_at) FROM firings WHERE schedule_id = ?", (schedule_id,)).fetchone()[0]
            if last is not None and last >= rules.due_text(due):
                return None
            skipped = rules.count_missed(s["cron"], parse_ts(last) if last else None, active_since, due)
            try:
                cur = c.execute("INSERT INTO firings (kind, schedule_id, due_at, dataset, estimator, params_json,"
                                " skipped, claimed_at, claimed_pid) VALUES ('schedule', ?, ?, ?, ?, ?, ?, ?, ?)",
                                (schedule_id, rules.due_text(due), s["dataset"], s["estimator"], s["params_json"],
                                 skipped, utcnow(), self.pid))
            except sqlite3.IntegrityError:
                return None  # someone else decided first (UNIQUE (schedule_id, due_at))
            return cur.lastrowid

    # --- dataset triggers -----------------------------------------------------

    def fire_dataset_triggers(self) -> list[Firing]:
        done = []
        pending = self.db.query(
            "SELECT t.dataset, d.version FROM dataset_triggers t JOIN datasets d ON d.name = t.dataset"
            " AND d.version > t.since_version WHERE t.enabled = 1 AND NOT EXISTS (SELECT 1 FROM firings f"
            " WHERE f.kind = 'dataset' AND f.dataset = d.name AND f.dataset_version = d.version)"
            " ORDER BY t.dataset, d.version")
        for row in pending:
            firing_id = self.claim_dataset(row["dataset"], row["version"])
            if firing_id is not None:
                done.append(self.submit(firing_id))
        return done

    def claim_dataset(self, dataset: str, version: int) -> int | None:
        with self.db.write() as c:
            t = c.execute("SELECT * FROM dataset_triggers WHERE dataset = ? AND enabled = 1 AND since_version < ?",
                          (dataset, version)).fetchone()
            d = c.execute("SELECT profile_json, tests_status FROM datasets WHERE name = ? AND version = ?",
                          (dataset, version)).fetchone()
            if t is None or d is None:
                return None
            labelled = any(col.get("name") == self.policy.target for col in json.loads(d["profile_json"]))
            error = None if labelled else (f"not retrained: {dataset}:{version} has no {self.policy.target!r} "
                                           "column (feature-only data, e.g. inputs collected by an endpoint)")
            if d["tests_status"] == CheckStatus.FAIL.value:  # never trained on by default (DatasetStore.latest_passing)
                error = f"not retrained: {dataset}:{version} failed its data tests"
            try:
                cur = c.execute("INSERT INTO firings (kind, dataset, dataset_version, estimator, params_json,"
                                " claimed_at, claimed_pid, error) VALUES ('dataset', ?, ?, ?, ?, ?, ?, ?)",
                                (dataset, version, t["estimator"], t["params_json"], utcnow(), self.pid, error))
            except sqlite3.IntegrityError:
                return None  # fired already (unique dataset + version)
            if error:
                audit.record(c, SYSTEM_ACTOR, "trigger.skip", f"dataset {dataset}:{version}", role="system",
                             after={"firing": cur.lastrowid}, comment=error)
                return None
            return cur.lastrowid

    # --- submitting, completing, recovering -----------------------------------

    def submit(self, firing_id: int) -> Firing:
        """Start the run of a claimed firing and record it (or why it could not start)."""
        row = self.db.one("SELECT * FROM firings WHERE id = ?", (firing_id,))
        firing = to_firing(row)
        try:
            version = firing.dataset_version if firing.kind == "dataset" else self.training_version(firing.dataset)
            run = self.jobs.submit(TrainingSpec(
                dataset=firing.dataset, dataset_version=version, estimator=firing.estimator,
                params=dict(firing.params), experiment=self.policy.experiment, display_name=self.run_name(firing),
                trigger=self.trigger(firing)), SYSTEM_ACTOR)
        except ServiceError as e:
            return self.complete(firing, None, None, f"{e}" + (f" ({e.hint})" if e.hint else ""))
        except Exception as e:  # noqa: BLE001 — recorded on the firing; the scheduler goes on
            return self.complete(firing, None, None, f"{type(e).__name__}: {e}")
        return self.complete(firing, run.id, run.dataset_version, None)

    def complete(self, firing: Firing, run_id: str | None, dataset_version: int | None, error: str | None) -> Firing:
        with self.db.write() as c:
            cur = c.execute("UPDATE firings SET run_id = ?, dataset_version = COALESCE(?, dataset_version),"
                            " submitted_at = ?, error = ? WHERE id = ? AND run_id IS NULL AND error IS NULL",
                            (run_id, dataset_version, utcnow(), error, firing.id))
            if cur.rowcount == 1:
                ref = f"{firing.dataset}:{dataset_version or firing.dataset_version or 'latest'}"
                after = {"firing": firing.id, "run_id": run_id, "dataset": ref, "estimator": firing.estimator,
                         "params": dict(firing.params)}
                if firing.kind == "schedule":
                    after.update(due_at=rules.due_text(firing.due_at), skipped=firing.skipped)
                    action, target = "schedule.fire", f"schedule #{firing.schedule_id}"
                else:
                    action, target = "trigger.fire", f"dataset {firing.dataset}:{firing.dataset_version}"
                comment = error or rules.describe_missed(firing.skipped)
                audit.record(c, SYSTEM_ACTOR, action, target, role="system", after=after,
                             comment=("not started: " + comment) if error else comment)
        return to_firing(self.db.one("SELECT * FROM firings WHERE id = ?", (firing.id,)))

    def recover(self) -> list[Firing]:
        """Finish firings whose claiming process died between deciding and recording the run."""
        done = []
        for row in self.db.query("SELECT * FROM firings WHERE run_id IS NULL AND error IS NULL ORDER BY id"):
            if row["claimed_pid"] == self.pid or claim_is_live(row["claimed_pid"], row["claimed_at"]):
                # a process that is alive may be submitting it right now (this one too: another
                # scheduler in another thread); a claim is only taken over from a dead process
                continue
            with self.db.write() as c:
                taken = c.execute("UPDATE firings SET claimed_pid = ?, claimed_at = ? WHERE id = ? AND claimed_pid = ?"
                                  " AND claimed_at = ? AND run_id IS NULL AND error IS NULL",
                                  (self.pid, utcnow(), row["id"], row["claimed_pid"], row["claimed_at"])).rowcount
            if not taken:
                continue
            firing = to_firing(row)
            submitted = self.db.one("SELECT id, dataset_version FROM runs WHERE display_name = ? AND created_by = ?",
                                    (self.run_name(firing), SYSTEM_ACTOR))
            if submitted is not None:  # it got as far as the run: link it, do not start another
                done.append(self.complete(firing, submitted["id"], submitted["dataset_version"], None))
            else:
                done.append(self.submit(row["id"]))
        return done

    def training_version(self, dataset: str) -> int | None:
        """The latest passing version of ``dataset`` with the target column (what a scheduled run
        trains on); None lets submit say why there is none."""
        dv = self.datasets.latest_passing(dataset, labelled=True)
        return dv.version if dv else None

    @staticmethod
    def trigger(firing: Firing) -> str:
        """What started the run, for its provenance."""
        if firing.kind == "schedule":
            return provenance.schedule_trigger(firing.schedule_id, rules.due_text(firing.due_at))
        return provenance.dataset_trigger(f"{firing.dataset}:{firing.dataset_version}")

    @staticmethod
    def run_name(firing: Firing) -> str:
        if firing.kind == "schedule":
            return rules.run_name(firing.estimator, firing.params, schedule_id=firing.schedule_id, due_at=firing.due_at)
        return rules.run_name(firing.estimator, firing.params, dataset_ref=f"{firing.dataset}:{firing.dataset_version}")


# --- the daemon -------------------------------------------------------------------

def reap_children() -> None:
    """Collect finished runners (children of this long-lived process), so none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        jobs_module._children.pop(pid, None)


def run_forever(root: Path) -> None:
    from .workspace import LocalWorkspace
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    ws = LocalWorkspace(root)
    scheduler = Scheduler.of(ws)
    pid_file = Path(root) / PID_FILE
    try:
        while not stopping:
            try:
                for f in scheduler.tick():
                    what = f"schedule #{f.schedule_id} due {rules.due_text(f.due_at)}" if f.kind == "schedule" \
                        else f"new version {f.dataset}:{f.dataset_version}"
                    print(f"{utcnow()} fired {what}: " + (f"run {f.run_id}" if f.run_id else f"no run ({f.error})")
                          + (f"; {f.skipped} missed occurrence(s) skipped" if f.skipped else ""), flush=True)
            except Exception as e:  # noqa: BLE001 — keep scheduling; the next tick retries
                print(f"{utcnow()} scheduler tick failed: {type(e).__name__}: {e}", flush=True)
            reap_children()
            try:
                os.utime(pid_file)  # the heartbeat
            except OSError:
                pass
            time.sleep(TICK_S)
    finally:
        ws.close()
    print(f"{utcnow()} scheduler stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    private_files()   # its logs, spools and pid files: the workspace user's alone
    ap = argparse.ArgumentParser(description="Fire the retraining schedules and dataset triggers of a local workspace.")
    ap.add_argument("--workspace", required=True)
    args = ap.parse_args(argv)
    root = Path(args.workspace).resolve()
    return run_single(root, "scheduler", lambda: run_forever(root))


if __name__ == "__main__":
    sys.exit(main())
