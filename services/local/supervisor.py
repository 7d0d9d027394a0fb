"""The supervisor of a local workspace's endpoints.

``python -m services.local.supervisor_daemon --workspace PATH`` (started by
``tollgate.py up``, by ``make run`` and on demand by a deploy) keeps what runs
equal to what the database says should run, every ``TICK_S``:

* one gateway process per endpoint, on the endpoint's port;
* one inference-server process per deployment whose ``desired`` is ``running``;
  a new one is probed until healthy; one that dies is restarted and the crash is
  recorded in the audit trail as an incident; ``stopped`` ones are terminated;
* when a crash leaves no deployment with traffic healthy, the gateway fails over to a
  warm one (``routing``): the supervisor records ``endpoint.failover`` with the crash,
  and ``endpoint.failback`` once a deployment with traffic is healthy again.

Beside the control loop, two threads (so that neither a slow webhook nor a canary's
traffic shift ever delays a restart):

* **releases** (every ``RELEASE_TICK_S``): advances canary rollouts
  (``services.canary.advance_rollouts``), and finds the events other processes cause —
  a model version registered by a run (``candidate_ready``) and, every
  ``HEALTH_EVERY_S`` (from ``HEALTH_GRACE_S`` after the start), endpoint health turning
  degraded or back;
* **notifications** (every ``NOTIFY_TICK_S``): delivers the outbox to the webhooks of
  ``[notifications]``, with retries (``services.local.outbox``).

One supervisor per workspace (an exclusive lock on ``supervisor.lock``, a pid file naming
the workspace: ``processes.run_single``). It survives a restart of the console — the console
is only a client — and a new supervisor adopts the processes a previous one left running.
When its workspace folder is gone (deleted, or replaced by another database), it stops its
gateways and deployments and exits.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ..failure import last_error_line
from ..policy import load_policy
from . import audit, retention
from .db import Database, utcnow
from .paths import PROJECT_ROOT, console_log_path, gateway_log_path, tail_text
from .processes import kill_group, pid_alive, reap_when_done, run_single, stop_process
from .routing import load_routes

TICK_S = 0.5
RELEASE_TICK_S = 0.5
NOTIFY_TICK_S = 0.5
HEALTH_EVERY_S = 10.0
EXIT_LOG_LINES = 80      # of a dead deployment's console log, searched for why it died
HEALTH_GRACE_S = 30.0   # after a start, endpoints coming up are not "down"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(port: int, path: str = "/") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    reap_when_done(proc)
    return proc.pid


def file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Supervisor:
    """``open_workspace(root)`` makes the workspace the release and notification threads work on
    (handed in by the entry module, ``services.local.supervisor_daemon``, so that this module
    does not import the workspace that starts it)."""

    def __init__(self, root: Path, open_workspace=None):
        self.root = Path(root).resolve()
        self.open_workspace = open_workspace
        self.policy = load_policy(self.root)
        self.db = Database(self.root / "tollgate.db")
        self.db_file = file_identity(self.db.path)
        self.started_at: dict[tuple[str, str], float] = {}
        self.stopping = False
        self.stop_event = threading.Event()

    def tick(self) -> None:
        self.ensure_gateways()
        self.ensure_deployments()

    # --- gateways -------------------------------------------------------------

    def ensure_gateways(self) -> None:
        for ep in self.db.query("SELECT name, port, gateway_pid FROM endpoints"):
            if pid_alive(ep["gateway_pid"]):
                continue
            port = ep["port"] if ep["port"] and not port_open(ep["port"]) else free_port()
            crashed = ep["gateway_pid"] is not None  # it was started and is gone: an incident
            pid = spawn([sys.executable, "-m", "services.local.gateway", "--workspace", str(self.root),
                         "--endpoint", ep["name"], "--port", str(port),
                         "--max-payload-bytes", str(self.policy.endpoints.max_payload_bytes),
                         "--timeout-s", str(self.policy.endpoints.request_timeout_s),
                         "--body-timeout-s", str(self.policy.endpoints.body_timeout_s)],
                        gateway_log_path(self.root, ep["name"]))
            with self.db.write() as c:
                c.execute("UPDATE endpoints SET port = ?, gateway_pid = ? WHERE name = ?", (port, pid, ep["name"]))
                if crashed:
                    audit.record(c, "supervisor", "gateway.crashed", ep["name"], before={"pid": ep["gateway_pid"]},
                                 after={"action": "restart", "pid": pid, "port": port}, role="system")
            print(f"{utcnow()} gateway {ep['name']} started on 127.0.0.1:{port} (pid {pid})", flush=True)

    # --- deployments ----------------------------------------------------------

    def ensure_deployments(self) -> None:
        rows = self.db.query("SELECT d.*, m.path AS model_path FROM deployments d JOIN models m"
                             " ON m.name = d.model_name AND m.version = d.model_version")
        for d in rows:
            key = (d["endpoint"], d["name"])
            if d["desired"] == "stopped":
                if d["pid"]:
                    stop_process(d["pid"])
                    self._set(d, pid=None, state="stopped")
                continue
            alive = pid_alive(d["pid"])
            if d["pid"] and not alive:
                # it was running and is gone: an incident, then a restart
                was = d["state"]
                with self.db.write() as c:
                    c.execute("UPDATE deployments SET pid = NULL, state = 'starting', restarts = restarts + 1,"
                              " last_error = ? WHERE endpoint = ? AND name = ?",
                              (self._exit_reason(d, was), d["endpoint"], d["name"]))
                    c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?",
                              (d["endpoint"],))
                    audit.record(c, "supervisor", "deployment.crashed", f"{d['endpoint']}/{d['name']}",
                                 before={"pid": d["pid"], "state": was, "model": f"{d['model_name']}:{d['model_version']}"},
                                 after={"action": "restart", "restarts": d["restarts"] + 1}, role="system")
                    failover = load_routes(self.db, d["endpoint"]).failover if d["traffic"] > 0 else None
                    if failover:
                        audit.record(c, "supervisor", "endpoint.failover", d["endpoint"],
                                     before={"deployment": d["name"], "model": f"{d['model_name']}:{d['model_version']}",
                                             "traffic": d["traffic"]},
                                     after={"deployment": failover.deployment, "model": failover.model},
                                     comment=f"{d['name']} crashed and no deployment with traffic is healthy: "
                                             f"{failover.deployment} ({failover.model}) answers until one is",
                                     role="system")
                print(f"{utcnow()} deployment {key} (pid {d['pid']}) died; restarting", flush=True)
                kill_group(d["pid"])  # its workers would outlive it, holding the port and memory
                self.start_deployment(d)
            elif not d["pid"]:
                self.start_deployment(d)
            elif d["state"] in ("starting", "unhealthy"):
                self.probe(d)

    def _exit_reason(self, d, was: str) -> str:
        """What ``last_error`` says of a deployment whose process is gone: when, and why as its
        console log tells it (the log's last error line: an import error, a crash in ``init()``…)."""
        why = last_error_line(tail_text(console_log_path(self.root, d["endpoint"], d["name"]), EXIT_LOG_LINES))
        return (f"process {d['pid']} exited unexpectedly at {utcnow()} (was {was})"
                + (f": {why}" if why else "") + "; restarted")

    def start_deployment(self, d) -> None:
        port = free_port()
        env = {"AZUREML_MODEL_DIR": str(self.root / d["model_path"]),
               "GUNICORN_CMD_ARGS": "--no-control-socket",
               "AZUREML_MODEL_NAME": d["model_name"], "AZUREML_MODEL_VERSION": str(d["model_version"])}
        pid = spawn([sys.executable, "-m", "services.local.infsrv", "--entry_script",
                     str(PROJECT_ROOT / "score.py"), "--port", str(port)],
                    console_log_path(self.root, d["endpoint"], d["name"]), env)
        self.started_at[(d["endpoint"], d["name"])] = time.monotonic()
        self._set(d, pid=pid, port=port, state="starting")
        print(f"{utcnow()} deployment {d['endpoint']}/{d['name']} ({d['model_name']}:{d['model_version']})"
              f" starting on 127.0.0.1:{port} (pid {pid})", flush=True)

    def probe(self, d) -> None:
        if http_ok(d["port"]):
            with self.db.write() as c:
                failover = load_routes(self.db, d["endpoint"]).failover if d["traffic"] > 0 else None
                self._update(c, d, state="healthy")
                if failover:
                    audit.record(c, "supervisor", "endpoint.failback", d["endpoint"],
                                 before={"deployment": failover.deployment, "model": failover.model},
                                 after={"deployment": d["name"], "model": f"{d['model_name']}:{d['model_version']}",
                                        "traffic": d["traffic"]},
                                 comment=f"{d['name']} is healthy again and takes its traffic back", role="system")
            print(f"{utcnow()} deployment {d['endpoint']}/{d['name']} healthy", flush=True)
            return
        started = self.started_at.setdefault((d["endpoint"], d["name"]), time.monotonic())
        if time.monotonic() - started > self.policy.endpoints.health_timeout_s and d["state"] != "unhealthy":
            self._set(d, state="unhealthy",
                      last_error=f"not healthy after {self.policy.endpoints.health_timeout_s:g} s; see its console log")

    def _set(self, d, **fields) -> None:
        with self.db.write() as c:
            self._update(c, d, **fields)

    @staticmethod
    def _update(c, d, **fields) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        c.execute(f"UPDATE deployments SET {cols} WHERE endpoint = ? AND name = ?",
                  (*fields.values(), d["endpoint"], d["name"]))
        c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (d["endpoint"],))

    # --- release automation (threads) -------------------------------------------

    def start_threads(self) -> list[threading.Thread]:
        if self.open_workspace is None:
            return []   # no workspace to work on: endpoints only (the entry module always gives one)
        threads = [threading.Thread(target=self._every, args=("releases", RELEASE_TICK_S, self._releases_tick),
                                    name="releases", daemon=True),
                   threading.Thread(target=self._every, args=("notifications", NOTIFY_TICK_S, self._notify_tick),
                                    name="notifications", daemon=True),
                   threading.Thread(target=self._every, args=("telemetry", retention.TICK_S, self._telemetry_tick),
                                    name="telemetry", daemon=True)]
        for t in threads:
            t.start()
        return threads

    def _every(self, name: str, interval_s: float, tick) -> None:
        ws, state = None, {}
        while not self.stop_event.is_set():
            try:
                ws = ws or self.open_workspace(self.root)
                tick(ws, state)
            except Exception as e:  # keep going; the next tick retries
                print(f"{utcnow()} {name} tick failed: {type(e).__name__}: {e}", flush=True)
            self.stop_event.wait(interval_s)
        if ws is not None:
            ws.close()

    def _releases_tick(self, ws, state: dict) -> None:
        from ..canary import advance_rollouts
        from .outbox import scan_candidates, scan_health
        for rollout, decision in advance_rollouts(ws):
            print(f"{utcnow()} canary {rollout.endpoint} {rollout.model_ref} {rollout.step_label}: "
                  f"{decision.action} ({decision.reason})", flush=True)
        scan_candidates(ws.db)
        state.setdefault("health_at", time.monotonic() + HEALTH_GRACE_S - HEALTH_EVERY_S)
        if time.monotonic() - state["health_at"] >= HEALTH_EVERY_S:
            state["health_at"] = time.monotonic()
            scan_health(ws)

    def _notify_tick(self, ws, state: dict) -> None:
        ws.notifications.deliver_due()

    def _telemetry_tick(self, ws, state: dict) -> None:
        """Spools of gateways that died, then retention (``services.local.retention``)."""
        done = retention.maintain(ws.root, ws.policy, state)
        if any(done.values()):
            print(f"{utcnow()} telemetry: " + ", ".join(f"{v} {k}" for k, v in done.items() if v), flush=True)

    # --- shutdown -------------------------------------------------------------

    def workspace_gone(self) -> bool:
        """The folder was deleted, or its database replaced: nothing here is this supervisor's to run."""
        return file_identity(self.db.path) != self.db_file

    def stop_all(self) -> None:
        recorded = not self.workspace_gone()  # (the open connection still reads a deleted file)
        for d in self.db.query("SELECT * FROM deployments WHERE pid IS NOT NULL"):
            stop_process(d["pid"])
            if recorded:
                self._set(d, pid=None, state="stopped")
        for ep in self.db.query("SELECT name, gateway_pid FROM endpoints WHERE gateway_pid IS NOT NULL"):
            stop_process(ep["gateway_pid"])
            if recorded:
                with self.db.write() as c:
                    c.execute("UPDATE endpoints SET gateway_pid = NULL WHERE name = ?", (ep["name"],))

    def run_forever(self) -> None:
        def on_term(signum, frame):
            self.stopping = True
            self.stop_event.set()
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        threads = self.start_threads()
        while not self.stopping:
            if self.workspace_gone():
                print(f"{utcnow()} workspace {self.root} is gone; stopping its endpoints", flush=True)
                break
            try:
                self.tick()
            except Exception as e:  # keep supervising; the next tick retries
                print(f"{utcnow()} supervisor tick failed: {type(e).__name__}: {e}", flush=True)
            time.sleep(TICK_S)
        self.stop_event.set()
        for t in threads:
            t.join(10)
        self.stop_all()
        print(f"{utcnow()} supervisor stopped; endpoints down", flush=True)


def main(argv: list[str] | None = None, open_workspace=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    args = ap.parse_args(argv)
    root = Path(args.workspace).resolve()
    return run_single(root, "supervisor", lambda: Supervisor(root, open_workspace).run_forever())

