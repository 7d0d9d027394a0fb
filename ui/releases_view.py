"""The Releases page: each candidate's way to production, the gates' evidence side by
side, the release actions behind confirmations, and the audit trail.

Every action button asks for a ``Request``; the confirmation dialog (``ui.plan_dialog``)
shows the release workflow's plan of it and performs exactly that plan. Roles are enforced by
the services: every button is shown to everyone and a refusal is shown as it comes.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

from services.entities import (AuditRecord, CheckStatus, Comparison, DataTestResult, Endpoint, ModelVersion,
                               ReleaseState, SmokeTestResult, Stage)
from services.errors import NotFound
from services.export import csv_bytes
from services.policy import Policy
from services.release.plans import dep_label, traffic_text, warm_previous
from services.stages import evidence_baseline, stage_words

from . import rollout_view, state
from .datasets_view import render_check_links
from .plan_dialog import Request, ask, confirmation_dialog, flash, who_may
from .widgets import BETTER, NEUTRAL, WORSE, badge, code, escaped, fmt_metric, guard

AUDIT_LIMIT = 5000           # newest events loaded for the table (the CSV holds what is shown)
BOARD_NEWEST = 10            # besides every version with a release state, the newest others not archived

STEPS = ("staging", "awaiting approval", "approved", "production")
STAGE_ICON = {
    Stage.REGISTERED: "⚪", Stage.STAGING: "🟡", Stage.AWAITING_APPROVAL: "⏳", Stage.APPROVED: "👍",
    Stage.REJECTED: "❌", Stage.PRODUCTION: "🟢", Stage.RETIRED: "💤", Stage.ROLLED_BACK: "↩️",
}
# how far along STEPS each stage got (index of the last step reached; -1 = none)
REACHED = {Stage.REGISTERED: -1, Stage.STAGING: 0, Stage.AWAITING_APPROVAL: 1, Stage.APPROVED: 2,
           Stage.REJECTED: 2, Stage.PRODUCTION: 3, Stage.RETIRED: 3, Stage.ROLLED_BACK: 3}
# --- words for things -----------------------------------------------------------

def stage_badge(stage: Stage, archived: bool = False) -> str:
    """The stage in the words every page uses (``services.stages``), with its icon."""
    return f"{STAGE_ICON[stage]} {stage_words(stage, archived)}"


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


# --- data shaping for the page (no streamlit) -----------------------------------

def board_frame(versions: list[ModelVersion], states: dict[int, ReleaseState]) -> pd.DataFrame:
    rows = []
    for v in versions:
        s = states.get(v.version) or ReleaseState(v.name, v.version, Stage.REGISTERED)
        marks = journey(s.stage)
        rows.append({"version": v.ref, "estimator": v.estimator, "stage": stage_badge(s.stage, v.archived),
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


def latency_frame(result: SmokeTestResult) -> pd.DataFrame | None:
    """The smoke test's latency evidence: the new deployment and the live one, side by side."""
    lat = result.latency
    if lat is None:
        return None
    rows = [{"deployment": f"{result.deployment} (new, {result.model_name}:{result.model_version})",
             "p50 (ms)": lat.candidate_p50_ms, "p95 (ms)": lat.candidate_p95_ms,
             "limit p95 (ms)": lat.limit_p95_ms, "failed": lat.candidate_failures}]
    if lat.live_deployment:
        rows.append({"deployment": f"{lat.live_deployment} (live)", "p50 (ms)": lat.live_p50_ms,
                     "p95 (ms)": lat.live_p95_ms, "limit p95 (ms)": None, "failed": None})
    return pd.DataFrame(rows, columns=["deployment", "p50 (ms)", "p95 (ms)", "limit p95 (ms)", "failed"])


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
    return csv_bytes(list(out.columns), out.itertuples(index=False, name=None))


# --- rendering ----------------------------------------------------------------

def render() -> None:
    ws, uri = state.workspace(), state.uri()
    policy = ws.policy
    st.title("Releases")
    actor = state.actor()
    roles = policy.roles_of(actor)
    st.caption(f"Model `{policy.model_name}` · policy {code(policy.source)} · acting as {code(actor)} "
               f"({', '.join(roles) or 'no role: read-only'})")
    flash()

    endpoints = {ep.name: ep for ep in state.endpoints(uri)}
    staging, production = endpoints.get(policy.endpoints.staging), endpoints.get(policy.endpoints.production)
    champion = state.champion(uri, policy.model_name)
    states = {s.model_version: s for s in state.release_states(uri, policy.model_name)}
    try:  # the board's versions only: those with a release state and the newest others (not the champion's
        # neighbours: a promote or a rollback must not take rows off the board)
        on_board = state.board_versions(uri, policy.model_name, tuple(states), BOARD_NEWEST)
    except NotFound:
        on_board = []
    if any(ep.deployments and not ep.gateway_up for ep in endpoints.values()):
        st.warning("The endpoints are not running: nothing answers requests. A deploy or promote starts them; "
                   "so does the Endpoints page.", icon="🔌")
        st.page_link("pages/endpoints.py", label="Endpoints", icon=":material/api:")
    render_serving(policy, production, staging, champion, states)
    rollout_view.render_rollout(ws, uri)

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
                   champion: ModelVersion | None, states: dict[int, ReleaseState]) -> None:
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
                back_state = states.get(back.model_version) if back and back.model_name == pm else None
                if back is None:
                    st.caption("No warm previous deployment.")
                elif name == policy.endpoints.production and back_state and back_state.stage == Stage.ROLLED_BACK:
                    st.caption(f"Warm: {dep_label(back, pm)}, rolled back: not a rollback target.")
                else:
                    st.caption(f"Warm for rollback: {dep_label(back, pm)}")
            if name == policy.endpoints.production and ep is not None:
                st.button("Roll back production", icon=":material/undo:", key="releases.rollback",
                          on_click=ask, args=(Request("rollback", f"Roll back {ep.name}", env=ep.name),),
                          help="Give production's traffic back to the previous champion, kept warm (qa, admin; "
                               "a comment is required).")


def render_board(versions: list[ModelVersion], states: dict[int, ReleaseState]) -> None:
    st.dataframe(board_frame(versions, states), hide_index=True, width="stretch", column_config={
        "updated": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    })
    st.caption("✅ done · 🟡 deployed, smoke test not passed · ❌ rejected · ↩️ rolled back · 💤 retired "
               f"(replaced by a newer champion) · ○ not yet. The board holds every version that entered the release "
               f"process and the {BOARD_NEWEST} newest others not archived; the Models page lists them all.")


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
        render_gate(uri, policy, mv, release, champion)
    with data_col.container(border=True):
        render_data_tests(uri, mv)
    with st.container(border=True):
        render_smoke(uri, mv, release)


def render_stepper(release: ReleaseState) -> None:
    marks = journey(release.stage)
    notes = {
        "staging": f"deployed by {code(release.deployed_by)}" if release.deployed_by else "",
        "awaiting approval": (f"smoke test #{release.smoke_test_id} passed"
                              if REACHED[release.stage] >= 1 else ""),
        "approved": (f"{'rejected' if release.stage == Stage.REJECTED else 'approved'} by {code(release.decided_by)}"
                     + (f": “{escaped(release.decision_comment)}”" if release.decision_comment else "")
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
    st.caption(f"{release.ref} is **{stage_words(release.stage)}**{when}")


NEXT_STEP = {Stage.REGISTERED: "deploy", Stage.STAGING: "deploy", Stage.REJECTED: "deploy",
             Stage.AWAITING_APPROVAL: "approve", Stage.APPROVED: "promote"}


def render_actions(policy: Policy, mv: ModelVersion, release: ReleaseState, champion: ModelVersion | None,
                   endpoints: list[Endpoint], staging: Endpoint | None, production: Endpoint | None) -> None:
    """Every action for everyone (the services refuse what a role may not do); the usual next step stands out."""
    cols = st.columns([1, 1, 1, 1, 1.35])
    nxt = NEXT_STEP.get(release.stage)

    def kind(action: str) -> str:
        return "primary" if action == nxt else "secondary"

    name, version = mv.name, mv.version
    if staging is not None:
        cols[0].button(f"Deploy to {staging.name}", icon=":material/upload:", key="releases.deploy", width="stretch",
                       type=kind("deploy"), on_click=ask,
                       args=(Request("deploy", f"Deploy {mv.ref} to {staging.name}", name, version, staging.name),),
                       help=f"Blue/green to {staging.name} with health probe and smoke test ({who_may('deploy')})")
    cols[1].button("Run smoke test", icon=":material/labs:", key="releases.smoke", width="stretch",
                   on_click=ask, args=(Request("smoke_test", f"Run the smoke test of {mv.ref}", name, version),),
                   help=f"Again, pinned to the deployment ({who_may('smoke_test')})")
    cols[2].button("Approve", icon=":material/thumb_up:", key="releases.approve", width="stretch",
                   type=kind("approve"), on_click=ask, args=(Request("approve", f"Approve {mv.ref}", name, version),),
                   help=f"{who_may('approve')}; four eyes")
    cols[3].button("Reject", icon=":material/thumb_down:", key="releases.reject", width="stretch",
                   on_click=ask, args=(Request("reject", f"Reject {mv.ref}", name, version),),
                   help=f"{who_may('reject')}; a comment is required")
    if production is not None:
        canary = policy.canary.strategy == "canary"
        cols[4].button(f"Promote to {production.name}", icon=":material/rocket_launch:", key="releases.promote",
                       width="stretch", type=kind("promote"), on_click=ask,
                       args=(Request("promote", f"Canary release of {mv.ref}" if canary else
                                     f"Promote {mv.ref} to {production.name}", name, version, production.name),),
                       help=(f"In steps of traffic ([canary] strategy) ({who_may('promote')})" if canary else
                             f"Blue/green to {production.name}; the previous version stays warm "
                             f"({who_may('promote')})"))


def render_gate(uri: str, policy: Policy, mv: ModelVersion, release: ReleaseState,
                champion: ModelVersion | None) -> None:
    """The gate's evidence against the champion ``mv`` was approved against (``services.stages.evidence_baseline``):
    still readable once it is promoted, retired or rolled back."""
    against = evidence_baseline(mv, release, champion)
    baseline = f"{mv.name}:{against}" if against is not None else None
    approved_against = baseline is not None and baseline == release.approved_against
    st.markdown(f"**Quality gate** · vs {baseline}, the champion it was approved against" if approved_against
                else "**Quality gate** · vs the champion")
    if against is None and champion is not None:
        st.info(f"{mv.ref} is the champion and was never approved against another version: "
                "there is nothing to compare it with.")
        return
    if champion is None and against is None:
        st.caption("No champion yet: the gate checks only the absolute rules.")
    with guard():
        comparison = state.comparison(uri, mv.name, mv.version, against)
        gate = comparison.gate
        if gate.passed:
            st.success("Passes the quality gate", icon="✅")
        else:
            st.error("Fails the quality gate:\n\n" + "\n".join(f"- {r}" for r in gate.reasons), icon="❌")
        frame = gate_frame(comparison, policy)
        st.dataframe(styled_gate(frame), hide_index=True, width="stretch", column_config={
            "gate": st.column_config.TextColumn("gate", width="small", help="this metric's gate rule")})
        st.caption(f"Both scored on {comparison.evaluated_on}. Δ = {mv.ref} − {baseline or 'champion'}; "
                   "green is better.")
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
        render_check_links(dv, tests)


def render_smoke(uri: str, mv: ModelVersion, release: ReleaseState) -> None:
    st.markdown("**Smoke test** · through the gateway")
    with guard():
        result = latest_smoke(state.smoke_tests(uri), mv)
        if result is None and release.smoke_test_id:
            result = state.smoke_test(uri, release.smoke_test_id)
        if result is None:
            st.caption("Never smoke-tested: it runs as part of a deploy to staging.")
            return
        (st.success if result.passed else st.error)(escaped(result.summary), icon="✅" if result.passed else "❌")
        st.caption(f"#{result.id} on `{result.endpoint}/{result.deployment}` · {result.at:%Y-%m-%d %H:%M} UTC "
                   f"· by {code(result.actor)}")
        st.dataframe(smoke_cases_frame(result), hide_index=True, width="stretch", column_config={
            "passed": st.column_config.TextColumn("passed", width="small"),
            "expected": st.column_config.NumberColumn(format="%.4f", help="the registered model's prediction offline"),
            "got": st.column_config.NumberColumn(format="%.4f", help="what the endpoint answered"),
            "status": st.column_config.NumberColumn("HTTP", width="small"),
            "detail": st.column_config.TextColumn("detail", width="large"),
        })
        latency = latency_frame(result)
        if latency is not None:
            st.markdown(f"**Latency** · {result.latency.requests} requests to each, interleaved")
            st.dataframe(latency, hide_index=True, width="stretch", column_config={
                "p50 (ms)": st.column_config.NumberColumn(format="%.1f"),
                "p95 (ms)": st.column_config.NumberColumn(format="%.1f"),
            })
            (st.caption if result.latency.passed else st.error)(result.latency.reason)


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
