"""The local workspace: one folder with ``tollgate.db`` and the artifacts."""
from __future__ import annotations

from pathlib import Path

from ..entities import ENDPOINT_PROCESSES, GATEWAY_LOG, SCHEDULER_PROCESS, SUPERVISED_ROLLOUTS, WorkspaceInfo
from ..policy import Policy, load_policy
from ..release import ReleaseWorkflow
from .audit import LocalAudit
from .datasets import LocalDatasets
from .db import Database
from .endpoints import LocalEndpoints
from .evaluation import LocalEvaluator
from .jobs import LocalJobs
from .ledger import LocalLedger
from .models import LocalModels
from .outbox import LocalNotifications
from .release_driver import LocalEndpointDriver
from .schedules import LocalSchedules
from .logs import LocalLogs
from .telemetry import LocalTelemetry

DB_FILE = "tollgate.db"
CAPABILITIES = frozenset({ENDPOINT_PROCESSES, GATEWAY_LOG, SCHEDULER_PROCESS, SUPERVISED_ROLLOUTS})


class LocalWorkspace:
    """``ws.datasets``, ``ws.jobs``, ``ws.models``, ``ws.evaluation``, ``ws.endpoints``, ``ws.releases``
    (the release workflow on this folder's processes and SQLite), ``ws.notifications``,
    ``ws.telemetry``, ``ws.logs``, ``ws.schedules`` over one folder."""

    def __init__(self, root: Path, policy: Policy | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.policy = policy or load_policy(self.root)
        self.db = Database(self.root / DB_FILE)
        self.info = WorkspaceInfo(uri=f"local://{self.root}", kind="local", description=str(self.root),
                                  capabilities=CAPABILITIES)
        self.audit = LocalAudit(self.db)
        self.datasets = LocalDatasets(self.db, self.root, self.policy)
        self.models = LocalModels(self.db, self.root, self.policy)
        self.jobs = LocalJobs(self.db, self.root, self.datasets, self.policy)
        self.evaluation = LocalEvaluator(self.datasets, self.models, self.policy)
        self.endpoints = LocalEndpoints(self.db, self.root, self.policy)
        self.notifications = LocalNotifications(self.db, self.policy)
        self.releases = ReleaseWorkflow(self.policy, self.models, self.datasets, self.evaluation,
                                        LocalEndpointDriver(self.db, self.endpoints, self.policy),
                                        LocalLedger(self.db, self.policy))
        self.logs = LocalLogs(self.root)
        self.telemetry = LocalTelemetry(self.root, self.logs)
        self.schedules = LocalSchedules(self.db, self.root, self.policy, self.datasets, self.models, self.jobs)

    def close(self) -> None:
        self.db.close()
        self.telemetry.close()
