"""The local workspace: one folder with ``tollgate.db`` and the artifacts."""
from __future__ import annotations

from pathlib import Path

from ..entities import WorkspaceInfo
from ..policy import Policy, load_policy
from .audit import LocalAudit
from .datasets import LocalDatasets
from .endpoints import LocalEndpoints, LocalReleases
from .db import Database
from .evaluation import LocalEvaluator
from .jobs import LocalJobs
from .models import LocalModels
from .schedules import LocalSchedules
from .logs import LocalLogs
from .telemetry import LocalTelemetry

DB_FILE = "tollgate.db"


class LocalWorkspace:
    """``ws.datasets``, ``ws.jobs``, ``ws.models``, ``ws.evaluation`` over one folder."""

    def __init__(self, root: Path, policy: Policy | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.policy = policy or load_policy(self.root)
        self.db = Database(self.root / DB_FILE)
        self.info = WorkspaceInfo(uri=f"local://{self.root}", kind="local", description=str(self.root))
        self.audit = LocalAudit(self.db)
        self.datasets = LocalDatasets(self.db, self.root, self.policy)
        self.models = LocalModels(self.db, self.root, self.policy)
        self.jobs = LocalJobs(self.db, self.root, self.datasets, self.policy)
        self.evaluation = LocalEvaluator(self.datasets, self.models, self.policy)
        self.endpoints = LocalEndpoints(self.db, self.root, self.policy, self.models, self.datasets)
        self.releases = LocalReleases(self.db, self.root, self.policy, self.models, self.datasets,
                                      self.endpoints, self.evaluation)
        self.logs = LocalLogs(self.root)
        self.telemetry = LocalTelemetry(self.root, self.logs)
        self.schedules = LocalSchedules(self.db, self.root, self.policy, self.datasets, self.models, self.jobs)

    def close(self) -> None:
        self.db.close()
        self.telemetry.close()
