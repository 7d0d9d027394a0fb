"""Is a process alive, stopping one, and one-per-workspace processes: shared by the job
runner, the supervisor and the scheduler."""
from __future__ import annotations

import fcntl
import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable


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


def run_single(root: Path, name: str, work: Callable[[], None]) -> int:
    """Run ``work`` as the only ``name`` process of a workspace (``supervisor``, ``scheduler``):
    an exclusive lock on ``<root>/<name>.lock`` (released by the OS if the process dies) and
    ``<root>/<name>.pid`` for the CLI to find it. A second one exits at once (status 0)."""
    lock = open(root / f"{name}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another {name} already runs for this workspace", flush=True)
        return 0
    pid_file = root / f"{name}.pid"
    pid_file.write_text(str(os.getpid()))
    print(f"{datetime.now(timezone.utc).isoformat()} {name} {os.getpid()} for {root}", flush=True)
    try:
        work()
    finally:
        pid_file.unlink(missing_ok=True)
    return 0
