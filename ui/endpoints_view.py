"""The Endpoints page: per online endpoint, the gateway, the deployments with their
model versions and traffic, keys, a Test panel that scores a JSON payload, and
each deployment's console log. For support (read), QA and admins (keys, restart).
"""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from services.entities import ENDPOINT_PROCESSES, GATEWAY_LOG, Deployment, Endpoint, ScoreResult
from services.errors import ServiceError
from services.policy import Policy
from services.permissions import invoke_action
from services.release.plans import dep_label, short, traffic_text, warm_previous
from services.scoring import send_request

from . import state
from .chrome import role_hint
from .plan_dialog import Request, ask, confirmation_dialog, flash
from .widgets import code, escaped, guard, show_error

STATE_ICON = {"healthy": "🟢", "starting": "🟡", "unhealthy": "🔴", "failed": "🔴", "stopped": "⚫"}
COLOURS = {"blue": "#2f6fde", "green": "#2da44e"}
LOG_TAILS = (50, 200, 1000, 5000)
RESULT = "endpoints.test.result.{}"   # the Test panel's last answer, per endpoint
FALLBACK_ROW = [59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]  # diabetes row 0


# --- data shaping (no streamlit) ---------------------------------------------------

def state_badge(d: Deployment) -> str:
    return f"{STATE_ICON.get(d.state, '⚪')} {d.state}"


def deployment_role(ep: Endpoint, d: Deployment) -> str:
    if d.state == "stopped":
        return "stopped"
    if d.traffic > 0:
        return "serving" if d is ep.live else "serving (split)"
    return "warm: rollback target" if d is warm_previous(ep) else "idle (0 %)"


def instances_text(d) -> str:
    """``"2 × Standard_DS3_v2 (managed)"``; "" when the backend has no such notion (local)."""
    if not (d.instance_type or d.instance_count or d.compute):
        return ""
    count = f"{d.instance_count} × " if d.instance_count is not None else ""
    return f"{count}{d.instance_type or 'instance'}" + (f" ({d.compute})" if d.compute else "")


def deployments_frame(ep: Endpoint) -> pd.DataFrame:
    return pd.DataFrame([{
        "deployment": d.name, "model": d.model_source or d.model_ref, "state": state_badge(d), "traffic": d.traffic,
        "role": deployment_role(ep, d), "restarts": d.restarts, "last error": d.last_error or "",
        "provisioning": d.provisioning_state, "instances": instances_text(d),
        "created": d.created_at, "by": d.created_by,
    } for d in ep.deployments], columns=["deployment", "model", "state", "traffic", "role", "restarts",
                                         "last error", "provisioning", "instances", "created", "by"])


def incidents(ep: Endpoint) -> list[tuple[str, str]]:
    """What support must see at a glance, as (level, text): a deployment that is down is an
    error; one the supervisor restarted and that recovered is a warning."""
    out = []
    for d in ep.deployments:
        if d.state == "stopped":
            continue
        down = d.state in ("unhealthy", "failed")
        if down or d.restarts or d.last_error:
            what = (f"was restarted {d.restarts}× by the supervisor and is {d.state}" if d.restarts and not down
                    else f"is {d.state}")
            error = f" — last error: {escaped(d.last_error)}" if d.last_error else ""
            out.append(("error" if down else "warning", f"**{d.name}** ({d.model_ref}) {what}{error}"))
    return out


def traffic_figure(ep: Endpoint, policy_model: str) -> go.Figure:
    """One horizontal bar split by deployment: who gets which share of the requests."""
    fig = go.Figure()
    live = [d for d in ep.deployments if d.state != "stopped"]
    for d in live:
        fig.add_bar(y=[""], x=[d.traffic], orientation="h", name=dep_label(d, policy_model),
                    marker_color=COLOURS.get(d.name), text=f"{dep_label(d, policy_model)} · {d.traffic} %",
                    textposition="inside", insidetextanchor="middle",
                    hovertemplate=f"{d.name}: {d.model_ref}<br>{d.traffic} %% of requests<extra></extra>")
    fig.update_layout(barmode="stack", height=90, margin=dict(l=0, r=0, t=0, b=0), showlegend=False,
                      xaxis=dict(range=[0, 100], ticksuffix=" %", showgrid=False), yaxis=dict(visible=False),
                      uniformtext=dict(minsize=10, mode="hide"))
    return fig


def example_payload(frame: pd.DataFrame | None, target: str) -> str:
    """A valid one-row request: the first row of the serving model's training data."""
    if frame is not None and not frame.empty:
        row = [float(v) for v in frame.drop(columns=[target], errors="ignore").iloc[0]]
    else:
        row = FALLBACK_ROW
    return json.dumps({"data": [row]})


def error_message(body: Any) -> str:
    """The message of an error answer: ``{"error": {"code", "message"}}`` (the scoring contract,
    README), or an older/foreign shape as it came."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or error)
        return str(error or body.get("message") or body)
    return str(body)


# --- rendering -------------------------------------------------------------------

def render() -> None:
    ws, uri = state.workspace(), state.uri()
    policy = ws.policy
    top_l, top_r = st.columns([5, 1])
    top_l.title("Endpoints")
    if top_r.button("Refresh", icon=":material/refresh:", key="endpoints.refresh", width="stretch"):
        state.after_write()
    st.caption(f"Online endpoints of {code(ws.info.description)} · health, traffic, keys, a test request, logs")
    flash()
    endpoints = state.endpoints(uri)
    order = [policy.endpoints.production, policy.endpoints.staging]
    if not endpoints:  # nothing to start either: say what is missing
        st.info(f"None of the policy's endpoints ({', '.join(order)}) exists in this workspace yet: deploying a "
                "model version to staging on the Releases page creates it.", icon=":material/info:")
        return
    if not any(ep.gateway_up for ep in endpoints) and ws.info.can(ENDPOINT_PROCESSES):
        render_not_running(ws)

    endpoints = sorted(endpoints, key=lambda e: order.index(e.name) if e.name in order else len(order))
    tabs = st.tabs([f"{'🟢' if ep.gateway_up else '🔴'} {ep.name}" for ep in endpoints])
    for tab, ep in zip(tabs, endpoints):
        with tab:
            render_endpoint(uri, policy, ep)
    confirmation_dialog()


def render_not_running(ws) -> None:
    with st.container(border=True):
        st.warning("**The endpoints are not running.** No gateway answers, so nothing can be scored. "
                   "`make run` starts them with the console; from a shell: `python tollgate.py up`.", icon="🔌")
        if st.button("Start endpoints", type="primary", icon=":material/play_arrow:", key="endpoints.up",
                     help="Starts the supervisor, which starts each endpoint's gateway and deployments (qa, admin)."):
            try:
                with st.spinner("Starting the gateways and deployments…"):
                    ws.endpoints.up(state.actor())       # operate_endpoints: refused, with the role, otherwise
                    ws.endpoints.wait_gateways()
            except ServiceError as e:
                show_error(e)
                return
            state.after_write()
            st.rerun()


def render_endpoint(uri: str, policy: Policy, ep: Endpoint) -> None:
    pm = policy.model_name
    live = ep.live
    cols = st.columns(4)
    cols[0].metric("Gateway", "up" if ep.gateway_up else "down", border=True)
    serving = live if live and ep.gateway_up and live.state != "stopped" else None
    cols[1].metric("Serving", short(serving.model_name, serving.model_version, pm) if serving else "—", border=True,
                   help=serving.model_ref if serving else
                   f"Nothing answers. Configured: {live.model_ref}." if live else "No deployment takes traffic.")
    healthy = sum(d.state == "healthy" for d in ep.deployments)
    cols[2].metric("Deployments healthy", f"{healthy} / {len(ep.deployments)}", border=True)
    cols[3].metric("Restarts", sum(d.restarts for d in ep.deployments if d.state != "stopped"), border=True,
                   help="Crashes of running deployments that the supervisor recovered from")

    if ep.provisioning_state and ep.provisioning_state.lower() != "succeeded":
        failed = ep.provisioning_state.lower() == "failed"
        reason = f" — {escaped(ep.provisioning_error)}" if ep.provisioning_error else ""
        (st.error if failed else st.warning)(
            f"Azure reports this endpoint as {escaped(ep.provisioning_state)} ({ep.compute or 'managed'} "
            f"compute){reason}.", icon=":material/error:" if failed else ":material/hourglass_top:")
    for level, text in incidents(ep):
        (st.error if level == "error" else st.warning)(text, icon="🚨" if level == "error" else "⚠️")

    st.markdown("**Scoring URI**")
    if ep.scoring_uri:
        st.code(ep.scoring_uri, language=None)
        if not ep.gateway_up:
            st.caption("Nothing listens there while the gateway is down.")
    else:
        st.caption("No address yet: the gateway has never started.")

    st.markdown("**Deployments and traffic**")
    if not ep.deployments:
        st.caption(f"Nothing is deployed to {ep.name}. Deploy a model version on the Releases page.")
    else:
        if any(d.state != "stopped" for d in ep.deployments):
            st.plotly_chart(traffic_figure(ep, pm), width="stretch", config={"displayModeBar": False},
                            key=f"endpoints.traffic.{ep.name}")
        else:
            st.caption(f"Configured traffic: {traffic_text(ep, pm)} — every deployment is stopped.")
        st.dataframe(deployments_frame(ep), hide_index=True, width="stretch", column_config={
            "traffic": st.column_config.ProgressColumn("traffic", min_value=0, max_value=100, format="%d %%"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "last error": st.column_config.TextColumn("last error", width="medium"),
        })

    ws = state.workspace()
    lazy = lazy_reads(ws)
    render_keys(policy, ep, uri if lazy else None)
    render_test_panel(uri, policy, ep)
    render_logs(uri, ep, lazy, gateway_log=ws.info.can(GATEWAY_LOG))


def lazy_reads(ws) -> bool:
    """Whether each read is a remote request (Azure): what is collapsed is read when opened."""
    return ws.info.kind != "local"


TOKEN_AUTH = {
    "aml_token": "This endpoint takes **Azure ML tokens** (auth mode `aml_token`), which expire: the console asks "
                 "Azure for one whenever it sends (Test panel, smoke test, simulator). Clients get theirs with "
                 "`az ml online-endpoint get-credentials`.",
    "aad_token": "This endpoint takes **Microsoft Entra tokens** (auth mode `aad_token`): the console sends its "
                 "signed-in identity's token for `https://ml.azure.com`. Clients send their own "
                 "(`az account get-access-token --resource https://ml.azure.com`).",
}


def render_keys(policy: Policy, ep: Endpoint, lazy_uri: str | None = None) -> None:
    """The keys panel. A listing without masked keys (Azure: reading them is a request per
    endpoint) gets them through a cached read when the panel is opened (``lazy_uri``). An endpoint
    that takes tokens has no keys: the panel says how it authenticates (no request)."""
    if ep.auth_mode != "key":
        st.markdown("**Credentials** · `Authorization: Bearer <token>`")
        st.caption(TOKEN_AUTH.get(ep.auth_mode) or f"Auth mode {code(ep.auth_mode)}: Tollgate cannot send to it.")
        return
    if lazy_uri is not None and not ep.primary_key_masked and ep.auth_mode == "key":
        box = st.expander("**Keys** · `Authorization: Bearer <key>`", key=f"endpoints.keys.box.{ep.name}",
                          on_change="rerun")
        if box.open:
            with box, guard():
                masked = state.masked_keys(lazy_uri, ep.name)
                if masked is None:
                    st.caption("The keys cannot be read: the console's identity needs the listKeys permission.")
                else:
                    render_key_values(policy, ep, masked)
        return
    st.markdown("**Keys** · `Authorization: Bearer <key>`")
    render_key_values(policy, ep, (ep.primary_key_masked, ep.secondary_key_masked))


def render_key_values(policy: Policy, ep: Endpoint, masked_keys: tuple[str, str]) -> None:
    actor = state.actor()
    show = st.toggle("Show keys", key=f"endpoints.keys.{ep.name}", help="qa and admin")
    full: tuple[str, str] | None = None
    if show:
        try:
            full = state.workspace().endpoints.keys(ep.name, actor)
        except ServiceError as e:
            show_error(e)
    for col, which, masked, value in zip(st.columns(2), ("primary", "secondary"), masked_keys,
                                         full or (None, None)):
        with col:
            st.caption(f"{which.capitalize()} key")
            st.code(value or masked, language=None, wrap_lines=True)
            st.button("Regenerate", key=f"endpoints.regen.{ep.name}.{which}", icon=":material/autorenew:",
                      on_click=ask, args=(Request("regenerate_key", f"Regenerate the {which} key of {ep.name}",
                                                  env=ep.name, key=which),),
                      help=f"Replace the {which} key (admin); clients using the old one get 401")


def render_test_panel(uri: str, policy: Policy, ep: Endpoint) -> None:
    st.markdown("**Test** · send a request as a client would (it goes into the audit trail)")
    with st.container(border=True):
        frame = None
        live = ep.live
        if live is not None:
            with guard():
                mv = next((v for v in state.model_versions(uri, live.model_name) if v.version == live.model_version),
                          None)
                if mv is not None and mv.dataset:
                    frame = state.dataset_frame(uri, mv.dataset, mv.dataset_version)
        body = st.text_area("Request body (JSON)", value=example_payload(frame, policy.target), height=110,
                            key=f"endpoints.test.body.{ep.name}",
                            help='{"data": [[10 feature values], ...]} in the model\'s feature order, '
                                 'or rows as objects by feature name')
        pins = ["", *[d.name for d in ep.deployments if d.state != "stopped"]]
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        pin = c1.selectbox("Deployment", pins, key=f"endpoints.test.pin.{ep.name}",
                           format_func=lambda p: "by traffic split (no pin)" if not p else
                           f"{p} — header azureml-model-deployment: {p}")
        send = c2.button("Send", type="primary", icon=":material/send:", key=f"endpoints.test.send.{ep.name}",
                         width="stretch")
        role_hint(invoke_action(policy, ep.name))
        if send:
            try:
                st.session_state[RESULT.format(ep.name)] = send_request(
                    state.workspace(), ep.name, body, state.actor(), deployment=pin or None)
            except ServiceError as e:
                st.session_state.pop(RESULT.format(ep.name), None)
                show_error(e)
        result = st.session_state.get(RESULT.format(ep.name))
        if isinstance(result, ScoreResult):
            render_result(result, policy.model_name)


def model_short(ref: str | None, policy_model: str) -> str:
    """``diabetes-regressor:5`` → ``v5`` (the response header names the model version)."""
    if not ref:
        return "—"
    name, _, version = ref.rpartition(":")
    return f"v{version}" if name == policy_model and version.isdigit() else ref


def render_result(r: ScoreResult, policy_model: str) -> None:
    cols = st.columns(4)
    cols[0].metric("Status", r.status)
    cols[1].metric("Latency", f"{r.latency_ms:.1f} ms", help="Round trip from the console through the gateway")
    cols[2].metric("Answered by", r.deployment or "—", help="The deployment the gateway routed to")
    cols[3].metric("Model", model_short(r.model, policy_model), help=r.model or None)
    st.caption(f"Request id {code(r.request_id)} — look it up in the telemetry" if r.request_id else "No request id")
    if 200 <= r.status < 300:
        st.success("Prediction returned", icon="✅")
    else:
        st.error(f"HTTP {r.status}: {escaped(error_message(r.body))}", icon="🚫")
    if isinstance(r.body, (dict, list)):
        st.json(r.body)
    else:
        st.code(str(r.body), language=None)


def render_logs(uri: str, ep: Endpoint, lazy: bool = False, gateway_log: bool = True) -> None:
    st.markdown("**Logs**")
    tail = st.segmented_control("Last lines", LOG_TAILS, default=200, key=f"endpoints.logs.tail.{ep.name}") or 200
    for d in ep.deployments:
        label = f"Console log · {d.name} ({d.model_ref}) · {d.state}"
        box = (st.expander(label, key=f"endpoints.logs.box.{ep.name}.{d.name}", on_change="rerun") if lazy
               else st.expander(label))
        if box.open is False:       # read when opened (a request per log on Azure)
            continue
        with box:
            with guard():
                text = state.console_log(uri, ep.name, d.name, tail)
                st.code(text or "(empty)", language="log", wrap_lines=True,
                        height=360 if text.count("\n") > 20 else "content")
    if not gateway_log:   # managed endpoints: requests are in the Logs page's traffic log instead
        return
    with st.expander("Gateway log"):
        with guard():
            text = state.gateway_log(uri, ep.name, tail)
            st.code(text or "(empty: the gateway logs only warnings and errors)", language="log", wrap_lines=True)
