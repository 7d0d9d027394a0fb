"""Scoring script for the Azure ML inference server (``azmlinfsrv``).

The same file serves a local deployment and a managed online endpoint: the
server calls ``init()`` once, then ``run(raw)`` with each request body. The
model's files are in ``AZUREML_MODEL_DIR`` (``model.pkl`` and ``model.json``,
as written by ``pipeline/train.py``).

Request:  ``{"data": [[f1, ..., f10], ...]}`` (rows in the model's feature
order) or ``{"data": [{"age": ..., "sex": ..., ...}, ...]}`` (rows by name).
Response: ``{"predictions": [...]}``. Anything else gets a 400 whose message
names the problem; the server keeps serving.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

try:  # the inference server's response class (azureml-inference-server-http)
    from azureml_inference_server_http.api.aml_response import AMLResponse
except ImportError:  # pragma: no cover - older curated environments
    from azureml.contrib.services.aml_response import AMLResponse  # type: ignore

MAX_ROWS = 1000

model = None
features: list[str] = []


def _model_dir() -> Path:
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    # Azure mounts a registered model folder one level down (AZUREML_MODEL_DIR/<model folder>)
    if not (root / "model.json").exists():
        nested = [p for p in root.iterdir() if (p / "model.json").exists()] if root.is_dir() else []
        if nested:
            return nested[0]
    return root


def init() -> None:
    global model, features
    folder = _model_dir()
    model = joblib.load(folder / "model.pkl")
    features = json.loads((folder / "model.json").read_text())["features"]
    print(f"score.py: loaded {type(model).__name__} from {folder} with {len(features)} features", flush=True)


class BadRequest(ValueError):
    pass


def _reject_constant(name: str):
    raise BadRequest(f"{name} is not allowed in the input; send finite numbers only")


def parse(raw: str) -> pd.DataFrame:
    """The request body as a frame in the model's feature order, or ``BadRequest``."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except (TypeError, ValueError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
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
                raise BadRequest(f"row {i}, feature {features[j]!r}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise BadRequest(f"row {i}, feature {features[j]!r}: {value} is not a finite number")
        matrix.append(row)
    return pd.DataFrame(np.asarray(matrix, dtype=float), columns=features)


def run(raw: str):
    try:
        frame = parse(raw)
    except BadRequest as e:
        return AMLResponse({"error": str(e)}, 400, json_str=True)
    predictions = model.predict(frame)
    return {"predictions": [float(p) for p in predictions]}
