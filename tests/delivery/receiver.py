"""A webhook receiver on 127.0.0.1 for the notification tests: records every POST and answers
with a scripted sequence of status codes (``statuses``, then ``default``)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    at: float              # time.time() when it arrived
    path: str              # with the query string
    body: Any              # parsed JSON (or the raw text if not JSON)
    content_type: str
    answered: int


class Receiver:
    def __init__(self, statuses: tuple[int, ...] = (), default: int = 200, headers: dict | None = None):
        self.statuses, self.default, self.headers = list(statuses), default, dict(headers or {})
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                    receiver.received.append(Received(time.time(), self.path, body,
                                                      self.headers.get("Content-Type", ""), status))
                self.send_response(status)
                for k, v in receiver.headers.items():
                    self.send_header(k, v)
                text = b"ok" if status < 400 else b"receiver says no"
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook-receiver")

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, event: str | None = None) -> list[Any]:
        with self._lock:
            items = list(self.received)
        return [r.body for r in items if event is None or (isinstance(r.body, dict) and r.body.get("event") == event)]

    def wait_for(self, predicate, timeout_s: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                items = list(self.received)
            found = [r for r in items if predicate(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
