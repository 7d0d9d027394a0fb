"""The canary rollout panel (Releases page): a rollout's progress live, pause / continue /
abort, and starting a canary for an approved version.

The panel re-reads the rollout every ``REFRESH_S`` seconds while one is active (an
``st.fragment``), with the analysis of the current step so far. Starting a canary, pausing,
continuing and aborting it are confirmed in the Releases page's dialog with the workflow's
plan (``ws.releases.plan_promote(…, strategy="canary")``, ``plan_canary_control``). Roles are
checked by the services (every button is shown to everyone and a refusal is shown as it comes). Where nothing advances rollouts on its own (no
``supervised_rollouts`` capability: Azure), the panel says what does.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from services import canary as cn
from services.entities import SUPERVISED_ROLLOUTS, Stage
from services.errors import ServiceError

from . import state
from .plan_dialog import Request, ask
from .widgets import code, escaped

REFRESH_S = 2.0
STATE_TEXT = {cn.RUNNING: "🟡 running", cn.PAUSED: "⏸️ paused", cn.SUCCEEDED: "🟢 succeeded",
              cn.ROLLED_BACK: "↩️ rolled back automatically", cn.ABORTED: "⛔ aborted"}


# --- data shaping (no streamlit) ------------------------------------------------------

def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f} ms"


def step_rows(r: cn.Rollout, live: cn.Analysis | None) -> pd.DataFrame:
    """One row per step: its share, where it stands, and its analysis (passed, current or ahead)."""
    judged = {a.step: a for a in r.history}
    if r.last_analysis is not None and not r.active:
        judged.setdefault(r.last_analysis.step, r.last_analysis)
    rows = []
    for i, share in enumerate(r.steps):
        a = judged.get(i)
        if a is not None:
            status = {"pass": "✅ passed", "fail": "❌ failed", "wait": "⏳ not enough traffic"}[a.verdict]
        elif i == r.step_index and r.active:
            a = live
            status = "⏸️ paused here" if r.state == cn.PAUSED else "▶️ now"
        elif i == r.step_index and r.state == cn.ABORTED:
            status = "⛔ aborted here"
        else:
            status = "·"
        rows.append({"step": f"{i + 1}: {share} %", "status": status,
                     "canary requests": a.canary.requests if a else None,
                     "canary failures": _pct(a.canary.failure_rate) if a and a.canary.requests else "–",
                     "stable failures": _pct(a.stable.failure_rate) if a and a.stable.requests else "–",
                     "failure limit": _pct(a.max_failure_rate) if a else "–",
                     "canary p95": _ms(a.canary.p95_ms) if a else "–",
                     "p95 limit": _ms(a.max_p95_ms) if a else "–",
                     "why": a.summary if a else ""})
    return pd.DataFrame(rows)


def step_elapsed(r: cn.Rollout, now: datetime | None = None) -> float:
    """How far the current step is towards its analysis (0..1)."""
    now = now or datetime.now(timezone.utc)
    return min(1.0, max(0.0, (now - r.step_started_at).total_seconds() / r.rules.step_seconds))


# --- rendering ------------------------------------------------------------------------

def render_rollout(ws, uri: str) -> None:
    """The panel; call once from the Releases page."""
    st.subheader("Canary rollout")
    r = ws.releases.rollout(ws.policy.endpoints.production)
    if r is not None and r.active:
        st.fragment(run_every=REFRESH_S)(_live_panel)(ws)
    else:
        if r is not None:
            with st.expander(f"Latest rollout: {r.model_ref} — {STATE_TEXT[r.state]}", expanded=False):
                _rollout_body(ws, r)
        _start_form(ws, uri)


def _live_panel(ws) -> None:
    r = ws.releases.rollout(ws.policy.endpoints.production)
    if r is None:
        return
    if not r.active:
        st.rerun()  # it ended: the whole page shows the new state
    _rollout_body(ws, r)
    c1, c2, c3 = st.columns(3)
    if r.state == cn.RUNNING and c1.button("Pause", key="rollout.pause", width="stretch"):
        _ask(Request("pause", f"Pause the canary of {r.model_ref}", env=r.endpoint))
    if r.state == cn.PAUSED and c1.button("Continue", key="rollout.resume", type="primary", width="stretch"):
        _ask(Request("resume", f"Continue the canary of {r.model_ref}", env=r.endpoint))
    if c2.button("Abort (roll back)", key="rollout.abort", width="stretch"):
        _ask(Request("abort", f"Abort the canary of {r.model_ref}", env=r.endpoint))
    c3.caption(f"Updates every {REFRESH_S:g} s.")
    if not ws.info.can(SUPERVISED_ROLLOUTS):
        st.caption("Each step is judged and advanced by `python tollgate.py agent` (or the `canary start --wait` "
                   "that started it): the rollout holds at its step while neither runs.")


def _rollout_body(ws, r: cn.Rollout) -> None:
    st.markdown(f"**{r.model_ref}** on `{r.endpoint}` — {STATE_TEXT[r.state]}, {r.step_label}; stable "
                f"**{r.stable_model}** ({r.stable_deployment}). Started {r.started_at:%Y-%m-%d %H:%M:%S} UTC "
                f"by {code(r.started_by)}.")
    done = len(r.history) + (1 if r.state == cn.SUCCEEDED and len(r.history) < len(r.steps) else 0)
    st.progress(min(1.0, done / len(r.steps)),
                text=" → ".join(f"**{s} %**" if i == r.step_index and r.active else f"{s} %"
                                for i, s in enumerate(r.steps)))
    live = None
    if r.active:
        if r.state == cn.RUNNING:
            left = max(0.0, (r.step_due() - datetime.now(timezone.utc)).total_seconds())
            st.progress(step_elapsed(r), text=f"this step: {r.traffic} % of traffic; analysis "
                                              + (f"in {left:.0f} s" if left else "now (waiting for enough traffic)"))
        if r.reason:
            st.info(escaped(r.reason), icon="⏸️")
        try:
            live = cn.live_analysis(ws, r) if ws.telemetry is not None else None
        except ServiceError:
            live = None
    elif r.reason:
        show = st.error if r.state == cn.ROLLED_BACK else st.warning if r.state == cn.ABORTED else st.success
        show(escaped(r.reason))
    st.dataframe(step_rows(r, live), hide_index=True, width="stretch")


def _start_form(ws, uri: str) -> None:
    policy = ws.policy
    approved = [s for s in state.release_states(uri, policy.model_name) if s.stage == Stage.APPROVED]
    if not approved:
        st.caption("No rollout running. An approved version can be released as a canary: "
                   + " → ".join(f"{s} %" for s in policy.canary.steps)
                   + f" of production traffic, each step judged for {policy.canary.step_seconds:g} s.")
        return
    c1, c2 = st.columns([3, 1])
    version = c1.selectbox("Approved version to release as a canary", [s.model_version for s in approved],
                           format_func=lambda v: f"{policy.model_name}:{v}", key="rollout.version")
    c2.write("")
    if c2.button("Start canary…", key="rollout.start", width="stretch"):
        _ask(Request("promote", f"Canary release of {policy.model_name}:{int(version)}", policy.model_name,
                     int(version), policy.endpoints.production, strategy="canary"))


def _ask(request: Request) -> None:
    """Open the Releases page's confirmation dialog (from the panel's fragment: the whole page reruns)."""
    ask(request)
    st.rerun(scope="app")
