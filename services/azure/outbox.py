"""Notifications of an Azure workspace: events from the audit trail, deliveries in a blob.

* **Events** are written by the release ledger in the same Append Block as the records of the
  change they announce (``"event"`` on the line: ``services.azure.ledger``), so an event
  exists exactly when the change was recorded; its id is that record's id.
* **Deliveries** (one per event and subscribed webhook: attempts, next attempt, last status)
  are a JSON document on the workspace's default datastore
  (``tollgate/notifications/deliveries.json``), read and written only while the deliverer
  holds the lease ``locks/notifications`` — one deliverer at a time, whichever process runs
  it (``tollgate.py agent``, a waiting ``canary start --wait``). A deliverer that finds the
  lease taken does nothing this tick. The delivery loop, its retries and back-off are
  ``services.notify.deliver_due``, as locally; every delivery and every final failure is in
  the audit trail (``notification.delivered`` / ``notification.failed``).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from .. import notify
from ..errors import Conflict, NotFound
from ..notify import Delivery, Event, Pending
from ..permissions import SYSTEM_ACTOR, SYSTEM_ROLE
from .audit import BlobAudit, OperationLocks

STATE_PATH = "tollgate/notifications/deliveries.json"
KEEP = 1000          # deliveries kept in the document (the audit trail keeps every outcome)


def _event(record_id: int, data: Mapping[str, Any]) -> Event:
    return Event(record_id, data["event"], datetime.fromisoformat(data["at"]), data["actor"], data.get("model"),
                 data.get("endpoint"), data["summary"], data.get("details") or {})


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc) if epoch is not None else None


class _Deliveries:
    """The ``DeliveryStore`` of ``services.notify`` over the loaded document (under the lease)."""

    def __init__(self, doc: dict, trail: BlobAudit, events: list[Event]):
        self.doc, self.trail, self.events = doc, trail, events

    def fan_out(self, webhooks, now: float) -> int:
        known = self.doc.get("watermark") or 0
        created = 0
        for e in sorted((e for e in self.events if e.id > known), key=lambda e: e.id):
            for hook in webhooks:
                if e.event in hook.events:
                    self.doc["next_id"] = self.doc.get("next_id", 0) + 1
                    self.doc["deliveries"].append({"id": self.doc["next_id"], "event_id": e.id, "event": e.event,
                                                   "webhook": hook.name, "state": "pending", "attempts": 0,
                                                   "next_attempt_at": now, "last_status": None, "last_error": None,
                                                   "delivered_at": None})
                    created += 1
            self.doc["watermark"] = max(self.doc.get("watermark") or 0, e.id)
        return created

    def due(self, now: float, limit: int) -> list[Pending]:
        by_id = {e.id: e for e in self.events}
        due = sorted((d for d in self.doc["deliveries"] if d["state"] == "pending" and d["next_attempt_at"] <= now
                      and d["event_id"] in by_id), key=lambda d: (d["next_attempt_at"], d["id"]))
        return [Pending(d["id"], d["webhook"], d["attempts"], d["next_attempt_at"], by_id[d["event_id"]])
                for d in due[:limit]]

    def _row(self, pending: Pending) -> dict:
        return next(d for d in self.doc["deliveries"] if d["id"] == pending.id)

    def claim(self, pending: Pending, lease_until: float) -> bool:
        return True        # the lease on the document makes this the only deliverer

    def retry(self, pending: Pending, attempt: int, next_at: float, status: int, error: str | None) -> None:
        self._row(pending).update(attempts=attempt, next_attempt_at=next_at, last_status=status, last_error=error)

    def finish(self, pending: Pending, attempt: int, state: str, status: int, error: str | None,
               record: Mapping[str, Any]) -> None:
        self._row(pending).update(state=state, attempts=attempt, last_status=status, last_error=error,
                                  delivered_at=datetime.now(timezone.utc).isoformat() if state == "delivered" else None)
        self.trail.record(SYSTEM_ACTOR, f"notification.{state}", f"webhook/{pending.webhook}", role=SYSTEM_ROLE,
                          after=dict(record), comment=pending.event.summary[:300])


class AzureNotifications:
    """``NotificationService`` of an Azure workspace (see the module docstring)."""

    def __init__(self, trail: BlobAudit, locks: OperationLocks, blobs, policy):
        self.trail, self.locks, self.blobs, self.policy = trail, locks, blobs, policy

    def events(self, limit: int = 50) -> list[Event]:
        return [_event(rec.id, data) for rec, data in self.trail.find_extra("event")][:limit]

    def _load(self) -> dict:
        try:
            doc = json.loads(self.blobs.download(self.blobs.uri(STATE_PATH)))
        except NotFound:
            doc = {}
        doc.setdefault("deliveries", [])
        return doc

    def deliveries(self, event_id: int | None = None, limit: int = 100) -> list[Delivery]:
        rows = [d for d in self._load()["deliveries"] if event_id is None or d["event_id"] == event_id]
        rows.sort(key=lambda d: -d["id"])
        return [Delivery(d["id"], d["event_id"], d["event"], d["webhook"], d["state"], d["attempts"],
                         _ts(d["next_attempt_at"]) if d["state"] == "pending" else None, d["last_status"],
                         d["last_error"], datetime.fromisoformat(d["delivered_at"]) if d["delivered_at"] else None)
                for d in rows[:limit]]

    def deliver_due(self, now: float | None = None, *, send: Callable[..., notify.PostResult] = notify.post_json,
                    environ: Mapping[str, str] | None = None, limit: int = 20) -> int:
        """One deliverer's tick (``services.notify.deliver_due``); 0 when another deliverer holds the lease."""
        now = time.time() if now is None else now
        try:
            with self.locks.hold("notifications", SYSTEM_ACTOR, "deliver", "the notification deliveries"):
                self.trail.clear_cache()
                doc = self._load()
                before = (doc.get("watermark"), len(doc["deliveries"]))
                store = _Deliveries(doc, self.trail, self.events(limit=10_000))
                attempts = notify.deliver_due(store, self.policy.notifications, now, send=send, environ=environ,
                                              limit=limit)
                if attempts or (doc.get("watermark"), len(doc["deliveries"])) != before:
                    doc["deliveries"] = doc["deliveries"][-KEEP:]
                    self.blobs.upload(STATE_PATH, json.dumps(doc).encode())
                return attempts
        except Conflict:
            return 0


__all__ = ["AzureNotifications", "STATE_PATH"]
