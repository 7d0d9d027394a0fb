"""The task-aware metrics as the services and the console see them.

The catalogue is ``pipeline.metrics`` (the training job computes the same metrics and ships
without the services); this is the one place above it that reads it, so the policy, the gate,
the evaluation and the pages (which never import the pipeline) share one definition: a
metric's name, display name and which way is better.
"""
from __future__ import annotations

from pipeline.metrics import CLASSIFICATION, DEFAULT_GATE, TASKS, Metric, compute, metric, metrics_of

# Prefixes of the metrics a run logs beside the held-out ones: train_f1, val_rmse, cv_log_loss.
_LOGGED_PREFIXES = ("train_", "val_", "cv_")


def _base(name: str) -> Metric | None:
    found = metric(name)
    if found is None:
        prefix = next((p for p in _LOGGED_PREFIXES if name.startswith(p)), None)
        found = metric(name[len(prefix):]) if prefix else None
    return found


def direction(name: str) -> str:
    """'lower' or 'higher' is better for ``name`` (a logged variant such as ``train_f1`` too);
    'lower' for a metric Tollgate does not know (a team's own, like a loss)."""
    found = _base(name)
    return found.direction if found else "lower"


def display_name(name: str) -> str:
    found = metric(name)
    return found.display if found else name


def is_classification(task: str) -> bool:
    return task in CLASSIFICATION


__all__ = ["TASKS", "CLASSIFICATION", "DEFAULT_GATE", "Metric", "compute", "metric", "metrics_of",
           "direction", "display_name", "is_classification"]
