"""Replay of the online side of an Azure ML workspace, on top of ``ReplayTransport``.

``install_online(transport, folder=FIXTURES / "online")`` adds, to a transport made by
``services.azure.replay``:

* **online endpoints and deployments** as ARM resources (``endpoints.json``,
  ``deployments.json``, shaped like the REST API examples of azure-rest-api-specs
  ``OnlineEndpoint/*`` and ``OnlineDeployment/*``); the generic ARM state serves GET,
  list, PUT (long-running, with ``Azure-AsyncOperation``) and DELETE;
* ``POST …/onlineEndpoints/E/listKeys`` and ``…/regenerateKeys`` (keys in ``keys.json``;
  regeneration is a long-running operation that changes the key);
* ``POST …/onlineEndpoints/E/token`` for an ``AMLToken`` endpoint: the body Azure returned in the SDK
  team's recording (``token.json``, verbatim: its token is the sanitiser's ``"Sanitized"``); a 400
  for an endpoint with another auth mode (the replay's choice: no recording asks);
* ``POST …/deployments/D/getLogs`` (``logs/E-D.txt``; ``{"content": …}``);
* **scoring**: ``POST https://E.REGION.inference.ml.azure.com/score`` checks the bearer
  against the endpoint's ``authMode`` (``Key``: its keys; ``AMLToken``: the token the token route
  issued; ``AADToken``: the replay credential's token ``REPLAY_TOKEN``) — 401 otherwise — routes by ``azureml-model-deployment`` (404 for an unknown one) or by
  the traffic split (``replay.traffic.Router``), and answers as ``score.py`` would: the
  request is parsed by the project's ``score.parse`` (400 with its message for a bad one)
  and the deployment's model predicts (``OnlineReplay.predictor``; by default the model
  version's ``model.pkl`` read from the fake blob store). Every request a deployment
  answered is kept in ``OnlineReplay.traffic`` (``replay.traffic.TrafficLog``);
* **Log Analytics**: ``set_logs_handler`` answers Tollgate's queries from
  ``loganalytics.json`` by the view named in their first line (``// tollgate:VIEW``; the
  replay does not execute KQL), filtered by the endpoint the query names; the ``stats``
  view also counts what the replay served in the query's time span (so a canary is judged
  on the requests that reached it);
  ``OnlineReplay.partial[VIEW] = message`` answers that view as a partial result,
  ``OnlineReplay.log_errors[VIEW] = Reply`` as an error;
* **the audit container** (``tollgate-audit``): append blobs (create, Append Block with
  ``x-ms-blob-append-offset``, ranged reads, listing), block blobs, metadata and
  **leases** (acquire/renew/release/break, 409 ``LeaseAlreadyPresent``), seeded from
  ``audit.jsonl``.

``OnlineReplay`` (returned, also ``transport.online``) holds the state tests poke at:
``keys``, ``logs``, ``broken`` (deployment → ``"wrong"`` predictions or an HTTP status),
``slow`` (deployment → seconds each answer takes), ``scored`` (the scoring requests seen, with
the ``Authorization`` header they carried), ``tokens`` (endpoint → the Azure ML token issued),
``traffic`` (what was served, for telemetry), ``audit`` (the ``FakeAuditStore``).
"""
from __future__ import annotations

import copy
import io
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .credential import REPLAY_TOKEN
from .fixtures import FIXTURES
from .http import ARM_HOST, Reply, ReplayRequest, arm_error
from .logs import partial_result
from .traffic import Router, TrafficLog
from .transport import ReplayTransport

ONLINE_FIXTURES = FIXTURES / "online"
TOKEN_FIXTURE = ONLINE_FIXTURES / "token.json"
AUDIT_CONTAINER = "tollgate-audit"
MARKER = re.compile(r"^//\s*tollgate:(?P<view>[a-z_]+)")
_EP = r"/onlineEndpoints/(?P<ep>[^/]+)"


def _scope(transport: ReplayTransport) -> str:
    s = transport.settings
    return (f"/subscriptions/{s.get('subscription_id', transport.arm.subscription)}"
            f"/resourceGroups/{s.get('resource_group', 'rg')}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{s.get('workspace_name', 'ws')}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class OnlineReplay:
    transport: ReplayTransport
    scope: str
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    token_body: dict = field(default_factory=dict)                 # what POST …/token answers
    tokens: dict[str, str] = field(default_factory=dict)           # endpoint -> Azure ML token issued
    aad_token: str = REPLAY_TOKEN                                  # the signed-in identity's token
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    broken: dict[tuple[str, str], Any] = field(default_factory=dict)
    slow: dict[tuple[str, str], float] = field(default_factory=dict)
    traffic_log: TrafficLog = field(default_factory=TrafficLog)
    router: Router = field(default_factory=Router)
    partial: dict[str, str] = field(default_factory=dict)
    log_errors: dict[str, Reply] = field(default_factory=dict)
    scored: list[dict] = field(default_factory=list)
    queries: list[tuple[str, str]] = field(default_factory=list)   # (view, query text)
    predictor: Callable[[str, int, Any], list[float]] | None = None
    audit: "FakeAuditStore | None" = None

    # -- ARM helpers ------------------------------------------------------------------------

    def endpoint_path(self, ep: str) -> str:
        return f"{self.scope}/onlineEndpoints/{ep}"

    def endpoint(self, ep: str) -> dict | None:
        return self.transport.arm.get(self.endpoint_path(ep))

    def deployments(self, ep: str) -> list[dict]:
        return self.transport.arm.children(self.endpoint_path(ep) + "/deployments")

    def traffic(self, ep: str) -> dict[str, int]:
        return dict((self.endpoint(ep) or {}).get("properties", {}).get("traffic") or {})

    # -- handlers ---------------------------------------------------------------------------

    def put_endpoint(self, req: ReplayRequest) -> Reply:
        """ARM keeps an endpoint's read-only properties (scoring URI, swagger URI) across a PUT."""
        path = req.path.rstrip("/")
        before = self.transport.arm.get(path)
        reply = self.transport.arm.handle(req)
        after = self.transport.arm.get(path)
        if after is not None and reply.status < 300:
            ep = path.rsplit("/", 1)[-1]
            location = self.transport.settings.get("location") or self.transport.arm.location
            old = (before or {}).get("properties", {})
            props = after.setdefault("properties", {})
            props["scoringUri"] = old.get("scoringUri") or f"https://{ep}.{location}.inference.ml.azure.com/score"
            props["swaggerUri"] = old.get("swaggerUri") or f"https://{ep}.{location}.inference.ml.azure.com/swagger.json"
            self.transport.arm.put_raw(path, after)
        return reply

    def list_keys(self, req: ReplayRequest) -> Reply:
        ep = req.match["ep"]
        if self.endpoint(ep) is None:
            return arm_error(404, "ResourceNotFound", f"endpoint {ep} was not found (replay).")
        k = self.keys.setdefault(ep, {"primaryKey": secrets.token_urlsafe(24), "secondaryKey": secrets.token_urlsafe(24)})
        return Reply(200, dict(k))

    def regenerate_keys(self, req: ReplayRequest) -> Reply:
        ep = req.match["ep"]
        if self.endpoint(ep) is None:
            return arm_error(404, "ResourceNotFound", f"endpoint {ep} was not found (replay).")
        which = str((req.json or {}).get("keyType", "Primary")).lower()
        k = self.keys.setdefault(ep, {"primaryKey": "", "secondaryKey": ""})
        k["primaryKey" if which == "primary" else "secondaryKey"] = secrets.token_urlsafe(24)
        op = self.transport.arm.new_operation()
        return Reply(202, None, headers=self.transport.arm._lro_headers(op))

    def auth_mode(self, ep: str) -> str:
        return str((self.endpoint(ep) or {}).get("properties", {}).get("authMode") or "Key").lower()

    def get_token(self, req: ReplayRequest) -> Reply:
        ep = req.match["ep"]
        if self.endpoint(ep) is None:
            return arm_error(404, "ResourceNotFound", f"endpoint {ep} was not found (replay).")
        if self.auth_mode(ep) != "amltoken" or not self.token_body:
            return arm_error(400, "BadArgument", f"endpoint {ep} does not use AMLToken authentication (replay).")
        self.tokens[ep] = self.token_body["accessToken"]
        return Reply(200, copy.deepcopy(self.token_body))

    def accepted(self, ep: str) -> set[str]:
        """The bearers endpoint ``ep`` takes, by its auth mode."""
        mode = self.auth_mode(ep)
        if mode == "amltoken":
            return {self.tokens[ep]} if ep in self.tokens else set()
        if mode == "aadtoken":
            return {self.aad_token}
        keys = self.keys.get(ep, {})
        return {k for k in (keys.get("primaryKey"), keys.get("secondaryKey")) if k}

    def get_logs(self, req: ReplayRequest) -> Reply:
        ep, dep = req.match["ep"], req.match["dep"]
        if self.transport.arm.get(f"{self.endpoint_path(ep)}/deployments/{dep}") is None:
            return arm_error(404, "ResourceNotFound", f"deployment {dep} of {ep} was not found (replay).")
        tail = int((req.json or {}).get("tail") or 0)
        text = self.logs.get((ep, dep), "")
        lines = text.splitlines()
        return Reply(200, {"content": "\n".join(lines[-tail:] if tail else lines)})

    def score(self, req: ReplayRequest) -> Reply:
        ep = req.host.split(".", 1)[0]
        endpoint = self.endpoint(ep)
        if endpoint is None:
            return Reply(404, {"message": f"endpoint {ep} not found"})
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.accepted(ep):
            return Reply(401, {"message": "Invalid authentication credentials"},
                         headers={"WWW-Authenticate": "Bearer"})
        names = {d["name"]: d for d in self.deployments(ep)}
        pinned = req.header("azureml-model-deployment")
        if pinned:
            dep = names.get(pinned)
            if dep is None:
                return Reply(404, {"message": f"deployment {pinned} not found on {ep}"})
        else:
            chosen = self.router.pick(ep, {k: v for k, v in self.traffic(ep).items() if k in names})
            if chosen is None:
                return Reply(404, {"message": "no deployment takes traffic"})
            dep = names[chosen]
        started = time.perf_counter()
        reply = self._answer(ep, dep, pinned, req)
        delay = self.slow.get((ep, dep["name"]), 0.0)
        if delay:
            time.sleep(delay)
        self.traffic_log.add(ep, dep["name"], reply.status, (time.perf_counter() - started) * 1000)
        return reply

    def _answer(self, ep: str, dep: dict, pinned: str | None, req: ReplayRequest) -> Reply:
        rid = str(uuid.uuid4())
        headers = {"azureml-model-deployment": dep["name"], "x-request-id": rid, "x-ms-request-id": rid}
        self.scored.append({"endpoint": ep, "deployment": dep["name"], "pinned": pinned, "body": req.body,
                            "authorization": req.header("Authorization")})
        broken = self.broken.get((ep, dep["name"]))
        if isinstance(broken, int):
            return Reply(broken, {"message": f"deployment {dep['name']} failed (replay)"}, headers=headers)
        model = _model_ref(dep["properties"].get("model"))
        if model is None:
            return Reply(500, {"message": "deployment has no model"}, headers=headers)
        import score  # the project's scoring script: the same request parsing as on Azure
        with _SCORE_LOCK:
            features_before = score.features
            try:
                score.features = self.features_of(*model)
                try:
                    frame = score.parse(req.body.decode("utf-8", "replace"))
                except score.BadRequest as e:
                    return Reply(400, {"error": str(e)}, headers=headers)
            finally:
                score.features = features_before
        preds = [float(p) for p in self.predict(model[0], model[1], frame)]
        if broken == "wrong":
            preds = [p + 1000.0 for p in preds]
        return Reply(200, {"predictions": preds}, headers=headers)

    # -- the model behind a deployment ----------------------------------------------------

    def predict(self, name: str, version: int, frame) -> list[float]:
        if self.predictor is not None:
            return list(self.predictor(name, version, frame))
        return list(self._model(name, version)[0].predict(frame))

    def features_of(self, name: str, version: int) -> list[str]:
        """From the version's ``model.json`` (the pickle only when there is none): a deployment
        answered by ``predictor`` needs no loadable model file."""
        meta = self.transport.blobs.read(self._model_blob_base(name, version) + "model.json")
        if meta:
            return json.loads(meta)["features"]
        return self._model(name, version)[1]

    def _model(self, name: str, version: int):
        key = (name, version)
        if key not in _MODELS:
            import joblib
            base = self._model_blob_base(name, version)
            pkl = self.transport.blobs.read(base + "model.pkl")
            meta = self.transport.blobs.read(base + "model.json")
            if pkl is None:
                raise LookupError(f"no model.pkl for {name}:{version} under {base}")
            model = joblib.load(io.BytesIO(pkl))
            features = json.loads(meta)["features"] if meta else list(getattr(model, "feature_names_in_", []))
            _MODELS[key] = (model, features)
        return _MODELS[key]

    def _model_blob_base(self, name: str, version: int) -> str:
        """``/container/path/`` of a model version's files, from its ``modelUri``."""
        mv = self.transport.arm.get(f"{self.scope}/models/{name}/versions/{version}") or {}
        uri = str(mv.get("properties", {}).get("modelUri") or "")
        m = re.search(r"/datastores/(?P<ds>[^/]+)/paths/(?P<path>.+)$", uri)
        if not m:
            return f"/azureml/models/{name}/{version}/"
        ds = self.transport.arm.get(f"{self.scope}/datastores/{m['ds']}") or {}
        container = ds.get("properties", {}).get("containerName") or "azureml"
        return f"/{container}/{m['path'].strip('/')}/"

    # -- Log Analytics ----------------------------------------------------------------------

    def logs_query(self, query: str, timespan: Any):
        m = MARKER.match(query or "")
        view = m["view"] if m else "unknown"
        self.queries.append((view, query))
        if view in self.log_errors:
            return copy.deepcopy(self.log_errors[view])
        table = self.tables.get(view)
        if table is None:
            return arm_error(400, "BadArgumentError", f"the replay has no answer for the query {view!r}")
        table = copy.deepcopy(table)
        if view == "stats":     # the fixture's recorded rows, and what the replay served in the span
            table["rows"] = table["rows"] + self.traffic_log.stats_rows(*_span(timespan))
        table = _filter_endpoint(table, query)
        if view in self.partial:
            return partial_result([table], self.partial[view])
        return {"tables": [table]}


_SCORE_LOCK = threading.Lock()
_MODELS: dict[tuple[str, int], tuple[Any, list[str]]] = {}
_ENDPOINT_FILTERS = (re.compile(r'EndpointName\s*=~\s*"((?:[^"\\]|\\.)*)"'),
                     re.compile(r'endpoint\s*=~\s*"((?:[^"\\]|\\.)*)"'),
                     re.compile(r'endswith\s*"/onlineendpoints/((?:[^"\\]|\\.)*)"'))


_REQUEST_FILTER = re.compile(r'XRequestId\s*=~\s*"((?:[^"\\]|\\.)*)"')
_TEXT_FILTER = re.compile(r'\| where text contains "((?:[^"\\]|\\.)*)"')


def _filter_endpoint(table: dict, query: str) -> dict:
    """Rows of the endpoint and request id the query filters on, and of its ``text contains``
    search (the replay's stand-in for those where clauses; nothing else of the KQL is evaluated)."""
    names = [c["name"] for c in table["columns"]]
    m = _REQUEST_FILTER.search(query)
    if m and "request_id" in names:
        wanted = json.loads(f'"{m[1]}"').lower()
        i = names.index("request_id")
        table["rows"] = [r for r in table["rows"] if str(r[i]).lower() == wanted]
    m = _TEXT_FILTER.search(query)
    if m and "text" in names:
        needle = json.loads(f'"{m[1]}"').lower()
        i = names.index("text")
        table["rows"] = [r for r in table["rows"] if needle in str(r[i]).lower()]
    col = next((names.index(c) for c in ("endpoint", "EndpointName") if c in names), None)
    if col is None:
        return table
    for rx in _ENDPOINT_FILTERS:
        m = rx.search(query)
        if m:
            wanted = json.loads(f'"{m[1]}"').lower()
            table["rows"] = [r for r in table["rows"] if str(r[col]).lower() == wanted]
            break
    return table


def _span(timespan: Any) -> tuple[datetime | None, datetime | None]:
    """``start/end`` of an ISO 8601 interval as Log Analytics gets it (else the whole log)."""
    start, sep, end = str(timespan or "").partition("/")
    if not sep:
        return None, None
    try:
        return (datetime.fromisoformat(start.replace("Z", "+00:00")),
                datetime.fromisoformat(end.replace("Z", "+00:00")))
    except ValueError:
        return None, None


def _model_ref(model: Any) -> tuple[str, int] | None:
    m = re.search(r"/models/([^/]+)/versions/(\d+)$", str(model or ""), re.IGNORECASE) \
        or re.match(r"^azureml:([^:/]+):(\d+)$", str(model or ""))
    return (m[1], int(m[2])) if m else None


# --- append blobs, block blobs, metadata and leases (the audit container) -------------------

class FakeAuditStore:
    """Blob semantics the audit trail and the operation locks rely on, for one container.

    Blobs under ``immutable`` prefixes behave as under the container's time-based retention
    policy with protected append writes (what the audit module's docstring asks for):
    they can be created, read and appended to, never overwritten, changed or deleted
    (409 ``BlobImmutableDueToPolicy``)."""

    def __init__(self, container: str = AUDIT_CONTAINER, max_blocks: int = 50_000,
                 immutable: tuple[str, ...] = ("audit/",)):
        self.container = container
        self.immutable = tuple(f"/{container}/{p}" for p in immutable)
        self.max_blocks = max_blocks
        self.blobs: dict[str, bytearray] = {}
        self.types: dict[str, str] = {}
        self.blocks: dict[str, int] = {}
        self.meta: dict[str, dict[str, str]] = {}
        self.leases: dict[str, tuple[str, float, int]] = {}  # path -> (lease id, expires at (inf: infinite), seconds)
        self.clock: Callable[[], float] = time.monotonic
        self.lock = threading.RLock()
        self.on_seed: list[Callable[[str, bytes], None]] = []   # called after each seed(name, data)

    def seed(self, name: str, data: bytes) -> None:
        """Set an append blob's content (fixtures); one block per line."""
        path = f"/{self.container}/{name}"
        with self.lock:
            self.blobs[path] = bytearray(data)
            self.types[path] = "AppendBlob"
            self.blocks[path] = data.count(b"\n")
        for fn in self.on_seed:
            fn(name, data)

    def lines(self, prefix: str = "audit/") -> list[dict]:
        """Every audit line, oldest first (for assertions)."""
        out = []
        with self.lock:
            for path in sorted(p for p in self.blobs if p.startswith(f"/{self.container}/{prefix}")):
                out += [json.loads(x) for x in bytes(self.blobs[path]).splitlines() if x.strip()]
        return out

    def _lease(self, path: str) -> str | None:
        held = self.leases.get(path)
        if held and held[1] > self.clock():
            return held[0]
        return None

    def handle(self, req: ReplayRequest) -> Reply:
        path, comp = req.path, req.query.get("comp")
        base = {"ETag": f'"0x{uuid.uuid4().hex[:12].upper()}"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                "x-ms-version": "2025-01-05"}
        with self.lock:
            if req.method == "GET" and req.query.get("restype") == "container" and comp == "list":
                return self._list(req)
            locked = path.startswith(self.immutable) and path in self.blobs
            if locked and (req.method == "DELETE" or (req.method == "PUT" and comp in (None, "metadata", "blocklist"))):
                if not (req.method == "PUT" and comp is None and req.header("If-None-Match") == "*"):
                    return _storage_error(409, "BlobImmutableDueToPolicy", "This operation is not permitted as the "
                                                                           "blob is immutable due to a policy.")
            if req.method == "PUT" and comp is None:
                if req.header("If-None-Match") == "*" and path in self.blobs:
                    return _storage_error(409, "BlobAlreadyExists", "The specified blob already exists.")
                if self._lease(path) and req.header("x-ms-lease-id") != self._lease(path):
                    return _storage_error(412, "LeaseIdMissing", "There is currently a lease on the blob.")
                self.blobs[path] = bytearray(req.body or b"")
                self.types[path] = req.header("x-ms-blob-type") or "BlockBlob"
                self.blocks[path] = 0
                self.meta[path] = _meta_of(req)
                return Reply(201, None, headers={**base, "x-ms-request-server-encrypted": "true"})
            if path not in self.blobs:
                return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
            if req.method == "PUT" and comp == "appendblock":
                if self.types.get(path) != "AppendBlob":
                    return _storage_error(409, "InvalidBlobType", "The blob type is invalid for this operation.")
                if self.blocks[path] >= self.max_blocks:
                    return _storage_error(409, "BlockCountExceedsLimit", "The committed block count cannot exceed "
                                                                         "the maximum limit of 50,000 blocks.")
                offset = len(self.blobs[path])
                self.blobs[path] += req.body
                self.blocks[path] += 1
                return Reply(201, None, headers={**base, "x-ms-blob-append-offset": str(offset),
                                                 "x-ms-blob-committed-block-count": str(self.blocks[path]),
                                                 "x-ms-request-server-encrypted": "true"})
            if req.method == "PUT" and comp == "lease":
                return self._lease_action(req, path, base)
            if req.method == "PUT" and comp == "metadata":
                held = self._lease(path)
                if held and req.header("x-ms-lease-id") != held:
                    return _storage_error(412, "LeaseIdMissing", "There is currently a lease on the blob.")
                self.meta[path] = _meta_of(req)
                return Reply(200, None, headers=base)
            if req.method in ("GET", "HEAD") and comp is None:
                return self._read(req, path, base)
            if req.method == "DELETE" and comp is None:
                if self._lease(path) and req.header("x-ms-lease-id") != self._lease(path):
                    return _storage_error(412, "LeaseIdMissing", "There is currently a lease on the blob.")
                for d in (self.blobs, self.types, self.blocks, self.meta, self.leases):
                    d.pop(path, None)
                return Reply(202, None, headers=base)
        return _storage_error(400, "UnsupportedHttpVerb", f"{req.method} comp={comp} is not replayed")

    def _lease_action(self, req: ReplayRequest, path: str, base: dict) -> Reply:
        action = (req.header("x-ms-lease-action") or "").lower()
        held = self._lease(path)
        given = req.header("x-ms-lease-id")
        if action == "acquire":
            if held and held != req.header("x-ms-proposed-lease-id"):
                return _storage_error(409, "LeaseAlreadyPresent", "There is already a lease present.")
            duration = int(req.header("x-ms-lease-duration") or -1)
            lease_id = req.header("x-ms-proposed-lease-id") or str(uuid.uuid4())
            self.leases[path] = (lease_id, float("inf") if duration < 0 else self.clock() + duration, duration)
            return Reply(201, None, headers={**base, "x-ms-lease-id": lease_id})
        if action == "renew":
            current = self.leases.get(path)
            if not current or current[0] != given:
                return _storage_error(409, "LeaseIdMismatchWithLeaseOperation", "The lease ID does not match.")
            self.leases[path] = (given, current[1] if current[1] == float("inf") else self.clock() + current[2],
                                 current[2])
            return Reply(200, None, headers={**base, "x-ms-lease-id": given})
        if action == "release":
            current = self.leases.get(path)
            if current and current[0] != given:
                return _storage_error(409, "LeaseIdMismatchWithLeaseOperation", "The lease ID does not match.")
            self.leases.pop(path, None)
            return Reply(200, None, headers=base)
        if action == "break":
            self.leases.pop(path, None)
            return Reply(202, None, headers={**base, "x-ms-lease-time": "0"})
        return _storage_error(400, "InvalidHeaderValue", f"lease action {action!r}")

    def _read(self, req: ReplayRequest, path: str, base: dict) -> Reply:
        data = bytes(self.blobs[path])
        held = self._lease(path)
        headers = {**base, "x-ms-blob-type": self.types.get(path, "BlockBlob"),
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                   "x-ms-lease-state": "leased" if held else "available",
                   "x-ms-lease-status": "locked" if held else "unlocked",
                   "x-ms-blob-committed-block-count": str(self.blocks.get(path, 0)),
                   **{f"x-ms-meta-{k}": v for k, v in self.meta.get(path, {}).items()}}
        if held:
            headers["x-ms-lease-duration"] = "fixed"
        if req.method == "HEAD":
            return Reply(200, body=b"", headers={**headers, "Content-Length": str(len(data))})
        rng = req.header("x-ms-range") or req.header("Range")
        if rng:
            m = re.match(r"bytes=(\d+)-(\d*)", rng)
            start = int(m[1])
            if start >= len(data):
                return _storage_error(416, "InvalidRange", "The range specified is invalid for the current size "
                                                           "of the resource.", {"Content-Range": f"bytes */{len(data)}"})
            end = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
            return Reply(206, body=data[start:end + 1],
                         headers={**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        return Reply(200, body=data, headers=headers)

    def _list(self, req: ReplayRequest) -> Reply:
        prefix = f"/{self.container}/" + req.query.get("prefix", "")
        items = "".join(
            f"<Blob><Name>{p[len(self.container) + 2:]}</Name><Properties>"
            f"<Content-Length>{len(self.blobs[p])}</Content-Length><BlobType>{self.types.get(p, 'BlockBlob')}"
            f"</BlobType></Properties></Blob>" for p in sorted(self.blobs) if p.startswith(prefix))
        xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="{self.container}">'
               f"<Blobs>{items}</Blobs><NextMarker /></EnumerationResults>")
        return Reply(200, body=xml, headers={"Content-Type": "application/xml", "x-ms-version": "2025-01-05"})


def _meta_of(req: ReplayRequest) -> dict[str, str]:
    return {k[len("x-ms-meta-"):]: v for k, v in req.headers.items() if k.lower().startswith("x-ms-meta-")}


def _storage_error(status: int, code: str, message: str, extra: dict | None = None) -> Reply:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Reply(status, body=body, headers={"x-ms-error-code": code, "Content-Type": "application/xml",
                                             **(extra or {})})


# --- installing -------------------------------------------------------------------------------

def _fill(value: Any, scope: str, location: str) -> Any:
    if isinstance(value, str):
        return value.replace("{scope}", scope).replace("{location}", location)
    if isinstance(value, list):
        return [_fill(v, scope, location) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, scope, location) for k, v in value.items()}
    return value


def install_online(transport: ReplayTransport, folder: Path | str | None = ONLINE_FIXTURES) -> OnlineReplay:
    """Add the online endpoints' routes and fixtures to ``transport`` (module docstring)."""
    scope = _scope(transport)
    # deployments are long-running on ARM (PUT and DELETE answer 201/202 + Azure-AsyncOperation)
    transport.arm.lro_types = set(transport.arm.lro_types) | {"deployments"}
    online = OnlineReplay(transport, scope)
    online.audit = FakeAuditStore()
    online.token_body = _read_json(TOKEN_FIXTURE, {}).get("body", {})   # Azure's recorded answer, for any folder
    location = transport.settings.get("location") or transport.arm.location
    if folder is not None:
        folder = Path(folder)
        for ep in _fill(_read_json(folder / "endpoints.json", []), scope, location):
            transport.arm.put_raw(f"{scope}/onlineEndpoints/{ep['name']}", ep)
        for ep_name, deps in _fill(_read_json(folder / "deployments.json", {}), scope, location).items():
            for dep in deps:
                transport.arm.put_raw(f"{scope}/onlineEndpoints/{ep_name}/deployments/{dep['name']}", dep)
        online.keys.update(_read_json(folder / "keys.json", {}))
        for f in sorted((folder / "logs").glob("*.txt")) if (folder / "logs").is_dir() else []:
            ep_name, _, dep = f.stem.partition("--")
            online.logs[(ep_name, dep)] = f.read_text()
        online.tables.update(_read_json(folder / "loganalytics.json", {}))
        audit = folder / "audit.jsonl"
        releases = _read_json(folder / "releases.json", {})
        seeded = audit.read_bytes().split(b"\n")[:-1] if audit.exists() else []

        def resolve(name: str, data: bytes) -> None:
            """Release tags naming seeded records by line (``@audit:N``) get the record's id in the
            blob as it is now (fixtures seeded later, e.g. the registry's records, move it)."""
            if name == "audit/000000.jsonl":
                _apply_release_tags(transport, scope, releases, _offsets(data, seeded))
        online.audit.on_seed.append(resolve)
        if seeded:
            online.audit.seed("audit/000000.jsonl", b"".join(line + b"\n" for line in seeded))
        else:
            _apply_release_tags(transport, scope, releases, [])
    ws = r"/workspaces/[^/]+"
    transport.add("PUT", ws + _EP + r"$", online.put_endpoint, host=re.escape(ARM_HOST))
    transport.add("POST", ws + _EP + r"/listKeys$", online.list_keys, host=re.escape(ARM_HOST))
    transport.add("POST", ws + _EP + r"/regenerateKeys$", online.regenerate_keys, host=re.escape(ARM_HOST))
    transport.add("POST", ws + _EP + r"/token$", online.get_token, host=re.escape(ARM_HOST))
    transport.add("POST", ws + _EP + r"/deployments/(?P<dep>[^/]+)/getLogs$", online.get_logs,
                  host=re.escape(ARM_HOST))
    transport.add("POST", r"^/score$", online.score, host=r"[^.]+\.[^.]+\.inference\.ml\.azure\.com")
    transport.add("*", rf"^/{AUDIT_CONTAINER}(/|$)", online.audit.handle, host=r"[^.]+\.blob\.core\.windows\.net")
    transport.set_logs_handler(online.logs_query)
    transport.online = online  # type: ignore[attr-defined]
    return online


def _offsets(data: bytes, lines: list[bytes]) -> list[int]:
    """Where each of ``lines`` starts in ``data`` (an audit blob), in ``lines``' order."""
    starts: dict[bytes, int] = {}
    pos = 0
    for line in data.split(b"\n"):
        starts.setdefault(line, pos)
        pos += len(line) + 1
    return [starts.get(line, -1) for line in lines]


def _apply_release_tags(transport: ReplayTransport, scope: str, releases: dict, offsets: list[int]) -> None:
    """Release state of the fixture's model versions (``releases.json``: ``{"name:version": {tag: value}}``;
    ``"@audit:N"`` is the id of the seeded audit trail's line N)."""
    for ref, tags in releases.items():
        name, _, version = ref.rpartition(":")
        path = f"{scope}/models/{name}/versions/{version}"
        mv = transport.arm.get(path)
        if mv is None:
            continue
        props = mv.setdefault("properties", {})
        merged = dict(props.get("tags") or {})
        for k, v in tags.items():
            if isinstance(v, str) and v.startswith("@audit:"):
                n = int(v[len("@audit:"):])
                if n >= len(offsets) or offsets[n] < 0:
                    continue
                v = str(offsets[n])
            merged[k] = v
        props["tags"] = merged
        transport.arm.put_raw(path, mv)


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


__all__ = ["install_online", "OnlineReplay", "FakeAuditStore", "ONLINE_FIXTURES", "AUDIT_CONTAINER", "MARKER"]
