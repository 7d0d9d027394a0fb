"""Synthetic request telemetry: what three endpoints' gateways record over some days.

    from bench.telemetry_data import generate, write
    data = generate(1_000_000, days=7, seed=7)          # numpy columns, deterministic by seed
    seconds = write(open_telemetry(root), data)         # through telemetry_store.append, in batches

The story the rows tell (so that charts and queries have something to find):

* ``production`` (75 % of the traffic): deployment ``blue`` serves
  ``diabetes-regressor:1``; 6 hours before the middle of the span a canary
  ``green`` serving ``:2`` takes 10 %; at the middle ``:2`` is promoted (100 %
  to ``green``). Two hours after the promote, a 15-minute incident: a third of
  the requests fail with 503 (no healthy deployment).
* ``staging`` (20 %): ``candidate`` serves ``:2``, then ``:3`` from the middle.
* ``sandbox`` (5 %): ``sandbox`` serves ``:3`` throughout, with more client errors.

Traffic follows a day/night cycle (4x between the quietest and busiest hour),
latencies are lognormal per model version (medians 9 / 7 / 12 ms) with a small
slow tail, ~2 % of requests fail (5xx, a few distinct messages; a few with no
deployment answering, status 0, no model) and ~1 % are client errors (4xx).
Request bodies are ``{"data": [[...], ...]}`` with 1-5 rows of the ten
diabetes features (~150 bytes), responses ``{"predictions": [...]}`` or
``{"error": "..."}``. Timestamps are sorted, as gateways write them.

Everything is drawn from one ``numpy`` generator seeded by ``seed``: the same
arguments give the same rows. The columns are kept as arrays (``Synthetic``)
so that a test or the benchmark can compute the expected answers itself.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.local.telemetry_store import RequestRecord, append  # noqa: E402

MODEL = "diabetes-regressor"
ENDPOINTS = ("production", "staging", "sandbox")
ENDPOINT_SHARE = (0.75, 0.20, 0.05)
MODELS = (f"{MODEL}:1", f"{MODEL}:2", f"{MODEL}:3")
# deployments, as indexes into DEPLOYMENTS (-1: none answered)
DEPLOYMENTS = ("blue", "green", "candidate", "sandbox")
# lognormal latency per model version: median ms, sigma
LATENCY = {0: (9.0, 0.45), 1: (7.0, 0.40), 2: (12.0, 0.60)}
SLOW_TAIL = 0.005                 # requests that also wait for a GC pause / cold cache (x5-x20)

# (status, message, share among failures) — 5xx and 0 are failures, 4xx client errors
SERVER_ERRORS = (
    (500, "model raised ValueError: Input X contains NaN", 0.40),
    (502, "deployment closed the connection mid-answer", 0.25),
    (504, "deployment did not answer within 60 s", 0.15),
    (503, "no healthy deployment to route to", 0.15),
    (0, "connection refused by every deployment", 0.05),
)
CLIENT_ERRORS = (
    (400, "expected 10 features per row, got 9", 0.45),
    (401, "missing or invalid key: send 'Authorization: Bearer <endpoint key>'", 0.30),
    (413, "payload exceeds the limit of 1048576 bytes", 0.10),
    (422, "'data' must be a list of rows", 0.15),
)
FAILURE_RATE = 0.018              # plus the incident: ~2 % over the week
CLIENT_ERROR_RATE = 0.01
SANDBOX_CLIENT_ERROR_RATE = 0.05

# the ten diabetes features: mean, sd, decimals (age, sex, bmi, bp, s1..s6 of the raw data set)
FEATURES = ((48.5, 13.1, 0), (1.5, 0.5, 0), (26.4, 4.4, 1), (94.6, 13.8, 2), (189.1, 34.6, 0),
            (115.4, 30.4, 1), (49.8, 12.9, 1), (4.1, 1.3, 2), (4.64, 0.52, 4), (91.3, 11.5, 0))


@dataclass
class Synthetic:
    """The records as columns (one entry per request, sorted by time)."""
    start: float                  # epoch seconds of the span
    end: float
    ts: np.ndarray                # float64 epoch seconds
    endpoint: np.ndarray          # index into ENDPOINTS
    deployment: np.ndarray        # index into DEPLOYMENTS, -1 = none
    model: np.ndarray             # index into MODELS, -1 = none
    status: np.ndarray            # int
    latency_ms: np.ndarray
    error: np.ndarray             # index into ERRORS, -1 = none
    rows_per_request: np.ndarray  # 1..5
    features: np.ndarray          # (sum(rows_per_request), 10) float
    request_ids: list[str]
    events: list[tuple[float, str]]   # (epoch seconds, what happened): deploy / promote / incident
    _offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)

    # --- decoded columns, for expected answers --------------------------------

    def endpoint_names(self) -> np.ndarray:
        return np.array(ENDPOINTS, dtype=object)[self.endpoint]

    def model_names(self) -> np.ndarray:
        return np.array((*MODELS, None), dtype=object)[self.model]          # -1 -> None

    def deployment_names(self) -> np.ndarray:
        return np.array((*DEPLOYMENTS, None), dtype=object)[self.deployment]

    def error_messages(self) -> np.ndarray:
        return np.array((*ERRORS, None), dtype=object)[self.error]

    # --- records ------------------------------------------------------------------

    def records(self, lo: int = 0, hi: int | None = None) -> list[RequestRecord]:
        """``RequestRecord`` objects for rows ``lo:hi`` (bodies formatted here, not kept)."""
        hi = len(self) if hi is None else hi
        if self._offsets is None:
            self._offsets = np.concatenate([[0], np.cumsum(self.rows_per_request)])
        offsets = self._offsets
        feats = self.features[offsets[lo]:offsets[hi]].tolist()
        ts, status, latency = self.ts[lo:hi].tolist(), self.status[lo:hi].tolist(), self.latency_ms[lo:hi].tolist()
        eps, deps, models = self.endpoint[lo:hi].tolist(), self.deployment[lo:hi].tolist(), self.model[lo:hi].tolist()
        errors, nrows = self.error[lo:hi].tolist(), self.rows_per_request[lo:hi].tolist()
        out, at = [], 0
        for i in range(hi - lo):
            rows = feats[at:at + nrows[i]]
            at += nrows[i]
            request = '{"data": [' + ", ".join(_ROW % tuple(r) for r in rows) + "]}"
            if errors[i] >= 0:
                response = '{"error": "' + ERRORS[errors[i]].replace('"', '\\"') + '"}'
            else:
                response = '{"predictions": [' + ", ".join("%.2f" % (60 + r[2] * 4.1 + r[8] * 11.3)
                                                             for r in rows) + "]}"
            out.append(RequestRecord(
                ts=ts[i], endpoint=ENDPOINTS[eps[i]], deployment=DEPLOYMENTS[deps[i]] if deps[i] >= 0 else None,
                model=MODELS[models[i]] if models[i] >= 0 else None, status=status[i], latency_ms=latency[i],
                request_id=self.request_ids[lo + i], request_body=request, response_body=response,
                error=ERRORS[errors[i]] if errors[i] >= 0 else None))
        return out

    def batches(self, size: int = 50_000) -> Iterator[list[RequestRecord]]:
        for lo in range(0, len(self), size):
            yield self.records(lo, min(lo + size, len(self)))


ERRORS = tuple(m for _, m, _ in SERVER_ERRORS) + tuple(m for _, m, _ in CLIENT_ERRORS)
_ROW = "[" + ", ".join(f"%.{d}f" for _, _, d in FEATURES) + "]"


def generate(n: int, days: float = 7.0, *, end: float | None = None, seed: int = 7) -> Synthetic:
    """``n`` requests over the ``days`` before ``end`` (epoch seconds; default: a fixed
    Monday noon UTC plus 17.25 s, so that minute and bin edges are ragged)."""
    rng = np.random.default_rng(seed)
    end = 1_767_614_417.25 if end is None else float(end)  # 2026-01-05 12:00:17.25 UTC
    start = end - days * 86400.0
    middle = start + (end - start) / 2
    canary_from, incident = middle - 6 * 3600, (middle + 2 * 3600, middle + 2 * 3600 + 15 * 60)

    # time: a day/night cycle (busiest 15:00 UTC, 4x the quietest), per-minute multinomial
    n_minutes = int(np.ceil((end - start) / 60))
    minute_start = start + 60.0 * np.arange(n_minutes)
    hour = (minute_start % 86400) / 3600
    weight = 1.0 + 0.6 * np.cos(2 * np.pi * (hour - 15) / 24)
    weight[-1] *= ((end - start) - 60.0 * (n_minutes - 1)) / 60   # the last, partial minute
    per_minute = rng.multinomial(n, weight / weight.sum())
    ts = np.repeat(minute_start, per_minute) + rng.random(n) * 60.0
    ts = np.sort(np.minimum(ts, np.nextafter(end, start)))

    endpoint = rng.choice(len(ENDPOINTS), size=n, p=ENDPOINT_SHARE)
    deployment = np.empty(n, dtype=np.int64)
    model = np.empty(n, dtype=np.int64)
    prod, stag, sand = endpoint == 0, endpoint == 1, endpoint == 2
    canary = prod & (ts >= canary_from) & (ts < middle) & (rng.random(n) < 0.10)
    promoted = prod & (ts >= middle)
    deployment[prod], model[prod] = 0, 0
    deployment[canary | promoted], model[canary | promoted] = 1, 1
    deployment[stag], model[stag] = 2, np.where(ts[stag] < middle, 1, 2)
    deployment[sand], model[sand] = 3, 2

    latency = np.empty(n)
    for m, (median, sigma) in LATENCY.items():
        mine = model == m
        latency[mine] = rng.lognormal(np.log(median), sigma, mine.sum())
    slow = rng.random(n) < SLOW_TAIL
    latency[slow] *= rng.uniform(5, 20, slow.sum())

    # outcomes
    status = np.full(n, 200, dtype=np.int64)
    error = np.full(n, -1, dtype=np.int64)
    u = rng.random(n)
    in_incident = prod & (ts >= incident[0]) & (ts < incident[1])
    client_rate = np.where(sand, SANDBOX_CLIENT_ERROR_RATE, CLIENT_ERROR_RATE)
    failing = (u < FAILURE_RATE) | (in_incident & (u < 0.33))
    client = ~failing & (u < FAILURE_RATE + client_rate)
    which = rng.choice(len(SERVER_ERRORS), size=n, p=[s for _, _, s in SERVER_ERRORS])
    which[in_incident & failing] = 3                       # the incident: 503s
    status[failing] = np.array([s for s, _, _ in SERVER_ERRORS])[which[failing]]
    error[failing] = which[failing]
    which = rng.choice(len(CLIENT_ERRORS), size=n, p=[s for _, _, s in CLIENT_ERRORS])
    status[client] = np.array([s for s, _, _ in CLIENT_ERRORS])[which[client]]
    error[client] = len(SERVER_ERRORS) + which[client]
    # how the failures look: timeouts take the timeout, refusals are quick, nothing answered has no model
    latency[status == 504] = 60_000 + rng.uniform(0, 50, (status == 504).sum())
    quick = (status == 0) | (status == 503) | (status == 401) | (status == 413)
    latency[quick] = rng.uniform(0.3, 2.0, quick.sum())
    no_answer = (status == 0) | (status == 503) | (status == 401) | (status == 413)
    deployment[no_answer], model[no_answer] = -1, -1

    rows_per_request = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    mean, sd = np.array([f[0] for f in FEATURES]), np.array([f[1] for f in FEATURES])
    features = mean + sd * rng.standard_normal((int(rows_per_request.sum()), len(FEATURES)))
    features[:, 1] = np.where(features[:, 1] < 1.5, 1, 2)  # sex is 1 or 2
    raw = rng.bytes(16 * n).hex()
    request_ids = [f"{raw[i:i + 8]}-{raw[i + 8:i + 12]}-4{raw[i + 13:i + 16]}-a{raw[i + 17:i + 20]}-{raw[i + 20:i + 32]}"
                   for i in range(0, 32 * n, 32)]
    events = [(canary_from, "production: deployment green (diabetes-regressor:2) created, 10 % canary"),
              (middle, "production: diabetes-regressor:2 promoted (100 % to green); "
                       "staging: candidate now serves diabetes-regressor:3"),
              (incident[0], "production: incident starts (a third of requests get 503)"),
              (incident[1], "production: incident ends")]
    return Synthetic(start=start, end=end, ts=ts, endpoint=endpoint, deployment=deployment, model=model,
                     status=status, latency_ms=latency, error=error, rows_per_request=rows_per_request,
                     features=features, request_ids=request_ids, events=events)


def write(db, data: Synthetic, batch: int = 50_000) -> float:
    """Store every record through ``telemetry_store.append`` (rows and rollups, one transaction per
    batch); returns the seconds spent, building the record objects included."""
    began = time.perf_counter()
    for records in data.batches(batch):
        append(db, records)
    return time.perf_counter() - began


if __name__ == "__main__":  # a quick look: python bench/telemetry_data.py [N]
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    t0 = time.perf_counter()
    d = generate(n)
    print(f"generated {n:,} in {time.perf_counter() - t0:.2f} s")
    recs = d.records(0, min(n, 5))
    for r in recs:
        print(r)
    bodies = d.records(0, min(n, 5000))
    print("mean request body", np.mean([len(r.request_body) for r in bodies]), "bytes")
    print("failures", np.mean((d.status >= 500) | (d.status == 0)), "client errors",
          np.mean((d.status >= 400) & (d.status < 500)))
