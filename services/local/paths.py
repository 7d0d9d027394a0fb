"""Where a local workspace keeps its processes' files (shared by the services and the daemons,
so that neither imports the other)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR_MODULE = "services.local.supervisor_daemon"   # what runs as the supervisor process


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
