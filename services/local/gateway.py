"""The gateway in front of one local online endpoint (what Azure's front end does).

``python -m services.local.gateway --workspace PATH --endpoint NAME --port P``

* ``POST /score`` with ``Authorization: Bearer <primary or secondary key>``;
  401 without a valid key, 413 beyond the payload limit, 408 when the body has not
  arrived within ``--body-timeout-s``. A form content type (curl's ``-d``) is sent on
  as JSON: the scoring contract is JSON.
* Routes by the traffic split across healthy deployments, failing over to a warm one
  when none with traffic is healthy (``routing``); the header
  ``azureml-model-deployment: NAME`` pins one deployment, even at 0 % (as Azure).
  A request whose deployment went away before answering a single byte is retried on
  another one (scoring is a pure function: running it twice is harmless); one that
  broke off mid-answer is not (502).
* Assigns every request its own id (a UUID): ``x-request-id`` / ``x-ms-request-id`` of
  the answer, the key of its telemetry record and log lines. The client's own id
  (``x-ms-client-request-id``, else ``x-request-id``) is kept as a correlation id and
  echoed as ``x-ms-client-request-id``; a reused one never merges two requests.
* Every 4xx/5xx — its own, the inference server's, ``score.py``'s — has one body shape:
  ``{"error": {"code": "<HTTP reason, no spaces>", "message": "..."}}``.
* Answers with ``azureml-model-deployment`` and ``x-tollgate-model`` (``name:version``) headers.
* Writes one telemetry record per request, whatever its outcome: latency from the whole
  request received to the answer, the upload time apart.
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
import json
import time
import uuid
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .paths import private_files
from .db import Database
from .logfmt import format_line
from ..policy import load_policy
from .routing import Target, describe, load_routes
from .telemetry_spool import TelemetryWriter
from .telemetry_store import RequestRecord, truncate

REFRESH_S = 0.2
DEPLOYMENT_HEADER = "azureml-model-deployment"
MAX_CLIENT_ID = 200
FORM = b"application/x-www-form-urlencoded"


def error_code(status: int) -> str:
    """``code`` of the error body: the status's reason phrase without spaces (``BadRequest``)."""
    if status == 499:  # nginx's: not in the HTTP registry
        return "ClientClosedRequest"
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"Http{status}"


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"code": error_code(status), "message": message}}).encode()


def error_message(content: bytes) -> str | None:
    """The message of an error body in any shape a deployment answers with: ours
    (``score.py``), the inference server's ``{"message": ...}``, ``{"error": "..."}``, text."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        for value in (error, data.get("message")):
            if isinstance(value, str):
                return value
    return None


def client_request_id(value: bytes | None) -> str | None:
    """The client's id if it is 1-200 printable ASCII characters (it goes into headers and logs)."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if not text or len(text) > MAX_CLIENT_ID or not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"a client request id (x-ms-client-request-id or x-request-id) must be 1 to "
                         f"{MAX_CLIENT_ID} printable ASCII characters")
    return text


class UpstreamError(ConnectionError):
    """The deployment did not give a complete HTTP answer (refused, reset, closed, garbled).
    ``answered``: whether any byte of an answer had arrived (then the model may have run)."""

    def __init__(self, message: str, answered: bool):
        super().__init__(message)
        self.answered = answered


class Upstream:
    """``POST /score`` to a deployment's inference server on 127.0.0.1.

    HTTP/1.1 on asyncio streams: Content-Length or chunked responses, connections kept
    for reuse when the server allows it (gunicorn's sync worker closes every one).
    """

    MAX_IDLE_PER_PORT = 32

    def __init__(self) -> None:
        self._idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def post(self, port: int, body: bytes, content_type: bytes, request_id: bytes,
                   client_id: bytes | None = None) -> tuple[int, bytes, bytes]:
        """(status, body, content type) of the deployment's answer; ``UpstreamError`` if there is none."""
        head = (b"POST /score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\nx-request-id: %s\r\n"
                % (port, content_type, request_id)
                + (b"x-ms-client-request-id: %s\r\n" % client_id if client_id else b"")
                + b"Content-Length: %d\r\n\r\n" % len(body))
        idle = self._idle.get(port)
        while idle:
            reader, writer = idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(port, reader, writer, head + body)
            except UpstreamError as e:
                if e.answered:
                    raise
                break  # the server dropped the kept connection: once more on a new one
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            raise UpstreamError(f"cannot connect to 127.0.0.1:{port}: {type(e).__name__}", answered=False) from e
        return await self._exchange(port, reader, writer, head + body)

    async def _exchange(self, port, reader, writer, request: bytes) -> tuple[int, bytes, bytes]:
        head = b""
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")  # one await for the status line and headers
            status_line, *lines = head[:-4].split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
                raise UpstreamError(f"no HTTP answer from 127.0.0.1:{port}: {status_line[:60]!r}", answered=True)
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
            answered = bool(head or e.partial)
            raise UpstreamError(f"127.0.0.1:{port} closed the connection "
                                f"{'mid-answer' if answered else 'before answering'}", answered) from e
        except UpstreamError:
            writer.close()
            raise
        except (OSError, ValueError, asyncio.LimitOverrunError) as e:  # reset, refused, garbled
            writer.close()
            answered = bool(head) or isinstance(e, asyncio.LimitOverrunError)  # (an endless head)
            raise UpstreamError(f"127.0.0.1:{port}: {type(e).__name__}", answered) from e
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


class Refused(Exception):
    """A request the gateway answers itself, with an error (status, message)."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.close = status, close


class Gateway:
    def __init__(self, root: Path, endpoint: str, max_payload_bytes: int, timeout_s: float,
                 body_timeout_s: float = 10.0):
        self.root, self.endpoint = Path(root), endpoint
        self.max_payload_bytes, self.timeout_s, self.body_timeout_s = max_payload_bytes, timeout_s, body_timeout_s
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
        received: float | None = None  # when the whole body was in (or the gateway stopped waiting for it)
        authorization = content_length = pinned = given_id = given_ms_id = None
        content_type = b"application/json"
        for name, value in scope["headers"]:  # names arrive lower-cased
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"x-request-id":
                given_id = value
            elif name == b"x-ms-client-request-id":
                given_ms_id = value
            elif name == b"azureml-model-deployment":
                pinned = value
        request_id = str(uuid.uuid4()).encode()
        client_id: str | None = None
        body = b""
        target: Target | None = None
        answered = False

        async def finish(status: int, payload: bytes, error: str | None = None,
                         media_type: bytes = b"application/json", close: bool = False) -> None:
            nonlocal answered
            answered = True
            headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(payload)),
                       (b"x-request-id", request_id), (b"x-ms-request-id", request_id)]
            if client_id:
                headers.append((b"x-ms-client-request-id", client_id.encode()))
            if target:
                headers += [(b"azureml-model-deployment", target.deployment.encode()),
                            (b"x-tollgate-model", target.model.encode())]
            if close:  # the rest of the body is not read: this connection cannot carry another request
                headers.append((b"connection", b"close"))
            try:  # written ahead: on disk before the answer leaves, so a kill -9 loses no answered request
                self.telemetry.record(RequestRecord(
                    ts=time.time(), endpoint=self.endpoint, deployment=target.deployment if target else None,
                    model=target.model if target else None, status=status,
                    latency_ms=(time.perf_counter() - (received or started)) * 1000,
                    request_id=request_id.decode("latin-1"),
                    request_body=truncate(body.decode("utf-8", "replace")) if body else None,
                    response_body=truncate(payload.decode("utf-8", "replace")), error=error,
                    client_request_id=client_id, upload_ms=(received - started) * 1000 if received else None))
            except OSError as e:  # a full disk must not stop serving: the loss is in the gateway log
                log("E", f"telemetry record lost ({type(e).__name__}: {e})", request_id)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        async def refuse(status: int, message: str, close: bool = False) -> None:
            log("W", f"POST /score {status}: {message}", request_id)
            await finish(status, error_body(status, message), message, close=close)

        try:
            bad_client_id = None
            try:
                client_id = client_request_id(given_ms_id or given_id)
            except ValueError as e:
                bad_client_id = str(e)
            routes = self.routes
            if authorization is None or not routes.authorized(authorization):
                return await refuse(401, "missing or invalid key: send 'Authorization: Bearer <endpoint key>'")
            if bad_client_id:
                return await refuse(400, bad_client_id)
            if content_length and content_length.isdigit() and int(content_length) > self.max_payload_bytes:
                return await refuse(413, f"payload of {int(content_length)} bytes exceeds the limit of "
                                         f"{self.max_payload_bytes} bytes", close=True)
            try:
                body = await self._read_body(receive)
            except Refused as r:
                received = time.perf_counter()
                return await refuse(r.status, str(r), close=r.close)
            received = time.perf_counter()
            if content_type.partition(b";")[0].strip().lower() == FORM:
                content_type = b"application/json"  # curl -d: the scoring contract is JSON (score.py says if it is not)

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
                                             f"can take the request")

            tried: set[str] = set()
            while True:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        status, payload, media_type = await self.upstream.post(
                            target.port, body, content_type, request_id, client_id.encode() if client_id else None)
                    if status < 400:
                        return await finish(status, payload, None, media_type)
                    error = error_message(payload) or payload.decode("utf-8", "replace")[:500] or f"HTTP {status}"
                    log("W" if status < 500 else "E", f"POST /score {status} from {target.deployment} "
                                                      f"({target.model}): {error}", request_id)
                    return await finish(status, error_body(status, error), error)
                except TimeoutError:
                    return await refuse(504, f"deployment {target.deployment!r} did not answer within "
                                             f"{self.timeout_s:g} s")
                except UpstreamError as e:
                    # the deployment went away under us (crash, restart): if it had not answered anything,
                    # another one may (a warm one when none with traffic is left); a broken answer is final
                    tried.add(target.deployment)
                    retry = None if pinned or e.answered else self.routes.pick(exclude=tried)
                    if retry is None:
                        return await refuse(502, f"deployment {target.deployment!r} is unavailable: {e}")
                    log("W", f"deployment {target.deployment} unavailable ({e}); retrying on {retry.deployment}"
                             + (" (failover: no deployment with traffic is healthy)" if retry.traffic == 0 else ""),
                        request_id)
                    target = retry
        except Exception as e:  # a bug here must still answer, and be counted (once)
            log("E", f"{type(e).__name__} while serving: {e}", request_id)
            if not answered:
                await refuse(500, f"gateway error: {type(e).__name__}")

    async def _read_body(self, receive) -> bytes:
        """The whole body, within the payload limit and ``body_timeout_s``; ``Refused`` otherwise."""
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise Refused(499, "the client closed the connection before sending the whole body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_payload_bytes:
                        raise Refused(413, f"payload exceeds the limit of {self.max_payload_bytes} bytes", close=True)
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise Refused(408, f"the request body did not arrive within {self.body_timeout_s:g} s "
                               f"({size} bytes received)", close=True) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def health(self, request: Request) -> Response:
        live = [t.deployment for t in self.routes.targets if t.healthy]
        return JSONResponse({"endpoint": self.endpoint, "healthy_deployments": live,
                             "traffic": {t.deployment: t.traffic for t in self.routes.targets},
                             "config_version": self.routes.version})

    def app(self):
        # POST /score never reaches Starlette; its /score route is there so other methods get a 405
        rest = Starlette(routes=[Route("/", self.health, methods=["GET"]),
                                 Route("/score", self._post_only, methods=["POST"])],
                         exception_handlers={HTTPException: _http_error, Exception: _server_error},
                         lifespan=self.lifespan)

        async def asgi(scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/score":
                return await self.score(scope, receive, send)
            return await rest(scope, receive, send)
        return asgi

    async def _post_only(self, request: Request) -> Response:
        raise HTTPException(405)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"no route {request.url.path}: POST /score scores, GET / is the health probe",
               405: f"{request.method} {request.url.path} is not allowed: POST /score"}.get(exc.status_code, exc.detail)
    return Response(error_body(exc.status_code, message), exc.status_code, headers=exc.headers,
                    media_type="application/json")


async def _server_error(request: Request, exc: Exception) -> Response:
    log("E", f"{type(exc).__name__} on {request.method} {request.url.path}: {exc}")
    return Response(error_body(500, f"gateway error: {type(exc).__name__}"), 500, media_type="application/json")


def log(level: str, message: str, request_id: bytes | str | None = None) -> None:
    """A line in the gateway log (stdout → ``endpoints/<endpoint>/gateway.log``): routing
    changes and every request it refused or saw fail — the rare events, not the traffic."""
    if isinstance(request_id, bytes):
        request_id = request_id.decode("latin-1")
    print(format_line(level, "gateway", message, request_id), flush=True)


def main(argv: list[str] | None = None) -> None:
    private_files()   # its logs, spools and pid files: the workspace user's alone
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-payload-bytes", type=int, default=1_048_576)
    ap.add_argument("--timeout-s", type=float, default=30.0)
    ap.add_argument("--body-timeout-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    gateway = Gateway(Path(args.workspace), args.endpoint, args.max_payload_bytes, args.timeout_s,
                      args.body_timeout_s)
    # loop and http "auto": uvloop and httptools when installed (much faster than asyncio + h11)
    uvicorn.run(gateway.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
