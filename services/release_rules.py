"""The release rules: which transitions are allowed (who may act: ``services.permissions``).

Backend-independent and enforced in services (never by hiding a button): every
backend's release service calls these before it changes anything, and raises
what they raise.
"""
from __future__ import annotations

from .entities import Deployment, ModelVersion, ReleaseState, SmokeTestResult, Stage
from .errors import Conflict, Forbidden, GateFailed, InvalidInput, NotFound
from .permissions import SYSTEM_ACTOR, authorize, same_identity
from .policy import Policy
from .stages import stage_words

# stages in which a version is in the release process: staged, under review, or serving
IN_RELEASE = (Stage.STAGING, Stage.AWAITING_APPROVAL, Stage.APPROVED, Stage.PRODUCTION)


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


def require_comment(what: str, comment: str | None) -> None:
    """Reject and rollback (and approve, when ``[release] approve_comment_required``) say why."""
    if not comment or not comment.strip():
        raise InvalidInput(f"{'an' if what[:1] in 'aeiou' else 'a'} {what} needs a comment saying why")


def check_approve(state: ReleaseState, actor: str) -> None:
    if state.stage == Stage.APPROVED:
        raise Conflict(f"{state.ref} is already approved (by {state.decided_by})")
    if state.stage != Stage.AWAITING_APPROVAL:
        raise Conflict(f"{state.ref} is {stage_words(state.stage)}; only a version that passed its staging smoke test "
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


def check_promote(state: ReleaseState, smoke: SmokeTestResult | None, gate_passed: bool, gate_reasons,
                  mv: ModelVersion | None = None) -> None:
    if mv is not None and mv.archived:
        raise Conflict(f"{mv.ref} is archived: an archived version cannot be promoted",
                       hint="Restore it on the Models page first (its approval stands).")
    if state.stage == Stage.REJECTED:
        raise Conflict(f"{state.ref} was rejected by {state.decided_by}: {state.decision_comment}")
    if state.stage != Stage.APPROVED:
        raise Conflict(f"{state.ref} is {stage_words(state.stage)}; only an approved version can be promoted",
                       hint="Deploy to staging, pass the smoke test, and get an ML lead's approval first.")
    if smoke is None or not smoke.passed:
        raise GateFailed(f"{state.ref} has no passing staging smoke test")
    if not gate_passed:
        raise GateFailed(f"{state.ref} does not pass the quality gate: " + "; ".join(gate_reasons))


def check_rollback(env: str, live: Deployment | None, back: Deployment | None, back_state: ReleaseState | None,
                   back_mv: ModelVersion | None) -> None:
    """A rollback gives the traffic to the warm previous deployment (``back``). On production that
    must be a previous champion that was not itself rolled back: a second rollback never brings
    back the version the first one took out (it needs a new approval)."""
    if live is None or back is None:
        raise Conflict(f"endpoint {env} has no previous deployment to roll back to",
                       hint="Rollback needs a warm previous deployment (kept after each promote).")
    if back_state is not None and back_state.stage == Stage.ROLLED_BACK:
        raise Conflict(f"{env} cannot be rolled back: its warm deployment {back.name} serves {back.model_ref}, "
                       f"which was itself rolled back, and there is no earlier champion to return to",
                       hint=f"{back.model_ref} needs a new deploy to staging and a new approval; promote an "
                            f"approved version instead.")
    if back_mv is not None and back_mv.archived:
        raise Conflict(f"{env} cannot be rolled back to {back.model_ref}: it is archived",
                       hint="Restore it on the Models page first.")


def check_archive(mv: ModelVersion, stage: Stage, serving: tuple[str, ...] | list[str] = ()) -> None:
    """The model registries ask this before archiving: the champion, a version in the release
    process (staged, under review, approved, in production) and one that takes an endpoint's
    traffic (``serving``: those endpoints) stay visible (an archived version can never be promoted)."""
    if mv.aliases:
        raise Conflict(f"{mv.ref} is the {', '.join(mv.aliases)} and cannot be archived",
                       hint="Move the alias to another version first.")
    if serving:
        raise Conflict(f"{mv.ref} serves {', '.join(serving)}: a version that is staged or serving cannot be "
                       f"archived", hint="Deploy another version there first.")
    if stage in IN_RELEASE:
        raise Conflict(f"{mv.ref} is {stage_words(stage)}: a version that is staged or serving "
                       f"cannot be archived", hint="Reject it (or roll it back) first.")
