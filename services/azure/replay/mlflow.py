"""The workspace's MLflow REST API and run history (child steps, log files)."""
from __future__ import annotations

import copy
import re
import threading
import time
from typing import Any

from .http import ReplayRequest, Reply

# --- run history ------------------------------------------------------------------------------

def _discovery(host: str) -> dict:
    base = f"https://{host}"
    return {k: base for k in ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive",
                              "labeling", "modelmanagement", "pipelines")} | {"studio": "https://ml.azure.com"}


class FakeRunHistory:
    """Run history of the workspace: child runs (pipeline steps) and a run's log files.

    ``runs`` are run-history ``Run`` JSON objects (``runId``, ``parentRunId``, ``status``,
    ``displayName``, ``createdUtc``…); ``logs[run_id] = {"user_logs/std_log.txt": "/container/blob"}``
    names blobs of ``FakeBlobStore``, answered as SAS URLs of the workspace's storage account.
    """

    def __init__(self):
        self.runs: dict[str, dict] = {}
        self.logs: dict[str, dict[str, str]] = {}
        self.errors: dict[str, str] = {}

    def children(self, run_id: str) -> Reply:
        kids = [r for r in self.runs.values() if r.get("parentRunId") == run_id]
        return Reply(200, {"value": copy.deepcopy(kids), "continuationToken": None, "count": len(kids)})

    def details(self, run_id: str, account: str) -> Reply:
        run = self.runs.get(run_id)
        files = self.logs.get(run_id)
        if run is None and files is None:
            return _history_error(404, f"Run {run_id} was not found")
        body = {"runId": run_id, "status": (run or {}).get("status", "Completed"),
                "logFiles": {name: f"https://{account}.blob.core.windows.net{path}?sv=2019-07-07&sr=b&sig=replay"
                             for name, path in (files or {}).items()}}
        if run_id in self.errors:
            body["error"] = {"error": {"code": "UserError", "message": self.errors[run_id]}}
        return Reply(200, body)


def _history_error(status: int, message: str) -> Reply:
    return Reply(status, {"error": {"code": "UserError", "message": message}})


# --- MLflow -----------------------------------------------------------------------------------

class FakeMlflow:
    """The MLflow tracking REST API of the workspace: runs (info, data) and metric histories.

    ``runs[run_id] = {"info": {...}, "data": {"metrics": [...], "params": [...], "tags": [...]}}``
    as MLflow's ``Run`` JSON; ``history[run_id][key] = [{"key", "value", "step", "timestamp"}]``.
    """

    def __init__(self):
        self.runs: dict[str, dict] = {}
        self.history: dict[str, dict[str, list[dict]]] = {}
        self.lock = threading.RLock()

    def add_run(self, run: dict, history: dict[str, list[dict]] | None = None) -> None:
        with self.lock:
            self.runs[run["info"]["run_id"]] = copy.deepcopy(run)
            if history is not None:
                self.history[run["info"]["run_id"]] = copy.deepcopy(history)

    def set_status(self, run_id: str, status: str) -> None:
        with self.lock:
            if run_id in self.runs:
                self.runs[run_id]["info"]["status"] = status
                self.runs[run_id]["info"].setdefault("end_time", int(time.time() * 1000))

    def handle(self, what: str, req: ReplayRequest) -> Reply:
        if what == "runs/search":
            return self._search(req.json or {})
        if what == "runs/get":
            run_id = req.query.get("run_id") or req.query.get("run_uuid") or ""
            with self.lock:
                run = self.runs.get(run_id)
            if run is None:
                return _mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
            return Reply(200, {"run": run})
        if what == "metrics/get-history":
            run_id = req.query.get("run_id") or req.query.get("run_uuid") or ""
            key = req.query.get("metric_key", "")
            with self.lock:
                if run_id not in self.runs:
                    return _mlflow_error(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
                points = list(self.history.get(run_id, {}).get(key, []))
            return Reply(200, {"metrics": points})
        return _mlflow_error(404, "ENDPOINT_NOT_FOUND", f"{what} is not replayed")

    def _search(self, body: dict) -> Reply:
        flt = body.get("filter") or body.get("filter_string") or ""
        ids = None
        m = re.search(r"(?:attributes\.)?run_id\s+IN\s+\(([^)]*)\)", flt, re.IGNORECASE)
        if m:
            ids = set(re.findall(r"'([^']+)'", m[1]))
        else:
            m = re.search(r"(?:attributes\.)?run_id\s*=\s*'([^']+)'", flt, re.IGNORECASE)
            if m:
                ids = {m[1]}
        with self.lock:
            runs = [copy.deepcopy(r) for rid, r in self.runs.items() if ids is None or rid in ids]
        exp_ids = set(body.get("experiment_ids") or [])
        if exp_ids and ids is None:
            runs = [r for r in runs if r["info"].get("experiment_id") in exp_ids]
        runs.sort(key=lambda r: r["info"].get("start_time") or 0, reverse=True)
        limit = int(body.get("max_results") or 1000)
        token = int(body.get("page_token") or 0)
        page = runs[token:token + limit]
        out: dict[str, Any] = {"runs": page}
        if token + limit < len(runs):
            out["next_page_token"] = str(token + limit)
        return Reply(200, out)


def _mlflow_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error_code": code, "message": message})

