"""The quality gate: candidate vs champion metrics under the policy's rules.

A rule names one of the task's metrics (``services.metrics``, checked when the policy is loaded)
and takes its direction from it.

Pure and backend-independent, so the console, the CLI and every backend decide
the same way from the same numbers.
"""
from __future__ import annotations

from typing import Mapping

from .entities import GateCheck, GateDecision
from .metrics import metric
from .policy import Policy


def relative_change(candidate: float, champion: float, direction: str) -> float:
    """How much better the candidate is, as a fraction of the champion (negative = worse)."""
    if champion == 0:
        return 0.0 if candidate == champion else (1.0 if (candidate < 0) == (direction == "lower") else -1.0)
    better = (champion - candidate) if direction == "lower" else (candidate - champion)
    return better / abs(champion)


def decide(candidate: Mapping[str, float], champion: Mapping[str, float] | None, policy: Policy, *,
           champion_ref: str | None = None, evaluated_on: str | None = None) -> GateDecision:
    checks: list[GateCheck] = []
    for rule in policy.gate_rules:
        cand = candidate.get(rule.metric)
        champ = champion.get(rule.metric) if champion else None
        if cand is None:
            why = "the candidate has no value"
            if (found := metric(rule.metric)) is not None and found.needs_probabilities:
                why += " (it is computed from class probabilities: the model has no predict_proba, " \
                       "or the evaluation rows hold one class only)"
            checks.append(GateCheck(rule.metric, rule.direction, None, champ, False, f"{rule.metric}: {why}"))
            continue
        problems = []
        if rule.min is not None and cand < rule.min:
            problems.append(f"{cand:.4g} is below the floor {rule.min:g}")
        if rule.max is not None and cand > rule.max:
            problems.append(f"{cand:.4g} is above the ceiling {rule.max:g}")
        change = None
        if champ is not None:
            change = relative_change(cand, champ, rule.direction)
            allowed = rule.max_regression if rule.max_regression is not None else float("inf")
            if change < -allowed - 1e-12:
                problems.append(f"{cand:.4g} vs champion {champ:.4g}: {abs(change):.1%} worse "
                                f"(allowed {allowed:.1%})")
        if problems:
            reason = f"{rule.metric}: " + "; ".join(problems)
        elif change is None:
            reason = f"{rule.metric}: {cand:.4g} (no champion to compare with)"
        else:
            word = "better" if change > 0 else "worse" if change < 0 else "equal"
            reason = f"{rule.metric}: {cand:.4g} vs champion {champ:.4g} ({abs(change):.1%} {word})"
        checks.append(GateCheck(rule.metric, rule.direction, cand, champ, not problems, reason))

    reasons = [c.reason for c in checks if not c.passed]
    primary = policy.require_improvement
    if champion and primary:
        cand, champ = candidate.get(primary), champion.get(primary)
        direction = policy.direction(primary)
        if cand is not None and champ is not None and relative_change(cand, champ, direction) <= 0:
            reasons.append(f"{primary}: must improve on the champion ({cand:.4g} vs {champ:.4g})")
    passed = not reasons
    if passed:
        if champion:
            reasons = [f"better than champion {champion_ref} on {primary}"] if primary else ["every rule passed"]
        elif champion_ref:  # scored without champion metrics because it *is* the champion
            reasons = [f"this is the champion {champion_ref}: only the absolute rules apply, and they pass"]
        else:
            reasons = ["no champion yet: the first model that meets the absolute rules becomes it"]
    return GateDecision(passed, tuple(reasons), tuple(checks), champion_ref, evaluated_on)
