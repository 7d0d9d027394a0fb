"""Canary releases: production traffic moved to a candidate in steps, each step judged on
live telemetry, with automatic rollback.

A rollout (``Rollout``) starts when QA promotes an approved version with the canary
strategy: the candidate is deployed beside the stable version (the blue/green machinery:
health probe, smoke test pinned to it), then gets ``steps[0]`` % of production traffic.
The supervisor calls ``advance_rollouts(ws)`` every tick; for a running rollout whose
step has lasted ``step_seconds`` it compares the canary with the stable version over the
step (``analyze``) and decides (``decide``):

* **pass** → the next step (or, after the last step, 100 %: the rollout succeeds, the
  candidate becomes the champion, the stable deployment stays warm for a rollback);
* **fail** → automatic rollback: all traffic back to the stable version, the candidate
  marked rolled back, the reasons in words in the audit trail and the notification;
* **not enough canary requests** (fewer than ``min_requests``) → the step waits and is
  judged again each tick over its growing window, up to ``max_step_seconds``; then
  ``on_low_traffic`` decides: ``pause`` (default: the rollout holds at the current step
  until QA continues or aborts it) or ``rollback``. Failures already too many to be
  outweighed by ``min_requests`` fail the step at once, without waiting.

The limits (``[canary]``): canary failure rate ≤ max(``max_failure_rate``, stable's +
``max_failure_rate_increase``); canary p95 ≤ max(stable p95 × ``max_p95_ratio``, stable
p95 + ``max_p95_increase_ms``), judged once the canary served ``MIN_P95_REQUESTS`` in the
step (with fewer, the p95 is just the slowest request). The stable version is judged by its own requests in the
same window when it served at least ``min_requests`` of them; otherwise (the 100 % step)
by the stable figures of the latest step that had them; failing both, by the absolute
limits (``max_failure_rate`` and ``[health] max_p95_ms``).

Everything here is pure except ``advance_rollouts``, which reads telemetry and asks the
workspace's release service to apply a decision (``apply_canary``, in
``services.release.rollouts``); the clock and the stats source are parameters, so the state
machine is tested without processes. The supervisor ticks it locally; on Azure,
``tollgate.py canary start --wait`` or ``tollgate.py agent`` (``services.release.agent``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from .entities import TimeWindow, VersionStats
from .policy import CanaryPolicy
from .telemetry import between

RUNNING, PAUSED, SUCCEEDED, ROLLED_BACK, ABORTED = "running", "paused", "succeeded", "rolled_back", "aborted"
ACTIVE = (RUNNING, PAUSED)
STATES = (RUNNING, PAUSED, SUCCEEDED, ROLLED_BACK, ABORTED)
PASS, FAIL, WAIT = "pass", "fail", "wait"
# Below 20 requests a "p95" is the slowest request: one cold-start request would decide.
MIN_P95_REQUESTS = 20
# decisions
NOTHING, NEXT, COMPLETE, ROLLBACK, PAUSE = "nothing", "next", "complete", "rollback", "pause"


def pct(x: float) -> str:
    return f"{x * 100:.1f} %"


@dataclass(frozen=True)
class Side:
    """Requests of one side (canary or stable) over an analysis window."""
    requests: int = 0
    failures: int = 0
    p95_ms: float | None = None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @classmethod
    def of(cls, stats: Iterable[VersionStats]) -> "Side":
        stats = [s for s in stats if s.requests]
        p95s = [s.p95_ms for s in stats if s.p95_ms is not None]
        return cls(sum(s.requests for s in stats), sum(s.failures for s in stats), max(p95s) if p95s else None)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "failures": self.failures, "failure_rate": round(self.failure_rate, 6),
                "p95_ms": self.p95_ms}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Side":
        d = d or {}
        return cls(int(d.get("requests", 0)), int(d.get("failures", 0)), d.get("p95_ms"))


@dataclass(frozen=True)
class Analysis:
    """The verdict on one step's window, with the reasons in words."""
    verdict: str                     # pass | fail | wait
    reasons: tuple[str, ...]
    canary: Side
    stable: Side
    baseline: str                    # what the canary was compared with
    max_failure_rate: float          # the limits that applied
    max_p95_ms: float | None
    start: datetime
    end: datetime
    step: int = 0                    # step index judged
    traffic: int = 0                 # canary % during the step

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "canary": self.canary.to_dict(),
                "stable": self.stable.to_dict(), "baseline": self.baseline,
                "max_failure_rate": self.max_failure_rate, "max_p95_ms": self.max_p95_ms,
                "start": self.start.isoformat(), "end": self.end.isoformat(), "step": self.step,
                "traffic": self.traffic}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Analysis":
        return cls(d["verdict"], tuple(d.get("reasons", ())), Side.from_dict(d.get("canary")),
                   Side.from_dict(d.get("stable")), d.get("baseline", ""), float(d.get("max_failure_rate", 0)),
                   d.get("max_p95_ms"), datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]),
                   int(d.get("step", 0)), int(d.get("traffic", 0)))


@dataclass(frozen=True)
class Rollout:
    """A canary rollout of ``model_name:model_version`` on ``endpoint``."""
    id: int
    endpoint: str
    model_name: str
    model_version: int
    canary_deployment: str
    stable_deployment: str
    stable_model: str                # "name:version"
    steps: tuple[int, ...]
    rules: CanaryPolicy              # as they were when it started
    step_index: int
    state: str
    started_at: datetime
    started_by: str
    step_started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    reason: str = ""
    last_analysis: Analysis | None = None
    history: tuple[Analysis, ...] = field(default=())   # the analyses of the steps passed

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"

    @property
    def traffic(self) -> int:
        """The canary's share of traffic at the current step (0 once rolled back or aborted)."""
        if self.state in (ROLLED_BACK, ABORTED):
            return 0
        return 100 if self.state == SUCCEEDED else self.steps[self.step_index]

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def is_last_step(self) -> bool:
        return self.step_index == len(self.steps) - 1

    @property
    def step_label(self) -> str:
        return f"step {self.step_index + 1} of {len(self.steps)} ({self.steps[self.step_index]} %)"

    def step_due(self) -> datetime:
        return self.step_started_at + timedelta(seconds=self.rules.step_seconds)

    def baseline(self) -> tuple[Side, str] | None:
        """The stable figures of the latest passed step that had enough stable requests."""
        for a in reversed(self.history):
            if a.stable.requests >= self.rules.min_requests:
                return a.stable, f"stable in step {a.step + 1}"
        return None

    def to_dict(self) -> dict:
        """As JSON-able data (the Azure ledger keeps it on a line of the audit trail)."""
        ts = (lambda d: d.isoformat() if d else None)
        return {"id": self.id, "endpoint": self.endpoint, "model_name": self.model_name,
                "model_version": self.model_version, "canary_deployment": self.canary_deployment,
                "stable_deployment": self.stable_deployment, "stable_model": self.stable_model,
                "steps": list(self.steps), "rules": asdict(self.rules), "step_index": self.step_index,
                "state": self.state, "started_at": ts(self.started_at), "started_by": self.started_by,
                "step_started_at": ts(self.step_started_at), "updated_at": ts(self.updated_at),
                "ended_at": ts(self.ended_at), "reason": self.reason,
                "last_analysis": self.last_analysis.to_dict() if self.last_analysis else None,
                "history": [a.to_dict() for a in self.history]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Rollout":
        ts = (lambda v: datetime.fromisoformat(v) if v else None)
        rules = dict(d["rules"])
        rules["steps"] = tuple(rules["steps"])
        known = set(CanaryPolicy.__dataclass_fields__)
        return cls(id=int(d["id"]), endpoint=d["endpoint"], model_name=d["model_name"],
                   model_version=int(d["model_version"]), canary_deployment=d["canary_deployment"],
                   stable_deployment=d["stable_deployment"], stable_model=d["stable_model"],
                   steps=tuple(d["steps"]), rules=CanaryPolicy(**{k: v for k, v in rules.items() if k in known}),
                   step_index=int(d["step_index"]), state=d["state"], started_at=ts(d["started_at"]),
                   started_by=d["started_by"], step_started_at=ts(d["step_started_at"]),
                   updated_at=ts(d["updated_at"]), ended_at=ts(d.get("ended_at")), reason=d.get("reason", ""),
                   last_analysis=Analysis.from_dict(d["last_analysis"]) if d.get("last_analysis") else None,
                   history=tuple(Analysis.from_dict(a) for a in d.get("history", ())))


def rules_to_json(rules: CanaryPolicy, health_max_p95_ms: float) -> str:
    return json.dumps({**asdict(rules), "health_max_p95_ms": health_max_p95_ms})


def rules_from_json(text: str) -> tuple[CanaryPolicy, float]:
    d = json.loads(text)
    health = float(d.pop("health_max_p95_ms", 500.0))
    d["steps"] = tuple(d["steps"])
    known = set(CanaryPolicy.__dataclass_fields__)
    return CanaryPolicy(**{k: v for k, v in d.items() if k in known}), health


# --- analysis -------------------------------------------------------------------

def analyze(canary: Side, stable: Side, rules: CanaryPolicy, start: datetime, end: datetime, *,
            baseline: tuple[Side, str] | None = None, absolute_p95_ms: float | None = None,
            step: int = 0, traffic: int = 0) -> Analysis:
    """Judge the canary against the stable version (see the module's docstring for the limits)."""
    if stable.requests >= rules.min_requests:
        ref, ref_name = stable, "stable in this step"
    elif baseline is not None:
        ref, ref_name = baseline
    else:
        ref, ref_name = None, "absolute limits"
    fr_limit = max(rules.max_failure_rate, ref.failure_rate + rules.max_failure_rate_increase) if ref \
        else rules.max_failure_rate
    if ref is not None and ref.p95_ms is not None:
        p95_limit: float | None = max(ref.p95_ms * rules.max_p95_ratio, ref.p95_ms + rules.max_p95_increase_ms)
    else:
        p95_limit = absolute_p95_ms
    vs_fr = f"stable {pct(ref.failure_rate)}" if ref else "no stable traffic to compare"
    if ref is not None and ref is not stable:
        vs_fr += f", {ref_name}"
    vs_p95 = f"stable {ref.p95_ms:.0f} ms" if ref is not None and ref.p95_ms is not None else "absolute limit"

    def result(verdict: str, reasons: list[str]) -> Analysis:
        return Analysis(verdict, tuple(reasons), canary, stable, ref_name, fr_limit, p95_limit, start, end,
                        step, traffic)

    if canary.requests < rules.min_requests:
        # even if every missing request succeeded, the failures seen already break the limit
        floor = canary.failures / rules.min_requests
        if floor > fr_limit:
            return result(FAIL, [f"canary failure rate {pct(canary.failure_rate)} > {pct(fr_limit)} ({vs_fr}): "
                                 f"{canary.failures} of {canary.requests} requests failed, more than "
                                 f"{pct(fr_limit)} of the {rules.min_requests} needed to judge"])
        return result(WAIT, [f"the canary served {canary.requests} of the {rules.min_requests} requests "
                             f"needed to judge it"])
    failed, met = [], []
    line = f"canary failure rate {pct(canary.failure_rate)} {{}} {pct(fr_limit)} ({vs_fr})"
    (failed if canary.failure_rate > fr_limit else met).append(
        line.format(">" if canary.failure_rate > fr_limit else "≤"))
    if canary.requests < MIN_P95_REQUESTS:
        met.append(f"canary p95 not judged on {canary.requests} requests ({MIN_P95_REQUESTS} make a p95)")
    elif canary.p95_ms is not None and p95_limit is not None:
        over = canary.p95_ms > p95_limit
        (failed if over else met).append(
            f"canary p95 {canary.p95_ms:.0f} ms {'>' if over else '≤'} {p95_limit:.0f} ms ({vs_p95})")
    return result(FAIL, failed) if failed else result(PASS, met)


@dataclass(frozen=True)
class Decision:
    action: str                      # nothing | next | complete | rollback | pause
    analysis: Analysis | None = None
    reason: str = ""


def decide(rollout: Rollout, now: datetime, canary: Side, stable: Side, absolute_p95_ms: float | None) -> Decision:
    """What a tick does with a running rollout, given the step's canary and stable figures."""
    if rollout.state != RUNNING:
        return Decision(NOTHING)
    rules = rollout.rules
    elapsed = (now - rollout.step_started_at).total_seconds()
    if elapsed < rules.step_seconds:
        return Decision(NOTHING)
    a = analyze(canary, stable, rules, rollout.step_started_at, now, baseline=rollout.baseline(),
                absolute_p95_ms=absolute_p95_ms, step=rollout.step_index, traffic=rollout.traffic)
    if a.verdict == PASS:
        return Decision(COMPLETE if rollout.is_last_step else NEXT, a, a.summary)
    if a.verdict == FAIL:
        return Decision(ROLLBACK, a, a.summary)
    if elapsed >= rules.max_step_seconds:
        why = (f"not enough traffic to judge {rollout.step_label}: {canary.requests} canary request(s) in "
               f"{elapsed:.0f} s, {rules.min_requests} needed")
        return Decision(ROLLBACK if rules.on_low_traffic == "rollback" else PAUSE, a, why)
    return Decision(NOTHING, a, a.summary)


# --- the tick -------------------------------------------------------------------

def step_sides(stats: Iterable[VersionStats], rollout: Rollout) -> tuple[Side, Side]:
    """(canary, stable) of a step's stats, by deployment and model version."""
    stats = [s for s in stats if s.endpoint == rollout.endpoint]
    canary = Side.of(s for s in stats if s.deployment == rollout.canary_deployment and s.model == rollout.model_ref)
    stable = Side.of(s for s in stats if s.deployment == rollout.stable_deployment and s.model == rollout.stable_model)
    return canary, stable


def live_analysis(ws, rollout: Rollout, now: datetime | None = None) -> Analysis | None:
    """The analysis of the current step so far (for the console); None if the step just began."""
    now = now or datetime.now(timezone.utc)
    if not rollout.active or now <= rollout.step_started_at:
        return None
    canary, stable = step_sides(ws.telemetry.stats(between(rollout.step_started_at, now), rollout.endpoint), rollout)
    return analyze(canary, stable, rollout.rules, rollout.step_started_at, now, baseline=rollout.baseline(),
                   absolute_p95_ms=ws.policy.health.max_p95_ms, step=rollout.step_index, traffic=rollout.traffic)


def advance_rollouts(ws, now: datetime | None = None,
                     stats: Callable[[TimeWindow, str], list[VersionStats]] | None = None) -> list[tuple[Rollout, Decision]]:
    """One tick: decide each running rollout whose step is due and apply the decision.

    Idempotent: a decision is applied only if the rollout is still at the step it was judged
    on (``apply_canary`` checks it in the same transaction as the traffic change), so two ticks,
    or a tick racing a pause, cannot move a rollout twice.
    """
    now = now or datetime.now(timezone.utc)
    stats = stats or ws.telemetry.stats
    done = []
    for rollout in ws.releases.rollouts(active=True):
        if rollout.state != RUNNING or now < rollout.step_due():
            continue
        canary, stable = step_sides(stats(between(rollout.step_started_at, now), rollout.endpoint), rollout)
        decision = decide(rollout, now, canary, stable, ws.policy.health.max_p95_ms)
        if decision.action != NOTHING:
            ws.releases.apply_canary(rollout, decision, now)
            done.append((rollout, decision))
    return done
