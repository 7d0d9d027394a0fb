"""Train and evaluate a model on a tabular dataset: a regressor or a classifier, by task.

Runs unchanged as a local subprocess or as an Azure ML command job::

    python -m pipeline.train --data data.parquet --estimator gbr \
        --param n_estimators=200 --output outputs/

Writes to ``--output``: ``model.pkl`` (joblib), ``model.json`` (estimator, params,
features, target, task and, for a classifier, its classes), ``metrics.json`` (final values),
``metrics.jsonl`` (every logged value with its step) and ``environment.txt`` (the installed
packages, as ``pip freeze`` lists them). Metrics are the task's (``pipeline.metrics``),
computed on a fixed held-out split (``split``: stratified by label for a classifier), the same
one the console's evaluator re-creates to score the champion on identical rows.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import joblib
import numpy as np
import pandas as pd

from pipeline import metrics as task_metrics
from pipeline import provenance
from pipeline.tracking import MetricLogger


def _sklearn(module: str, name: str) -> Callable[..., Any]:
    """A factory that imports its scikit-learn class on first use. Importing
    scikit-learn takes seconds; the CLI and the console, which import this module
    for the names and defaults, should not pay for it on every start."""
    def build(**params):
        return getattr(importlib.import_module(module), name)(**params)
    build.__name__ = name
    return build


def _scaled_logistic_regression(**params):
    """Logistic regression on standardised features (unscaled, lbfgs converges slowly or not at all)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(**params))


class Estimator(NamedTuple):
    factory: Callable[..., Any]
    defaults: dict[str, Any]     # parameter -> default; the parameters' types follow the defaults
    tasks: tuple[str, ...]       # the tasks it serves
    curve: str                   # the per-step curve it logs: "cv" (one-shot fit: k-fold on the
                                 # training rows), "staged" (boosting stages), "grown" (a forest in steps)


_REGRESSION = ("regression",)
_CLASSIFICATION = task_metrics.CLASSIFICATION
ESTIMATORS: dict[str, Estimator] = {
    "ridge": Estimator(_sklearn("sklearn.linear_model", "Ridge"), {"alpha": 1.0}, _REGRESSION, "cv"),
    "lasso": Estimator(_sklearn("sklearn.linear_model", "Lasso"), {"alpha": 0.1, "max_iter": 10000},
                       _REGRESSION, "cv"),
    "gbr": Estimator(_sklearn("sklearn.ensemble", "GradientBoostingRegressor"),
                     {"n_estimators": 150, "learning_rate": 0.05, "max_depth": 3, "subsample": 0.8,
                      "random_state": 0}, _REGRESSION, "staged"),
    "random_forest": Estimator(_sklearn("sklearn.ensemble", "RandomForestRegressor"),
                               {"n_estimators": 100, "max_depth": 6, "min_samples_leaf": 3, "random_state": 0},
                               _REGRESSION, "grown"),
    "logistic_regression": Estimator(_scaled_logistic_regression, {"C": 1.0, "max_iter": 1000},
                                     _CLASSIFICATION, "cv"),
    "gradient_boosting_classifier": Estimator(
        _sklearn("sklearn.ensemble", "GradientBoostingClassifier"),
        {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 0.8, "random_state": 0},
        _CLASSIFICATION, "staged"),
    "random_forest_classifier": Estimator(
        _sklearn("sklearn.ensemble", "RandomForestClassifier"),
        {"n_estimators": 100, "max_depth": 8, "min_samples_leaf": 1, "random_state": 0},
        _CLASSIFICATION, "grown"),
}


def estimators_for(task: str) -> tuple[str, ...]:
    """The estimators that serve ``task``, in catalogue order."""
    return tuple(name for name, e in ESTIMATORS.items() if task in e.tasks)


class PipelineError(Exception):
    """A readable reason the pipeline cannot go on (bad data, bad parameter)."""


def coerce_params(estimator: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``params``, each cast to its default's type."""
    if estimator not in ESTIMATORS:
        raise PipelineError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    defaults = ESTIMATORS[estimator].defaults
    out = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            raise PipelineError(f"estimator {estimator!r} has no parameter {key!r}; "
                                f"known: {', '.join(defaults)}")
        kind = type(defaults[key])
        try:
            out[key] = kind(value) if not isinstance(value, kind) else value
            if kind is int and (isinstance(value, str) and "." in value
                                or isinstance(value, float) and not value.is_integer()):
                raise ValueError  # int() would silently truncate 1.5 to 1
            if isinstance(value, bool) and kind is not bool:
                raise ValueError
        except (TypeError, ValueError):
            raise PipelineError(f"parameter {key}={value!r} is not a valid {kind.__name__}") from None
        if kind in (int, float) and out[key] < 0:
            raise PipelineError(f"parameter {key}={value!r} must not be negative")
    return out


def read_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def validate(frame: pd.DataFrame, target: str, task: str = "regression") -> list[str]:
    """Reasons the frame cannot be trained on for ``task`` (empty list = fine)."""
    problems = []
    if target not in frame.columns:
        problems.append(f"the data has no labels (target column {target!r}); add labels before training")
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            problems.append(f"column {col!r} is not numeric (dtype {frame[col].dtype})")
        elif frame[col].isna().any():
            problems.append(f"column {col!r} has {int(frame[col].isna().sum())} missing values")
    if len(frame) < 20:
        problems.append(f"only {len(frame)} rows; at least 20 are needed")
    if task in task_metrics.CLASSIFICATION and target in frame.columns and not frame[target].isna().any():
        counts = frame[target].value_counts()
        if task == "binary" and len(counts) != 2:
            problems.append(f"the task is binary but {target!r} has {len(counts)} distinct label(s)"
                            + (f": {', '.join(map(str, counts.index[:5]))}" if len(counts) <= 5 else ""))
        elif task == "multiclass" and len(counts) < 3:
            problems.append(f"the task is multiclass but {target!r} has {len(counts)} distinct label(s); "
                            "two labels make a binary task")
        elif (counts < 2).any():
            rare = counts[counts < 2]
            problems.append(f"{len(rare)} label(s) of {target!r} occur once (e.g. {rare.index[0]!r}); a "
                            "stratified split needs every label at least twice (is the target continuous?)")
    return problems


def split(frame: pd.DataFrame, target: str, test_fraction: float, seed: int, task: str = "regression"):
    """The fixed held-out split: (X_train, X_test, y_train, y_test). Stratified by label for a
    classifier, so that both sides hold every class in its proportion; a regression split is the
    same as it always was (evaluations and lineage recorded before depend on it)."""
    from sklearn.model_selection import train_test_split
    X = frame.drop(columns=[target])
    y = frame[target]
    stratify = y if task in task_metrics.CLASSIFICATION else None
    return train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=stratify)


def probabilities(model, X) -> np.ndarray | None:
    """``predict_proba`` of ``X`` (one column per ``model.classes_``), None for a model without it.
    scikit-learn declares the capability by the method's presence (``available_if``: an SVC built
    without ``probability=True`` has none), so asking for it is how it is read."""
    if not hasattr(model, "predict_proba"):
        return None
    return np.asarray(model.predict_proba(X), dtype=float)


def evaluate(task: str, model, X, y, only=None) -> dict[str, float]:
    """The task's metrics of ``model`` on ``(X, y)``."""
    proba = probabilities(model, X) if task in task_metrics.CLASSIFICATION else None
    classes = getattr(model, "classes_", None)
    return task_metrics.compute(task, y, model.predict(X), proba, classes, only=only)


def fit_with_history(estimator: str, params: dict, X_train, y_train, X_test, y_test,
                     log: MetricLogger, task: str = "regression"):
    """Fit, logging a per-step validation curve of the task's curve metric (``val_rmse``,
    ``cv_log_loss``...) in the way that fits the estimator."""
    spec = ESTIMATORS[estimator]
    curve = task_metrics.CURVE_METRIC[task]
    model = spec.factory(**params)
    if spec.curve == "cv":
        # one-shot models: the curve is 5-fold CV on the training split (stratified for a classifier)
        from sklearn.model_selection import KFold, StratifiedKFold
        folds = (StratifiedKFold if task in task_metrics.CLASSIFICATION else KFold)(
            n_splits=5, shuffle=True, random_state=0)
        for step, (tr, va) in enumerate(folds.split(X_train, y_train)):
            fold = spec.factory(**params).fit(X_train.iloc[tr], y_train.iloc[tr])
            scored = evaluate(task, fold, X_train.iloc[va], y_train.iloc[va], only=(curve,))
            if curve in scored:
                log.log(f"cv_{curve}", scored[curve], step)
        model.fit(X_train, y_train)
    elif spec.curve == "staged":
        model.fit(X_train, y_train)
        every = max(1, params["n_estimators"] // 30)
        stages = (model.staged_predict(X_test) if task == "regression"
                  else model.staged_predict_proba(X_test))
        for step, out in enumerate(stages):
            if step % every == 0 or step == params["n_estimators"] - 1:
                scored = (task_metrics.compute(task, y_test, out, only=(curve,)) if task == "regression" else
                          task_metrics.compute(task, y_test, model.classes_[out.argmax(axis=1)], out,
                                               model.classes_, only=(curve,)))
                log.log(f"val_{curve}", scored[curve], step + 1)
    else:  # a forest: grown in increments
        total = params["n_estimators"]
        model.set_params(warm_start=True)
        grown = 0
        while grown < total:
            grown = min(total, grown + max(5, total // 10))
            model.set_params(n_estimators=grown).fit(X_train, y_train)
            scored = evaluate(task, model, X_test, y_test, only=(curve,))
            if curve in scored:
                log.log(f"val_{curve}", scored[curve], grown)
        model.set_params(warm_start=False)
    return model


def run(data: Path, estimator: str, params: dict[str, Any], output: Path, *,
        target: str = "target", test_fraction: float = 0.2, seed: int = 42,
        task: str = "regression") -> dict[str, float]:
    output.mkdir(parents=True, exist_ok=True)
    log = MetricLogger(output)
    t0 = time.time()
    env = provenance.environment()  # what this model is trained with, wherever it runs
    provenance.write_environment(output)
    log.set_tags(provenance.mlflow_tags(env))

    if task not in task_metrics.TASKS:
        raise PipelineError(f"unknown task {task!r}; choose one of {', '.join(task_metrics.TASKS)}")
    if estimator in ESTIMATORS and task not in ESTIMATORS[estimator].tasks:
        raise PipelineError(f"estimator {estimator!r} does not serve the task {task!r}; "
                            f"choose one of {', '.join(estimators_for(task))}")
    print(f"[train] reading {data}", flush=True)
    frame = read_table(data)
    print(f"[train] {len(frame)} rows x {frame.shape[1]} columns", flush=True)
    problems = validate(frame, target, task)
    if problems:
        raise PipelineError("data cannot be trained on: " + "; ".join(problems))

    params = coerce_params(estimator, params)
    log.log_params({"estimator": estimator, **params})
    X_train, X_test, y_train, y_test = split(frame, target, test_fraction, seed, task)
    print(f"[train] task={task} estimator={estimator} params={json.dumps(params)} "
          f"train={len(X_train)} test={len(X_test)}", flush=True)

    model = fit_with_history(estimator, params, X_train, y_train, X_test, y_test, log, task)
    test = evaluate(task, model, X_test, y_test)
    train = evaluate(task, model, X_train, y_train, only=task_metrics.TRAIN_METRICS[task])
    metrics = {**test, **{f"train_{k}": v for k, v in train.items()}}
    for key, value in metrics.items():
        log.log(key, value, 0)

    joblib.dump(model, output / "model.pkl")
    described = {"estimator": estimator, "params": params, "features": list(X_train.columns),
                 "target": target, "test_fraction": test_fraction, "split_seed": seed,
                 "framework": "scikit-learn"}
    if task != "regression":   # a regressor's model.json stays as it was
        described.update(task=task, classes=np.asarray(model.classes_).tolist())
    (output / "model.json").write_text(json.dumps(described, indent=2))
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"[train] done in {time.time() - t0:.1f}s: " +
          ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    return metrics


def parse_param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="CSV or Parquet file")
    ap.add_argument("--estimator", default="ridge", choices=sorted(ESTIMATORS))
    ap.add_argument("--param", type=parse_param, action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--output", type=Path, default=Path("outputs"))
    ap.add_argument("--target", default="target")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--task", default="regression", choices=task_metrics.TASKS)
    args = ap.parse_args(argv)
    try:
        run(args.data, args.estimator, dict(args.param), args.output,
            target=args.target, test_fraction=args.test_fraction, seed=args.seed, task=args.task)
    except PipelineError as e:
        print(f"[train] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
