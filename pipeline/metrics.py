"""The metrics of each task, declared once: name, display name, which way is better, and how to
compute it from labels (and, for the probability metrics, class probabilities).

Pure; imported by the training pipeline (which ships alone as Azure ML job code) and, through
``services.metrics``, by the evaluation, the gate, the policy and the console.

Tasks: ``regression`` (rmse, mae, r2), ``binary`` and ``multiclass`` (accuracy, balanced
accuracy, precision, recall, F1, ROC AUC, log loss). For a binary task the positive class is the
last of the sorted classes (scikit-learn's ``classes_[1]``, the column ``predict_proba`` gives for
it); for multiclass, precision, recall and F1 are macro averages and ROC AUC is one-vs-rest, macro.
The probability metrics are computed only when probabilities are given (the model has
``predict_proba``); a metric the held-out rows cannot define (ROC AUC with one class present) is
left out rather than made up.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

TASKS = ("regression", "binary", "multiclass")
CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class Metric:
    name: str                  # the key in metrics.json, gate rules, MLflow
    display: str               # how people read it
    direction: str             # "lower" or "higher" is better
    needs_probabilities: bool  # computed from predict_proba, not from labels
    compute: Callable[..., float]   # (y_true, y_pred or probabilities, classes, task) -> value


def _rmse(y, pred, classes, task):
    from sklearn.metrics import mean_squared_error
    return float(np.sqrt(mean_squared_error(y, pred)))


def _sk(name: str, averaged: bool = False) -> Callable[..., float]:
    """A scikit-learn metric of labels (imported on first use: seconds); ``averaged``: over the
    positive class for a binary task, macro for multiclass."""
    def compute(y, pred, classes, task):
        import sklearn.metrics as m
        kwargs = {}
        if averaged:
            kwargs = ({"average": "binary", "pos_label": classes[-1]} if task == "binary"
                      else {"average": "macro", "labels": list(classes)})
            kwargs["zero_division"] = 0
        return float(getattr(m, name)(y, pred, **kwargs))
    return compute


def _roc_auc(y, proba, classes, task):
    from sklearn.metrics import roc_auc_score
    if task == "binary":
        return float(roc_auc_score(np.asarray(y) == classes[-1], proba[:, -1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(classes)))


def _log_loss(y, proba, classes, task):
    from sklearn.metrics import log_loss
    return float(log_loss(y, proba, labels=list(classes)))


_REGRESSION = (
    Metric("rmse", "RMSE", "lower", False, _rmse),
    Metric("mae", "MAE", "lower", False, _sk("mean_absolute_error")),
    Metric("r2", "R²", "higher", False, _sk("r2_score")),
)
_CLASSIFICATION = (
    Metric("accuracy", "Accuracy", "higher", False, _sk("accuracy_score")),
    Metric("balanced_accuracy", "Balanced accuracy", "higher", False, _sk("balanced_accuracy_score")),
    Metric("precision", "Precision", "higher", False, _sk("precision_score", averaged=True)),
    Metric("recall", "Recall", "higher", False, _sk("recall_score", averaged=True)),
    Metric("f1", "F1", "higher", False, _sk("f1_score", averaged=True)),
    Metric("roc_auc", "ROC AUC", "higher", True, _roc_auc),
    Metric("log_loss", "Log loss", "lower", True, _log_loss),
)
METRICS: dict[str, tuple[Metric, ...]] = {"regression": _REGRESSION, "binary": _CLASSIFICATION,
                                          "multiclass": _CLASSIFICATION}
_BY_NAME = {m.name: m for m in (*_REGRESSION, *_CLASSIFICATION)}

# What a policy gets when it names no [gate] rules: the primary metric the candidate must improve,
# and (metric, max_regression, min) rules. Label metrics only, so a model without predict_proba passes.
DEFAULT_GATE: dict[str, tuple[str, tuple[tuple[str, float, float | None], ...]]] = {
    "regression": ("rmse", (("rmse", 0.0, None), ("mae", 0.02, None), ("r2", 0.02, 0.3))),
    "binary": ("f1", (("f1", 0.0, None), ("accuracy", 0.02, None), ("balanced_accuracy", 0.02, None))),
    "multiclass": ("f1", (("f1", 0.0, None), ("accuracy", 0.02, None), ("balanced_accuracy", 0.02, None))),
}
# The train-split metrics a run logs beside the held-out ones (train_rmse, train_r2, ...).
TRAIN_METRICS = {"regression": ("rmse", "r2"), "binary": ("accuracy", "f1"), "multiclass": ("accuracy", "f1")}
# The metric of the per-step validation curve a run logs (val_rmse, cv_log_loss, ...).
CURVE_METRIC = {"regression": "rmse", "binary": "log_loss", "multiclass": "log_loss"}


def check_task(task: Any) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def metrics_of(task: str) -> tuple[Metric, ...]:
    return METRICS[check_task(task)]


def metric(name: str) -> Metric | None:
    """The metric called ``name`` in any task, None when there is none."""
    return _BY_NAME.get(name)


def compute(task: str, y_true, y_pred, probabilities=None, classes: Sequence | None = None,
            only: Sequence[str] | None = None) -> dict[str, float]:
    """The task's metrics (``only``: these of them) of predictions ``y_pred`` against ``y_true``;
    the probability metrics too when ``probabilities`` (one column per class of ``classes``, in
    that order, as ``predict_proba`` gives them) are given."""
    y_true = np.asarray(y_true)
    if task in CLASSIFICATION and classes is None:
        classes = np.unique(np.concatenate([y_true, np.asarray(y_pred)]))
    proba = None if probabilities is None else np.asarray(probabilities, dtype=float)
    out = {}
    for m in metrics_of(task):
        if only is not None and m.name not in only:
            continue
        if m.needs_probabilities and proba is None:
            continue
        with warnings.catch_warnings():   # an undefined metric is left out below, not warned about
            warnings.simplefilter("ignore")
            try:
                value = m.compute(y_true, proba if m.needs_probabilities else y_pred, classes, task)
            except ValueError:
                continue
        if math.isfinite(value):   # ROC AUC of rows holding one class only is NaN: undefined, not zero
            out[m.name] = value
    return out
