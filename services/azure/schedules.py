"""Retraining schedules on an Azure ML workspace: Azure ML ``JobSchedule``s with a ``CronTrigger``.

``AzureSchedules`` is the ``ScheduleService`` of the Azure workspace (``ws.schedules``),
with the rules of ``services.schedules`` (cron in UTC, who may edit, the recipe check) and
the public methods of ``services.local.schedules`` so the Schedules page and the CLI work
unchanged. Azure ML runs the schedules itself: there is no Tollgate scheduler process.

* a schedule is ``JobSchedule(name="tollgate-retrain-N", trigger=CronTrigger(expression,
  time_zone="UTC"), create_job=…)`` where the job is the very command job the Azure jobs
  store submits for retraining (``AzureJobs.command_job``: ``python -m pipeline.train``
  on the settings' compute and environment), sent with
  ``ml_client.schedules.begin_create_or_update``; ``N`` is its Tollgate id. What Tollgate
  needs to show it (dataset, recipe, who made it, since when it is active) is in the
  schedule's tags; each job it starts carries the properties ``tollgate.schedule = NAME``
  and ``tollgate.cron`` (which occurrence a firing was for);
* pause/resume is the same PUT with ``isEnabled`` changed (what ``begin_disable`` /
  ``begin_enable`` send after a GET), plus the ``tollgate.active_since`` tag on resume;
  Azure ML does not run occurrences that fell due while a schedule was disabled;
* remove is ``begin_delete``; the jobs it started stay (they are the firings' history);
* one id is taken at a time across consoles: adding holds the workspace's ``schedules``
  blob lease (``services.azure.audit.OperationLocks``) while it picks ``max + 1`` and PUTs;
* every change is role-checked (``ml_lead``/``admin``) and appended to the shared audit trail;
* firings are the jobs a schedule started (their ``tollgate.schedule`` property), read from
  the jobs listing: fired at the job's creation, due at the cron occurrence it fell on.

**The dataset version.** Azure ML resolves a schedule's data input when the schedule is
saved, not at each occurrence (``azureml:NAME@latest`` is pinned to the version that was
latest then: Azure/azure-sdk-for-python#32576). So a schedule trains the version of its
dataset that was the latest with labels when it was added; the version is in its tags and
in each firing. To train newer data, remove and add the schedule again.

**Dataset triggers.** Azure ML has no "a new data asset version was registered" trigger
(schedules are time-based; its Event Grid events are about runs, models and drift), so
``set_trigger`` refuses with ``InvalidInput`` and says how to do it: an Event Grid
subscription on the datastore's storage account (``Microsoft.Storage.BlobCreated`` under
``tollgate/datasets/``) calling a Function or Logic App that runs ``tollgate.py retrain``,
or registering and retraining in the same CI pipeline (``docs/``).
"""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from .. import schedules as rules
from ..datatests import no_passing_version
from ..entities import DatasetTrigger, Firing, Schedule, SchedulerStatus
from ..errors import InvalidInput, NotFound
from ..permissions import SYSTEM_ACTOR, canonical
from .errors import azure_call

# azure-ai-ml says "This is an experimental class" of its own schemas when it builds the pipeline
# job's component: not something our users can act on
logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)

PREFIX = "tollgate-retrain-"
TAG = "tollgate."
_NAME = re.compile(rf"^{re.escape(PREFIX)}(?P<id>\d+)$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TRIGGER_HINT = ("Azure ML schedules are time-based and it sends no event for a new data asset version. "
                "Either subscribe Event Grid to the datastore's storage account (Microsoft.Storage.BlobCreated, "
                "subject filter /blobServices/default/containers/<datastore container>/blobs/tollgate/datasets/) "
                "and let a Function or Logic App run `python tollgate.py retrain --dataset NAME`, or register and "
                "retrain in the same pipeline (docs/: `tollgate.py register-dataset` then `tollgate.py retrain`). "
                "A cron schedule retrains on a timetable: `tollgate.py schedule add`.")


def _utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def schedule_name(schedule_id: int) -> str:
    return f"{PREFIX}{int(schedule_id)}"


def schedule_id_of(name: str) -> int | None:
    m = _NAME.match(name or "")
    return int(m["id"]) if m else None


class AzureSchedules:
    """``ws.schedules`` of an Azure workspace (see the module docstring).

    ``AzureSchedules(ml_client, policy, datasets, models, jobs, audit, locks)``: the
    workspace's stores, its audit ``record`` callable and its ``OperationLocks`` (or None)."""

    def __init__(self, ml_client, policy, datasets, models, jobs, audit=None, locks=None, trail=None):
        self.ml, self.policy = ml_client, policy
        self.datasets, self.models, self.jobs = datasets, models, jobs
        self.audit, self.locks = audit, locks
        self.trail = trail          # callable: the workspace's BlobAudit (to read past schedule ids)

    # --- reads ----------------------------------------------------------------

    def _raw(self) -> list:
        with azure_call("list the schedules"):  # every view: the disabled ones too (default: enabled only)
            return [s for s in self.ml.schedules.list(list_view_type="All")
                    if s is not None and schedule_id_of(s.name) is not None]

    def _raw_one(self, schedule_id: int):
        sid = self._id(schedule_id)
        try:
            with azure_call(f"read schedule #{sid}"):
                return self.ml.schedules.get(schedule_name(sid))
        except NotFound:
            raise self._missing(sid) from None

    def list(self, now: datetime | None = None) -> list[Schedule]:
        raws = self._raw()
        firings = self._firings() if raws else []
        return sorted((self._to_schedule(s, firings, now) for s in raws), key=lambda s: s.id)

    def get(self, schedule_id: int, now: datetime | None = None) -> Schedule:
        return self._to_schedule(self._raw_one(schedule_id), self._firings(), now)

    def triggers(self) -> list[DatasetTrigger]:
        """None on Azure: Azure ML has no trigger on a new data asset version (``set_trigger``)."""
        return []

    def firings(self, limit: int = 50, *, schedule_id: int | None = None, dataset: str | None = None) -> list[Firing]:
        found = self._firings()
        if schedule_id is not None:
            found = [f for f in found if f.schedule_id == int(schedule_id)]
        if dataset is not None:
            found = [f for f in found if f.dataset == dataset]
        return found[:limit] if limit else found

    def scheduler(self) -> SchedulerStatus:
        return SchedulerStatus(running=True, detail="run by Azure ML (its schedules fire the jobs; no Tollgate "
                                                    "scheduler process)")

    # --- edits (ml_lead / admin) ----------------------------------------------

    def add(self, dataset: str, cron: str, actor: str, *, estimator: str | None = None,
            params: Mapping[str, Any] | None = None, enabled: bool = True) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        expr = rules.parse_cron(cron)
        version = self._trainable(dataset)
        estimator, params = self._recipe(estimator, params)
        now = datetime.now(timezone.utc)
        with self._lock(actor, "schedule.add"):
            sid = self._next_id()
            schedule = self._schedule(sid, expr, version, estimator, params, enabled, tags={
                TAG + "dataset": dataset, TAG + "dataset_version": str(version.version), TAG + "estimator": estimator,
                TAG + "params": json.dumps(params), TAG + "created_by": canonical(actor), TAG + "active_since": now.isoformat()})
            self._put(schedule, f"add schedule #{sid}")
        self._record(actor, "schedule.add", f"schedule #{sid}", role=role,
                     after={"dataset": dataset, "dataset_version": version.version, "cron": expr,
                            "estimator": estimator, "params": params, "enabled": bool(enabled),
                            "azure_schedule": schedule_name(sid)})
        return self.get(sid)

    def set_enabled(self, schedule_id: int, enabled: bool, actor: str) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        raw = self._raw_one(schedule_id)
        sid = schedule_id_of(raw.name)
        if bool(raw.is_enabled) != bool(enabled):
            raw._is_enabled = bool(enabled)         # what begin_enable / begin_disable set before their PUT
            if enabled:                             # resuming starts afresh (Azure ML does not catch up)
                raw.tags = {**(raw.tags or {}), TAG + "active_since": datetime.now(timezone.utc).isoformat()}
            self._put(raw, f"{'resume' if enabled else 'pause'} schedule #{sid}")
            self._record(actor, "schedule.enable" if enabled else "schedule.disable", f"schedule #{sid}",
                         role=role, before={"enabled": not enabled}, after={"enabled": bool(enabled)})
        return self.get(sid)

    def remove(self, schedule_id: int, actor: str) -> Schedule:
        role = rules.authorize_edit(self.policy, actor)
        removed = self.get(schedule_id)
        with azure_call(f"remove schedule #{removed.id}"):
            self.ml.schedules.begin_delete(schedule_name(removed.id)).result()
        self._record(actor, "schedule.remove", f"schedule #{removed.id}", role=role,
                     before={"dataset": removed.dataset, "cron": removed.cron, "estimator": removed.estimator,
                             "params": dict(removed.params), "enabled": removed.enabled})
        return removed

    def set_trigger(self, dataset: str, enabled: bool, actor: str, *, estimator: str | None = None,
                    params: Mapping[str, Any] | None = None) -> DatasetTrigger:
        rules.authorize_edit(self.policy, actor)
        self.datasets.versions(dataset)  # NotFound for an unknown dataset, as on the local workspace
        if not enabled:
            raise InvalidInput(f"there is no 'retrain on new version' trigger on {dataset} to turn off: "
                               "an Azure ML workspace has none", hint=TRIGGER_HINT)
        raise InvalidInput(f"Azure ML cannot start a run when a new version of {dataset} is registered: "
                           "it has no trigger on new data asset versions", hint=TRIGGER_HINT)

    # --- helpers --------------------------------------------------------------

    def _recipe(self, estimator: str | None, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        return rules.resolve_recipe(self.models, self.jobs, self.policy, estimator, params)

    def _trainable(self, dataset: str):
        """The latest passing version of ``dataset`` with labels (what the schedule will train)."""
        dv = self.datasets.latest_passing(dataset, labelled=True)  # NotFound for an unknown dataset
        if dv is None:
            raise InvalidInput(no_passing_version(dataset, self.policy.target, labelled=True)
                               + ": a schedule could not train on it",
                               hint="Register a version with labels that passes its data tests first.")
        return dv

    def _schedule(self, sid: int, expr: str, version, estimator: str, params: dict, enabled: bool, tags: dict):
        from azure.ai.ml.constants import TimeZone
        from azure.ai.ml.entities import CronTrigger, JobSchedule
        from azure.ai.ml.entities import PipelineJob
        name = schedule_name(sid)
        display = f"{rules.recipe_text(estimator, params)} · schedule #{sid}"
        props = {TAG + "schedule": name, TAG + "cron": expr}
        step = self.jobs.command_job(estimator, params, version, created_by=SYSTEM_ACTOR, display_name=display,
                                     properties=props)
        # a JobSchedule takes pipeline jobs (command jobs only in azure-ai-ml's private preview):
        # the retraining command job is its one step, with the same properties
        job = PipelineJob(jobs={"train": step}, display_name=display, experiment_name=self.jobs.settings.experiment,
                          compute=self.jobs.settings.compute, properties=dict(step.properties),
                          tags=dict(step.tags or {}))
        schedule = JobSchedule(name=name, trigger=CronTrigger(expression=expr, time_zone=TimeZone.UTC),
                               create_job=job, display_name=f"Tollgate: retrain {version.name} ({expr} UTC)",
                               description=f"Retrain {version.ref} with {rules.recipe_text(estimator, params)} "
                                           f"at '{expr}' (UTC); made by Tollgate", tags=tags)
        schedule._is_enabled = bool(enabled)
        return schedule

    def _next_id(self) -> int:
        """One more than any id ever used — by a schedule that exists, by one whose jobs are in the
        workspace, or by one the audit trail saw added — so an id is never reused (the firings
        of a removed schedule are never taken for another's)."""
        used = [schedule_id_of(s.name) or 0 for s in self._raw()]
        if getattr(self.jobs, "cache", None) is not None:
            self.jobs.cache.invalidate("jobs")   # the jobs as they are now, not as listed seconds ago
        used += [f.schedule_id or 0 for f in self._firings()]
        trail = self.trail() if callable(self.trail) else None
        if trail is not None:
            for rec in trail.find("schedule.add", limit=10_000):
                m = re.fullmatch(r"schedule #(\d+)", rec.target or "")
                used.append(int(m[1]) if m else 0)
        return 1 + max(used, default=0)

    def _put(self, schedule, what: str) -> None:
        with azure_call(what):
            self.ml.schedules.begin_create_or_update(schedule).result()

    def _lock(self, actor: str, op: str):
        from contextlib import nullcontext
        if self.locks is None:
            return nullcontext()
        return self.locks.hold("schedules", actor, op, "the schedules")

    def _record(self, actor: str, action: str, target: str, **kw: Any) -> None:
        if self.audit is not None:
            self.audit(actor, action, target, **kw)

    def _firings(self) -> list[Firing]:
        """The jobs the schedules started, newest first (the jobs listing, cached briefly)."""
        out = []
        for job in self.jobs._jobs():
            props = getattr(job, "properties", None) or {}
            name = props.get(TAG + "schedule")
            sid = schedule_id_of(name) if name else None
            if sid is None:
                continue
            created = _utc(getattr(getattr(job, "creation_context", None), "created_at", None))
            dataset, _, version = str(props.get(TAG + "dataset") or "").rpartition(":")
            try:
                params = json.loads(props.get(TAG + "params") or "{}")
            except ValueError:
                params = {}
            cron = props.get(TAG + "cron")
            due = rules.latest_due(cron, created, EPOCH) if cron and created else None
            out.append(Firing(id=int(created.timestamp() * 1000) if created else 0, kind="schedule",
                              dataset=dataset, schedule_id=sid, due_at=due,
                              dataset_version=int(version) if version.isdigit() else None,
                              estimator=str(props.get(TAG + "estimator") or ""), params=params,
                              fired_at=created or datetime.min.replace(tzinfo=timezone.utc), run_id=job.name))
        return sorted(out, key=lambda f: (f.fired_at, f.run_id or ""), reverse=True)

    def _to_schedule(self, raw, firings: list[Firing], now: datetime | None) -> Schedule:
        now = rules.utc(now or datetime.now(timezone.utc))
        tags = dict(raw.tags or {})
        sid = schedule_id_of(raw.name)
        expr = getattr(raw.trigger, "expression", "") or ""
        created = _utc(getattr(getattr(raw, "creation_context", None), "created_at", None)) or now
        active_since = _utc(tags.get(TAG + "active_since")) or created
        enabled = bool(raw.is_enabled)
        upcoming = rules.next_times(expr, max(now, active_since)) if enabled and expr else ()
        last = next((f for f in firings if f.schedule_id == sid), None)
        try:
            params = json.loads(tags.get(TAG + "params") or "{}")
        except ValueError:
            params = {}
        return Schedule(id=sid, dataset=tags.get(TAG + "dataset", ""), estimator=tags.get(TAG + "estimator", ""),
                        params=params, cron=expr, enabled=enabled, created_at=created,
                        created_by=tags.get(TAG + "created_by") or getattr(getattr(raw, "creation_context", None),
                                                                          "created_by", "") or "",
                        active_since=active_since, next_fire_at=upcoming, last_firing=last)

    @staticmethod
    def _id(schedule_id) -> int:
        try:
            return int(schedule_id)
        except (TypeError, ValueError):
            raise InvalidInput(f"a schedule id is a whole number, got {schedule_id!r}") from None

    def _missing(self, schedule_id) -> NotFound:
        known = sorted(schedule_id_of(s.name) for s in self._raw())
        return NotFound(f"schedule #{schedule_id} does not exist",
                        hint=f"Schedules: {', '.join(map(str, known)) or 'none'} (tollgate.py schedules).")


__all__ = ["AzureSchedules", "schedule_name", "schedule_id_of", "TRIGGER_HINT"]
