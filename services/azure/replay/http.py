"""Requests, replies and routes of the replay transport; ARM error bodies."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

ARM_HOST = "management.azure.com"
LOGS_HOST = "api.loganalytics.io"


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

