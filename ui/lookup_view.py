"""The Request lookup page: one request by its id (``x-request-id``): status, model
version, deployment, latency, time, the request and response payloads, the error,
and the log lines of that request. ``?request_id=…`` opens it directly (links from
Monitoring); the id typed in is written back to the URL, so the address can be shared.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import streamlit as st

from services.entities import RequestDetail
from services.errors import NotFound, ServiceError

from . import state
from .endpoints_view import model_short
from .logs_view import covering_range, log_text
from .monitoring_view import show_partial
from .widgets import code, escaped, show_error

INPUT = "lookup.request_id"
_SEEN = "lookup.param_seen"
PARAM = "request_id"


# --- data shaping (no streamlit) ------------------------------------------------------

def _scalar(value) -> bool:
    return not isinstance(value, (dict, list))


def pretty_json(value, indent: int = 0) -> str:
    """Indented JSON in which a list of plain values (a row of features, the predictions)
    stays on one line: a 10-feature row reads as a row, not as ten lines."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {pretty_json(v, indent + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and not all(_scalar(v) for v in value):
        return "[\n" + ",\n".join(inner + pretty_json(v, indent + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def pretty(body: str | None) -> tuple[str, str | None]:
    """(text, language): indented JSON when the body parses, the raw text otherwise (a
    truncated or malformed payload is shown as it was received)."""
    if body is None or body == "":
        return "(none)", None
    try:
        return pretty_json(json.loads(body)), "json"
    except ValueError:
        return body, None


def status_words(status: int) -> tuple[str, str]:
    """(words, level) with level one of success, warning, error."""
    if status == 0:
        return "no answer: no deployment responded", "error"
    if status >= 500:
        return f"HTTP {status} · server error (counts as a failure)", "error"
    if status >= 400:
        return f"HTTP {status} · client error (the caller's request was refused)", "warning"
    return f"HTTP {status} · answered", "success"


def not_found_text(request_id: str, workspace: str) -> str:
    return (f"**No request with id {code(request_id)} in this workspace's telemetry.** Check:\n"
            f"- it is the `x-request-id` (also `x-ms-request-id`) header of the endpoint's response, copied whole "
            f"({len(request_id)} characters here; the endpoints' ids are 36-character UUIDs unless the client "
            f"sent its own);\n"
            f"- the request went to an endpoint of this workspace ({code(workspace)}): each workspace keeps its own "
            f"telemetry;\n"
            f"- it reached the gateway: a client-side timeout, a DNS or connection error never gets an id;\n"
            f"- it is very recent: requests are recorded within a second, so try again.")


# --- rendering -------------------------------------------------------------------------

def adopt_query_param() -> None:
    """``?request_id=…`` fills the input once per new value (a link followed, a URL pasted)."""
    value = st.query_params.get(PARAM)
    if value and st.session_state.get(_SEEN) != value:
        st.session_state[INPUT] = value
        st.session_state[_SEEN] = value


def render() -> None:
    ws, uri = state.workspace(), state.uri()
    st.title("Request lookup")
    st.caption("One request by its id — the `x-request-id` header every endpoint response carries: what it sent, "
               "what it got, which model version answered, and the log lines written while serving it.")
    if ws.telemetry is None:
        st.info("This workspace has no request telemetry.")
        return
    adopt_query_param()
    request_id = st.text_input("Request id", key=INPUT, max_chars=200,
                               placeholder="e.g. 0b5c9f3e-8d1a-4c3f-9a57-2e6f1d0c4b21").strip()
    if request_id != (st.query_params.get(PARAM) or ""):
        if request_id:
            st.query_params[PARAM] = request_id
        else:
            st.query_params.pop(PARAM, None)
        st.session_state[_SEEN] = request_id or None
    if not request_id:
        st.caption("Paste an id from a client's response headers, or follow a link from the Monitoring page "
                   "(top errors, slowest requests).")
        st.page_link("pages/monitoring.py", label="Monitoring", icon=":material/monitoring:")
        return
    try:
        detail = state.request_detail(uri, request_id)
    except NotFound:
        st.warning(not_found_text(request_id, ws.info.description), icon="🔎")
        return
    except ServiceError as e:
        show_error(e)
        return
    show_partial(detail)
    render_detail(detail, ws.policy.model_name)


def render_detail(detail: RequestDetail, policy_model: str) -> None:
    r = detail.record
    words, level = status_words(r.status)
    getattr(st, level)(f"**{words}** — {code(r.request_id)} to **{escaped(r.endpoint)}** "
                       f"at {r.ts:%Y-%m-%d %H:%M:%S} UTC",
                       icon={"success": "✅", "warning": "⚠️", "error": "❌"}[level])
    cols = st.columns(5)
    cols[0].metric("Status", r.status if r.status else "no answer", border=True)
    cols[1].metric("Model version", model_short(r.model, policy_model), help=r.model or "no model answered",
                   border=True)
    cols[2].metric("Deployment", r.deployment or "—", border=True)
    cols[3].metric("Latency", f"{r.latency_ms:,.1f} ms", border=True, help="As the gateway measured it")
    cols[4].metric("Time (UTC)", f"{r.ts:%H:%M:%S}", help=f"{r.ts:%Y-%m-%d %H:%M:%S.%f} UTC (when it was answered)",
                   border=True)
    extras = []
    if r.client_request_id and r.client_request_id != r.request_id:
        extras.append(f"the client's own id {code(r.client_request_id)} (x-ms-client-request-id; clients may reuse it)")
    if r.upload_ms is not None:
        extras.append(f"upload of the request body {r.upload_ms:,.1f} ms (not part of the latency)")
    if extras:
        st.caption(" · ".join(extras))
    if r.error:
        st.error(f"**Error:** {escaped(r.error)}", icon="🚫")
    if not r.payload_captured:
        st.caption("The payloads of this request were not kept: `[telemetry] capture_fraction` keeps those of "
                   "a share of the successful requests (every failure and client error is kept).")
    left, right = st.columns(2)
    for col, title, body in ((left, "Request payload", r.request_body), (right, "Response", r.response_body)):
        with col:
            st.markdown(f"**{title}**")
            text, language = pretty(body)
            st.code(text, language=language, wrap_lines=True, height=420 if text.count("\n") > 25 else "content")
    st.markdown("**Log lines of this request**")
    if detail.log_lines:
        st.code(log_text(list(detail.log_lines), with_source=True), language=None, wrap_lines=True)
        st.caption("Lines tagged with the id (gateway and deployment), then the deployment's untagged lines "
                   "written while it was in flight.")
    else:
        st.caption("No log line carries this id: the deployment logs a request only when it is served, and the "
                   "gateway only when it refuses or fails one. The Logs page shows everything around that time.")
    age = datetime.now(timezone.utc) - r.ts
    st.page_link("pages/logs.py", label=f"All logs of {r.endpoint} mentioning this request",
                 icon=":material/article:",
                 query_params={"endpoint": r.endpoint, "q": r.request_id, "range": covering_range(age)})
