"""What the replayed online endpoints served, as Azure ML's traffic log would hold it.

``TrafficLog`` keeps one row per scoring request the replay answered (time, endpoint,
deployment, status, latency) and answers Log Analytics' ``stats`` view from them, beside the
fixture's recorded rows: so a canary judged on telemetry of canary vs stable sees the
requests that reached each deployment. ``Router`` spreads unpinned requests over the
deployments by their traffic split, as the managed endpoint's load balancer does (smoothly
weighted round robin: over any 100 requests, 10 % goes to a deployment at 10 %).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable


@dataclass(frozen=True)
class Served:
    at: datetime
    endpoint: str
    deployment: str
    status: int
    latency_ms: float


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class TrafficLog:
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    rows: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, deployment: str, status: int, latency_ms: float) -> None:
        with self.lock:
            self.rows.append(Served(self.clock(), endpoint, deployment, status, latency_ms))

    def stats_rows(self, start: datetime | None, end: datetime | None) -> list[list]:
        """Rows of the ``stats`` view (endpoint, deployment, model, requests, failures, client_errors,
        p50, p95, p99) for ``[start, end)``; the model is left to the deployment map, as for the traffic log."""
        with self.lock:
            served = [r for r in self.rows if (start is None or r.at >= start) and (end is None or r.at < end)]
        groups: dict[tuple[str, str], list[Served]] = {}
        for r in served:
            groups.setdefault((r.endpoint, r.deployment), []).append(r)
        out = []
        for (ep, dep), rows in sorted(groups.items()):
            latencies = [r.latency_ms for r in rows]
            out.append([ep, dep, "", len(rows), sum(1 for r in rows if r.status >= 500 or r.status == 0),
                        sum(1 for r in rows if 400 <= r.status < 500), _percentile(latencies, 0.5),
                        _percentile(latencies, 0.95), _percentile(latencies, 0.99)])
        return out


@dataclass
class Router:
    """Smoothly weighted round robin per endpoint (nginx's algorithm)."""
    current: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, endpoint: str, traffic: dict[str, int]) -> str | None:
        weights = {k: v for k, v in traffic.items() if v > 0}
        if not weights:
            return None
        with self.lock:
            total = sum(weights.values())
            for name, w in weights.items():
                self.current[(endpoint, name)] = self.current.get((endpoint, name), 0.0) + w
            chosen = max(weights, key=lambda n: (self.current[(endpoint, n)], n))
            self.current[(endpoint, chosen)] -= total
            return chosen


__all__ = ["TrafficLog", "Router", "Served"]
