"""The local workspace's notification outbox and its deliverer.

* ``emit(conn, ...)`` writes an event row inside the caller's transaction: the event
  exists if and only if the change it announces was committed.
* ``scan(ws)`` finds events that happen in other processes or in the data: a model
  version registered by a training run (``candidate_ready``; the runner commits it,
  this scan announces it once, by a watermark and the event's unique ``dedupe_key``)
  and endpoint health turning degraded/down or back (``endpoint_degraded`` /
  ``endpoint_recovered``, once per transition; the last status is persisted).
* ``LocalNotifications.deliver_due()`` (the supervisor's notification thread; the loop is
  ``services.notify.deliver_due``, this class its ``DeliveryStore``) fans each new event out
  to the webhooks that subscribe to it, POSTs what is due, and on failure retries with
  exponential back-off (attempts and next attempt time are persisted, so a restart resumes
  them). Every delivery and every final failure is in the audit trail
  (``notification.delivered`` / ``notification.failed``, with status code and attempt).
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from .. import notify
from ..entities import HealthStatus
from ..notify import Delivery, Event, Pending
from ..permissions import SYSTEM_ACTOR
from ..telemetry import between, endpoint_health
from . import audit
from .db import Database, parse_ts, utcnow

BAD = (HealthStatus.DEGRADED.value, HealthStatus.DOWN.value)


def emit(conn: sqlite3.Connection, event: str, *, actor: str, summary: str, model: str | None = None,
         endpoint: str | None = None, details: Mapping[str, Any] | None = None,
         dedupe_key: str | None = None) -> None:
    """Write one event into the outbox, in the caller's transaction (a repeated ``dedupe_key`` is ignored)."""
    conn.execute("INSERT OR IGNORE INTO outbox (event, at, actor, model, endpoint, summary, details_json, dedupe_key)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (event, utcnow(), actor, model, endpoint, summary, json.dumps(dict(details or {})), dedupe_key))


def _event(r) -> Event:
    return Event(r["id"], r["event"], parse_ts(r["at"]), r["actor"], r["model"], r["endpoint"], r["summary"],
                 json.loads(r["details_json"] or "{}"))


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc) if epoch is not None else None


class LocalNotifications:
    """Events, their deliveries, and the deliverer."""

    def __init__(self, db: Database, policy):
        self.db, self.policy = db, policy

    # --- reads ----------------------------------------------------------------

    def events(self, limit: int = 50) -> list[Event]:
        return [_event(r) for r in self.db.query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,))]

    def deliveries(self, event_id: int | None = None, limit: int = 100) -> list[Delivery]:
        where, params = ("WHERE d.event_id = ?", (event_id,)) if event_id is not None else ("", ())
        rows = self.db.query(f"SELECT d.*, o.event FROM deliveries d JOIN outbox o ON o.id = d.event_id {where}"
                             f" ORDER BY d.id DESC LIMIT ?", (*params, limit))
        return [Delivery(r["id"], r["event_id"], r["event"], r["webhook"], r["state"], r["attempts"],
                         _ts(r["next_attempt_at"]) if r["state"] == "pending" else None, r["last_status"],
                         r["last_error"], parse_ts(r["delivered_at"])) for r in rows]

    # --- delivery ---------------------------------------------------------------

    def deliver_due(self, now: float | None = None, *, send: Callable[..., notify.PostResult] = notify.post_json,
                    environ: Mapping[str, str] | None = None, limit: int = 20) -> int:
        """Fan out, then attempt every delivery that is due (``services.notify.deliver_due``)."""
        return notify.deliver_due(self, self.policy.notifications, time.time() if now is None else now,
                                  send=send, environ=environ, limit=limit)

    # --- the DeliveryStore of services.notify ---------------------------------------------

    def fan_out(self, webhooks, now: float) -> int:
        """One pending delivery per (new event, subscribed webhook); returns how many were created."""
        created = 0
        if self.db.one("SELECT 1 FROM outbox WHERE fanned_out = 0 LIMIT 1") is None:
            return 0  # nothing new: no write transaction every tick
        with self.db.write() as c:
            rows = c.execute("SELECT id, event FROM outbox WHERE fanned_out = 0 ORDER BY id LIMIT 500").fetchall()
            for r in rows:
                for hook in webhooks:
                    if r["event"] in hook.events:
                        created += c.execute("INSERT OR IGNORE INTO deliveries (event_id, webhook, state, attempts,"
                                             " next_attempt_at) VALUES (?, ?, 'pending', 0, ?)",
                                             (r["id"], hook.name, now)).rowcount
                c.execute("UPDATE outbox SET fanned_out = 1 WHERE id = ?", (r["id"],))
        return created

    def due(self, now: float, limit: int) -> list[Pending]:
        rows = self.db.query("SELECT d.*, o.event, o.at, o.actor, o.model, o.endpoint, o.summary, o.details_json"
                             " FROM deliveries d JOIN outbox o ON o.id = d.event_id"
                             " WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
                             " ORDER BY d.next_attempt_at, d.id LIMIT ?", (now, limit))
        return [Pending(d["id"], d["webhook"], d["attempts"], d["next_attempt_at"],
                        Event(d["event_id"], d["event"], parse_ts(d["at"]), d["actor"], d["model"], d["endpoint"],
                              d["summary"], json.loads(d["details_json"] or "{}"))) for d in rows]

    def claim(self, d: Pending, lease_until: float) -> bool:
        with self.db.write() as c:
            return c.execute("UPDATE deliveries SET next_attempt_at = ? WHERE id = ? AND state = 'pending'"
                             " AND attempts = ? AND next_attempt_at = ?",
                             (lease_until, d.id, d.attempts, d.next_attempt_at)).rowcount == 1

    def retry(self, d: Pending, attempt: int, next_at: float, status: int, error: str | None) -> None:
        with self.db.write() as c:
            c.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_status = ?, last_error = ?"
                      " WHERE id = ?", (attempt, next_at, status, error, d.id))

    def finish(self, d: Pending, attempt: int, state: str, status: int, error: str | None,
               record: Mapping[str, Any]) -> None:
        with self.db.write() as c:
            c.execute("UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?,"
                      " delivered_at = ? WHERE id = ?",
                      (state, attempt, status, error, utcnow() if state == "delivered" else None, d.id))
            audit.record(c, SYSTEM_ACTOR, f"notification.{state}", f"webhook/{d.webhook}", role="system",
                         after=dict(record), comment=d.event.summary[:300])


# --- events found by scanning ------------------------------------------------------

def _get_state(c, key: str) -> str | None:
    row = c.execute("SELECT value FROM notify_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _set_state(c, key: str, value: str) -> None:
    c.execute("INSERT INTO notify_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
              (key, value))


def scan_candidates(db: Database) -> int:
    """``candidate_ready`` for each model version a training run registered (it passed the gate)
    since the last scan. The first scan of a workspace only sets the watermark."""
    found = 0
    mark = _get_state(db.conn, "candidates.rowid")
    if mark is not None and db.one("SELECT COALESCE(MAX(rowid), 0) FROM models")[0] <= int(mark):
        return 0  # nothing registered since: no write transaction every tick
    with db.write() as c:
        mark = _get_state(c, "candidates.rowid")
        top = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM models").fetchone()[0]
        if mark is None:
            _set_state(c, "candidates.rowid", str(top))
            return 0
        rows = c.execute("SELECT m.rowid AS rid, m.name, m.version, m.created_by, m.metrics_json, m.dataset,"
                         " m.dataset_version, r.id AS run_id, r.display_name, r.gate_json FROM models m"
                         " JOIN runs r ON r.id = m.run_id WHERE m.rowid > ? ORDER BY m.rowid", (int(mark),)).fetchall()
        for r in rows:
            gate = json.loads(r["gate_json"]) if r["gate_json"] else {}
            if not gate.get("passed"):
                continue
            ref = f"{r['name']}:{r['version']}"
            against = f" against champion {gate['champion']}" if gate.get("champion") else ""
            emit(c, "candidate_ready", actor=r["created_by"], model=ref,
                 summary=f"{ref} from run {r['display_name']} passed the quality gate{against}; "
                         f"deploy it to staging to start its release",
                 details={"run": r["run_id"], "dataset": f"{r['dataset']}:{r['dataset_version']}",
                          "metrics": json.loads(r["metrics_json"] or "{}"), "reasons": gate.get("reasons", [])},
                 dedupe_key=f"candidate_ready:{ref}")
            found += 1
        _set_state(c, "candidates.rowid", str(max(top, int(mark))))
    return found


def health_transition(old: str | None, new: str) -> tuple[str | None, str]:
    """(event to emit or None, status to remember). Degraded/down is announced once when it
    starts (and again if degraded turns to down); healthy after that is a recovery. An idle
    endpoint (too few requests to judge) neither recovers nor degrades: the last verdict stands."""
    if new in BAD:
        if old not in BAD or (old == HealthStatus.DEGRADED.value and new == HealthStatus.DOWN.value):
            return "endpoint_degraded", new
        return None, new
    if new == HealthStatus.HEALTHY.value:
        return ("endpoint_recovered" if old in BAD else None), new
    return None, old if old in BAD else new


def scan_health(ws, health: list | None = None) -> list[str]:
    """Emit ``endpoint_degraded`` / ``endpoint_recovered`` on transitions; returns the events emitted.
    A deployment being brought up (starting, at 0 % traffic) is not an incident and is left out."""
    if health is None:
        rules = ws.policy.health
        now = datetime.now(timezone.utc)
        stats = ws.telemetry.stats(between(now - timedelta(minutes=rules.window_minutes), now))
        health = []
        for ep in ws.endpoints.list():
            ep = dataclasses.replace(ep, deployments=tuple(
                d for d in ep.deployments if not (d.state == "starting" and d.traffic == 0)))
            health.append(endpoint_health(ep, stats, rules, rules.window_minutes))
    emitted = []
    with ws.db.write() as c:
        for h in health:
            key = f"health:{h.endpoint}"
            event, remember = health_transition(_get_state(c, key), h.status.value)
            _set_state(c, key, remember)
            if event:
                word = "recovered" if event == "endpoint_recovered" else h.status.value
                emit(c, event, actor=SYSTEM_ACTOR, endpoint=h.endpoint,
                     summary=f"endpoint {h.endpoint} is {word}" + (f": {'; '.join(h.reasons)}" if h.reasons else ""),
                     details={"status": h.status.value, "reasons": list(h.reasons), "requests": h.requests,
                              "failure_rate": round(h.failure_rate, 4), "p95_ms": h.p95_ms,
                              "window_minutes": h.window_minutes})
                emitted.append(event)
    return emitted
