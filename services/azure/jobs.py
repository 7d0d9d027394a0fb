"""Training runs on Azure ML: jobs, their pipeline steps, MLflow metrics, logs; submit and cancel.

* ``list`` — one ``ml_client.jobs.list()`` (top-level jobs: pipeline jobs and
  standalone command jobs; child steps are not listed by Azure) plus one MLflow
  ``runs/search`` per 100 runs for metrics, start/end times and the ``tollgate.*``
  tags (step, gate, registered model, error): no request per row. The MLflow host is
  the one the jobs name (``services.Tracking.endpoint``), so no workspace GET is needed
  to find it;
* ``steps(run_id)`` — the child steps of a pipeline job (``jobs.list(parent_job_name=…)``);
* ``metric_history`` — MLflow ``metrics/get-history`` per metric key;
* ``log`` — the run's ``user_logs/std_log.txt`` via run history's ``logFiles`` (SAS URLs);
* ``submit`` — a **command job** running ``python -m pipeline.train`` (the same code as
  the local runner's train step) on the compute cluster named in the settings, with the
  dataset version as its ``uri_file`` input; the code is uploaded once per content hash
  as a code asset (``tollgate-pipeline``). Registration behind the gate is not part
  of the Azure job; its metrics are logged to MLflow by ``pipeline.tracking``;
* ``cancel`` — ``ml_client.jobs.begin_cancel``.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

from pipeline import provenance as recorded

from ..entities import MetricPoint, Run, RunFilter, RunStatus, TrainingSpec
from ..errors import Conflict, NotFound
from ..permissions import authorize, canonical
from ..policy import Policy
from ..telemetry import mark, warning_of
from ..training import full_params, output_file, training_data
from . import convert, history, paging
from .config import AzureSettings
from .datasets import AzureDatasets, BlobStore
from .errors import azure_call
from .mlflow_rest import MlflowRest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE_NAME = "tollgate-pipeline"
ARTIFACT_STORE = "workspaceartifactstore"  # where Azure ML keeps a job's ./outputs (ExperimentRun/dcid.NAME/)
LOG_FILES = ("user_logs/std_log.txt", "azureml-logs/70_driver_log.txt", "logs/azureml/executionlogs.txt")
POLL_S = 5.0


class AzureJobs:
    """``JobStore`` over Azure ML jobs (see the module docstring)."""

    def __init__(self, ml_client: Any, mlflow: Callable[..., MlflowRest], datasets: AzureDatasets,
                 blobs: BlobStore, settings: AzureSettings, policy: Policy,
                 arm: Any = None, audit: Callable[..., None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 cache: Any = None):
        self.ml, self._mlflow, self.datasets, self.blobs = ml_client, mlflow, datasets, blobs
        self.cache = cache
        self.settings, self.policy, self.arm, self.audit, self.sleep = settings, policy, arm, audit, sleep
        self._code_version: str | None = None
        self._code_sha256: str | None = None
        self._tracking_uri: str | None = None

    @property
    def mlflow(self) -> MlflowRest:
        """The workspace's MLflow client; the tracking URI a listed job names (its ``Tracking``
        service) saves the workspace GET that would otherwise find it."""
        return self._mlflow(self._tracking_uri) if self._tracking_uri else self._mlflow()

    # --- reads ----------------------------------------------------------------------

    def _seen(self, jobs: list[Any]) -> list[Any]:
        """Remember the first MLflow tracking URI the jobs name (``services.Tracking.endpoint``)."""
        if self._tracking_uri is None:
            for job in jobs:
                svc = (getattr(job, "services", None) or {}).get("Tracking")
                uri = svc.get("endpoint") if isinstance(svc, dict) else getattr(svc, "endpoint", None)
                if uri:
                    self._tracking_uri = str(uri)
                    break
        return jobs

    def _jobs(self) -> list[Any]:
        """Every top-level job; a ``PartialList`` naming the jobs the SDK cannot parse (it raises
        ``ValidationException`` for some, rather than returning ``None``) or saying which page failed."""
        return self._seen(self.cache.get(("jobs", "list"), self._list_jobs) if self.cache else self._list_jobs())

    def _list_jobs(self) -> list[Any]:
        # what ml.jobs.list() does, with each job converted on its own: the SDK converts a page at once,
        # so one job it cannot parse would fail the page and the listing (paging.py)
        from azure.ai.ml.constants import ListViewType
        from azure.ai.ml.entities import Job
        ops = self.ml.jobs
        one = paging.converting(lambda rest: ops._resolve_azureml_id(Job._from_rest_object(rest)), "job")
        pager = ops.service_client_01_2024_preview_arm.jobs.list(
            ops._operation_scope.resource_group_name, ops._workspace_name,
            cls=lambda objs: [one(o) for o in objs], list_view_type=ListViewType.ACTIVE_ONLY, **ops._kwargs)
        return paging.read_listing(pager, "the jobs")

    def _mlflow_runs(self, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}

        def load():
            with azure_call("read run metrics (MLflow)"):
                return self.mlflow.search_runs(ids)
        key = ("jobs", "mlflow", tuple(sorted(ids)))
        return self.cache.get(key, load) if self.cache else load()

    def list(self, flt: RunFilter | None = None) -> list[Run]:
        flt = flt or RunFilter()
        jobs = self._jobs()
        warning = warning_of(jobs)  # jobs left out (unparsable) or a page that failed: said on the page
        if flt.experiment is not None:
            jobs = [j for j in jobs if getattr(j, "experiment_name", None) == flt.experiment]
        if flt.status:
            jobs = [j for j in jobs if convert.run_status(j.status) in flt.status]
        # convert without metrics first to filter on dataset and time, then read MLflow once
        rough = [(j, convert.job_run(j, None)) for j in jobs]
        if flt.dataset is not None:
            rough = [(j, r) for j, r in rough if r.dataset == flt.dataset]
        if flt.since is not None:
            since = flt.since.astimezone(timezone.utc) if flt.since.tzinfo else flt.since.replace(tzinfo=timezone.utc)
            rough = [(j, r) for j, r in rough if r.created_at >= since]
        if flt.until is not None:
            until = flt.until.astimezone(timezone.utc) if flt.until.tzinfo else flt.until.replace(tzinfo=timezone.utc)
            rough = [(j, r) for j, r in rough if r.created_at < until]
        rough.sort(key=lambda jr: (jr[1].created_at, jr[1].id), reverse=True)
        if flt.limit is not None:
            rough = rough[:flt.limit]
        runs = self._mlflow_runs([r.id for _, r in rough])
        return mark([convert.job_run(j, runs.get(j.name)) for j, _ in rough], warning)

    def experiments(self) -> list[str]:
        return sorted({j.experiment_name for j in self._jobs() if getattr(j, "experiment_name", None)})

    def _job(self, run_id: str) -> Any:
        try:
            with azure_call(f"read job {run_id}"):
                return self._seen([self.ml.jobs.get(run_id)])[0]
        except NotFound:
            raise NotFound(f"run {run_id!r} does not exist",
                           hint="Pick a run from the Runs page or `tollgate.py runs`.") from None

    def get(self, run_id: str) -> Run:
        job = self._job(run_id)
        run = convert.job_run(job, self._mlflow_runs([job.name]).get(job.name))
        if run.status == RunStatus.FAILED and not run.error:
            from dataclasses import replace
            run = replace(run, error=self._error(run_id))
        return run

    def _error(self, run_id: str) -> str:
        try:
            with azure_call(f"read the details of run {run_id}"):
                details = self.mlflow.run_details(run_id)
        except NotFound:
            return "the job failed (no details recorded)"
        err = (details.get("error") or {}).get("error") or {}
        return err.get("message") or "the job failed (see its log)"

    def steps(self, run_id: str) -> list[Run]:
        """The child steps of a pipeline run (empty for a command job), oldest first."""
        self._job(run_id)
        one = paging.converting(history.step_run, "step")
        steps = paging.read_listing((one(raw) for page in self.mlflow.run_children(run_id) for raw in page),
                                    f"the steps of run {run_id}")
        return mark(sorted(steps, key=lambda r: (r.created_at, r.id)), warning_of(steps))

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricPoint]:
        self._job(run_id)
        with azure_call(f"read the metrics of run {run_id}"):
            run = self.mlflow.get_run(run_id)
            if run is None:
                return []
            keys = [key] if key is not None else sorted({m["key"] for m in run.get("data", {}).get("metrics", [])})
            out: list[MetricPoint] = []
            for k in keys:
                out.extend(convert.metric_points(k, self.mlflow.metric_history(run_id, k)))
        return sorted(out, key=lambda p: (p.key, p.step, p.timestamp))

    def log(self, run_id: str, tail: int | None = None) -> str:
        self._job(run_id)
        try:
            with azure_call(f"read the log of run {run_id}"):
                details = self.mlflow.run_details(run_id)
        except NotFound:
            return ""
        files = details.get("logFiles") or {}
        chosen = next((files[name] for name in LOG_FILES if name in files), None)
        urls = [chosen] if chosen else [files[k] for k in sorted(files)]
        with azure_call(f"download the log of run {run_id}"):
            text = "".join(self.mlflow.fetch_text(u) for u in urls)
        if tail:
            text = "\n".join(text.splitlines()[-tail:])
        return text

    def artifact(self, run_id: str, name: str) -> bytes:
        """From the job's default artifact store, where Azure ML uploads its ``./outputs``
        (``workspaceartifactstore``, ``ExperimentRun/dcid.NAME/outputs/``: what
        ``ml_client.jobs.download`` reads)."""
        output_file(name)
        self._job(run_id)
        uri = self.blobs.uri(f"ExperimentRun/dcid.{run_id}/outputs/{name}", ARTIFACT_STORE)
        try:
            return self.blobs.download(uri)
        except NotFound:
            raise NotFound(f"run {run_id} has no output {name!r}",
                           hint="The training script writes it to ./outputs; runs from before it did, or "
                                "jobs that never started, have none.") from None

    # --- writes ---------------------------------------------------------------------

    def _ensure_code(self) -> str:
        """Upload the training code once per content hash; the code asset's ARM id."""
        if self._code_version is None:
            files = {rel: (PROJECT_ROOT / rel).read_bytes() for rel in recorded.training_code(PROJECT_ROOT)}
            self._code_sha256 = recorded.code_sha256(PROJECT_ROOT)
            version = self._code_sha256[:12]
            base = f"tollgate/code/{version}"
            for rel, data in files.items():
                self.blobs.upload(f"{base}/{rel}", data)
            container = self.blobs._container(self.settings.datastore)
            code_uri = f"{container.url}/{base}"
            scope = self.settings.workspace_scope
            with azure_call("register the training code"):
                self.arm(f"{scope}/codes/{CODE_NAME}/versions/{version}",
                         {"properties": {"codeUri": code_uri, "isAnonymous": False,
                                         "description": "Tollgate's training pipeline (pipeline/train.py)"}})
            self._code_version = version
        # an ARM id: azure-ai-ml takes any other string for a local folder to upload
        return f"{self.settings.workspace_scope}/codes/{CODE_NAME}/versions/{self._code_version}"

    def command_job(self, estimator: str, params: dict, dataset, *, name: str | None = None,
                    display_name: str | None = None, experiment: str | None = None, created_by: str,
                    register: bool = True, properties: dict | None = None, trigger: str | None = None):
        """The retraining command job (``azure.ai.ml.command``): ``python -m pipeline.train`` on the
        settings' compute and environment with ``dataset`` (a ``DatasetVersion``) as its
        ``uri_file`` input and the code asset of ``pipeline/``. ``submit`` sends it; a schedule
        (``services.azure.schedules``) creates one at each occurrence.

        Provenance: ``tollgate.created_by`` (who asked), ``tollgate.trigger`` (what fired it) and
        ``tollgate.code_sha256`` (the training code's content hash, also the code asset's version)
        are its properties; azure-ai-ml adds the git ones itself when the console runs in a git
        repository (``mlflow.source.git.commit``, ``azureml.git.dirty``…); the environment is the
        job's own; ``pipeline.train`` logs the Python and package versions as MLflow tags."""
        from azure.ai.ml import Input, command
        args = " ".join(f"--param {k}={v}" for k, v in params.items())
        code = self._ensure_code()
        origin = {convert.P + "code_sha256": self._code_sha256}
        if trigger:
            origin[convert.P + "trigger"] = trigger
        return command(
            name=name, display_name=display_name, experiment_name=experiment or self.settings.experiment,
            code=code,
            command=(f"python -m pipeline.train --data ${{{{inputs.data}}}} --estimator {estimator} {args} "
                     f"--target {self.policy.target} --test-fraction {self.policy.test_fraction} "
                     f"--seed {self.policy.split_seed} --task {self.policy.task} --output ./outputs"),
            inputs={"data": Input(type="uri_file", path=f"azureml:{dataset.name}:{dataset.version}")},
            environment=self.settings.environment, compute=self.settings.compute,
            properties={convert.P + "estimator": estimator, convert.P + "params": json.dumps(params),
                        convert.P + "dataset": dataset.ref, convert.P + "created_by": canonical(created_by),
                        convert.P + "register": str(bool(register)).lower(), **origin, **(properties or {})},
            tags={"tollgate": "retrain"},
        )

    def submit(self, spec: TrainingSpec, actor: str) -> Run:
        role = authorize(self.policy, actor, "submit_run")
        params = full_params(spec.estimator, spec.params, self.policy.training, self.policy.task)
        dataset = training_data(self.datasets, spec, self.policy.target)
        given = {k: params[k] for k in spec.params}
        run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        display = spec.display_name or (spec.estimator + "".join(f" {k}={v}" for k, v in given.items()))
        job = self.command_job(spec.estimator, params, dataset, name=run_id, display_name=display,
                               experiment=spec.experiment, created_by=actor, register=spec.register,
                               trigger=spec.trigger)
        try:
            with azure_call(f"submit a training job on compute {self.settings.compute!r}"):
                created = self.ml.jobs.create_or_update(job)
        finally:
            if self.cache:
                self.cache.invalidate("jobs")
        if self.audit is not None:
            self.audit(actor, "run.submit", run_id, role=role,
                       after={"estimator": spec.estimator, "params": params, "dataset": dataset.ref})
        return convert.job_run(created, None)

    def cancel(self, run_id: str, actor: str) -> Run:
        role = authorize(self.policy, actor, "cancel_run")
        run = self.get(run_id)
        if run.status.is_terminal:
            raise Conflict(f"run {run_id} already ended ({run.status.value})",
                           hint="Only queued or running runs can be canceled.")
        try:
            with azure_call(f"cancel run {run_id}"):
                self.ml.jobs.begin_cancel(run_id).result()
        finally:
            if self.cache:
                self.cache.invalidate("jobs")
        if self.audit is not None:
            self.audit(actor, "run.cancel", run_id, role=role, before={"status": run.status.value},
                       after={"status": RunStatus.CANCELED.value})
        return self.get(run_id)

    def wait(self, run_id: str, timeout_s: float = 600.0) -> Run:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.get(run_id)
            left = deadline - time.monotonic()
            if run.status.is_terminal or left <= 0:
                return run
            self.sleep(min(POLL_S, left))
