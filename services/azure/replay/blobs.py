"""Blob storage in memory: block blobs, ranges, listing (``*.blob.core.windows.net``)."""
from __future__ import annotations

import re
import threading
from typing import Callable

from .http import ReplayRequest, Reply

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

