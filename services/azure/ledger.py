"""The Azure workspace's release ledger (``services.release.ports.Ledger``).

Shared by every console and pipeline using the workspace:

* release stages: tags on the model versions (``services.azure.release_tags``); the champion:
  the model's ``champion`` alias (a tag of the model container);
* the audit trail, smoke-test results (records ``smoke_test`` with their cases and latency),
  notification events and canary rollouts: append blobs (``services.azure.audit``). A unit
  of work's records go in **one Append Block**, the event and the rollout's new state on the
  last record's line, so they are in the trail together or not at all; the current state of a
  rollout is its newest line;
* locks: blob leases (``services.azure.audit.OperationLocks``).

A unit of work writes the model tags first (a stage, the champion), then the one block: if a
tag write fails nothing is recorded; if the append fails after, the exception says so and the
trail lacks what the tags show (Azure has no transaction across the registry and storage).
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from .. import canary as cn
from ..entities import AuditRecord, LatencyEvidence, ModelVersion, ReleaseState, SmokeCase, SmokeTestResult, Stage
from ..errors import NotFound
from .audit import BlobAudit, OperationLocks
from .release_tags import TAG, state_of

STAGE_FIELDS = ("deployed_by", "decided_by", "decision_comment", "smoke_test_id", "approved_against")


def _to_smoke(rec: AuditRecord) -> SmokeTestResult:
    a = rec.after or {}
    env, _, dep = rec.target.partition("/")
    name, _, version = str(a.get("model", ":0")).rpartition(":")
    return SmokeTestResult(rec.id, a.get("endpoint", env), a.get("deployment", dep), name,
                           int(version) if version.isdigit() else 0, rec.at, rec.actor, bool(a.get("passed")),
                           a.get("summary", ""), tuple(SmokeCase(**c) for c in a.get("cases", ())),
                           LatencyEvidence.from_dict(a.get("latency")))


class AzureUnit:
    """Collects a unit of work; ``AzureLedger.unit`` writes it when the block ends."""

    def __init__(self, ledger: "AzureLedger"):
        self.ledger = ledger
        self.tags: list[tuple[ModelVersion, dict[str, str | None]]] = []
        self.champion: ModelVersion | None = None
        self.entries: list[dict[str, Any]] = []
        self.extras: dict[str, Any] = {}

    def set_stage(self, before: ReleaseState, stage: Stage, *, actor: str, role: str, action: str = "release.stage",
                  comment: str = "", **fields: Any) -> None:
        unknown = set(fields) - set(STAGE_FIELDS)
        if unknown:
            raise ValueError(f"unknown release field(s) {', '.join(sorted(unknown))}")
        tags: dict[str, str | None] = {TAG + "stage": stage.value,
                                        TAG + "updated_at": datetime.now(timezone.utc).isoformat()}
        tags.update({TAG + k: None if v is None else str(v) for k, v in fields.items()})
        self.tags.append((self.ledger.models.get(before.model_name, before.model_version), tags))
        self.record(actor, action, before.ref, role=role, before={"stage": before.stage.value},
                    after={"stage": stage.value}, comment=comment)

    def move_champion(self, name: str, version: int, *, actor: str, role: str) -> None:
        old = self.ledger.models.champion(name)
        self.champion = self.ledger.models.get(name, version)
        self.record(actor, "model.alias", f"{name}@champion", role=role,
                    before={"version": old.version} if old else None, after={"version": int(version)})

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        self.entries.append(dict(actor=actor, action=action, target=target, role=role, before=before, after=after,
                                 comment=comment))

    def emit(self, event: str, *, actor: str, summary: str, model: str | None = None, endpoint: str | None = None,
             details: Mapping[str, Any] | None = None) -> None:
        self.extras["event"] = {"event": event, "at": datetime.now(timezone.utc).isoformat(), "actor": actor,
                                "model": model, "endpoint": endpoint, "summary": summary,
                                "details": dict(details or {})}

    def save_rollout(self, rollout: cn.Rollout) -> cn.Rollout:
        if rollout.id == 0:
            rollout = cn.Rollout(**{**rollout.__dict__, "id": self.ledger.next_rollout_id()})
        self.extras["rollout"] = rollout.to_dict()
        return rollout

    def write(self) -> None:
        for mv, tags in self.tags:
            self.ledger.models.write_tags(mv, tags)
        if self.champion is not None:
            self.ledger.models.move_alias(self.champion, "champion")
        if self.extras and not self.entries:
            raise ValueError("an event or a rollout needs a record to ride on")
        if self.entries:
            self.entries[-1].update(self.extras)
            self.ledger.trail.record_many(self.entries)


class AzureLedger:
    """Release state on model tags, the rest in the blob audit trail (module docstring)."""

    def __init__(self, models, trail: BlobAudit, locks: OperationLocks):
        self.models, self.trail, self.locks = models, trail, locks

    # --- reads ---------------------------------------------------------------------------

    def state(self, mv: ModelVersion) -> ReleaseState:
        return state_of(mv)

    def states(self, name: str | None = None) -> list[ReleaseState]:
        found = [state_of(mv) for mv in self.models.versions(name) if mv.tags.get(TAG + "stage")]
        return sorted(found, key=lambda s: s.updated_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)

    def smoke_test(self, test_id: int) -> SmokeTestResult:
        rec = self.trail.get(test_id)
        if rec.action != "smoke_test" or not rec.after or "cases" not in rec.after:
            raise NotFound(f"smoke test {test_id} does not exist")
        return _to_smoke(rec)

    def smoke_tests(self, limit: int) -> list[SmokeTestResult]:
        return [_to_smoke(r) for r in self.trail.find("smoke_test", limit) if r.after and "cases" in r.after]

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        return self.trail.audit(limit)

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[cn.Rollout]:
        """The newest state of each rollout the trail holds (its last line), newest rollout first."""
        latest: dict[int, cn.Rollout] = {}
        for _, data in self.trail.find_extra("rollout"):
            r = cn.Rollout.from_dict(data)
            latest.setdefault(r.id, r)
        found = [r for r in sorted(latest.values(), key=lambda r: -r.id)
                 if (env is None or r.endpoint == env) and (not active or r.active)]
        return found[:limit]

    def next_rollout_id(self) -> int:
        return max((r.id for r in self.rollouts(limit=1)), default=0) + 1

    # --- writes --------------------------------------------------------------------------

    def save_smoke(self, env: str, deployment: str, mv: ModelVersion, actor: str, role: str, *, passed: bool,
                   summary: str, cases: tuple[SmokeCase, ...], latency: LatencyEvidence | None) -> SmokeTestResult:
        rec = self.trail.record(actor, "smoke_test", f"{env}/{deployment}", role=role, after={
            "passed": passed, "model": mv.ref, "summary": summary, "endpoint": env, "deployment": deployment,
            "cases": [c.__dict__ for c in cases], "latency": latency.to_dict() if latency else None})
        return _to_smoke(rec)

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        self.trail.record(actor, action, target, role=role, before=before, after=after, comment=comment)

    @contextmanager
    def unit(self) -> Iterator[AzureUnit]:
        uow = AzureUnit(self)
        yield uow
        uow.write()

    @contextmanager
    def exclusive(self, key: str, actor: str, op: str, what: str) -> Iterator[None]:
        """The lease ``locks/KEY``; once held, what this console read before is read again (another
        console may have changed it just before releasing the lock)."""
        with self.locks.hold(key, actor, op, what):
            self.trail.clear_cache()
            self.models.cache.invalidate("models")
            yield


__all__ = ["AzureLedger", "AzureUnit"]
