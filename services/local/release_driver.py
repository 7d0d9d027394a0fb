"""The local endpoints as the release workflow drives them (``services.release.ports.EndpointDriver``).

A deployment is a row of ``deployments`` that the supervisor turns into an inference-server
process; traffic is the rows' ``traffic``, which the endpoint's gateway re-reads when
``config_version`` moves. So creating, stopping and shifting are short write transactions —
a shift inside the ledger's unit of work joins it — and waiting is watching: the new process
answering its health route, the gateway routing by the new split, the gateway holding the
new keys.
"""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Mapping

from ..entities import Endpoint, ModelVersion, ScoreResult
from ..errors import GateFailed
from ..release.ports import Say
from .db import Database, utcnow
from .endpoints import LocalEndpoints, http_ok, new_key
from .ledger import transaction
from .processes import pid_alive, stop_process

POLL_S = 0.1


class LocalEndpointDriver:
    def __init__(self, db: Database, endpoints: LocalEndpoints, policy):
        self.db, self.endpoints, self.policy = db, endpoints, policy

    def names(self) -> list[str]:
        return self.endpoints.names()

    def snapshot(self, env: str) -> Endpoint:
        return self.endpoints.get(env)

    def busy(self, env: str) -> list[str]:
        return []   # nothing changes the local endpoints behind Tollgate's back

    def ensure_running(self) -> None:
        self.endpoints.start_supervisor()

    def create(self, env: str, name: str, mv: ModelVersion, actor: str, *, like: str | None, say: Say) -> None:
        old = self.db.one("SELECT pid FROM deployments WHERE endpoint = ? AND name = ?", (env, name))
        if old is not None:
            with transaction(self.db) as c:
                c.execute("UPDATE deployments SET desired = 'stopped', traffic = 0 WHERE endpoint = ? AND name = ?",
                          (env, name))
                c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))
            stop_process(old["pid"])  # the supervisor would too; doing it here makes the name free at once
        with transaction(self.db) as c:
            c.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (env, name))
            c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, desired, state,"
                      " created_at, created_by) VALUES (?, ?, ?, ?, 0, 'running', 'starting', ?, ?)",
                      (env, name, mv.name, mv.version, utcnow(), actor))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))

    def wait_healthy(self, env: str, name: str, say: Say) -> None:
        """Until the inference server answers its health route. Probed here as well as by the
        supervisor (whose probe runs once per tick), and recorded as healthy at once, so a deploy
        does not wait for the supervisor's next tick."""
        deadline = time.monotonic() + self.policy.endpoints.health_timeout_s
        while True:
            row = self.db.one("SELECT state, port, restarts, last_error FROM deployments WHERE endpoint = ? AND name = ?",
                              (env, name))
            if row["state"] == "healthy":
                return
            if row["state"] == "unhealthy" or row["restarts"] > 0 or time.monotonic() > deadline:
                log = self.endpoints.console_log(env, name, 40)
                raise GateFailed(f"deployment {env}/{name} failed its health probe"
                                 f" ({row['last_error'] or 'did not become healthy in time'}); traffic unchanged",
                                 hint="Its console log:\n" + log)
            if row["port"] and row["state"] == "starting" and http_ok(row["port"]):
                with transaction(self.db) as c:
                    c.execute("UPDATE deployments SET state = 'healthy' WHERE endpoint = ? AND name = ?"
                              " AND state = 'starting' AND port = ?", (env, name, row["port"]))
                    c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))
                continue
            say(f"{name} is {row['state']}")
            time.sleep(POLL_S)

    def shift(self, env: str, traffic: Mapping[str, int], say: Say) -> None:
        with transaction(self.db) as c:
            for dep, pct in traffic.items():
                c.execute("UPDATE deployments SET traffic = ? WHERE endpoint = ? AND name = ?", (pct, env, dep))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))

    def settle(self, env: str, traffic: Mapping[str, int], timeout_s: float = 5) -> None:
        """Return once the gateway routes by the new split (so 'done' means done)."""
        row = self.endpoints._row(env)
        port = row["port"]
        if not port or not pid_alive(row["gateway_pid"]):
            return  # not running: it routes by the current split when it starts
        want = {k: v for k, v in self.snapshot(env).traffic.items() if v}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    got = {k: v for k, v in json.loads(r.read())["traffic"].items() if v}
                if got == want:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)

    def stop(self, env: str, name: str, say: Say) -> None:
        with transaction(self.db) as c:
            c.execute("UPDATE deployments SET desired = 'stopped', traffic = 0 WHERE endpoint = ? AND name = ?",
                      (env, name))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))

    def invoke(self, env: str, payload, *, deployment: str | None = None) -> ScoreResult:
        return self.endpoints.invoke(env, payload, deployment=deployment)

    def console_log(self, env: str, deployment: str, tail: int = 40) -> str:
        return self.endpoints.console_log(env, deployment, tail)

    def regenerate_key(self, env: str, which: str, say: Say) -> None:
        self.endpoints._row(env)
        with transaction(self.db) as c:
            c.execute(f"UPDATE endpoints SET {which}_key = ?, config_version = config_version + 1 WHERE name = ?",
                      (new_key(), env))
        self._wait_gateway_config(env)  # once this returns, the old key is refused

    def _wait_gateway_config(self, env: str, timeout_s: float = 5) -> None:
        """Return once a running gateway has loaded the endpoint's current configuration (keys)."""
        row = self.endpoints._row(env)
        if not row["port"] or not pid_alive(row["gateway_pid"]):
            return  # not running: it loads the current keys when it starts
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{row['port']}/", timeout=1) as r:
                    if json.loads(r.read()).get("config_version", -1) >= row["config_version"]:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)


__all__ = ["LocalEndpointDriver"]
