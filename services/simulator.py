"""Traffic simulator: scoring requests to an endpoint, paced to a rate, as clients send them.

``simulate(ws, "production", rps=20, duration_s=60, error_rate=0.02)`` sends
``round(rps * duration_s)`` requests over real HTTP to the endpoint's scoring URI
with its key or token (``Authorization: Bearer``), one every ``1/rps`` seconds on a fixed
schedule, at most ``concurrency`` in flight. Good requests are rows drawn from
the training data of the model version the endpoint serves (its lineage), with
a little noise; a fraction ``error_rate`` are the mistakes real clients make
(``BAD_KINDS``), which the endpoint answers with 4xx. Used by
``tollgate.py simulate``, by tests and by canary analysis.

The credential is read by the product itself (like the console's Test panel, which
sends with it whoever is signed in): the primary key, or the token the endpoint's auth
mode asks for (``EndpointService.bearer``); it never leaves this process.
Pass ``key=`` to send with another one.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

import httpx
import numpy as np
import pandas as pd

from .errors import BackendUnavailable, Conflict, InvalidInput
from .permissions import authorize, invoke_action

UP_HINT = "start the endpoints with `python tollgate.py up`"
MAX_RPS = 1000.0
MAX_DURATION_S = 3600.0
NOISE = 0.05          # std of the noise added to a sampled row, in units of the column's std
GOOD = "good"
# Mistakes clients make, and what the endpoint answers: 400 from score.py, 401 from the gateway.
BAD_KINDS = ("wrong_feature_count", "string_value", "null_value", "nan_value", "malformed_json",
             "empty_body", "missing_data_key", "wrong_key")


@dataclass(frozen=True)
class Planned:
    kind: str             # GOOD or one of BAD_KINDS
    body: bytes
    wrong_key: bool = False


@dataclass(frozen=True)
class Outcome:
    """One request sent: what it was and what came back."""
    seq: int
    kind: str
    sent_at: float                 # time.time() when it left
    latency_ms: float              # client-side, until the whole answer was read
    status: int                    # 0: no HTTP answer (connection refused, reset, timeout)
    request_id: str | None         # the x-request-id the endpoint answered with
    deployment: str | None         # azureml-model-deployment
    model: str | None              # x-tollgate-model ("name:version")
    error: str | None = None       # transport error, when status is 0
    body: str = ""                 # what was sent


@dataclass(frozen=True)
class Progress:
    planned: int
    sent: int
    answered: int
    elapsed_s: float
    by_status: Mapping[int, int]


@dataclass(frozen=True)
class SimulationResult:
    endpoint: str
    scoring_uri: str
    target_rps: float
    duration_s: float
    error_rate: float
    seed: int | None
    planned: int
    sent: int
    answered: int                  # got an HTTP answer, whatever its status
    by_status: Mapping[int, int]   # 0: no answer
    by_kind: Mapping[str, int]
    by_model: Mapping[str, int]    # model version that answered (x-tollgate-model)
    request_ids: tuple[str, ...]   # from the answers' x-request-id, in send order
    started_at: datetime           # before the first send
    ended_at: datetime             # after the last answer
    achieved_rps: float            # sends per second over the sending span
    p50_ms: float | None           # client-side latency of answered requests
    p95_ms: float | None
    aborted: str | None = None     # why it stopped early, if it did
    outcomes: tuple[Outcome, ...] = field(default=(), repr=False)

    @property
    def no_answer(self) -> int:
        return self.by_status.get(0, 0)

    @property
    def completed(self) -> bool:
        """Every planned request was sent and answered (4xx answers included)."""
        return self.aborted is None and self.sent == self.planned and self.no_answer == 0

    @property
    def elapsed_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    def summary(self) -> dict:
        """JSON-ready, without the per-request outcomes."""
        return {"endpoint": self.endpoint, "scoring_uri": self.scoring_uri, "target_rps": self.target_rps,
                "duration_s": self.duration_s, "error_rate": self.error_rate, "seed": self.seed,
                "planned": self.planned, "sent": self.sent, "answered": self.answered,
                "no_answer": self.no_answer, "completed": self.completed,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_kind": dict(sorted(self.by_kind.items())), "by_model": dict(sorted(self.by_model.items())),
                "achieved_rps": round(self.achieved_rps, 3), "elapsed_s": round(self.elapsed_s, 3),
                "p50_ms": _round(self.p50_ms), "p95_ms": _round(self.p95_ms),
                "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat(),
                "aborted": self.aborted, "request_ids": list(self.request_ids)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


# --- what to send -------------------------------------------------------------------

class TrafficMix:
    """Request bodies: rows like the training data, and realistic mistakes."""

    def __init__(self, frame: pd.DataFrame, features: Sequence[str], rng: random.Random):
        missing = [f for f in features if f not in frame.columns]
        if missing or frame.empty:
            raise InvalidInput(f"the training data lacks feature(s) {', '.join(missing)}" if missing
                               else "the training data has no rows")
        self.features = list(features)
        values = frame[self.features].apply(pd.to_numeric, errors="coerce").dropna()
        if values.empty:
            raise InvalidInput("the training data has no complete numeric row to sample from")
        self.matrix = values.to_numpy(dtype=float)
        self.std = np.nan_to_num(values.std().to_numpy(dtype=float))
        # integer columns stay integers; columns with a few levels (sex) or whose values sit on a
        # few spikes (s4: 5 values hold most rows) get no noise: jitter would look like drift
        self.integer = [bool(np.all(np.equal(np.mod(c, 1), 0))) for c in self.matrix.T]
        self.levels = [_few_levels(c) for c in self.matrix.T]
        self.decimals = [_decimals(c) for c in self.matrix.T]
        self.rng = rng

    def row(self) -> list[float | int]:
        base = self.matrix[self.rng.randrange(len(self.matrix))]
        out: list[float | int] = []
        for j, value in enumerate(base):
            if not self.levels[j] and self.std[j] > 0:
                value = value + self.rng.gauss(0.0, NOISE * self.std[j])
            out.append(int(round(value)) if self.integer[j] else round(float(value), self.decimals[j]))
        return out

    def good(self) -> Planned:
        return Planned(GOOD, json.dumps({"data": [self.row()]}).encode())

    def bad(self, kind: str) -> Planned:
        row = self.row()
        j = self.rng.randrange(len(row))
        if kind == "wrong_feature_count":
            body = {"data": [row[:-1] if self.rng.random() < 0.5 else row + [row[-1]]]}
        elif kind == "string_value":
            row[j] = self.rng.choice([str(row[j]), "n/a", "", "unknown"])
            body = {"data": [row]}
        elif kind == "null_value":
            row[j] = None
            body = {"data": [row]}
        elif kind == "nan_value":
            row[j] = float("nan")
            body = {"data": [row]}      # json.dumps writes NaN: not JSON, as some clients send it
        elif kind == "malformed_json":
            text = json.dumps({"data": [row]})
            return Planned(kind, text[: self.rng.randrange(1, len(text) - 1)].encode())
        elif kind == "empty_body":
            return Planned(kind, b"")
        elif kind == "missing_data_key":
            body = {self.rng.choice(["inputs", "rows", "input_data"]): [row]}
        elif kind == "wrong_key":
            return Planned(kind, json.dumps({"data": [row]}).encode(), wrong_key=True)
        else:
            raise InvalidInput(f"unknown kind of bad request: {kind!r}", hint=f"Known: {', '.join(BAD_KINDS)}.")
        return Planned(kind, json.dumps(body).encode())

    def plan(self, n: int, error_rate: float, kinds: Sequence[str] = BAD_KINDS) -> list[Planned]:
        """``n`` requests; each is bad with probability ``error_rate``, of a kind picked uniformly."""
        out = []
        for _ in range(n):
            if kinds and self.rng.random() < error_rate:
                out.append(self.bad(self.rng.choice(list(kinds))))
            else:
                out.append(self.good())
        return out


def _few_levels(column: np.ndarray) -> bool:
    _, counts = np.unique(column, return_counts=True)
    return bool(len(counts) <= 5 or np.sort(counts)[-5:].sum() >= 0.5 * len(column))


def _decimals(column: np.ndarray) -> int:
    """How many decimals the column's values are written with (at most 4)."""
    for d in range(5):
        if np.allclose(column, np.round(column, d), rtol=0, atol=1e-9):
            return d
    return 4


def training_frame(ws, env: str):
    """(endpoint, training frame, feature names) of the model version the running endpoint serves."""
    if ws.endpoints is None:
        raise BackendUnavailable("this workspace has no endpoints")
    ep = ws.endpoints.get(env)
    if not ep.gateway_up or not ep.scoring_uri:
        raise BackendUnavailable(f"endpoint {env} is not running", hint=UP_HINT)
    live = ep.live
    if live is None:
        raise Conflict(f"endpoint {env} has no deployment serving traffic",
                       hint=f"Deploy a model version to {env} first.")
    mv = ws.models.get(live.model_name, live.model_version)
    if not mv.dataset:
        raise Conflict(f"{mv.ref} has no training dataset recorded; nothing to sample requests from")
    frame = ws.datasets.load(mv.dataset, mv.dataset_version)
    features_of = getattr(ws.models, "features", None)
    features = features_of(mv.name, mv.version) if features_of else \
        [c for c in frame.columns if c != ws.policy.target]
    return ep, frame, features


# --- sending ------------------------------------------------------------------------

def simulate(ws, env: str, rps: float, duration_s: float, error_rate: float = 0.0, seed: int | None = None,
             on_progress: Callable[[Progress], None] | None = None, *, actor: str, key: str | None = None,
             concurrency: int = 8, timeout_s: float = 10.0, kinds: Sequence[str] = BAD_KINDS,
             progress_interval_s: float = 1.0, transport: httpx.AsyncBaseTransport | None = None) -> SimulationResult:
    """Send ``round(rps * duration_s)`` requests to endpoint ``env`` for ``actor`` and report what came back.

    Sending by hand is a change like any other (``services.scoring``): ``Forbidden`` naming the role
    needed unless ``actor`` may send to ``env``, and one audit record says what is about to be sent.
    ``BackendUnavailable`` if the endpoint is not running. If nothing answers for a second's
    worth of requests (at least 5 in a row), it stops early and says why in ``aborted``.
    ``transport`` carries the requests instead of the network (the Azure replay's ``httpx_transport()``).
    """
    role = authorize(ws.policy, actor, invoke_action(ws.policy, env))
    if not (0 < rps <= MAX_RPS):
        raise InvalidInput(f"rps must be above 0 and at most {MAX_RPS:g}, got {rps:g}")
    if not (0 < duration_s <= MAX_DURATION_S):
        raise InvalidInput(f"duration must be above 0 and at most {MAX_DURATION_S:g} s, got {duration_s:g}")
    if not (0.0 <= error_rate <= 1.0):
        raise InvalidInput(f"error rate must be between 0 and 1, got {error_rate:g}")
    if not 1 <= concurrency <= 256:
        raise InvalidInput(f"concurrency must be between 1 and 256, got {concurrency}")
    unknown = [k for k in kinds if k not in BAD_KINDS]
    if unknown:
        raise InvalidInput(f"unknown kind(s) of bad request: {', '.join(unknown)}", hint=f"Known: {', '.join(BAD_KINDS)}.")
    n = max(1, round(rps * duration_s))
    ep, frame, features = training_frame(ws, env)
    if key is None:   # the primary key, or the token the endpoint's auth mode asks for
        key = ws.endpoints.bearer(env)
    plan = TrafficMix(frame, features, random.Random(seed)).plan(n, error_rate, kinds)
    ws.audit.record(actor, "endpoint.simulate", env, role=role,
                    after={"requests": n, "rps": float(rps), "duration_s": float(duration_s),
                           "error_rate": float(error_rate), "seed": seed})
    started = datetime.now(timezone.utc)
    outcomes, aborted = asyncio.run(_send_all(ep.scoring_uri, key, plan, rps, concurrency, timeout_s,
                                              on_progress, progress_interval_s, transport))
    ended = datetime.now(timezone.utc)
    outcomes.sort(key=lambda o: o.seq)
    latencies = np.array([o.latency_ms for o in outcomes if o.status], dtype=float)
    sends = sorted(o.sent_at for o in outcomes)
    achieved = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else 0.0
    return SimulationResult(
        endpoint=env, scoring_uri=ep.scoring_uri, target_rps=float(rps), duration_s=float(duration_s),
        error_rate=float(error_rate), seed=seed, planned=n, sent=len(outcomes),
        answered=sum(1 for o in outcomes if o.status),
        by_status=dict(Counter(o.status for o in outcomes)), by_kind=dict(Counter(o.kind for o in outcomes)),
        by_model=dict(Counter(o.model for o in outcomes if o.model)),
        request_ids=tuple(o.request_id for o in outcomes if o.request_id),
        started_at=started, ended_at=ended, achieved_rps=achieved,
        p50_ms=float(np.percentile(latencies, 50)) if len(latencies) else None,
        p95_ms=float(np.percentile(latencies, 95)) if len(latencies) else None,
        aborted=aborted, outcomes=tuple(outcomes))


async def _send_all(uri: str, key: str, plan: list[Planned], rps: float, concurrency: int, timeout_s: float,
                    on_progress, progress_interval_s: float,
                    transport: httpx.AsyncBaseTransport | None = None) -> tuple[list[Outcome], str | None]:
    outcomes: list[Outcome] = []
    gate = asyncio.Semaphore(concurrency)
    wrong_key = "sim-wrong-" + uuid.uuid4().hex
    state = {"no_answer_in_a_row": 0, "aborted": None, "sent": 0}
    give_up_after = max(5, math.ceil(rps))
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, seq: int, p: Planned) -> None:
        try:
            headers = {"Content-Type": "application/json",
                       "Authorization": f"Bearer {wrong_key if p.wrong_key else key}"}
            sent_at, t0 = time.time(), time.perf_counter()
            try:
                r = await client.post(uri, content=p.body, headers=headers)
                status, error = r.status_code, None
                rid, dep, model = (r.headers.get("x-request-id"), r.headers.get("azureml-model-deployment"),
                                   r.headers.get("x-tollgate-model"))
            except httpx.HTTPError as e:
                status, error, rid, dep, model = 0, f"{type(e).__name__}: {e}", None, None, None
            latency = (time.perf_counter() - t0) * 1000
            outcomes.append(Outcome(seq, p.kind, sent_at, latency, status, rid, dep, model, error,
                                    p.body.decode("utf-8", "replace")))
            if status:
                state["no_answer_in_a_row"] = 0
            else:
                state["no_answer_in_a_row"] += 1
                if state["no_answer_in_a_row"] >= give_up_after and state["aborted"] is None:
                    state["aborted"] = (f"{state['no_answer_in_a_row']} requests in a row got no answer "
                                        f"from {uri} (last: {error})")
        finally:
            gate.release()

    def progress(t0: float) -> None:
        if on_progress is not None:
            on_progress(Progress(planned=len(plan), sent=state["sent"], answered=len(outcomes),
                                 elapsed_s=loop.time() - t0, by_status=dict(Counter(o.status for o in outcomes))))

    async def report(t0: float) -> None:
        while True:
            await asyncio.sleep(progress_interval_s)
            progress(t0)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False, transport=transport) as client:
        t0 = loop.time()
        reporter = asyncio.create_task(report(t0))
        tasks = []
        try:
            for seq, p in enumerate(plan):
                delay = t0 + seq / rps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()  # never more than `concurrency` in flight: lag rather than pile up
                if state["aborted"]:
                    gate.release()
                    break
                state["sent"] += 1
                tasks.append(asyncio.create_task(one(client, seq, p)))
            await asyncio.gather(*tasks)
        finally:
            reporter.cancel()
        progress(t0)
    return outcomes, state["aborted"]
