"""Append-only event log of the local workspace (the audit trail).

The table refuses UPDATE and DELETE with triggers; records are written inside
the same transaction as the change they describe, so the trail never disagrees
with the state.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Mapping

from ..entities import AuditRecord
from ..permissions import canonical
from .db import Database, parse_ts, utcnow


def record(conn: sqlite3.Connection, actor: str, action: str, target: str, *, role: str,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           comment: str = "") -> None:
    """Append one record inside the caller's transaction. ``role`` is the one ``authorize`` returned;
    the actor is stored in its canonical spelling, so ``Lee@`` and ``lee@`` are one person in the trail."""
    conn.execute(
        "INSERT INTO events (at, actor, role, action, target, before_json, after_json, comment) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (utcnow(), canonical(actor), role, action, target,
         json.dumps(before) if before is not None else None,
         json.dumps(after) if after is not None else None, comment),
    )


class LocalAudit:
    """``AuditLog``: the trail of the workspace's database."""

    def __init__(self, db: Database):
        self.db = db

    def record(self, actor: str, action: str, target: str, *, role: str,
               before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
               comment: str = "") -> None:
        """One record in a transaction of its own (for a change that is not a row of this database)."""
        with self.db.write() as conn:
            record(conn, actor, action, target, role=role, before=before, after=after, comment=comment)

    def record_once(self, actor: str, action: str, target: str, *, role: str, after: Mapping[str, Any],
                    comment: str = "", usual: bool = False) -> bool:
        """``record`` unless the latest ``action`` record already says ``after`` (a state noticed
        each time a process starts is audited when it changes, not at every start); a ``usual``
        state is recorded only as a change back from another. Reading first: an unchanged state
        never takes the write lock."""
        last = self.db.query("SELECT after_json FROM events WHERE action = ? ORDER BY id DESC LIMIT 1", (action,))
        if (not last and usual) or (last and last[0]["after_json"]
                                    and json.loads(last[0]["after_json"]) == dict(after)):
            return False
        self.record(actor, action, target, role=role, after=after, comment=comment)
        return True

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        sql = "SELECT * FROM events ORDER BY id DESC"
        rows = self.db.query(sql + " LIMIT ?", (limit,)) if limit else self.db.query(sql)
        return [AuditRecord(r["id"], parse_ts(r["at"]), r["actor"], r["role"], r["action"], r["target"],
                            json.loads(r["before_json"]) if r["before_json"] else None,
                            json.loads(r["after_json"]) if r["after_json"] else None, r["comment"])
                for r in rows]
