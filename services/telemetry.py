"""Backend-independent monitoring rules: query windows and endpoint health.

``window("15m")`` turns what a user picks into a ``TimeWindow`` whose bin size
gives a readable chart (at most ~120 points); ``endpoint_health()`` applies the
policy's ``[health]`` rules to a window's stats. Both backends and every page
use these, so "degraded" means the same thing everywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from .entities import Endpoint, EndpointHealth, HealthStatus, RequestDetail, TimeWindow, VersionStats
from .errors import InvalidInput

MIN_WINDOW = timedelta(minutes=15)
MAX_WINDOW = timedelta(days=30)
MAX_POINTS = 120
BIN_SECONDS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

# What the pages offer; any duration in [15m, 30d] is accepted by window().
WINDOW_CHOICES = ("15m", "1h", "6h", "24h", "7d", "30d")

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` → a timedelta. ``InvalidInput`` otherwise."""
    m = _SINCE.match(str(text))
    if not m:
        raise InvalidInput(f"not a duration: {text!r}", hint="Use a number and a unit: 15m, 1h, 24h, 7d.")
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    if seconds > timedelta.max.total_seconds() / 2:   # timedelta (and any window) ends long before
        raise InvalidInput(f"duration {text!r} is too long", hint="Use at most a few years, e.g. 30d.")
    return timedelta(seconds=seconds)


def bin_seconds_for(span: timedelta) -> int:
    """The smallest bin from ``BIN_SECONDS`` that keeps the series at or under ``MAX_POINTS``."""
    for seconds in BIN_SECONDS:
        if span.total_seconds() / seconds <= MAX_POINTS:
            return seconds
    return BIN_SECONDS[-1]


def window(since: str | timedelta = "1h", *, end: datetime | None = None, clamp: bool = True) -> TimeWindow:
    """The window of the last ``since`` up to ``end`` (now). Spans outside
    [15 minutes, 30 days] are clamped, or refused with ``clamp=False``."""
    span = parse_since(since) if isinstance(since, str) else since
    if not MIN_WINDOW <= span <= MAX_WINDOW:
        if not clamp:
            raise InvalidInput(f"window {since} is outside 15m … 30d")
        span = min(max(span, MIN_WINDOW), MAX_WINDOW)
    end = (end or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return TimeWindow(start=end - span, end=end, bin_seconds=bin_seconds_for(span))


def between(start: datetime, end: datetime) -> TimeWindow:
    """An explicit window (e.g. a canary step); any length, bins as for ``window``."""
    if end <= start:
        raise InvalidInput("the window's end must be after its start")
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    return TimeWindow(start=start, end=end, bin_seconds=bin_seconds_for(end - start))


def per_minute(requests, bin_start, window: TimeWindow):
    """Requests per minute of series bins: a bin cut by the window's start or end is divided
    by the part of it inside the window, so a chart's first and last points are not too low.
    ``requests`` and ``bin_start`` (UTC timestamps) are pandas Series of one series frame."""
    start = bin_start.clip(lower=window.start)
    end = (bin_start + timedelta(seconds=window.bin_seconds)).clip(upper=window.end)
    seconds = (end - start).dt.total_seconds().clip(lower=1.0)
    return requests * 60.0 / seconds


def combine(stats: Iterable[VersionStats]) -> tuple[int, int, float | None]:
    """(requests, failures, worst p95) over several rows. Percentiles do not add up,
    so the worst p95 of the rows stands in for the endpoint's (conservative)."""
    stats = list(stats)
    p95s = [s.p95_ms for s in stats if s.p95_ms is not None and s.requests]
    return sum(s.requests for s in stats), sum(s.failures for s in stats), max(p95s) if p95s else None


def endpoint_health(endpoint: Endpoint, stats: Iterable[VersionStats], rules, window_minutes: int) -> EndpointHealth:
    """Apply ``[health]`` rules (``services.policy.HealthPolicy``) to one endpoint.

    down: no gateway, or no serving deployment healthy, or every request failed;
    degraded: failure rate or p95 over their limits, or a deployment not healthy;
    idle: up, but fewer than ``min_requests`` to judge by; otherwise healthy.
    """
    stats = [s for s in stats if s.endpoint == endpoint.name]
    requests, failures, p95 = combine(stats)
    failure_rate = failures / requests if requests else 0.0
    deployments = [d for d in endpoint.deployments if d.state != "stopped"]
    up = [d for d in deployments if d.state == "healthy"]
    serving = [d for d in deployments if d.traffic > 0]
    reasons: list[str] = []
    status = HealthStatus.HEALTHY
    if not endpoint.gateway_up:
        status, reasons = HealthStatus.DOWN, ["the endpoint does not answer (gateway not running)"]
    elif serving and not any(d.state == "healthy" for d in serving):
        status = HealthStatus.DOWN
        reasons.append("no deployment with traffic is healthy: "
                       + ", ".join(f"{d.name} {d.state}" for d in serving))
    elif requests >= rules.min_requests and failures == requests:
        status = HealthStatus.DOWN
        reasons.append(f"all {requests} requests failed in the last {window_minutes} min")
    else:
        if requests >= rules.min_requests and failure_rate > rules.max_failure_rate:
            reasons.append(f"failure rate {failure_rate:.1%} > {rules.max_failure_rate:.1%}")
        if requests >= rules.min_requests and p95 is not None and p95 > rules.max_p95_ms:
            reasons.append(f"p95 latency {p95:.0f} ms > {rules.max_p95_ms:.0f} ms")
        not_up = [d for d in deployments if d.state != "healthy"]
        if not_up:
            reasons.append("deployment(s) not healthy: " + ", ".join(f"{d.name} {d.state}" for d in not_up))
        if reasons:
            status = HealthStatus.DEGRADED
        elif requests < rules.min_requests:
            status = HealthStatus.IDLE
            reasons.append(f"{requests} request(s) in the last {window_minutes} min; "
                           f"at least {rules.min_requests} are needed to judge")
    return EndpointHealth(endpoint=endpoint.name, status=status, reasons=tuple(reasons),
                          window_minutes=window_minutes, requests=requests, failure_rate=failure_rate,
                          p95_ms=p95, deployments_up=len(up), deployments_total=len(deployments))


def endpoints_health(ws) -> list[EndpointHealth]:
    """Health of every endpoint of a workspace under its policy's ``[health]`` rules."""
    if ws.endpoints is None or ws.telemetry is None:
        return []
    rules = ws.policy.health
    now = datetime.now(timezone.utc)
    stats = ws.telemetry.stats(between(now - timedelta(minutes=rules.window_minutes), now))
    return mark([endpoint_health(ep, stats, rules, rules.window_minutes) for ep in ws.endpoints.list()],
                warning_of(stats))  # judged on part of the requests: said so (partial results, below)


# --- partial results --------------------------------------------------------------------------
# A backend that got only part of the data (Log Analytics answering with some rows and an
# error: a query limit, a region not answering) returns what it got, marked, rather than
# raising: a list is a ``PartialList`` (``.partial``, ``.warning``), a DataFrame carries
# ``attrs["partial"]`` and ``attrs["warning"]``, a lookup is a ``PartialRequestDetail``.
# Complete results carry none of these. Pages show ``warning_of(result)`` beside the data
# (``st.warning``), never as an error. All of them survive pickling (``st.cache_data``).

class PartialList(list):
    """A list of results that the backend got only in part (``.warning`` says why)."""
    partial = True

    def __init__(self, items=(), warning: str = ""):
        super().__init__(items)
        self.warning = warning


@dataclass(frozen=True)
class PartialRequestDetail(RequestDetail):
    """A request lookup whose record or log lines the backend got only in part."""
    warning: str = ""
    partial: bool = True


def mark(items: list, warning: str | None) -> list:
    """``items`` as a ``PartialList`` when there is a warning, else unchanged."""
    return PartialList(items, warning) if warning else items


def mark_frame(df, warning: str | None):
    """``df`` with ``attrs["partial"]``/``attrs["warning"]`` when there is a warning."""
    if warning:
        df.attrs["partial"] = True
        df.attrs["warning"] = warning
    return df


def warning_of(result) -> str | None:
    """The partial-result warning of anything a TelemetryService or LogService returned
    (a list, a DataFrame, a RequestDetail…), or None when it is complete."""
    attrs = getattr(result, "attrs", None)
    if isinstance(attrs, dict):
        return attrs.get("warning") or None
    return getattr(result, "warning", None) or None


def partial_warnings(*results) -> list[str]:
    """The distinct warnings of several results, in order (what a page shows once each)."""
    return list(dict.fromkeys(w for w in map(warning_of, results) if w))
