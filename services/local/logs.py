"""Logs of the local endpoints (``LogService``): the deployments' console logs and the gateway's
log under ``<workspace>/endpoints/<endpoint>/``, read backwards from the end (they grow large).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..entities import LogLine, RequestRecord
from ..errors import InvalidInput, NotFound
from .logfmt import REQUEST_ID_SUFFIX, line_time

MAX_SEARCH_TEXT = 500
MAX_TAIL = 5000


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def read_lines_backwards(path: Path, block: int = 64 * 1024) -> Iterator[str]:
    """Lines of a file from the last to the first, reading blocks from the end (logs grow large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        position, rest = f.tell(), b""
        while position > 0:
            size = min(block, position)
            position -= size
            f.seek(position)
            chunk = f.read(size) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line.decode("utf-8", "replace").rstrip("\r")
        if rest:
            yield rest.decode("utf-8", "replace").rstrip("\r")


class LocalLogs:
    """``LogService`` over ``<workspace>/endpoints/<endpoint>/{<deployment>,gateway}.log``."""

    GATEWAY = "gateway"

    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, endpoint: str) -> Path:
        if not endpoint or "/" in endpoint or "\\" in endpoint or endpoint.startswith("."):
            raise InvalidInput(f"not an endpoint name: {endpoint!r}")
        return self.root / "endpoints" / endpoint

    def sources(self, endpoint: str) -> list[str]:
        folder = self._dir(endpoint)
        names = sorted(p.stem for p in folder.glob("*.log") if p.stem != self.GATEWAY) if folder.is_dir() else []
        return names + [self.GATEWAY]

    def _path(self, endpoint: str, source: str) -> Path:
        if source not in self.sources(endpoint):
            raise NotFound(f"endpoint {endpoint!r} has no log {source!r}",
                           hint=f"Known: {', '.join(self.sources(endpoint))}.")
        return self._dir(endpoint) / f"{source}.log"

    def search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
               start: datetime | None = None, end: datetime | None = None, tail: int = 200) -> list[LogLine]:
        if text is not None and len(text) > MAX_SEARCH_TEXT:
            raise InvalidInput(f"search text is limited to {MAX_SEARCH_TEXT} characters")
        if not 1 <= int(tail) <= MAX_TAIL:
            raise InvalidInput(f"tail must be between 1 and {MAX_TAIL}, got {tail}")
        needle = text.lower() if text else None  # a plain substring: never a pattern
        sources = [source] if source else self.sources(endpoint)
        found: list[tuple[datetime, int, LogLine]] = []
        for order, name in enumerate(sources):
            path = self._path(endpoint, name)
            if path.exists():
                found += [(line.at or _MIN, order, line)
                          for line in self._matching(path, name, needle, start, end, int(tail))]
        found.sort(key=lambda item: (item[0], item[1]))  # stable: a file's own order is kept
        return [line for _, _, line in found[-int(tail):]]

    @staticmethod
    def _matching(path: Path, source: str, needle: str | None, start: datetime | None,
                  end: datetime | None, tail: int) -> list[LogLine]:
        """The last ``tail`` matching lines of one file, oldest first. Lines without a time stamp
        (tracebacks) take the time of the stamped line above them."""
        out: list[LogLine] = []
        pending: list[str] = []   # unstamped lines read (backwards) before their stamped head
        for raw in read_lines_backwards(path):
            at = line_time(raw)
            if at is None:
                pending.append(raw)
                continue
            if start is not None and at < start:
                break  # older than the window: the file is chronological
            group = [raw] + pending[::-1]
            pending = []
            if end is not None and at >= end:
                continue
            for text in reversed(group):
                if needle is None or needle in text.lower():
                    out.append(LogLine(at=at, source=source, text=text))
            if len(out) >= tail:
                break
        return out[:tail][::-1]

    def request_lines(self, record: RequestRecord) -> list[LogLine]:
        """The lines tagged with the request's id (gateway and deployment), then the untagged
        lines the serving deployment wrote while the request was in flight."""
        tag = f"{REQUEST_ID_SUFFIX}{record.request_id}"
        started = record.ts.timestamp() - record.latency_ms / 1000 - 0.01
        window = (_utc(started - 1), _utc(record.ts.timestamp() + 1))  # around the request, for speed
        tagged, during = [], []
        for source in [s for s in (record.deployment, self.GATEWAY) if s]:
            try:
                lines = self.search(record.endpoint, source=source, start=window[0], end=window[1], tail=MAX_TAIL)
            except NotFound:
                continue
            for line in lines:
                if line.text.endswith(tag) or f"{tag} " in line.text:
                    tagged.append(line)
                elif source == record.deployment and line.at and REQUEST_ID_SUFFIX not in line.text \
                        and started <= line.at.timestamp() <= record.ts.timestamp() + 0.01:
                    during.append(line)
        return sorted(tagged, key=lambda line: line.at or _MIN) + during


_MIN = datetime.min.replace(tzinfo=timezone.utc)
