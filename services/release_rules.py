"""The release rules: which transitions are allowed (who may act: ``services.permissions``).

Backend-independent and enforced in services (never by hiding a button): every
backend's release service calls these before it changes anything, and raises
what they raise.
"""
from __future__ import annotations

from .entities import ReleaseState, SmokeTestResult, Stage
from .errors import Conflict, Forbidden, GateFailed, InvalidInput, NotFound
from .permissions import SYSTEM_ACTOR, authorize, same_identity
from .policy import Policy

def check_deploy(policy: Policy, actor: str, env: str, mv, endpoints: list[str]) -> str:
    """Who may deploy ``mv`` (a ``ModelVersion``) to ``env``: the role, or the refusal.
    Production is reached by promote (only Tollgate itself deploys there directly:
    the demo's first champion)."""
    role = authorize(policy, actor, "deploy")
    if env == policy.endpoints.production:
        if actor != SYSTEM_ACTOR:
            raise Conflict("production is reached by promote, not deploy",
                           hint=f"python tollgate.py promote --model {mv.name} --version {mv.version}")
    elif env != policy.endpoints.staging:
        raise NotFound(f"endpoint {env!r} does not exist", hint=f"Endpoints: {', '.join(endpoints)}.")
    if mv.archived:
        raise Conflict(f"{mv.ref} is archived; restore it before deploying")
    return role


def check_traffic(ep, traffic) -> None:
    """An explicit split for ``ep`` (an ``Endpoint``): its running deployments, whole percentages
    adding up to 100 (or all 0)."""
    names = {d.name for d in ep.deployments if d.state != "stopped"}
    unknown = set(traffic) - names
    if unknown:
        raise InvalidInput(f"unknown deployment(s) on {ep.name}: {', '.join(sorted(unknown))}")
    if any(not isinstance(v, int) or v < 0 or v > 100 for v in traffic.values()) or sum(traffic.values()) not in (0, 100):
        raise InvalidInput("traffic must be whole percentages between 0 and 100 that add up to 100")


def check_approve(state: ReleaseState, actor: str) -> None:
    if state.stage == Stage.APPROVED:
        raise Conflict(f"{state.ref} is already approved (by {state.decided_by})")
    if state.stage != Stage.AWAITING_APPROVAL:
        raise Conflict(f"{state.ref} is {_stage(state)}; only a version that passed its staging smoke test "
                       f"can be approved", hint="Deploy it to staging first; the smoke test runs as part of it.")
    if same_identity(actor, state.deployed_by):
        raise Forbidden(f"{actor} deployed {state.ref} and may not also approve it (four eyes)",
                        hint="Another ML lead must approve it.")


def check_reject(state: ReleaseState, comment: str) -> None:
    if not comment or not comment.strip():
        raise InvalidInput("a rejection needs a comment saying why")
    if state.stage in (Stage.PRODUCTION,):
        raise Conflict(f"{state.ref} is in production; roll it back instead of rejecting it")
    if state.stage == Stage.REJECTED:
        raise Conflict(f"{state.ref} is already rejected")


def check_promote(state: ReleaseState, smoke: SmokeTestResult | None, gate_passed: bool, gate_reasons) -> None:
    if state.stage == Stage.REJECTED:
        raise Conflict(f"{state.ref} was rejected by {state.decided_by}: {state.decision_comment}")
    if state.stage != Stage.APPROVED:
        raise Conflict(f"{state.ref} is {_stage(state)}; only an approved version can be promoted",
                       hint="Deploy to staging, pass the smoke test, and get an ML lead's approval first.")
    if smoke is None or not smoke.passed:
        raise GateFailed(f"{state.ref} has no passing staging smoke test")
    if not gate_passed:
        raise GateFailed(f"{state.ref} does not pass the quality gate: " + "; ".join(gate_reasons))


def _stage(state: ReleaseState) -> str:
    return state.stage.value.replace("_", " ")
