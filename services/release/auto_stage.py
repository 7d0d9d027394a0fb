"""Auto-release to staging (``[release] auto_stage``): a candidate that a training run registered
behind the quality gate is deployed to staging and smoke-tested by Tollgate itself, and then
awaits an ML lead's approval, as if QA had deployed it.

The deploy is the release workflow's own (``ReleaseWorkflow.deploy`` as ``tollgate-system``): the
same blue/green steps, locks, smoke test, records and ``approval_requested`` notification as a
person's deploy, never a second copy. What this adds around it:

* **staging only**: the endpoint is the policy's staging one; production is never touched;
* **never beside another release operation**: it waits up to ``[release] auto_stage_wait_s`` for
  an operation holding staging (a deploy, a smoke test…), then skips;
* **the why, recorded**: one audit record ``release.auto_stage`` (actor ``tollgate-system``, the
  run that caused it, the outcome and the reason); when the version did not reach staging (its
  smoke test or health probe failed, staging stayed busy) also an ``auto_stage_failed``
  notification and the version's tag ``auto_stage`` saying so (Models page); a failed smoke test
  is on the Releases page as the version's evidence, the version stays out of staging.

Who calls it is the backend part that completes a run and registers its version (local: the
runner), which the workspace declares with the ``AUTO_STAGE`` capability; Azure ML retraining does
not register versions yet, so an Azure workspace does not declare it (``unavailable`` says so).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..entities import AUTO_STAGE, ModelVersion, WorkspaceInfo
from ..errors import Conflict, ServiceError
from ..permissions import SYSTEM_ACTOR, SYSTEM_ROLE
from ..policy import Policy
from .progress import Listener

ACTION = "release.auto_stage"
TAG = "auto_stage"
MAX_TAG = 500


@dataclass(frozen=True)
class AutoStage:
    outcome: str        # staged | refused (the probe or smoke test failed…) | skipped (staging stayed busy)
    reason: str


def unavailable(info: WorkspaceInfo, policy: Policy) -> str | None:
    """Why ``[release] auto_stage = true`` has no effect on this workspace, or ``None``."""
    if not policy.release.auto_stage or info.can(AUTO_STAGE):
        return None
    return (f"[release] auto_stage is on ({policy.source}), but the {info.kind} workspace cannot auto-stage: "
            f"retraining there does not register model versions yet, so nothing is deployed to staging by "
            f"itself; deploy a registered version with tollgate.py deploy or from the Releases page")


def stage_candidate(releases, mv: ModelVersion, run_id: str, *, progress: Listener | None = None) -> AutoStage:
    """Deploy ``mv`` (just registered by run ``run_id``, past the gate) to staging with its smoke test,
    as ``tollgate-system``; what happened, recorded as the module says. ``releases``: the workspace's
    ``ReleaseWorkflow``."""
    policy = releases.policy
    env = policy.endpoints.staging
    cause = {"run": run_id, "model": mv.ref, "endpoint": env}
    try:
        releases.deploy(mv.name, mv.version, env, SYSTEM_ACTOR, progress=progress,
                        wait_s=policy.release.auto_stage_wait_s)
    except Conflict as e:
        return _not_staged(releases, mv, cause, "skipped", f"{env} stayed busy: {e}")
    except ServiceError as e:
        return _not_staged(releases, mv, cause, "refused", str(e))
    stage = releases.state(mv.name, mv.version).stage.value.replace("_", " ")
    reason = f"deployed to {env} and smoke-tested; {mv.ref} is {stage}"
    releases.ledger.record(SYSTEM_ACTOR, ACTION, env, role=SYSTEM_ROLE, after={**cause, "outcome": "staged"},
                           comment=f"run {run_id} registered {mv.ref} past the gate ([release] auto_stage): {reason}")
    return AutoStage("staged", reason)


def _not_staged(releases, mv: ModelVersion, cause: dict, outcome: str, reason: str) -> AutoStage:
    summary = f"{mv.ref} (run {cause['run']}) was not deployed to {cause['endpoint']} automatically: {reason}"
    with releases.ledger.unit() as uow:
        uow.record(SYSTEM_ACTOR, ACTION, cause["endpoint"], role=SYSTEM_ROLE,
                   after={**cause, "outcome": outcome, "reason": reason},
                   comment=f"run {cause['run']} registered {mv.ref} past the gate ([release] auto_stage)")
        uow.emit("auto_stage_failed", actor=SYSTEM_ACTOR, model=mv.ref, endpoint=cause["endpoint"], summary=summary,
                 details={**cause, "outcome": outcome, "reason": reason})
    text = f"{outcome}: {reason}"
    releases.models.set_tags(mv.name, mv.version, {TAG: text if len(text) <= MAX_TAG else text[:MAX_TAG - 1] + "…"},
                             SYSTEM_ACTOR)
    return AutoStage(outcome, reason)


__all__ = ["AutoStage", "stage_candidate", "unavailable", "ACTION", "TAG"]
