"""Run history's JSON of a pipeline step → ``Run``.

azure-ai-ml's ``jobs.list(parent_job_name=…)`` turns run history's child runs into ``Job`` objects
and drops what the Runs page needs of a step: run history's own ``startTimeUtc`` and ``endTimeUtc``
(``lastStartTimeUtc``/``effectiveStartTimeUtc`` are often null) and the ``error`` of a failed step.
This reads them from the run history JSON itself.
"""
from __future__ import annotations

from typing import Any

from ..entities import Run, RunStatus
from .convert import EPOCH, run_status, utc


def step_error(raw: dict) -> str | None:
    """The message of a failed step (``error.error.message``), blank lines and padding removed."""
    error = (raw.get("error") or {}).get("error") or {}
    message = str(error.get("message") or "").strip()
    if not message:
        return None
    return "\n".join(line.rstrip() for line in message.splitlines() if line.strip())


def step_run(raw: dict) -> Run:
    """A child run of run history (``GET …/runs/{id}/children``) → ``Run``."""
    status = run_status(raw.get("status"))
    created = utc(raw.get("createdUtc")) or EPOCH
    started = utc(raw.get("startTimeUtc") or raw.get("effectiveStartTimeUtc") or raw.get("lastStartTimeUtc"))
    ended = utc(raw.get("endTimeUtc")) if status.is_terminal else None
    if started is not None and ended is not None and ended < started:  # clocks of two services: never negative
        ended = started
    if status == RunStatus.QUEUED:
        started = None
    by: Any = raw.get("createdBy") or {}
    return Run(
        id=str(raw.get("runId") or ""), experiment=str(raw.get("experimentId") or ""),
        display_name=str(raw.get("displayName") or raw.get("name") or raw.get("runId") or ""), status=status,
        estimator="", params={}, metrics={}, dataset="", dataset_version=None, created_at=created,
        created_by=str(by.get("userName") or "") if isinstance(by, dict) else str(by),
        started_at=started, ended_at=ended,
        error=step_error(raw) or ("the step was canceled" if status == RunStatus.CANCELED else None),
    )
