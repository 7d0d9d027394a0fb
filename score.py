"""Scoring script for the Azure ML inference server (``azmlinfsrv``).

The same file serves a local deployment and a managed online endpoint: the
server calls ``init()`` once, then ``run(raw)`` with each request body. The
model's files are in ``AZUREML_MODEL_DIR`` (``model.pkl`` and ``model.json``,
as written by ``pipeline/train.py``).

Request:  ``{"data": [[f1, ..., f10], ...]}`` (rows in the model's feature
order) or ``{"data": [{"age": ..., "sex": ..., ...}, ...]}`` (rows by name).
Response: ``{"predictions": [...]}``: a regressor's values, a classifier's labels (its
``model.json`` says ``"task": "binary"`` or ``"multiclass"``); a classifier with
``predict_proba`` adds ``"probabilities": [[p, ...], ...]`` (a row per input row, a column
per class) and ``"classes": [...]`` (the column order: ``model.classes_``). Anything else gets a 400 whose message
names the problem; the server keeps serving. Every error body has one shape,
the same as the Tollgate gateway's: ``{"error": {"code": "BadRequest", "message": "..."}}``
(``code``: the HTTP status's reason phrase without spaces).
"""
from __future__ import annotations

import json
import math
import os
from http import HTTPStatus
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

try:  # the inference server's response class (azureml-inference-server-http)
    from azureml_inference_server_http.api.aml_response import AMLResponse
except ImportError:  # pragma: no cover - older curated environments
    from azureml.contrib.services.aml_response import AMLResponse  # type: ignore

MAX_ROWS = 1000
MAX_DEPTH = 32             # nesting levels of the body; a valid one has 3
MAX_MAGNITUDE = 1e15       # |feature| beyond this is no measurement (and overflows models into inf)

model = None
features: list[str] = []
task = "regression"
with_probabilities = False   # a classifier with predict_proba


def _model_dir() -> Path:
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    # Azure mounts a registered model folder one level down (AZUREML_MODEL_DIR/<model folder>)
    if not (root / "model.json").exists():
        nested = [p for p in root.iterdir() if (p / "model.json").exists()] if root.is_dir() else []
        if nested:
            return nested[0]
    return root


def init() -> None:
    global model, features, task, with_probabilities
    folder = _model_dir()
    model = joblib.load(folder / "model.pkl")
    described = json.loads((folder / "model.json").read_text())
    features = described["features"]
    task = described.get("task", "regression")
    # scikit-learn declares probabilities by the method's presence (available_if)
    with_probabilities = task != "regression" and hasattr(model, "predict_proba")
    print(f"score.py: loaded {type(model).__name__} ({task}) from {folder} with {len(features)} features", flush=True)


class BadRequest(ValueError):
    pass


def _reject_constant(name: str):
    raise BadRequest(f"{name} is not allowed in the input; send finite numbers only")


def _too_deep() -> BadRequest:
    return BadRequest(f"the JSON is nested more than {MAX_DEPTH} levels deep; "
                      'send {"data": [[...], ...]} (3 levels)')


def _depth_exceeds(value, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``: level by level, no recursion on hostile input."""
    level = [value] if isinstance(value, (list, dict)) else []
    for _ in range(limit):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
        if not level:
            return False
    return True


def _describe(value) -> str:
    """A value for an error message, bounded whatever its size or depth."""
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(raw: str) -> pd.DataFrame:
    """The request body as a frame in the model's feature order, or ``BadRequest``."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except RecursionError:  # nested deeper than the parser's recursion limit
        raise _too_deep() from None
    except (TypeError, ValueError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if _depth_exceeds(body, MAX_DEPTH):
        raise _too_deep()
    if not isinstance(body, dict) or "data" not in body:
        raise BadRequest('expected a JSON object with a "data" field: {"data": [[...], ...]}')
    rows = body["data"]
    if not isinstance(rows, list) or not rows:
        raise BadRequest('"data" must be a non-empty list of rows')
    if len(rows) > MAX_ROWS:
        raise BadRequest(f'"data" has {len(rows)} rows; at most {MAX_ROWS} per request')
    matrix = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            missing = [f for f in features if f not in row]
            if missing:
                raise BadRequest(f"row {i}: missing feature(s) {', '.join(missing)}")
            row = [row[f] for f in features]
        if not isinstance(row, list):
            raise BadRequest(f"row {i}: expected a list of {len(features)} numbers or an object by feature name")
        if len(row) != len(features):
            raise BadRequest(f"row {i}: expected {len(features)} features ({', '.join(features)}), got {len(row)}")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(f"row {i}, feature {features[j]!r}: expected a number, got {_describe(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise BadRequest(f"row {i}, feature {features[j]!r}: {value} is not a finite number")
            if abs(value) > MAX_MAGNITUDE:
                raise BadRequest(f"row {i}, feature {features[j]!r}: {_describe(value)} is out of range "
                                 f"(at most {MAX_MAGNITUDE:g} in magnitude)")
        matrix.append(row)
    return pd.DataFrame(np.asarray(matrix, dtype=float), columns=features)


def error(status: int, message: str) -> AMLResponse:
    code = HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    return AMLResponse({"error": {"code": code, "message": message}}, status, json_str=True)


def run(raw: str):
    try:
        frame = parse(raw)
    except BadRequest as e:
        return error(400, str(e))
    if task != "regression":
        return classify(frame)
    predictions = [float(p) for p in model.predict(frame)]
    broken = [i for i, p in enumerate(predictions) if not math.isfinite(p)]
    if broken:  # never answer with Infinity/NaN: not JSON, and not a prediction
        print(f"score.py: non-finite prediction for row(s) {broken[:10]}", flush=True)
        return error(500, f"the model's prediction for row {broken[0]} is not a finite number")
    return {"predictions": predictions}


def classify(frame: pd.DataFrame):
    """A classifier's labels and, with predict_proba, its probabilities in ``classes`` order."""
    answer = {"predictions": np.asarray(model.predict(frame)).tolist()}
    if with_probabilities:
        probabilities = np.asarray(model.predict_proba(frame), dtype=float)
        if not np.isfinite(probabilities).all():
            row = int(np.argwhere(~np.isfinite(probabilities))[0][0])
            print(f"score.py: non-finite probability for row {row}", flush=True)
            return error(500, f"the model's probabilities for row {row} are not finite numbers")
        answer.update(probabilities=probabilities.tolist(), classes=np.asarray(model.classes_).tolist())
    return answer
