"""Scoring a candidate and the champion on the same held-out rows.

Backend-independent: given the candidate's dataset and two fitted models, it
re-creates the pipeline's fixed split (``pipeline.train.split``) and scores both
on the identical evaluation rows with the task's metrics (``services.metrics``: a
classifier's label metrics, and its probability metrics when it has ``predict_proba``),
then applies the quality gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.train import probabilities, split

from .entities import Comparison, GateDecision, ModelVersion
from .errors import InvalidInput
from .gate import decide
from .metrics import compute, is_classification
from .policy import Policy


def evaluation_split(frame: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, pd.Series]:
    if policy.target not in frame.columns:
        raise InvalidInput(f"the evaluation data has no target column {policy.target!r}")
    _, X_test, _, y_test = split(frame, policy.target, policy.test_fraction, policy.split_seed, policy.task)
    return X_test, y_test


def _columns(model: Any, X: pd.DataFrame, ref: str) -> pd.DataFrame:
    features = getattr(model, "feature_names_in_", None)
    if features is not None:
        missing = [f for f in features if f not in X.columns]
        if missing:
            raise InvalidInput(f"{ref} needs columns the evaluation data lacks: {', '.join(missing)}")
        X = X[list(features)]
    return X


def predict(model: Any, X: pd.DataFrame, ref: str) -> np.ndarray:
    """Predictions of ``X``: a regressor's values, a classifier's labels."""
    return np.asarray(model.predict(_columns(model, X, ref)), dtype=float)


def class_labels(task: str, actual, *models: Any) -> tuple[float, ...]:
    """A classifier's classes: every label of the evaluation rows and of the models, sorted (the
    order of ``Comparison.classes`` and its probabilities); () for a regression."""
    if not is_classification(task):
        return ()
    known = [np.asarray(actual, dtype=float)]
    known += [np.asarray(m.classes_, dtype=float) for m in models if getattr(m, "classes_", None) is not None]
    return tuple(float(c) for c in np.unique(np.concatenate(known)))


def predict_proba(model: Any, X: pd.DataFrame, ref: str, classes: tuple[float, ...]) -> np.ndarray | None:
    """The model's class probabilities of ``X``, one column per ``classes`` (0 for a class the model
    never saw); None for a regression or a model without ``predict_proba``."""
    if not classes:
        return None
    proba = probabilities(model, _columns(model, X, ref))
    if proba is None:
        return None
    aligned = np.zeros((len(proba), len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    for column, label in enumerate(np.asarray(model.classes_, dtype=float)):
        aligned[:, position[float(label)]] = proba[:, column]
    return aligned


def task_metrics(task: str, actual, pred, proba, classes: tuple[float, ...]) -> dict[str, float]:
    """The task's metrics of one model's predictions (and probabilities) of the evaluation rows."""
    return compute(task, np.asarray(actual, dtype=float), pred, proba, np.asarray(classes) if classes else None)


@dataclass(frozen=True)
class PairScore:
    """Both models scored on the same evaluation rows, and the gate's decision."""
    actual: np.ndarray
    candidate_pred: np.ndarray
    champion_pred: np.ndarray | None
    candidate_metrics: dict
    champion_metrics: dict
    gate: GateDecision
    classes: tuple[float, ...] = ()               # a classifier's (class_labels)
    candidate_proba: np.ndarray | None = None     # rows x classes; None: no predict_proba
    champion_proba: np.ndarray | None = None


def score_pair(frame: pd.DataFrame, evaluated_on: str, policy: Policy,
               candidate_ref: str, candidate_model: Any,
               champion_ref: str | None, champion_model: Any | None) -> PairScore:
    X, y = evaluation_split(frame, policy)
    classes = class_labels(policy.task, y, *(m for m in (candidate_model, champion_model) if m is not None))
    cand_pred = predict(candidate_model, X, candidate_ref)
    cand_proba = predict_proba(candidate_model, X, candidate_ref, classes)
    cand_metrics = task_metrics(policy.task, y, cand_pred, cand_proba, classes)
    champ_pred, champ_proba, champ_metrics = None, None, {}
    if champion_ref is not None and champion_model is not None:
        champ_pred = predict(champion_model, X, champion_ref)
        champ_proba = predict_proba(champion_model, X, champion_ref, classes)
        champ_metrics = task_metrics(policy.task, y, champ_pred, champ_proba, classes)
    compared = champion_ref is not None and champion_ref != candidate_ref
    gate = decide(cand_metrics, champ_metrics if compared else None, policy,
                  champion_ref=champion_ref, evaluated_on=evaluated_on)
    return PairScore(np.asarray(y, dtype=float), cand_pred, champ_pred, cand_metrics, champ_metrics, gate,
                     classes, cand_proba, champ_proba)


def proba_rows(proba: np.ndarray | None) -> tuple[tuple[float, ...], ...] | None:
    return None if proba is None else tuple(tuple(row) for row in proba.tolist())


def compare_models(frame: pd.DataFrame, evaluated_on: str, policy: Policy,
                   candidate: ModelVersion, candidate_model: Any,
                   champion: ModelVersion | None, champion_model: Any | None) -> Comparison:
    s = score_pair(frame, evaluated_on, policy, candidate.ref, candidate_model,
                   champion.ref if champion else None, champion_model)
    return Comparison(
        candidate=candidate, champion=champion, evaluated_on=evaluated_on,
        candidate_metrics=s.candidate_metrics, champion_metrics=s.champion_metrics, gate=s.gate,
        actual=tuple(s.actual.tolist()), candidate_pred=tuple(s.candidate_pred.tolist()),
        champion_pred=tuple(s.champion_pred.tolist()) if s.champion_pred is not None else None,
        task=policy.task, classes=s.classes,
        candidate_proba=proba_rows(s.candidate_proba), champion_proba=proba_rows(s.champion_proba),
    )
