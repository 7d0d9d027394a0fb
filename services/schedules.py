"""Retraining triggers, backend-independent: cron expressions, the catch-up policy, who may edit.

Cron expressions have the five standard fields (minute hour day-of-month month
day-of-week) and are read in **UTC** — the same as an Azure ML ``JobSchedule``
``CronTrigger`` with ``time_zone="UTC"``. When day-of-month and day-of-week are
both restricted, a day matching either fires (classic cron).

Catch-up policy: a scheduler that was down fires only the **latest** missed
occurrence, once, when it comes back; the earlier ones are counted (``skipped``)
and not run. Occurrences before the schedule was created or last enabled never
fire.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import InvalidInput, NotFound
from .policy import Policy
from .permissions import authorize
from .training import default_estimator, full_params

CRON_HINT = ("Five fields in UTC: minute hour day-of-month month day-of-week, e.g. '*/5 * * * *' "
             "(every 5 minutes) or '0 2 * * 1-5' (02:00 UTC on weekdays).")
MAX_COUNTED = 1000  # the skipped count stops here ("1000 or more"): counting runs inside the firing's transaction (~40 µs each)
_TICK = timedelta(microseconds=1)


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (naive means UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def due_text(moment: datetime) -> str:
    """An occurrence as stored (``UNIQUE (schedule_id, due_at)`` compares these strings)."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_cron(expr: str) -> str:
    """The normalised expression (single spaces); ``InvalidInput`` if it is not a valid
    five-field expression or never matches a date."""
    text = " ".join(str(expr or "").split())
    if len(text.split(" ")) != 5:
        raise InvalidInput(f"a schedule needs a cron expression of five fields, got {expr!r}", hint=CRON_HINT)
    if not croniter.is_valid(text):
        raise InvalidInput(f"{text!r} is not a valid cron expression", hint=CRON_HINT)
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except (CroniterBadDateError, CroniterError) as e:
        raise InvalidInput(f"{text!r} never fires ({e})", hint=CRON_HINT) from None
    return text


def next_times(expr: str, after: datetime, count: int = 3) -> tuple[datetime, ...]:
    """The next ``count`` occurrences strictly after ``after``."""
    it = croniter(expr, utc(after))
    return tuple(it.get_next(datetime) for _ in range(count))


def latest_due(expr: str, now: datetime, not_before: datetime) -> datetime | None:
    """The latest occurrence at or before ``now``, or None if it is before ``not_before``."""
    now = utc(now)
    due = croniter(expr, now + _TICK).get_prev(datetime)  # get_prev is strict: +1 µs includes ``now`` itself
    return due if due >= utc(not_before) else None


def count_between(expr: str, after: datetime, before: datetime) -> int:
    """Occurrences strictly after ``after`` and strictly before ``before`` (capped at MAX_COUNTED)."""
    it, n = croniter(expr, utc(after)), 0
    while n < MAX_COUNTED and it.get_next(datetime) < utc(before):
        n += 1
    return n


def count_missed(expr: str, last_due: datetime | None, active_since: datetime, due: datetime) -> int:
    """Occurrences before ``due`` that never fired: after the last one fired and from the
    activation on (creation or resume; inclusive) — what the catch-up policy skips."""
    start = utc(active_since) - _TICK
    if last_due is not None and utc(last_due) > start:
        start = utc(last_due)
    return count_between(expr, start, due)


def describe_missed(skipped: int) -> str:
    if not skipped:
        return ""
    many = f"{skipped} or more" if skipped >= MAX_COUNTED else str(skipped)
    return f"{many} earlier missed occurrence{'s' if skipped != 1 else ''} not run (catch-up fires the latest only)"


# --- the training recipe ---------------------------------------------------------

def resolve_recipe(models, jobs, policy: Policy, estimator: str | None,
                   params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The estimator and checked parameters a schedule or trigger trains. Neither given: the
    champion's (retrain what serves, on new data: its run's parameters when the run is known),
    the task's first estimator (ridge for a regression) without a champion."""
    if not estimator and not params:
        estimator, params = default_estimator(policy.task), {}
        champion = models.champion(policy.model_name)
        if champion is not None:
            estimator = champion.estimator
            if champion.run_id:
                try:
                    run = jobs.get(champion.run_id)
                    estimator, params = run.estimator, dict(run.params)
                except NotFound:
                    pass
    estimator = estimator or default_estimator(policy.task)
    return estimator, check_recipe(estimator, params, policy)


def check_recipe(estimator: str, params: Mapping[str, Any] | None, policy: Policy) -> dict[str, Any]:
    """The parameters as given, each cast to its type; ``InvalidInput`` for an unknown
    estimator or parameter, or one out of the policy's bounds (checked when the schedule is
    saved, not when it fires)."""
    params = dict(params or {})
    full = full_params(estimator, params, policy.training, policy.task)
    return {k: full[k] for k in params}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["alpha=1", "max_iter=50"]`` (CLI ``--param``, the page's text box) as a dict."""
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"expected KEY=VALUE, got {item!r}", hint="One parameter per entry, e.g. alpha=0.5.")
        out[key.strip()] = value.strip()
    return out


def recipe_text(estimator: str, params: Mapping[str, Any]) -> str:
    return estimator + "".join(f" {k}={v}" for k, v in params.items())


def run_name(estimator: str, params: Mapping[str, Any], *, schedule_id: int | None = None,
             due_at: datetime | None = None, dataset_ref: str | None = None) -> str:
    """The display name of a triggered run. It names its firing uniquely (one schedule
    occurrence, or one dataset version), which is how a scheduler that crashed between
    deciding to fire and recording the run finds the run again instead of starting another."""
    if schedule_id is not None:
        why = f"schedule #{schedule_id} {utc(due_at):%Y-%m-%d %H:%M}Z"
    else:
        why = f"new data {dataset_ref}"
    return f"{recipe_text(estimator, params)} · {why}"


# --- who may edit ------------------------------------------------------------------

def authorize_edit(policy: Policy, actor: str) -> str:
    """The role under which ``actor`` may change schedules and triggers; ``Forbidden`` otherwise."""
    return authorize(policy, actor, "edit_schedules")
