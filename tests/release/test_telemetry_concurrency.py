"""Telemetry from several gateway processes at once: no row lost, the rollups agree with the
rows, and another process reads ``stats()`` without error while they write.

Four processes each write K records through ``TelemetryWriter`` (the gateways' batching
writer) into one fresh ``telemetry.db`` — created by whichever process comes first — over
the same ten minutes, so that they fold into the same rollup rows concurrently. A fifth
process reads ``LocalTelemetry.stats()`` in a loop; the writers pause half-way until it has
seen a part of their rows, so a read while writing is certain, not a matter of timing.
"""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from services.entities import TimeWindow

WRITERS, K = 4, 2_000
N = WRITERS * K
T0 = 1_767_600_000.0                        # a minute boundary, in the past
ENDPOINTS = ("alpha", "beta")
STATUSES = (200, 200, 200, 200, 200, 200, 201, 404, 500, 0)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


# whole ten minutes plus ragged edges: rollups and raw rows both in play
WINDOW = TimeWindow(utc(T0 - 30.5), utc(T0 + 630.5), 60)


def record_of(writer: int, i: int):
    from services.local.telemetry_store import RequestRecord
    status = STATUSES[(i * 7 + writer) % len(STATUSES)]
    return RequestRecord(
        ts=T0 + ((i * 37 + writer * 11) % 6000) / 10, endpoint=ENDPOINTS[i % 2],
        deployment=None if status == 0 else ("blue", "green")[writer % 2],
        model=None if status == 0 else f"m:{writer % 3 + 1}", status=status,
        latency_ms=1.0 + (i * 13 + writer) % 200 * 0.7, request_id=f"w{writer}-{i}",
        request_body='{"data": [[1, 2, 3]]}', response_body='{"predictions": [4.5]}',
        error=None if status < 400 and status else f"error {status}")


def _writer(root: str, writer: int, seen_partial, done) -> None:
    from services.local.telemetry_spool import TelemetryWriter
    out = TelemetryWriter(Path(root), f"writer{writer}", flush_interval_s=0.01, batch=200)
    for i in range(K):
        out.record(record_of(writer, i))
        if i == K // 2:
            seen_partial.wait(60)  # let the reader see the rows half-written
    out.close(timeout_s=120)
    done.put(writer)


def _reader(root: str, stop, seen_partial, results) -> None:
    from services.local.logs import LocalLogs
    from services.local.telemetry import LocalTelemetry
    totals, errors = [], []
    try:
        telemetry = LocalTelemetry(Path(root), LocalLogs(Path(root)))
        while not stop.is_set():
            total = sum(s.requests for s in telemetry.stats(WINDOW))
            if totals and total < totals[-1]:
                errors.append(f"the total went down: {totals[-1]} -> {total}")
            totals.append(total)
            if 0 < total < N:
                seen_partial.set()
            time.sleep(0.005)
    except Exception as e:  # any error is the finding: report it, do not hang the test
        errors.append(f"{type(e).__name__}: {e}")
    results.put((totals, errors))


def test_concurrent_writers_lose_no_row_and_rollups_agree(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    ctx = mp.get_context("fork")
    stop, seen_partial = ctx.Event(), ctx.Event()
    results, done = ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(root), stop, seen_partial, results))
    writers = [ctx.Process(target=_writer, args=(str(root), w, seen_partial, done)) for w in range(WRITERS)]
    reader.start()
    for p in writers:
        p.start()
    try:
        finished = sorted(done.get(timeout=180) for _ in writers)
        for p in writers:
            p.join(30)
    finally:
        stop.set()
        totals, errors = results.get(timeout=60)
        reader.join(30)
        for p in [reader, *writers]:
            if p.is_alive():
                p.kill()
    assert finished == list(range(WRITERS)) and all(p.exitcode == 0 for p in writers)
    assert reader.exitcode == 0 and not errors, errors
    assert any(0 < t < N for t in totals), "the reader never saw the rows being written"

    conn = sqlite3.connect(root / "telemetry.db")
    q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
    # every row, once
    from services.local.telemetry_store import SLOWEST_K, decode_hist, decoded_rows
    rows = decoded_rows(conn)
    assert len(rows) == N and {r["request_id"] for r in rows} == {f"w{w}-{i}" for w in range(WRITERS) for i in range(K)}
    assert {r["request_body"] for r in rows} == {'{"data": [[1, 2, 3]]}'}  # payloads kept, and read back
    for span in (60, 3600):  # aggregates = the rows, minute by minute and hour by hour
        raw = q(f"SELECT CAST(ts / {span} AS INTEGER) * {span}, series, COUNT(*), SUM(status >= 500 OR status = 0),"
                f" SUM(status >= 400 AND status < 500), SUM(latency_ms) FROM requests GROUP BY 1, 2 ORDER BY 1, 2")
        rollup = q(f"SELECT start, series, requests, failures, client_errors, latency_sum FROM rollup WHERE span = {span}"
                   " ORDER BY 1, 2")
        assert [r[:5] for r in rollup] == [r[:5] for r in raw] and sum(r[2] for r in rollup) == N
        assert all(np.isclose(a[5], b[5]) for a, b in zip(rollup, raw))
        for requests, hist in q(f"SELECT requests, hist FROM rollup WHERE span = {span}"):
            assert int(decode_hist(hist).sum()) == requests
        status_raw = q(f"SELECT CAST(ts / {span} AS INTEGER) * {span}, series, status, COUNT(*) FROM requests"
                       " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
        assert q(f"SELECT start, series, status, requests FROM rollup_status WHERE span = {span}"
                 " ORDER BY 1, 2, 3") == status_raw
        errors_raw = q(f"SELECT CAST(ts / {span} AS INTEGER) * {span}, series, status, error, COUNT(*), MIN(ts),"
                       f" MAX(ts) FROM requests WHERE status >= 400 OR status = 0 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        assert q(f"SELECT start, series, status, error, requests, first_ts, last_ts FROM rollup_errors"
                 f" WHERE span = {span} ORDER BY 1, 2, 3, 4") == errors_raw
        for start, series in q(f"SELECT DISTINCT start, series FROM rollup WHERE span = {span}"):
            slowest = sorted((r[0] for r in q(f"SELECT latency_ms FROM rollup_slowest WHERE span = {span} AND"
                                               f" start = {start} AND series = {series}")), reverse=True)
            assert slowest == [r[0] for r in q(
                f"SELECT latency_ms FROM requests WHERE series = {series} AND ts >= {start} AND ts < {start + span}"
                f" ORDER BY latency_ms DESC LIMIT {SLOWEST_K}")]
    conn.close()

    # and the service says the same
    from services.local.logs import LocalLogs
    from services.local.telemetry import LocalTelemetry
    telemetry = LocalTelemetry(root, LocalLogs(root))
    stats = telemetry.stats(WINDOW)
    assert sum(s.requests for s in stats) == N and totals[-1] <= N
    want_failures = sum(1 for w in range(WRITERS) for i in range(K)
                        if STATUSES[(i * 7 + w) % len(STATUSES)] in (500, 0))
    assert sum(s.failures for s in stats) == want_failures
    assert int(telemetry.series(WINDOW)["requests"].sum()) == N
    telemetry.close()
