"""Scoring a candidate and the champion on the same held-out rows.

Backend-independent: given the candidate's dataset and two fitted models, it
re-creates the pipeline's fixed split (``pipeline.train.split``) and scores both
on the identical evaluation rows, then applies the quality gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.train import regression_metrics, split

from .entities import Comparison, GateDecision, ModelVersion
from .errors import InvalidInput
from .gate import decide
from .policy import Policy


def evaluation_split(frame: pd.DataFrame, policy: Policy) -> tuple[pd.DataFrame, pd.Series]:
    if policy.target not in frame.columns:
        raise InvalidInput(f"the evaluation data has no target column {policy.target!r}")
    _, X_test, _, y_test = split(frame, policy.target, policy.test_fraction, policy.split_seed)
    return X_test, y_test


def predict(model: Any, X: pd.DataFrame, ref: str) -> np.ndarray:
    features = getattr(model, "feature_names_in_", None)
    if features is not None:
        missing = [f for f in features if f not in X.columns]
        if missing:
            raise InvalidInput(f"{ref} needs columns the evaluation data lacks: {', '.join(missing)}")
        X = X[list(features)]
    return np.asarray(model.predict(X), dtype=float)


@dataclass(frozen=True)
class PairScore:
    """Both models scored on the same evaluation rows, and the gate's decision."""
    actual: np.ndarray
    candidate_pred: np.ndarray
    champion_pred: np.ndarray | None
    candidate_metrics: dict
    champion_metrics: dict
    gate: GateDecision


def score_pair(frame: pd.DataFrame, evaluated_on: str, policy: Policy,
               candidate_ref: str, candidate_model: Any,
               champion_ref: str | None, champion_model: Any | None) -> PairScore:
    X, y = evaluation_split(frame, policy)
    cand_pred = predict(candidate_model, X, candidate_ref)
    cand_metrics = regression_metrics(y, cand_pred)
    champ_pred, champ_metrics = None, {}
    if champion_ref is not None and champion_model is not None:
        champ_pred = predict(champion_model, X, champion_ref)
        champ_metrics = regression_metrics(y, champ_pred)
    compared = champion_ref is not None and champion_ref != candidate_ref
    gate = decide(cand_metrics, champ_metrics if compared else None, policy,
                  champion_ref=champion_ref, evaluated_on=evaluated_on)
    return PairScore(np.asarray(y, dtype=float), cand_pred, champ_pred, cand_metrics, champ_metrics, gate)


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
    )
