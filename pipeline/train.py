"""Train and evaluate a regression model on a tabular dataset.

Runs unchanged as a local subprocess or as an Azure ML command job::

    python -m pipeline.train --data data.parquet --estimator gbr \
        --param n_estimators=200 --output outputs/

Writes to ``--output``: ``model.pkl`` (joblib), ``model.json`` (estimator, params,
features, target), ``metrics.json`` (final values), ``metrics.jsonl`` (every
logged value with its step) and ``environment.txt`` (the installed packages, as
``pip freeze`` lists them). Metrics are computed on a fixed held-out split
(``split``), the same one the console's evaluator re-creates to score the
champion on identical rows.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pandas as pd

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


# estimator name -> (factory, default parameters). Parameter types follow the defaults.
ESTIMATORS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "ridge": (_sklearn("sklearn.linear_model", "Ridge"), {"alpha": 1.0}),
    "lasso": (_sklearn("sklearn.linear_model", "Lasso"), {"alpha": 0.1, "max_iter": 10000}),
    "gbr": (_sklearn("sklearn.ensemble", "GradientBoostingRegressor"),
            {"n_estimators": 150, "learning_rate": 0.05, "max_depth": 3, "subsample": 0.8, "random_state": 0}),
    "random_forest": (_sklearn("sklearn.ensemble", "RandomForestRegressor"),
                      {"n_estimators": 100, "max_depth": 6, "min_samples_leaf": 3, "random_state": 0}),
}


class PipelineError(Exception):
    """A readable reason the pipeline cannot go on (bad data, bad parameter)."""


def coerce_params(estimator: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``params``, each cast to its default's type."""
    if estimator not in ESTIMATORS:
        raise PipelineError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    defaults = ESTIMATORS[estimator][1]
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


def validate(frame: pd.DataFrame, target: str) -> list[str]:
    """Reasons the frame cannot be trained on (empty list = fine)."""
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
    return problems


def split(frame: pd.DataFrame, target: str, test_fraction: float, seed: int):
    """The fixed held-out split: (X_train, X_test, y_train, y_test)."""
    from sklearn.model_selection import train_test_split
    X = frame.drop(columns=[target])
    y = frame[target]
    return train_test_split(X, y, test_size=test_fraction, random_state=seed)


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    return {
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def fit_with_history(estimator: str, params: dict, X_train, y_train, X_test, y_test,
                     log: MetricLogger):
    """Fit, logging a per-step validation curve that fits the estimator."""
    factory = ESTIMATORS[estimator][0]
    model = factory(**params)
    if estimator in ("ridge", "lasso"):
        # linear models train in one shot: the curve is 5-fold CV on the training split
        from sklearn.model_selection import KFold
        folds = KFold(n_splits=5, shuffle=True, random_state=0)
        for step, (tr, va) in enumerate(folds.split(X_train)):
            fold = factory(**params).fit(X_train.iloc[tr], y_train.iloc[tr])
            pred = fold.predict(X_train.iloc[va])
            log.log("cv_rmse", regression_metrics(y_train.iloc[va], pred)["rmse"], step)
        model.fit(X_train, y_train)
    elif estimator == "gbr":
        model.fit(X_train, y_train)
        every = max(1, params["n_estimators"] // 30)
        for step, pred in enumerate(model.staged_predict(X_test)):
            if step % every == 0 or step == params["n_estimators"] - 1:
                log.log("val_rmse", regression_metrics(y_test, pred)["rmse"], step + 1)
    else:  # random forest: grow the forest in increments
        total = params["n_estimators"]
        model.set_params(warm_start=True)
        grown = 0
        while grown < total:
            grown = min(total, grown + max(5, total // 10))
            model.set_params(n_estimators=grown).fit(X_train, y_train)
            log.log("val_rmse", regression_metrics(y_test, model.predict(X_test))["rmse"], grown)
        model.set_params(warm_start=False)
    return model


def run(data: Path, estimator: str, params: dict[str, Any], output: Path, *,
        target: str = "target", test_fraction: float = 0.2, seed: int = 42) -> dict[str, float]:
    output.mkdir(parents=True, exist_ok=True)
    log = MetricLogger(output)
    t0 = time.time()
    env = provenance.environment()  # what this model is trained with, wherever it runs
    provenance.write_environment(output)
    log.set_tags(provenance.mlflow_tags(env))

    print(f"[train] reading {data}", flush=True)
    frame = read_table(data)
    print(f"[train] {len(frame)} rows x {frame.shape[1]} columns", flush=True)
    problems = validate(frame, target)
    if problems:
        raise PipelineError("data cannot be trained on: " + "; ".join(problems))

    params = coerce_params(estimator, params)
    log.log_params({"estimator": estimator, **params})
    X_train, X_test, y_train, y_test = split(frame, target, test_fraction, seed)
    print(f"[train] estimator={estimator} params={json.dumps(params)} "
          f"train={len(X_train)} test={len(X_test)}", flush=True)

    model = fit_with_history(estimator, params, X_train, y_train, X_test, y_test, log)
    test = regression_metrics(y_test, model.predict(X_test))
    train = regression_metrics(y_train, model.predict(X_train))
    metrics = {**test, "train_rmse": train["rmse"], "train_r2": train["r2"]}
    for key, value in metrics.items():
        log.log(key, value, 0)

    joblib.dump(model, output / "model.pkl")
    (output / "model.json").write_text(json.dumps({
        "estimator": estimator, "params": params, "features": list(X_train.columns),
        "target": target, "test_fraction": test_fraction, "split_seed": seed,
        "framework": "scikit-learn",
    }, indent=2))
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
    args = ap.parse_args(argv)
    try:
        run(args.data, args.estimator, dict(args.param), args.output,
            target=args.target, test_fraction=args.test_fraction, seed=args.seed)
    except PipelineError as e:
        print(f"[train] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
