"""Evaluating a model version on a dataset version and target column that someone picks.

A version registered outside Tollgate has no lineage (``services.evidence``): there is no dataset
version it was trained on to take held-out rows from. Its review (the Models page) and
``tollgate.py evaluate NAME:VERSION --dataset DS:VERSION --target COL`` offer this instead: the version
and the champion scored on the same held-out rows of the picked dataset version (the policy's split:
``test_fraction``, ``split_seed``), with the quality gate's checks applied — for information.

A read, on both backends: nothing is recorded (no gate decision, no kept evaluation, no tag), so it is
neither role-checked beyond reading the workspace nor audited; it cannot move a version towards
production (approval still needs the evidence Tollgate records). What the picked data or the model
cannot do is ``InvalidInput`` with what to pick instead: a column that is not there, a target that is
not numeric for a regression model, too few rows with a target, a model that needs
columns the data lacks or cannot be loaded or cannot predict on it.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from .entities import Comparison, ModelVersion
from .errors import InvalidInput, ServiceError
from .evaluation import compare_models

MIN_ROWS = 10          # rows with a target value: fewer leave too few held-out rows to score on


def evaluate_on(ws, name: str, version: int | str, dataset: str, dataset_version: int | str, target: str, *,
                champion_version: int | str | None = None) -> Comparison:
    """``name:version`` and the champion (or ``champion_version``) on the held-out rows of
    ``dataset:dataset_version`` with ``target`` as the column to predict. ``NotFound`` for a model or
    dataset version that does not exist; ``InvalidInput`` for data or a model that cannot be evaluated."""
    target = (target or "").strip()
    if not target:
        raise InvalidInput("name the target column: the column of the dataset the model predicts")
    candidate = ws.models.get(name, version)
    champion = (ws.models.get(name, champion_version) if champion_version is not None
                else ws.models.champion(name))
    frame = ws.datasets.load(dataset, dataset_version)
    picked = f"{dataset}:{dataset_version}"
    rows = usable_rows(frame, target, picked, ws.policy.task)
    evaluated_on = f"{picked} (target {target})"
    cand_model = ws.models.load(candidate.name, candidate.version)   # InvalidInput when it cannot be loaded
    champ_model = ws.models.load(champion.name, champion.version) if champion else None
    try:
        return compare_models(rows, evaluated_on, replace(ws.policy, target=target),
                              candidate, cand_model, champion, champ_model)
    except ServiceError:
        raise
    except Exception as e:    # the model's own predict() refusing this data: say so, as data
        raise InvalidInput(f"{_refs(candidate, champion)} could not predict on {picked}: {type(e).__name__}: {e}",
                           hint="Pick a dataset version with the columns, types and units the model was "
                                "trained on.") from e


def usable_rows(frame: pd.DataFrame, target: str, picked: str, task: str = "regression") -> pd.DataFrame:
    """The rows of ``frame`` with a ``target`` value (numeric for a regression); ``InvalidInput`` saying
    what is wrong. A classifier's labels may be text: they are compared as they are."""
    if target not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:30])) + (" …" if len(frame.columns) > 30 else "")
        raise InvalidInput(f"{picked} has no column {target!r}", hint=f"Its columns: {shown}.")
    if task != "regression":
        rows = frame.loc[frame[target].notna()]
    else:
        values = pd.to_numeric(frame[target], errors="coerce")
        bad = frame[target][values.isna() & frame[target].notna()]
        if len(bad):
            raise InvalidInput(f"the target column {target!r} of {picked} is not numeric (e.g. {str(bad.iloc[0])!r})",
                               hint="A regression model predicts a number: pick the numeric column it predicts.")
        rows = frame.loc[values.notna()].assign(**{target: values[values.notna()]})
    if len(rows) < MIN_ROWS:
        raise InvalidInput(f"{picked} has {len(rows)} rows with a value in {target!r}; evaluating needs "
                           f"at least {MIN_ROWS}", hint="Pick a larger dataset version.")
    return rows


def _refs(candidate: ModelVersion, champion: ModelVersion | None) -> str:
    return candidate.ref + (f" or champion {champion.ref}" if champion and champion.ref != candidate.ref else "")


__all__ = ["evaluate_on", "usable_rows", "MIN_ROWS"]
