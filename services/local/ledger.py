"""The local workspace's release ledger (``services.release.ports.Ledger``) in its SQLite file.

* release stages: ``releases`` (one row per version that left the registry); the champion:
  the ``champion`` row of ``model_aliases``;
* smoke tests: ``smoke_tests`` (cases and latency as JSON);
* the audit trail: ``events`` (append-only, enforced by triggers); notifications: ``outbox``
  (``services.local.outbox``); canary rollouts: ``rollouts``;
* locks: one ``endpoint_ops`` row per lock key, taken in a write transaction (refused while
  another holder's is younger than ``OP_STALE_S``).

A unit of work is one ``BEGIN IMMEDIATE`` transaction on this thread's connection; the local
endpoint driver's traffic change, made inside it, joins it (``transaction``), so the split,
the stages, the records and the event commit together.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator, Mapping

from .. import canary as cn
from ..entities import AuditRecord, LatencyEvidence, ModelVersion, ReleaseState, SmokeCase, SmokeTestResult, Stage
from ..errors import Conflict, NotFound
from . import audit
from .db import Database, parse_ts, utcnow
from .outbox import emit

OP_STALE_S = 15 * 60
STAGE_FIELDS = ("deployed_by", "decided_by", "decision_comment", "smoke_test_id", "approved_against")


@contextmanager
def transaction(db: Database) -> Iterator[sqlite3.Connection]:
    """A write transaction, or the one this thread has open already (a unit of work)."""
    conn = db.conn
    if conn.in_transaction:
        yield conn
    else:
        with db.write() as c:
            yield c


def _state(r) -> ReleaseState:
    return ReleaseState(r["model_name"], r["model_version"], Stage(r["stage"]), r["deployed_by"], r["decided_by"],
                        r["decision_comment"], r["smoke_test_id"], parse_ts(r["updated_at"]), r["approved_against"])


def _smoke(r) -> SmokeTestResult:
    return SmokeTestResult(r["id"], r["endpoint"], r["deployment"], r["model_name"], r["model_version"],
                           parse_ts(r["at"]), r["actor"], bool(r["passed"]), r["summary"],
                           tuple(SmokeCase(**c) for c in json.loads(r["cases_json"])),
                           LatencyEvidence.from_dict(json.loads(r["latency_json"]) if r["latency_json"] else None))


def _rollout(r) -> cn.Rollout:
    rules, _ = cn.rules_from_json(r["policy_json"])
    return cn.Rollout(
        id=r["id"], endpoint=r["endpoint"], model_name=r["model_name"], model_version=r["model_version"],
        canary_deployment=r["canary_deployment"], stable_deployment=r["stable_deployment"],
        stable_model=r["stable_model"], steps=tuple(json.loads(r["steps_json"])), rules=rules,
        step_index=r["step_index"], state=r["state"], started_at=parse_ts(r["started_at"]),
        started_by=r["started_by"], step_started_at=parse_ts(r["step_started_at"]),
        updated_at=parse_ts(r["updated_at"]), ended_at=parse_ts(r["ended_at"]), reason=r["reason"],
        last_analysis=cn.Analysis.from_dict(json.loads(r["analysis_json"])) if r["analysis_json"] else None,
        history=tuple(cn.Analysis.from_dict(h) for h in json.loads(r["history_json"] or "[]")))


class LocalUnit:
    """One unit of work: statements on the open transaction ``conn``."""

    def __init__(self, conn: sqlite3.Connection, health_max_p95_ms: float):
        self.c, self.health_max_p95_ms = conn, health_max_p95_ms

    def set_stage(self, before: ReleaseState, stage: Stage, *, actor: str, role: str, action: str = "release.stage",
                  comment: str = "", **fields: Any) -> None:
        unknown = set(fields) - set(STAGE_FIELDS)
        if unknown:
            raise ValueError(f"unknown release field(s) {', '.join(sorted(unknown))}")
        cols = {"stage": stage.value, "updated_at": utcnow(), **fields}
        self.c.execute(f"INSERT INTO releases (model_name, model_version, {', '.join(cols)}) VALUES (?, ?, "
                       f"{', '.join('?' * len(cols))}) ON CONFLICT(model_name, model_version) DO UPDATE SET "
                       + ", ".join(f"{k} = excluded.{k}" for k in cols),
                       (before.model_name, before.model_version, *cols.values()))
        audit.record(self.c, actor, action, before.ref, role=role, before={"stage": before.stage.value},
                     after={"stage": stage.value}, comment=comment)

    def move_champion(self, name: str, version: int, *, actor: str, role: str) -> None:
        old = self.c.execute("SELECT version FROM model_aliases WHERE name = ? AND alias = 'champion'",
                             (name,)).fetchone()
        self.c.execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, 'champion', ?)"
                       " ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version", (name, int(version)))
        audit.record(self.c, actor, "model.alias", f"{name}@champion", role=role,
                     before={"version": old[0]} if old else None, after={"version": int(version)})

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        audit.record(self.c, actor, action, target, role=role, before=before, after=after, comment=comment)

    def emit(self, event: str, *, actor: str, summary: str, model: str | None = None, endpoint: str | None = None,
             details: Mapping[str, Any] | None = None) -> None:
        emit(self.c, event, actor=actor, summary=summary, model=model, endpoint=endpoint, details=details)

    def save_rollout(self, r: cn.Rollout) -> cn.Rollout:
        analysis = json.dumps(r.last_analysis.to_dict()) if r.last_analysis else None
        history = json.dumps([h.to_dict() for h in r.history])
        ts = (lambda d: d.isoformat() if d else None)
        if r.id == 0:
            rid = self.c.execute(
                "INSERT INTO rollouts (endpoint, model_name, model_version, canary_deployment, stable_deployment,"
                " stable_model, steps_json, policy_json, step_index, state, started_at, started_by, step_started_at,"
                " updated_at, ended_at, reason, analysis_json, history_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.endpoint, r.model_name, r.model_version, r.canary_deployment, r.stable_deployment, r.stable_model,
                 json.dumps(list(r.steps)), cn.rules_to_json(r.rules, self.health_max_p95_ms), r.step_index, r.state,
                 ts(r.started_at), r.started_by, ts(r.step_started_at), ts(r.updated_at), ts(r.ended_at), r.reason,
                 analysis, history)).lastrowid
            return replace(r, id=rid)
        self.c.execute("UPDATE rollouts SET step_index = ?, state = ?, step_started_at = ?, updated_at = ?,"
                       " ended_at = ?, reason = ?, analysis_json = ?, history_json = ? WHERE id = ?",
                       (r.step_index, r.state, ts(r.step_started_at), ts(r.updated_at), ts(r.ended_at), r.reason,
                        analysis, history, r.id))
        return r


class LocalLedger:
    """Release state, smoke tests, the audit trail, rollouts and locks of the local workspace."""

    def __init__(self, db: Database, policy):
        self.db, self.policy = db, policy

    # --- reads ---------------------------------------------------------------------------

    def state(self, mv: ModelVersion) -> ReleaseState:
        row = self.db.one("SELECT * FROM releases WHERE model_name = ? AND model_version = ?", (mv.name, mv.version))
        return _state(row) if row is not None else ReleaseState(mv.name, mv.version, Stage.REGISTERED)

    def states(self, name: str | None = None) -> list[ReleaseState]:
        rows = self.db.query("SELECT * FROM releases" + (" WHERE model_name = ?" if name else "")
                             + " ORDER BY updated_at DESC", (name,) if name else ())
        return [_state(r) for r in rows]

    def smoke_test(self, test_id: int) -> SmokeTestResult:
        row = self.db.one("SELECT * FROM smoke_tests WHERE id = ?", (test_id,))
        if row is None:
            raise NotFound(f"smoke test {test_id} does not exist")
        return _smoke(row)

    def smoke_tests(self, limit: int) -> list[SmokeTestResult]:
        return [_smoke(r) for r in self.db.query("SELECT * FROM smoke_tests ORDER BY id DESC LIMIT ?", (limit,))]

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        return audit.LocalAudit(self.db).audit(limit)

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[cn.Rollout]:
        where, params = [], []
        if env:
            where.append("endpoint = ?")
            params.append(env)
        if active:
            where.append("state IN ('running', 'paused')")
        sql = "SELECT * FROM rollouts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_rollout(r) for r in self.db.query(sql, (*params, limit))]

    # --- writes --------------------------------------------------------------------------

    def save_smoke(self, env: str, deployment: str, mv: ModelVersion, actor: str, role: str, *, passed: bool,
                   summary: str, cases: tuple[SmokeCase, ...], latency: LatencyEvidence | None) -> SmokeTestResult:
        with transaction(self.db) as c:
            test_id = c.execute(
                "INSERT INTO smoke_tests (endpoint, deployment, model_name, model_version, at, actor, passed, summary,"
                " cases_json, latency_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, deployment, mv.name, mv.version, utcnow(), actor, int(passed), summary,
                 json.dumps([case.__dict__ for case in cases]),
                 json.dumps(latency.to_dict()) if latency else None)).lastrowid
            audit.record(c, actor, "smoke_test", f"{env}/{deployment}", role=role,
                         after={"passed": passed, "model": mv.ref, "summary": summary, "smoke_test": test_id})
        return self.smoke_test(test_id)

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        with transaction(self.db) as c:
            audit.record(c, actor, action, target, role=role, before=before, after=after, comment=comment)

    @contextmanager
    def unit(self) -> Iterator[LocalUnit]:
        with transaction(self.db) as c:
            yield LocalUnit(c, self.policy.health.max_p95_ms)

    @contextmanager
    def exclusive(self, key: str, actor: str, op: str, what: str) -> Iterator[None]:
        now = time.time()
        with transaction(self.db) as c:
            row = c.execute("SELECT busy_op, busy_since, busy_by FROM endpoint_ops WHERE endpoint = ?", (key,)).fetchone()
            if row and row["busy_op"] and now - row["busy_since"] < OP_STALE_S:
                raise Conflict(f"{row['busy_by']} is already running '{row['busy_op']}' on {what}",
                               hint="Wait for it to finish; the console shows its progress.")
            c.execute("INSERT INTO endpoint_ops (endpoint, busy_op, busy_since, busy_by) VALUES (?, ?, ?, ?)"
                      " ON CONFLICT(endpoint) DO UPDATE SET busy_op = excluded.busy_op,"
                      " busy_since = excluded.busy_since, busy_by = excluded.busy_by", (key, op, now, actor))
        try:
            yield
        finally:
            with transaction(self.db) as c:
                c.execute("UPDATE endpoint_ops SET busy_op = NULL WHERE endpoint = ?", (key,))


__all__ = ["LocalLedger", "LocalUnit", "transaction", "OP_STALE_S"]
