"""Demo seeding: a populated workspace on first start.

Registers scikit-learn's bundled diabetes data as ``diabetes:1`` and a "new data"
``diabetes:2`` (more rows, an older and heavier population), then trains several
estimators through the real pipeline so runs, metrics, logs, registered models,
a champion and candidates exist. Idempotent: each step runs only if its result
is missing. Works through the service Protocols only, so it seeds any backend.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

from .entities import RunFilter, RunStatus, TrainingSpec
from .protocols import Workspace
from .permissions import SYSTEM_ACTOR
from .simulator import simulate
from .telemetry import window

DATASET = "diabetes"
DEMO_USER = SYSTEM_ACTOR  # seeding is Tollgate itself setting up its demo, as the scheduler is
# (dataset version, estimator, params): the first sets the champion; the rest are candidates
TRAININGS = [
    (1, "ridge", {"alpha": 100.0}),
    (1, "ridge", {"alpha": 1.0}),
    (2, "lasso", {"alpha": 0.1}),
    (2, "gbr", {"n_estimators": 150, "learning_rate": 0.05}),
    (2, "random_forest", {"n_estimators": 100, "max_depth": 6}),
]


def diabetes_v1() -> pd.DataFrame:
    """The 442 patients of the diabetes study, in original units (ships with scikit-learn)."""
    return load_diabetes(as_frame=True, scaled=False).frame


def diabetes_v2(seed: int = 7) -> pd.DataFrame:
    """v1 plus 220 new patients resampled from it, slightly older and heavier, with noise."""
    base = diabetes_v1()
    rng = np.random.default_rng(seed)
    extra = base.sample(220, replace=True, random_state=seed).reset_index(drop=True)
    for col in ["bp", "s1", "s2", "s3", "s5", "s6"]:
        extra[col] = (extra[col] + rng.normal(0, 0.05 * base[col].std(), len(extra))).round(4)
    extra["age"] = (extra["age"] + 3).clip(upper=85)
    extra["bmi"] = (extra["bmi"] + rng.normal(0.8, 0.5, len(extra))).round(1)
    extra["target"] = (extra["target"] + rng.normal(0, 10, len(extra))).clip(lower=25).round(0)
    return pd.concat([base, extra], ignore_index=True)


def seed_demo(ws: Workspace, progress: Callable[[str], None] = print, wait_s: float = 300,
              deploy_endpoints: bool = True) -> dict:
    """Bring ``ws`` up to the demo state; returns what it created. With ``deploy_endpoints``
    the champion is put in production and the best candidate in staging."""
    created = {"datasets": [], "runs": []}
    existing = {v.version for v in ws.datasets.all_versions() if v.name == DATASET}
    with tempfile.TemporaryDirectory() as tmp:
        for version, make, description in [
            (1, diabetes_v1, "Diabetes study (442 patients), scikit-learn's bundled copy"),
            (2, diabetes_v2, "New data: 220 more patients, older and heavier population"),
        ]:
            if version in existing:
                continue
            path = Path(tmp) / f"diabetes-v{version}.csv"
            make().to_csv(path, index=False)
            dv = ws.datasets.register(DATASET, path, description=description, actor=DEMO_USER)
            created["datasets"].append(dv.ref)
            progress(f"registered dataset {dv.ref}: {dv.rows} rows, data tests {dv.tests_status.value}")

    done = [r for r in ws.jobs.list(RunFilter(experiment=ws.policy.experiment))
            if r.status == RunStatus.COMPLETED]
    if len(done) >= len(TRAININGS):
        progress(f"{len(done)} completed runs already; nothing to train")
    else:
        train_demo_models(ws, progress, wait_s, created)
    if deploy_endpoints and getattr(ws, "endpoints", None) is not None:
        deploy_demo_endpoints(ws, progress, created)
        send_demo_traffic(ws, progress, created)
    return created


def send_demo_traffic(ws: Workspace, progress: Callable[[str], None], created: dict) -> None:
    """A first burst of requests (a few of them bad) so Monitoring, Logs and Drift have data."""
    env = ws.policy.endpoints
    for name, rps, seconds in ((env.production, 40, 15), (env.staging, 10, 5)):
        already = sum(s.requests for s in ws.telemetry.stats(window("24h"), name))  # smoke tests send a few
        if ws.endpoints.get(name).live is None or already >= rps * seconds / 2:
            continue
        progress(f"sending demo traffic to {name}: {rps} requests/s for {seconds} s, 2 % bad requests…")
        result = simulate(ws, name, rps, seconds, error_rate=0.02, seed=7, actor=SYSTEM_ACTOR)
        created.setdefault("requests", {})[name] = result.sent


def deploy_demo_endpoints(ws: Workspace, progress: Callable[[str], None], created: dict) -> None:
    """The champion serving production and the best candidate waiting in staging."""
    name = ws.policy.model_name
    champion = ws.models.champion(name)
    if champion is None:
        return
    env = ws.policy.endpoints
    if not any(ep.live for ep in ws.endpoints.list()):
        progress(f"deploying champion {champion.ref} to {env.production}…")
        ws.releases.deploy(name, champion.version, env.production, SYSTEM_ACTOR)
        created.setdefault("deployments", []).append(f"{env.production}:{champion.ref}")
    if ws.endpoints.get(env.staging).live is None:
        candidates = [m for m in ws.models.versions(name, include_archived=False)
                      if m.version > champion.version and not m.aliases]
        if candidates:
            best = min(candidates, key=lambda m: m.metrics.get("rmse", float("inf")))
            progress(f"deploying candidate {best.ref} to {env.staging} (smoke test included)…")
            ws.releases.deploy(name, best.version, env.staging, SYSTEM_ACTOR)
            created.setdefault("deployments", []).append(f"{env.staging}:{best.ref}")


def train_demo_models(ws: Workspace, progress: Callable[[str], None], wait_s: float, created: dict) -> None:
    def submit(version, estimator, params):
        run = ws.jobs.submit(TrainingSpec(dataset=DATASET, dataset_version=version, estimator=estimator,
                                          params=params, experiment=ws.policy.experiment), DEMO_USER)
        progress(f"started {run.id}: {run.display_name} on {DATASET}:{version}")
        return run

    def finish(run):
        run = ws.jobs.wait(run.id, timeout_s=wait_s)
        outcome = (f"registered {run.model_name}:{run.model_version}" if run.model_version
                   else "not registered" if run.status == RunStatus.COMPLETED else run.error or "")
        progress(f"{run.id}: {run.status.value}, rmse={run.metrics.get('rmse', float('nan')):.2f} → {outcome}")
        created["runs"].append(run.id)

    # the first run alone, so it deterministically becomes the champion; the rest in parallel
    first, *rest = TRAININGS
    if ws.models.champion(ws.policy.model_name) is None:
        finish(submit(*first))
    for run in [submit(*t) for t in rest]:
        finish(run)
