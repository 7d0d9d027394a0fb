"""The local workspace: one folder with ``tollgate.db`` and the artifacts."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..entities import AUTO_STAGE, ENDPOINT_PROCESSES, GATEWAY_LOG, SCHEDULER_PROCESS, SUPERVISED_ROLLOUTS, \
    WorkspaceInfo
from ..errors import ServiceError
from ..permissions import SYSTEM_ACTOR
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
from .paths import make_private
from .release_driver import LocalEndpointDriver
from .schedules import LocalSchedules
from .logs import LocalLogs
from .telemetry import LocalTelemetry

DB_FILE = "tollgate.db"
# AUTO_STAGE: the runner that registers a run's version deploys it (services.local.runner)
CAPABILITIES = frozenset({ENDPOINT_PROCESSES, GATEWAY_LOG, SCHEDULER_PROCESS, SUPERVISED_ROLLOUTS, AUTO_STAGE})


class LocalWorkspace:
    """``ws.datasets``, ``ws.jobs``, ``ws.models``, ``ws.evaluation``, ``ws.endpoints``, ``ws.releases``
    (the release workflow on this folder's processes and SQLite), ``ws.notifications``,
    ``ws.telemetry``, ``ws.logs``, ``ws.schedules`` over one folder."""

    def __init__(self, root: Path, policy: Policy | None = None):
        self.root = Path(root).resolve()
        make_private(self.root)
        self.policy = policy or load_policy(self.root)
        self.db = Database(self.root / DB_FILE)
        self.info = WorkspaceInfo(uri=f"local://{self.root}", kind="local", description=str(self.root),
                                  capabilities=CAPABILITIES)
        self.audit = LocalAudit(self.db)
        if policy is None:
            self._audit_folder_policy()
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

    def _audit_folder_policy(self) -> None:
        """A ``tollgate.toml`` in the workspace folder replaces the project's policy (roles, gate,
        canary…) for this workspace: kept (a workspace per team or per model needs its own rules),
        but never silently: the audit trail says when it takes effect and each time it changes
        (by its SHA-256), and when the workspace goes back to the project's file."""
        source = Path(self.policy.source)
        here = source.parent == self.root and source.is_file()
        after = ({"policy": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()} if here
                 else {"policy": self.policy.source})
        try:
            self.audit.record_once(SYSTEM_ACTOR, "policy.in_effect", str(self.root), role="system", after=after,
                                   comment=("the workspace folder's tollgate.toml replaces the project's policy"
                                            if here else "back to the project's policy"), usual=not here)
        except ServiceError:   # a workspace locked by a writer: the next start says it
            pass

    def close(self) -> None:
        self.db.close()
        self.telemetry.close()
