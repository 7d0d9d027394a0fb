"""Who may change what: the one permission table of every write in Tollgate.

Every service method that changes anything — on every backend, called from the console,
the CLI or a pipeline — calls ``authorize(policy, actor, ACTION)`` before it reads or
writes, and records the role it returns in the audit record. Reads need no role. A user
with no role, or only ``support``, can change nothing.

Identities are e-mail addresses compared as one identity whatever their letter case:
``same_identity("Lee@contoso.com", "lee@contoso.com")`` is true, and ``canonical`` is the
form stored in audit records and release state.
"""
from __future__ import annotations

from .errors import Forbidden
from .policy import Policy

# The built-in principal used by demo seeding and automation inside the product (scheduler,
# supervisor, canary analysis); it cannot be chosen from the CLI or the console's picker.
SYSTEM_ACTOR = "tollgate-system"
SYSTEM_ROLE = "system"

_LEAD = frozenset({"ml_lead", "admin"})
_QA = frozenset({"qa", "admin"})
_ADMIN = frozenset({"admin"})
# training: the ML lead, and QA, whose pipelines retrain before they deploy (docs/ci-cd.md);
# the runner registers a run's model behind the gate as the run's submitter
_TRAIN = frozenset({"ml_lead", "qa", "admin"})

# action -> the roles that may do it
PERMISSIONS: dict[str, frozenset[str]] = {
    # data and training
    "register_dataset": _LEAD,
    "submit_run": _TRAIN,
    "cancel_run": _TRAIN,
    "register_collected_inputs": _LEAD,
    "edit_schedules": _LEAD,            # schedules and dataset triggers
    # the model registry
    "edit_model": _LEAD,                # tags and description
    "archive_model": _LEAD,             # archive and restore
    "register_model": _TRAIN,           # a run's model behind the gate, as the run's submitter
    "set_alias": _QA,                   # move an alias (the champion: a step of promote and rollback)
    # the release workflow
    "deploy": _QA,
    "smoke_test": frozenset({"qa", "ml_lead", "admin"}),
    "approve": _LEAD,
    "reject": _LEAD,
    "promote": _QA,                     # blue/green or canary; pausing and resuming a canary
    "rollback": _QA,                    # also aborting a canary
    # endpoints
    "invoke_staging": frozenset({"qa", "ml_lead", "admin"}),   # the console's Test panel, simulate
    "invoke_production": _QA,           # (any endpoint other than the policy's staging one counts as production)
    "operate_endpoints": _QA,           # start / stop the local endpoints (up, down)
    "set_traffic": _ADMIN,
    "regenerate_key": _ADMIN,
    "show_keys": _QA,
}

VERBS: dict[str, str] = {
    "register_dataset": "register a dataset version",
    "submit_run": "start a training run",
    "cancel_run": "cancel a training run",
    "register_collected_inputs": "register collected inputs as a dataset version",
    "edit_schedules": "change retraining schedules and triggers",
    "edit_model": "change a model version's tags or description",
    "archive_model": "archive or restore a model version",
    "register_model": "register a model",
    "set_alias": "move a model alias",
    "deploy": "deploy",
    "smoke_test": "run a smoke test",
    "approve": "approve a model version",
    "reject": "reject a model version",
    "promote": "promote to production",
    "rollback": "roll back",
    "invoke_staging": "send requests to the staging endpoint",
    "invoke_production": "send requests to the production endpoint",
    "operate_endpoints": "start or stop the endpoints",
    "set_traffic": "change traffic",
    "regenerate_key": "regenerate endpoint keys",
    "show_keys": "see endpoint keys",
}
assert VERBS.keys() == PERMISSIONS.keys()


def canonical(identity: str | None) -> str:
    """The one spelling of an identity: trimmed, lower case (e-mail addresses are case-insensitive)."""
    return (identity or "").strip().lower()


def same_identity(a: str | None, b: str | None) -> bool:
    """Whether two identities name the same person (``Lee@contoso.com`` is ``lee@contoso.com``)."""
    return bool(canonical(a)) and canonical(a) == canonical(b)


def roles_needed(action: str) -> str:
    """``"ml_lead or admin"``: for messages and the console's explanations."""
    return " or ".join(sorted(PERMISSIONS[action]))


def may(policy: Policy, actor: str | None, action: str) -> bool:
    """Whether ``actor`` may do ``action`` (for showing why a button will be refused; the
    services decide with ``authorize``)."""
    if canonical(actor) == SYSTEM_ACTOR:
        return True
    bound = policy.auth.bound_identity()
    if bound is not None and canonical(actor) != bound:
        return False
    return bool(set(policy.roles_of(actor or "")) & PERMISSIONS[action])


def invoke_action(policy: Policy, endpoint: str) -> str:
    """The action of sending requests to ``endpoint`` by hand (Test panel, ``simulate``): staging's is
    open to more roles than production's; an endpoint the policy does not name as staging is production."""
    return "invoke_staging" if endpoint == policy.endpoints.staging else "invoke_production"


def authorize(policy: Policy, actor: str | None, action: str) -> str:
    """The role under which ``actor`` may do ``action``; ``Forbidden`` naming the role needed otherwise."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}: add it to services.permissions.PERMISSIONS")
    if canonical(actor) == SYSTEM_ACTOR:
        return SYSTEM_ROLE
    if not canonical(actor):
        raise Forbidden("no identity given", hint="Pick who you are (console sidebar) or pass --as EMAIL.")
    bound = policy.auth.bound_identity()
    if bound is not None and canonical(actor) != bound:
        raise Forbidden(f"{actor} is not who runs this process: the policy binds the acting identity to the "
                        f"operating-system user, here {bound}",
                        hint="Act as yourself (leave out --as / TOLLGATE_AS), or log in as that user.")
    allowed = PERMISSIONS[action]
    roles = policy.roles_of(actor)
    for role in ("admin", *sorted(allowed)):
        if role in roles and role in allowed:
            return role
    has = ", ".join(roles) if roles else "no role"
    raise Forbidden(f"{actor} ({has}) may not {VERBS[action]}: that needs {roles_needed(action)}",
                    hint=f"Ask someone with that role, or an admin to map {actor} in the policy file's [roles].")


__all__ = ["SYSTEM_ACTOR", "SYSTEM_ROLE", "PERMISSIONS", "VERBS", "canonical", "same_identity", "roles_needed",
           "may", "authorize", "invoke_action"]
