"""Register a deliberately broken model version (``pipeline.chaos.FlakyModel``) for canary tests.

The version wraps the fitted estimator of an existing version, so offline it is that model
(same metrics: the quality gate passes it), and in the inference server ``run()`` raises for
``failure_rate`` of the inputs (HTTP 500). The salt is chosen so that the staging smoke test's
cases are not among the failing inputs: a bug the smoke test does not catch, as the ones
that reach a canary are.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib

from pipeline.chaos import FlakyModel
from services.evaluation import evaluation_split


def smoke_rows(ws, name: str, version: int) -> list[list[float]]:
    """The rows the smoke test sends (the first held-out rows, in the model's feature order)."""
    mv = ws.models.get(name, version)
    X, _ = evaluation_split(ws.datasets.load(mv.dataset, mv.dataset_version), ws.policy)
    features = ws.models.features(name, version)
    return [[float(row[f]) for f in features] for _, row in X.head(ws.policy.smoke.cases).iterrows()]


def register_flaky(ws, name: str, base_version: int, work: Path, failure_rate: float = 0.3,
                   actor: str = "lead@contoso.com") -> int:
    """Register a FlakyModel around ``name:base_version``'s estimator; returns the new version."""
    base = ws.models.get(name, base_version)
    src = Path(base.uri)
    folder = Path(work) / f"flaky-{name}-{base.version}"
    shutil.copytree(src, folder)
    estimator = joblib.load(folder / "model.pkl")
    rows = smoke_rows(ws, name, base.version)
    salt = next(s for s in range(1000) if not any(FlakyModel(estimator, failure_rate, s, False).fails(r) for r in rows))
    joblib.dump(FlakyModel(estimator, failure_rate, salt), folder / "model.pkl")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "chaos": {"failure_rate": failure_rate, "salt": salt}}))
    return ws.models.register(name, folder, estimator=f"chaos({base.estimator})", metrics=base.metrics, run_id=None,
                              dataset=base.dataset, dataset_version=base.dataset_version, created_by=actor,
                              description=f"{base.ref} made to fail {failure_rate:.0%} of inputs in serving (chaos test)",
                              tags={"chaos": "true"})
