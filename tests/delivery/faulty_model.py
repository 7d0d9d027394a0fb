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
                   actor: str = "lead@contoso.com", spare_smoke: bool = True) -> int:
    """Register a FlakyModel around ``name:base_version``'s estimator; returns the new version.
    ``spare_smoke=False``: the smoke test's rows may fail too (all of them at ``failure_rate=1``)."""
    base = ws.models.get(name, base_version)
    src = Path(base.uri)
    folder = Path(work) / f"flaky-{name}-{base.version}"
    shutil.copytree(src, folder)
    estimator = joblib.load(folder / "model.pkl")
    rows = smoke_rows(ws, name, base.version)
    salt = next(s for s in range(1000) if not spare_smoke
                or not any(FlakyModel(estimator, failure_rate, s, False).fails(r) for r in rows))
    joblib.dump(FlakyModel(estimator, failure_rate, salt), folder / "model.pkl")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "chaos": {"failure_rate": failure_rate, "salt": salt}}))
    return ws.models.register(name, folder, estimator=f"chaos({base.estimator})", metrics=base.metrics, run_id=None,
                              dataset=base.dataset, dataset_version=base.dataset_version, created_by=actor,
                              description=f"{base.ref} made to fail {failure_rate:.0%} of inputs in serving (chaos test)",
                              tags={"chaos": "true"})


class SlowModel:
    """A fitted estimator that takes ``delay_s`` longer per prediction in the serving environment
    (``AZUREML_MODEL_DIR`` set: the inference server), as a heavy model would; offline (the gate,
    the smoke test's expected values) it predicts at once, like the estimator it wraps.
    Defined here, importable from the project root, where the inference server unpickles it."""

    def __init__(self, estimator, delay_s: float):
        self.estimator, self.delay_s = estimator, delay_s

    def __getattr__(self, name: str):
        if name in ("estimator", "delay_s"):
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def predict(self, X):
        import os
        import time
        if os.environ.get("AZUREML_MODEL_DIR"):
            time.sleep(self.delay_s)
        return self.estimator.predict(X)


def register_slow(ws, name: str, base_version: int, work: Path, delay_s: float,
                  actor: str = "lead@contoso.com") -> int:
    """Register a SlowModel around ``name:base_version``'s estimator; returns the new version."""
    base = ws.models.get(name, base_version)
    folder = Path(work) / f"slow-{name}-{base.version}"
    shutil.copytree(Path(base.uri), folder)
    joblib.dump(SlowModel(joblib.load(folder / "model.pkl"), delay_s), folder / "model.pkl")
    return ws.models.register(name, folder, estimator=f"slow({base.estimator})", metrics=base.metrics, run_id=None,
                              dataset=base.dataset, dataset_version=base.dataset_version, created_by=actor,
                              description=f"{base.ref} answering {delay_s * 1000:.0f} ms slower in serving",
                              tags={"chaos": "slow"})
