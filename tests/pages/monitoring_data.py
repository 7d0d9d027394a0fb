"""Synthetic telemetry, logs and release events for the monitoring pages' tests.

Written straight into a workspace copy, as the gateways and inference servers write
them (``telemetry_store.append``, ``<endpoint>/<source>.log`` in the inference
server's line format, audit records), so no endpoint has to run. Every number a
test asserts comes from what was written here.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from services.local.logfmt import REQUEST_ID_SUFFIX
from services.local.telemetry_store import RequestRecord, append, open_telemetry
from services.local.workspace import LocalWorkspace

MODEL = "diabetes-regressor"
V1, V2 = f"{MODEL}:1", f"{MODEL}:2"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]
PROMOTER = "qa@contoso.com"


@dataclass
class Seeded:
    """What was written: counts per (deployment, model), a few ids worth looking up."""
    now: datetime
    counts: dict[tuple[str | None, str | None], dict[str, int]] = field(default_factory=dict)
    sample_id: str = ""           # a 200 of v2 with a known payload and log lines
    sample_body: str = ""
    sample_prediction: float = 0.0
    error_id: str = ""            # the newest 500 (the top error's sample)
    error_message: str = ""
    old_id: str = ""              # 2 hours ago: outside the 1h window, inside 6h
    promote_at: datetime | None = None

    def count(self, deployment, model, what: str = "requests") -> int:
        return self.counts[(deployment, model)][what]


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") + f",{at.microsecond // 1000:03d}"


def log_line(at: datetime, level: str, logger: str, message: str, request_id: str | None = None) -> str:
    suffix = f"{REQUEST_ID_SUFFIX}{request_id}" if request_id else ""
    return f"{stamp(at)} {level} [4242] {logger} - {message}{suffix}"


def seed_monitoring(root: Path, endpoint: str = "production", now: datetime | None = None,
                    extra_log_lines: list[tuple[str, str]] = ()) -> Seeded:
    """Forty minutes of production traffic: v1 on blue until a promote 20 minutes ago, then
    v2 on green for 15 minutes; 500s on v1, 400s on both, one request nobody answered, one old request.
    ``extra_log_lines``: (source, message) lines added to the logs a minute ago."""
    now = now or datetime.now(timezone.utc)
    rnd = random.Random(7)
    seeded = Seeded(now=now)
    records: list[RequestRecord] = []
    logs: dict[str, list[tuple[datetime, str]]] = {"blue": [], "green": [], "gateway": []}
    promote_at = now - timedelta(minutes=20)
    seeded.promote_at = promote_at

    def add(at: datetime, deployment: str | None, model: str | None, status: int, latency: float, rid: str,
            body: str, response: str | None, error: str | None) -> None:
        records.append(RequestRecord(at.timestamp(), endpoint, deployment, model, status, latency, rid, body,
                                     response, error))
        c = seeded.counts.setdefault((deployment, model), {"requests": 0, "failures": 0, "client_errors": 0})
        c["requests"] += 1
        c["failures"] += status >= 500 or status == 0
        c["client_errors"] += 400 <= status < 500
        started = at - timedelta(milliseconds=latency)
        if deployment:
            logs[deployment].append((started + timedelta(milliseconds=latency / 2),
                                     log_line(started, "I", "azmlinfsrv", f"POST /score {status}", rid)))
        if status >= 400:
            logs["gateway"].append((at, log_line(at, "W", "gateway", f"POST /score {status}: {error}", rid)))

    good = json.dumps({"data": [ROW]})
    # v1 on blue: before the promote (one request every 15 s), 3 server errors, 2 bad payloads
    start_v1 = promote_at - timedelta(seconds=15 * 90)
    for i in range(90):
        at = start_v1 + timedelta(seconds=15 * i + 1)
        rid = f"req-v1-{i:04d}"
        if i in (30, 60, 89):
            msg = "ValueError: Input contains NaN, infinity or a value too large"
            add(at, "blue", V1, 500, 40 + i, rid, good, json.dumps({"error": msg}), msg)
            seeded.error_id, seeded.error_message = rid, msg
        elif i in (10, 50):
            msg = "expected 10 features, got 3"
            add(at, "blue", V1, 400, 2.0, rid, '{"data": [[1, 2, 3]]}', json.dumps({"error": msg}), msg)
        else:
            add(at, "blue", V1, 200, rnd.uniform(3, 8), rid, good, json.dumps({"predictions": [150.0 + i]}), None)
    # v2 on green after the promote: one request every 15 s, one bad payload
    for i in range(60):
        at = promote_at + timedelta(seconds=15 * i + 1)
        rid = f"req-v2-{i:04d}"
        if i == 5:
            msg = "expected 10 features, got 3"
            add(at, "green", V2, 400, 2.5, rid, '{"data": [[1, 2, 3]]}', json.dumps({"error": msg}), msg)
        else:
            add(at, "green", V2, 200, rnd.uniform(8, 14), rid, good, json.dumps({"predictions": [160.0 + i]}), None)
    seeded.sample_id = "req-v2-0042"
    seeded.sample_body = good
    seeded.sample_prediction = 160.0 + 42
    # a request nobody answered (every deployment down for a moment)
    add(promote_at - timedelta(seconds=30), None, None, 0, 5003.0, "req-none-0001", good, None,
        "no deployment answered: connection refused")
    # two hours ago: outside the default 1h window
    seeded.old_id = "req-old-0001"
    records.append(RequestRecord((now - timedelta(hours=2)).timestamp(), endpoint, "blue", V1, 200, 4.0,
                                 seeded.old_id, good, json.dumps({"predictions": [1.0]}), None))

    append(open_telemetry(root), sorted(records, key=lambda r: r.ts))

    for source, message in extra_log_lines:
        logs[source].append((now - timedelta(minutes=1), log_line(now - timedelta(minutes=1), "I", "azmlinfsrv",
                                                                  message)))
    folder = Path(root) / "endpoints" / endpoint
    folder.mkdir(parents=True, exist_ok=True)
    for source, lines in logs.items():
        lines.sort(key=lambda item: item[0])
        with open(folder / f"{source}.log", "a") as f:
            f.writelines(text + "\n" for _, text in lines)

    ws = LocalWorkspace(root)
    try:
        with ws.db.write() as c:  # as audit.record writes them, at the time traffic moved
            for action, target, before, after, comment in [
                    ("promote.started", f"{endpoint}/green", {"traffic": {"blue": 100}},
                     {"deployment": "green", "model": V2, "traffic": 0}, ""),
                    ("promote", endpoint, {"traffic": {"blue": 100}}, {"traffic": {"blue": 0, "green": 100}},
                     "v2 approved by lead")]:
                c.execute("INSERT INTO events (at, actor, role, action, target, before_json, after_json, comment)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (promote_at.isoformat(timespec="microseconds"), PROMOTER, "qa", action, target,
                           json.dumps(before), json.dumps(after), comment))
    finally:
        ws.close()
    return seeded


def seed_drift(root: Path, endpoint: str = "staging", model: str = V2, rows: int = 600, shift: dict | None = None,
               minutes: int = 50, now: datetime | None = None) -> list[str]:
    """``rows`` answered requests to ``endpoint`` served by ``model`` over the last ``minutes``,
    each one row of that version's training data by feature name (``"columns"``), with
    ``shift`` (feature -> amount) added. Returns the request ids."""
    now = now or datetime.now(timezone.utc)
    ws = LocalWorkspace(root)
    try:
        name, _, version = model.rpartition(":")
        mv = ws.models.get(name, int(version))
        frame = ws.datasets.load(mv.dataset, mv.dataset_version)
    finally:
        ws.close()
    features = [c for c in frame.columns if c != "target"]
    sample = frame[features].sample(n=rows, replace=rows > len(frame), random_state=11).reset_index(drop=True)
    for feature, amount in (shift or {}).items():
        sample[feature] = sample[feature] + amount
    step = minutes * 60 / rows
    records, ids = [], []
    for i, row in sample.iterrows():
        rid = f"drift-{endpoint}-{i:05d}"
        at = now - timedelta(seconds=minutes * 60 - i * step)
        body = json.dumps({"columns": features, "data": [[float(v) for v in row]]})
        records.append(RequestRecord(at.timestamp(), endpoint, "blue", model, 200, 6.0, rid, body,
                                     json.dumps({"predictions": [150.0]}), None))
        ids.append(rid)
    append(open_telemetry(root), records)
    return ids
