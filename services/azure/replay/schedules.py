"""Azure ML schedules on the replay: the ``…/workspaces/W/schedules/NAME`` REST API, and their firing.

Shapes follow azure-rest-api-specs ``Schedule/createOrUpdate.json``, ``get.json``,
``list.json`` and ``delete.json`` (api-version 2024-04-01): a schedule is
``{"properties": {"displayName", "description", "tags", "properties", "isEnabled",
"trigger": {"triggerType": "Cron", "expression", "timeZone", "startTime", "endTime"},
"action": {"actionType": "CreateJob", "jobDefinition": {…a job's properties…}},
"provisioningState"}, "systemData": {…}}``.

* ``PUT`` checks what Azure ML checks before it accepts a schedule — a trigger of a known
  type, a cron expression of five fields that can match, a time zone, a ``CreateJob``
  action with a job definition — and answers 400 ``UserError`` otherwise; then it is
  stored by ``FakeArmState`` as a long-running operation (201/200 with
  ``Azure-AsyncOperation``, like online endpoints), as are ``DELETE`` (202) and the
  listing (``GET …/schedules``, every view type);
* ``fire(name, at)`` does what Azure ML does at an occurrence: it creates a job from the
  schedule's job definition, named after the schedule (``az ml job list --query
  "[?contains(display_name,'NAME')]"`` finds them), created at ``at``.
"""
from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone
from typing import Any

from .http import ARM_HOST, Reply, ReplayRequest, arm_error
from .transport import ReplayTransport

SCHEDULES = r"/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+/schedules/(?P<name>[^/]+)$"


def _scope(transport: ReplayTransport) -> str:
    s = transport.settings
    return (f"/subscriptions/{s.get('subscription_id')}/resourceGroups/{s.get('resource_group')}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{s.get('workspace_name')}")


class ScheduleReplay:
    """The schedules of a replayed workspace (``transport.schedules``)."""

    def __init__(self, transport: ReplayTransport):
        self.transport = transport

    def path(self, name: str) -> str:
        return f"{_scope(self.transport)}/schedules/{name}"

    def get(self, name: str) -> dict | None:
        return self.transport.arm.get(self.path(name))

    def names(self) -> list[str]:
        return [r["name"] for r in self.transport.arm.children(f"{_scope(self.transport)}/schedules")]

    # -- PUT ---------------------------------------------------------------------------------

    def put(self, req: ReplayRequest) -> Reply:
        props = (req.json or {}).get("properties") if isinstance(req.json, dict) else None
        problem = _problem(props)
        if problem:
            return arm_error(400, "UserError", problem)
        return self.transport.arm.handle(req)

    # -- what Azure ML does at an occurrence -------------------------------------------------

    def fire(self, name: str, at: datetime | None = None) -> dict:
        """Create the job of one occurrence of schedule ``name`` (enabled or not: the caller
        decides when an occurrence is due); returns the job resource."""
        schedule = self.get(name)
        if schedule is None:
            raise KeyError(f"no schedule {name!r} in the replay")
        at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        definition = copy.deepcopy(schedule["properties"]["action"]["jobDefinition"])
        job_name = f"{name}-{at:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:4]}"
        definition["displayName"] = f"{name}-{at:%Y%m%d%H%M%S}"
        definition["status"] = "Queued"
        stamp = at.isoformat().replace("+00:00", "Z")
        job = {"name": job_name, "type": "Microsoft.MachineLearningServices/workspaces/jobs",
               "properties": definition,
               "systemData": {"createdAt": stamp, "createdBy": "Azure ML schedule", "createdByType": "Application",
                              "lastModifiedAt": stamp, "lastModifiedBy": "Azure ML schedule",
                              "lastModifiedByType": "Application"}}
        return self.transport.arm.put_raw(f"{_scope(self.transport)}/jobs/{job_name}", job)


def _problem(props: Any) -> str | None:
    """Why Azure ML would refuse this schedule, or None."""
    if not isinstance(props, dict):
        return "a schedule needs properties"
    trigger = props.get("trigger") or {}
    kind = trigger.get("triggerType")
    if kind not in ("Cron", "Recurrence"):
        return f"triggerType must be Cron or Recurrence, got {kind!r}"
    if kind == "Cron":
        expr = str(trigger.get("expression") or "")
        if len(expr.split()) != 5:
            return f"the cron expression {expr!r} does not have five fields"
        from croniter import croniter
        if not croniter.is_valid(expr):
            return f"the cron expression {expr!r} is not valid"
    if not trigger.get("timeZone"):
        return "the trigger needs a time zone"
    action = props.get("action") or {}
    if action.get("actionType") == "CreateJob" and not isinstance(action.get("jobDefinition"), dict):
        return "a CreateJob action needs a jobDefinition"
    if action.get("actionType") not in ("CreateJob", "InvokeBatchEndpoint", "CreateMonitor"):
        return f"unknown actionType {action.get('actionType')!r}"
    return None


def install_schedules(transport: ReplayTransport) -> ScheduleReplay:
    """Answer the schedules REST API on ``transport`` (``transport.schedules``)."""
    replay = ScheduleReplay(transport)
    transport.arm.lro_types = set(transport.arm.lro_types) | {"schedules"}
    import re
    transport.add("PUT", SCHEDULES, replay.put, host=re.escape(ARM_HOST))
    transport.schedules = replay  # type: ignore[attr-defined]
    return replay


__all__ = ["ScheduleReplay", "install_schedules"]
