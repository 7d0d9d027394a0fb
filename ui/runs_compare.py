"""Runs compared: the side-by-side table, parallel coordinates over hyperparameters and
metrics, and a scatter that says which runs it leaves out."""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from services.entities import Run

from . import state
from .runs_view import MAIN_METRICS, MAX_COMPARED, fmt_time, run_label
from .widgets import BETTER, fmt_duration, fmt_metric

# --- several runs ---------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_keys(runs: list[Run]) -> list[str]:
    keys = {k for r in runs for k in r.metrics}
    return [k for k in MAIN_METRICS if k in keys] + sorted(keys - set(MAIN_METRICS))


def comparison_frame(runs: list[Run]) -> pd.DataFrame:
    """Runs as columns, attributes as rows (all text, formatted); the index says what each row is."""
    columns: dict[str, list[str]] = {}
    param_keys = sorted({k for r in runs for k in r.params})
    metric_keys = _metric_keys(runs)
    index = (["status", "estimator", "data", "experiment", "created", "duration"]
             + [f"param · {k}" for k in param_keys] + [f"metric · {k}" for k in metric_keys]
             + ["gate", "registered"])
    for r in runs:
        columns[run_label(r)] = (
            [r.status.value, r.estimator, f"{r.dataset}:{r.dataset_version}", r.experiment, fmt_time(r.created_at),
             fmt_duration(r.duration_s)]
            + [str(r.params[k]) if k in r.params else "—" for k in param_keys]
            + [fmt_metric(r.metrics.get(k), 5) for k in metric_keys]
            + ["—" if r.gate is None else ("pass" if r.gate.passed else "fail"),
               f"{r.model_name}:{r.model_version}" if r.model_version else "—"])
    return pd.DataFrame(columns, index=index)


def best_runs(runs: list[Run], policy) -> dict[str, str]:
    """For each held-out metric, the label of the best run (by the policy's direction). Training
    metrics are left out: a better fit on the training rows is not a better model."""
    best = {}
    for key in _metric_keys(runs):
        if key.startswith("train_"):
            continue
        scored = [(r.metrics[key], run_label(r)) for r in runs if r.metrics.get(key) is not None]
        if len(scored) > 1:
            pick = min if policy.direction(key) == "lower" else max
            best[f"metric · {key}"] = pick(scored)[1]
    return best


ALWAYS_DIFFERENT = ("created", "duration")  # not worth a highlight


def styled_comparison(frame: pd.DataFrame, best: dict[str, str]):
    differ = "background-color: #fff8c5; color: #1f2328"

    def style_row(row: pd.Series) -> list[str]:
        varies = row.name not in ALWAYS_DIFFERENT and row.nunique() > 1
        styles = []
        for label in row.index:
            css = differ if varies else ""
            if best.get(row.name) == label:
                css += f"; font-weight: 700; color: {BETTER}"
            styles.append(css)
        return styles
    return frame.style.apply(style_row, axis=1)


def parallel_coordinates(runs: list[Run]) -> go.Figure | None:
    scored = [r for r in runs if r.metrics.get("rmse") is not None]
    if len(scored) < 2:
        return None
    dims = []

    def categorical(label: str, values: list[str]) -> dict:
        cats = sorted(set(values))
        return dict(label=label, values=[cats.index(v) for v in values], tickvals=list(range(len(cats))),
                    ticktext=cats)
    estimators = [r.estimator for r in scored]
    if len(set(estimators)) > 1:
        dims.append(categorical("estimator", estimators))
    data = [f"{r.dataset}:{r.dataset_version}" for r in scored]
    if len(set(data)) > 1:
        dims.append(categorical("data", data))
    for key in param_keys(scored):
        dims.append(param_axis(key, [r.params.get(key) for r in scored]))
    for key in MAIN_METRICS:
        if all(r.metrics.get(key) is not None for r in scored):
            dims.append(dict(label=key, values=[r.metrics[key] for r in scored]))
    fig = go.Figure(go.Parcoords(
        line=dict(color=[r.metrics["rmse"] for r in scored], colorscale="RdYlGn", reversescale=True,
                  showscale=True, colorbar=dict(title="rmse")),
        dimensions=dims))
    fig.update_layout(height=360, margin=dict(l=100, r=40, t=50, b=20))
    return fig


def param_keys(runs: list[Run]) -> list[str]:
    """Numeric hyperparameters at least two of ``runs`` set, with more than one value between them
    (runs of different estimators share few: each keeps its own)."""
    keys = {k for r in runs for k, v in r.params.items() if _is_number(v)}
    out = []
    for key in sorted(keys):
        values = [r.params[key] for r in runs if _is_number(r.params.get(key))]
        if len(values) >= 2 and len(set(values)) > 1:
            out.append(key)
    return out


def param_axis(key: str, values: list[Any]) -> dict:
    """A parallel-coordinates axis of one hyperparameter; runs that do not set it sit on a
    "not set" tick below its range (a line cannot skip an axis)."""
    numbers = [v for v in values if _is_number(v)]
    low, high = min(numbers), max(numbers)
    span = high - low
    missing = low - 0.25 * span
    ticks = [low + span * i / 4 for i in range(5)]
    labels = [f"{t:.3g}" for t in ticks]
    if len(numbers) < len(values):
        ticks, labels = [missing, *ticks], ["not set", *labels]
    return dict(label=key, values=[v if _is_number(v) else missing for v in values], tickvals=ticks,
                ticktext=labels, range=[missing if len(numbers) < len(values) else low, high])


def scatter_left_out(runs: list[Run], x: str, y: str) -> list[tuple[Run, str]]:
    """The runs a scatter of ``y`` against ``x`` cannot draw, each with the reason."""
    out = []
    for run in runs:
        lacking = [axis for axis in dict.fromkeys((x, y)) if _axis_value(run, axis) is None]
        if lacking:
            out.append((run, " and ".join(f"no {a.removeprefix('param · ')}"
                                          + (" parameter" if a.startswith("param · ") else " metric")
                                          for a in lacking)))
    return out


def _axis_value(run: Run, axis: str):
    if axis.startswith("param · "):
        v = run.params.get(axis.removeprefix("param · "))
        return v if _is_number(v) else None
    return run.metrics.get(axis)


def scatter_axes(runs: list[Run]) -> list[str]:
    """Metrics every run has, then numeric parameters at least two runs have."""
    metrics = [k for k in _metric_keys(runs) if all(r.metrics.get(k) is not None for r in runs)]
    params = sorted({k for r in runs for k, v in r.params.items() if _is_number(v)
                     and sum(_is_number(s.params.get(k)) for s in runs) > 1})
    return metrics + [f"param · {k}" for k in params]


def scatter_default_x(runs: list[Run], axes: list[str], y: str) -> str:
    """A parameter every run has and that varies, else the metric most telling against ``y``."""
    for axis in axes:
        key = axis.removeprefix("param · ")
        if axis != key and all(_is_number(r.params.get(key)) for r in runs) and len({r.params[key] for r in runs}) > 1:
            return axis
    return next((a for a in ("r2", "mae", "rmse") if a in axes and a != y), next(a for a in axes if a != y))


def scatter_figure(runs: list[Run], x: str, y: str) -> go.Figure:
    df = pd.DataFrame([{"label": run_label(r, 16), "run": r.display_name, "id": r.id, "estimator": r.estimator,
                        x: _axis_value(r, x), y: _axis_value(r, y)} for r in runs]).dropna(subset=[x, y])
    fig = px.scatter(df, x=x, y=y, text="label", color="estimator", hover_name="run", hover_data={"id": True,
                                                                                                  "label": False})
    fig.update_traces(textposition="top center", marker=dict(size=12))
    for axis, update in ((x, fig.update_xaxes), (y, fig.update_yaxes)):  # room for the labels at the edges
        low, high = df[axis].min(), df[axis].max()
        pad = (high - low) * 0.15 or abs(high) * 0.1 or 1
        update(range=[low - pad, high + pad])
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="estimator")
    return fig


def run_comparison(runs: list[Run]) -> None:
    policy = state.workspace().policy
    if len(runs) > MAX_COMPARED:
        st.caption(f"Comparing the first {MAX_COMPARED} of the {len(runs)} selected runs.")
        runs = runs[:MAX_COMPARED]
    st.subheader(f"Comparing {len(runs)} runs")
    st.caption("Rows that differ are highlighted; the best value of each metric is in bold green.")
    frame = comparison_frame(runs)
    st.dataframe(styled_comparison(frame, best_runs(runs, policy)), width="stretch", height=38 + 35 * len(frame),
                 column_config={"_index": st.column_config.TextColumn(width="medium"),
                                **{label: st.column_config.TextColumn(width="medium") for label in frame.columns}})

    fig = parallel_coordinates(runs)
    if fig is not None:
        st.markdown("**Parameters and metrics** — one line per run, coloured by RMSE (green = lower); "
                    "a run without a parameter sits on that axis's *not set* tick")
        st.plotly_chart(fig, width="stretch", key="runs.parcoords")
    else:
        st.caption("Fewer than two of these runs have an RMSE: nothing to draw across parameters.")

    axes = scatter_axes(runs)
    if len(axes) >= 2:
        st.markdown("**Scatter**")
        c1, c2 = st.columns(2)
        y = c1.selectbox("Y axis", axes, index=axes.index("rmse") if "rmse" in axes else 0, key="runs.scatter_y")
        x_default = scatter_default_x(runs, axes, y)
        x = c2.selectbox("X axis", axes, index=axes.index(x_default), key="runs.scatter_x")
        left_out = scatter_left_out(runs, x, y)
        if len(left_out) == len(runs):
            st.info(f"None of these runs has both {x} and {y}: choose other axes.", icon=":material/info:")
        else:
            st.plotly_chart(scatter_figure(runs, x, y), width="stretch", key="runs.scatter")
        if left_out:
            st.caption(f"Not drawn ({len(left_out)} of {len(runs)} runs):")
            st.dataframe(pd.DataFrame([{"run": run_label(r), "estimator": r.estimator, "why": why}
                                       for r, why in left_out]), hide_index=True, width="stretch",
                         key="runs.scatter_left_out")
