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

``/score`` is the hot path and is written for it (``docs/benchmarks-gateway.md``):
a plain ASGI handler (no Starlette request/response objects or middleware) and a
small HTTP/1.1 client on asyncio streams for the call to the deployment (httpx
cost more CPU per request than the inference server itself). Starlette serves
the rest: the health route, 404/405, the lifespan.
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
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .db import Database
from .logfmt import format_line
from ..policy import load_policy
from .telemetry_spool import TelemetryWriter
from .telemetry_store import RequestRecord, truncate

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
    # derived once per routing table, not per request
    key_bytes: tuple[bytes, ...] = field(init=False, default=())
    live: tuple[Target, ...] = field(init=False, default=())

    def __post_init__(self):
        object.__setattr__(self, "key_bytes", tuple(k.encode() for k in self.keys if k))
        object.__setattr__(self, "live", tuple(t for t in self.targets if t.traffic > 0 and t.healthy))

    def pick(self, exclude: set[str] = frozenset()) -> Target | None:
        live = [t for t in self.live if t.deployment not in exclude] if exclude else self.live
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        return random.choices(live, weights=[t.traffic for t in live])[0]

    def named(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.deployment == name), None)

    def authorized(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        return any(hmac.compare_digest(token, key) for key in self.key_bytes)


def load_routes(db: Database, endpoint: str) -> Routes:
    ep = db.one("SELECT primary_key, secondary_key, config_version FROM endpoints WHERE name = ?", (endpoint,))
    if ep is None:
        return Routes(-1, (), ())
    rows = db.query("SELECT name, model_name, model_version, port, traffic, state FROM deployments"
                    " WHERE endpoint = ? AND desired = 'running' AND port IS NOT NULL", (endpoint,))
    targets = tuple(Target(r["name"], f"{r['model_name']}:{r['model_version']}", r["port"], r["traffic"],
                           r["state"] == "healthy") for r in rows)
    return Routes(ep["config_version"], (ep["primary_key"], ep["secondary_key"]), targets)


class UpstreamError(ConnectionError):
    """The deployment did not give a complete HTTP answer (refused, reset, closed, garbled)."""


class Upstream:
    """``POST /score`` to a deployment's inference server on 127.0.0.1.

    HTTP/1.1 on asyncio streams: Content-Length or chunked responses, connections kept
    for reuse when the server allows it (gunicorn's sync worker closes every one).
    """

    MAX_IDLE_PER_PORT = 32

    def __init__(self) -> None:
        self._idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def post(self, port: int, body: bytes, content_type: bytes, request_id: bytes) -> tuple[int, bytes, bytes]:
        """(status, body, content type) of the deployment's answer; ``OSError`` if there is none."""
        head = (b"POST /score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\nx-request-id: %s\r\n"
                b"Content-Length: %d\r\n\r\n" % (port, content_type, request_id, len(body)))
        idle = self._idle.get(port)
        while idle:
            reader, writer = idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(port, reader, writer, head + body)
            except (UpstreamError, ConnectionError):
                break  # the server dropped the kept connection: once more on a new one
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return await self._exchange(port, reader, writer, head + body)

    async def _exchange(self, port, reader, writer, request: bytes) -> tuple[int, bytes, bytes]:
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")  # one await for the status line and headers
            status_line, *lines = head[:-4].split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
                raise UpstreamError(f"no HTTP answer from 127.0.0.1:{port}: {status_line[:60]!r}")
            status = int(rest[:3])
            length, chunked, content_type = None, False, b"application/json"
            keep = version == b"HTTP/1.1"
            for line in lines:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
                elif name == b"content-type":
                    content_type = value
            if status < 200 or status in (204, 304):
                payload = b""
            elif chunked:
                payload = await self._read_chunked(reader)
            elif length is not None:
                payload = await reader.readexactly(length)
            else:
                payload, keep = await reader.read(), False
        except asyncio.IncompleteReadError as e:
            writer.close()
            raise UpstreamError(f"127.0.0.1:{port} closed the connection mid-answer") from e
        except BaseException:
            writer.close()
            raise
        idle = self._idle.setdefault(port, [])
        if keep and len(idle) < self.MAX_IDLE_PER_PORT:
            idle.append((reader, writer))
        else:
            writer.close()
        return status, payload, content_type

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


class Gateway:
    def __init__(self, root: Path, endpoint: str, max_payload_bytes: int, timeout_s: float):
        self.root, self.endpoint = Path(root), endpoint
        self.max_payload_bytes, self.timeout_s = max_payload_bytes, timeout_s
        self.db = Database(self.root / "tollgate.db")
        self.routes = load_routes(self.db, endpoint)
        self.telemetry: TelemetryWriter | None = None
        self.upstream = Upstream()

    # --- lifecycle ------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app):
        self.telemetry = TelemetryWriter(self.root, self.endpoint,
                                         load_policy(self.root).telemetry.capture_for(self.endpoint))
        log("I", f"endpoint {self.endpoint}: {describe(self.routes)}")
        refresher = asyncio.create_task(self._refresh_forever())
        try:
            yield
        finally:
            refresher.cancel()
            self.upstream.close()
            self.telemetry.close()  # every record of an answered request is written before exit

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                row = self.db.one("SELECT config_version FROM endpoints WHERE name = ?", (self.endpoint,))
                if row is not None and row[0] != self.routes.version:
                    self.routes = load_routes(self.db, self.endpoint)
                    log("I", describe(self.routes))
            except Exception as e:  # a locked file for a moment: keep the current table
                log("W", f"routing refresh failed: {e}")

    # --- requests -------------------------------------------------------------

    async def score(self, scope, receive, send) -> None:
        """``POST /score`` as a plain ASGI handler."""
        started = time.perf_counter()
        authorization = content_length = pinned = request_id = None
        content_type = b"application/json"
        for name, value in scope["headers"]:  # names arrive lower-cased
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"azureml-model-deployment":
                pinned = value
        request_id = request_id or str(uuid.uuid4()).encode()
        body = b""
        target: Target | None = None
        answered = False

        async def finish(status: int, payload: bytes, error: str | None = None,
                         media_type: bytes = b"application/json") -> None:
            nonlocal answered
            answered = True
            headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(payload)),
                       (b"x-request-id", request_id), (b"x-ms-request-id", request_id)]
            if target:
                headers += [(b"azureml-model-deployment", target.deployment.encode()),
                            (b"x-tollgate-model", target.model.encode())]
            try:  # written ahead: on disk before the answer leaves, so a kill -9 loses no answered request
                self.telemetry.record(RequestRecord(
                    ts=time.time(), endpoint=self.endpoint, deployment=target.deployment if target else None,
                    model=target.model if target else None, status=status,
                    latency_ms=(time.perf_counter() - started) * 1000, request_id=request_id.decode("latin-1"),
                    request_body=truncate(body.decode("utf-8", "replace")) if body else None,
                    response_body=truncate(payload.decode("utf-8", "replace")), error=error))
            except OSError as e:  # a full disk must not stop serving: the loss is in the gateway log
                log("E", f"telemetry record lost ({type(e).__name__}: {e})", request_id)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        async def refuse(status: int, message: str) -> None:
            log("W", f"POST /score {status}: {message}", request_id)
            await finish(status, json.dumps({"error": message}).encode(), message)

        try:
            routes = self.routes
            if authorization is None or not routes.authorized(authorization):
                return await refuse(401, "missing or invalid key: send 'Authorization: Bearer <endpoint key>'")
            if content_length and content_length.isdigit() and int(content_length) > self.max_payload_bytes:
                return await refuse(413, f"payload of {int(content_length)} bytes exceeds the limit of "
                                         f"{self.max_payload_bytes} bytes")
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return await refuse(499, "the client closed the connection before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_payload_bytes:
                    return await refuse(413, f"payload exceeds the limit of {self.max_payload_bytes} bytes")
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

            if pinned:
                target = routes.named(pinned.decode("latin-1"))
                if target is None:
                    known = ", ".join(t.deployment for t in routes.targets) or "none"
                    return await refuse(404, f"deployment {pinned.decode('latin-1')!r} does not exist on endpoint "
                                             f"{self.endpoint!r} (known: {known})")
            else:
                target = routes.pick()
                if target is None:
                    return await refuse(503, f"no healthy deployment of endpoint {self.endpoint!r} "
                                             f"is receiving traffic")

            tried: set[str] = set()
            while True:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        status, payload, media_type = await self.upstream.post(
                            target.port, body, content_type, request_id)
                    if status < 400:
                        return await finish(status, payload, None, media_type)
                    error = _error_text(payload)
                    log("W" if status < 500 else "E", f"POST /score {status} from {target.deployment} "
                                                      f"({target.model}): {error}", request_id)
                    return await finish(status, payload, error, media_type)
                except TimeoutError:  # before OSError: TimeoutError is one
                    return await refuse(504, f"deployment {target.deployment!r} did not answer within "
                                             f"{self.timeout_s:g} s")
                except (OSError, ValueError) as e:
                    # the deployment went away under us (restart, scale-in): another one may answer
                    tried.add(target.deployment)
                    retry = None if pinned else self.routes.pick(exclude=tried)
                    if retry is None:
                        return await refuse(502, f"deployment {target.deployment!r} is unavailable: "
                                                 f"{type(e).__name__}")
                    log("W", f"deployment {target.deployment} unavailable ({type(e).__name__}); "
                             f"retrying on {retry.deployment}", request_id)
                    target = retry
        except Exception as e:  # a bug here must still answer, and be counted (once)
            log("E", f"{type(e).__name__} while serving: {e}", request_id)
            if not answered:
                await refuse(500, f"gateway error: {type(e).__name__}")

    async def health(self, request: Request) -> Response:
        live = [t.deployment for t in self.routes.targets if t.healthy]
        return JSONResponse({"endpoint": self.endpoint, "healthy_deployments": live,
                             "traffic": {t.deployment: t.traffic for t in self.routes.targets},
                             "config_version": self.routes.version})

    def app(self):
        # POST /score never reaches Starlette; its /score route is there so other methods get a 405
        rest = Starlette(routes=[Route("/", self.health, methods=["GET"]),
                                 Route("/score", self._post_only, methods=["POST"])],
                         lifespan=self.lifespan)

        async def asgi(scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/score":
                return await self.score(scope, receive, send)
            return await rest(scope, receive, send)
        return asgi

    async def _post_only(self, request: Request) -> Response:
        return Response(status_code=405)


def describe(routes: Routes) -> str:
    targets = ", ".join(f"{t.deployment} ({t.model}) {t.traffic}%{'' if t.healthy else ' not healthy'}"
                        for t in routes.targets)
    return f"routing v{routes.version}: {targets or 'no deployments'}"


def log(level: str, message: str, request_id: bytes | str | None = None) -> None:
    """A line in the gateway log (stdout → ``endpoints/<endpoint>/gateway.log``): routing
    changes and every request it refused or saw fail — the rare events, not the traffic."""
    if isinstance(request_id, bytes):
        request_id = request_id.decode("latin-1")
    print(format_line(level, "gateway", message, request_id), flush=True)


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
    # loop and http "auto": uvloop and httptools when installed (much faster than asyncio + h11)
    uvicorn.run(gateway.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
