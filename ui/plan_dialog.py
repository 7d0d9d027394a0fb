"""The confirmation dialog of release actions (Releases page, canary panel, Endpoints page).

A button asks for a ``Request`` (which action on what); the dialog asks the release workflow
for its ``Plan`` (``ws.releases.plan_…``: what will change, the traffic before and after, the
stage changes, what happens on failure, warnings, or why it would be refused), shows it, and
on confirmation ``perform``-s exactly that plan: the workflow refuses if the endpoint or the
stage changed meanwhile. Long operations show their steps live (``ui.progress``). Plan lines
hold names and people's comments: they are shown as text, never read as markdown.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from services.entities import Plan, ProgressStep
from services.errors import ServiceError
from services.permissions import PERMISSIONS, VERBS
from services.release import step_text
from services.release.plans import traffic_text

from . import state
from .progress import run_with_steps
from .widgets import code, escaped, show_error

PENDING = "tollgate.pending_action"   # the Request awaiting confirmation (one dialog at a time)
PLANNED = "tollgate.pending_plan"     # (Request, Plan): the plan shown for it, computed once
FLASH = "tollgate.flash"              # the outcome of the last action, shown once at the top
CONFIRM = {"deploy": "Deploy to {env}", "smoke_test": "Run the smoke test", "approve": "Approve", "reject": "Reject",
           "promote": "Promote to {env}", "canary": "Start the canary", "rollback": "Roll back",
           "regenerate_key": "Regenerate the {key} key", "traffic": "Change the traffic", "pause": "Pause",
           "resume": "Continue", "abort": "Abort and roll back"}
CANARY_CONTROL = ("pause", "resume", "abort")


def who_may(action: str) -> str:
    return " or ".join(sorted(PERMISSIONS[action]))


# --- requests: a button asks for an action; the workflow plans it ------------------

@dataclass(frozen=True)
class Request:
    action: str                      # a plan action: deploy | smoke_test | approve | reject | promote | rollback |
                                     # regenerate_key
    title: str                       # the dialog's title (the plan is computed when the dialog opens)
    model: str | None = None
    version: int | None = None
    env: str | None = None
    key: str | None = None           # regenerate_key: primary | secondary
    strategy: str | None = None      # promote: None = the policy's [canary] strategy


def plan_of(ws, r: Request, actor: str | None = None) -> Plan:
    """The workflow's plan for a request (what the dialog shows and the action executes)."""
    rel = ws.releases
    if r.action == "deploy":
        return rel.plan_deploy(r.model, r.version, r.env)
    if r.action == "smoke_test":
        return rel.plan_smoke_test(r.model, r.version)
    if r.action == "approve":
        return rel.plan_approve(r.model, r.version, actor)
    if r.action == "reject":
        return rel.plan_reject(r.model, r.version)
    if r.action == "promote":
        return rel.plan_promote(r.model, r.version, strategy=r.strategy)
    if r.action == "rollback":
        return rel.plan_rollback(r.env)
    if r.action == "regenerate_key":
        return rel.plan_regenerate_key(r.env, r.key)
    if r.action in CANARY_CONTROL:
        return rel.plan_canary_control(r.action, r.env)
    raise ValueError(f"unknown action {r.action!r}")


def permission_of(plan: Plan) -> str:
    """The permission an action needs (a canary is promoted, paused and continued by whoever may promote;
    aborting it is a rollback; traffic is set_traffic)."""
    return {"canary": "promote", "pause": "promote", "resume": "promote", "abort": "rollback",
            "traffic": "set_traffic"}.get(plan.action, plan.action)


# --- performing a plan -------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    steps: tuple[ProgressStep, ...] = ()   # how the long ones went: each step with its time


def perform(ws, plan: Plan, actor: str, comment: str = "", progress=None) -> Outcome:
    """Do exactly what ``plan`` says as ``actor`` (the workflow refuses if the endpoint changed
    since it was computed). ``progress`` receives the steps. ServiceErrors (refusals included)
    propagate to the caller."""
    rel, a = ws.releases, plan.action
    if a == "deploy":
        ep = rel.deploy(plan.model_name, plan.model_version, plan.env, actor, plan=plan, progress=progress)
        return Outcome(True, f"{plan.ref} serves {plan.env} ({traffic_text(ep, plan.model_name)}): "
                             f"its health probe and smoke test passed.")
    if a == "smoke_test":
        result = rel.smoke_test(plan.env, actor, plan.deployment, progress=progress)
        return Outcome(result.passed, f"Smoke test of {plan.ref} on {plan.env}/{plan.deployment}: "
                                      f"{escaped(result.summary)}.")
    if a == "approve":
        rel.approve(plan.model_name, plan.model_version, actor, comment, plan=plan)
        return Outcome(True, f"{plan.ref} is approved by {code(actor)}; QA can promote it now.")
    if a == "reject":
        rel.reject(plan.model_name, plan.model_version, actor, comment, plan=plan)
        return Outcome(True, f"{plan.ref} is rejected by {code(actor)}.")
    if a in ("promote", "canary"):
        ep = rel.promote(plan.model_name, plan.model_version, actor, comment, plan=plan, progress=progress)
        if a == "canary":
            return Outcome(True, f"The canary of {plan.ref} serves {ep.traffic.get(plan.deployment, 0)} % of "
                                 f"{plan.env}; each step is judged on live telemetry.")
        return Outcome(True, f"{plan.ref} serves {plan.env}: {traffic_text(ep, plan.model_name)}.")
    if a == "rollback":
        ep = rel.rollback(plan.env, actor, comment, plan=plan, progress=progress)
        return Outcome(True, f"{plan.env} rolled back: {traffic_text(ep, ep.live.model_name if ep.live else '')}.")
    if a == "regenerate_key":
        rel.regenerate_key(plan.env, plan.key, actor, progress=progress)
        return Outcome(True, f"The {plan.key} key of {plan.env} is new; the old one is refused from now on.")
    if a in CANARY_CONTROL:
        act = {"pause": rel.pause_canary, "resume": rel.resume_canary, "abort": rel.abort_canary}[a]
        r = act(plan.env, actor, comment, plan=plan)
        return Outcome(True, f"Canary of {r.model_ref}: {r.state.replace('_', ' ')} at {r.step_label}.")
    raise ValueError(f"unknown action {a!r}")


# --- the confirmation dialog (shared with the Endpoints page) ------------------------

def ask(request: Request) -> None:
    """Button callback: open the confirmation dialog for ``request``."""
    st.session_state[PENDING] = request
    st.session_state.pop(PLANNED, None)


def _forget() -> None:
    st.session_state.pop(PENDING, None)
    st.session_state.pop(PLANNED, None)


def confirmation_dialog() -> None:
    """Call once at the end of a page: shows the pending request's dialog, if any."""
    request = st.session_state.get(PENDING)
    if isinstance(request, Request):
        st.dialog(request.title, width="large", on_dismiss=_forget)(_confirm)(request)


def render_plan(plan: Plan) -> None:
    st.markdown("\n".join(f"- {escaped(line)}" for line in plan.changes))
    for warning in plan.warnings:
        st.warning(escaped(warning), icon="⚠️")
    if plan.refused:
        st.error(f"This will be refused: {escaped(plan.refused)}", icon="⛔")


def _confirm(request: Request) -> None:
    ws, actor = state.workspace(), state.actor()
    roles = ws.policy.roles_of(actor)
    planned = st.session_state.get(PLANNED)
    if not (isinstance(planned, tuple) and planned[0] == request):
        try:
            planned = (request, plan_of(ws, request, actor))
        except ServiceError as e:
            show_error(e)
            if st.button("Close", key="dialog.cancel"):
                _forget()
                st.rerun()
            return
        st.session_state[PLANNED] = planned
    plan = planned[1]
    st.markdown(f"Acting as {code(actor)} ({', '.join(roles) or 'no role'}). **What will change:**")
    render_plan(plan)
    needed = permission_of(plan)
    if not set(roles) & PERMISSIONS[needed]:
        st.warning(f"To {VERBS[needed]} you need the role {who_may(needed)}; the service will refuse "
                   f"{code(actor)}. Pick another identity in the sidebar.", icon="🔒")
    comment = ""
    if plan.comment != "none":
        comment = st.text_area("Comment" + (" (required: say why)" if plan.comment == "required" else " (optional)"),
                               key="dialog.comment", height=80)
    ok, cancel = st.columns([1, 1])
    label = CONFIRM.get(plan.action, "Confirm").format(env=plan.env, key=plan.key)
    confirmed = ok.button(label, type="primary", key="dialog.confirm", width="stretch", disabled=bool(plan.refused))
    if cancel.button("Cancel", key="dialog.cancel", width="stretch"):
        _forget()
        st.rerun()
    if not confirmed:
        return
    try:
        if plan.long:
            ended: list[ProgressStep] = []

            def work(listener) -> Outcome:
                def tell(step: ProgressStep) -> None:
                    listener(step)
                    if step.state != "running":
                        ended.append(step)
                return perform(ws, plan, actor, comment, tell)
            with st.status(f"{plan.title}…", expanded=True) as status:
                try:
                    outcome = replace(run_with_steps(work, status, plan.title), steps=tuple(ended))
                except ServiceError:
                    status.update(label=f"{plan.title}: not done", state="error", expanded=True)
                    raise
                status.update(label=f"{plan.title}: done", state="complete")
        else:
            outcome = perform(ws, plan, actor, comment)
    except ServiceError as e:
        state.after_write()  # a refused or failed deploy still writes (audit, a stopped deployment)
        st.session_state.pop(PLANNED, None)   # the next look computes the plan again
        show_error(e)
        return
    state.after_write()
    st.session_state[FLASH] = outcome
    _forget()
    st.rerun()


def flash() -> None:
    """The outcome of the last confirmed action, once."""
    outcome = st.session_state.pop(FLASH, None)
    if outcome is not None:
        (st.success if outcome.ok else st.warning)(outcome.message, icon="✅" if outcome.ok else "⚠️")
        if outcome.steps:
            st.caption(" · ".join(escaped(step_text(s)) for s in outcome.steps))
