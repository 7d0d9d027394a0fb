"""Workspaces with live local endpoints, and a client that talks to them as a user's code would.

Endpoints are real processes (supervisor, one gateway per endpoint, one inference
server per deployment). ``live_workspace`` copies the seeded demo template, yields
the workspace and at teardown stops its endpoints and fails if any process of the
workspace is left behind. Test modules build their own module-scoped fixture on it,
so a module deploys once and shares the endpoints between its tests.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import requests

from services.local.telemetry_store import decoded_rows
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from tests.conftest import copy_workspace

MODEL = "diabetes-regressor"
FEATURES_ROW = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]  # the ten diabetes features of one patient
QA, LEAD, LEE, SUPPORT, ADMIN = ("qa@contoso.com", "lead@contoso.com", "lee@contoso.com",
                                 "support@contoso.com", "admin@contoso.com")


# --- processes ----------------------------------------------------------------

def workspace_processes(root: Path) -> list[tuple[int, str]]:
    """Live processes that belong to the workspace: the supervisor and gateways name it on their
    command line; inference servers get their model folder (inside it) in AZUREML_MODEL_DIR."""
    root_s = str(Path(root).resolve())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                if f.read().rsplit(") ", 1)[1][0] == "Z":
                    continue  # exited, waiting to be reaped
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        model_dir = next((e[len(b"AZUREML_MODEL_DIR="):].decode(errors="replace") for e in env
                          if e.startswith(b"AZUREML_MODEL_DIR=")), "")
        if root_s in cmd or model_dir.startswith(root_s + "/"):
            found.append((int(entry.name), cmd.strip()))
    return found


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def live_workspace(template: Path, folder: Path) -> Iterator[LocalWorkspace]:
    """A private copy of the demo workspace; whatever endpoints it starts are stopped afterwards."""
    ws = LocalWorkspace(copy_workspace(template, folder / "ws"))
    try:
        yield ws
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)
        leftovers = wait_for_exit(ws.root, 15)
        ws.close()
        assert not leftovers, f"processes left behind by {ws.root}: {leftovers}"


def wait_for_exit(root: Path, timeout_s: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = workspace_processes(root)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cold_ws(demo_template, tmp_path_factory) -> Iterator[LocalWorkspace]:
    """A demo workspace copy in which nothing is deployed (for rules refused before any process starts)."""
    with live_workspace(demo_template, tmp_path_factory.mktemp("cold")) as ws:
        yield ws


# --- the client ---------------------------------------------------------------

@dataclass
class Client:
    """Sends scoring requests with ``requests`` and remembers each one, for telemetry checks."""
    sent: list[str] = field(default_factory=list)          # request ids, in order
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, uri: str, body: str | bytes, key: str | None = None, *, request_id: str | None = None,
             deployment: str | None = None, extra: dict | None = None, timeout_s: float = 30) -> requests.Response:
        request_id = request_id or f"test-{uuid.uuid4()}"
        headers = {"Content-Type": "application/json", "x-request-id": request_id, **(extra or {})}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if deployment:
            headers["azureml-model-deployment"] = deployment
        self.sent.append(request_id)
        return self.session.post(uri, body, headers=headers, timeout=timeout_s)


def telemetry_rows(root: Path, request_ids: list[str] | None = None) -> list[dict]:
    """Rows of ``<workspace>/telemetry.db`` (the gateways' request log), optionally only these ids:
    the gateway's (``request_id``, from a response's ``x-request-id``) or the client's own
    (``client_request_id``, the ``x-request-id`` it sent)."""
    path = Path(root) / "telemetry.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        if request_ids is None:
            return decoded_rows(conn)
        return [row for i in range(0, len(request_ids), 500) for row in decoded_rows(conn, request_ids[i:i + 500])]
    finally:
        conn.close()


def sent_id(row: dict) -> str:
    """The id a test knows a telemetry row by: the one its client sent, else the gateway's."""
    return row["client_request_id"] or row["request_id"]


def wait_telemetry(root: Path, request_ids: list[str], timeout_s: float = 15) -> list[dict]:
    """The telemetry rows of ``request_ids`` once each has at least one (the writer batches every 50 ms)."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = telemetry_rows(root, list(wanted))
        if {sent_id(r) for r in rows} | {r["request_id"] for r in rows} >= wanted or time.monotonic() > deadline:
            time.sleep(0.3)  # one more flush interval: a duplicate would show up now
            return telemetry_rows(root, list(wanted))
        time.sleep(0.1)


def scoring(ws: LocalWorkspace, env: str) -> tuple[str, str]:
    """The scoring URI and primary key of an endpoint."""
    return ws.endpoints.get(env).scoring_uri, ws.endpoints.keys(env, QA)[0]


# --- steady load ----------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    seq: int
    request_id: str
    sent: float            # time.time() when the request left the client
    done: float
    status: int | None     # None: no HTTP answer at all (connection error, timeout)
    deployment: str | None
    model: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


class SteadyLoad:
    """``rate`` scoring requests per second from a thread pool, on loopback, until ``stop()``.

    Bounded: it never runs longer than ``max_s`` nor sends more than ``rate * max_s`` requests.
    Each request carries its own ``x-request-id`` (``load-<run>-<seq>``) so telemetry can be
    matched one to one.
    """

    def __init__(self, uri: str, key: str, *, rate: float = 50, max_s: float = 240, workers: int = 16,
                 body: str | None = None):
        self.uri, self.key, self.rate, self.max_s = uri, key, rate, max_s
        self.body = body or '{"data": [' + str(FEATURES_ROW) + "]}"
        self.run_id = uuid.uuid4().hex[:8]
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="load")
        self._scheduler = threading.Thread(target=self._schedule, name="load-scheduler", daemon=True)

    def __enter__(self) -> "SteadyLoad":
        self.started = time.time()
        self._scheduler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        self._scheduler.join(self.max_s + 5)
        self._pool.shutdown(wait=True)
        self.outcomes.sort(key=lambda o: o.seq)
        return self.outcomes

    def _schedule(self) -> None:
        start = time.monotonic()
        for seq in range(int(self.rate * self.max_s)):
            due = start + seq / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._pool.submit(self._one, seq)

    def _one(self, seq: int) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        request_id = f"load-{self.run_id}-{seq}"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}",
                   "x-request-id": request_id}
        sent = time.time()
        try:
            r = session.post(self.uri, self.body, headers=headers, timeout=30)
            outcome = Outcome(seq, request_id, sent, time.time(), r.status_code,
                              r.headers.get("azureml-model-deployment"), r.headers.get("x-tollgate-model"),
                              None if r.status_code == 200 else r.text[:300])
        except requests.RequestException as e:
            outcome = Outcome(seq, request_id, sent, time.time(), None, None, None, f"{type(e).__name__}: {e}")
        with self._lock:
            self.outcomes.append(outcome)

    @property
    def request_ids(self) -> list[str]:
        return [o.request_id for o in self.outcomes]
