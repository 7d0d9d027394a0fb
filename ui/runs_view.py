"""The Runs page's pieces: filters and table, one run's details, the retraining form, and
the live watch of a run in progress (several runs compared: ``ui.runs_compare``).

Selection: the multiselect ``PICK`` (mirrored in the URL as ``?run=ID``) is the source of
truth; the table's row checkboxes are kept in sync with it both ways, so runs can be
picked with the mouse in the table or by keyboard in the multiselect.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from services import training
from services.datatests import latest_passing
from services.entities import (CheckStatus, Condition, GateDecision, MetricPoint, Run, RunFilter, RunStatus,
                               TrainingSpec)
from services.errors import InvalidInput, ServiceError
from services.run_search import parse_condition
from services.telemetry import mark_frame, warning_of

from . import state
from .chrome import role_hint
from .provenance_view import provenance_block
from .steps_view import render_steps
from .widgets import NEUTRAL, STATUS_ICON, code, escaped, fmt_duration, fmt_metric, guard, show_error

# session-state keys of this page
PICK = "run"                       # run ids to inspect; also the URL query parameter (?run=ID, repeatable)
TABLE = "runs.table"               # the table's selection state
TABLE_IDS = "runs.table_ids"       # run ids in the table's row order, for the selection callback
WATCH = "runs.watch"               # the run whose progress is followed live
CONFIRM_CANCEL = "runs.confirm_cancel"

POLL_S = 1.0                       # how often the live view re-reads a run in progress
MAIN_METRICS = ("rmse", "mae", "r2")
MAX_COMPARED = 25
STEPS = ("queued", "starting", "validate data", "train", "evaluate", "register", "deploy to staging", "done")
ESTIMATOR_LABELS = {"ridge": "Ridge regression", "lasso": "Lasso regression",
                    "gbr": "Gradient boosting", "random_forest": "Random forest",
                    "logistic_regression": "Logistic regression",
                    "gradient_boosting_classifier": "Gradient boosting classifier",
                    "random_forest_classifier": "Random forest classifier"}
PARAM_HELP = {
    "alpha": "Regularisation strength (≥ 0): larger values give a simpler, smoother model.",
    "max_iter": "Maximum number of optimiser iterations.",
    "n_estimators": "Number of trees (boosting stages).",
    "learning_rate": "How much each boosting stage contributes (> 0).",
    "max_depth": "Maximum depth of each tree.",
    "subsample": "Fraction of the training rows each tree sees (0 < x ≤ 1).",
    "min_samples_leaf": "Minimum number of rows in a leaf.",
    "random_state": "Seed, so that the run can be reproduced exactly.",
    "C": "Inverse regularisation strength (> 0): smaller values give a simpler model.",
}
TABLE_COLUMNS = ["status", "name", "estimator", "dataset", "rmse", "mae", "r2", "gate", "model", "created",
                 "duration_s", "experiment", "created_by", "id"]


def status_label(status: RunStatus | str) -> str:
    status = RunStatus(status)
    return f"{STATUS_ICON[status]} {status.value}"


def estimator_label(name: str) -> str:
    return ESTIMATOR_LABELS.get(name, name)


def fmt_time(at: datetime | None) -> str:
    return "—" if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_label(run: Run, width: int = 28) -> str:
    """Unique and short: display names repeat (and can be long), ids do not."""
    name = run.display_name if len(run.display_name) <= width else run.display_name[:width - 1] + "…"
    return f"{name} · {run.id[-6:]}"


# --- the table ------------------------------------------------------------------

STATUS_LABELS = {s.value: status_label(s) for s in RunStatus}
GATE_LABELS = {True: "✅ pass", False: "❌ fail"}


def table_frame(items: list[Run]) -> pd.DataFrame:
    """One display row per run: the columns of ``state.runs_frame`` with badges and the main
    metrics. Built column by column, not from a dict per row: cheaper with 10,000 runs."""
    if not items:
        return pd.DataFrame(columns=TABLE_COLUMNS + ["status_value"])
    states = [r.status.value for r in items]
    return pd.DataFrame({
        "status": [STATUS_LABELS[s] for s in states],
        "name": [r.display_name for r in items],
        "estimator": [r.estimator for r in items],
        "dataset": [f"{r.dataset}:{r.dataset_version}" if r.dataset else "—" for r in items],
        **{m: pd.array([r.metrics.get(m) for r in items], dtype="Float64").astype(float) for m in MAIN_METRICS},
        "gate": [None if r.gate is None else GATE_LABELS[r.gate.passed] for r in items],
        "model": [f"{r.model_name}:{r.model_version}" if r.model_version else None for r in items],
        "created": pd.to_datetime([r.created_at for r in items], utc=True),
        "duration_s": pd.array([r.duration_s for r in items], dtype="Float64").astype(float),
        "experiment": [r.experiment for r in items],
        "created_by": [r.created_by for r in items],
        "id": [r.id for r in items],
        "status_value": states,  # the raw status, for counts; not displayed
    })


@st.cache_data(ttl=state.READ_TTL, show_spinner=False)
def runs_table(ws_uri: str, flt: RunFilter) -> pd.DataFrame:
    # Cached as a DataFrame, not as Run objects: with 10,000 runs, unpickling the Run
    # list from the cache on every rerun costs ~0.5 s; the frame costs ~1 ms.
    runs = state.workspace().jobs.list(flt)
    return mark_frame(table_frame(runs), warning_of(runs))  # jobs left out, or a page that failed: said


def partial_notice(frame: pd.DataFrame) -> None:
    """What the listing could not read (jobs the SDK cannot parse, a page that failed), beside the rest."""
    warning = warning_of(frame)
    if warning:
        st.warning(escaped(warning), icon=":material/warning:")


@st.cache_data(ttl=state.READ_TTL, show_spinner=False)
def load_runs(ws_uri: str, run_ids: tuple[str, ...]) -> list[Run]:
    """Only the selected runs are loaded in full."""
    jobs = state.workspace().jobs
    return [jobs.get(run_id) for run_id in run_ids]


def table_columns() -> dict:
    col = st.column_config
    return {
        "status": col.TextColumn("Status"),
        "name": col.TextColumn("Run", width="medium"),
        "estimator": col.TextColumn("Estimator", width="small"),
        "dataset": col.TextColumn("Data", width="small", help="dataset:version the run trained on"),
        "rmse": col.NumberColumn("RMSE", format="%.2f", width="small", help="Held-out split; lower is better"),
        "mae": col.NumberColumn("MAE", format="%.2f", width="small", help="Held-out split; lower is better"),
        "r2": col.NumberColumn("R²", format="%.3f", width="small", help="Held-out split; higher is better"),
        "gate": col.TextColumn("Gate", width="small", help="Quality gate against the champion"),
        "model": col.TextColumn("Registered", help="Model version registered by the run"),
        "created": col.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
        "duration_s": col.NumberColumn("Duration", format="%.1f s", width="small"),
        "experiment": col.TextColumn("Experiment"),
        "created_by": col.TextColumn("By"),
        "id": col.TextColumn("Run id"),
    }


WINDOWS = (100, 500, 2000, 0)      # how many of the newest matching runs to load; 0 = all, a page at a time
DEFAULT_WINDOW = 500
PAGE_SIZE = 2000                   # "all runs" is read and shown a page at a time
PAGE = "runs.page"                 # the page of "all runs" shown (0: the newest)
PAGE_OF = "runs.page_of"           # ... for these filters


@dataclass(frozen=True)
class Filters:
    statuses: tuple[RunStatus, ...] = ()
    estimators: tuple[str, ...] = ()
    experiment: str | None = None
    dataset: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    window: int = DEFAULT_WINDOW       # the newest runs to show; 0 = all, a page at a time
    metrics: tuple[Condition, ...] = ()
    params: tuple[Condition, ...] = ()
    page: int = 0                      # with window 0: which page of PAGE_SIZE runs

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.estimators or self.experiment or self.dataset or self.since or self.until
                    or self.metrics or self.params)

    @property
    def first(self) -> int:
        """How many newer matching runs come before the ones shown."""
        return 0 if self.window else self.page * PAGE_SIZE

    def run_filter(self, with_status: bool = True) -> RunFilter:
        # every condition is the store's (SQL locally): a page reads only the rows it shows
        return RunFilter(status=self.statuses if with_status else (), experiment=self.experiment,
                         dataset=self.dataset, since=self.since, until=self.until, estimators=self.estimators,
                         metrics=self.metrics, params=self.params, limit=self.window or PAGE_SIZE,
                         offset=self.first)


def find_runs(ws_uri: str, flt: Filters, with_status: bool = True) -> pd.DataFrame:
    """The newest ``flt.window`` runs matching every filter (or the page ``flt.page`` of all of
    them); ``with_status=False``: the same of all statuses."""
    return runs_table(ws_uri, flt.run_filter(with_status))


def parse_conditions(text: str) -> tuple[tuple[Condition, ...], tuple[Condition, ...]]:
    """``rmse < 55, params.alpha = 1`` (or joined by ``and``) -> (metric conditions, parameter conditions)."""
    metrics, params = [], []
    for part in re.split(r",|\band\b", text or "", flags=re.IGNORECASE):
        if part.strip():
            kind, cond = parse_condition(part)
            (params if kind == "params" else metrics).append(cond)
    return tuple(metrics), tuple(params)


def filters(ws_uri: str) -> Filters:
    c = st.columns([3, 3, 3, 3, 3, 2])
    statuses = c[0].multiselect("Status", list(RunStatus), format_func=status_label, key="runs.f.status",
                                placeholder="All statuses")
    estimators = c[1].multiselect("Estimator", list(training.estimators()), format_func=estimator_label,
                                  key="runs.f.estimator", placeholder="All estimators")
    experiment = c[2].selectbox("Experiment", [None, *state.experiments(ws_uri)], key="runs.f.experiment",
                                format_func=lambda e: "All experiments" if e is None else e)
    names = sorted({v.name for v in state.dataset_versions(ws_uri)})
    dataset = c[3].selectbox("Dataset", [None, *names], key="runs.f.dataset",
                             format_func=lambda d: "All datasets" if d is None else d)
    days = c[4].date_input("Created between (UTC)", value=(), format="YYYY-MM-DD", key="runs.f.created",
                           help="Pick a first and a last day; both are included.")
    window = c[5].selectbox("Newest runs", WINDOWS, index=WINDOWS.index(DEFAULT_WINDOW), key="runs.f.window",
                            format_func=lambda n: f"{n:,}" if n else "all runs",
                            help=f"How many of the newest matching runs to load; all runs come "
                                 f"{PAGE_SIZE:,} at a time.")
    text = st.text_input("Metrics and parameters", key="runs.f.conditions",
                         placeholder="e.g. rmse < 55, params.alpha = 1",
                         help="Conditions on the final metrics (a bare name is a metric) and on the parameters "
                              "(params.NAME), separated by commas or 'and'; comparisons: < <= > >= = !=. "
                              "Runs without the metric or parameter do not match.")
    try:
        metrics, params = parse_conditions(text)
    except InvalidInput as e:
        show_error(e)
        metrics, params = (), ()
    since, until = _day_range(days)
    flt = Filters(tuple(statuses), tuple(estimators), experiment, dataset, since, until, window, metrics, params)
    if st.session_state.get(PAGE_OF) != flt:  # other filters: back to the newest page
        st.session_state[PAGE_OF], st.session_state[PAGE] = flt, 0
    return replace(flt, page=0 if window else st.session_state.get(PAGE, 0))


def pager(shown: pd.DataFrame, flt: Filters) -> None:
    """Newer / older pages of "all runs"."""
    if flt.window:
        return
    more = len(shown) >= PAGE_SIZE
    if not flt.page and not more:
        return
    c1, c2, c3 = st.columns([1, 3, 1])
    c1.button("← Newer", key="runs.page.newer", disabled=flt.page == 0, width="stretch",
              on_click=lambda: st.session_state.__setitem__(PAGE, max(0, flt.page - 1)))
    c2.caption(f"Runs {flt.first + 1:,}–{flt.first + len(shown):,} of the matching runs, newest first "
               f"(page {flt.page + 1}).")
    c3.button("Older →", key="runs.page.older", disabled=not more, width="stretch",
              on_click=lambda: st.session_state.__setitem__(PAGE, flt.page + 1))


def _day_range(days) -> tuple[datetime | None, datetime | None]:
    days = [d for d in (days if isinstance(days, (list, tuple)) else [days]) if isinstance(d, date)]
    if not days:
        return None, None
    first, last = days[0], days[-1]
    since = datetime.combine(first, time.min, tzinfo=timezone.utc)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=timezone.utc)
    return since, until


def status_counts(frame: pd.DataFrame, flt: Filters) -> None:
    """Runs per status among the runs shown (the newest ``flt.window``, or a page of all runs)
    matching the other filters."""
    counts = frame["status_value"].value_counts()
    cols = st.columns(len(RunStatus) + 1)
    size = flt.window or PAGE_SIZE
    capped = len(frame) >= size or flt.first > 0
    where = f"the newest {size:,}" if not flt.first else f"runs {flt.first + 1:,}–{flt.first + len(frame):,}"
    cols[0].metric("Runs", f"{len(frame):,}" + ("+" if capped else ""),
                   help=f"Counts are over {where} of the matching runs." if capped else None)
    for col, status in zip(cols[1:], RunStatus):
        col.metric(status_label(status), f"{int(counts.get(status.value, 0)):,}")  # as in the filter and table


def _table_rows() -> list[int]:
    table = st.session_state.get(TABLE)
    try:
        return list(table["selection"]["rows"])
    except (TypeError, KeyError):
        return []


def _on_table_select() -> None:
    ids = st.session_state.get(TABLE_IDS, [])
    picked = [ids[r] for r in _table_rows() if r < len(ids)]
    current = st.session_state.get(PICK) or []
    st.session_state[PICK] = [r for r in current if r in picked] + [r for r in picked if r not in current]


def table_with_picker(shown: pd.DataFrame, flt: Filters) -> list[str]:
    """The runs table with row checkboxes, and below it the same selection as a
    multiselect. Returns the selected run ids."""
    ids = shown["id"].tolist()
    position = {run_id: i for i, run_id in enumerate(ids)}
    st.session_state[TABLE_IDS] = ids
    if PICK not in st.session_state:  # first render: a link may name runs (?run=ID&run=ID)
        st.session_state[PICK] = list(dict.fromkeys(st.query_params.get_all(PICK)))
    previous = st.session_state[PICK]
    if any(r not in position for r in previous):  # filtered away (or unknown): drop from the selection
        st.session_state[PICK] = [r for r in previous if r in position]

    table_slot = st.container()  # drawn above the picker, filled after it (it needs the picker's value)
    labels = dict(zip(ids, shown["name"] + " · " + shown["id"].str[-6:]))
    picked = st.multiselect(
        "Runs to inspect", ids, key=PICK, format_func=lambda r: labels.get(r, r),
        placeholder="Tick rows in the table or pick runs here: one for details, two or more to compare",
        help="Also selectable by keyboard: type part of a run's name or id. The address bar keeps the "
             "selection, so the page can be shared as a link.")
    if st.query_params.get_all(PICK) != picked:  # ids in the URL (not labels, as bind= would write)
        st.query_params[PICK] = picked
    wanted = sorted(position[r] for r in picked if r in position)
    if sorted(_table_rows()) != wanted:
        st.session_state[TABLE] = {"selection": {"rows": wanted, "columns": [], "cells": []}}
    with table_slot:
        st.dataframe(shown[TABLE_COLUMNS], key=TABLE, on_select=_on_table_select, selection_mode="multi-row",
                     hide_index=True, placeholder="—", column_config=table_columns(),
                     height=min(420, 38 + 35 * max(len(shown), 3)))
        if flt.window and len(shown) >= flt.window:
            st.caption(f"The newest {flt.window:,} matching runs; choose “all runs” under **Newest runs** "
                       "to load more.")
    return list(picked)


def has_runs(ws_uri: str) -> bool:
    return not runs_table(ws_uri, RunFilter(limit=1)).empty


def first_run(ws_uri: str) -> None:
    """The page of a workspace without runs: what to do first."""
    if not state.dataset_versions(ws_uri):
        st.info("No training runs yet, and no data to train on. Register a dataset first, then come back "
                "here to start a retraining run.", icon="🌱")
        st.page_link("pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
        return
    st.info("No training runs yet. Start the first one below: it validates the data, trains, compares the "
            "candidate with the champion (if there is one) and registers it if it passes the quality gate.",
            icon="🌱")
    retrain_form(ws_uri, expanded=True)
    watch_panel()


def no_match() -> None:
    st.info("No runs match these filters. Widen the date range or clear a filter.", icon="🔎")


# --- one run ------------------------------------------------------------------

def run_details(ws_uri: str, run: Run) -> None:
    if not run.status.is_terminal:  # the cached copy may be seconds old
        with guard():
            run = state.workspace().jobs.get(run.id)
    st.subheader(f"{STATUS_ICON[run.status]} {escaped(run.display_name)}")
    st.caption(f"{code(run.id)} · experiment **{escaped(run.experiment)}** · started by {code(run.created_by)} · "
               f"created {fmt_time(run.created_at)}")
    outcome_banner(run)
    if not run.status.is_terminal:
        c1, c2 = st.columns([1, 4])
        c1.button("Watch live", key="runs.watch_selected", icon=":material/monitoring:",
                  on_click=lambda: st.session_state.__setitem__(WATCH, run.id))
        with c2:
            cancel_control(run, "details")

    facts({"Status": f"{STATUS_ICON[run.status]} {run.status.value}", "Step": run.step or "—",
           "Duration": fmt_duration(run.duration_s), "Estimator": estimator_label(run.estimator),
           "Data": f"{run.dataset}:{run.dataset_version}" if run.dataset else "—",
           "Model": f"{run.model_name}:{run.model_version}" if run.model_version else "—"})

    render_steps(ws_uri, run)
    overview, history, log = st.tabs(["Overview", "Metric history", "Log"])
    with overview:
        left, right = st.columns(2)
        with left:
            st.markdown("**Final metrics** (held-out split)")
            metrics_table(run.metrics, run.status.is_terminal)
        with right:
            st.markdown("**Parameters**")
            params_table(run.params)
        st.markdown("**Quality gate**")
        gate_block(run.gate, run.status)
        st.markdown("**Lineage**")
        lineage(run)
        st.markdown("**Provenance** — who asked for the run, the code and environment it trained with")
        provenance_block(run.provenance, run.id, key=f"runs.{run.id}")
    with history:
        with guard():
            history_charts(run, state.metric_history(ws_uri, run.id))
    with log:
        with guard():
            log_view(run.id)


def facts(items: dict[str, str]) -> None:
    """A row of small label/value pairs (st.metric's large font truncates words like "validate data")."""
    for col, (label, value) in zip(st.columns(len(items)), items.items()):
        col.caption(label)
        col.markdown(f"**{value}**")


def outcome_banner(run: Run) -> None:
    if run.status == RunStatus.FAILED:
        st.error(f"**Failed during “{escaped(run.step or 'an unknown step')}”:** "
                 f"{escaped(run.error or 'no reason recorded')}",
                 icon="❌")
    elif run.status == RunStatus.CANCELED:
        st.warning(f"**Canceled** during “{escaped(run.step or '—')}”"
                   + (f": {escaped(run.error)}" if run.error else "."),
                   icon="⛔")
    elif run.status == RunStatus.COMPLETED:
        if run.model_version:
            st.success(f"Completed in {fmt_duration(run.duration_s)}; passed the gate and was registered as "
                       f"**{run.model_name}:{run.model_version}**.", icon="✅")
        elif run.gate is not None and not run.gate.passed:
            st.warning(f"Completed in {fmt_duration(run.duration_s)}, but the candidate **did not pass the "
                       "quality gate**, so it was not registered.", icon="🚧")
        else:
            st.success(f"Completed in {fmt_duration(run.duration_s)}; no model was registered "
                       "(registration was not requested).", icon="✅")
    else:
        st.info(f"**{run.status.value.capitalize()}**, current step: {escaped(run.step or 'waiting')}.", icon="🔄")


def metrics_table(metrics: dict, ended: bool = True) -> None:
    if not metrics:
        st.caption("No metrics were logged." if ended else "No metrics logged yet.")
        return
    ordered = [k for k in MAIN_METRICS if k in metrics] + sorted(k for k in metrics if k not in MAIN_METRICS)
    st.dataframe(pd.DataFrame({"metric": ordered, "value": [fmt_metric(metrics[k], 5) for k in ordered]}),
                 hide_index=True, width="stretch")


def params_table(params: dict) -> None:
    if not params:
        st.caption("No parameters.")
        return
    st.dataframe(pd.DataFrame({"parameter": list(params), "value": [str(v) for v in params.values()]}),
                 hide_index=True, width="stretch")


def gate_block(gate: GateDecision | None, status: RunStatus | None = None) -> None:
    if gate is None:
        st.caption("Not evaluated: the run " + ("ended before its evaluation step."
                                                 if status and status.is_terminal else "has not reached it yet."))
        return
    against = f"champion **{gate.champion}**" if gate.champion else "no champion (the first model to pass becomes it)"
    where = f" on **{gate.evaluated_on}**" if gate.evaluated_on else ""
    text = f"compared with {against}{where}."
    (st.success if gate.passed else st.error)(("**Passed** — " if gate.passed else "**Failed** — ") + text)
    if gate.checks:
        st.dataframe(pd.DataFrame([{
            "": "✅" if c.passed else "❌", "metric": c.metric,
            "better": "lower" if c.direction == "lower" else "higher",
            "candidate": fmt_metric(c.candidate, 5), "champion": fmt_metric(c.champion, 5), "reason": c.reason,
        } for c in gate.checks]), hide_index=True, width="stretch",
            column_config={"": st.column_config.TextColumn(width="small"),
                           "reason": st.column_config.TextColumn(width="large")})
    else:
        for reason in gate.reasons:
            st.markdown(f"- {reason}")


def lineage(run: Run) -> None:
    if run.dataset:
        st.page_link("pages/datasets.py", label=f"Trained on {run.dataset}:{run.dataset_version} — open in Datasets",
                     icon=":material/dataset:",
                     query_params={"dataset": run.dataset, "version": str(run.dataset_version)})
    else:
        st.caption("No dataset recorded: a job that Tollgate did not start.")
    if run.model_version:
        st.page_link("pages/models.py", label=f"Registered as {run.model_name}:{run.model_version} — open in Models",
                     icon=":material/deployed_code:",
                     query_params={"model": run.model_name, "version": str(run.model_version)})
    elif run.status.is_terminal:
        st.caption("No model version was registered from this run.")


def step_axis_title(key: str, estimator: str) -> str:
    if key.startswith("cv_"):
        return "cross-validation fold"
    return {"gbr": "boosting stage", "random_forest": "number of trees"}.get(estimator, "step")


def champion_rmse(gate: GateDecision | None) -> float | None:
    check = next((c for c in gate.checks if c.metric == "rmse"), None) if gate else None
    return check.champion if check else None


def history_figures(points: list[MetricPoint], estimator: str,
                    champion_rmse: float | None = None) -> list[tuple[str, go.Figure]]:
    """A line per metric key logged at more than one step (final values are single points).
    ``val_rmse`` is on the held-out split the gate uses, so the champion's RMSE there is drawn too."""
    if not points:
        return []
    df = pd.DataFrame([(p.key, p.step, p.value) for p in points], columns=["key", "step", "value"])
    figures = []
    for key, group in df.groupby("key", sort=True):
        if group["step"].nunique() < 2:
            continue
        group = group.sort_values("step")
        fig = px.line(group, x="step", y="value", markers=True, title=key)
        fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10), showlegend=False,
                          xaxis_title=step_axis_title(key, estimator), yaxis_title=key)
        if key.startswith("cv_"):
            fig.update_xaxes(dtick=1)
        if key == "val_rmse" and champion_rmse is not None:
            fig.add_hline(y=champion_rmse, line_dash="dash", line_color=NEUTRAL,
                          annotation_text=f"champion {champion_rmse:.4g}", annotation_position="top right")
        figures.append((key, fig))
    return figures


def history_charts(run: Run, points: list[MetricPoint]) -> None:
    figures = history_figures(points, run.estimator, champion_rmse(run.gate))
    if not figures:
        st.caption("This run logged only final values (see Overview)." if points else "No metrics logged yet.")
        return
    cols = st.columns(min(2, len(figures)))
    for i, (key, fig) in enumerate(figures):
        with cols[i % len(cols)]:
            st.plotly_chart(fig, width="stretch", key=f"runs.history.{run.id}.{key}")


def log_view(run_id: str) -> None:
    jobs = state.workspace().jobs
    tail = st.radio("Show", [100, 500, 0], horizontal=True, key="runs.log_tail",
                    format_func=lambda n: f"last {n} lines" if n else "whole log")
    text = jobs.log(run_id, tail=tail or None)
    st.code(text or "(the log is empty)", language=None, height=420 if text.count("\n") > 24 else "content")
    st.download_button("Download the full log", data=lambda: jobs.log(run_id), file_name=f"{run_id}.log",
                       mime="text/plain", icon=":material/download:", on_click="ignore", key="runs.log_download")


def cancel_control(run: Run, where: str) -> None:
    """Cancel with an inline confirmation (works inside the auto-refreshing live view,
    where a dialog would be closed by the next refresh)."""
    if st.session_state.get(CONFIRM_CANCEL) != run.id:
        st.button("Cancel run…", key=f"runs.cancel.{where}", icon=":material/cancel:",
                  on_click=lambda: st.session_state.__setitem__(CONFIRM_CANCEL, run.id))
        return
    with st.container(border=True):
        st.warning(f"Cancel **{escaped(run.display_name)}** ({code(run.id)})? Its process is stopped now: "
                   "it will not be "
                   "evaluated or registered. This cannot be undone.", icon="⚠️")
        yes, no = st.columns(2)
        no.button("Keep it running", key=f"runs.cancel_no.{where}",
                  on_click=lambda: st.session_state.pop(CONFIRM_CANCEL, None))
        role_hint("cancel_run")
        if yes.button("Yes, cancel the run", type="primary", key=f"runs.cancel_yes.{where}"):
            st.session_state.pop(CONFIRM_CANCEL, None)
            try:
                with st.spinner("Canceling…"):
                    state.workspace().jobs.cancel(run.id, actor=state.actor())
            except ServiceError as e:
                show_error(e)
                return
            state.after_write()
            st.rerun()


# --- starting a run and watching it -----------------------------------------------

def _param_input(estimator: str, key: str, default: Any) -> Any:
    widget_key = f"runs.new.{estimator}.{key}"
    help_text = PARAM_HELP.get(key)
    if isinstance(default, bool):
        return st.checkbox(key, value=default, key=widget_key, help=help_text)
    if isinstance(default, int):
        return st.number_input(key, value=default, step=1, format="%d", key=widget_key, help=help_text)
    if isinstance(default, float):
        step = 10 ** math.floor(math.log10(abs(default))) / 10 if default else 0.1
        return st.number_input(key, value=default, step=step, format="%g", key=widget_key, help=help_text)
    return st.text_input(key, value=str(default), key=widget_key, help=help_text)


def retrain_form(ws_uri: str, expanded: bool = False) -> None:
    """Dataset, estimator with its parameters, experiment → ``jobs.submit``; on success
    the new run becomes the watched one."""
    versions = state.dataset_versions(ws_uri)
    with st.expander("Start a retraining run", expanded=expanded, icon=":material/play_circle:"):
        if not versions:
            st.info("There is no dataset to train on yet. Register one first.")
            st.page_link("pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
            return
        target = state.workspace().policy.target
        by_ref = {v.ref: v for v in versions}
        trainable = {name: latest_passing([v for v in versions if v.name == name], target, labelled=True)
                     for name in dict.fromkeys(v.name for v in versions)}  # what submit trains without a version
        usable = [dv.ref for dv in trainable.values() if dv is not None]
        c1, c2 = st.columns(2)

        def label(r: str) -> str:
            dv = by_ref[r]
            passing = trainable[dv.name]
            mark = " (latest passing)" if passing is not None and passing.version == dv.version else ""
            return (f"{r}{mark} · {dv.rows:,} rows · data tests {STATUS_ICON[dv.tests_status]} "
                    f"{dv.tests_status.value}")
        ref = c1.selectbox("Training data", list(by_ref), key="runs.new.dataset",
                           index=list(by_ref).index(usable[0]) if usable else 0, format_func=label)
        estimator = c2.selectbox("Estimator", training.estimators(state.workspace().policy.task), format_func=estimator_label,
                                 key="runs.new.estimator")
        chosen = by_ref[ref]
        if chosen.tests_status == CheckStatus.FAIL:
            st.warning(f"{chosen.ref} failed its data tests: a run on it will stop at its validation step.",
                       icon="⚠️")
        defaults = training.default_params(estimator)
        policy = state.workspace().policy
        with st.form(f"runs.new.form.{estimator}", border=False):
            st.markdown(f"**Parameters of {estimator_label(estimator)}** (pre-filled with the defaults)")
            cols = st.columns(4)
            params = {}
            for i, (key, default) in enumerate(defaults.items()):
                with cols[i % len(cols)]:
                    params[key] = _param_input(estimator, key, default)
            c1, c2 = st.columns(2)
            experiment = c1.text_input("Experiment", value=policy.experiment, key=f"runs.new.{estimator}.experiment")
            display_name = c2.text_input("Run name (optional)", key=f"runs.new.{estimator}.name",
                                         placeholder="e.g. ridge alpha=0.5; default: estimator and changed parameters")
            register = st.checkbox(f"Register as a new version of {policy.model_name} if it passes the quality gate",
                                   value=True, key=f"runs.new.{estimator}.register")
            submitted = st.form_submit_button("Start run", type="primary", icon=":material/play_arrow:",
                                              key=f"runs.new.{estimator}.submit")
        role_hint("submit_run")
        if not submitted:
            return
        changed = {k: v for k, v in params.items() if v != defaults[k] or type(v) is not type(defaults[k])}
        spec = TrainingSpec(dataset=chosen.name, dataset_version=chosen.version, estimator=estimator, params=changed,
                            experiment=experiment.strip() or policy.experiment,
                            display_name=display_name.strip() or None, register=register)
        try:
            run = state.workspace().jobs.submit(spec, state.actor())
        except ServiceError as e:
            show_error(e)
            return
        state.after_write()
        st.session_state[WATCH] = run.id
        st.session_state.pop(CONFIRM_CANCEL, None)
        st.rerun()  # the table above was drawn before the submit: show the queued run in it too


def watch_panel() -> None:
    """The run started from this page (or picked with "Watch live"), re-read every
    ``POLL_S`` seconds until it ends; then its outcome, without polling."""
    run_id = st.session_state.get(WATCH)
    if not run_id:
        return
    try:
        run = state.workspace().jobs.get(run_id)
    except ServiceError as e:
        show_error(e)
        st.session_state.pop(WATCH, None)
        return
    live = not run.status.is_terminal
    st.fragment(_watch_body, run_every=POLL_S if live else None)(run_id, live)


def _show_in_table(run_id: str) -> None:
    st.session_state[PICK] = [run_id]


def _watch_body(run_id: str, polling: bool) -> None:
    try:
        run = state.workspace().jobs.get(run_id)  # uncached: this is the live view
    except ServiceError as e:
        show_error(e)
        return
    if polling and run.status.is_terminal:
        state.after_write()  # the table and counts must show the final state too
        st.rerun()           # the whole page, so that this view stops polling
    with st.container(border=True, key="runs.watch_box"):
        st.markdown(f"#### {STATUS_ICON[run.status]} {escaped(run.display_name)}")
        st.caption(f"{code(run.id)} · {escaped(estimator_label(run.estimator))} on "
                   f"{run.dataset}:{run.dataset_version} · "
                   f"experiment {escaped(run.experiment)}")
        if run.status.is_terminal:
            outcome_banner(run)
            if run.status == RunStatus.COMPLETED:
                main_metrics(run.metrics)
                gate_block(run.gate, run.status)
                if run.model_version:
                    st.page_link("pages/models.py", label=f"Open {run.model_name}:{run.model_version} in Models",
                                 icon=":material/deployed_code:",
                                 query_params={"model": run.model_name, "version": str(run.model_version)})
        else:
            step = run.step or "queued"
            done = STEPS.index(step) if step in STEPS else 0
            st.progress(done / (len(STEPS) - 1),
                        text=f"{run.status.value.capitalize()} · step {done + 1} of {len(STEPS)}: **{step}** · "
                             f"{fmt_duration(run.duration_s)}")
            main_metrics(run.metrics, live=True)
            with guard():
                st.code(state.workspace().jobs.log(run_id, tail=12) or "(no output yet)", language=None)
        c1, c2 = st.columns([1, 5])
        if c1.button("Show in the table", key="runs.watch_show", on_click=_show_in_table, args=(run_id,)):
            st.rerun()
        with c2:
            if not run.status.is_terminal:
                cancel_control(run, "watch")
            elif st.button("Dismiss", key="runs.watch_dismiss"):
                st.session_state.pop(WATCH, None)
                st.rerun()


def main_metrics(metrics: dict, live: bool = False) -> None:
    keys = [k for k in MAIN_METRICS if k in metrics]
    if live:  # the training curve's latest value while the final ones are not there yet
        keys += [k for k in ("val_rmse", "cv_rmse") if k in metrics and k not in keys]
    if not keys:
        st.caption("No metrics yet.")
        return
    cols = st.columns(len(keys))
    for col, key in zip(cols, keys):
        col.metric(key, fmt_metric(metrics[key], 5))
