"""The Drift page: the inputs an endpoint answered, per model version, against the
training split of that version — per feature PSI and KS judged by ``[drift]``, an
overall verdict (or "not judged" under ``min_rows``), reference vs live distributions —
and "register the collected inputs as a dataset version" behind a confirmation that
says plainly the version has no labels.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from services.drift import DriftReport, DriftStatus, FeatureDrift, default_dataset_name, register_collected_inputs
from services.errors import InvalidInput, ServiceError
from services.policy import DriftPolicy, Policy
from services.permissions import roles_needed
from services.telemetry import WINDOW_CHOICES, window as make_window

from . import state
from .chrome import refusal
from .monitoring_view import NO_MODEL, adopt_query_params, endpoint_names, label, show_partial
from .widgets import code, escaped, guard, show_error

DEFAULT_WINDOW = "24h"
ALL_VERSIONS = ""
KEY = "drift.{}"
PENDING = "drift.register.pending"     # the registration awaiting confirmation: (endpoint, since, model, rows)
FLASH = "drift.flash"
REGISTER = "register_collected_inputs"  # the action of the register button (services.permissions)
PLOT_COLUMNS = 5

STATUS_BADGE = {DriftStatus.OK: ("no drift", "green"), DriftStatus.WARN: ("drift: warn", "orange"),
                DriftStatus.FAIL: ("drift: fail", "red"), DriftStatus.NOT_JUDGED: ("not judged", "gray")}
STATUS_TEXT = {DriftStatus.OK: "✅ ok", DriftStatus.WARN: "⚠️ warn", DriftStatus.FAIL: "❌ fail",
               DriftStatus.NOT_JUDGED: "— not judged"}
STATUS_COLOUR = {DriftStatus.OK: "#1a7f37", DriftStatus.WARN: "#9a6700", DriftStatus.FAIL: "#cf222e",
                 DriftStatus.NOT_JUDGED: "#6e7781"}
CELL_BACKGROUND = {DriftStatus.OK: "#dafbe1", DriftStatus.WARN: "#fff8c5", DriftStatus.FAIL: "#ffebe9"}
REFERENCE_COLOUR, LIVE_COLOUR = "#8c959f", "#2f6fde"


# --- data shaping (no streamlit) ------------------------------------------------------

def judge(value: float | None, warn: float, fail: float) -> DriftStatus:
    """One number against its limits, as the drift service judges it (above fail fails, above warn warns)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DriftStatus.NOT_JUDGED
    return DriftStatus.FAIL if value > fail else DriftStatus.WARN if value > warn else DriftStatus.OK


def features_frame(report: DriftReport) -> pd.DataFrame:
    return pd.DataFrame([{
        "feature": f.feature, "status": STATUS_TEXT[f.status], "PSI": f.psi, "KS": f.ks, "KS p-value": f.ks_pvalue,
        "reference mean": f.reference_mean, "live mean": f.live_mean, "live rows": f.live_rows, "detail": f.detail,
    } for f in report.features], columns=["feature", "status", "PSI", "KS", "KS p-value", "reference mean",
                                          "live mean", "live rows", "detail"])


def styled_features(frame: pd.DataFrame, policy: DriftPolicy, judged: bool):
    """PSI and KS cells coloured ok / warn / fail against the policy's limits (not coloured when
    the report is not judged: too few rows for the colours to mean anything)."""
    css = pd.DataFrame("", index=frame.index, columns=frame.columns)
    if judged:
        for col, warn, fail in (("PSI", policy.psi_warn, policy.psi_fail), ("KS", policy.ks_warn, policy.ks_fail)):
            css[col] = [f"background-color: {CELL_BACKGROUND[s]}" if s in CELL_BACKGROUND else ""
                        for s in (judge(v, warn, fail) for v in frame[col])]
    return frame.style.apply(lambda _: css, axis=None).format(
        {"PSI": "{:.3f}", "KS": "{:.3f}", "KS p-value": "{:.3g}", "reference mean": "{:.4g}",
         "live mean": "{:.4g}"}, na_rep="—")


def distribution_figure(features: tuple[FeatureDrift, ...], judged: bool) -> go.Figure:
    """Reference vs live share of rows per bin, one small chart per feature; each title gives
    PSI and KS in the colour of the feature's status."""
    n = len(features)
    cols = min(PLOT_COLUMNS, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    titles = [f"{f.feature} · PSI {_num(f.psi)} · KS {_num(f.ks)}" for f in features]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.36 / rows if rows > 1 else 0.1)
    for i, f in enumerate(features):
        r, c = i // cols + 1, i % cols + 1
        edges = list(f.bin_edges)
        if len(edges) < 2:
            continue
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        width = edges[1] - edges[0]
        for name, shares, colour in (("reference (training split)", f.reference_hist, REFERENCE_COLOUR),
                                     ("live (collected inputs)", f.live_hist, LIVE_COLOUR)):
            if shares:
                fig.add_bar(x=centres, y=list(shares), width=width, name=name, legendgroup=name,
                            showlegend=i == 0, marker_color=colour, opacity=0.55,
                            hovertemplate=f"{f.feature} %{{x:.4g}}<br>{name.split(' ')[0]}: %{{y:.1%}} of rows"
                                          "<extra></extra>", row=r, col=c)
    for annotation, f in zip(fig.layout.annotations, features):
        annotation.font = dict(size=12, color=STATUS_COLOUR[f.status] if judged else STATUS_COLOUR[
            DriftStatus.NOT_JUDGED])
    fig.update_layout(barmode="overlay", height=220 * rows + 60, margin=dict(l=10, r=10, t=40, b=10),
                      bargap=0, legend=dict(orientation="h", x=0, y=1 + 0.12 / rows, yanchor="bottom"))
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    fig.update_xaxes(nticks=5)
    return fig


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def register_lines(endpoint: str, since: str, model: str | None, rows: int, target: str, name: str) -> list[str]:
    served = f" served by {model}" if model else ""
    return [
        f"a new version of dataset **{name}** with the {rows:,} feature rows that **{endpoint}** answered "
        f"(2xx) in the last {since}{served}",
        f"**it is feature-only: these requests carried no labels** (no `{target}` column). The version is "
        f"tagged `labels: none` and its data tests warn “no labels”",
        f"**it cannot be used for training until it is labelled**: a training run on it is refused. Add the "
        f"`{target}` column (e.g. upload the labelled rows as the next version) first",
        "the training datasets and the models are not touched",
    ]


# --- rendering -------------------------------------------------------------------------

def render() -> None:
    ws, uri = state.workspace(), state.uri()
    policy = ws.policy
    st.title("Drift")
    d = policy.drift
    st.caption("The inputs an endpoint answered, per model version, against the training split of that version. "
               f"Per feature: PSI (warn > {d.psi_warn:g}, fail > {d.psi_fail:g}) and the Kolmogorov-Smirnov "
               f"statistic (warn > {d.ks_warn:g}, fail > {d.ks_fail:g}), from `[drift]` in the policy; judged from "
               f"{d.min_rows} collected rows.")
    if ws.telemetry is None or ws.endpoints is None:
        st.info("This workspace has no request telemetry, so no collected inputs.")
        return
    names = endpoint_names(state.endpoints(uri), policy)
    if not names:
        st.info("No online endpoint exists yet: nothing has been collected.")
        return
    flash()
    adopt_query_params(names, KEY.format("endpoint"), KEY.format("window"), KEY.format("params_seen"))
    c1, c2, c3 = st.columns([2, 3, 2], vertical_alignment="bottom")
    endpoint = c1.selectbox("Endpoint", names, key=KEY.format("endpoint"))
    since = c2.segmented_control("Window", WINDOW_CHOICES, default=DEFAULT_WINDOW, key=KEY.format("window"),
                                 required=True) or DEFAULT_WINDOW
    with guard():
        stats = state.telemetry_stats(uri, since, endpoint)
        served = sorted({s.model for s in stats if s.model}, key=lambda m: label(m, policy.model_name))
        model = c3.selectbox("Model version", [ALL_VERSIONS, *served], key=KEY.format("model"),
                             format_func=lambda m: "all versions" if m == ALL_VERSIONS else
                             f"{label(m, policy.model_name)} ({m})") or None
        reports = state.drift_reports(uri, endpoint, since, model)
        show_partial(stats, reports)
        render_register_button(endpoint, since, model, sum(r.live_rows for r in reports))
        if not reports:
            st.info(f"**No inputs collected from {endpoint} in the last {since}"
                    + (f" served by {model}" if model else "") + ".** Only answered requests (2xx) are collected. "
                    "Pick a longer window, or send traffic: `python tollgate.py simulate --env "
                    f"{endpoint}`.", icon="📭")
        for report in reports:
            with st.container(border=True):
                render_report(report, policy)
    pending_dialog()


def render_report(report: DriftReport, policy: Policy) -> None:
    text, colour = STATUS_BADGE[report.status]
    who = f"{label(report.model, policy.model_name)} ({report.model})" if report.model and report.model != NO_MODEL \
        else "all versions"
    st.markdown(f"#### {who} :{colour}-badge[{text}]")
    st.markdown(escaped(report.summary))
    if report.missing_features:
        st.warning(f"The collected inputs lack the feature(s) {escaped(', '.join(report.missing_features))} the model "
                   "was trained on: they are not compared.", icon="⚠️")
    if not report.features:
        return
    frame = features_frame(report)
    st.dataframe(styled_features(frame, report.policy, report.judged), hide_index=True, width="stretch",
                 column_config={"detail": st.column_config.TextColumn(width="large"),
                                "KS p-value": st.column_config.Column(help="two-sided; tiny with many rows even "
                                                                             "for harmless shifts: judge by KS")})
    st.plotly_chart(distribution_figure(report.features, report.judged), width="stretch",
                    config={"displayModeBar": False}, key=KEY.format(f"plot.{report.model}"))


def render_register_button(endpoint: str, since: str, model: str | None, rows: int) -> None:
    st.button("Register collected inputs as a dataset version", icon=":material/dataset_linked:",
              key=KEY.format("register"), disabled=rows == 0,
              on_click=lambda: st.session_state.__setitem__(PENDING, (endpoint, since, model, rows)),
              help=f"The {rows:,} rows of this selection as a new, feature-only dataset version "
                   f"({roles_needed(REGISTER)})" if rows else "Nothing collected in this selection")


def flash() -> None:
    message = st.session_state.pop(FLASH, None)
    if message:
        st.success(message, icon="✅")


def _forget() -> None:
    st.session_state.pop(PENDING, None)


def pending_dialog() -> None:
    pending = st.session_state.get(PENDING)
    if pending:
        st.dialog("Register collected inputs as a dataset version", width="large", on_dismiss=_forget)(
            _confirm)(*pending)


def _confirm(endpoint: str, since: str, model: str | None, rows: int) -> None:
    ws, actor = state.workspace(), state.actor()
    policy = ws.policy
    name = st.text_input("Dataset name", value=default_dataset_name(endpoint), key=KEY.format("dialog.name"),
                         help="A name apart from the training datasets, so that their latest version stays "
                              "trainable").strip()
    roles = policy.roles_of(actor)
    st.markdown(f"Acting as {code(actor)} ({', '.join(roles) or 'no role'}). **What will happen:**")
    st.markdown("\n".join(f"- {line}" for line in register_lines(endpoint, since, model, rows, policy.target,
                                                                 escaped(name) or "…")))
    why = refusal(policy, actor, REGISTER)
    if why:
        st.warning(why, icon="🔒")
    ok, cancel = st.columns(2)
    confirmed = ok.button("Register feature-only version", type="primary", key=KEY.format("dialog.confirm"),
                          width="stretch")
    if cancel.button("Cancel", key=KEY.format("dialog.cancel"), width="stretch"):
        _forget()
        st.rerun()
    if not confirmed:
        return
    try:
        if not name:
            raise InvalidInput("a dataset needs a name")
        with st.spinner("Registering and profiling the collected inputs…"):
            dv = register_collected_inputs(ws, endpoint, make_window(since), name, actor, model)
    except ServiceError as e:
        show_error(e)
        return
    state.after_write()
    st.session_state[FLASH] = (f"Registered **{dv.ref}**: {dv.rows:,} rows, feature-only (labels: none). "
                               "It cannot be used for training until it is labelled; see it on the Datasets page.")
    _forget()
    st.rerun()
