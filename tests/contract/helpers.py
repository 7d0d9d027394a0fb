"""Data and waiting helpers shared by the behaviour suite."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from services.demo import diabetes_v1
from services.entities import DataTestResult, Run, RunStatus, TrainingSpec
from services.permissions import SYSTEM_ACTOR
from services.policy import Policy, TrainingPolicy

# Mapped identities of the project's policy ([roles] in tollgate.toml): writes need a role.
LEAD, QA, ADMIN, SUPPORT = "lead@contoso.com", "qa@contoso.com", "admin@contoso.com", "support@contoso.com"
# the same identities for a test's own policy file (a file without [roles] maps nobody)
ROLES_TOML = "".join(f'"{who}" = "{role}"\n' for who, role in
                     [(LEAD, "ml_lead"), (QA, "qa"), (ADMIN, "admin"), (SUPPORT, "support")])
ROLES_TOML = "[roles]\n" + ROLES_TOML

# Roles on every write (issue 10): what the release-workflow branch makes true, expected to fail until then

# A job that trains for minutes: for cancel, kill and queue tests (never waited for). It asks for
# more trees than the built-in [training.bounds] allow: submit it under ``allowing_slow``.
SLOW = dict(estimator="gbr", params={"n_estimators": 100000})


def allowing_slow(policy: Policy) -> Policy:
    """``policy`` with bounds that let ``SLOW`` through."""
    return replace(policy, training=TrainingPolicy(bounds={**policy.training.bounds, "n_estimators": (1, 100000)},
                                                   per_estimator=policy.training.per_estimator))


def diabetes() -> pd.DataFrame:
    """442 rows, 10 numeric features and ``target`` (float and int columns)."""
    return diabetes_v1()


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = Path(folder) / name
    frame.to_csv(path, index=False)
    return path


def write_text(folder: Path, name: str, text: str | bytes) -> Path:
    path = Path(folder) / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def results_for(tests: list[DataTestResult], check: str, column: str | None = None) -> list[DataTestResult]:
    return [t for t in tests if t.check == check and (column is None or t.column == column)]


def eventually(condition: Callable[[], object], timeout_s: float = 60, what: str = "condition"):
    """Poll until ``condition()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def wait_status(ws, run_id: str, status: RunStatus, timeout_s: float = 60) -> Run:
    def reached():
        run = ws.jobs.get(run_id)
        if run.status == status:
            return run
        assert not (run.status.is_terminal and run.status != status), \
            f"{run_id} ended {run.status.value} ({run.error}) while waiting for {status.value}"
        return None
    return eventually(reached, timeout_s, f"{run_id} to be {status.value}")


def spec(dataset: str = "diabetes", version: int | None = None, *, experiment: str = "contract",
         estimator: str = "ridge", params: dict | None = None, **kw) -> TrainingSpec:
    return TrainingSpec(dataset=dataset, dataset_version=version, estimator=estimator,
                        params=params or {}, experiment=experiment, **kw)


def snapshot(ws) -> dict:
    """Everything a write could change, in a comparable form."""
    return {
        "datasets": sorted((v.ref, v.tests_status.value, v.created_by) for v in ws.datasets.all_versions()),
        "runs": sorted((r.id, r.status.value) for r in ws.jobs.list()),
        "models": sorted((m.ref, tuple(sorted(m.tags.items())), m.description, m.archived, m.aliases)
                         for m in ws.models.versions()),
        "schedules": sorted((s.id, s.enabled, s.cron) for s in ws.schedules.list()),
        "triggers": sorted((t.dataset, t.enabled) for t in ws.schedules.triggers()),
        "releases": sorted((s.ref, s.stage.value) for s in ws.releases.states()),
        "endpoints": sorted((e.name, e.primary_key_masked,
                             tuple(sorted((d.name, d.model_ref, d.traffic, d.state) for d in e.deployments)))
                            for e in ws.endpoints.list()),
        "audit": len(ws.audit.audit()),
    }


def stop_endpoints(ws) -> None:
    """Stop what a wrongly allowed ``up`` started (``down`` as Tollgate itself)."""
    ws.endpoints.down(SYSTEM_ACTOR)
