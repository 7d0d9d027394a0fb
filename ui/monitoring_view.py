"""The Monitoring page: one endpoint over a window — its health, requests per minute,
failure rate and latency percentiles per model version on one time axis with the
release events of the audit trail, the per-version numbers, the status-code mix,
the top errors and the slowest requests (each linking to Request lookup).

Reads are cached per (workspace, endpoint, window span) for ``state.TELEMETRY_TTL``
seconds; the auto-refresh re-runs only the part below the pickers.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from services.entities import AuditRecord, Endpoint, EndpointHealth, ErrorGroup, HealthStatus, RequestRecord, \
    TimeWindow, VersionStats
from services.policy import Policy
from services.telemetry import WINDOW_CHOICES, parse_since, partial_warnings, window as make_window

from . import state
from .endpoints_view import model_short
from .widgets import guard

DEFAULT_WINDOW = "1h"  # when the window picker is cleared (it opens on opening_window)
REFRESH_S = 10
AUDIT_LIMIT = 5000
LOOKUP_PAGE = "pages/request_lookup.py"
ENDPOINT_KEY, WINDOW_KEY, REFRESH_KEY = "monitoring.endpoint", "monitoring.window", "monitoring.refresh"
_PARAMS_SEEN = "monitoring.params_seen"

# one colour per model version, in order of first appearance; never red/green (those mean bad/good)
VERSION_COLOURS = ("#2f6fde", "#8250df", "#1b7c83", "#bf8700", "#bf3989", "#0a3069", "#953800", "#57606a")
NO_MODEL = "(none)"
NO_MODEL_COLOUR = "#8c959f"
PERCENTILES = (("p50_ms", "p50", "dot"), ("p95_ms", "p95", "solid"), ("p99_ms", "p99", "dash"))

HEALTH_BADGE = {HealthStatus.HEALTHY: ("healthy", "green", ":material/check_circle:"),
                HealthStatus.DEGRADED: ("degraded", "orange", ":material/warning:"),
                HealthStatus.DOWN: ("down", "red", ":material/error:"),
                HealthStatus.IDLE: ("idle", "gray", ":material/bedtime:")}
HEALTH_ICON = {HealthStatus.HEALTHY: "🟢", HealthStatus.DEGRADED: "🟠", HealthStatus.DOWN: "🔴",
               HealthStatus.IDLE: "⚪"}

# audit actions drawn as markers: the ones that change what an endpoint serves
EVENT_ACTIONS = {"deploy": "deploy", "promote": "promote", "rollback": "rollback", "traffic": "traffic change",
                 "deploy.failed": "deploy failed", "promote.failed": "promote failed"}
EVENT_COLOURS = {"deploy": "#2f6fde", "promote": "#1a7f37", "rollback": "#cf222e", "traffic": "#6e7781",
                 "deploy.failed": "#bc4c00", "promote.failed": "#bc4c00"}


# --- data shaping (no streamlit) -----------------------------------------------------

def naive_utc(ts) -> datetime:
    """Plotly draws times as given: one convention for the axis, the data and the markers."""
    return pd.Timestamp(ts).tz_convert("UTC").tz_localize(None).to_pydatetime() if pd.Timestamp(ts).tzinfo \
        else pd.Timestamp(ts).to_pydatetime()


def version_colours(models) -> dict[str, str]:
    """A stable colour per model reference: sorted by version, the same in every chart of the page."""
    def order(ref: str):
        name, _, version = ref.rpartition(":")
        return (name, int(version)) if version.isdigit() else (ref, -1)
    known = sorted({m for m in models if m and m != NO_MODEL}, key=order)
    colours = {m: VERSION_COLOURS[i % len(VERSION_COLOURS)] for i, m in enumerate(known)}
    colours[NO_MODEL] = NO_MODEL_COLOUR
    return colours


def label(ref: str | None, policy_model: str) -> str:
    """``v3`` for the policy's model; "no model" for requests no model version answered
    (refused by the gateway: key, size; or no deployment answered)."""
    return "no model" if not ref or ref == NO_MODEL else model_short(ref, policy_model)


def bin_grid(window: TimeWindow) -> pd.DatetimeIndex:
    """Every bin start of the window (aligned as the service aligns them)."""
    size = window.bin_seconds
    first = int(window.start.timestamp() // size * size)
    return pd.date_range(pd.Timestamp(first, unit="s", tz="UTC"), window.end, freq=f"{size}s", inclusive="left")


def complete_series(series: pd.DataFrame, window: TimeWindow) -> pd.DataFrame:
    """One row per bin and model between the model's first and last bin with requests: a bin
    without requests has rate 0 (not a line drawn across the gap) and no failure rate or
    latency (a gap in those lines). Before its first request a version draws nothing."""
    if series.empty:
        return series
    grid = bin_grid(window)
    frames = []
    for model, part in series.groupby("model", sort=False):
        seen = pd.DatetimeIndex(part["bin"])
        bins = grid[(grid >= seen.min()) & (grid <= seen.max())].union(seen)
        part = part.set_index("bin").reindex(bins)
        part["model"] = model
        for col in ("requests", "failures", "client_errors", "rpm"):
            part[col] = part[col].fillna(0)
        frames.append(part.rename_axis("bin").reset_index())
    return pd.concat(frames, ignore_index=True).sort_values(["model", "bin"], ignore_index=True)


@dataclass(frozen=True)
class ReleaseEvent:
    at: datetime
    action: str          # a key of EVENT_ACTIONS
    actor: str
    role: str
    what: str            # in words: traffic before → after, the model versions
    comment: str


def _traffic_words(before: dict, after: dict, models: dict[str, str], policy_model: str) -> str:
    names = [n for n in dict.fromkeys([*after, *before]) if before.get(n, 0) or after.get(n, 0)]
    parts = []
    for n in names:
        model = f" ({label(models[n], policy_model)})" if n in models else ""
        b, a = before.get(n, 0), after.get(n, 0)
        parts.append(f"{n}{model} {b} → {a} %" if a != b else f"{n}{model} {a} %")
    return "traffic: " + ", ".join(parts) if parts else "traffic unchanged"


def served_by(stats: list[VersionStats]) -> dict[str, str]:
    """deployment -> the model version it served in the window, where that is one version."""
    seen: dict[str, set[str]] = {}
    for s in stats:
        if s.deployment and s.model:
            seen.setdefault(s.deployment, set()).add(s.model)
    return {d: next(iter(models)) for d, models in seen.items() if len(models) == 1}


def release_events(records: list[AuditRecord], endpoint: Endpoint | str, window: TimeWindow,
                   policy_model: str, served: dict[str, str] | None = None) -> list[ReleaseEvent]:
    """The audit records that changed what ``endpoint`` serves, within the window, oldest first.
    Deployment names are resolved to the model version each one ran at the time: from the
    ``*.started`` record of its deployment, else from what it served in the window (``served``),
    else from what the endpoint runs now."""
    name = endpoint if isinstance(endpoint, str) else endpoint.name
    models: dict[str, str] = {} if isinstance(endpoint, str) else {d.name: d.model_ref for d in endpoint.deployments}
    models.update(served or {})
    models_then: dict[str, str] = {}
    out = []
    for r in sorted(records, key=lambda r: (r.at, r.id)):
        env, _, dep = r.target.partition("/")
        if env != name:
            continue
        after, before = dict(r.after or {}), dict(r.before or {})
        if r.action.endswith(".started") and dep and after.get("model"):
            models_then[dep] = after["model"]
            continue
        if r.action not in EVENT_ACTIONS or not window.start <= r.at < window.end:
            continue
        known = {**models, **models_then}
        if r.action.endswith(".failed"):
            what = f"{dep} ({label(after.get('model'), policy_model)}): " + str(after.get("summary") or "failed") \
                + "; traffic unchanged"
        else:
            what = _traffic_words(dict(before.get("traffic") or {}), dict(after.get("traffic") or {}), known,
                                  policy_model)
        out.append(ReleaseEvent(r.at, r.action, r.actor, r.role, what, r.comment))
    return out


def event_hover(e: ReleaseEvent) -> str:
    who = f"{e.actor}" + (f" ({e.role})" if e.role else "")
    comment = f"<br>“{e.comment}”" if e.comment else ""
    return (f"<b>{EVENT_ACTIONS[e.action]}</b> · {e.at:%Y-%m-%d %H:%M:%S} UTC<br>by {who}<br>{e.what}{comment}")


def monitoring_figure(series: pd.DataFrame, window: TimeWindow, events: list[ReleaseEvent],
                      policy_model: str) -> go.Figure:
    """Requests per minute, failure rate and latency percentiles per model version, one time axis;
    release events as dotted vertical lines with a hoverable marker on top."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=("Requests per minute", "Failure rate (5xx and no answer)",
                                        "Latency, ms  (p50 dotted · p95 solid · p99 dashed)"))
    data = complete_series(series, window)
    colours = version_colours(data["model"].unique() if not data.empty else [])
    for model, part in data.groupby("model", sort=False) if not data.empty else []:
        name, colour = label(model, policy_model), colours.get(model, NO_MODEL_COLOUR)
        x = [naive_utc(t) for t in part["bin"]]
        custom = part[["requests", "failures", "client_errors"]].to_numpy()
        fig.add_scatter(x=x, y=part["rpm"], name=name, legendgroup=model, mode="lines+markers",
                        line=dict(color=colour, width=2), marker=dict(size=4), customdata=custom,
                        hovertemplate=f"{name} · %{{x|%H:%M:%S}}<br>%{{y:.1f}} req/min"
                                      f" (%{{customdata[0]}} requests)<extra></extra>", row=1, col=1)
        fig.add_scatter(x=x, y=part["failure_rate"], name=name, legendgroup=model, showlegend=False,
                        mode="lines+markers", line=dict(color=colour, width=2), marker=dict(size=4),
                        customdata=custom, connectgaps=False,
                        hovertemplate=f"{name} · %{{x|%H:%M:%S}}<br>%{{y:.1%}} failed"
                                      f" (%{{customdata[1]}} of %{{customdata[0]}}; 4xx: %{{customdata[2]}})"
                                      "<extra></extra>", row=2, col=1)
        # no model: refused by the gateway or unanswered — not a model's serving latency
        for col, pname, dash in PERCENTILES if model != NO_MODEL else ():
            fig.add_scatter(x=x, y=part[col], name=f"{name} {pname}", legendgroup=model, showlegend=False,
                            mode="lines", line=dict(color=colour, width=2 if pname == "p95" else 1.5, dash=dash),
                            connectgaps=False,
                            hovertemplate=f"{name} {pname} · %{{x|%H:%M:%S}}<br>%{{y:.1f}} ms<extra></extra>",
                            row=3, col=1)
    top = float(data["rpm"].max()) if not data.empty else 1.0
    for e in events:
        at = naive_utc(e.at)
        for row in (1, 2, 3):
            fig.add_vline(x=at, line=dict(color=EVENT_COLOURS[e.action], width=1.5, dash="dot"), row=row, col=1)
    if events:
        fig.add_scatter(x=[naive_utc(e.at) for e in events], y=[top * 1.12 or 1] * len(events),
                        mode="markers", name="release events", legendgroup="events",
                        marker=dict(symbol="triangle-down", size=13,
                                    color=[EVENT_COLOURS[e.action] for e in events],
                                    line=dict(color="white", width=1)),
                        hovertext=[event_hover(e) for e in events], hovertemplate="%{hovertext}<extra></extra>",
                        row=1, col=1)
    fig.update_xaxes(range=[naive_utc(window.start), naive_utc(window.end)], showgrid=True)
    fig.update_xaxes(title_text="time (UTC)", row=3, col=1)
    fig.update_yaxes(rangemode="tozero", title_text="req/min", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", tickformat=".0%", title_text="failed", row=2, col=1)
    served = data[data["model"] != NO_MODEL] if not data.empty else data
    low, high = (served["p50_ms"].min(), served["p99_ms"].max()) if not served.empty else (None, None)
    if low and high and high / low > 30:  # a few slow requests would flatten the rest on a linear axis
        ticks = [m * 10 ** e for e in range(-1, 6) for m in (1, 2, 5) if low / 2 <= m * 10 ** e <= high * 2]
        fig.update_yaxes(type="log", title_text="ms (log)", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                         row=3, col=1)
    else:
        fig.update_yaxes(rangemode="tozero", title_text="ms", row=3, col=1)
    fig.update_layout(height=640, margin=dict(l=10, r=10, t=40, b=10), hovermode="closest",
                      legend=dict(title_text="model version", orientation="v", x=1.01, y=1, yanchor="top"))
    fig.update_annotations(font_size=13, x=0, xanchor="left")  # subplot titles, left-aligned
    return fig


def versions_frame(stats: list[VersionStats], policy_model: str) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": label(s.model, policy_model), "model version": s.model or "—", "deployment": s.deployment or "—",
        "requests": s.requests, "failures": s.failures, "failure rate": s.failure_rate,
        "client errors": s.client_errors, "p50 ms": s.p50_ms, "p95 ms": s.p95_ms, "p99 ms": s.p99_ms,
    } for s in stats], columns=["model", "model version", "deployment", "requests", "failures", "failure rate",
                                "client errors", "p50 ms", "p95 ms", "p99 ms"])


def status_class(status: int) -> str:
    if status == 0:
        return "no answer"
    return f"{status // 100}xx"


def status_figure(mix: pd.DataFrame, policy_model: str, colours: dict[str, str]) -> go.Figure:
    """Requests per HTTP status, stacked by model version."""
    fig = go.Figure()
    codes = sorted(mix["status"].unique())
    names = {c: ("0 · no answer" if c == 0 else str(c)) for c in codes}
    for model, part in mix.groupby("model", sort=True):
        name = label(model, policy_model)
        fig.add_bar(x=[names[c] for c in part["status"]], y=part["requests"], name=name,
                    marker_color=colours.get(model, NO_MODEL_COLOUR),
                    hovertemplate=f"{name} · HTTP %{{x}}<br>%{{y}} requests<extra></extra>")
    fig.update_layout(barmode="stack", height=280, margin=dict(l=10, r=10, t=10, b=10), bargap=0.35,
                      xaxis=dict(type="category", categoryorder="array", categoryarray=[names[c] for c in codes],
                                 title_text="HTTP status"),
                      yaxis=dict(title_text="requests", rangemode="tozero"), legend=dict(title_text="model version"))
    return fig


def lookup_url(request_id: str) -> str:
    """A link to Request lookup, relative to the current page (works under any base path)."""
    from urllib.parse import quote
    return f"request_lookup?request_id={quote(request_id, safe='')}"


def slowest_frame(records: list[RequestRecord], policy_model: str) -> pd.DataFrame:
    return pd.DataFrame([{
        "time": r.ts, "latency ms": r.latency_ms, "status": r.status, "model": label(r.model, policy_model),
        "request": lookup_url(r.request_id), "deployment": r.deployment or "—", "error": r.error or "",
    } for r in records], columns=["time", "latency ms", "status", "model", "request", "deployment", "error"])


def health_of(health: list[EndpointHealth], endpoint: str) -> EndpointHealth | None:
    return next((h for h in health if h.endpoint == endpoint), None)


NOT_DEPLOYED = ("not deployed", "gray", ":material/block:")


def health_badge(h: EndpointHealth | None, endpoint: Endpoint) -> tuple[str, str, str, list[str]]:
    """(status text, badge colour, icon, reasons) of one endpoint. With nothing deployed it is
    "not deployed" rather than down: there is nothing to be down."""
    if not any(d.state != "stopped" for d in endpoint.deployments):
        return (*NOT_DEPLOYED, [f"nothing is deployed to {endpoint.name}"])
    if h is None:
        return "unknown", "gray", ":material/help:", ["no health reading"]
    return (*HEALTH_BADGE[h.status], list(h.reasons))


def health_line(h: EndpointHealth) -> str:
    p95 = "—" if h.p95_ms is None else f"{h.p95_ms:.0f} ms"
    return (f"last {h.window_minutes} min: {h.requests} requests, failure rate {h.failure_rate:.1%}, "
            f"p95 {p95}, deployments up {h.deployments_up} / {h.deployments_total}")


# --- rendering -------------------------------------------------------------------------

def endpoint_names(endpoints: list[Endpoint], policy: Policy) -> list[str]:
    order = [policy.endpoints.production, policy.endpoints.staging]
    return sorted((e.name for e in endpoints), key=lambda n: (order.index(n) if n in order else len(order), n))


def adopt_query_params(names: list[str], endpoint_key: str = ENDPOINT_KEY, window_key: str | None = WINDOW_KEY,
                       seen_key: str = _PARAMS_SEEN) -> None:
    """``?endpoint=staging&window=24h`` (links from Overview) choose the pickers, once per new value."""
    params = {k: st.query_params.get(k) for k in ("endpoint", "window")}
    if params == st.session_state.get(seen_key):
        return
    st.session_state[seen_key] = params
    if params["endpoint"] in names:
        st.session_state[endpoint_key] = params["endpoint"]
    if window_key and params["window"] in WINDOW_CHOICES:
        st.session_state[window_key] = params["window"]


def opening_window(health_minutes: float, has_requests: Callable[[str], bool]) -> str:
    """The window Monitoring opens on: the one its health line judges (the smallest choice that
    covers ``[health] window_minutes``), or, when no request arrived in it, the shortest longer
    one with requests, so it never opens on an empty chart while there is data; the health
    window again when no window has any."""
    covering = [c for c in WINDOW_CHOICES if parse_since(c) >= timedelta(minutes=health_minutes)]
    covering = covering or [WINDOW_CHOICES[-1]]
    return next((c for c in covering if has_requests(c)), covering[0])


def render() -> None:
    ws, uri = state.workspace(), state.uri()
    policy = ws.policy
    st.title("Monitoring")
    st.caption("Requests, failures and latency per model version, with the release events of the audit trail. "
               "Times in UTC.")
    if ws.telemetry is None or ws.endpoints is None:
        st.info("This workspace has no request telemetry.")
        return
    endpoints = {e.name: e for e in state.endpoints(uri)}
    names = endpoint_names(list(endpoints.values()), policy)
    if not names:
        st.info("No online endpoint exists yet: deploy a model version to staging on the Releases page.")
        return
    adopt_query_params(names)
    c1, c2, c3 = st.columns([2, 3, 2], vertical_alignment="bottom")
    endpoint = c1.selectbox("Endpoint", names, key=ENDPOINT_KEY)
    if WINDOW_KEY not in st.session_state:  # first open (a link's ?window= sets it first)
        with guard():
            st.session_state[WINDOW_KEY] = opening_window(
                policy.health.window_minutes, lambda since: bool(state.telemetry_stats(uri, since, endpoint)))
    since = c2.segmented_control("Window", WINDOW_CHOICES, key=WINDOW_KEY) or DEFAULT_WINDOW
    auto = c3.toggle(f"Auto-refresh every {REFRESH_S} s", key=REFRESH_KEY, value=False)
    body = st.fragment(run_every=REFRESH_S)(render_body) if auto else render_body
    body(uri, policy, endpoints[endpoint], since)


def show_partial(*results, shown: set[str] | None = None) -> None:
    """A warning for each result the backend got only in part (``services.telemetry.warning_of``),
    once per message in ``shown`` (the messages already shown in this render)."""
    for warning in partial_warnings(*results):
        if shown is None or warning not in shown:
            st.warning(warning, icon="⚠️")
            if shown is not None:
                shown.add(warning)


def render_body(uri: str, policy: Policy, ep: Endpoint, since: str) -> None:
    shown: set[str] = set()
    with guard():
        render_health(uri, ep, shown)
    window = make_window(since)
    pm = policy.model_name
    with guard():
        stats = state.telemetry_stats(uri, since, ep.name)
        series = state.telemetry_series(uri, since, ep.name)
        show_partial(stats, series, shown=shown)
        events = release_events(state.audit(uri, AUDIT_LIMIT), ep, window, pm, served_by(stats))
        if not stats:
            st.info(f"**No requests reached {ep.name} in the last {since}.** "
                    + ("Its gateway is not running: start the endpoints on the Endpoints page or with "
                       "`python tollgate.py up`. " if not ep.gateway_up else "")
                    + "Send a request from the Endpoints page's Test panel, or traffic with "
                      f"`python tollgate.py simulate --env {ep.name}`; or pick a longer window.", icon="📭")
            if events:
                st.markdown(f"**Release events in the last {since}**")
                st.dataframe(pd.DataFrame([{"time": e.at, "action": EVENT_ACTIONS[e.action], "by": e.actor,
                                            "what": e.what, "comment": e.comment} for e in events]),
                             hide_index=True, width="stretch")
            return
        render_totals(stats)
        st.plotly_chart(monitoring_figure(series, window, events, pm), width="stretch",
                        config={"displayModeBar": False}, key="monitoring.figure")
        bins = f"{window.bin_seconds // 60} min" if window.bin_seconds >= 60 else f"{window.bin_seconds} s"
        st.caption(f"Bins of {bins}. ▼ release events (hover for who and what): blue deploy, green promote, "
                   "red rollback, grey traffic change, orange failed deploy or promote.")
        st.markdown("**Per model version**")
        st.dataframe(versions_frame(stats, pm), hide_index=True, width="stretch", column_config={
            "failure rate": st.column_config.NumberColumn(format="percent", help="5xx and unanswered requests"),
            "client errors": st.column_config.NumberColumn(help="4xx: the caller's mistakes, not failures"),
            **{c: st.column_config.NumberColumn(format="%.1f") for c in ("p50 ms", "p95 ms", "p99 ms")},
        })
        colours = version_colours(s.model or NO_MODEL for s in stats)
        left, right = st.columns([2, 3])
        with left:
            st.markdown("**Status codes**")
            mix = state.status_mix(uri, since, ep.name)
            show_partial(mix, shown=shown)
            st.plotly_chart(status_figure(mix, pm, colours), width="stretch", config={"displayModeBar": False},
                            key="monitoring.status")
        with right:
            slowest = state.slowest(uri, since, ep.name)
            show_partial(slowest, shown=shown)
            render_slowest(slowest, pm)
        top_errors = state.top_errors(uri, since, ep.name)
        show_partial(top_errors, shown=shown)
        render_top_errors(top_errors, pm, since)


def render_health(uri: str, ep: Endpoint, shown: set[str] | None = None) -> None:
    health = state.endpoints_health(uri)
    show_partial(health, shown=shown)
    h = health_of(health, ep.name)
    text, colour, icon, reasons = health_badge(h, ep)
    st.markdown(f"**Health** :{colour}-badge[{icon} {text}]" + (f" &nbsp; :gray[{health_line(h)}]" if h else ""),
                help="From the policy's [health] rules: failure rate, p95 latency and deployments up over the "
                     "last few minutes, whatever the window above.")
    if reasons:
        st.markdown("\n".join(f"- {r}" for r in reasons))


def render_totals(stats: list[VersionStats]) -> None:
    requests = sum(s.requests for s in stats)
    failures = sum(s.failures for s in stats)
    client = sum(s.client_errors for s in stats)
    # unanswered requests are failures; their "latency" is the time it took to give up
    p95 = max((s.p95_ms for s in stats if s.p95_ms is not None and s.model), default=None)
    cols = st.columns(4)
    cols[0].metric("Requests", f"{requests:,}", border=True)
    cols[1].metric("Failure rate", f"{failures / requests:.2%}" if requests else "—", border=True,
                   help=f"{failures} requests got a 5xx or no answer")
    cols[2].metric("Client errors (4xx)", f"{client:,}", border=True)
    cols[3].metric("p95 latency", "—" if p95 is None else f"{p95:.0f} ms", border=True,
                   help="The worst p95 of the model versions (percentiles do not add up); "
                        "unanswered requests are counted as failures, not here")


def render_top_errors(groups: list[ErrorGroup], policy_model: str, since: str) -> None:
    st.markdown("**Top errors** · 4xx and 5xx by message, with a sample request")
    if not groups:
        st.caption(f"No failed requests in the last {since}.")
        return
    for g in groups:
        with st.container(border=True):
            text, link = st.columns([2, 1], vertical_alignment="center")
            models = ", ".join(label(m, policy_model) for m in g.models) or label(None, policy_model)
            text.markdown(f"**{g.count:,} ×** HTTP {g.status} · {models} &nbsp; :gray[first "
                          f"{g.first_seen:%Y-%m-%d %H:%M:%S} · last {g.last_seen:%H:%M:%S} UTC]")
            text.code(g.message[:400], language=None, wrap_lines=True)
            with link:
                st.page_link(LOOKUP_PAGE, label=g.sample_request_id, icon=":material/search:",
                             query_params={"request_id": g.sample_request_id},
                             help="A sample request with this error: open it in Request lookup")


def render_slowest(records: list[RequestRecord], policy_model: str) -> None:
    st.markdown("**Slowest requests** · the id opens Request lookup in a new tab")
    if not records:
        st.caption("None in this window.")
        return
    st.dataframe(slowest_frame(records, policy_model), hide_index=True, width="stretch", column_config={
        "time": st.column_config.DatetimeColumn("time (UTC)", format="MM-DD HH:mm:ss"),
        "latency ms": st.column_config.NumberColumn(format="%.1f"),
        "request": st.column_config.LinkColumn("request id", display_text=r"request_id=(.*)$",
                                               help="Opens the request in Request lookup"),
        "error": st.column_config.TextColumn(width="medium"),
    })
