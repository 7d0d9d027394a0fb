"""Retention of request telemetry: raw rows, then per-minute, then hourly aggregates, pruned.

``[telemetry]`` in ``tollgate.toml`` (``services.policy.TelemetryPolicy``) says how long each
level is kept (default 7 / 30 / 365 days). The supervisor calls ``maintain`` every
``TICK_S``: it folds the write-ahead spools of gateways that died (``telemetry_spool``), then
prunes, oldest first, for at most ``budget_s`` per call:

* raw rows a whole UTC day at a time, once the day is older than ``raw_days``: first the
  day's request ids go into a Bloom filter (``pruned_days``, kept as long as the per-minute
  aggregates), so that a lookup of a pruned id says it was pruned and when (wrongly for about
  one unknown id in a thousand per day kept), then the rows are deleted ``BATCH`` at a time,
  each batch its own short write transaction, then the payload blocks no row points to;
* per-minute and hourly aggregates an hour / a day at a time past ``minute_days`` / ``hour_days``.

Nothing the retained window needs goes: a level is pruned only past its own horizon, and
``retained`` tells the readers where each level now starts (``telemetry.plan`` reads a level
only from there; the drift check reads the retained raw rows and says when it was cut).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .db import Database
from .telemetry_store import HOUR, MINUTE, open_telemetry, rid_of, unpack_id
from .telemetry_spool import fold_spools

DAY = 86_400
BATCH = 2000                 # rows per delete transaction: a few milliseconds of the write lock
PAUSE_S = 0.005              # between batches, so gateways' writes interleave
TICK_S = 60.0                # how often the supervisor calls maintain()
FALSE_POSITIVE = 0.001       # of a pruned day's Bloom filter


class Bloom:
    """A Bloom filter of 64-bit request keys (``rid_of``): k probes by double hashing."""

    def __init__(self, bits: np.ndarray, k: int):
        self.bits, self.k = bits, k

    @staticmethod
    def sized(n: int) -> "Bloom":
        m = max(64, int(-n * math.log(FALSE_POSITIVE) / math.log(2) ** 2))
        k = max(1, round(m / max(n, 1) * math.log(2)))
        return Bloom(np.zeros((m + 7) // 8, dtype=np.uint8), k)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        keys = keys.astype(np.uint64)
        h1, h2 = keys & np.uint64(0xFFFFFFFF), (keys >> np.uint64(32)) | np.uint64(1)
        m = np.uint64(len(self.bits) * 8)
        return np.stack([(h1 + np.uint64(i) * h2) % m for i in range(self.k)])

    def add(self, keys: np.ndarray) -> None:
        pos = self._positions(keys).ravel()
        np.bitwise_or.at(self.bits, (pos >> np.uint64(3)).astype(np.int64),
                         (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)))

    def __contains__(self, key: int) -> bool:
        pos = self._positions(np.array([key], dtype=np.int64).view(np.uint64)).ravel()
        return bool(np.all(self.bits[(pos >> np.uint64(3)).astype(np.int64)]
                           & (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))))

    def to_bytes(self) -> bytes:
        return bytes([self.k]) + self.bits.tobytes()

    @staticmethod
    def from_bytes(blob: bytes) -> "Bloom":
        return Bloom(np.frombuffer(blob[1:], dtype=np.uint8).copy(), blob[0])


def retained(db: Database) -> dict[str, float]:
    """Where each level ('raw', 'minute', 'hour') starts now; a level not pruned yet is absent."""
    return {level: since for level, since in db.query("SELECT level, since FROM retained")}


def pruned_when(db: Database, request_id: str) -> tuple[float, float] | None:
    """(day, pruned at) of the pruned day whose filter holds ``request_id``, newest first; None if none."""
    key = rid_of(request_id)
    for day, at, blob in db.query("SELECT day, pruned_at, bloom FROM pruned_days ORDER BY day DESC"):
        if key in Bloom.from_bytes(blob):
            return day, at
    return None


def maintain(root: Path, policy, state: dict, budget_s: float = 2.0, now: float | None = None) -> dict:
    """The supervisor's telemetry tick: fold orphaned spools, then prune within ``budget_s``.
    ``state`` keeps the open file between calls. Returns what it did."""
    db = state.get("db") or state.setdefault("db", open_telemetry(root))
    folded = fold_spools(root, db)
    done = prune(db, policy.telemetry, now=now, budget_s=budget_s)
    return {"folded": folded, **done}


def prune(db: Database, rules, now: float | None = None, budget_s: float = 2.0) -> dict:
    """Delete what is past each level's horizon, oldest first, until done or ``budget_s`` is spent."""
    now = time.time() if now is None else now
    deadline = time.monotonic() + budget_s
    done = {"raw_rows": 0, "minute_rows": 0, "hour_rows": 0}
    raw_horizon = math.floor((now - rules.raw_days * DAY) / DAY) * DAY  # whole days only
    done["raw_rows"] = _prune_raw(db, raw_horizon, deadline)
    for level, span, days in (("minute", MINUTE, rules.minute_days), ("hour", HOUR, rules.hour_days)):
        step = HOUR if span == MINUTE else DAY
        horizon = math.floor((now - days * DAY) / step) * step
        done[f"{level}_rows"] = _prune_aggregates(db, level, span, step, horizon, deadline)
    with db.write() as c:  # a pruned day is "pruned" for as long as its minutes are kept
        c.execute("DELETE FROM pruned_days WHERE day + ? <= ?", (DAY, now - rules.minute_days * DAY))
    return done


def _prune_raw(db: Database, horizon: float, deadline: float) -> int:
    deleted = 0
    while time.monotonic() < deadline:
        first = db.one("SELECT MIN(ts) FROM requests")[0]
        if first is None or first >= horizon:
            break
        day = math.floor(first / DAY) * DAY
        end = min(day + DAY, horizon)
        _remember(db, day, end)
        while time.monotonic() < deadline:
            with db.write() as c:
                n = c.execute("DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE ts >= ? AND ts < ?"
                              " LIMIT ?)", (day, end, BATCH)).rowcount
            deleted += n
            if n < BATCH:
                break
            time.sleep(PAUSE_S)
        else:
            break
        _drop_unreferenced_payloads(db, deadline)
        _set_retained(db, "raw", end)
    return deleted


def _remember(db: Database, day: float, end: float) -> None:
    """Put the request ids of [day, end) into the day's Bloom filter: read first, then written in one
    short transaction; a day pruned over several ticks reads only the rows it has not remembered yet
    (rows stored late for a pruned day, by a folded spool, have higher row ids)."""
    old = db.one("SELECT requests, remembered_id, bloom FROM pruned_days WHERE day = ?", (day,))
    after = old[1] if old is not None else 0
    rows = db.query("SELECT id, request_id FROM requests WHERE ts >= ? AND ts < ? AND id > ?", (day, end, after))
    if old is not None and not rows:
        return
    keys = np.fromiter((rid_of(unpack_id(r[1])) for r in rows), dtype=np.int64, count=len(rows))
    bloom = Bloom.from_bytes(old[2]) if old is not None else Bloom.sized(len(keys))
    bloom.add(keys.view(np.uint64))
    with db.write() as c:
        c.execute("INSERT OR REPLACE INTO pruned_days (day, requests, remembered_id, pruned_at, bloom)"
                  " VALUES (?, ?, ?, ?, ?)", (day, (old[0] if old else 0) + len(keys),
                                              max([after, *(r[0] for r in rows)]), time.time(), bloom.to_bytes()))


def _drop_unreferenced_payloads(db: Database, deadline: float) -> None:
    oldest = db.one("SELECT MIN(block) FROM requests WHERE block IS NOT NULL")[0]
    while time.monotonic() < deadline:
        with db.write() as c:
            n = c.execute("DELETE FROM payloads WHERE id IN (SELECT id FROM payloads WHERE id < ? LIMIT ?)",
                          (oldest if oldest is not None else 2**62, BATCH // 10)).rowcount
        if n < BATCH // 10:
            return
        time.sleep(PAUSE_S)


def _prune_aggregates(db: Database, level: str, span: int, step: int, horizon: float, deadline: float) -> int:
    """Delete ``span`` aggregates before ``horizon``, ``step`` seconds of them per transaction."""
    since = retained(db).get(level)
    if since is None:
        first = db.one("SELECT MIN(start) FROM rollup WHERE span = ?", (span,))[0]
        if first is None:
            return 0
        since = math.floor(first / step) * step
    deleted, series = 0, [r[0] for r in db.query("SELECT id FROM series")]
    while since < horizon and time.monotonic() < deadline:
        end = min(since + step, horizon)
        with db.write() as c:  # by series: every aggregate table's key starts (span, series, start)
            for table in ("rollup", "rollup_status", "rollup_errors", "rollup_slowest"):
                deleted += sum(c.execute(f"DELETE FROM {table} WHERE span = ? AND series = ? AND start >= ?"
                                         f" AND start < ?", (span, s, since, end)).rowcount for s in series)
        _set_retained(db, level, end)
        since = end
        time.sleep(PAUSE_S)
    return deleted


def _set_retained(db: Database, level: str, since: float) -> None:
    with db.write() as c:
        c.execute("INSERT INTO retained (level, since) VALUES (?, ?) ON CONFLICT (level)"
                  " DO UPDATE SET since = MAX(since, excluded.since)", (level, since))
