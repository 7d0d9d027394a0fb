"""The service interface: one ``typing.Protocol`` per capability.

These docstrings are the documentation of the contract. Every backend
(``services.local``, ``services.azure``) implements them with classes of its own
and no shared base class; the contract test suite (``tests/contract``) runs
against each. Methods raise only ``services.errors.ServiceError`` subclasses.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import pandas as pd

from .entities import (
    AuditRecord,
    Comparison,
    DataTestResult,
    DatasetCheck,
    DatasetTrigger,
    DatasetVersion,
    Endpoint,
    ErrorGroup,
    Firing,
    GateDecision,
    LogLine,
    MetricPoint,
    ModelVersion,
    Plan,
    ProgressStep,
    ReleaseState,
    RequestDetail,
    RequestRecord,
    Run,
    RunFilter,
    Schedule,
    SchedulerStatus,
    ScoreResult,
    SmokeTestResult,
    TimeWindow,
    TrainingSpec,
    VersionStats,
    WorkspaceInfo,
)
from .canary import Decision, Rollout
from .notify import Delivery, Event
from .policy import Policy

Listener = Callable[[ProgressStep], None]


@runtime_checkable
class DatasetStore(Protocol):
    """Versioned, immutable tabular data assets (Azure ML: data assets)."""

    def names(self) -> list[str]:
        """Dataset names, sorted."""

    def versions(self, name: str) -> list[DatasetVersion]:
        """All versions of ``name``, newest first. ``NotFound`` if the name is unknown."""

    def all_versions(self) -> list[DatasetVersion]:
        """Every version of every dataset, newest first."""

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        """One version (``None`` = the newest, whatever its data tests said). ``NotFound`` if missing."""

    def latest_passing(self, name: str, *, labelled: bool = False) -> DatasetVersion | None:
        """The newest version whose data tests did not fail (pass or warn): the default wherever a
        version is picked for people (pickers' "latest", ``JobStore.submit`` without a version,
        schedules). With ``labelled``, the newest such version that has the target column (one
        that can be trained on). None when no version qualifies; ``NotFound`` for an unknown name.
        A version that fails its tests stays registered and readable, never the default."""

    def check(self, name: str, source: Path, *, original_name: str | None = None) -> DatasetCheck:
        """The data tests ``source`` (CSV or Parquet) would get as the next version of ``name``,
        against the same baseline ``register`` would take (the latest passing version), without
        registering it: nothing is written, stored or audited, so no role is needed.
        ``NotFound`` for an unknown dataset, ``InvalidInput`` for a file that cannot be parsed."""

    def register(self, name: str, source: Path, *, actor: str, description: str = "",
                 original_name: str | None = None, tags: Mapping[str, str] | None = None) -> DatasetVersion:
        """Register ``source`` (CSV or Parquet) as the next version of ``name``, as ``actor``
        (``register_dataset``: ``Forbidden`` naming the role needed, before anything is read).

        ``tags`` are stored with the version; the store itself sets ``labels: none``
        when the data has no target column (a feature-only version: its data tests
        warn "no labels", ``JobStore.submit`` refuses to train on it).

        Profiles it and runs the data tests against the baseline: the newest
        earlier version whose own tests did not fail. A file that cannot be
        parsed raises ``InvalidInput`` and writes nothing. A file that parses
        but fails data tests *is* registered, with its failing tests
        recorded (``tests_status == FAIL``), so people can see why; training on it
        then fails at its validation step. Either the whole version (data file,
        profile, tests) is written or nothing is.
        """

    def data_tests(self, name: str, version: int) -> list[DataTestResult]:
        """The data-test results stored for a version."""

    def load(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The version's data as a DataFrame."""


@runtime_checkable
class JobStore(Protocol):
    """Training runs (Azure ML: jobs; metrics from MLflow)."""

    def list(self, flt: RunFilter | None = None) -> list[Run]:
        """Runs matching ``flt``, newest first."""

    def experiments(self) -> list[str]:
        """Experiment names that have runs."""

    def get(self, run_id: str) -> Run:
        """One run. ``NotFound`` if missing."""

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricPoint]:
        """Every logged value of one metric (or all), by step."""

    def log(self, run_id: str, tail: int | None = None) -> str:
        """The run's stdout/stderr, or its last ``tail`` lines."""

    def submit(self, spec: TrainingSpec, actor: str) -> Run:
        """Start the training pipeline (validate → train → evaluate → register if
        better than the champion) for ``actor`` (``submit_run``), who is the run's
        ``created_by``. Returns at once with a queued run.
        Without ``spec.dataset_version`` it trains the latest passing version with labels
        (``DatasetStore.latest_passing``). The run's ``provenance`` names ``actor`` (and
        ``spec.trigger``) at once; the code version and environment are added when it runs.
        ``Forbidden`` first, then ``InvalidInput`` for an unknown estimator or a
        malformed parameter or no passing version, ``NotFound`` for an unknown dataset."""

    def artifact(self, run_id: str, name: str) -> bytes:
        """A file the run wrote to its outputs, e.g. ``environment.txt`` (the ``pip freeze``
        list it trained with). ``NotFound`` if the run or the file does not exist;
        ``InvalidInput`` for a name that is not a plain file name."""

    def cancel(self, run_id: str, actor: str) -> Run:
        """Cancel a queued or running run (``cancel_run``). ``Conflict`` if it already ended."""

    def wait(self, run_id: str, timeout_s: float = 600.0) -> Run:
        """Block until the run ends (or the timeout passes); returns its last state."""


@runtime_checkable
class ModelRegistry(Protocol):
    """Registered model versions with lineage, tags and aliases (the champion).

    Every change takes the ``actor``, is authorized with ``services.permissions.authorize``
    (``Forbidden`` naming the role needed, before anything is read) and audited with the role."""

    def names(self) -> list[str]:
        """Registered model names."""

    def versions(self, name: str | None = None, *, include_archived: bool = True) -> list[ModelVersion]:
        """Versions of ``name`` (or of every model), newest first."""

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """One version (``None`` = latest). ``NotFound`` if missing."""

    def champion(self, name: str) -> ModelVersion | None:
        """The version serving production (the ``champion`` alias), or None."""

    def set_alias(self, name: str, alias: str, version: int, actor: str) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it from wherever it was); ``set_alias``."""

    def set_tags(self, name: str, version: int, tags: Mapping[str, str | None], actor: str) -> ModelVersion:
        """Set tags; a ``None`` value removes that tag (``edit_model``)."""

    def set_description(self, name: str, version: int, description: str, actor: str) -> ModelVersion:
        """Replace the description (``edit_model``)."""

    def archive(self, name: str, version: int, actor: str) -> ModelVersion:
        """Hide a version from default listings (``archive_model``). ``Conflict`` for the champion."""

    def restore(self, name: str, version: int, actor: str) -> ModelVersion:
        """Undo ``archive`` (``archive_model``)."""

    def load(self, name: str, version: int) -> Any:
        """The fitted estimator (an object with ``predict``)."""


@runtime_checkable
class Evaluator(Protocol):
    """Candidate vs champion on the same held-out data, and the quality gate."""

    def compare(self, name: str, version: int, champion_version: int | None = None) -> Comparison:
        """Score ``name:version`` and the champion (or ``champion_version``) on the
        candidate's evaluation split and apply the policy's gate."""

    def gate(self, name: str, version: int) -> GateDecision:
        """The quality-gate decision for a version (``compare(...).gate``)."""


@runtime_checkable
class EndpointService(Protocol):
    """Online endpoints (``staging``, ``production``): deployments, traffic, keys, scoring, logs.

    What a backend cannot do it declares (``WorkspaceInfo.capabilities``) and refuses with
    ``Unsupported``: ``up``/``down`` need ``endpoint_processes`` (local processes; managed
    endpoints are always up), ``gateway_log`` needs ``gateway_log``.
    """

    def list(self) -> list[Endpoint]:
        """Endpoints with their deployments and traffic (masked keys may be left out: ``masked_keys``)."""

    def get(self, name: str) -> Endpoint:
        """One endpoint. ``NotFound`` if missing."""

    def keys(self, name: str, actor: str) -> tuple[str, str]:
        """Primary and secondary key in full. ``Forbidden`` unless the actor may see keys."""

    def masked_keys(self, name: str) -> tuple[str, str] | None:
        """Both keys masked (first and last four characters), for anyone; None when they cannot be read."""

    def bearer(self, name: str) -> str:
        """What a client sends as ``Authorization: Bearer`` to the endpoint, chosen by its
        ``auth_mode``: the primary key (``key``), the endpoint's token (``aml_token``) or the signed-in
        identity's token (``aad_token``). For services that score on someone's behalf after checking
        their role (the simulator); never shown, never logged."""

    def invoke(self, name: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
               key: str | None = None, timeout_s: float = 30) -> ScoreResult:
        """POST a payload to the scoring URI as a client would; ``deployment`` pins one
        (header ``azureml-model-deployment``). HTTP errors come back as a ``ScoreResult``."""

    def console_log(self, endpoint: str, deployment: str, tail: int = 200) -> str:
        """The last lines of a deployment's console (inference server) log."""

    def gateway_log(self, endpoint: str, tail: int = 200) -> str:
        """The last lines of the endpoint gateway's own log (capability ``gateway_log``)."""

    def up(self, actor: str) -> int:
        """Start the endpoints' processes (capability ``endpoint_processes``); ``operate_endpoints``,
        audited. Returns the supervisor's pid."""

    def down(self, actor: str, timeout_s: float = 30) -> bool:
        """Stop them; ``operate_endpoints``, audited. False if nothing ran."""

    def wait_gateways(self, timeout_s: float = 30) -> None:
        """Until every endpoint answers (after ``up``)."""


@runtime_checkable
class ReleaseService(Protocol):
    """The release lifecycle under roles: deploy, smoke test, approve, promote, roll back, canary.

    Written once (``services.release.ReleaseWorkflow``) above each backend's endpoint driver and
    ledger. Every method that changes something takes the ``actor``, checks the role with
    ``services.permissions.authorize`` (``Forbidden``), takes the endpoint's (and the version's)
    lock and only then reads and checks (``Conflict`` while another operation runs), leaves
    production serving if it fails, and records the change, its audit record (actor, role) and
    its notification in one unit of work. ``plan_…`` say what an action will do; given that plan
    (``plan=``), the action refuses (``Conflict``) if the endpoint or the stage changed since.
    Long actions report their steps to ``progress``.
    """

    def state(self, name: str, version: int) -> ReleaseState:
        """Where a model version is in the lifecycle (``registered`` if never deployed)."""

    def states(self, name: str | None = None) -> list[ReleaseState]:
        """The release state of every version that left ``registered``."""

    def smoke_tests(self, limit: int = 50) -> list[SmokeTestResult]:
        """Smoke-test results, newest first."""

    def smoke_test_result(self, test_id: int) -> SmokeTestResult:
        """One smoke-test result. ``NotFound`` if missing."""

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        """The append-only audit trail, newest first."""

    def plan_deploy(self, name: str, version: int, env: str) -> Plan:
        """What ``deploy`` would do now (``Plan.refused`` says why it would be refused)."""

    def plan_promote(self, name: str, version: int, strategy: str | None = None) -> Plan:
        """What ``promote`` would do now, blue/green or canary; warns when a better approved version
        exists or the approval was given against another champion."""

    def plan_rollback(self, env: str) -> Plan:
        """What ``rollback`` would do now."""

    def plan_traffic(self, env: str, traffic: Mapping[str, int]) -> Plan:
        """What ``set_traffic`` would do now."""

    def plan_smoke_test(self, name: str, version: int) -> Plan:
        """Where the smoke test of a version would run."""

    def plan_approve(self, name: str, version: int, actor: str | None = None) -> Plan:
        """What ``approve`` would do now (four eyes checked when ``actor`` is given)."""

    def plan_reject(self, name: str, version: int) -> Plan:
        """What ``reject`` would do now."""

    def plan_regenerate_key(self, env: str, which: str) -> Plan:
        """What ``regenerate_key`` would do."""

    def deploy(self, name: str, version: int, env: str, actor: str, *, plan: Plan | None = None,
               progress: Listener | None = None) -> Endpoint:
        """Blue/green: the version beside the current one at 0 %, health, smoke test, then the traffic."""

    def smoke_test(self, env: str, actor: str, deployment: str | None = None, *,
                   progress: Listener | None = None) -> SmokeTestResult:
        """Named cases with prediction parity, and latency, against a deployment (default: the live one)."""

    def approve(self, name: str, version: int, actor: str, comment: str = "", *, plan: Plan | None = None) -> ReleaseState:
        """ML lead, not the one who deployed it (whatever the letter case); the smoke test must have
        passed. A comment when ``[release] approve_comment_required``."""

    def reject(self, name: str, version: int, actor: str, comment: str, *, plan: Plan | None = None) -> ReleaseState:
        """ML lead; a comment is required."""

    def promote(self, name: str, version: int, actor: str, comment: str = "", *, strategy: str | None = None,
                plan: Plan | None = None, progress: Listener | None = None) -> Endpoint:
        """QA: an approved, not archived version to production (blue/green; or a canary)."""

    def rollback(self, env: str, actor: str, comment: str, *, plan: Plan | None = None,
                 progress: Listener | None = None) -> Endpoint:
        """The traffic back to the previous champion (warm), never to a version itself rolled back;
        a comment is required. Aborts a running canary."""

    def set_traffic(self, env: str, traffic: Mapping[str, int], actor: str, comment: str = "", *,
                    plan: Plan | None = None, progress: Listener | None = None) -> Endpoint:
        """An explicit split in percent (summing to 100)."""

    def regenerate_key(self, env: str, which: str, actor: str, *, progress: Listener | None = None) -> Endpoint:
        """A new ``primary`` or ``secondary`` key (admin)."""

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[Rollout]:
        """Canary rollouts, newest first."""

    def rollout(self, env: str | None = None) -> Rollout | None:
        """The active rollout of ``env`` (production by default), else its latest, else None."""

    def start_canary(self, name: str, version: int, actor: str, comment: str = "", *, plan: Plan | None = None,
                     progress: Listener | None = None) -> Rollout:
        """Promote in steps of traffic (``[canary]``), each judged on live telemetry."""

    def pause_canary(self, env: str, actor: str, comment: str = "") -> Rollout:
        """Hold the rollout at its step."""

    def resume_canary(self, env: str, actor: str, comment: str = "") -> Rollout:
        """Continue it; the step is judged afresh."""

    def abort_canary(self, env: str, actor: str, comment: str) -> Rollout:
        """All traffic back to the stable version (a comment is required)."""

    def apply_canary(self, rollout: Rollout, decision: Decision, now: datetime) -> Rollout | None:
        """Apply ``canary.advance_rollouts``' decision if the rollout is still at the step judged."""


@runtime_checkable
class NotificationService(Protocol):
    """Release events and their webhook deliveries (``services.notify``)."""

    def events(self, limit: int = 50) -> list[Event]:
        """Recent events, newest first."""

    def deliveries(self, event_id: int | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries (of one event, or all), newest first."""

    def deliver_due(self, now: float | None = None, **kw: Any) -> int:
        """Attempt every delivery that is due, with retries; returns how many attempts were made."""


@runtime_checkable
class TelemetryService(Protocol):
    """Request telemetry of the endpoints: what every request got, aggregated.

    Windows come from ``services.telemetry.window()`` (15 minutes to 30 days,
    bin size chosen for ~60-120 points). ``endpoint`` is an endpoint name;
    ``None`` means all endpoints. Failures are 5xx and status 0 (no answer).

    A backend that got only part of the data returns what it got, marked (see
    ``services.telemetry.warning_of``): a list as ``PartialList`` (``.warning``), a
    DataFrame with ``attrs["warning"]``, a lookup as ``PartialRequestDetail``; it does not
    raise. Pages show the warning beside the data.
    """

    def stats(self, window: TimeWindow, endpoint: str | None = None) -> list[VersionStats]:
        """One row per (endpoint, deployment, model version) that served in the window."""

    def series(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        """Per bin and model version: columns ``bin`` (UTC timestamp of the bin start),
        ``endpoint``, ``model``, ``requests``, ``failures``, ``client_errors``,
        ``rpm`` (requests per minute), ``failure_rate``, ``p50_ms``, ``p95_ms``, ``p99_ms``.
        Bins without requests are absent."""

    def status_mix(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        """Columns ``status`` (HTTP code, 0 = no answer), ``model``, ``requests``."""

    def top_errors(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[ErrorGroup]:
        """Failed requests (4xx, 5xx and no answer) grouped by error message and status, most frequent first."""

    def slowest(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[RequestRecord]:
        """The slowest requests of the window, slowest first."""

    def lookup(self, request_id: str) -> RequestDetail:
        """One request by its id (``x-request-id``), with its log lines. ``NotFound`` if unknown."""

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = 50_000) -> pd.DataFrame:
        """The feature rows the endpoint received and answered (2xx) in the window,
        newest first, one column per feature, plus ``model`` and ``request_id``."""


@runtime_checkable
class LogService(Protocol):
    """Console logs of deployments and the endpoint's gateway/traffic log.

    A backend that got only part of the data returns what it got, marked (see
    ``services.telemetry.warning_of``): the lines as a ``PartialList`` with ``.warning``.
    """

    def sources(self, endpoint: str) -> list[str]:
        """Log sources of an endpoint: its deployment names and ``gateway``."""

    def search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
               start: datetime | None = None, end: datetime | None = None,
               tail: int = 200) -> list[LogLine]:
        """The last ``tail`` lines (oldest first) matching ``text`` (plain substring,
        case-insensitive, never a pattern) within ``[start, end)``; all sources if ``source`` is None."""


@runtime_checkable
class ScheduleService(Protocol):
    """Retraining triggers: cron schedules and "retrain on new dataset version".

    Reads are open to everyone; changes need the ``ml_lead`` or ``admin`` role
    (``Forbidden`` otherwise) and land in the audit trail. Firing is the
    scheduler's job (local: ``services.local.scheduler``; Azure: ML schedules):
    each cron occurrence and each new dataset version starts at most one run,
    recorded as a ``Firing`` with the run's id, actor ``tollgate-system``.
    """

    def list(self) -> list[Schedule]:
        """Schedules (not removed), oldest first, with their next occurrences and last firing."""

    def get(self, schedule_id: int) -> Schedule:
        """One schedule. ``NotFound`` if missing or removed."""

    def add(self, dataset: str, cron: str, actor: str, *, estimator: str | None = None,
            params: Mapping[str, Any] | None = None, enabled: bool = True) -> Schedule:
        """A new schedule. ``cron``: five fields in UTC. Without ``estimator`` and
        ``params``, the champion's recipe (estimator and parameters). ``InvalidInput``
        for a bad expression, estimator or parameter; ``NotFound`` for an unknown dataset."""

    def set_enabled(self, schedule_id: int, enabled: bool, actor: str) -> Schedule:
        """Pause or resume. Occurrences while paused never fire, not even on resume."""

    def remove(self, schedule_id: int, actor: str) -> Schedule:
        """Remove a schedule (its firings stay in the history). Returns what was removed."""

    def triggers(self) -> list[DatasetTrigger]:
        """The per-dataset "retrain on new version" settings, by dataset name."""

    def set_trigger(self, dataset: str, enabled: bool, actor: str, *, estimator: str | None = None,
                    params: Mapping[str, Any] | None = None) -> DatasetTrigger:
        """Turn "retrain on new version" on or off for ``dataset``. Turning it on
        fires for versions registered from then on (not for the existing ones)."""

    def firings(self, limit: int = 50, *, schedule_id: int | None = None,
                dataset: str | None = None) -> list[Firing]:
        """Past firings, newest first."""

    def scheduler(self) -> SchedulerStatus:
        """Whether the scheduler that fires them is running."""


@runtime_checkable
class AuditLog(Protocol):
    """The append-only audit trail of a workspace (local: a table whose rows cannot change;
    Azure: append blobs). Stores write their own records inside their changes; this is for
    use cases above them whose change is not a stored row (e.g. a request sent to an endpoint)."""

    def record(self, actor: str, action: str, target: str, *, role: str,
               before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
               comment: str = "") -> Any:
        """Append one record; ``role`` is what ``services.permissions.authorize`` returned.
        The actor is stored in its canonical spelling (``services.permissions.canonical``)."""

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        """The trail, newest first."""


class Workspace(Protocol):
    """A workspace exposes one operations object per capability, as ``MLClient`` does."""

    info: WorkspaceInfo
    policy: Policy
    audit: AuditLog
    datasets: DatasetStore
    jobs: JobStore
    models: ModelRegistry
    evaluation: Evaluator
    endpoints: EndpointService
    releases: ReleaseService
    notifications: NotificationService
    telemetry: TelemetryService | None
    logs: LogService | None
    schedules: ScheduleService

    def close(self) -> None:
        """Release connections and handles."""


__all__ = [
    "DatasetStore", "JobStore", "ModelRegistry", "Evaluator", "EndpointService",
    "ReleaseService", "NotificationService", "TelemetryService", "LogService", "ScheduleService", "AuditLog",
    "Workspace",
]
