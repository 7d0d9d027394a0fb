"""The workspace's MLflow REST API and run history, over a plain azure-core ``PipelineClient``.

Azure ML serves the MLflow tracking API at the workspace's ``mlflow_tracking_uri``
(``azureml://REGION.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/NAME``):
with ``azureml://`` read as ``https://``, ``/api/2.0/mlflow/runs/search`` and
``/api/2.0/mlflow/metrics/get-history`` answer with MLflow's JSON. Run history (a
run's log files, its error) lives on the same host under ``/history/v1.0``. Both take
the ARM bearer token. No ``mlflow`` or ``azureml-mlflow`` package is needed.

The client has azure-core's ``RetryPolicy`` (429 with ``Retry-After`` and 5xx retried
with back-off) and ``BearerTokenCredentialPolicy``; errors are raised as azure-core
``HttpResponseError`` for ``services.azure.errors.translate``.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator
from urllib.parse import quote, urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import (BearerTokenCredentialPolicy, HeadersPolicy,
                                          NetworkTraceLoggingPolicy, RetryPolicy, UserAgentPolicy)
from azure.core.rest import HttpRequest

ARM_SCOPE = "https://management.azure.com/.default"
ARM = "https://management.azure.com"
SEARCH_PAGE = 1000           # MLflow's maximum page size
IN_CHUNK = 100               # run ids per "run_id IN (...)" filter


def https_base(tracking_uri: str) -> str:
    """``azureml://host/path`` → ``https://host/path`` (unchanged if already https)."""
    if tracking_uri.startswith("azureml://"):
        return "https://" + tracking_uri[len("azureml://"):]
    return tracking_uri


def make_client(base_url: str, credential: Any | None, transport: Any | None = None,
                retry_total: int = 5) -> PipelineClient:
    """A ``PipelineClient`` with retry and (when ``credential`` is given) the ARM bearer token."""
    policies = [HeadersPolicy(), UserAgentPolicy(sdk_moniker="tollgate"), RetryPolicy(retry_total=retry_total)]
    if credential is not None:
        policies.append(BearerTokenCredentialPolicy(credential, ARM_SCOPE))
    policies.append(NetworkTraceLoggingPolicy())
    kwargs = {"transport": transport} if transport is not None else {}
    return PipelineClient(base_url=base_url, policies=policies, **kwargs)


def _check(response, what: str):
    if response.status_code == 404:
        raise ResourceNotFoundError(message=f"{what}: {_message(response)}", response=response)
    if response.status_code >= 400:
        raise HttpResponseError(message=f"{what}: {_message(response)}", response=response)
    return response


def _message(response) -> str:
    try:
        body = response.json()
    except Exception:  # not JSON
        return (response.text() or "")[:200]
    if isinstance(body, dict):
        if "message" in body:
            return str(body["message"])
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
    return str(body)[:200]


class MlflowRest:
    """MLflow tracking and run history of one workspace."""

    def __init__(self, tracking_uri: str, credential: Any, transport: Any | None = None):
        base = https_base(tracking_uri).rstrip("/")
        parts = urlsplit(base)
        self.base = base
        self.host = f"{parts.scheme}://{parts.netloc}"
        # the workspace scope: /subscriptions/.../workspaces/NAME, after /mlflow/v1.0
        self.scope = parts.path.split("/mlflow/v1.0", 1)[-1] if "/mlflow/v1.0" in parts.path else parts.path
        self.client = make_client(self.host, credential, transport)
        self.plain = make_client(self.host, None, transport)  # for SAS URLs (they carry their own auth)

    # --- MLflow -----------------------------------------------------------------------

    def _mlflow(self, method: str, path: str, *, params: dict | None = None, body: Any = None):
        url = f"{self.base}/api/2.0/mlflow/{path}"
        req = HttpRequest(method, url, params=params, json=body)
        return self.client.send_request(req)

    def search_runs(self, run_ids: Iterable[str]) -> dict[str, dict]:
        """MLflow runs by id (``info`` and ``data``); ids MLflow does not know are left out."""
        ids = sorted(set(run_ids))
        out: dict[str, dict] = {}
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i:i + IN_CHUNK]
            flt = "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in chunk) + ")"
            token = None
            while True:
                body = {"filter": flt, "max_results": SEARCH_PAGE, "run_view_type": "ALL"}
                if token:
                    body["page_token"] = token
                resp = _check(self._mlflow("POST", "runs/search", body=body), "search MLflow runs")
                data = resp.json()
                for run in data.get("runs", []):
                    out[run["info"]["run_id"]] = run
                token = data.get("next_page_token")
                if not token:
                    break
        return out

    def get_run(self, run_id: str) -> dict | None:
        resp = self._mlflow("GET", "runs/get", params={"run_id": run_id})
        if resp.status_code == 404:
            return None
        return _check(resp, f"read MLflow run {run_id}").json()["run"]

    def metric_history(self, run_id: str, key: str) -> list[dict]:
        points: list[dict] = []
        token = None
        while True:
            params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                params["page_token"] = token
            resp = _check(self._mlflow("GET", "metrics/get-history", params=params),
                          f"read the history of {key} of run {run_id}")
            data = resp.json()
            points.extend(data.get("metrics", []))
            token = data.get("next_page_token")
            if not token:
                return points

    # --- run history ------------------------------------------------------------------

    def run_details(self, run_id: str) -> dict:
        url = f"{self.host}/history/v1.0{self.scope}/runs/{quote(run_id)}/details"
        return _check(self.client.send_request(HttpRequest("GET", url)), f"read the details of run {run_id}").json()

    def run_children(self, run_id: str) -> Iterator[list[dict]]:
        """The child runs (pipeline steps) of a run as run history keeps them, page by page
        (``continuationToken``): each page is read when the previous one has been used."""
        url = f"{self.host}/history/v1.0{self.scope}/runs/{quote(run_id)}/children"
        token = None
        while True:
            params = {"continuationToken": token} if token else None
            data = _check(self.client.send_request(HttpRequest("GET", url, params=params)),
                          f"list the steps of run {run_id}").json()
            yield list(data.get("value") or [])
            token = data.get("continuationToken")
            if not token:
                return

    def fetch_text(self, sas_url: str) -> str:
        """A log file by its SAS URL (from ``run_details``'s ``logFiles``)."""
        resp = _check(self.plain.send_request(HttpRequest("GET", sas_url)), "download a log file")
        return resp.text()


def mlflow_tags(run: dict) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}


def mlflow_metrics(run: dict) -> dict[str, float]:
    return {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}


def mlflow_params(run: dict) -> dict[str, str]:
    return {p["key"]: p.get("value", "") for p in run.get("data", {}).get("params", [])}


def loads_or(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
