"""A classifier's review charts: candidate and champion on the same held-out rows.

Confusion matrices side by side, ROC and precision-recall curves of both, and for a binary task
the calibration curve. The figure builders are pure functions of a ``Comparison``'s arrays (labels,
classes, probabilities); ``classification_charts`` renders them on the Models page. For a
multiclass task the curves are one-vs-rest, micro-averaged (every row and class a yes/no case).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from services.entities import Comparison

from .widgets import CANDIDATE_COLOR, CHAMPION_COLOR, NEUTRAL

LAYOUT = dict(height=420, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))


class Scored(NamedTuple):
    label: str                       # "candidate v3", "champion v1"
    color: str
    pred: np.ndarray                 # labels
    proba: np.ndarray | None         # rows x classes, None without predict_proba


def models(comparison: Comparison, with_champion: bool = True) -> list[Scored]:
    """The models drawn: the candidate (or the champion reviewed alone), and the champion."""
    cand = comparison.candidate
    role = "champion" if cand.is_champion else "candidate"
    out = [Scored(f"{role} v{cand.version}", CANDIDATE_COLOR, np.asarray(comparison.candidate_pred),
                  None if comparison.candidate_proba is None else np.asarray(comparison.candidate_proba))]
    if with_champion and comparison.champion is not None and comparison.champion_pred is not None:
        out.append(Scored(f"champion v{comparison.champion.version}", CHAMPION_COLOR,
                          np.asarray(comparison.champion_pred),
                          None if comparison.champion_proba is None else np.asarray(comparison.champion_proba)))
    return out


def class_name(label: float) -> str:
    return f"{label:g}"


def confusion_matrix(actual: np.ndarray, pred: np.ndarray, classes: tuple[float, ...]) -> np.ndarray:
    """Counts: row = actual class, column = predicted class, in ``classes`` order."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=int)
    for a, p in zip(actual.tolist(), pred.tolist()):
        counts[index[float(a)], index[float(p)]] += 1
    return counts


def confusion_figure(comparison: Comparison, *, with_champion: bool = True) -> go.Figure:
    """One confusion matrix per model, side by side, on one colour scale."""
    actual = np.asarray(comparison.actual, dtype=float)
    drawn = models(comparison, with_champion)
    names = [class_name(c) for c in comparison.classes]
    matrices = [confusion_matrix(actual, m.pred.astype(float), comparison.classes) for m in drawn]
    top = max(int(m.max()) for m in matrices) or 1
    fig = make_subplots(rows=1, cols=len(drawn), subplot_titles=[m.label for m in drawn], horizontal_spacing=0.12)
    for col, (m, counts) in enumerate(zip(drawn, matrices), 1):
        fig.add_trace(go.Heatmap(
            z=counts, x=names, y=names, zmin=0, zmax=top, colorscale="Blues", showscale=col == len(drawn),
            text=counts, texttemplate="%{text}", name=m.label,
            hovertemplate="actual %{y}<br>predicted %{x}<br>%{z} rows<extra>" + m.label + "</extra>"),
            row=1, col=col)
        fig.update_xaxes(title_text="predicted", type="category", row=1, col=col)
        fig.update_yaxes(title_text="actual" if col == 1 else None, type="category", autorange="reversed",
                         row=1, col=col)
    fig.update_layout(title="Confusion matrices (held-out rows)", **{**LAYOUT, "height": 380})
    return fig


def _one_vs_rest(comparison: Comparison, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is the positive class, its score) per case: for a binary task the last class's probability,
    for multiclass every row and class flattened (micro-average)."""
    actual = np.asarray(comparison.actual, dtype=float)
    classes = np.asarray(comparison.classes, dtype=float)
    if comparison.task == "binary":
        return actual == classes[-1], proba[:, -1]
    return (actual[:, None] == classes[None, :]).ravel(), proba.ravel()


def _with_probabilities(comparison: Comparison, with_champion: bool) -> list[Scored]:
    return [m for m in models(comparison, with_champion) if m.proba is not None]


def _curve_title(comparison: Comparison, name: str) -> str:
    if comparison.task == "binary":
        return f"{name} (positive class {class_name(comparison.classes[-1])})"
    return f"{name} (one-vs-rest, micro-average)"


def _unit_square(fig: go.Figure, title: str, x_title: str, y_title: str, diagonal: str | None = None) -> go.Figure:
    """A curve chart on [0, 1] x [0, 1], with the dashed diagonal named ``diagonal`` when given."""
    if diagonal:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=diagonal, hoverinfo="skip",
                                 line=dict(color=NEUTRAL, dash="dash", width=1)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **LAYOUT)
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return fig


def roc_figure(comparison: Comparison, *, with_champion: bool = True) -> go.Figure:
    from sklearn.metrics import auc, roc_curve
    fig = go.Figure()
    for m in _with_probabilities(comparison, with_champion):
        truth, score = _one_vs_rest(comparison, m.proba)
        fpr, tpr, _ = roc_curve(truth, score)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{m.label} (AUC {auc(fpr, tpr):.3f})",
                                 line=dict(color=m.color, width=2),
                                 hovertemplate="false positive rate %{x:.3f}<br>true positive rate %{y:.3f}"
                                               "<extra>" + m.label + "</extra>"))
    return _unit_square(fig, _curve_title(comparison, "ROC curve"), "false positive rate", "true positive rate",
                        diagonal="chance")


def precision_recall_figure(comparison: Comparison, *, with_champion: bool = True) -> go.Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve
    fig = go.Figure()
    base = None
    for m in _with_probabilities(comparison, with_champion):
        truth, score = _one_vs_rest(comparison, m.proba)
        precision, recall, _ = precision_recall_curve(truth, score)
        ap = average_precision_score(truth, score)
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=f"{m.label} (AP {ap:.3f})",
                                 line=dict(color=m.color, width=2, shape="hv"),
                                 hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<extra>" + m.label + "</extra>"))
        base = float(np.mean(truth))
    if base is not None:   # what a model that knows nothing scores: the positives' share
        fig.add_hline(y=base, line=dict(color=NEUTRAL, dash="dash", width=1),
                      annotation_text=f"chance ({base:.2f})", annotation_position="bottom left")
    return _unit_square(fig, _curve_title(comparison, "Precision-recall"), "recall", "precision")


def calibration_figure(comparison: Comparison, *, with_champion: bool = True, bins: int = 10) -> go.Figure:
    """Binary: per probability bin, the share of rows that were positive against the mean predicted
    probability (a calibrated model lies on the diagonal); marker size is the bin's row count."""
    fig = go.Figure()
    for m in _with_probabilities(comparison, with_champion):
        truth, score = _one_vs_rest(comparison, m.proba)
        edges = np.linspace(0.0, 1.0, bins + 1)
        which = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        mean_score = [float(score[which == b].mean()) for b in filled]
        positives = [float(truth[which == b].mean()) for b in filled]
        counts = [int((which == b).sum()) for b in filled]
        fig.add_trace(go.Scatter(
            x=mean_score, y=positives, mode="lines+markers", name=m.label, customdata=counts,
            line=dict(color=m.color, width=2), marker=dict(size=[6 + 14 * c / max(counts) for c in counts]),
            hovertemplate="mean predicted %{x:.3f}<br>observed positive %{y:.3f}<br>%{customdata} rows"
                          "<extra>" + m.label + "</extra>"))
    return _unit_square(fig, _curve_title(comparison, "Calibration"), "mean predicted probability",
                        "share of rows positive", diagonal="perfectly calibrated")


def classification_charts(comparison: Comparison, *, with_champion: bool) -> None:
    """The review's charts for a classifier (the Models page's comparison section)."""
    st.plotly_chart(confusion_figure(comparison, with_champion=with_champion), width="stretch",
                    key="models.chart.confusion")
    missing = [m.label for m in models(comparison, with_champion) if m.proba is None]
    if missing:
        st.caption(f"No class probabilities from {', '.join(missing)} (the model has no predict_proba): "
                   "no ROC, precision-recall or calibration curve for it.")
    if not _with_probabilities(comparison, with_champion):
        return
    left, right = st.columns(2)
    left.plotly_chart(roc_figure(comparison, with_champion=with_champion), width="stretch", key="models.chart.roc")
    right.plotly_chart(precision_recall_figure(comparison, with_champion=with_champion), width="stretch",
                       key="models.chart.pr")
    if comparison.task == "binary":
        st.plotly_chart(calibration_figure(comparison, with_champion=with_champion), width="stretch",
                        key="models.chart.calibration")
