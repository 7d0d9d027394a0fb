"""The smoke test, written once for every backend.

Named cases from the version's held-out evaluation rows, sent as a client sends them,
pinned to the deployment under test: the HTTP status, the response schema
(``{"predictions": [number]}``) and *prediction parity* with the registered model's
offline predictions (``[smoke_test] tolerance``); for a classifier the label must be the
same exactly and, when the model has ``predict_proba``, each class's probability
(``"probabilities"`` in ``"classes"`` order) within the tolerance; plus a malformed request
that must get a 4xx. When the fitted model cannot be loaded here, the cases check the answers and say
that parity was not checked.

Then **latency**: ``[smoke_test] latency_requests`` requests to the new deployment and as
many to the deployment serving the endpoint now, interleaved one for one (so both see the
same rate and the same moments of load), their p50 and p95. When the workflow asks for a
judgement (a promote), ``[gate] max_p95_regression`` bounds the new p95 against the live one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

from ..entities import LatencyEvidence, ModelVersion, SmokeCase
from ..errors import ServiceError
from ..evaluation import class_labels, evaluation_split, predict, predict_proba
from ..metrics import is_classification
from ..policy import Policy
from .ports import EndpointDriver

MALFORMED = '{"data": [[1, 2, 3]]}'


class Case(NamedTuple):
    name: str
    row: list[float]                                  # the features, in the model's order
    expected: float | None                            # the offline prediction (a classifier's label)
    probabilities: Mapping[float, float] | None = None  # a classifier's offline probability per class


@dataclass(frozen=True)
class Inputs:
    cases: tuple[Case, ...]
    note: str | None = None                           # why parity is not checked, if it is not
    labels: bool = False                              # a classifier's: predictions are labels, equal or not


def inputs(models, datasets, policy: Policy, mv: ModelVersion) -> Inputs:
    """Named rows of the held-out split and the registered model's offline predictions of them."""
    frame = datasets.load(mv.dataset, mv.dataset_version)
    X, _ = evaluation_split(frame, policy)
    sample = X.head(policy.smoke.cases)
    probabilities: list[Mapping[float, float] | None] = [None] * len(sample)
    try:
        model = models.load(mv.name, mv.version)
        names = getattr(model, "feature_names_in_", None)   # scikit-learn's record of its columns
        features = [str(f) for f in names] if names is not None else list(sample.columns)
        offline: list[float | None] = [float(v) for v in predict(model, sample, mv.ref)]
        classes = class_labels(policy.task, (), model)
        proba = predict_proba(model, sample, mv.ref, classes)
        if proba is not None:
            probabilities = [dict(zip(classes, row)) for row in proba.tolist()]
        note = None
    except ServiceError as e:
        features, offline, note = list(sample.columns), [None] * len(sample), f"parity not checked: {e}"
    cases = tuple(Case(f"held-out row {idx}", [float(row[f]) for f in features], expected, per_class)
                  for (idx, row), expected, per_class in zip(sample.iterrows(), offline, probabilities))
    return Inputs(cases, note, labels=is_classification(policy.task))


def probability_mismatch(body: Mapping, expected: Mapping[float, float], tolerance: float) -> str | None:
    """Why the answer's ``probabilities`` (in its ``classes`` order) differ from ``expected``, or None."""
    rows, classes = body.get("probabilities"), body.get("classes")
    if not (isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], list) and isinstance(classes, list)
            and len(rows[0]) == len(classes)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*rows[0], *classes))):
        return (f"response has no probabilities of the shape {{'probabilities': [[number per class]], "
                f"'classes': [label, ...]}}: {body!r:.200}")
    got = {float(c): float(p) for c, p in zip(classes, rows[0])}
    if set(got) != set(expected):
        return f"classes {sorted(got)} differ from the model's {sorted(expected)}"
    worst = max(expected, key=lambda c: abs(got[c] - expected[c]))
    gap = abs(got[worst] - expected[worst])
    if gap > tolerance * max(1.0, abs(expected[worst])):
        return f"probability of class {worst:g} differs from the offline one by {gap:.6g} (tolerance {tolerance:g})"
    return None


def run_cases(driver: EndpointDriver, env: str, deployment: str, given: Inputs, tolerance: float) -> list[SmokeCase]:
    cases: list[SmokeCase] = []
    for name, row, expected, probabilities in given.cases:
        res = driver.invoke(env, {"data": [row]}, deployment=deployment)
        if res.status != 200:
            cases.append(SmokeCase(name, False, res.status, expected, None, f"HTTP {res.status}: {res.body}"))
            continue
        preds = res.body.get("predictions") if isinstance(res.body, dict) else None
        if not (isinstance(preds, list) and len(preds) == 1 and isinstance(preds[0], (int, float))):
            cases.append(SmokeCase(name, False, res.status, expected, None,
                                   f"response does not match {{'predictions': [number]}}: {res.body!r:.200}"))
            continue
        got = float(preds[0])
        if expected is None:
            cases.append(SmokeCase(name, True, res.status, None, got, f"answered; {given.note}"))
            continue
        if not given.labels:
            ok = bool(abs(got - expected) <= tolerance * max(1.0, abs(expected)))
            detail = ("matches the offline prediction" if ok else
                      f"differs from the offline prediction by {abs(got - expected):.6g}")
        else:
            mismatch = (f"label {got:g} differs from the offline label {expected:g}" if got != expected else
                        probabilities is not None and probability_mismatch(res.body, probabilities, tolerance))
            ok = not mismatch
            detail = mismatch or ("label and probabilities match the offline ones" if probabilities is not None
                                  else "label matches the offline one")
        cases.append(SmokeCase(name, ok, res.status, expected, got, detail))
    bad = driver.invoke(env, MALFORMED, deployment=deployment)
    cases.append(SmokeCase("wrong number of features → 4xx", 400 <= bad.status < 500, bad.status, None, None,
                           f"HTTP {bad.status}: {bad.body}"))
    return cases


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure_latency(driver: EndpointDriver, env: str, deployment: str, live: str | None, rows: list[list[float]],
                    policy: Policy, *, judge: bool) -> LatencyEvidence | None:
    """``latency_requests`` to ``deployment`` and to ``live``, one for one; judged by the ``[gate]``
    latency rule when ``judge`` (and a live deployment to compare with)."""
    n = policy.smoke.latency_requests
    if n <= 0 or not rows:
        return None
    mine: list[float] = []
    theirs: list[float] = []
    failures = 0
    for i in range(n):
        payload: Any = {"data": [rows[i % len(rows)]]}
        res = driver.invoke(env, payload, deployment=deployment)
        if 200 <= res.status < 300:
            mine.append(res.latency_ms)
        else:
            failures += 1
        if live is not None:
            other = driver.invoke(env, payload, deployment=live)
            if 200 <= other.status < 300:
                theirs.append(other.latency_ms)
    p50, p95 = percentile(mine, 0.5), percentile(mine, 0.95)
    live_p50, live_p95 = percentile(theirs, 0.5), percentile(theirs, 0.95)
    limit = policy.latency_gate.limit_ms(live_p95) if judge else None
    reasons, passed = [], True
    if failures:
        passed = False
        reasons.append(f"{failures} of {n} latency requests to {deployment} failed")
    if p95 is not None and live_p95 is not None:
        vs = f"{deployment} p95 {p95:.0f} ms vs {live} p95 {live_p95:.0f} ms"
        if limit is not None and p95 > limit:
            passed = False
            reasons.append(f"{vs}: more than the limit of {limit:.0f} ms ([gate] max_p95_regression)")
        else:
            reasons.append(vs + (f" (limit {limit:.0f} ms)" if limit is not None else ""))
    elif p95 is not None:
        reasons.append(f"{deployment} p95 {p95:.0f} ms (nothing serves {env} to compare with)")
    return LatencyEvidence(requests=n, candidate_p50_ms=p50, candidate_p95_ms=p95, live_deployment=live,
                           live_p50_ms=live_p50, live_p95_ms=live_p95, candidate_failures=failures,
                           limit_p95_ms=limit, passed=passed, reason="; ".join(reasons))


def summary(cases: list[SmokeCase], latency: LatencyEvidence | None, note: str | None) -> tuple[bool, str]:
    failed = [c for c in cases if not c.passed]
    text = f"{len(cases)} cases passed" if not failed else f"{len(failed)} of {len(cases)} cases failed"
    if note:
        text += f" ({note})"
    if latency is not None and not latency.passed:
        text += f"; latency: {latency.reason}"
    return not failed and (latency is None or latency.passed), text


def failed_cases(cases, latency: LatencyEvidence | None = None) -> str:
    lines = [f"{c.name}: {c.detail}" for c in cases if not c.passed]
    if latency is not None and not latency.passed:
        lines.append(f"latency: {latency.reason}")
    return "\n".join(lines)


__all__ = ["Inputs", "inputs", "run_cases", "measure_latency", "percentile", "summary", "failed_cases"]
