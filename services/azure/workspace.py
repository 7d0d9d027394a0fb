"""The Azure ML workspace behind the same Protocols as the local one.

``AzureWorkspace(ml_client, logs_client, settings)`` is built from clients handed to
it, so any caller decides how they reach Azure::

    from azure.ai.ml import MLClient
    from azure.monitor.query import LogsQueryClient
    ml = MLClient(credential, sub, rg, ws, enable_telemetry=False, transport=my_transport)
    logs = LogsQueryClient(credential, transport=my_transport)
    ws = AzureWorkspace(ml, logs, settings, credential=credential, transport=my_transport)

``credential`` (default: the one ``ml_client`` was built with) and ``transport``
(default: azure-core's requests transport) are used for the few clients the
workspace makes itself: the MLflow / run-history ``PipelineClient``, the blob
``ContainerClient`` of the datastore, and raw ARM PUTs (the training code asset).
``services.workspace.open_workspace("azure://")`` builds real clients from the
settings (``services.azure.config``); ``"azure+replay://"`` builds them on a
``ReplayTransport`` with a fake credential (``services.azure.replay``).

Operations objects, as on the local workspace: ``ws.datasets`` (data assets),
``ws.jobs`` (jobs + MLflow), ``ws.models`` (model registry), ``ws.evaluation``
(candidate vs champion: both fitted models are loaded from the registry and scored on
the candidate's dataset version's held-out split, and the outcome is kept on the
datastore so that the next review of the pair reads one small file — ``AzureEvaluator``;
the evaluation metrics *recorded* at registration are in the model version's properties,
``ModelVersion.metrics``), ``ws.endpoints`` (``services.azure.endpoints``), ``ws.releases`` (the release workflow,
``services.release``, on ``services.azure.release_driver`` and ``services.azure.ledger``),
``ws.notifications`` (``services.azure.outbox``),
``ws.telemetry`` / ``ws.logs`` (``services.azure.telemetry``, when present; else ``None``),
``ws.schedules`` (Azure ML job schedules: ``services.azure.schedules``).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..entities import Comparison, GateDecision, WorkspaceInfo
from ..errors import InvalidInput
from ..evaluation import compare_models
from ..evidence import require_lineage
from ..policy import Policy, load_policy
from .config import AzureSettings
from .datasets import CACHE_TTL_S, AzureDatasets, BlobStore, ReadCache
from .errors import azure_call
from .jobs import AzureJobs
from .mlflow_rest import ARM, MlflowRest, make_client
from .models import AzureModels

ARM_API = "2024-04-01"


EVALUATIONS = "tollgate/evaluations"   # where evaluations are kept on the default datastore
EVALUATION_FORMAT = 1


def evaluation_path(policy: Policy, name: str, version: int, champion_version: int | None, evaluated_on: str) -> str:
    """Where the evaluation of ``name:version`` against ``champion_version`` on ``evaluated_on``
    ("dataset:version") under ``policy``'s split is kept (datastore path)."""
    import hashlib
    import json
    described = {"format": EVALUATION_FORMAT, "target": policy.target,
                 "test_fraction": policy.test_fraction, "seed": policy.split_seed}
    if policy.task != "regression":   # a classifier's split is stratified: another split, another file
        described["task"] = policy.task
    split = json.dumps(described, sort_keys=True)
    digest = hashlib.sha256(split.encode()).hexdigest()[:12]
    vs = f"v{champion_version}" if champion_version is not None else "none"
    dataset, _, dataset_version = evaluated_on.rpartition(":")
    return f"{EVALUATIONS}/{name}/{version}/vs-{vs}-{dataset}-{dataset_version}-{digest}.json"


def evaluation_record(comparison: Comparison) -> bytes:
    """What is kept of a comparison: the held-out rows' actual values and both predictions (a
    classifier's: labels, and the classes with both models' probabilities)."""
    import json
    record = {"format": EVALUATION_FORMAT, "candidate": comparison.candidate.ref,
              "champion": comparison.champion.ref if comparison.champion else None,
              "evaluated_on": comparison.evaluated_on, "actual": list(comparison.actual),
              "candidate_pred": list(comparison.candidate_pred),
              "champion_pred": list(comparison.champion_pred) if comparison.champion_pred is not None else None}
    if comparison.classes:
        record.update(classes=list(comparison.classes), candidate_proba=comparison.candidate_proba,
                      champion_proba=comparison.champion_proba)
    return json.dumps(record, separators=(",", ":")).encode()


class AzureEvaluator:
    """Candidate vs champion on the same held-out rows (``services.evaluation``).

    On Azure an evaluation downloads both fitted models and the candidate's dataset, so its
    outcome is kept: the held-out rows' actual values and both models' predictions go to
    ``tollgate/evaluations/NAME/VERSION/vs-CHAMPION-DATASET-DSVERSION-SPLIT.json`` on the
    default datastore (``SPLIT``: a hash of the target, test fraction and split seed). A
    later ``compare`` of the same pair — on any console — reads that one blob and computes
    the metrics and the gate from it with the current policy, exactly as from the models.
    Model and dataset versions are immutable, so the file never goes stale; a changed split
    names another file. ``AzureReleases.deploy`` writes it for the version it deploys to
    staging (the evidence its reviewers open next); ``compare`` writes it when it had to
    score the models itself. Writing it is best effort: without it, ``compare`` scores."""

    def __init__(self, datasets: AzureDatasets, models: AzureModels, policy: Policy, blobs: BlobStore | None = None):
        self.datasets, self.models, self.policy, self.blobs = datasets, models, policy, blobs

    def _path(self, candidate, champion) -> str:
        return evaluation_path(self.policy, candidate.name, candidate.version,
                               champion.version if champion is not None else None,
                               f"{candidate.dataset}:{candidate.dataset_version}")

    def _recorded(self, path: str) -> dict | None:
        import json
        from ..errors import ServiceError
        try:
            data = json.loads(self.blobs.download(self.blobs.uri(path)))
        except (ServiceError, ValueError):       # not kept (404), or unreadable: score the models
            return None
        return data if isinstance(data, dict) and data.get("format") == EVALUATION_FORMAT else None

    def _keep(self, path: str, comparison: Comparison) -> None:
        from ..errors import ServiceError
        try:
            self.blobs.upload(path, evaluation_record(comparison))
        except ServiceError:
            pass  # best effort: the next compare scores the models again

    def _rescored(self, kept: dict, candidate, champion, evaluated_on: str) -> Comparison:
        """The comparison from kept predictions: metrics and gate as ``services.evaluation.score_pair``."""
        import numpy as np
        from ..evaluation import proba_rows, task_metrics
        from ..gate import decide
        task = self.policy.task
        classes = tuple(kept.get("classes") or ())

        def proba(key: str):
            return np.asarray(kept[key], dtype=float) if kept.get(key) is not None else None

        actual = np.asarray(kept["actual"], dtype=float)
        cand_pred = np.asarray(kept["candidate_pred"], dtype=float)
        cand_proba = proba("candidate_proba")
        cand_metrics = task_metrics(task, actual, cand_pred, cand_proba, classes)
        champ_pred, champ_proba, champ_metrics = None, None, {}
        if champion is not None and kept.get("champion_pred") is not None:
            champ_pred, champ_proba = np.asarray(kept["champion_pred"], dtype=float), proba("champion_proba")
            champ_metrics = task_metrics(task, actual, champ_pred, champ_proba, classes)
        compared = champion is not None and champion.ref != candidate.ref
        gate = decide(cand_metrics, champ_metrics if compared else None, self.policy,
                      champion_ref=champion.ref if champion else None, evaluated_on=evaluated_on)
        return Comparison(candidate=candidate, champion=champion, evaluated_on=evaluated_on,
                          candidate_metrics=cand_metrics, champion_metrics=champ_metrics, gate=gate,
                          actual=tuple(actual.tolist()), candidate_pred=tuple(cand_pred.tolist()),
                          champion_pred=tuple(champ_pred.tolist()) if champ_pred is not None else None,
                          task=task, classes=classes, candidate_proba=proba_rows(cand_proba),
                          champion_proba=proba_rows(champ_proba))

    def compare(self, name: str, version: int, champion_version: int | None = None) -> Comparison:
        candidate = self.models.get(name, version)
        champion = (self.models.get(name, champion_version) if champion_version is not None
                    else self.models.champion(name))
        require_lineage(candidate)
        evaluated_on = f"{candidate.dataset}:{candidate.dataset_version}"
        path = self._path(candidate, champion) if self.blobs is not None else None
        kept = self._recorded(path) if path else None
        if kept is not None:
            return self._rescored(kept, candidate, champion, evaluated_on)
        frame = self.datasets.load(candidate.dataset, candidate.dataset_version)
        comparison = compare_models(frame, evaluated_on, self.policy,
                                    candidate, self.models.load(name, candidate.version),
                                    champion, self.models.load(name, champion.version) if champion else None)
        if path:
            self._keep(path, comparison)
        return comparison

    def gate(self, name: str, version: int) -> GateDecision:
        return self.compare(name, version).gate


class _Lazy:
    """Stands for an object built on first attribute access."""

    def __init__(self, factory):
        self._factory, self._obj, self._lock = factory, None, threading.Lock()

    def __getattr__(self, name: str):
        with self._lock:
            if self._obj is None:
                self._obj = self._factory()
        return getattr(self._obj, name)


class _LockOf:
    """The workspace's ``OperationLocks``, made with the audit trail on first use."""

    def __init__(self, ws: "AzureWorkspace"):
        self._ws = ws

    def hold(self, *args, **kwargs):
        self._ws._trail()
        return self._ws.locks.hold(*args, **kwargs)


class AzureWorkspace:
    """``ws.datasets``, ``ws.jobs``, ``ws.models``, ``ws.evaluation`` (and endpoints, releases,
    telemetry, logs) of one Azure ML workspace. See the module docstring."""

    def __init__(self, ml_client: Any, logs_client: Any, settings: AzureSettings, *,
                 credential: Any = None, transport: Any = None, policy: Policy | None = None,
                 uri: str | None = None, policy_folder: Path | None = None):
        self.ml, self.logs_client, self.settings = ml_client, logs_client, settings
        self.credential = credential if credential is not None else getattr(ml_client, "_credential", None)
        self.transport = transport
        self.policy = policy or load_policy(*(p for p in [policy_folder, Path.cwd()] if p is not None))
        self.info = WorkspaceInfo(uri=uri or "azure://", kind="azure", description=settings.description)
        self._lock = threading.Lock()
        self._mlflow: MlflowRest | None = None
        self._arm = None

        self.blobs = BlobStore(ml_client, settings, self.credential, transport)
        self.audit_trail = None
        self.locks = None
        self.audit = _Lazy(self._trail)  # ``AuditLog``: the shared trail, opened on first use
        audit = self._make_audit()
        self.cache = ReadCache(float((settings.extra or {}).get("cache_ttl_s", CACHE_TTL_S)))
        self.datasets = AzureDatasets(ml_client, self.blobs, self.policy, audit=audit, cache=self.cache)
        self.models = AzureModels(ml_client, self.blobs, self.policy, audit=audit, cache=self.cache,
                                  serving=self._serving)
        self.jobs = AzureJobs(ml_client, self.mlflow_client, self.datasets, self.blobs, settings, self.policy,
                              arm=self.arm_put, audit=audit, cache=self.cache)
        self.evaluation = AzureEvaluator(self.datasets, self.models, self.policy, self.blobs)
        self._wire_online()
        from .schedules import AzureSchedules
        self.schedules = AzureSchedules(ml_client, self.policy, self.datasets, self.models, self.jobs,
                                        audit=audit, locks=_LockOf(self), trail=self._trail)

    # --- the clients the workspace makes itself ---------------------------------------

    def mlflow_client(self, tracking_uri: str | None = None) -> MlflowRest:
        """The MLflow REST client, made once: from ``tracking_uri`` when given and it names this
        workspace (a job's ``services.Tracking.endpoint``, as Azure ML lists it with every job:
        no request), else from the workspace's ``mlflow_tracking_uri`` (one workspace GET)."""
        with self._lock:
            if self._mlflow is None:
                uri = tracking_uri.rstrip("?") if tracking_uri and self._names_workspace(tracking_uri) else None
                if uri is None:
                    with azure_call(f"read workspace {self.settings.workspace_name!r}"):
                        ws = self.ml.workspaces.get(self.settings.workspace_name)
                    uri = getattr(ws, "mlflow_tracking_uri", None)
                if not uri:
                    raise InvalidInput(f"workspace {self.settings.workspace_name!r} has no MLflow tracking URI")
                self._mlflow = MlflowRest(uri, self.credential, self.transport)
            return self._mlflow

    def _names_workspace(self, tracking_uri: str) -> bool:
        """Whether an MLflow tracking URI is this workspace's (``…/mlflow/v1.0/subscriptions/…/workspaces/NAME``)."""
        from urllib.parse import urlsplit
        path = urlsplit(tracking_uri.rstrip("?").replace("azureml://", "https://", 1)).path
        return path.lower().rstrip("/") == ("/mlflow/v1.0" + self.settings.workspace_scope).lower()

    def arm_put(self, path: str, body: dict) -> dict:
        """PUT an ARM resource by its id (for what azure-ai-ml only does with a local upload)."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        if self._arm is None:
            self._arm = make_client(ARM, self.credential, self.transport)
        resp = self._arm.send_request(HttpRequest("PUT", f"{ARM}{path}", params={"api-version": ARM_API}, json=body))
        if resp.status_code >= 400:
            raise HttpResponseError(message=resp.text()[:300], response=resp)
        return resp.json() if resp.content else {}

    def _audit_container(self):
        """The ``tollgate-audit`` container of the default datastore's storage account
        (made on first use: opening the workspace sends no request)."""
        return _Lazy(self._make_audit_container)

    def _make_audit_container(self):
        from azure.storage.blob import ContainerClient
        kwargs = {"transport": self.transport} if self.transport is not None else {}
        url = self.settings.extra.get("audit_container_url") if self.settings.extra else None
        if url:
            return ContainerClient.from_container_url(url, credential=self.credential, **kwargs)
        store = self.blobs._container(self.settings.datastore)
        account_url = store.url.rsplit("/", 1)[0]
        return ContainerClient(account_url, self.settings.extra.get("audit_container", "tollgate-audit")
                               if self.settings.extra else "tollgate-audit", credential=self.credential, **kwargs)

    def _make_audit(self):
        """The shared audit trail's ``record`` (``services.azure.audit.BlobAudit``), built lazily."""
        try:
            from .audit import BlobAudit, OperationLocks  # noqa: F401
        except ImportError:
            return None

        def record(actor: str, action: str, target: str, **kw: Any) -> None:
            trail = self._trail()
            if trail is not None:
                trail.record(actor, action, target, **kw)
        return record

    def _trail(self):
        with self._lock:
            if self.audit_trail is None:
                from .audit import BlobAudit, OperationLocks
                container = self._audit_container()
                self.audit_trail, self.locks = BlobAudit(container), OperationLocks(container)
            return self.audit_trail

    def _wire_online(self) -> None:
        """Endpoints, the release workflow on them (ARM driver, ledger on tags and blobs),
        notifications, telemetry and logs (Log Analytics)."""
        from ..release import ReleaseWorkflow
        from .endpoints import AzureEndpoints
        from .ledger import AzureLedger
        from .outbox import AzureNotifications
        from .release_driver import AzureEndpointDriver
        from .telemetry import AzureLogs, AzureTelemetry
        kwargs = {"transport": self.transport} if self.transport is not None else {}
        extra = self.settings.extra or {}
        self.endpoints = AzureEndpoints(self.ml, self.policy, credential=self.credential, **kwargs)
        self._trail()
        driver = AzureEndpointDriver(self.ml, self.endpoints, deployment_template=extra.get("deployment"))
        self.releases = ReleaseWorkflow(self.policy, self.models, self.datasets, self.evaluation, driver,
                                        AzureLedger(self.models, self.audit_trail, self.locks),
                                        after_staging=self._keep_evaluation)
        self.notifications = AzureNotifications(self.audit_trail, self.locks, self.blobs, self.policy)
        ws_id = self.settings.log_analytics_workspace_id
        kw = {k: extra[k] for k in ("source",) if extra.get(k)}
        self.telemetry = AzureTelemetry(self.logs_client, ws_id, self.endpoints, **kw,
                                        collect_inputs=str(extra.get("collect_inputs", "")).lower() in ("1", "true"))
        self.logs = AzureLogs(self.logs_client, ws_id, self.endpoints, **kw)

    def _serving(self, name: str, version: int) -> list[str]:
        """The endpoints whose traffic ``name:version`` takes (the registry refuses to archive it)."""
        return sorted({ep.name for ep in self.endpoints.list() for d in ep.deployments
                       if d.model_name == name and d.model_version == version and d.traffic > 0})

    def _keep_evaluation(self, mv) -> None:
        """After a deploy to staging: evaluate the candidate against the champion now, while its
        model and data are in memory from the smoke test. The evaluation is kept
        (``AzureEvaluator``), so the reviewers' Releases page and the approve/promote gates read
        one small file. Best effort: a failure leaves the deploy as it is (the gate scores then)."""
        from ..errors import ServiceError
        try:
            self.evaluation.compare(mv.name, mv.version)
        except ServiceError:
            pass

    def close(self) -> None:
        for client in (self.ml, self.logs_client):
            close = getattr(client, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # closing must not raise
                    pass


REPLAY_SCHEME = "azure+replay"


def open_azure(uri: str) -> AzureWorkspace:
    """``azure://`` (settings from config.json / environment / secrets.toml; ``azure://SUB/RG/WS``
    names the workspace in the URI) or ``azure+replay://[FIXTURE_DIR]`` (the demo workspace
    replayed through the real SDKs; default ``services/azure/fixtures``; ``azure+replay://real``
    the bodies the Azure SDK team recorded against real Azure, ``services/azure/fixtures/real``)."""
    scheme, _, rest = uri.partition("://")
    if scheme == REPLAY_SCHEME:
        from .replay.fixtures import fixture_folder
        return open_replay(fixture_folder(rest), uri=uri)
    from .config import load_settings, open_real
    overrides = {}
    if rest:
        parts = [p for p in rest.split("/") if p]
        if len(parts) != 3:
            raise InvalidInput(f"{uri!r}: expected azure:// or azure://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE")
        overrides = dict(zip(("subscription_id", "resource_group", "workspace_name"), parts))
    settings = load_settings(overrides=overrides)
    ml, logs, credential = open_real(settings)
    return AzureWorkspace(ml, logs, settings, credential=credential, uri=uri)


def open_replay(folder: Path | None = None, *, uri: str | None = None, transport: Any = None,
                policy: Policy | None = None) -> AzureWorkspace:
    """The replayed workspace: ``MLClient`` and ``LogsQueryClient`` on a ``ReplayTransport``
    loaded from ``folder`` (default ``services/azure/fixtures``), with a ``FakeCredential``.
    The transport is ``ws.replay`` (its ``calls`` count the HTTP requests)."""
    from azure.ai.ml import MLClient
    from azure.monitor.query import LogsQueryClient
    from .replay import FIXTURES, FakeCredential, ReplayTransport
    if folder is None and transport is not None:
        folder = getattr(transport, "folder", None)
    folder = Path(folder) if folder else FIXTURES
    if transport is None:
        transport = ReplayTransport(folder)
        try:
            from .replay.online import install_online
        except ImportError:
            pass
        else:
            online = folder / "online"
            install_online(transport, online if online.is_dir() else None)
            _seed_registry_audit(transport, folder / "audit.jsonl")
    if getattr(transport, "schedules", None) is None:
        from .replay.schedules import install_schedules
        install_schedules(transport)
    known = {f for f in AzureSettings.__dataclass_fields__} - {"extra"}
    settings = AzureSettings(**{k: v for k, v in transport.settings.items() if k in known},
                             extra={k: v for k, v in transport.settings.items() if k not in known},
                             source=f"replay fixtures {folder}")
    credential = FakeCredential()
    # azure-ai-ml reads the tenant for Studio links from the token as a JWT; the replay's token is
    # not one, and the SDK says so at INFO level for every job it lists
    import logging
    logging.getLogger("azure.ai.ml.operations._job_operations").setLevel(logging.WARNING)
    ml = MLClient(credential, settings.subscription_id, settings.resource_group, settings.workspace_name,
                  transport=transport, enable_telemetry=False)
    logs = LogsQueryClient(credential, transport=transport)
    policy_folder = folder if (folder / "tollgate.toml").is_file() else None
    ws = AzureWorkspace(ml, logs, settings, credential=credential, transport=transport, policy=policy,
                        uri=uri or f"{REPLAY_SCHEME}://{folder}", policy_folder=policy_folder)
    ws.replay = transport  # type: ignore[attr-defined]
    return ws


def _seed_registry_audit(transport: Any, path: Path) -> None:
    """Merge the fixtures' registry records (dataset/model/run) into the replayed audit trail,
    in time order, before the online fixtures' release records."""
    store = getattr(getattr(transport, "online", None), "audit", None)
    if store is None or not path.is_file():
        return
    import json
    name = "audit/000000.jsonl"
    existing = bytes(store.blobs.get(f"/{store.container}/{name}", b""))
    lines = [ln for ln in path.read_bytes().splitlines() + existing.splitlines() if ln.strip()]
    lines.sort(key=lambda ln: json.loads(ln)["at"])
    store.seed(name, b"".join(ln + b"\n" for ln in lines))
