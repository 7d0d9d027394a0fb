"""Where a local workspace keeps its processes' files (shared by the services and the daemons,
so that neither imports the other)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR_MODULE = "services.local.supervisor_daemon"   # what runs as the supervisor process
PRIVATE_UMASK = 0o077   # files 0600, folders 0700: the workspace's user alone


def private_files() -> None:
    """From now on this process (and every process it starts: umask is inherited) creates files
    and folders private to its user. A local workspace holds the endpoints' keys, request
    payloads, logs and models: another user of the machine must not read them. Every process
    that opens a local workspace calls it (``LocalWorkspace``, and each daemon's ``main``)."""
    os.umask(PRIVATE_UMASK)


def make_private(root: Path) -> None:
    """The workspace folder, created 0700 or tightened to it (a workspace made before this rule was
    0755: closing the folder closes everything in it to other users)."""
    private_files()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if root.stat().st_mode & 0o077:
            root.chmod(0o700)
    except OSError:   # not ours to change (a folder someone shared on purpose): leave it as it is
        pass


def deployment_dir(root: Path, endpoint: str) -> Path:
    path = Path(root) / "endpoints" / endpoint
    path.mkdir(parents=True, exist_ok=True)
    return path


def console_log_path(root: Path, endpoint: str, deployment: str) -> Path:
    return deployment_dir(root, endpoint) / f"{deployment}.log"


def gateway_log_path(root: Path, endpoint: str) -> Path:
    return deployment_dir(root, endpoint) / "gateway.log"


def tail_text(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file (reads at most its last 256 KiB)."""
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines else text
