"""Local online endpoints (the ``EndpointService`` of the local workspace).

The database holds what should run (endpoints, deployments, traffic, keys); the
supervisor (``services.local.supervisor``) makes it so; the gateways route by it. Here:
reading endpoints, keys and logs, scoring as a client would, and starting or stopping the
supervisor (``up``/``down``: role-checked and audited). The release workflow drives the
endpoints through ``services.local.release_driver``.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Mapping

from ..entities import Deployment, Endpoint, ScoreResult
from ..errors import BackendUnavailable, NotFound
from ..permissions import authorize
from . import audit
from .db import Database, parse_ts, utcnow
from .paths import PROJECT_ROOT, SUPERVISOR_MODULE, console_log_path, gateway_log_path, tail_text
from .processes import pid_alive, running_pid, stop_process


def mask(key: str) -> str:
    return f"{key[:4]}…{key[-4:]}" if len(key) > 12 else "…"


def new_key() -> str:
    return secrets.token_urlsafe(32)


class LocalEndpoints:
    """Endpoints, deployments, keys, scoring (the EndpointService of the local workspace)."""

    def __init__(self, db: Database, root: Path, policy):
        self.db, self.root, self.policy = db, Path(root), policy

    # --- supervisor -----------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        # this workspace's, never a copied folder's original
        return running_pid(self.root, "supervisor", SUPERVISOR_MODULE)

    def up(self, actor: str) -> int:
        """Start the supervisor (and so every gateway and deployment) if it is not running; returns
        its pid. ``operate_endpoints`` (qa, admin); a start is audited (``endpoints.up``)."""
        role = authorize(self.policy, actor, "operate_endpoints")
        pid = self.supervisor_pid()
        if pid:
            return pid
        pid = self.start_supervisor()
        with self.db.write() as c:
            audit.record(c, actor, "endpoints.up", "endpoints", role=role, after={"supervisor_pid": pid})
        return pid

    def start_supervisor(self) -> int:
        """Start the supervisor if it is not running (the release workflow does, as part of an
        operation already authorized); returns its pid."""
        pid = self.supervisor_pid()
        if pid:
            return pid
        self.ensure_endpoints()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "supervisor.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", SUPERVISOR_MODULE, "--workspace", str(self.root)],
                                    cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60   # its imports take seconds, many more on a loaded machine
        while time.monotonic() < deadline:
            pid = self.supervisor_pid()
            if pid:
                return pid
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BackendUnavailable("the endpoint supervisor did not start",
                                 hint=f"See {logs / 'supervisor.log'}.")

    def down(self, actor: str, timeout_s: float = 30) -> bool:
        """Stop the supervisor, which stops every gateway and deployment. False if none ran.
        ``operate_endpoints`` (qa, admin); a stop is audited (``endpoints.down``)."""
        role = authorize(self.policy, actor, "operate_endpoints")
        pid = self.supervisor_pid()
        if not pid:
            return False
        stop_process(pid, timeout_s)
        with self.db.write() as c:
            audit.record(c, actor, "endpoints.down", "endpoints", role=role, before={"supervisor_pid": pid})
        return True

    def wait_gateways(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        for ep in self.db.query("SELECT name FROM endpoints"):
            while True:
                row = self.db.one("SELECT port, gateway_pid FROM endpoints WHERE name = ?", (ep["name"],))
                if row["port"] and pid_alive(row["gateway_pid"]) and http_ok(row["port"]):
                    break
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"the gateway of {ep['name']} did not come up",
                                             hint=f"See {gateway_log_path(self.root, ep['name'])}.")
                time.sleep(0.1)

    # --- reads ----------------------------------------------------------------

    def names(self) -> list[str]:
        return [self.policy.endpoints.staging, self.policy.endpoints.production]

    def ensure_endpoints(self) -> None:
        with self.db.write() as c:
            for name in self.names():
                c.execute("INSERT OR IGNORE INTO endpoints (name, primary_key, secondary_key, created_at)"
                          " VALUES (?, ?, ?, ?)", (name, new_key(), new_key(), utcnow()))

    def _row(self, name: str):
        row = self.db.one("SELECT * FROM endpoints WHERE name = ?", (name,))
        if row is None:
            if name in self.names():
                self.ensure_endpoints()
                return self.db.one("SELECT * FROM endpoints WHERE name = ?", (name,))
            raise NotFound(f"endpoint {name!r} does not exist", hint=f"Endpoints: {', '.join(self.names())}.")
        return row

    def _deployments(self, name: str) -> list[Deployment]:
        rows = self.db.query("SELECT * FROM deployments WHERE endpoint = ? ORDER BY name", (name,))
        return [Deployment(r["name"], r["endpoint"], r["model_name"], r["model_version"],
                           r["state"] if r["desired"] == "running" else "stopped", r["traffic"],
                           parse_ts(r["created_at"]), r["created_by"], r["restarts"], r["last_error"])
                for r in rows]

    def get(self, name: str) -> Endpoint:
        row = self._row(name)
        port = row["port"]
        return Endpoint(
            name=name, scoring_uri=f"http://127.0.0.1:{port}/score" if port else "",
            deployments=tuple(self._deployments(name)), primary_key_masked=mask(row["primary_key"]),
            secondary_key_masked=mask(row["secondary_key"]), gateway_up=pid_alive(row["gateway_pid"]))

    def list(self) -> list[Endpoint]:
        return [self.get(n) for n in self.names()]

    def keys(self, name: str, actor: str) -> tuple[str, str]:
        """Both keys in full (QA and admins)."""
        authorize(self.policy, actor, "show_keys")
        row = self._row(name)
        return row["primary_key"], row["secondary_key"]

    def bearer(self, name: str) -> str:
        """What a client sends as ``Authorization: Bearer``: the primary key (local endpoints take keys)."""
        return self._row(name)["primary_key"]

    def masked_keys(self, name: str) -> tuple[str, str]:
        """Both keys masked (first and last four characters), for anyone."""
        row = self._row(name)
        return mask(row["primary_key"]), mask(row["secondary_key"])

    def console_log(self, endpoint: str, deployment: str, tail: int = 200) -> str:
        return tail_text(console_log_path(self.root, endpoint, deployment), tail)

    def gateway_log(self, endpoint: str, tail: int = 200) -> str:
        return tail_text(gateway_log_path(self.root, endpoint), tail)

    # --- scoring --------------------------------------------------------------

    def invoke(self, name: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
               key: str | None = None, timeout_s: float = 30) -> ScoreResult:
        """POST to the endpoint's scoring URI as a client would (with the primary key)."""
        row = self._row(name)
        if not row["port"] or not pid_alive(row["gateway_pid"]):
            raise BackendUnavailable(f"endpoint {name} is not running",
                                     hint="Start the endpoints: python tollgate.py up (make run does it).")
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {key if key is not None else row['primary_key']}",
                   "x-request-id": str(uuid.uuid4())}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        req = urllib.request.Request(f"http://127.0.0.1:{row['port']}/score",
                                     data=body.encode() if isinstance(body, str) else body,
                                     headers=headers, method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status, raw, h = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, h = e.code, e.read(), e.headers
        except OSError as e:
            raise BackendUnavailable(f"endpoint {name} did not answer: {e}") from e
        latency = (time.perf_counter() - started) * 1000
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return ScoreResult(status, parsed, latency, h.get("x-request-id"), h.get("azureml-model-deployment"),
                           h.get("x-tollgate-model"))


def http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


