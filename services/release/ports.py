"""What the release workflow needs from a backend: two narrow Protocols.

* ``EndpointDriver`` — the online endpoints as the workflow drives them: a fresh snapshot,
  a deployment of a model version created at 0 %, waited on until it answers, a traffic
  split, a deployment stopped, a request pinned to one deployment, a key rotated.
  Local: processes (the supervisor runs what the database says). Azure: ARM calls.
* ``Ledger`` — where release state lives and changes: release stages, the champion, smoke
  results, the audit trail, notification events and canary rollouts, changed in **one unit
  of work** (``unit()``), and the exclusive operation locks. Local: SQLite transactions and
  a lock table. Azure: model tags, one append block of the blob audit trail (records, the
  event and the rollout state together), blob leases.

Everything else — who may, which transitions are allowed, what a plan says, the order of the
steps, what happens on failure — is the workflow's (``services.release.workflow``), written
once. Methods raise only ``services.errors.ServiceError`` subclasses.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Mapping, Protocol

from ..canary import Rollout
from ..entities import AuditRecord, Endpoint, LatencyEvidence, ModelVersion, ReleaseState, ScoreResult, SmokeCase, \
    SmokeTestResult, Stage

Say = Callable[[str], None]
"""Reports what a step is doing while it runs (e.g. Azure's provisioning status), in words."""


class EndpointDriver(Protocol):
    """A backend's online endpoints, for the release workflow."""

    def names(self) -> list[str]:
        """The endpoints of the policy (staging, production)."""

    def snapshot(self, env: str) -> Endpoint:
        """The endpoint as it is now (never a cached read). ``NotFound`` for an unknown endpoint."""

    def busy(self, env: str) -> list[str]:
        """Changes in progress that Tollgate did not start (Azure: a deployment Updating), in words."""

    def ensure_running(self) -> None:
        """Make sure something serves what the state says should run (local: the supervisor)."""

    def create(self, env: str, name: str, mv: ModelVersion, actor: str, *, like: str | None, say: Say) -> None:
        """Deployment ``name`` of ``mv`` at 0 % traffic, replacing a deployment of that name;
        ``like`` names the deployment whose settings it copies. Returns once it is accepted."""

    def wait_healthy(self, env: str, name: str, say: Say) -> None:
        """Until the deployment answers. ``GateFailed`` (its console log in the hint) if it does not."""

    def shift(self, env: str, traffic: Mapping[str, int], say: Say) -> None:
        """Set the split (percent per deployment). Local: inside the caller's open transaction (the
        ledger's unit of work), so the split and its records commit together. Azure: an endpoint PUT,
        waited for."""

    def settle(self, env: str, traffic: Mapping[str, int]) -> None:
        """Return once the split is in force (local: the gateway routes by it)."""

    def stop(self, env: str, name: str, say: Say) -> None:
        """Stop (local) or delete (Azure: it costs money at 0 %) a deployment."""

    def invoke(self, env: str, payload: str | bytes | Mapping, *, deployment: str | None = None) -> ScoreResult:
        """One scoring request as a client sends it, pinned to ``deployment`` when given."""

    def console_log(self, env: str, deployment: str, tail: int = 40) -> str:
        """The last lines of a deployment's console log (for failure messages)."""

    def regenerate_key(self, env: str, which: str, say: Say) -> None:
        """A new ``primary`` or ``secondary`` key; the old one is refused once this returns."""


class UnitOfWork(Protocol):
    """Changes that are recorded together or not at all (``Ledger.unit()``)."""

    def set_stage(self, before: ReleaseState, stage: Stage, *, actor: str, role: str, action: str = "release.stage",
                  comment: str = "", **fields: Any) -> None:
        """A version's release stage (and ``deployed_by``, ``decided_by``, ``decision_comment``,
        ``smoke_test_id``, ``approved_against``), with its audit record."""

    def move_champion(self, name: str, version: int, *, actor: str, role: str) -> None:
        """Point the ``champion`` alias at ``version`` (audit: ``model.alias``)."""

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        """One audit record."""

    def emit(self, event: str, *, actor: str, summary: str, model: str | None = None, endpoint: str | None = None,
             details: Mapping[str, Any] | None = None) -> None:
        """One notification event (``services.notify``), delivered after the unit is recorded."""

    def save_rollout(self, rollout: Rollout) -> Rollout:
        """A canary rollout's state (``id == 0``: a new one, returned with its id)."""


class Ledger(Protocol):
    """Release state, the audit trail, notification events and rollouts of a backend."""

    def state(self, mv: ModelVersion) -> ReleaseState:
        """Where ``mv`` is in the lifecycle (``registered`` if it never left the registry)."""

    def states(self, name: str | None = None) -> list[ReleaseState]:
        """Every version that left ``registered``, newest change first."""

    def smoke_test(self, test_id: int) -> SmokeTestResult:
        """One smoke-test result. ``NotFound`` if missing."""

    def smoke_tests(self, limit: int) -> list[SmokeTestResult]:
        """Smoke-test results, newest first."""

    def save_smoke(self, env: str, deployment: str, mv: ModelVersion, actor: str, role: str, *, passed: bool,
                   summary: str, cases: tuple[SmokeCase, ...], latency: LatencyEvidence | None) -> SmokeTestResult:
        """Record a smoke test (and its audit record ``smoke_test``); returns it with its id."""

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        """The audit trail, newest first."""

    def record(self, actor: str, action: str, target: str, *, role: str, before: Mapping | None = None,
               after: Mapping | None = None, comment: str = "") -> None:
        """One audit record on its own (``deploy.started``, ``deploy.failed``…)."""

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[Rollout]:
        """Canary rollouts, newest first (``active``: running or paused only)."""

    def unit(self) -> ContextManager[UnitOfWork]:
        """A unit of work: everything done through it is recorded when the block ends without an
        exception, and nothing of it otherwise."""

    def exclusive(self, key: str, actor: str, op: str, what: str) -> ContextManager[None]:
        """Hold the lock ``key`` while the block runs; ``Conflict`` naming who holds it, for what
        (``what``: the thing it guards, in words). Refused, not queued."""


__all__ = ["Say", "EndpointDriver", "UnitOfWork", "Ledger"]
