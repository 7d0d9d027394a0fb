"""``ReplayTransport``: an azure-core transport that answers every request in memory."""
from __future__ import annotations

import copy
import re
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable

from azure.core.pipeline.transport import HttpTransport
from azure.core.utils import case_insensitive_dict

from .arm import FakeArmState
from .blobs import FakeBlobStore
from .fixtures import load_fixtures
from .http import (
    _REASONS,
    ARM_HOST,
    LOGS_HOST,
    Call,
    Fault,
    ReplayRequest,
    Reply,
    Route,
    _as_reply,
    _is_rest,
    _LegacyResponse,
    _now,
    _RestResponse,
    arm_error,
    not_found,
)
from .mlflow import FakeMlflow, FakeRunHistory, _discovery

# --- the transport -------------------------------------------------------------------------

class ReplayTransport(HttpTransport):
    """Answers the SDK's requests from routes, the fake ARM state, blobs and MLflow."""

    instances: "weakref.WeakSet[ReplayTransport]" = weakref.WeakSet()  # every live transport
    sent = 0  # requests answered by every transport of this process (the bench counts with it)
    journal: "list[Call] | None" = None  # when a list: every transport's calls, in order (bench --show)

    def __init__(self, fixtures: Path | str | None = None, *, arm: "FakeArmState | None" = None):
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.sleeps: list[float] = []
        self.arm = arm or FakeArmState()
        self.blobs = FakeBlobStore()
        self.mlflow = FakeMlflow()
        self.history = FakeRunHistory()
        self.settings: dict[str, Any] = {}
        self.folder: Path | None = None
        self._logs_handler: Callable[[str, Any], Any] | None = None
        self._install_default_routes()
        ReplayTransport.instances.add(self)
        if fixtures is not None:
            load_fixtures(self, Path(fixtures))

    # -- configuration ---------------------------------------------------------------------

    def add(self, method: str, path_regex: str, handler_or_json: Any, status: int = 200,
            headers: dict | None = None, *, host: str | None = None) -> Route:
        """Answer ``method`` (or ``*``) requests whose path matches ``path_regex``
        (``re.search`` on the unquoted URL path). Newest routes are tried first."""
        route = Route(method.upper(), re.compile(path_regex), handler_or_json, status, headers, host)
        with self.lock:
            self.routes.insert(0, route)
        return route

    def remove(self, route: Route) -> None:
        with self.lock:
            self.routes.remove(route)

    def fail_next(self, method: str, path_regex: str, status: int, body: Any = None,
                  headers: dict | None = None, times: int = 1) -> None:
        """The next ``times`` matching requests answer ``status`` with ``body`` (ARM error
        JSON by default) and ``headers`` (e.g. ``{"Retry-After": "1"}`` for a 429)."""
        if body is None:
            body = {"error": {"code": _REASONS.get(status, "Error").replace(" ", ""),
                              "message": f"injected {status} (replay)"}}
        reply = Reply(status, json=body) if not isinstance(body, (bytes, str)) else Reply(status, body=body)
        reply.headers = dict(headers or {})
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), reply, times))

    def set_logs_handler(self, fn: Callable[[str, Any], Any] | None) -> None:
        """``fn(query_text, timespan)`` answers Log Analytics queries: a dict body
        (``{"tables": [...]}``, plus ``"error"`` for a partial result), a list of
        tables, or a ``Reply`` (e.g. ``arm_error(400, "BadArgumentError", ...)``)."""
        self._logs_handler = fn

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()
            self.sleeps.clear()

    def count(self, method: str | None = None, path_regex: str | None = None) -> int:
        return len(self.find(method, path_regex))

    def find(self, method: str | None = None, path_regex: str | None = None) -> list[Call]:
        rx = re.compile(path_regex) if path_regex else None
        with self.lock:
            calls = list(self.calls)
        return [c for c in calls if (method is None or c.method == method.upper())
                and (rx is None or rx.search(c.path))]

    # -- HttpTransport ---------------------------------------------------------------------

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "ReplayTransport":
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def sleep(self, duration: float) -> None:
        """azure-core's retry back-off and LRO polling wait here: recorded, not slept."""
        with self.lock:
            self.sleeps.append(float(duration))

    def send(self, request: Any, **kwargs: Any):
        req = ReplayRequest(request)
        reply = self._answer(req)
        body, content_type = reply.content()
        headers = case_insensitive_dict({"x-ms-request-id": str(uuid.uuid4())})
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(reply.headers)
        headers.setdefault("Content-Length", str(len(body)))
        with self.lock:
            self.calls.append(Call(req.method, req.host, req.path, req.query, req.json,
                                   req.headers, reply.status))
            ReplayTransport.sent += 1
            if ReplayTransport.journal is not None:
                ReplayTransport.journal.append(self.calls[-1])
        cls = _RestResponse if _is_rest(request) else _LegacyResponse
        return cls(request, reply.status, headers, body)

    def httpx_transport(self):
        """An ``httpx`` transport answered by this replay, for code that sends with httpx rather than
        azure-core (the traffic simulator: ``simulate(..., transport=t.httpx_transport())``)."""
        import httpx
        from azure.core.rest import HttpRequest

        def handle(request: httpx.Request) -> httpx.Response:
            answer = self.send(HttpRequest(request.method, str(request.url), headers=dict(request.headers),
                                           content=request.read()))
            return httpx.Response(answer.status_code, headers=dict(answer.headers), content=answer.content)
        return httpx.MockTransport(handle)

    # -- answering -------------------------------------------------------------------------

    def _answer(self, req: ReplayRequest) -> Reply:
        with self.lock:
            for fault in self.faults:
                if fault.method in ("*", req.method) and fault.pattern.search(req.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return copy.deepcopy(fault.reply)
            routes = list(self.routes)
        for route in routes:
            match = route.matches(req)
            if match is None:
                continue
            req.match = match
            handler = route.handler
            result = handler(req) if callable(handler) else copy.deepcopy(handler)
            return _as_reply(result, route.status, route.headers)
        if req.host.endswith(".blob.core.windows.net"):
            return self.blobs.handle(req)
        if req.path.startswith("/subscriptions/") and req.host == ARM_HOST:
            return self.arm.handle(req)
        return not_found(f"{req.method} {req.host}{req.path}")

    def _install_default_routes(self) -> None:
        ops = r"/providers/Microsoft\.MachineLearningServices/locations/[^/]+/mfeOperations(Status|Results)/(?P<op>[^/]+)$"
        self.add("GET", ops, lambda r: self.arm.operation(r.match["op"], r.match[1]))
        mlflow = r"/api/2\.0/mlflow/(?P<what>runs/search|runs/get|metrics/get-history|experiments/get|experiments/search)$"
        self.add("*", mlflow, lambda r: self.mlflow.handle(r.match["what"], r))
        self.add("POST", r"^/v1/workspaces/(?P<id>[^/]+)/query$", self._logs, host=re.escape(LOGS_HOST))
        self.add("POST", r"^/v1/\$batch$", self._logs_batch, host=re.escape(LOGS_HOST))
        api = r"[^.]+\.api\.azureml\.ms"
        self.add("GET", r"^/discovery$", lambda r: _discovery(r.host), host=api)
        self.add("GET", r"^/history/v1\.0/.*/workspaces/[^/]+/runs/(?P<run>[^/]+)/children$",
                 lambda r: self.history.children(r.match["run"]), host=api)
        self.add("GET", r"^/history/v1\.0/.*/workspaces/[^/]+/runs/(?P<run>[^/]+)/details$",
                 lambda r: self.history.details(r.match["run"], self.settings.get("storage_account", "replay")),
                 host=api)
        self.add("POST", r"/workspaces/[^/]+/jobs/(?P<job>[^/]+)/cancel$", self._cancel_job, host=re.escape(ARM_HOST))

    def _logs(self, req: ReplayRequest) -> Reply:
        if self._logs_handler is None:
            return arm_error(404, "WorkspaceNotFoundError", "no Log Analytics data in this replay")
        body = req.json or {}
        result = self._logs_handler(body.get("query", ""), body.get("timespan"))
        if isinstance(result, Reply):
            return result
        if isinstance(result, list):
            result = {"tables": result}
        return Reply(200, result)

    def _logs_batch(self, req: ReplayRequest) -> Reply:
        """``POST /v1/$batch`` (``LogsQueryClient.query_batch``): each request answered as a
        single query would be, in a ``{"responses": [{"id", "status", "body"}]}`` envelope."""
        responses = []
        for item in (req.json or {}).get("requests", []):
            body = item.get("body") or {}
            if self._logs_handler is None:
                reply = arm_error(404, "WorkspaceNotFoundError", "no Log Analytics data in this replay")
            else:
                result = self._logs_handler(body.get("query", ""), body.get("timespan"))
                reply = result if isinstance(result, Reply) else Reply(
                    200, {"tables": result} if isinstance(result, list) else result)
            responses.append({"id": item.get("id"), "status": reply.status, "body": reply.json or {}})
        return Reply(200, {"responses": responses})

    def _cancel_job(self, req: ReplayRequest) -> Reply:
        job_path = req.path[: -len("/cancel")]
        job = self.arm.get(job_path)
        if job is None:
            return not_found(f"job {req.match['job']}")
        status = job["properties"].get("status")
        if status in ("Completed", "Failed", "Canceled", "NotResponding", "Paused"):
            return arm_error(400, "UserError", f"Job {req.match['job']} is in a terminal state ({status}).")
        job["properties"]["status"] = "Canceled"
        job.setdefault("systemData", {})["lastModifiedAt"] = _now()
        self.arm.put_raw(job_path, job)
        self.mlflow.set_status(req.match["job"], "KILLED")
        op = self.arm.new_operation()
        return Reply(202, None, headers={"Location": self.arm.op_url(op, "Results"), "Retry-After": "0"})

