"""Azure ML entities (azure-ai-ml) and MLflow JSON → Tollgate's frozen dataclasses.

Everything Tollgate needs that Azure ML has no field for is kept in the asset's
``properties`` (immutable, set when the version is created) under ``tollgate.*``
keys, and the mutable parts in ``tags``:

* data asset version: ``tollgate.rows``, ``.format``, ``.source``, ``.sha256``,
  ``.baseline``, ``.tests_status``, ``.created_by``, ``.profile`` (column profiles,
  JSON) and ``.data_tests`` (the data-test results, JSON) — so listing versions gives
  profiles without reading any data;
* model version: ``tollgate.estimator``, ``.metrics`` (the evaluation metrics on the
  held-out split, JSON), ``.run_id``, ``.dataset`` (``name:version``), ``.created_by``;
  the model files (``model.pkl``, ``model.json``, ``metrics.json``) under ``modelUri``;
* model container: ``tags["tollgate.alias.ALIAS"] = VERSION`` (the champion and other
  aliases: one place, moved atomically by one PUT);
* job: ``properties`` ``tollgate.estimator``, ``.params`` (JSON), ``.dataset``; the
  MLflow run of the job has the metrics, start/end times and the tags
  ``tollgate.step``, ``tollgate.gate`` (JSON), ``tollgate.model`` (``name:version``),
  ``tollgate.error``;
* provenance (``job_provenance``): who asked is ``tollgate.created_by`` (else Azure's own
  ``systemData.createdBy``), what fired it ``tollgate.trigger`` or the schedule's
  ``tollgate.schedule``; the code version is what Azure ML records itself — the git
  properties azure-ai-ml adds at submission (``mlflow.source.git.commit``,
  ``azureml.git.dirty``) — and ``tollgate.code_sha256`` (the code asset's content hash);
  the environment is the job's Azure ML environment and the tags ``pipeline.train`` logs
  (``tollgate.python``, ``tollgate.packages``). A model version keeps a copy in its
  properties (``tollgate.provenance.*``).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from .. import provenance
from ..entities import (CheckStatus, ColumnProfile, DatasetVersion, DataTestResult, GateDecision, MetricPoint,
                        ModelVersion, Provenance, Run, RunStatus)
from ..errors import InvalidInput
from ..versions import Version, parse_version
from .mlflow_rest import loads_or, mlflow_metrics, mlflow_params, mlflow_tags
from .paths import data_unreadable

P = "tollgate."
ALIAS_TAG = "tollgate.alias."
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Azure ML job status → ours (JobStatus values of azure-ai-ml)
JOB_STATUS = {
    "NotStarted": RunStatus.QUEUED, "Queued": RunStatus.QUEUED, "Preparing": RunStatus.QUEUED,
    "Provisioning": RunStatus.QUEUED, "Starting": RunStatus.QUEUED, "Scheduled": RunStatus.QUEUED,
    "Running": RunStatus.RUNNING, "Finalizing": RunStatus.RUNNING, "CancelRequested": RunStatus.RUNNING,
    "Completed": RunStatus.COMPLETED, "Finished": RunStatus.COMPLETED,
    "Failed": RunStatus.FAILED, "NotResponding": RunStatus.FAILED, "Paused": RunStatus.FAILED,
    "Canceled": RunStatus.CANCELED, "Cancelled": RunStatus.CANCELED,
}


def run_status(value: Any) -> RunStatus:
    text = getattr(value, "value", value) or "NotStarted"
    return JOB_STATUS.get(str(text), RunStatus.QUEUED)


def utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):  # MLflow: milliseconds since the epoch
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
    text = str(value).replace("Z", "+00:00")
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def split_ref(ref: str | None) -> tuple[str | None, Version | None]:
    """``"diabetes:2"`` (or ``azureml:diabetes:2``) → ``("diabetes", 2)``; ``"d:foo"`` → ``("d", "foo")``."""
    if not ref:
        return None, None
    ref = str(ref)
    if ref.startswith("azureml:"):
        ref = ref[len("azureml:"):]
    name, _, version = ref.rpartition(":")
    if not name:
        return ref, None
    return name, version_of(version) if version.strip() else None


def version_of(value: Any) -> Version:
    """An Azure asset version (always text on the wire) → ``services.versions.Version``."""
    try:
        return parse_version(value)
    except InvalidInput:
        return str(value)


def created(entity: Any) -> tuple[datetime, str]:
    ctx = getattr(entity, "creation_context", None)
    at = utc(getattr(ctx, "created_at", None)) or EPOCH
    by = getattr(ctx, "created_by", None)
    by = getattr(by, "user_name", None) or by  # run history gives a User object
    return at, str(by or "")


def modified_at(entity: Any) -> datetime | None:
    return utc(getattr(getattr(entity, "creation_context", None), "last_modified_at", None))


# --- datasets -------------------------------------------------------------------------------

def dataset_properties(*, rows: int, fmt: str, source: str, sha256: str, baseline: int | None,
                       tests_status: CheckStatus, created_by: str, columns: tuple[ColumnProfile, ...],
                       tests: list[DataTestResult]) -> dict[str, str]:
    return {
        P + "rows": str(rows), P + "format": fmt, P + "source": source, P + "sha256": sha256,
        P + "baseline": "" if baseline is None else str(baseline), P + "tests_status": tests_status.value,
        P + "created_by": created_by,
        P + "profile": json.dumps([c.__dict__ for c in columns], separators=(",", ":")),
        P + "data_tests": json.dumps([data_test_dict(t) for t in tests], separators=(",", ":")),
    }


def data_test_dict(t: DataTestResult) -> dict:
    return {"check": t.check, "column": t.column, "status": t.status.value, "detail": t.detail,
            "value": _finite(t.value), "threshold": _finite(t.threshold)}


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


def dataset_version(data: Any) -> DatasetVersion:
    """An azure-ai-ml ``Data`` (a data asset version) → ``DatasetVersion``."""
    props = dict(getattr(data, "properties", None) or {})
    at, by = created(data)
    path = str(getattr(data, "path", "") or "")
    kind = str(getattr(data, "type", None) or "uri_file")
    source = props.get(P + "source") or path.rstrip("/").rsplit("/", 1)[-1]
    fmt = props.get(P + "format") or _file_format(source, kind)
    cols = tuple(ColumnProfile(**c) for c in loads_or(props.get(P + "profile"), []))
    tested = bool(props.get(P + "tests_status"))  # Tollgate profiles and tests every version it registers
    baseline = props.get(P + "baseline")
    return DatasetVersion(
        name=data.name, version=version_of(data.version), created_at=at,
        created_by=props.get(P + "created_by") or by, description=getattr(data, "description", None) or "",
        source=source, format=fmt, rows=_int(props.get(P + "rows")) or 0, columns=cols,
        baseline_version=version_of(baseline) if baseline else None,
        tests_status=CheckStatus(props.get(P + "tests_status") or CheckStatus.PASS.value),
        sha256=props.get(P + "sha256", ""), uri=path,
        tags=dict(getattr(data, "tags", None) or {}),
        kind=kind, tested=tested, unreadable=data_unreadable(kind, path, fmt),
    )


def _file_format(source: str, kind: str) -> str:
    """``csv`` / ``parquet`` for what Tollgate reads, else the file's extension (or the data type)."""
    if kind != "uri_file":
        return kind
    ext = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    return {"": "csv", "csv": "csv", "txt": "csv", "parquet": "parquet", "pq": "parquet"}.get(ext, ext)


def data_tests(data: Any) -> list[DataTestResult]:
    props = dict(getattr(data, "properties", None) or {})
    return [DataTestResult(t["check"], t.get("column"), CheckStatus(t["status"]), t.get("detail", ""),
                           t.get("value"), t.get("threshold"))
            for t in loads_or(props.get(P + "data_tests"), [])]


# --- models ---------------------------------------------------------------------------------

def aliases_of(container_tags: Mapping[str, str] | None) -> dict[Version, tuple[str, ...]]:
    """Container tags → {version: (aliases...)}."""
    out: dict[Version, list[str]] = {}
    for key, value in (container_tags or {}).items():
        if key.startswith(ALIAS_TAG) and str(value or "").strip():
            out.setdefault(version_of(value), []).append(key[len(ALIAS_TAG):])
    return {v: tuple(sorted(a)) for v, a in out.items()}


PROVENANCE = P + provenance.PREFIX


def model_properties(*, estimator: str, metrics: Mapping[str, float], run_id: str | None,
                     dataset: str | None, dataset_version: int | None, created_by: str,
                     origin: Provenance | None = None) -> dict[str, str]:
    return {P + "estimator": estimator, P + "metrics": json.dumps(dict(metrics)),
            P + "run_id": run_id or "", P + "dataset": f"{dataset}:{dataset_version}" if dataset else "",
            P + "created_by": created_by, **(provenance.to_tags(origin, PROVENANCE) if origin else {})}


def model_version(model: Any, aliases: tuple[str, ...] = (), archived: bool = False) -> ModelVersion:
    """An azure-ai-ml ``Model`` (a model version) → ``ModelVersion``."""
    props = dict(getattr(model, "properties", None) or {})
    at, by = created(model)
    dataset, dataset_version = split_ref(props.get(P + "dataset"))
    return ModelVersion(
        name=model.name, version=version_of(model.version), created_at=at,
        created_by=props.get(P + "created_by") or by, description=getattr(model, "description", None) or "",
        estimator=props.get(P + "estimator", ""),
        metrics={k: float(v) for k, v in loads_or(props.get(P + "metrics"), {}).items()},
        run_id=props.get(P + "run_id") or getattr(model, "job_name", None) or None,
        dataset=dataset, dataset_version=dataset_version,
        tags=dict(getattr(model, "tags", None) or {}), aliases=tuple(aliases), archived=bool(archived),
        uri=str(getattr(model, "path", "") or ""), provenance=provenance.from_tags(props, PROVENANCE),
        azure_stage=str(getattr(model, "stage", None) or ""), model_type=str(getattr(model, "type", None) or ""),
    )


# --- jobs -----------------------------------------------------------------------------------

def job_run(job: Any, mlflow_run: dict | None) -> Run:
    """An azure-ai-ml ``Job`` and its MLflow run (or None) → ``Run``."""
    props = dict(getattr(job, "properties", None) or {})
    tags = mlflow_tags(mlflow_run) if mlflow_run else {}
    info = (mlflow_run or {}).get("info", {})
    status = run_status(getattr(job, "status", None))
    params = loads_or(props.get(P + "params"), None)
    estimator = props.get(P + "estimator")
    if params is None or not estimator:  # fall back on what the training script logged
        logged = mlflow_params(mlflow_run) if mlflow_run else {}
        estimator = estimator or logged.pop("estimator", "")
        params = params if params is not None else {k: _number(v) for k, v in logged.items()}
    dataset, dataset_version = split_ref(props.get(P + "dataset"))
    model_name, model_version_ = split_ref(tags.get(P + "model"))
    gate = loads_or(tags.get(P + "gate"), None)
    at, by = created(job)
    started = utc(info.get("start_time")) if info.get("start_time") else None
    ended = utc(info.get("end_time")) if info.get("end_time") and status.is_terminal else None
    if ended is None and status.is_terminal:  # azure-ai-ml has no end time; the last change is when it ended
        ended = modified_at(job) or at
    if status == RunStatus.QUEUED:
        started = None
    return Run(
        id=job.name, experiment=getattr(job, "experiment_name", None) or "",
        display_name=getattr(job, "display_name", None) or job.name, status=status,
        estimator=estimator or "", params=dict(params or {}),
        metrics=mlflow_metrics(mlflow_run) if mlflow_run and status != RunStatus.QUEUED else {},
        dataset=dataset or "", dataset_version=dataset_version, created_at=at,
        created_by=props.get(P + "created_by") or by, started_at=started, ended_at=ended,
        error=tags.get(P + "error") or ("the job was canceled" if status == RunStatus.CANCELED else None),
        step=tags.get(P + "step") or None,
        gate=GateDecision.from_dict(gate) if isinstance(gate, dict) else None,
        model_name=model_name, model_version=model_version_, provenance=job_provenance(job, tags, by),
    )


# the git properties azure-ai-ml adds to a job it submits from a git repository
# (azure.ai.ml.constants._common.GitProperties)
GIT_COMMIT, GIT_DIRTY = "mlflow.source.git.commit", "azureml.git.dirty"


def job_provenance(job: Any, mlflow_tags: Mapping[str, str], created_by: str) -> Provenance:
    """What Azure ML and the training script recorded about a job's origin (see the module docstring)."""
    props = dict(getattr(job, "properties", None) or {})
    trigger = props.get(P + "trigger")
    if not trigger and props.get(P + "schedule"):
        trigger = provenance.schedule_trigger(props[P + "schedule"])
    dirty = props.get(GIT_DIRTY)
    packages = loads_or(mlflow_tags.get(P + "packages"), {})
    return Provenance(
        requested_by=props.get(P + "created_by") or created_by, trigger=trigger,
        code_commit=props.get(GIT_COMMIT) or None, code_dirty=None if dirty is None else str(dirty).lower() == "true",
        code_sha256=props.get(P + "code_sha256") or None, python=mlflow_tags.get(P + "python") or None,
        packages=packages if isinstance(packages, dict) else {},
        environment=environment_name(getattr(job, "environment", None)) or mlflow_tags.get(P + "environment") or None)


def environment_name(value: Any) -> str | None:
    """An Azure ML environment as people name it: ``tollgate-sklearn:1`` (from an ARM id or ``azureml:…``)."""
    if getattr(value, "name", None) and getattr(value, "version", None):  # an Environment entity
        return f"{value.name}:{value.version}"
    text = str(getattr(value, "id", None) or value or "")
    if not text:
        return None
    if "/environments/" in text:
        name, _, rest = text.split("/environments/", 1)[1].partition("/versions/")
        return f"{name}:{rest}" if rest else name
    return text.removeprefix("azureml:")


def _number(text: Any) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            continue
    return text


def metric_points(key: str, points: list[dict]) -> list[MetricPoint]:
    return [MetricPoint(key=key, step=int(p.get("step", 0) or 0), value=float(p["value"]),
                        timestamp=utc(int(p.get("timestamp", 0) or 0)) or EPOCH) for p in points]
