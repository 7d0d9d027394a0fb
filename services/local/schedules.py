"""The local workspace's retraining triggers: schedules, dataset triggers, firings (SQLite).

This is the store (reads, and the edits people make, role-checked and audited).
Firing is done by the scheduler process (``services.local.scheduler``), which
shares these tables.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from .. import schedules as rules
from ..entities import DatasetTrigger, Firing, Schedule, SchedulerStatus
from ..errors import InvalidInput, NotFound
from ..permissions import canonical
from . import audit
from .db import Database, parse_ts, utcnow



def to_firing(row) -> Firing:
    return Firing(id=row["id"], kind=row["kind"], dataset=row["dataset"], schedule_id=row["schedule_id"],
                  due_at=parse_ts(row["due_at"]), dataset_version=row["dataset_version"],
                  estimator=row["estimator"], params=json.loads(row["params_json"]),
                  fired_at=parse_ts(row["claimed_at"]), run_id=row["run_id"], error=row["error"],
                  skipped=row["skipped"])


class LocalSchedules:
    """``ws.schedules``: the ScheduleService of the local workspace."""

    def __init__(self, db: Database, root: Path, policy, datasets, models, jobs):
        self.db, self.root, self.policy = db, Path(root), policy
        self.datasets, self.models, self.jobs = datasets, models, jobs

    # --- reads ----------------------------------------------------------------

    def list(self, now: datetime | None = None) -> list[Schedule]:
        rows = self.db.query("SELECT * FROM schedules WHERE removed_at IS NULL ORDER BY id")
        return [self._to_schedule(r, now) for r in rows]

    def get(self, schedule_id: int, now: datetime | None = None) -> Schedule:
        row = self._row(schedule_id)
        return self._to_schedule(row, now)

    def triggers(self) -> list[DatasetTrigger]:
        return [self._to_trigger(r) for r in self.db.query("SELECT * FROM dataset_triggers ORDER BY dataset")]

    def trigger(self, dataset: str) -> DatasetTrigger | None:
        row = self.db.one("SELECT * FROM dataset_triggers WHERE dataset = ?", (dataset,))
        return None if row is None else self._to_trigger(row)

    def firings(self, limit: int = 50, *, schedule_id: int | None = None, dataset: str | None = None) -> list[Firing]:
        where, params = [], []
        if schedule_id is not None:
            where.append("schedule_id = ?")
            params.append(int(schedule_id))
        if dataset is not None:
            where.append("dataset = ?")
            params.append(dataset)
        sql = "SELECT * FROM firings" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [to_firing(r) for r in self.db.query(sql, tuple(params))]

    def scheduler(self) -> SchedulerStatus:
        from .scheduler import status
        return status(self.root)

    # --- the local scheduler process (Azure ML runs its schedules itself) -------

    def start_scheduler(self) -> tuple[int, bool]:
        """Start the scheduler daemon unless one runs: ``(pid, started_now)``."""
        from .scheduler import start
        return start(self.root)

    def stop_scheduler(self) -> bool:
        """Stop the scheduler daemon; False if none ran. Runs it started go on."""
        from .scheduler import stop
        return stop(self.root)

    def tick(self, now: datetime | None = None) -> list[Firing]:
        """Fire what is due now, in this process (what the daemon does every second)."""
        from .scheduler import Scheduler
        return Scheduler(self.db, self.policy, self.datasets, self.jobs).tick(now)

    # --- edits (ml_lead / admin) ----------------------------------------------

    def add(self, dataset: str, cron: str, actor: str, *, estimator: str | None = None,
            params: Mapping[str, Any] | None = None, enabled: bool = True) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        expr = rules.parse_cron(cron)
        self.datasets.versions(dataset)  # NotFound for an unknown dataset
        estimator, params = self._recipe(estimator, params)
        now = utcnow()
        with self.db.write() as c:
            cur = c.execute("INSERT INTO schedules (dataset, estimator, params_json, cron, enabled, active_since,"
                            " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (dataset, estimator, json.dumps(params), expr, int(bool(enabled)), now, now, canonical(actor)))
            schedule_id = cur.lastrowid
            audit.record(c, actor, "schedule.add", f"schedule #{schedule_id}", role=role,
                         after={"dataset": dataset, "cron": expr, "estimator": estimator, "params": params,
                                "enabled": bool(enabled)})
        return self.get(schedule_id)

    def set_enabled(self, schedule_id: int, enabled: bool, actor: str) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        with self.db.write() as c:
            row = c.execute("SELECT * FROM schedules WHERE id = ? AND removed_at IS NULL", (int(schedule_id),)).fetchone()
            if row is None:
                raise self._missing(schedule_id)
            if bool(row["enabled"]) != bool(enabled):
                # resuming starts afresh: what fell due while paused does not fire
                c.execute("UPDATE schedules SET enabled = ?, active_since = CASE WHEN ? THEN ? ELSE active_since END"
                          " WHERE id = ?", (int(bool(enabled)), int(bool(enabled)), utcnow(), row["id"]))
                audit.record(c, actor, "schedule.enable" if enabled else "schedule.disable", f"schedule #{row['id']}",
                             role=role, before={"enabled": bool(row["enabled"])}, after={"enabled": bool(enabled)})
        return self.get(schedule_id)

    def remove(self, schedule_id: int, actor: str) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        removed = self.get(schedule_id)
        with self.db.write() as c:
            cur = c.execute("UPDATE schedules SET removed_at = ?, removed_by = ?, enabled = 0"
                            " WHERE id = ? AND removed_at IS NULL", (utcnow(), canonical(actor), removed.id))
            if cur.rowcount != 1:
                raise self._missing(schedule_id)
            audit.record(c, actor, "schedule.remove", f"schedule #{removed.id}", role=role,
                         before={"dataset": removed.dataset, "cron": removed.cron, "estimator": removed.estimator,
                                 "params": dict(removed.params), "enabled": removed.enabled})
        return removed

    def set_trigger(self, dataset: str, enabled: bool, actor: str, *, estimator: str | None = None,
                    params: Mapping[str, Any] | None = None) -> DatasetTrigger:
        role = rules.authorize_edit(self.policy, actor)
        self.datasets.versions(dataset)  # NotFound for an unknown dataset
        current = self.trigger(dataset)
        if estimator is None and params is None and current is not None:
            estimator, params = current.estimator, dict(current.params)  # keep the recipe when toggling
        estimator, params = self._recipe(estimator, params)
        with self.db.write() as c:
            row = c.execute("SELECT * FROM dataset_triggers WHERE dataset = ?", (dataset,)).fetchone()
            was_on = bool(row and row["enabled"])
            latest = c.execute("SELECT COALESCE(MAX(version), 0) FROM datasets WHERE name = ?", (dataset,)).fetchone()[0]
            # turning on: versions from now on; staying on keeps the mark (nothing registered meanwhile is lost)
            since = row["since_version"] if (was_on and enabled) else latest
            c.execute("INSERT INTO dataset_triggers (dataset, enabled, estimator, params_json, since_version,"
                      " updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET"
                      " enabled = excluded.enabled, estimator = excluded.estimator, params_json = excluded.params_json,"
                      " since_version = excluded.since_version, updated_at = excluded.updated_at,"
                      " updated_by = excluded.updated_by",
                      (dataset, int(bool(enabled)), estimator, json.dumps(params), since, utcnow(), canonical(actor)))
            audit.record(c, actor, "trigger.on" if enabled else "trigger.off", f"dataset {dataset}", role=role,
                         before=None if row is None else {"enabled": was_on, "estimator": row["estimator"],
                                                          "params": json.loads(row["params_json"])},
                         after={"enabled": bool(enabled), "estimator": estimator, "params": params,
                                "fires_after_version": since})
        return self.trigger(dataset)

    # --- helpers --------------------------------------------------------------

    def _recipe(self, estimator: str | None, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        return rules.resolve_recipe(self.models, self.jobs, self.policy, estimator, params)

    def _row(self, schedule_id: int):
        try:
            schedule_id = int(schedule_id)
        except (TypeError, ValueError):
            raise InvalidInput(f"a schedule id is a whole number, got {schedule_id!r}") from None
        row = self.db.one("SELECT * FROM schedules WHERE id = ? AND removed_at IS NULL", (schedule_id,))
        if row is None:
            raise self._missing(schedule_id)
        return row

    def _missing(self, schedule_id) -> NotFound:
        known = [str(r[0]) for r in self.db.query("SELECT id FROM schedules WHERE removed_at IS NULL ORDER BY id")]
        return NotFound(f"schedule #{schedule_id} does not exist",
                        hint=f"Schedules: {', '.join(known) or 'none'} (tollgate.py schedules).")

    def _last_firing(self, sql: str, params: tuple) -> Firing | None:
        row = self.db.one(sql, params)
        return None if row is None else to_firing(row)

    def _to_schedule(self, row, now: datetime | None) -> Schedule:
        now = rules.utc(now or datetime.now(timezone.utc))
        active_since = parse_ts(row["active_since"])
        upcoming = ()
        if row["enabled"]:
            upcoming = rules.next_times(row["cron"], max(now, active_since))
        return Schedule(id=row["id"], dataset=row["dataset"], estimator=row["estimator"],
                        params=json.loads(row["params_json"]), cron=row["cron"], enabled=bool(row["enabled"]),
                        created_at=parse_ts(row["created_at"]), created_by=row["created_by"],
                        active_since=active_since, next_fire_at=upcoming,
                        last_firing=self._last_firing("SELECT * FROM firings WHERE schedule_id = ?"
                                                      " ORDER BY due_at DESC LIMIT 1", (row["id"],)))

    def _to_trigger(self, row) -> DatasetTrigger:
        return DatasetTrigger(dataset=row["dataset"], enabled=bool(row["enabled"]), estimator=row["estimator"],
                              params=json.loads(row["params_json"]), since_version=row["since_version"],
                              updated_at=parse_ts(row["updated_at"]), updated_by=row["updated_by"],
                              last_firing=self._last_firing("SELECT * FROM firings WHERE kind = 'dataset'"
                                                            " AND dataset = ? ORDER BY id DESC LIMIT 1",
                                                            (row["dataset"],)))
