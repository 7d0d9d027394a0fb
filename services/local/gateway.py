"""The gateway in front of one local online endpoint (what Azure's front end does).

``python -m services.local.gateway --workspace PATH --endpoint NAME --port P``

* ``POST /score`` with ``Authorization: Bearer <primary or secondary key>``;
  401 without a valid key, 413 beyond the payload limit.
* Routes by the traffic split across healthy deployments; the header
  ``azureml-model-deployment: NAME`` pins one deployment, even at 0 % (as Azure).
* Answers with ``x-request-id``, ``azureml-model-deployment`` and
  ``x-tollgate-model`` (``name:version``) headers.
* Writes one telemetry record per request, whatever its outcome.
* Re-reads the routing table when the endpoint's ``config_version`` changes, so
  a traffic shift takes effect within ``REFRESH_S`` without dropping a request.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import random
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .db import Database
from .telemetry_store import RequestRecord, TelemetryWriter, truncate

REFRESH_S = 0.2
DEPLOYMENT_HEADER = "azureml-model-deployment"


@dataclass(frozen=True)
class Target:
    deployment: str
    model: str           # name:version
    port: int
    traffic: int
    healthy: bool


@dataclass(frozen=True)
class Routes:
    version: int
    keys: tuple[str, ...]
    targets: tuple[Target, ...]

    def pick(self, exclude: set[str] = frozenset()) -> Target | None:
        live = [t for t in self.targets if t.traffic > 0 and t.healthy and t.deployment not in exclude]
        if not live:
            return None
        return random.choices(live, weights=[t.traffic for t in live])[0]

    def named(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.deployment == name), None)


def load_routes(db: Database, endpoint: str) -> Routes:
    ep = db.one("SELECT primary_key, secondary_key, config_version FROM endpoints WHERE name = ?", (endpoint,))
    if ep is None:
        return Routes(-1, (), ())
    rows = db.query("SELECT name, model_name, model_version, port, traffic, state FROM deployments"
                    " WHERE endpoint = ? AND desired = 'running' AND port IS NOT NULL", (endpoint,))
    targets = tuple(Target(r["name"], f"{r['model_name']}:{r['model_version']}", r["port"], r["traffic"],
                           r["state"] == "healthy") for r in rows)
    return Routes(ep["config_version"], (ep["primary_key"], ep["secondary_key"]), targets)


class Gateway:
    def __init__(self, root: Path, endpoint: str, max_payload_bytes: int, timeout_s: float):
        self.root, self.endpoint = Path(root), endpoint
        self.max_payload_bytes, self.timeout_s = max_payload_bytes, timeout_s
        self.db = Database(self.root / "tollgate.db")
        self.routes = load_routes(self.db, endpoint)
        self.telemetry: TelemetryWriter | None = None
        self.client: httpx.AsyncClient | None = None

    # --- lifecycle ------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app):
        self.telemetry = TelemetryWriter(self.root)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            yield
        finally:
            refresher.cancel()
            await self.client.aclose()
            self.telemetry.close()  # every record of an answered request is written before exit

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                row = self.db.one("SELECT config_version FROM endpoints WHERE name = ?", (self.endpoint,))
                if row is not None and row[0] != self.routes.version:
                    self.routes = load_routes(self.db, self.endpoint)
            except Exception as e:  # a locked file for a moment: keep the current table
                print(f"gateway: routing refresh failed: {e}", flush=True)

    # --- requests -------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return any(hmac.compare_digest(token.strip(), key) for key in self.routes.keys if key)

    async def score(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        body: bytes = b""
        target: Target | None = None

        def finish(status: int, payload: bytes | str, error: str | None = None,
                   content_type: str = "application/json") -> Response:
            latency = (time.perf_counter() - started) * 1000
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
            self.telemetry.record(RequestRecord(
                ts=time.time(), endpoint=self.endpoint, deployment=target.deployment if target else None,
                model=target.model if target else None, status=status, latency_ms=latency,
                request_id=request_id, request_body=truncate(body.decode("utf-8", "replace")) if body else None,
                response_body=truncate(text), error=error))
            headers = {"x-request-id": request_id, "x-ms-request-id": request_id}
            if target:
                headers[DEPLOYMENT_HEADER] = target.deployment
                headers["x-tollgate-model"] = target.model
            return Response(payload, status_code=status, headers=headers, media_type=content_type)

        def error(status: int, message: str) -> Response:
            return finish(status, json.dumps({"error": message}), message)

        if not self.authorized(request):
            return error(401, "missing or invalid key: send 'Authorization: Bearer <endpoint key>'")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_payload_bytes:
            return error(413, f"payload of {declared} bytes exceeds the limit of {self.max_payload_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_payload_bytes:
                return error(413, f"payload exceeds the limit of {self.max_payload_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)

        pinned = request.headers.get(DEPLOYMENT_HEADER)
        if pinned:
            target = self.routes.named(pinned)
            if target is None:
                known = ", ".join(t.deployment for t in self.routes.targets) or "none"
                return error(404, f"deployment {pinned!r} does not exist on endpoint {self.endpoint!r} (known: {known})")
        else:
            target = self.routes.pick()
            if target is None:
                return error(503, f"no healthy deployment of endpoint {self.endpoint!r} is receiving traffic")

        tried: set[str] = set()
        while True:
            try:
                upstream = await self.client.post(
                    f"http://127.0.0.1:{target.port}/score", content=body,
                    headers={"Content-Type": request.headers.get("content-type", "application/json"),
                             "x-request-id": request_id})
                err = None
                if upstream.status_code >= 400:
                    err = _error_text(upstream.content)
                return finish(upstream.status_code, upstream.content, err,
                              upstream.headers.get("content-type", "application/json"))
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                # the deployment went away under us (restart, scale-in): another one may answer
                tried.add(target.deployment)
                retry = None if pinned else self.routes.pick(exclude=tried)
                if retry is None:
                    return error(502, f"deployment {target.deployment!r} is unavailable: {type(e).__name__}")
                target = retry
            except httpx.TimeoutException:
                return error(504, f"deployment {target.deployment!r} did not answer within {self.timeout_s:g} s")

    async def health(self, request: Request) -> Response:
        live = [t.deployment for t in self.routes.targets if t.healthy]
        return JSONResponse({"endpoint": self.endpoint, "healthy_deployments": live,
                             "traffic": {t.deployment: t.traffic for t in self.routes.targets},
                             "config_version": self.routes.version})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/score", self.score, methods=["POST"]),
                                 Route("/", self.health, methods=["GET"])],
                         lifespan=self.lifespan)


def _error_text(content: bytes) -> str:
    try:
        data = json.loads(content)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])[:500]
    except ValueError:
        pass
    return content.decode("utf-8", "replace")[:500]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-payload-bytes", type=int, default=1_048_576)
    ap.add_argument("--timeout-s", type=float, default=30.0)
    args = ap.parse_args(argv)
    gateway = Gateway(Path(args.workspace), args.endpoint, args.max_payload_bytes, args.timeout_s)
    uvicorn.run(gateway.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
