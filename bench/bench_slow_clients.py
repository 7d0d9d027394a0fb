"""Slow clients against a local endpoint: are they recorded as a slow model?

    .venv/bin/python bench/bench_slow_clients.py --source SEEDED_WORKSPACE [--code DIR]
        [--slow 95] [--byte-every-s 0.1] [--stalled 20] [--duration 20]

On a copy of a seeded workspace (``--source``, e.g. the tests' demo template) with the
champion deployed to production, in one run:

* **steady**: 10 requests/s of ordinary clients for ``--duration`` s;
* **slow**: ``--slow`` clients that each send a whole request (head at once, then the
  62-byte body one byte every ``--byte-every-s`` s, ~6 s: a slow line, not a dead one);
* **stalled**: ``--stalled`` clients that send the head and 10 bytes of a 62-byte body,
  then nothing (slowloris), for up to 30 s;

the slow and stalled ones starting one after another over the first half of the run.

Printed: what each kind of client got (statuses, client-side wall time), what the
telemetry recorded for each kind (p50/p95 latency, p95 upload time when recorded), and
the production endpoint's health as Tollgate judges it ("degraded" when p95 exceeds
``[health]``'s limit). ``--code DIR`` imports Tollgate from another checkout (e.g. an
export of an older commit), whose gateway then serves: before and after on one machine.
Writes ``bench/out/slow_clients.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BODY = b'{"data": [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]}'


def head(port: int, key: str, client_id: str) -> bytes:
    return (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nx-request-id: {client_id}\r\nContent-Length: {len(BODY)}\r\n"
            f"Connection: close\r\n\r\n").encode()


async def client(port: int, key: str, client_id: str, parts: list[bytes], pause_s: float, start_at_s: float,
                 give_up_s: float = 30) -> tuple[str, int | None, float]:
    await asyncio.sleep(start_at_s)
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head(port, key, client_id))
        for part in parts:
            await asyncio.sleep(pause_s)
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(part)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), give_up_s)
        writer.close()
        status = int(line.split()[1]) if line else None
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        status = None
    return client_id, status, time.monotonic() - started


async def scenario(port: int, key: str, args) -> list[tuple[str, str, int | None, float]]:
    run = uuid.uuid4().hex[:6]
    tasks = []
    spread = args.duration / 2  # the slow and stalled clients start over the first half of the run
    for i in range(int(args.duration * 10)):  # steady: the whole body at once, 10/s
        tasks.append(("steady", asyncio.create_task(client(port, key, f"steady-{run}-{i}", [BODY], 0, i / 10))))
    for i in range(args.slow):
        tasks.append(("slow", asyncio.create_task(client(port, key, f"slow-{run}-{i}",
                                                         [BODY[j:j + 1] for j in range(len(BODY))],
                                                         args.byte_every_s, i * spread / args.slow))))
    for i in range(args.stalled):
        tasks.append(("stalled", asyncio.create_task(client(port, key, f"stalled-{run}-{i}", [BODY[:10]], 0.1,
                                                            i * spread / args.stalled))))
    return [(kind, *(await task)) for kind, task in tasks]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="a seeded local workspace to copy")
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--slow", type=int, default=95)
    ap.add_argument("--byte-every-s", type=float, default=0.1)
    ap.add_argument("--stalled", type=int, default=20)
    ap.add_argument("--duration", type=float, default=20)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve()))
    from services.local.workspace import LocalWorkspace
    from services.permissions import SYSTEM_ACTOR
    from services.telemetry import endpoints_health

    path = OUT / "ws-slow-clients"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(args.source, path, ignore=shutil.ignore_patterns("*.lock", "*.pid", ".seeded", "endpoints"))
    ws = LocalWorkspace(path)
    try:
        ws.releases.deploy(ws.policy.model_name, ws.models.champion(ws.policy.model_name).version, "production",
                           SYSTEM_ACTOR)
        ep = ws.endpoints.get("production")
        key = ws.endpoints.keys("production", SYSTEM_ACTOR)[0]
        port = int(ep.scoring_uri.split(":")[2].split("/")[0])
        print(f"code {args.code}; production on 127.0.0.1:{port}; load average {os.getloadavg()[0]:.2f}")
        results = asyncio.run(scenario(port, key, args))
        time.sleep(1)  # the telemetry writer's last batch
        health = next(h for h in endpoints_health(ws) if h.endpoint == "production")
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)
        ws.close()

    conn = sqlite3.connect(path / "telemetry.db")
    columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    if "rid" in columns:  # the compact store (issue 15): its own decoding of ids, series and payloads
        from services.local.telemetry_store import decoded_rows
        plain = decoded_rows(conn)
    else:
        conn.row_factory = sqlite3.Row
        plain = [dict(r) for r in conn.execute("SELECT * FROM requests")]
    id_column = "client_request_id" if "client_request_id" in columns else "request_id"
    rows = {r[id_column]: r for r in plain}
    report = {"code": str(args.code), "health": {"status": str(getattr(health.status, "value", health.status)),
                                                 "reasons": list(getattr(health, "reasons", []))}}
    for kind in ("steady", "slow", "stalled"):
        mine = [r for r in results if r[0] == kind]
        recorded = [rows[cid] for _, cid, _, _ in mine if cid in rows]
        latency = [r["latency_ms"] for r in recorded]
        upload = [r["upload_ms"] for r in recorded if r.get("upload_ms") is not None]
        report[kind] = {"clients": len(mine), "statuses": dict(Counter(str(s) for _, _, s, _ in mine)),
                        "client_wall_p50_s": percentile([w for *_, w in mine], 50),
                        "recorded": len(recorded), "latency_p50_ms": percentile(latency, 50),
                        "latency_p95_ms": percentile(latency, 95), "upload_p95_ms": percentile(upload, 95)}
        r = report[kind]
        fmt = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
        print(f"  {kind:8} {r['clients']:4} clients  got {r['statuses']}  wall p50 {r['client_wall_p50_s']:.1f} s  "
              f"recorded {r['recorded']}: latency p50 {fmt(r['latency_p50_ms'])} ms, p95 "
              f"{fmt(r['latency_p95_ms'])} ms; upload p95 {fmt(r['upload_p95_ms'])} ms")
    print(f"  production health: {report['health']['status']} {report['health']['reasons']}")
    (OUT / "slow_clients.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
