"""The Releases page: each candidate's way to production, the gates' evidence side by
side, the release actions behind confirmations, and the audit trail.

Every action is a ``Plan`` (what will change, in words) and ``perform`` (the service
call under the acting identity). The page shows the plan in an ``st.dialog`` and
performs it on confirmation; tests call both directly. Roles are enforced by the
services: every button is shown to everyone and a refusal is shown as it comes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import pandas as pd
import streamlit as st

from services.entities import (AuditRecord, CheckStatus, Comparison, DataTestResult, Deployment, Endpoint,
                               ModelVersion, ReleaseState, SmokeTestResult, Stage)
from services.errors import Conflict, NotFound, ServiceError
from services.policy import Policy
from services.permissions import PERMISSIONS, VERBS

from . import rollout_view, state
from .progress import run_watching_endpoint
from .widgets import BETTER, NEUTRAL, WORSE, badge, fmt_metric, guard, show_error

T = TypeVar("T")

COLORS = ("blue", "green")   # deployment names, as the local backend alternates them
AUDIT_LIMIT = 5000           # newest events loaded for the table (the CSV holds what is shown)
PENDING = "tollgate.pending_action"   # the Plan awaiting confirmation (one dialog at a time)
FLASH = "tollgate.flash"              # the outcome of the last action, shown once at the top

STEPS = ("staging", "awaiting approval", "approved", "production")
STAGE_ICON = {
    Stage.REGISTERED: "⚪", Stage.STAGING: "🟡", Stage.AWAITING_APPROVAL: "⏳", Stage.APPROVED: "👍",
    Stage.REJECTED: "❌", Stage.PRODUCTION: "🟢", Stage.RETIRED: "💤", Stage.ROLLED_BACK: "↩️",
}
STAGE_TEXT = {
    Stage.REGISTERED: "registered (not deployed)", Stage.STAGING: "in staging, smoke test not passed",
    Stage.AWAITING_APPROVAL: "awaiting approval", Stage.APPROVED: "approved", Stage.REJECTED: "rejected",
    Stage.PRODUCTION: "in production", Stage.RETIRED: "retired (replaced in production)",
    Stage.ROLLED_BACK: "rolled back",
}
# how far along STEPS each stage got (index of the last step reached; -1 = none)
REACHED = {Stage.REGISTERED: -1, Stage.STAGING: 0, Stage.AWAITING_APPROVAL: 1, Stage.APPROVED: 2,
           Stage.REJECTED: 2, Stage.PRODUCTION: 3, Stage.RETIRED: 3, Stage.ROLLED_BACK: 3}


# --- words for things -----------------------------------------------------------

def stage_badge(stage: Stage) -> str:
    return f"{STAGE_ICON[stage]} {STAGE_TEXT[stage]}"


def short(model_name: str, version: int, policy_model: str) -> str:
    """``v3`` for the policy's model, ``other-model:3`` otherwise."""
    return f"v{version}" if model_name == policy_model else f"{model_name}:{version}"


def dep_label(d: Deployment, policy_model: str) -> str:
    return f"{d.name} ({short(d.model_name, d.model_version, policy_model)})"


def traffic_text(ep: Endpoint, policy_model: str) -> str:
    """``blue (v1) 100 %`` — the deployments that take traffic now."""
    serving = [f"{dep_label(d, policy_model)} {d.traffic} %" for d in ep.deployments if d.traffic > 0]
    return " + ".join(serving) or "no traffic"


def journey(stage: Stage) -> list[str]:
    """One mark per step of STEPS: ✅ reached, ❌ refused there, ↩️ / 💤 left production, ○ not yet."""
    reached = REACHED[stage]
    marks = ["✅" if i <= reached else "○" for i in range(len(STEPS))]
    if stage == Stage.STAGING:
        marks[0] = "🟡"
    elif stage == Stage.REJECTED:
        marks[2] = "❌"
    elif stage == Stage.ROLLED_BACK:
        marks[3] = "↩️"
    elif stage == Stage.RETIRED:
        marks[3] = "💤"
    return marks


def who_may(action: str) -> str:
    return " or ".join(sorted(PERMISSIONS[action]))


# --- plans: what an action will change, said before it happens --------------------

@dataclass(frozen=True)
class Plan:
    action: str                      # a key of release_rules.PERMISSIONS
    title: str                       # the dialog's title
    changes: tuple[str, ...]         # exactly what will change, one line each
    model: str | None = None
    version: int | None = None
    env: str | None = None
    deployment: str | None = None
    key: str | None = None           # regenerate_key: primary | secondary
    comment: str = "none"            # none | optional | required
    long: bool = False               # a deploy: 10–25 s, shown with progress
    confirm: str = "Confirm"

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"


def _new_colour(ep: Endpoint) -> tuple[str, Deployment | None]:
    """The deployment a blue/green step creates (the colour not serving) and the warm one it replaces."""
    live = ep.live
    name = next(c for c in COLORS if c != (live.name if live else None))
    replaced = next((d for d in ep.deployments if d.name == name and d.state != "stopped"), None)
    return name, replaced


def plan_deploy(policy: Policy, staging: Endpoint, mv: ModelVersion, release: ReleaseState) -> Plan:
    pm = policy.model_name
    v = short(mv.name, mv.version, pm)
    new, replaced = _new_colour(staging)
    live = staging.live
    after_stage = release.stage if release.stage in (Stage.APPROVED, Stage.PRODUCTION) else Stage.AWAITING_APPROVAL
    lines = [f"{staging.name}: new deployment **{new}** ({mv.ref}) starts"
             + (f" beside {dep_label(live, pm)}" if live else "") + " at 0 % traffic",
             *([f"the warm deployment {dep_label(replaced, pm)} is stopped and replaced"] if replaced else []),
             f"health probe, then the smoke test through the gateway ({policy.smoke.cases} held-out rows "
             f"and one malformed request, prediction parity within {policy.smoke.tolerance:g})",
             f"if both pass, {staging.name} traffic: {traffic_text(staging, pm)} → **{new} ({v}) 100 %**"
             + (f"; {live.name} stays warm" if live else ""),
             f"release stage of {v}: {STAGE_TEXT[release.stage]} → **{STAGE_TEXT[after_stage]}**"
             if after_stage != release.stage else f"release stage of {v} stays {STAGE_TEXT[release.stage]}",
             f"if the probe or the smoke test fails, {staging.name} traffic stays as it is; "
             f"production is not touched"]
    return Plan("deploy", f"Deploy {mv.ref} to {staging.name}", tuple(lines), mv.name, mv.version,
                staging.name, long=True, confirm=f"Deploy to {staging.name}")


def deployment_of(endpoints: list[Endpoint], mv: ModelVersion, prefer: str) -> tuple[str, Deployment] | None:
    """Where ``mv`` runs: on the ``prefer`` endpoint first, a deployment taking traffic first."""
    found = [(ep.name, d) for ep in endpoints for d in ep.deployments
             if d.model_ref == mv.ref and d.state != "stopped"]
    found.sort(key=lambda item: (item[0] != prefer, -item[1].traffic))
    return found[0] if found else None


def plan_smoke_test(policy: Policy, endpoints: list[Endpoint], mv: ModelVersion) -> Plan:
    where = deployment_of(endpoints, mv, policy.endpoints.staging)
    title = f"Run the smoke test of {mv.ref}"
    if where is None:
        return Plan("smoke_test", title, (f"{mv.ref} is not deployed on any endpoint: there is nothing to test. "
                                          f"Deploy it to {policy.endpoints.staging} first.",), mv.name, mv.version)
    env, dep = where
    lines = (f"sends {policy.smoke.cases} held-out rows of {mv.dataset}:{mv.dataset_version} and one malformed "
             f"request to **{env}/{dep.name}** ({mv.ref}) through the gateway, pinned with the header "
             f"`azureml-model-deployment: {dep.name}`",
             f"checks the HTTP status, the response schema and prediction parity with the registered model "
             f"offline (tolerance {policy.smoke.tolerance:g})",
             "the result is stored and recorded in the audit trail; traffic and release stages do not change")
    return Plan("smoke_test", title, lines, mv.name, mv.version, env, dep.name, confirm="Run the smoke test")


def plan_approve(policy: Policy, mv: ModelVersion, release: ReleaseState) -> Plan:
    v = short(mv.name, mv.version, policy.model_name)
    deployer = f"`{release.deployed_by}`" if release.deployed_by else "nobody yet"
    lines = (f"release stage of {v}: {STAGE_TEXT[release.stage]} → **approved**",
             "your name, the time and your comment go into the audit trail",
             f"nothing is deployed: QA promotes it to {policy.endpoints.production} afterwards",
             f"four eyes: whoever deployed it ({deployer}) may not approve it")
    return Plan("approve", f"Approve {mv.ref}", lines, mv.name, mv.version, comment="optional", confirm="Approve")


def plan_reject(policy: Policy, mv: ModelVersion, release: ReleaseState) -> Plan:
    v = short(mv.name, mv.version, policy.model_name)
    lines = (f"release stage of {v}: {STAGE_TEXT[release.stage]} → **rejected**",
             f"it can no longer be promoted (a new deploy to {policy.endpoints.staging} re-opens its review)",
             "your name, the time and your comment (required: say why) go into the audit trail",
             "nothing is undeployed: traffic does not change")
    return Plan("reject", f"Reject {mv.ref}", lines, mv.name, mv.version, comment="required", confirm="Reject")


def plan_promote(policy: Policy, production: Endpoint, mv: ModelVersion, champion: ModelVersion | None,
                 release: ReleaseState) -> Plan:
    pm = policy.model_name
    v = short(mv.name, mv.version, pm)
    title = f"Promote {mv.ref} to {production.name}"
    live = production.live
    if live and live.model_ref == mv.ref and release.stage == Stage.PRODUCTION:
        return Plan("promote", title, (f"{mv.ref} already serves {production.name}: nothing changes",),
                    mv.name, mv.version, production.name)
    new, replaced = _new_colour(production)
    lines = [f"{production.name}: new deployment **{new}** ({mv.ref}) starts"
             + (f" beside {dep_label(live, pm)}" if live else "")
             + " at 0 % traffic; health probe and smoke test through the gateway",
             *([f"the warm deployment {dep_label(replaced, pm)} (today's rollback target) is stopped and replaced"]
               if replaced else []),
             f"{production.name} traffic: {traffic_text(production, pm)} → **{new} ({v}) 100 %**"
             + (f"; {live.name} stays warm for rollback" if live else ""),
             f"champion alias moves {short(champion.name, champion.version, pm) if champion else '(none)'} → **{v}**",
             f"release stage: {v} {STAGE_TEXT[release.stage]} → **in production**"
             + (f"; {short(live.model_name, live.model_version, pm)} in production → retired"
                if live and live.model_ref != mv.ref else ""),
             f"if the probe or the smoke test fails, {production.name} traffic stays as it is"]
    return Plan("promote", title, tuple(lines), mv.name, mv.version, production.name, comment="optional",
                long=True, confirm=f"Promote to {production.name}")


def warm_previous(ep: Endpoint) -> Deployment | None:
    """The deployment a rollback gives the traffic back to: healthy, at 0 %, not the live one."""
    live = ep.live
    return next((d for d in ep.deployments if d is not live and d.state == "healthy" and d.traffic == 0), None)


def plan_rollback(policy: Policy, ep: Endpoint) -> Plan:
    pm = policy.model_name
    title = f"Roll back {ep.name}"
    live, back = ep.live, warm_previous(ep)
    if live is None or back is None:
        why = "nothing serves it" if live is None else "it has no warm previous deployment"
        return Plan("rollback", title, (f"{ep.name} cannot be rolled back: {why}. A rollback needs the previous "
                                        f"deployment kept warm by a promote.",), env=ep.name, comment="optional")
    lv, bv = short(live.model_name, live.model_version, pm), short(back.model_name, back.model_version, pm)
    lines = [f"{ep.name} traffic: {traffic_text(ep, pm)} → **{back.name} ({bv}) 100 %** "
             f"(instant: {back.name} is already running)",
             f"{live.name} ({lv}) stays deployed at 0 %"]
    if ep.name == policy.endpoints.production:
        lines += [f"champion alias moves {lv} → **{bv}**",
                  f"release stage: {lv} in production → rolled back; {bv} → in production"]
    return Plan("rollback", title, tuple(lines), env=ep.name, comment="optional", confirm="Roll back")


def plan_regenerate_key(ep: Endpoint, which: str) -> Plan:
    other = "secondary" if which == "primary" else "primary"
    lines = (f"{ep.name}: the **{which}** key is replaced by a new random key",
             f"clients still using the old {which} key get **401 Unauthorized** from that moment",
             f"the {other} key keeps working: move clients to it first for a rotation without downtime",
             "recorded in the audit trail")
    return Plan("regenerate_key", f"Regenerate the {which} key of {ep.name}", lines, env=ep.name, key=which,
                confirm=f"Regenerate the {which} key")


# --- performing a plan -------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def perform(ws, plan: Plan, actor: str, comment: str = "",
            run: Callable[[Callable[[], T]], T] = lambda work: work()) -> Outcome:
    """Do what ``plan`` says as ``actor``. ``run`` executes the service call (the page passes
    one that shows progress). ServiceErrors (refusals included) propagate to the caller."""
    rel, a = ws.releases, plan.action
    if a == "deploy":
        ep = run(lambda: rel.deploy(plan.model, plan.version, plan.env, actor))
        return Outcome(True, f"{plan.ref} serves {plan.env} ({traffic_text(ep, plan.model)}): "
                             f"its health probe and smoke test passed.")
    if a == "smoke_test":
        if plan.env is None:
            raise Conflict(f"{plan.ref} is not deployed on any endpoint", hint="Deploy it to staging first.")
        result = run(lambda: rel.smoke_test(plan.env, actor, plan.deployment))
        return Outcome(result.passed, f"Smoke test of {plan.ref} on {plan.env}/{plan.deployment}: {result.summary}.")
    if a == "approve":
        rel.approve(plan.model, plan.version, actor, comment)
        return Outcome(True, f"{plan.ref} is approved by `{actor}`; QA can promote it now.")
    if a == "reject":
        rel.reject(plan.model, plan.version, actor, comment)
        return Outcome(True, f"{plan.ref} is rejected by `{actor}`.")
    if a == "promote":
        ep = run(lambda: rel.promote(plan.model, plan.version, actor, comment))
        return Outcome(True, f"{plan.ref} serves {plan.env}: {traffic_text(ep, plan.model)}.")
    if a == "rollback":
        ep = run(lambda: rel.rollback(plan.env, actor, comment))
        return Outcome(True, f"{plan.env} rolled back: {traffic_text(ep, ep.live.model_name if ep.live else '')}.")
    if a == "regenerate_key":
        rel.regenerate_key(plan.env, plan.key, actor)
        return Outcome(True, f"The {plan.key} key of {plan.env} is new; the old one is refused from now on.")
    raise ValueError(f"unknown action {a!r}")


def with_progress(ws, plan: Plan, status) -> Callable[[Callable[[], T]], T]:
    """Runs the service call in a worker thread while the page reports what the endpoint
    does (deployment starting → healthy, traffic shifting), so 20 s are not a frozen screen."""
    def run(work: Callable[[], T]) -> T:
        return run_watching_endpoint(ws, plan.env, status, work,
                                     lambda d: dep_label(d, ws.policy.model_name), plan.title)
    return run


# --- the confirmation dialog (shared with the Endpoints page) ------------------------

def ask(plan: Plan) -> None:
    """Button callback: open the confirmation dialog for ``plan``."""
    st.session_state[PENDING] = plan


def _forget() -> None:
    st.session_state.pop(PENDING, None)


def confirmation_dialog() -> None:
    """Call once at the end of a page: shows the pending plan's dialog, if any."""
    plan = st.session_state.get(PENDING)
    if isinstance(plan, Plan):
        st.dialog(plan.title, width="large", on_dismiss=_forget)(_confirm)(plan)


def _confirm(plan: Plan) -> None:
    ws, actor = state.workspace(), state.actor()
    roles = ws.policy.roles_of(actor)
    st.markdown(f"Acting as `{actor}` ({', '.join(roles) or 'no role'}). **What will change:**")
    st.markdown("\n".join(f"- {line}" for line in plan.changes))
    if not set(roles) & PERMISSIONS[plan.action]:
        st.warning(f"To {VERBS[plan.action]} you need the role {who_may(plan.action)}; the service will refuse "
                   f"`{actor}`. Pick another identity in the sidebar.", icon="🔒")
    comment = ""
    if plan.comment != "none":
        comment = st.text_area("Comment" + (" (required: say why)" if plan.comment == "required" else " (optional)"),
                               key="dialog.comment", height=80)
    ok, cancel = st.columns([1, 1])
    confirmed = ok.button(plan.confirm, type="primary", key="dialog.confirm", width="stretch")
    if cancel.button("Cancel", key="dialog.cancel", width="stretch"):
        _forget()
        st.rerun()
    if not confirmed:
        return
    try:
        if plan.long:
            with st.status(f"{plan.title}…", expanded=True) as status:
                try:
                    outcome = perform(ws, plan, actor, comment, run=with_progress(ws, plan, status))
                except ServiceError:
                    status.update(label=f"{plan.title}: not done", state="error", expanded=True)
                    raise
                status.update(label=f"{plan.title}: done", state="complete")
        else:
            outcome = perform(ws, plan, actor, comment)
    except ServiceError as e:
        state.after_write()  # a refused or failed deploy still writes (audit, a stopped deployment)
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


# --- data shaping for the page (no streamlit) -----------------------------------

def board_versions(versions: list[ModelVersion], states: list[ReleaseState],
                   champion: ModelVersion | None) -> list[ModelVersion]:
    """Versions on the board: every one with a release state, and registered candidates
    newer than the champion (not archived), newest first."""
    released = {(s.model_name, s.model_version) for s in states}
    shown = [v for v in versions if (v.name, v.version) in released
             or (not v.archived and (champion is None or v.version > champion.version))]
    return sorted(shown, key=lambda v: -v.version)


def board_frame(versions: list[ModelVersion], states: dict[int, ReleaseState]) -> pd.DataFrame:
    rows = []
    for v in versions:
        s = states.get(v.version) or ReleaseState(v.name, v.version, Stage.REGISTERED)
        marks = journey(s.stage)
        rows.append({"version": v.ref, "estimator": v.estimator, "stage": stage_badge(s.stage),
                     **dict(zip(STEPS, marks)),
                     "deployed by": s.deployed_by or "", "decided by": s.decided_by or "",
                     "updated": s.updated_at})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["updated"] = pd.to_datetime(frame["updated"], utc=True)
    return frame


def delta_verdict(delta: float | None, direction: str) -> str:
    if delta is None or delta == 0:
        return "same"
    return "better" if (delta < 0) == (direction == "lower") else "worse"


def gate_frame(comparison: Comparison, policy: Policy) -> pd.DataFrame:
    """One row per metric: candidate, champion, Δ, better/worse, and the gate's verdict on it."""
    checks = {c.metric: c for c in comparison.gate.checks}
    metrics = list(dict.fromkeys([*checks, *comparison.candidate_metrics]))
    rows = []
    for m in metrics:
        cand, champ = comparison.candidate_metrics.get(m), comparison.champion_metrics.get(m)
        delta = None if cand is None or champ is None else cand - champ
        check = checks.get(m)
        rows.append({"metric": m, "candidate": cand, "champion": champ, "Δ": delta,
                     "Δ %": None if delta is None or not champ else delta / abs(champ),
                     "verdict": delta_verdict(delta, policy.direction(m)),
                     "gate": "—" if check is None else ("✅" if check.passed else "❌"),
                     "why": "" if check is None else check.reason})
    return pd.DataFrame(rows)


def styled_gate(frame: pd.DataFrame):
    """For display: values as text, Δ with its relative change, green when better, red when worse."""
    colours = {"better": BETTER, "worse": WORSE, "same": NEUTRAL}
    shown = pd.DataFrame({
        "metric": frame["metric"],
        "candidate": [fmt_metric(v) for v in frame["candidate"]],
        "champion": [fmt_metric(v) for v in frame["champion"]],
        "Δ": [("—" if pd.isna(d) else f"{d:+.3g}" + ("" if pd.isna(p) else f" ({p:+.1%})"))
              for d, p in zip(frame["Δ"], frame["Δ %"])],
        "gate": frame["gate"],
    })
    css = pd.DataFrame("", index=shown.index, columns=shown.columns)
    css["Δ"] = [f"color: {colours[v]}; font-weight: 600" for v in frame["verdict"]]
    return shown.style.apply(lambda _: css, axis=None)


def data_tests_frame(tests: list[DataTestResult]) -> pd.DataFrame:
    """The checks that did not pass, worst first."""
    order = {CheckStatus.FAIL: 0, CheckStatus.WARN: 1, CheckStatus.PASS: 2}
    bad = sorted((t for t in tests if t.status != CheckStatus.PASS), key=lambda t: order[t.status])
    return pd.DataFrame([{"status": badge(t.status), "check": t.check, "column": t.column or "—",
                          "detail": t.detail} for t in bad], columns=["status", "check", "column", "detail"])


def latest_smoke(tests: list[SmokeTestResult], mv: ModelVersion) -> SmokeTestResult | None:
    return next((t for t in tests if t.model_name == mv.name and t.model_version == mv.version), None)


def smoke_cases_frame(result: SmokeTestResult) -> pd.DataFrame:
    return pd.DataFrame([{"case": c.name, "passed": "✅" if c.passed else "❌", "expected": c.expected,
                          "got": c.got, "status": c.status, "detail": c.detail} for c in result.cases],
                        columns=["case", "passed", "expected", "got", "status", "detail"])


def _compact(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)


def readable(value: Any, top: bool = True) -> str:
    """``{"traffic": {"blue": 0}}`` → ``traffic: {blue: 0}``: a before/after for people, without JSON quotes."""
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {readable(v, False)}" for k, v in value.items())
        return inner if top else "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(readable(v, False) for v in value) + "]"
    return "" if value is None else str(value)


def audit_frame(records: list[AuditRecord]) -> pd.DataFrame:
    return pd.DataFrame([{"time": r.at, "actor": r.actor, "role": r.role, "action": r.action, "target": r.target,
                          "comment": r.comment, "before": _compact(r.before), "after": _compact(r.after), "id": r.id}
                         for r in records],
                        columns=["time", "actor", "role", "action", "target", "comment", "before", "after", "id"])


def filter_audit(frame: pd.DataFrame, actions: list[str], actors: list[str], target: str) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if actions:
        keep &= frame["action"].isin(actions)
    if actors:
        keep &= frame["actor"].isin(actors)
    if target.strip():
        keep &= frame["target"].str.contains(target.strip(), case=False, regex=False)
    return frame[keep]


def audit_csv(frame: pd.DataFrame) -> bytes:
    """The audit table as CSV (times in UTC, ISO 8601), what the download button serves."""
    out = frame.copy()
    out["time"] = [t.isoformat() if isinstance(t, datetime) else t for t in out["time"]]
    return out.to_csv(index=False).encode("utf-8")


# --- rendering ----------------------------------------------------------------

def render() -> None:
    ws, uri = state.workspace(), state.uri()
    policy = ws.policy
    st.title("Releases")
    actor = state.actor()
    roles = policy.roles_of(actor)
    st.caption(f"Model `{policy.model_name}` · policy `{policy.source}` · acting as `{actor}` "
               f"({', '.join(roles) or 'no role: read-only'})")
    if ws.releases is None or ws.endpoints is None:
        st.info("This workspace has no release service: endpoints and releases are not available here.")
        return
    flash()

    endpoints = {ep.name: ep for ep in state.endpoints(uri)}
    staging, production = endpoints.get(policy.endpoints.staging), endpoints.get(policy.endpoints.production)
    champion = state.champion(uri, policy.model_name)
    try:  # a workspace where the policy's model is not registered yet has no release to show
        states = {s.model_version: s for s in state.release_states(uri, policy.model_name)}
    except NotFound:
        states = {}
    try:  # the board's versions only: candidates newer than the champion, and those with a release state
        versions = state.pending_versions(uri, policy.model_name, champion.version if champion else None,
                                          tuple(sorted(states)))
    except NotFound:
        versions = []
    if any(ep.deployments and not ep.gateway_up for ep in endpoints.values()):
        st.warning("The endpoints are not running: nothing answers requests. A deploy or promote starts them; "
                   "so does the Endpoints page.", icon="🔌")
        st.page_link("pages/endpoints.py", label="Endpoints", icon=":material/api:")
    render_serving(policy, production, staging, champion)
    rollout_view.render_rollout(ws, uri)

    on_board = board_versions(versions, list(states.values()), champion)
    st.subheader("Release board")
    if not on_board:
        st.info("No candidate yet: register a model version (train one on the Runs page) and deploy it to staging.")
    else:
        render_board(on_board, states)
        selected = pick_version(on_board, states)
        release = states.get(selected.version) or ReleaseState(selected.name, selected.version, Stage.REGISTERED)
        render_version(ws, uri, selected, release, champion, endpoints, staging, production)

    render_audit(uri)
    confirmation_dialog()


def render_serving(policy: Policy, production: Endpoint | None, staging: Endpoint | None,
                   champion: ModelVersion | None) -> None:
    pm = policy.model_name
    left, right = st.columns(2)
    for col, ep, name, icon in ((left, production, policy.endpoints.production, ":material/public:"),
                                (right, staging, policy.endpoints.staging, ":material/science:")):
        with col.container(border=True):
            st.markdown(f"#### {icon} {name.capitalize()} now")
            live = ep.live if ep else None
            if live is None:
                st.markdown("Nothing is deployed." + (f" The `champion` alias points at **{champion.ref}**."
                                                     if champion and name == policy.endpoints.production else ""))
            else:
                st.markdown(f"**{live.model_ref}** on `{live.name}` · {traffic_text(ep, pm)}"
                            + ("" if ep.gateway_up else " · :red[gateway down]"))
                back = warm_previous(ep)
                st.caption(f"Warm for rollback: {dep_label(back, pm)}" if back else "No warm previous deployment.")
            if name == policy.endpoints.production and ep is not None:
                st.button("Roll back production", icon=":material/undo:", key="releases.rollback",
                          on_click=ask, args=(plan_rollback(policy, ep),),
                          help="Give production's traffic back to the warm previous deployment (qa, admin).")


def render_board(versions: list[ModelVersion], states: dict[int, ReleaseState]) -> None:
    st.dataframe(board_frame(versions, states), hide_index=True, width="stretch", column_config={
        "updated": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    })
    st.caption("✅ done · 🟡 deployed, smoke test not passed · ❌ rejected · ↩️ rolled back · 💤 retired "
               "(replaced by a newer champion) · ○ not yet")


def pick_version(versions: list[ModelVersion], states: dict[int, ReleaseState]) -> ModelVersion:
    """Default: the newest version waiting on someone (approval, then promotion)."""
    waiting = [v for v in versions if states.get(v.version) and states[v.version].stage in
               (Stage.AWAITING_APPROVAL, Stage.APPROVED, Stage.STAGING)]
    default = (waiting or versions)[0]
    by_number = {v.version: v for v in versions}

    def label(n: int) -> str:  # no stage here: a label that changes is not redrawn while selected
        return f"{by_number[n].ref} · {by_number[n].estimator}"

    number = st.selectbox("Version", list(by_number), index=list(by_number).index(default.version),
                          format_func=label, key="releases.version")
    return by_number[number]


def render_version(ws, uri: str, mv: ModelVersion, release: ReleaseState, champion: ModelVersion | None,
                   endpoints: dict[str, Endpoint], staging: Endpoint | None, production: Endpoint | None) -> None:
    policy = ws.policy
    render_stepper(release)
    render_actions(policy, mv, release, champion, list(endpoints.values()), staging, production)
    st.markdown("##### Evidence")
    gate_col, data_col = st.columns([3, 2])
    with gate_col.container(border=True):
        render_gate(uri, policy, mv, champion)
    with data_col.container(border=True):
        render_data_tests(uri, mv)
    with st.container(border=True):
        render_smoke(uri, mv, release)


def render_stepper(release: ReleaseState) -> None:
    marks = journey(release.stage)
    notes = {
        "staging": f"deployed by `{release.deployed_by}`" if release.deployed_by else "",
        "awaiting approval": (f"smoke test #{release.smoke_test_id} passed"
                              if REACHED[release.stage] >= 1 else ""),
        "approved": (f"{'rejected' if release.stage == Stage.REJECTED else 'approved'} by `{release.decided_by}`"
                     + (f": “{release.decision_comment}”" if release.decision_comment else "")
                     if release.decided_by else ""),
        "production": {Stage.PRODUCTION: "serving", Stage.RETIRED: "replaced by a newer version",
                       Stage.ROLLED_BACK: "rolled back"}.get(release.stage, ""),
    }
    cols = st.columns(len(STEPS))
    for col, step, mark in zip(cols, STEPS, marks):
        with col:
            st.markdown(f"**{mark} {step}**")
            st.caption(notes[step] or " ")
    when = f" · since {release.updated_at:%Y-%m-%d %H:%M} UTC" if release.updated_at else ""
    st.caption(f"{release.ref} is **{STAGE_TEXT[release.stage]}**{when}")


NEXT_STEP = {Stage.REGISTERED: "deploy", Stage.STAGING: "deploy", Stage.REJECTED: "deploy",
             Stage.AWAITING_APPROVAL: "approve", Stage.APPROVED: "promote"}


def render_actions(policy: Policy, mv: ModelVersion, release: ReleaseState, champion: ModelVersion | None,
                   endpoints: list[Endpoint], staging: Endpoint | None, production: Endpoint | None) -> None:
    """Every action for everyone (the services refuse what a role may not do); the usual next step stands out."""
    cols = st.columns([1, 1, 1, 1, 1.35])
    nxt = NEXT_STEP.get(release.stage)

    def kind(action: str) -> str:
        return "primary" if action == nxt else "secondary"

    if staging is not None:
        cols[0].button(f"Deploy to {staging.name}", icon=":material/upload:", key="releases.deploy", width="stretch",
                       type=kind("deploy"), on_click=ask, args=(plan_deploy(policy, staging, mv, release),),
                       help=f"Blue/green to {staging.name} with health probe and smoke test ({who_may('deploy')})")
    cols[1].button("Run smoke test", icon=":material/labs:", key="releases.smoke", width="stretch",
                   on_click=ask, args=(plan_smoke_test(policy, endpoints, mv),),
                   help=f"Again, through the gateway ({who_may('smoke_test')})")
    cols[2].button("Approve", icon=":material/thumb_up:", key="releases.approve", width="stretch",
                   type=kind("approve"), on_click=ask, args=(plan_approve(policy, mv, release),),
                   help=f"{who_may('approve')}; four eyes")
    cols[3].button("Reject", icon=":material/thumb_down:", key="releases.reject", width="stretch",
                   on_click=ask, args=(plan_reject(policy, mv, release),),
                   help=f"{who_may('reject')}; a comment is required")
    if production is not None:
        cols[4].button(f"Promote to {production.name}", icon=":material/rocket_launch:", key="releases.promote",
                       width="stretch", type=kind("promote"), on_click=ask,
                       args=(plan_promote(policy, production, mv, champion, release),),
                       help=f"Blue/green to {production.name}; the previous version stays warm ({who_may('promote')})")


def render_gate(uri: str, policy: Policy, mv: ModelVersion, champion: ModelVersion | None) -> None:
    st.markdown("**Quality gate** · vs the champion")
    if champion is None:
        st.caption("No champion yet: the gate checks only the absolute rules.")
    elif champion.version == mv.version and champion.name == mv.name:
        st.info(f"{mv.ref} is the champion: there is nothing to compare it with.")
        return
    with guard():
        comparison = state.comparison(uri, mv.name, mv.version, champion.version if champion else None)
        gate = comparison.gate
        if gate.passed:
            st.success("Passes the quality gate", icon="✅")
        else:
            st.error("Fails the quality gate:\n\n" + "\n".join(f"- {r}" for r in gate.reasons), icon="❌")
        frame = gate_frame(comparison, policy)
        st.dataframe(styled_gate(frame), hide_index=True, width="stretch", column_config={
            "gate": st.column_config.TextColumn("gate", width="small", help="this metric's gate rule")})
        st.caption(f"Both scored on {comparison.evaluated_on}. Δ = candidate − "
                   f"{champion.ref if champion else 'champion'}; green is better.")
        with st.expander("The gate's rules, checked"):
            for _, row in frame[frame["why"] != ""].iterrows():
                st.markdown(f"{row['gate']} **{row['metric']}** — {row['why']}")


def render_data_tests(uri: str, mv: ModelVersion) -> None:
    st.markdown("**Data tests** · training data")
    if not mv.dataset:
        st.caption("Unknown training data (no lineage).")
        return
    with guard():
        dv = next((d for d in state.dataset_versions(uri) if d.name == mv.dataset
                   and d.version == mv.dataset_version), None)
        if dv is None:
            raise NotFound(f"dataset {mv.dataset}:{mv.dataset_version} is not in this workspace")
        tests = state.data_tests(uri, dv.name, dv.version)
        base = f"against v{dv.baseline_version}" if dv.baseline_version else "no baseline (first version)"
        st.markdown(f"`{dv.ref}` · {dv.rows} rows · {badge(dv.tests_status)} · {base}")
        bad = data_tests_frame(tests)
        if bad.empty:
            st.success(f"All {len(tests)} checks passed", icon="✅")
        else:
            st.caption(f"{len(bad)} of {len(tests)} checks did not pass:")
            st.dataframe(bad, hide_index=True, width="stretch")


def render_smoke(uri: str, mv: ModelVersion, release: ReleaseState) -> None:
    st.markdown("**Smoke test** · through the gateway")
    with guard():
        result = latest_smoke(state.smoke_tests(uri), mv)
        if result is None and release.smoke_test_id:
            result = state.smoke_test(uri, release.smoke_test_id)
        if result is None:
            st.caption("Never smoke-tested: it runs as part of a deploy to staging.")
            return
        (st.success if result.passed else st.error)(result.summary, icon="✅" if result.passed else "❌")
        st.caption(f"#{result.id} on `{result.endpoint}/{result.deployment}` · {result.at:%Y-%m-%d %H:%M} UTC "
                   f"· by `{result.actor}`")
        st.dataframe(smoke_cases_frame(result), hide_index=True, width="stretch", column_config={
            "passed": st.column_config.TextColumn("passed", width="small"),
            "expected": st.column_config.NumberColumn(format="%.4f", help="the registered model's prediction offline"),
            "got": st.column_config.NumberColumn(format="%.4f", help="what the endpoint answered"),
            "status": st.column_config.NumberColumn("HTTP", width="small"),
            "detail": st.column_config.TextColumn("detail", width="large"),
        })


def render_audit(uri: str) -> None:
    st.subheader("Audit trail")
    records = state.audit(uri, AUDIT_LIMIT)
    frame = audit_frame(records)
    if frame.empty:
        st.caption("Nothing recorded yet.")
        return
    c1, c2, c3 = st.columns([2, 2, 1])
    actions = c1.multiselect("Action", sorted(frame["action"].unique()), key="releases.audit.actions",
                             placeholder="all actions")
    actors = c2.multiselect("Actor", sorted(frame["actor"].unique()), key="releases.audit.actors",
                            placeholder="everyone")
    target = c3.text_input("Target contains", key="releases.audit.target", placeholder="e.g. production")
    shown = filter_audit(frame, actions, actors, target)
    display = shown.assign(**{col: [readable(json.loads(v)) if v else "" for v in shown[col]]
                              for col in ("before", "after")})
    st.dataframe(display, hide_index=True, width="stretch", column_config={
        "time": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "before": st.column_config.TextColumn("before", width="medium"),
        "after": st.column_config.TextColumn("after", width="medium"),
    }, column_order=["time", "actor", "role", "action", "target", "comment", "before", "after"])
    capped = f" (the newest {AUDIT_LIMIT})" if len(records) >= AUDIT_LIMIT else ""
    st.caption(f"{len(shown)} of {len(frame)} events{capped}; append-only: nothing here can be edited or deleted.")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    st.download_button("Download CSV", audit_csv(shown), file_name=f"tollgate-audit-{stamp}.csv", mime="text/csv",
                       icon=":material/download:", key="releases.audit.csv")
