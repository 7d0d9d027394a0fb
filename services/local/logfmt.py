"""One line format for every local log: the inference server's own.

``2026-11-21 20:04:11,595 I [22263] azmlinfsrv - message [request_id=…]`` — time
in UTC, level initial, pid, logger, message; lines written while serving a
request end with its id, so Request lookup can find them.
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
REQUEST_ID_SUFFIX = " request_id="


def format_line(level: str, logger: str, message: str, request_id: str | None = None) -> str:
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f",{int(now % 1 * 1000):03d}"
    suffix = f"{REQUEST_ID_SUFFIX}{request_id}" if request_id else ""
    return f"{stamp} {level[:1].upper()} [{os.getpid()}] {logger} - {message}{suffix}"


def line_time(line: str) -> datetime | None:
    """The UTC time stamp a line starts with, or None (tracebacks, continuation lines)."""
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
        microsecond=int(m.group(2)) * 1000, tzinfo=timezone.utc)
