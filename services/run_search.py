"""Searching runs by their metrics and parameters: what a ``Condition`` means.

``parse_condition("rmse < 55")`` reads the conditions the Runs page and ``tollgate.py runs``
accept (MLflow's words: ``metrics.rmse < 55``, ``params.alpha = 1``; a bare key is a
metric). ``matches(flt, run)`` is the definition a backend's query must agree with
(the local store says it in SQL; ``tests/contract/test_jobs.py`` compares the two).
"""
from __future__ import annotations

import math
import operator
import re
from typing import Any

from .entities import COMPARISONS, Condition, Run, RunFilter
from .errors import InvalidInput

MAX_KEY = 200
_CONDITION = re.compile(r"^\s*(?:(metrics|params)\.)?([A-Za-z0-9_.\-/ ]+?)\s*(<=|>=|!=|<|>|==|=)\s*(.+?)\s*$")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
        "!=": operator.ne}
HINT = "Write e.g. rmse < 55, metrics.r2 >= 0.4 or params.alpha = 1 (comparisons: < <= > >= = !=)."


def condition(key: str, op: str, value: Any) -> Condition:
    """A checked ``Condition``; ``InvalidInput`` for an unknown comparison, a bad key or value."""
    key = str(key).strip()
    if not key or len(key) > MAX_KEY or '"' in key or any(ord(c) < 32 for c in key):
        raise InvalidInput(f"not a metric or parameter name: {key[:60]!r}", hint=HINT)
    op = "=" if op == "==" else op
    if op not in COMPARISONS:
        raise InvalidInput(f"unknown comparison {op!r}; use one of {' '.join(COMPARISONS)}", hint=HINT)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{key} {op} {value!r}: compare with a number or a text", hint=HINT)
    if isinstance(value, (int, float)):
        value = float(value)
        if not math.isfinite(value):
            raise InvalidInput(f"{key} {op} {value}: the number must be finite", hint=HINT)
    elif op not in ("=", "!="):
        raise InvalidInput(f"{key} {op} {value!r}: a text can only be compared with = or !=", hint=HINT)
    return Condition(key, op, value)


def parse_condition(text: str) -> tuple[str, Condition]:
    """``"rmse < 55"`` -> ``("metrics", Condition("rmse", "<", 55.0))``; ``"params.alpha=1"`` ->
    ``("params", ...)``. Quotes around a value make it a text (``params.solver = 'lbfgs'``)."""
    m = _CONDITION.match(str(text or ""))
    if not m:
        raise InvalidInput(f"not a condition: {str(text)[:80]!r}", hint=HINT)
    kind, key, op, raw = m.group(1) or "metrics", m.group(2), m.group(3), m.group(4)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        value: float | str = raw[1:-1]
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw
    return kind, condition(key, op, value)


def holds(cond: Condition, actual: Any) -> bool:
    """Numbers compare with numbers (booleans are not numbers), texts with texts."""
    if isinstance(cond.value, float):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool) and _OPS[cond.op](actual, cond.value)
    return isinstance(actual, str) and _OPS[cond.op](actual, cond.value)


def matches(flt: RunFilter, run: Run) -> bool:
    """Whether ``run`` passes every condition of ``flt`` (not its limit and offset)."""
    return ((not flt.status or run.status in flt.status)
            and (flt.experiment is None or run.experiment == flt.experiment)
            and (flt.dataset is None or run.dataset == flt.dataset)
            and (flt.since is None or run.created_at >= flt.since)
            and (flt.until is None or run.created_at < flt.until)
            and (not flt.estimators or run.estimator in flt.estimators)
            and all(c.key in run.metrics and holds(c, run.metrics[c.key]) for c in flt.metrics)
            and all(c.key in run.params and holds(c, run.params[c.key]) for c in flt.params))
