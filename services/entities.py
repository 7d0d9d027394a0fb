"""What the services return: our own frozen dataclasses.

No SQLite row, Azure entity or poller ever reaches a page; every backend converts
to these in one module of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Mapping


# --- datasets ---------------------------------------------------------------

class CheckStatus(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @staticmethod
    def worst(statuses) -> "CheckStatus":
        order = [CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL]
        return max((CheckStatus(s) for s in statuses), key=order.index, default=CheckStatus.PASS)


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    dtype: str
    missing: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class DataTestResult:
    """One check of a dataset version against its baseline (the previous version)."""
    check: str              # schema | missing | range | shift_mean | psi | rows
    column: str | None      # the column the check is about (None for table-level checks)
    status: CheckStatus
    detail: str             # human-readable: what was found and against what
    value: float | None = None       # the measured statistic (e.g. PSI, sigma distance)
    threshold: float | None = None   # the limit it was compared with


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int | str                 # text when Azure says so ("foo"): services.versions
    created_at: datetime
    created_by: str
    description: str
    source: str                        # original file name
    format: str                        # csv | parquet
    rows: int
    columns: tuple[ColumnProfile, ...]
    baseline_version: int | str | None  # what the data tests compared against
    tests_status: CheckStatus          # worst of the data tests
    sha256: str = ""
    uri: str = ""                      # where the data lives (path or azureml:// URI)
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: str = "uri_file"             # Azure ML data type: uri_file | uri_folder | mltable
    tested: bool = True                # False: registered outside Tollgate, never profiled nor tested
    unreadable: str = ""               # why Tollgate cannot read this version's data ("" when it can)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class DatasetCheck:
    """A file tested against a dataset's latest passing version without registering it
    (``DatasetStore.check``): what registering it would record, nothing written."""
    name: str
    source: str                        # the file's name
    format: str                        # csv | parquet
    rows: int
    columns: tuple[ColumnProfile, ...]
    baseline_version: int | None       # the version it was compared with (None: no passing version)
    tests: tuple[DataTestResult, ...]

    @property
    def status(self) -> CheckStatus:
        return CheckStatus.worst(t.status for t in self.tests)


# --- runs -------------------------------------------------------------------

@dataclass(frozen=True)
class Provenance:
    """Where a run's model came from: who asked for it, which code and which environment
    trained it. Recorded with the run and copied to the model version it registers."""
    requested_by: str                  # the actor of the submit (``tollgate-system`` for a schedule or trigger)
    trigger: str | None = None         # what fired it when no person did: "schedule #3 due …", "new version d:4"
    code_commit: str | None = None     # git commit of the training code, when it is in a repository
    code_dirty: bool | None = None     # uncommitted changes to the training code at that commit
    code_sha256: str | None = None     # content hash of the training code files (always, git or not)
    python: str | None = None          # the Python version it trained with
    packages: Mapping[str, str] = field(default_factory=dict)  # the model's packages: name -> version
    environment: str | None = None     # where the full package list is (an artifact, an Azure ML environment)

    @property
    def code_version(self) -> str:
        """``git 1a2b3c4d5e6f`` (``+ uncommitted changes``), else ``sha256 …`` of the files; "" if unknown."""
        if self.code_commit:
            return f"git {self.code_commit[:12]}" + (" + uncommitted changes" if self.code_dirty else "")
        return f"sha256 {self.code_sha256[:12]}" if self.code_sha256 else ""

class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


@dataclass(frozen=True)
class TrainingSpec:
    """What to train: the input of ``JobStore.submit`` (who asks for it is ``submit``'s ``actor``)."""
    dataset: str                       # dataset name
    dataset_version: int | None = None  # None = the latest passing version with labels
    estimator: str = "ridge"
    params: Mapping[str, Any] = field(default_factory=dict)
    experiment: str = "diabetes-retrain"
    display_name: str | None = None
    register: bool = True              # register the model if it passes the gate
    trigger: str | None = None         # what started it when no person did (a schedule, a new dataset version)


@dataclass(frozen=True)
class GateCheck:
    metric: str
    direction: str                     # lower | higher (which is better)
    candidate: float | None
    champion: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...]
    checks: tuple[GateCheck, ...] = ()
    champion: str | None = None        # "name:version" compared against, None when there is none
    evaluated_on: str | None = None    # "dataset:version" whose held-out split was used

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "champion": self.champion,
            "evaluated_on": self.evaluated_on,
            "checks": [c.__dict__ for c in self.checks],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "GateDecision":
        return GateDecision(
            passed=bool(d["passed"]),
            reasons=tuple(d.get("reasons", ())),
            checks=tuple(GateCheck(**c) for c in d.get("checks", ())),
            champion=d.get("champion"),
            evaluated_on=d.get("evaluated_on"),
        )


@dataclass(frozen=True)
class Run:
    id: str
    experiment: str
    display_name: str
    status: RunStatus
    estimator: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]       # final values
    dataset: str
    dataset_version: int | None
    created_at: datetime
    created_by: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None           # readable reason of a failure
    step: str | None = None            # current / last pipeline step
    gate: GateDecision | None = None
    model_name: str | None = None      # registered model, if any
    model_version: int | None = None
    provenance: Provenance | None = None  # None: not recorded (a run from before provenance)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or datetime.now(self.started_at.tzinfo)
        return (end - self.started_at).total_seconds()


@dataclass(frozen=True)
class MetricPoint:
    key: str
    step: int
    value: float
    timestamp: datetime


COMPARISONS = ("<", "<=", ">", ">=", "=", "!=")


@dataclass(frozen=True)
class Condition:
    """One condition on a run's final metric or parameter, as MLflow's search filter says it
    (``metrics.rmse < 55``, ``params.alpha = 1``): a number compares with numbers, a text
    only with texts (``=``/``!=``); a run without the key does not match.
    ``services.run_search.parse_condition`` reads one from text."""
    key: str
    op: str                              # one of COMPARISONS
    value: float | str


@dataclass(frozen=True)
class RunFilter:
    status: tuple[RunStatus, ...] = ()
    experiment: str | None = None
    dataset: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    estimators: tuple[str, ...] = ()     # any of these
    metrics: tuple[Condition, ...] = ()  # all of these, on the final metrics
    params: tuple[Condition, ...] = ()   # all of these, on the parameters
    offset: int = 0                      # skip this many of the newest matches (paging)


# --- models -----------------------------------------------------------------

@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int | str                 # text when Azure says so: services.versions
    created_at: datetime
    created_by: str
    description: str
    estimator: str
    metrics: Mapping[str, float]
    run_id: str | None
    dataset: str | None
    dataset_version: int | str | None
    tags: Mapping[str, str]
    aliases: tuple[str, ...] = ()
    archived: bool = False
    uri: str = ""
    azure_stage: str = ""              # Azure ML's own stage field (Development, Production, Archived…): services.stages
    model_type: str = ""               # Azure ML model type: custom_model | mlflow_model | triton_model
    provenance: Provenance | None = None  # copied from the run that trained it

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def is_champion(self) -> bool:
        return "champion" in self.aliases


@dataclass(frozen=True)
class Comparison:
    """A candidate against the champion, both scored on the same evaluation data."""
    candidate: ModelVersion
    champion: ModelVersion | None
    evaluated_on: str                  # "dataset:version (held-out split)"
    candidate_metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float]
    gate: GateDecision
    # rows of the evaluation split: actual, candidate, champion (None without a champion); a
    # classifier's labels are its predictions
    actual: tuple[float, ...] = ()
    candidate_pred: tuple[float, ...] = ()
    champion_pred: tuple[float, ...] | None = None
    task: str = "regression"           # regression | binary | multiclass (services.metrics)
    # a classifier's: the class labels, and each model's probabilities per row in that order
    # (None: the model has no predict_proba)
    classes: tuple[float, ...] = ()
    candidate_proba: tuple[tuple[float, ...], ...] | None = None
    champion_proba: tuple[tuple[float, ...], ...] | None = None


# --- endpoints, releases, telemetry (implemented by later issues) -------------

@dataclass(frozen=True)
class Deployment:
    name: str
    endpoint: str
    model_name: str
    model_version: int
    state: str                         # starting | healthy | unhealthy | failed | stopped
    traffic: int                       # percent
    created_at: datetime | None = None
    created_by: str = ""
    restarts: int = 0
    last_error: str | None = None
    provisioning_state: str = ""       # the cloud's own state (Creating, Updating, Scaling, Failed, Deleting…)
    compute: str = ""                  # managed | kubernetes
    instance_type: str = ""            # e.g. Standard_DS3_v2
    instance_count: int | None = None
    model_source: str = ""             # what it serves when not a workspace model: "registry …", "anonymous model"

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"


@dataclass(frozen=True)
class Endpoint:
    name: str                          # e.g. staging | production
    scoring_uri: str
    deployments: tuple[Deployment, ...]
    auth_mode: str = "key"
    primary_key_masked: str = ""
    secondary_key_masked: str = ""
    gateway_up: bool = False
    provisioning_state: str = ""       # the cloud's own state (Creating, Updating, Failed, Deleting…)
    compute: str = ""                  # managed | kubernetes
    provisioning_error: str = ""       # why provisioning failed, as the cloud says (when Failed)

    @property
    def traffic(self) -> dict[str, int]:
        return {d.name: d.traffic for d in self.deployments}

    @property
    def live(self) -> Deployment | None:
        """The deployment with the most traffic (the one serving), if any."""
        serving = [d for d in self.deployments if d.traffic > 0]
        return max(serving, key=lambda d: d.traffic) if serving else None


@dataclass(frozen=True)
class ScoreResult:
    """One request sent to an endpoint (the console's Test panel, the smoke test)."""
    status: int
    body: Any
    latency_ms: float
    request_id: str | None
    deployment: str | None
    model: str | None


@dataclass(frozen=True)
class SmokeCase:
    name: str
    passed: bool
    status: int
    expected: float | None
    got: float | None
    detail: str


@dataclass(frozen=True)
class LatencyEvidence:
    """The smoke test's latency measurement: the same requests sent at the same rate to the
    new deployment and to the one serving now, interleaved (``services.release.smoke``)."""
    requests: int                      # sent to each side
    candidate_p50_ms: float | None
    candidate_p95_ms: float | None
    live_deployment: str | None = None  # None when nothing served the endpoint to compare with
    live_p50_ms: float | None = None
    live_p95_ms: float | None = None
    candidate_failures: int = 0        # latency requests the new deployment did not answer with 2xx
    limit_p95_ms: float | None = None  # the [gate] latency limit that applied (None: not judged)
    passed: bool = True
    reason: str = ""                   # what was judged, in words

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None) -> "LatencyEvidence | None":
        return LatencyEvidence(**d) if d else None


@dataclass(frozen=True)
class SmokeTestResult:
    id: int
    endpoint: str
    deployment: str
    model_name: str
    model_version: int
    at: datetime
    actor: str
    passed: bool
    summary: str
    cases: tuple[SmokeCase, ...]
    latency: LatencyEvidence | None = None


class Stage(str, Enum):
    REGISTERED = "registered"
    STAGING = "staging"                      # deployed to staging, smoke test not passed (yet)
    AWAITING_APPROVAL = "awaiting_approval"  # smoke test passed in staging
    APPROVED = "approved"
    REJECTED = "rejected"
    PRODUCTION = "production"
    RETIRED = "retired"                      # was production, replaced by a promote
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class ReleaseState:
    model_name: str
    model_version: int
    stage: Stage
    deployed_by: str | None = None
    decided_by: str | None = None
    decision_comment: str | None = None
    smoke_test_id: int | None = None
    updated_at: datetime | None = None
    approved_against: str | None = None   # "name:version" of the champion when it was approved

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"


@dataclass(frozen=True)
class StageChange:
    model_name: str
    model_version: int
    before: Stage
    after: Stage

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"


@dataclass(frozen=True)
class Plan:
    """What a release action will change, computed by the release workflow before anything
    happens (``ws.releases.plan_…``). The console's confirmation and the CLI's ``--dry-run``
    show it; the action, given the plan, executes exactly it and refuses (``Conflict``) when the
    endpoint or the version's stage changed since it was computed (``basis``)."""
    action: str                        # deploy | smoke_test | approve | reject | promote | canary |
                                       # rollback | traffic | regenerate_key
    title: str
    changes: tuple[str, ...]           # what will change, one plain-text line each
    model_name: str | None = None
    model_version: int | None = None
    env: str | None = None
    strategy: str | None = None        # promote: blue_green | canary
    deployment: str | None = None      # the deployment created, tested or given the traffic
    replaced: str | None = None        # "name:version" of the warm deployment the new one replaces
    traffic_before: Mapping[str, int] = field(default_factory=dict)
    traffic_after: Mapping[str, int] = field(default_factory=dict)
    stages: tuple[StageChange, ...] = ()
    champion_after: str | None = None  # where the champion alias points afterwards, if it moves
    on_failure: str = ""
    warnings: tuple[str, ...] = ()
    refused: str | None = None         # why the action would be refused now; None when it can run
    comment: str = "none"              # none | optional | required
    steps: tuple[str, ...] = ()        # the progress steps it reports, in order
    basis: str = ""                    # fingerprint of the endpoint and stage it was computed from
    key: str | None = None             # regenerate_key: primary | secondary

    @property
    def ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"

    @property
    def long(self) -> bool:
        """Runs for seconds to minutes and reports its steps as it goes."""
        return bool(self.steps)


@dataclass(frozen=True)
class ProgressStep:
    """One step of a long release operation, reported when it starts and when it ends."""
    key: str                           # created | healthy | smoke_test | traffic | warm | lro | …
    label: str                         # in words: "deployment green (diabetes-regressor:3) created at 0 %"
    state: str                         # running | done | failed
    started_at: datetime
    seconds: float | None = None       # how long it took (when done or failed)
    detail: str = ""                   # e.g. Azure's provisioning status while it runs


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    comment: str = ""


# What a backend can do beyond the Protocols' common ground (``WorkspaceInfo.capabilities``).
# Pages and the CLI read these instead of probing objects; a backend raises ``Unsupported``
# for what it does not declare.
ENDPOINT_PROCESSES = "endpoint_processes"   # up/down start and stop endpoint processes on this machine
GATEWAY_LOG = "gateway_log"                 # an endpoint gateway's own log (EndpointService.gateway_log)
SCHEDULER_PROCESS = "scheduler_process"     # schedules fire from a local process: start/stop/tick it
SUPERVISED_ROLLOUTS = "supervised_rollouts"  # a supervisor advances canaries and delivers notifications;
                                            # without it, `canary start --wait` or `tollgate.py agent` does
AUTO_STAGE = "auto_stage"                   # what completes a training run and registers its version can
                                            # deploy it to staging by itself ([release] auto_stage)


@dataclass(frozen=True)
class WorkspaceInfo:
    uri: str
    kind: str                          # local | azure
    description: str                   # human-readable: path or subscription/workspace
    capabilities: frozenset[str] = frozenset()

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


# --- telemetry, logs, health (monitoring) -------------------------------------

@dataclass(frozen=True)
class TimeWindow:
    """A query window ``[start, end)`` in UTC and the bin size of its time series."""
    start: datetime
    end: datetime
    bin_seconds: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class VersionStats:
    """Requests served by one model version (through one deployment) in a window.

    ``failures`` are server-side failures (5xx and connection errors, status 0):
    the service's fault. ``client_errors`` (4xx) are the caller's, counted apart.
    """
    endpoint: str
    deployment: str | None
    model: str | None                  # "name:version"
    requests: int
    failures: int
    client_errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class RequestRecord:
    """One request as a gateway saw it."""
    ts: datetime
    endpoint: str
    deployment: str | None
    model: str | None
    status: int                        # 0 = no answer from any deployment
    latency_ms: float                  # from the whole request received to the answer
    request_id: str                    # the endpoint's own id (x-request-id of the answer), unique
    request_body: str | None = None
    response_body: str | None = None
    error: str | None = None
    client_request_id: str | None = None  # the client's id (x-ms-client-request-id / x-request-id): may repeat
    upload_ms: float | None = None     # receiving the request body, apart from latency (slow clients)
    payload_captured: bool = True      # False: the payloads were not kept (sampled out by the capture fraction)


@dataclass(frozen=True)
class ErrorGroup:
    """Failed requests grouped by their error message."""
    message: str
    status: int
    count: int
    first_seen: datetime
    last_seen: datetime
    models: tuple[str, ...]
    sample_request_id: str


@dataclass(frozen=True)
class LogLine:
    at: datetime | None                # None for a line without a time stamp (continuation lines)
    source: str                        # deployment name, or "gateway"
    text: str


@dataclass(frozen=True)
class RequestDetail:
    """Request lookup: the record and the log lines of that request."""
    record: RequestRecord
    log_lines: tuple[LogLine, ...]     # lines carrying the request id, then the deployment's lines during it


class HealthStatus(str, Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    IDLE = "idle"                      # up, but no requests in the window to judge by


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: str
    status: HealthStatus
    reasons: tuple[str, ...]           # each rule that did not hold, in words
    window_minutes: int
    requests: int
    failure_rate: float
    p95_ms: float | None
    deployments_up: int
    deployments_total: int


# --- retraining triggers and schedules (continuous delivery) -------------------

@dataclass(frozen=True)
class Firing:
    """One decision to start a retraining run, recorded once: a schedule fires each cron
    occurrence (``due_at``) at most once; a dataset trigger fires each new version at most once."""
    id: int
    kind: str                          # schedule | dataset
    dataset: str
    schedule_id: int | None            # the schedule that fired (kind == "schedule")
    due_at: datetime | None            # the cron occurrence (UTC) that fired; None for a dataset trigger
    dataset_version: int | None        # the new version (dataset trigger) or the version trained (schedule)
    estimator: str
    params: Mapping[str, Any]
    fired_at: datetime                 # when the scheduler decided to fire
    run_id: str | None                 # None until the run is submitted, or when it could not be
    error: str | None = None           # why no run was started
    skipped: int = 0                   # earlier missed occurrences folded into this one (catch-up)

    @property
    def target(self) -> str:
        return f"schedule #{self.schedule_id}" if self.kind == "schedule" else f"{self.dataset}:{self.dataset_version}"


@dataclass(frozen=True)
class Schedule:
    """Retrain ``dataset`` (its latest version) with ``estimator``/``params`` at every
    occurrence of ``cron`` (five fields, UTC)."""
    id: int
    dataset: str
    estimator: str
    params: Mapping[str, Any]
    cron: str
    enabled: bool
    created_at: datetime
    created_by: str
    active_since: datetime             # occurrences before this (creation or last enable) never fire
    next_fire_at: tuple[datetime, ...] = ()   # the next occurrences; empty when disabled
    last_firing: Firing | None = None


@dataclass(frozen=True)
class DatasetTrigger:
    """Retrain on every new version of ``dataset`` registered after ``since_version``."""
    dataset: str
    enabled: bool
    estimator: str
    params: Mapping[str, Any]
    since_version: int                 # versions after this one start a run (the latest when turned on)
    updated_at: datetime
    updated_by: str
    last_firing: Firing | None = None


@dataclass(frozen=True)
class SchedulerStatus:
    """Whether the process that fires schedules and triggers runs (local: ``services.local.scheduler``)."""
    running: bool
    pid: int | None = None
    last_tick_at: datetime | None = None
    detail: str = ""
