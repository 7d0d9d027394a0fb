"""A replayed Azure ML workspace: answers the real SDKs' HTTP requests in memory.

``ReplayTransport`` is an azure-core ``HttpTransport``. Hand it to ``MLClient(...,
transport=t)``, ``LogsQueryClient(..., transport=t)``, an azure-core
``PipelineClient`` or an azure-storage ``BlobClient`` and every request those
clients make is answered here, never on the network:

* **routes** added with ``add(method, path_regex, handler_or_json, status, headers)``;
  the newest route wins, so a test can override anything. A handler gets a
  ``ReplayRequest`` (method, host, path, query, body, ``json``, the regex match)
  and returns a ``Reply``, a ``(status, body[, headers])`` tuple, a JSON-able value
  (answered 200), or ``None`` (answered 404);
* ARM resources under ``/subscriptions/...`` that no route claims are served by
  ``FakeArmState``: PUT stores, GET reads an item or lists a collection, PATCH
  merges, DELETE removes, so a PUT followed by a GET returns the updated entity.
  Resource types in ``FakeArmState.lro_types`` (online endpoints and deployments,
  computes) answer PUT/PATCH/DELETE as long-running operations: 201/202 with
  ``Azure-AsyncOperation`` and ``Location`` headers and an operation-status route
  that answers ``InProgress`` ``lro_polls`` times, then ``Succeeded``;
* blobs (``*.blob.core.windows.net``) are kept by ``FakeBlobStore``: upload (single
  shot or blocks), download (with ranges), properties, delete, listing;
* the workspace's MLflow REST API (``/api/2.0/mlflow/runs/search``, ``runs/get``,
  ``metrics/get-history``) answers from ``FakeMlflow``; run history (a run's child
  steps, its log files as SAS URLs) from ``FakeRunHistory``; ``/discovery`` with the
  regional API host;
* Log Analytics (``POST .../v1/workspaces/{id}/query``, and each query of a
  ``POST .../v1/$batch``) calls the function given to ``set_logs_handler(fn)``: ``fn(query_text, timespan) -> body`` where body is a
  dict ``{"tables": [...]}`` (add ``"error"`` for a partial result), a ``Reply``
  (e.g. an error status), or a list of tables (see ``logs_table``);
* anything else answers **404** — never 5xx, which azure-core would retry.

Every request is recorded in ``transport.calls`` (``Call``: method, host, path,
query, json body, headers) for assertions and counting. ``fail_next(method,
path_regex, status, body, headers, times=1)`` makes the next matching request(s)
fail (403, 404, 429 with ``Retry-After``, 5xx…) before routing. ``sleep`` does not
sleep (it records the delay in ``transport.sleeps``): azure-core's retry back-off
and LRO polling call the transport's ``sleep``, so tests stay fast.

``FakeCredential`` returns a fixed token: tests never build a real credential chain.
``load_fixtures(transport, folder)`` fills the state from JSON fixtures (the demo
workspace in ``services/azure/fixtures``: see its README).
"""
from __future__ import annotations

import base64
import copy
import importlib
import json
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARM_HOST = "management.azure.com"
LOGS_HOST = "api.loganalytics.io"


# --- credential ---------------------------------------------------------------------------

class FakeCredential:
    """A ``TokenCredential`` with a fixed token; never asks anyone for anything."""

    def __init__(self, token: str = "replay-token", expires_in: int = 3600):
        self.token, self.expires_in = token, expires_in
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(tuple(scopes))
        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def get_token_info(self, *scopes: str, options: Any = None):
        from azure.core.credentials import AccessTokenInfo
        self.scopes.append(tuple(scopes))
        return AccessTokenInfo(self.token, int(time.time()) + self.expires_in)

    def close(self) -> None:
        pass


# --- requests, replies, calls ----------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One request as the transport saw it."""
    method: str
    host: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int = 0

    def __repr__(self) -> str:
        return f"<{self.method} {self.host}{self.path} -> {self.status}>"


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> tuple[bytes, str | None]:
        if self.body is not None:
            data = self.body.encode() if isinstance(self.body, str) else self.body
            return data, self.headers.get("Content-Type")
        if self.json is None:
            return b"", None
        return json.dumps(self.json).encode(), "application/json; charset=utf-8"


class ReplayRequest:
    """What a handler sees: the parsed request and the route's regex match."""

    def __init__(self, request: Any, match: re.Match | None = None):
        self.raw = request
        self.method = request.method.upper()
        parts = urlsplit(request.url)
        self.url, self.host = request.url, parts.hostname or ""
        self.path = unquote(parts.path)
        self.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = dict(case_insensitive_dict(request.headers))
        self.body = _request_body(request)
        self.match = match
        self._json: Any = _NOTSET

    @property
    def json(self) -> Any:
        if self._json is _NOTSET:
            try:
                self._json = json.loads(self.body) if self.body else None
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json

    def header(self, name: str, default: str | None = None) -> str | None:
        return case_insensitive_dict(self.headers).get(name, default)


_NOTSET = object()


def _request_body(request: Any) -> bytes:
    content = getattr(request, "content", None) if _is_rest(request) else getattr(request, "data", None)
    if content is None:
        content = getattr(request, "body", None)
    if content is None:
        return b""
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    if isinstance(content, (dict, list)):
        return json.dumps(content).encode()
    if hasattr(content, "read"):
        data = content.read()
        return data.encode() if isinstance(data, str) else data
    if isinstance(content, Iterable):
        return b"".join(c.encode() if isinstance(c, str) else c for c in content)
    return str(content).encode()


def _is_rest(request: Any) -> bool:
    from azure.core.pipeline._tools import is_rest
    return is_rest(request)


class _Internal:
    """Stands in for a socket-level response (only ``close`` is called on it)."""

    def close(self) -> None:
        pass


class _RestResponse(HttpResponseImpl):
    def __init__(self, request, status: int, headers: dict, body: bytes):
        super().__init__(request=request, internal_response=_Internal(), status_code=status,
                         reason=_REASONS.get(status, "Status"), headers=headers,
                         content_type=headers.get("Content-Type"), stream_download_generator=self._chunks)
        self._content = body

    def _chunks(self, pipeline=None, response=None, **kwargs):
        return _Chunks(self._content or b"", self._block_size, self)


class _LegacyResponse(LegacyHttpResponse):
    def __init__(self, request, status: int, headers: dict, body: bytes):
        super().__init__(request, _Internal())
        self.status_code, self.headers = status, headers
        self.reason = _REASONS.get(status, "Status")
        self.content_type = headers.get("Content-Type")
        self._body = body

    def body(self) -> bytes:
        return self._body

    def stream_download(self, pipeline, **kwargs):
        return _Chunks(self._body, self.block_size, self)


class _Chunks:
    """A streamed download (an iterator of byte blocks, as azure-core's generator; the
    storage SDK hangs attributes on it)."""

    def __init__(self, data: bytes, block: int, response: Any):
        self.response = response
        self.content_length = len(data)
        self._it = iter([data[i:i + block] for i in range(0, len(data), block)] or [b""])

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return next(self._it)


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
            304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 412: "Precondition Failed", 416: "Range Not Satisfiable",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def arm_error(status: int, code: str, message: str, headers: dict | None = None) -> Reply:
    """An error body as ARM sends it."""
    return Reply(status, {"error": {"code": code, "message": message}}, headers=headers or {})


def not_found(what: str) -> Reply:
    return arm_error(404, "ResourceNotFound", f"{what} was not found (replay).")


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Any
    status: int = 200
    headers: dict | None = None
    host: str | None = None

    def matches(self, req: ReplayRequest) -> re.Match | None:
        if self.method not in ("*", req.method):
            return None
        if self.host is not None and not re.fullmatch(self.host, req.host):
            return None
        return self.pattern.search(req.path)


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    reply: Reply
    times: int


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


def _as_reply(result: Any, status: int, headers: dict | None) -> Reply:
    if isinstance(result, Reply):
        return result
    if result is None:
        return not_found("resource")
    if isinstance(result, tuple):
        code, body, *rest = result
        extra = rest[0] if rest else {}
        if isinstance(body, (bytes, str)):
            return Reply(code, body=body, headers=dict(extra))
        return Reply(code, json=body, headers=dict(extra))
    return Reply(status, json=result, headers=dict(headers or {}))


# --- ARM resources ----------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_PROVIDER = re.compile(r"^(?P<scope>/subscriptions/[^/]+/resourcegroups/[^/]+/providers/[^/]+)(?P<rest>(/[^/]+)+)$",
                       re.IGNORECASE)


class FakeArmState:
    """ARM resources in memory, keyed by their id (case-insensitively, as ARM does).

    A path whose part after ``providers/NAMESPACE`` has an even number of segments is an
    item (``workspaces/w/models/m``), odd is a collection (``workspaces/w/models``).
    Version resources (``.../versions/N``) are immutable apart from tags, description,
    properties and ``isArchived``: a PUT that changes anything else answers 409, as
    Azure ML does; their container is created on the first PUT and keeps
    ``latestVersion`` / ``nextVersion``.
    """

    lro_types = {"onlineendpoints", "onlinedeployments", "computes", "batchendpoints", "batchdeployments"}
    MUTABLE_VERSION_FIELDS = {"tags", "description", "properties", "isArchived", "stage", "provisioningState"}
    # what the service fills in on a PUT when the request leaves it out (by resource type, lower case)
    defaults: dict[str, dict] = {
        "microsoft.machinelearningservices/workspaces/models/versions": {"flavors": {}, "isArchived": False,
                                                                         "tags": {}, "properties": {}},
        "microsoft.machinelearningservices/workspaces/data/versions": {"isArchived": False, "tags": {},
                                                                       "properties": {}},
        "microsoft.machinelearningservices/workspaces/jobs": {"status": "NotStarted", "tags": {},
                                                              "properties": {}},
    }

    def __init__(self, location: str = "westeurope", subscription: str = "00000000-0000-0000-0000-000000000000"):
        self.location, self.subscription = location, subscription
        self.resources: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.lro_polls = 0          # InProgress answers before an operation succeeds
        self.page_size: int | None = None
        self.lock = threading.RLock()

    # -- direct access (fixtures, handlers) -----------------------------------------------

    @staticmethod
    def key(path: str) -> str:
        return path.rstrip("/").lower()

    def get(self, path: str) -> dict | None:
        with self.lock:
            res = self.resources.get(self.key(path))
            return copy.deepcopy(res) if res is not None else None

    def put_raw(self, path: str, resource: dict) -> dict:
        """Store ``resource`` as is (with ``id``/``name`` filled in)."""
        resource = copy.deepcopy(resource)
        resource.setdefault("id", path.rstrip("/"))
        resource.setdefault("name", path.rstrip("/").rsplit("/", 1)[-1])
        with self.lock:
            self.resources[self.key(path)] = resource
        return copy.deepcopy(resource)

    def children(self, collection: str) -> list[dict]:
        prefix = self.key(collection) + "/"
        with self.lock:
            items = [(k, v) for k, v in self.resources.items()
                     if k.startswith(prefix) and "/" not in k[len(prefix):]]
        return [copy.deepcopy(v) for _, v in sorted(items, key=lambda kv: kv[0])]

    def delete(self, path: str) -> bool:
        key = self.key(path)
        with self.lock:
            if key not in self.resources:
                return False
            for k in [k for k in self.resources if k == key or k.startswith(key + "/")]:
                del self.resources[k]
        return True

    @staticmethod
    def is_item(path: str) -> bool | None:
        m = _PROVIDER.match(path.rstrip("/"))
        if not m:
            return None
        return len(m["rest"].strip("/").split("/")) % 2 == 0

    @staticmethod
    def type_of(path: str) -> str:
        m = _PROVIDER.match(path.rstrip("/"))
        segs = m["rest"].strip("/").split("/") if m else []
        types = segs[0::2]
        ns = m["scope"].rsplit("/", 1)[-1] if m else ""
        return "/".join([ns, *types])

    # -- operations (LRO) -----------------------------------------------------------------

    def new_operation(self, final: str = "Succeeded", error: dict | None = None) -> str:
        op = uuid.uuid4().hex
        with self.lock:
            self.operations[op] = {"remaining": self.lro_polls, "status": final, "error": error}
        return op

    def op_url(self, op: str, kind: str = "Status") -> str:
        return (f"https://{ARM_HOST}/subscriptions/{self.subscription}/providers/Microsoft.MachineLearningServices"
                f"/locations/{self.location}/mfeOperations{kind}/{op}?api-version=2024-04-01")

    def operation(self, op: str, kind: str) -> Reply:
        with self.lock:
            state = self.operations.get(op)
            if state is None:
                return not_found(f"operation {op}")
            if state["remaining"] > 0:
                state["remaining"] -= 1
                status = "InProgress"
            else:
                status = state["status"]
        if kind == "Results":
            return Reply(202, None, headers={"Location": self.op_url(op, "Results"), "Retry-After": "0"}) \
                if status == "InProgress" else Reply(200, None)
        body = {"id": op, "name": op, "status": status, "startTime": _now()}
        if status != "InProgress":
            body["endTime"] = _now()
        if state.get("error") and status != "InProgress":
            body["error"] = state["error"]
        return Reply(200, body, headers={"Retry-After": "0"})

    def _lro_headers(self, op: str) -> dict:
        return {"Azure-AsyncOperation": self.op_url(op, "Status"), "Location": self.op_url(op, "Results"),
                "Retry-After": "0"}

    def _is_lro(self, path: str) -> bool:
        return self.type_of(path).rsplit("/", 1)[-1].lower() in self.lro_types

    # -- HTTP ------------------------------------------------------------------------------

    def handle(self, req: ReplayRequest) -> Reply:
        item = self.is_item(req.path)
        if item is None:
            return not_found(req.path)
        if req.method == "GET":
            return self._get(req, item)
        if not item:
            return not_found(req.path)
        if req.method == "PUT":
            return self._put(req)
        if req.method == "PATCH":
            return self._patch(req)
        if req.method == "DELETE":
            return self._delete(req)
        return not_found(f"{req.method} {req.path}")

    def _get(self, req: ReplayRequest, item: bool) -> Reply:
        if item:
            res = self.get(req.path)
            return Reply(200, res) if res is not None else not_found(req.path.rsplit("/", 2)[-2] + " "
                                                                     + req.path.rsplit("/", 1)[-1])
        parent = req.path.rstrip("/").rsplit("/", 1)[0]
        if self.is_item(parent) and self.get(parent) is None and parent.count("/") > 8:
            return not_found(parent.rsplit("/", 1)[-1])
        items = self.children(req.path)
        view = (req.query.get("listViewType") or "ActiveOnly").lower()
        if view == "activeonly":
            items = [i for i in items if not i.get("properties", {}).get("isArchived")]
        elif view == "archivedonly":
            items = [i for i in items if i.get("properties", {}).get("isArchived")]
        items = _filter_query(items, req.query)
        skip = int(req.query.get("$skip", "0") or 0)
        page = self.page_size or int(req.query.get("$top", "0") or 0) or None
        body: dict[str, Any] = {"value": items[skip:skip + page] if page else items[skip:]}
        if page and skip + page < len(items):
            parts = urlsplit(req.url)
            q = {k: v for k, v in req.query.items() if k != "$skip"}
            q["$skip"] = str(skip + page)
            body["nextLink"] = (f"https://{parts.netloc}{quote(req.path)}?"
                                + "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items()))
        return Reply(200, body)

    def _put(self, req: ReplayRequest) -> Reply:
        body = req.json
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "a JSON object is required")
        path = req.path.rstrip("/")
        parent = path.rsplit("/", 2)[0]
        if parent.count("/") > 8 and self.is_item(parent) and self.get(parent) is None:
            if parent.rsplit("/", 1)[0].lower().endswith(("/models", "/data", "/components", "/environments",
                                                          "/codes")):
                self.put_raw(parent, {"properties": {"latestVersion": None, "nextVersion": "1",
                                                     "isArchived": False, "description": None, "tags": {}},
                                      "type": self.type_of(parent), "systemData": _system_data(req)})
            else:
                return not_found(parent.rsplit("/", 1)[-1])
        with self.lock:
            existing = self.get(path)
            if existing is not None and path.rsplit("/", 2)[-2].lower() == "versions":
                changed = {k for k in set(body.get("properties", {})) | set(existing.get("properties", {}))
                           if k not in self.MUTABLE_VERSION_FIELDS
                           and body.get("properties", {}).get(k) != existing.get("properties", {}).get(k)
                           and body.get("properties", {}).get(k) is not None}
                if changed:
                    return arm_error(409, "UserError",
                                     f"A version {path.rsplit('/', 1)[-1]} of this asset already exists; "
                                     f"only tags, description, properties and isArchived can be updated "
                                     f"({', '.join(sorted(changed))} differ).")
            resource = _deep_merge(existing or {}, {}) if existing else {}
            resource.update({k: v for k, v in body.items() if k not in ("id", "name", "type", "systemData")})
            resource["id"] = existing["id"] if existing else path
            resource["name"] = path.rsplit("/", 1)[-1]
            resource["type"] = self.type_of(path)
            resource["systemData"] = (existing or {}).get("systemData") or _system_data(req)
            resource["systemData"]["lastModifiedAt"] = _now()
            props = resource.setdefault("properties", {})
            for k, v in self.defaults.get(resource["type"].lower(), {}).items():
                if props.get(k) is None:
                    props[k] = copy.deepcopy(v)
            lro = self._is_lro(path)
            if "provisioningState" in props or lro:
                props["provisioningState"] = "Succeeded"
            self.put_raw(path, resource)
            if path.rsplit("/", 2)[-2].lower() == "versions":
                self._bump_container(parent, path.rsplit("/", 1)[-1])
        if lro:
            op = self.new_operation()
            shown = copy.deepcopy(resource)
            shown["properties"]["provisioningState"] = "Updating" if existing else "Creating"
            return Reply(200 if existing else 201, shown, headers=self._lro_headers(op))
        return Reply(200 if existing else 201, resource)

    def _bump_container(self, container: str, version: str) -> None:
        c = self.get(container)
        if c is None:
            return
        props = c.setdefault("properties", {})
        versions = [v["name"] for v in self.children(container + "/versions")]
        numeric = [int(v) for v in versions if v.isdigit()]
        props["latestVersion"] = str(max(numeric)) if numeric else version
        props["nextVersion"] = str(max(numeric) + 1) if numeric else None
        self.put_raw(container, c)

    def _patch(self, req: ReplayRequest) -> Reply:
        with self.lock:
            existing = self.get(req.path)
            if existing is None:
                return not_found(req.path.rsplit("/", 1)[-1])
            merged = _deep_merge(existing, req.json or {})
            self.put_raw(req.path, merged)
        if self._is_lro(req.path):
            op = self.new_operation()
            return Reply(202, None, headers=self._lro_headers(op))
        return Reply(200, merged)

    def _delete(self, req: ReplayRequest) -> Reply:
        found = self.delete(req.path)
        if self._is_lro(req.path) and found:
            op = self.new_operation()
            return Reply(202, None, headers=self._lro_headers(op))
        return Reply(200 if found else 204, None)


def _filter_query(items: list[dict], query: dict[str, str]) -> list[dict]:
    """The list filters of Azure ML collections that matter here: ``tags`` and ``properties``
    (``key`` or ``key=value``, comma separated), ``jobType``."""
    for param in ("tags", "properties"):
        spec = query.get(param)
        if not spec:
            continue
        for cond in spec.split(","):
            k, _, v = cond.partition("=")
            items = [i for i in items if k in (i.get("properties", {}).get(param) or {})
                     and (not v or str(i["properties"][param][k]) == v)]
    if query.get("jobType"):
        items = [i for i in items if i.get("properties", {}).get("jobType") == query["jobType"]]
    return items


def _system_data(req: ReplayRequest) -> dict:
    return {"createdAt": _now(), "createdBy": "replay-user@contoso.com", "createdByType": "User",
            "lastModifiedAt": _now(), "lastModifiedBy": "replay-user@contoso.com", "lastModifiedByType": "User"}


# --- blobs ------------------------------------------------------------------------------------

class FakeBlobStore:
    """Block blobs in memory, keyed by ``/container/path`` (account ignored).

    A blob may be *lazy*: ``put_lazy(path, fn)`` calls ``fn()`` for its bytes on first read
    (the demo's model files are produced this way from the fixtures' recipe).
    """

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.lazy: dict[str, Callable[[], bytes]] = {}
        self.blocks: dict[str, dict[str, bytes]] = {}
        self.lock = threading.RLock()

    def put(self, path: str, data: bytes) -> None:
        with self.lock:
            self.blobs[path] = data
            self.lazy.pop(path, None)

    def put_lazy(self, path: str, fn: Callable[[], bytes]) -> None:
        with self.lock:
            self.lazy[path] = fn

    def read(self, path: str) -> bytes | None:
        with self.lock:
            if path in self.blobs:
                return self.blobs[path]
            fn = self.lazy.get(path)
            if fn is None:
                return None
            data = fn()
            self.blobs[path] = data
            del self.lazy[path]
            return data

    def exists(self, path: str) -> bool:
        with self.lock:
            return path in self.blobs or path in self.lazy

    def list(self, prefix: str) -> list[str]:
        with self.lock:
            return sorted(p for p in {*self.blobs, *self.lazy} if p.startswith(prefix))

    def handle(self, req: ReplayRequest) -> Reply:
        path, comp = req.path, req.query.get("comp")
        headers = {"ETag": '"0x1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT", "x-ms-version": "2025-01-05"}
        if req.method == "PUT" and comp == "block":
            with self.lock:
                self.blocks.setdefault(path, {})[req.query["blockid"]] = req.body
            return Reply(201, None, headers=headers)
        if req.method == "PUT" and comp == "blocklist":
            ids = re.findall(rb"<(?:Latest|Uncommitted|Committed)>([^<]+)</", req.body)
            with self.lock:
                staged = self.blocks.pop(path, {})
                self.put(path, b"".join(staged[i.decode()] for i in ids))
            return Reply(201, None, headers={**headers, "x-ms-request-server-encrypted": "true"})
        if req.method == "PUT" and comp is None:
            if req.header("If-None-Match") == "*" and self.exists(path):
                return Reply(409, body="<Error><Code>BlobAlreadyExists</Code><Message>The specified blob already exists.</Message></Error>",
                             headers={"x-ms-error-code": "BlobAlreadyExists", "Content-Type": "application/xml"})
            self.put(path, req.body)
            return Reply(201, None, headers={**headers, "x-ms-request-server-encrypted": "true"})
        if req.method in ("GET", "HEAD") and comp is None and req.query.get("restype") is None:
            data = self.read(path)
            if data is None:
                return Reply(404, body="<Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.</Message></Error>",
                             headers={"x-ms-error-code": "BlobNotFound", "Content-Type": "application/xml"})
            headers.update({"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream",
                            "Accept-Ranges": "bytes"})
            rng = req.header("x-ms-range") or req.header("Range")
            if rng and req.method == "GET":
                m = re.match(r"bytes=(\d+)-(\d*)", rng)
                start = int(m[1])
                end = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
                if start >= len(data) and len(data) > 0:
                    return Reply(416, body=b"", headers={"x-ms-error-code": "InvalidRange",
                                                         "Content-Range": f"bytes */{len(data)}"})
                chunk = data[start:end + 1]
                headers["Content-Range"] = f"bytes {start}-{max(end, start)}/{len(data)}"
                return Reply(206, body=chunk, headers=headers)
            if req.method == "HEAD":
                headers["Content-Length"] = str(len(data))
                return Reply(200, body=b"", headers=headers)
            return Reply(200, body=data, headers=headers)
        if req.method == "DELETE" and comp is None:
            with self.lock:
                found = self.blobs.pop(path, None) is not None or self.lazy.pop(path, None) is not None
            if not found:
                return Reply(404, body="<Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.</Message></Error>",
                             headers={"x-ms-error-code": "BlobNotFound", "Content-Type": "application/xml"})
            return Reply(202, None, headers={**headers, "x-ms-delete-type-permanent": "true"})
        if req.method == "GET" and comp == "list":
            prefix = req.path.rstrip("/") + "/" + req.query.get("prefix", "")
            names = [p[len(req.path.rstrip("/")) + 1:] for p in self.list(prefix)]
            blobs = "".join(f"<Blob><Name>{n}</Name><Properties><Content-Length>{len(self.read(req.path.rstrip('/') + '/' + n) or b'')}"
                            f"</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>" for n in names)
            xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>{blobs}</Blobs>'
                   f"<NextMarker /></EnumerationResults>")
            return Reply(200, body=xml, headers={"Content-Type": "application/xml"})
        return Reply(404, body="<Error><Code>ResourceNotFound</Code><Message>The specified resource does not exist.</Message></Error>",
                     headers={"x-ms-error-code": "ResourceNotFound", "Content-Type": "application/xml"})


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


# --- fixtures ---------------------------------------------------------------------------------

def load_fixtures(transport: ReplayTransport, folder: Path) -> None:
    """Fill ``transport`` from ``folder``:

    * ``workspace.json`` — ``settings`` (subscription_id, resource_group, workspace_name,
      location, compute, log_analytics_workspace_id, storage_account, ...);
    * ``arm/*.json`` — each a list of ARM resources with their ``id`` (shaped like the
      REST API examples of azure-rest-api-specs);
    * ``mlflow.json`` — ``{"runs": [...MLflow Run JSON...], "history": {run_id: {key: [points]}}}``;
    * ``history.json`` — run history: ``{"runs": [...child runs...], "logs": {run_id: {name: blob}},
      "errors": {run_id: message}}``;
    * ``blobs.json`` — ``{"/container/path": {"file": "relative/path"} | {"text": "..."} |
      {"python": "module:function", "kwargs": {...}}}`` (a ``python`` blob is produced on first
      read; its function gets ``blobs=FakeBlobStore`` plus ``kwargs`` and returns bytes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no replay fixtures in {folder}")
    transport.folder = folder
    ws_file = folder / "workspace.json"
    if ws_file.exists():
        transport.settings = json.loads(ws_file.read_text())["settings"]
        transport.arm.location = transport.settings.get("location", transport.arm.location)
        transport.arm.subscription = transport.settings.get("subscription_id", transport.arm.subscription)
    for f in sorted((folder / "arm").glob("*.json")) if (folder / "arm").is_dir() else []:
        for resource in json.loads(f.read_text()):
            transport.arm.put_raw(resource["id"], resource)
    ml = folder / "mlflow.json"
    if ml.exists():
        data = json.loads(ml.read_text())
        for run in data.get("runs", []):
            transport.mlflow.add_run(run, data.get("history", {}).get(run["info"]["run_id"], {}))
    hist = folder / "history.json"
    if hist.exists():
        data = json.loads(hist.read_text())
        for run in data.get("runs", []):
            transport.history.runs[run["runId"]] = run
        transport.history.logs.update(data.get("logs", {}))
        transport.history.errors.update(data.get("errors", {}))
    blobs = folder / "blobs.json"
    if blobs.exists():
        for path, spec in json.loads(blobs.read_text()).items():
            if "file" in spec:
                transport.blobs.put_lazy(path, lambda p=folder / spec["file"]: p.read_bytes())
            elif "text" in spec:
                transport.blobs.put(path, spec["text"].encode())
            elif "base64" in spec:
                transport.blobs.put(path, base64.b64decode(spec["base64"]))
            elif "python" in spec:
                module, _, fn = spec["python"].partition(":")

                def produce(module=module, fn=fn, kwargs=spec.get("kwargs", {})):
                    return getattr(importlib.import_module(module), fn)(blobs=transport.blobs, **kwargs)
                transport.blobs.put_lazy(path, produce)


def logs_table(name: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> dict:
    """A Log Analytics result table: ``columns`` as (name, type), e.g. ("TimeGenerated", "datetime")."""
    return {"name": name, "columns": [{"name": n, "type": t} for n, t in columns], "rows": rows}


def partial_result(tables: list[dict], message: str = "Query partially succeeded") -> dict:
    """A Log Analytics answer with data *and* an error: ``LogsQueryClient`` returns it as partial."""
    return {"tables": tables, "error": {"code": "PartialError", "message": message,
                                        "details": [{"code": "EngineError", "message": message}]}}


__all__ = ["ReplayTransport", "FakeCredential", "FakeArmState", "FakeBlobStore", "FakeMlflow", "FakeRunHistory", "Reply",
           "ReplayRequest", "Call", "arm_error", "not_found", "load_fixtures", "logs_table", "partial_result",
           "FIXTURES"]
