"""Is a process alive, stopping one, reaping one, and one-per-workspace processes: shared by
the job runner, the supervisor and the scheduler.

A one-per-workspace process (``run_single``) writes ``<name>.pid`` with the workspace's
identity — its folder and the id in its database — and ``running_pid`` trusts the file only
for that workspace and only if the process alive under that pid is ``services.local.<name>``
for that folder. A copied folder carries the original's pid file: it names another folder,
so ``down`` in the copy never stops the original's processes.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .db import Database, workspace_id

DB_FILE = "tollgate.db"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def stop_process(pid: int | None, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group whose leader died (a crashed server's workers)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reap_when_done(proc: subprocess.Popen) -> None:
    """Wait for a child in a daemon thread, so that once it exits it is reaped at once (no
    defunct process under a long-lived parent such as the console)."""
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def workspace_identity(root: Path) -> dict:
    """The folder and the database's workspace id: what a pid file must name to be this workspace's."""
    db = Database(Path(root) / DB_FILE)
    try:
        return {"workspace": str(Path(root).resolve()), "workspace_id": workspace_id(db)}
    finally:
        db.close()


def running_pid(root: Path, name: str, module: str | None = None) -> int | None:
    """The pid of this workspace's ``name`` process (``supervisor``, ``scheduler``) running
    ``python -m <module>`` (default ``services.local.<name>``), or None: no pid file, a pid file
    of another workspace (a copied folder), or no such process under that pid."""
    root = Path(root).resolve()
    try:
        record = json.loads((root / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(record, dict):
        pid = record.get("pid")
        if {k: record.get(k) for k in ("workspace", "workspace_id")} != workspace_identity(root):
            return None
    else:
        pid = record  # a bare pid (written before pid files named their workspace): the process decides
    if not isinstance(pid, int) or isinstance(pid, bool) or not pid_alive(pid):
        return None
    return pid if _is_process_of(pid, module or f"services.local.{name}", root) else None


def _is_process_of(pid: int, module: str, root: Path) -> bool:
    """Whether ``pid`` runs ``python -m <module> --workspace <root>`` (not another program that got the pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return module in args and str(root) in args


def run_single(root: Path, name: str, work: Callable[[], None]) -> int:
    """Run ``work`` as the only ``name`` process of a workspace (``supervisor``, ``scheduler``):
    an exclusive lock on ``<root>/<name>.lock`` (released by the OS if the process dies) and
    ``<root>/<name>.pid`` (pid and workspace identity) for the CLI to find it. A second one
    exits at once (status 0)."""
    lock = open(root / f"{name}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another {name} already runs for this workspace", flush=True)
        return 0
    pid_file = root / f"{name}.pid"
    pid_file.write_text(json.dumps({"pid": os.getpid(), **workspace_identity(root)}))
    print(f"{datetime.now(timezone.utc).isoformat()} {name} {os.getpid()} for {root}", flush=True)
    try:
        work()
    finally:
        try:
            if json.loads(pid_file.read_text()).get("pid") == os.getpid():  # not a successor's
                pid_file.unlink()
        except (OSError, ValueError, AttributeError):
            pass
    return 0
