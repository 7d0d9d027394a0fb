"""Request telemetry and logs of managed online endpoints, from Log Analytics.

``AzureTelemetry`` (``TelemetryService``) and ``AzureLogs`` (``LogService``) run the
queries of ``services.azure.kql`` with ``LogsQueryClient.query_workspace`` on the Log
Analytics workspace the endpoints' diagnostic settings (and workspace-based Application
Insights) write to. Both are built from a ``LogsQueryClient`` handed in by the caller.

* Requests come from ``AmlOnlineEndpointTrafficLog`` (``source="traffic_log"``, the
  default: every request Azure ML's gateway routed, per endpoint and deployment) or
  from Application Insights ``AppRequests`` (``source="app_insights"``). The traffic log
  has no model version: it is filled in from the deployments' current models
  (``AzureEndpoints.deployment_models()``, cached 60 s), per (endpoint, deployment) —
  the same deployment name on two endpoints serves different versions.
* Console logs: ``AmlOnlineEndpointConsoleLog`` (or ``AppTraces``); the gateway's lines
  are one line per traffic-log request.
* ``collected_inputs`` needs the inference server's model data collection to
  Application Insights (``collect_inputs=True``: ``AML_APP_INSIGHTS_ENABLED`` and
  ``AML_MDC_STORAGE_ENABLED`` on the deployment); without it the method says so with
  ``BackendUnavailable`` — the traffic log holds no payloads.
* Every query's first line is ``// tollgate:VIEW`` (a KQL comment) so it can be told
  apart in Log Analytics' query audit (and by the replay).

**Partial results** (``LogsQueryPartialResult``: Log Analytics returned some rows and an
error, e.g. a query limit or one region not answering) are returned, not raised, and
marked as the contract says (``services.telemetry``): lists are ``PartialList`` (a
``list`` with ``.partial = True`` and ``.warning``), DataFrames carry
``df.attrs["partial"] = True`` and ``df.attrs["warning"]``, a lookup is a
``PartialRequestDetail`` with ``.warning``. Complete results carry none of these;
``services.telemetry.warning_of(result)`` reads any of them.
"""
from __future__ import annotations

import ast
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from ..entities import ErrorGroup, LogLine, RequestDetail, RequestRecord, TimeWindow, VersionStats
from ..errors import BackendUnavailable, InvalidInput, NotFound, ServiceError
from ..telemetry import PartialList, PartialRequestDetail, warning_of  # noqa: F401 - re-exported
from ..telemetry import mark as _mark, mark_frame as _mark_frame, per_minute
from . import kql
from .errors import translate

ROLE = "Log Analytics Reader"
SERIES_OUT = ["bin", "endpoint", "model", "requests", "failures", "client_errors", "rpm", "failure_rate",
              "p50_ms", "p95_ms", "p99_ms"]


def _utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f  # NaN -> None


def _int(value: Any) -> int:
    f = _num(value)
    return int(f) if f is not None else 0


def _list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, list) else []
        except ValueError:
            return []
    return [value] if value else []


class _Queries:
    """Runs ``kql`` queries on one Log Analytics workspace; results as row dicts plus a warning."""

    def __init__(self, logs_client, workspace_id: str, endpoints, *, source: str = "traffic_log",
                 mapping: kql.AppInsightsMapping | None = None):
        if source not in ("traffic_log", "app_insights"):
            raise InvalidInput(f"telemetry source {source!r}: 'traffic_log' or 'app_insights'")
        self.client, self.workspace_id, self.endpoints = logs_client, workspace_id, endpoints
        self.source, self.mapping = source, mapping or kql.AppInsightsMapping()

    def builder(self, endpoint: str | None = None):
        if self.source == "app_insights":
            return kql.AppInsightsQueries(self.mapping)
        models = self.models()
        if endpoint is not None:
            mapping = {d: m for (ep, d), m in models.items() if ep == endpoint}
        else:
            mapping = {}
            for (ep, d), m in models.items():
                mapping.setdefault(d, m)
        return kql.TrafficLogQueries(deployment_models=mapping)

    def models(self) -> dict[tuple[str, str], str]:
        if self.endpoints is None:
            return {}
        return self.endpoints.deployment_models()

    def ambiguous(self) -> bool:
        """Whether one deployment name serves different models on different endpoints."""
        seen: dict[str, str] = {}
        for (_, d), m in self.models().items():
            if seen.setdefault(d, m) != m:
                return True
        return False

    def _check_workspace(self) -> None:
        if not self.workspace_id:
            raise BackendUnavailable("telemetry needs the Log Analytics workspace of the endpoints",
                                     hint="Set TOLLGATE_LOG_ANALYTICS_WORKSPACE_ID (the Workspace ID on the Log "
                                          "Analytics workspace's overview page; README, Use with Azure).")

    def run(self, view: str, query: kql.Query) -> tuple[list[dict], str | None]:
        self._check_workspace()
        text = f"// tollgate:{view}\n{query.text}"
        try:
            result = self.client.query_workspace(self.workspace_id, text, timespan=query.timespan)
        except Exception as e:  # noqa: BLE001 - translated (or re-raised) below
            raise _translate(e, f"query the {view.replace('_', ' ')} telemetry") from e
        return _rows(result)

    def run_many(self, items: list[tuple[str, kql.Query]]) -> list[tuple[list[dict], str | None] | None]:
        """Several queries in **one** HTTP request (``LogsQueryClient.query_batch``, Log
        Analytics' ``$batch``): per query its rows and warning, or None where that query failed
        (run it alone to get its error as a clear message)."""
        self._check_workspace()
        from azure.monitor.query import LogsBatchQuery, LogsQueryStatus
        batch = [LogsBatchQuery(self.workspace_id, f"// tollgate:{view}\n{q.text}", timespan=q.timespan)
                 for view, q in items]
        try:
            results = self.client.query_batch(batch)
        except Exception as e:  # noqa: BLE001 - translated below
            raise _translate(e, f"query the {', '.join(v.replace('_', ' ') for v, _ in items)} telemetry") from e
        return [None if getattr(r, "status", None) == LogsQueryStatus.FAILURE else _rows(r) for r in results]


def _rows(result) -> tuple[list[dict], str | None]:
    """A ``LogsQueryResult`` (or partial one) as row dicts of its first table, plus the warning."""
    from azure.monitor.query import LogsQueryStatus
    if result.status == LogsQueryStatus.PARTIAL:
        tables, err = result.partial_data, result.partial_error
        warning = ("partial result: Log Analytics returned only part of the data"
                   + (f" ({getattr(err, 'message', None) or err})" if err else ""))
    else:
        tables, warning = result.tables, None
    rows = []
    for table in tables[:1]:
        cols = list(table.columns)
        rows = [dict(zip(cols, list(r))) for r in table.rows]
    return rows, warning


def _translate(e: Exception, what: str) -> ServiceError:
    status = getattr(e, "status_code", None)
    if status == 400:
        from ..errors import InvalidInput as _Invalid
        return _Invalid(f"Log Analytics refused the query while trying to {what}: {str(getattr(e, 'message', e))[:300]}",
                        hint="Check that the endpoints' diagnostic settings send AmlOnlineEndpointTrafficLog and "
                             "AmlOnlineEndpointConsoleLog to this workspace (README, Use with Azure).")
    return translate(e, what, role=ROLE)


class AzureTelemetry:
    """``TelemetryService`` over Log Analytics (see the module docstring).

    ``AzureTelemetry(logs_client, workspace_id, endpoints, source="traffic_log",
    collect_inputs=False, mapping=None)``; ``endpoints`` is the workspace's
    ``AzureEndpoints`` (for the deployment → model version map).
    """

    PREFETCH_S = 10.0       # how long (and how far apart in window end) a prefetched answer is used
    DASHBOARD_LIMIT = 10    # the rows of top_errors / slowest fetched along with a series

    def __init__(self, logs_client, workspace_id: str, endpoints=None, *, source: str = "traffic_log",
                 collect_inputs: bool = False, mapping: kql.AppInsightsMapping | None = None,
                 clock=time.monotonic):
        self.q = _Queries(logs_client, workspace_id, endpoints, source=source, mapping=mapping)
        self.collect_inputs = collect_inputs
        self.clock = clock
        self._prefetched: dict[tuple, tuple[float, datetime, list[dict], str | None]] = {}
        self._lock = threading.Lock()

    # --- one request for a dashboard: series() fetches the views shown with it ---------------

    @staticmethod
    def _key(view: str, window: TimeWindow, endpoint: str | None, limit: int | None) -> tuple:
        return view, endpoint, round(window.seconds), window.bin_seconds, limit

    def _keep(self, view: str, window: TimeWindow, endpoint: str | None, limit: int | None,
              answer: tuple[list[dict], str | None]) -> None:
        with self._lock:
            self._prefetched[self._key(view, window, endpoint, limit)] = (self.clock(), window.end, *answer)

    def _take(self, view: str, window: TimeWindow, endpoint: str | None,
              limit: int | None = None) -> tuple[list[dict], str | None] | None:
        """A prefetched answer for this view, endpoint and window span, used once, when it was
        fetched less than ``PREFETCH_S`` ago for a window ending at most that far apart."""
        with self._lock:
            hit = self._prefetched.pop(self._key(view, window, endpoint, limit), None)
            now = self.clock()
            for k in [k for k, v in self._prefetched.items() if now - v[0] > self.PREFETCH_S]:
                del self._prefetched[k]
        if hit is None or self.clock() - hit[0] > self.PREFETCH_S \
                or abs((window.end - hit[1]).total_seconds()) > self.PREFETCH_S:
            return None
        return hit[2], hit[3]

    def _run(self, view: str, window: TimeWindow, endpoint: str | None, query_of,
             limit: int | None = None) -> tuple[list[dict], str | None]:
        return self._take(view, window, endpoint, limit) or self.q.run(view, query_of())

    def _model(self, endpoint: str, deployment: str, kql_model: str | None) -> str | None:
        m = self.q.models().get((endpoint, deployment)) if self.q.source == "traffic_log" else None
        return m or kql_model or None

    def stats(self, window: TimeWindow, endpoint: str | None = None) -> list[VersionStats]:
        rows, warning = self.q.run("stats", self.q.builder(endpoint).stats(window, endpoint))
        out = [VersionStats(endpoint=r["endpoint"], deployment=r.get("deployment") or None,
                            model=self._model(r["endpoint"], r.get("deployment") or "", r.get("model")),
                            requests=_int(r["requests"]), failures=_int(r["failures"]),
                            client_errors=_int(r["client_errors"]), p50_ms=_num(r.get("p50_ms")),
                            p95_ms=_num(r.get("p95_ms")), p99_ms=_num(r.get("p99_ms"))) for r in rows]
        return _mark(sorted(out, key=lambda s: (s.endpoint, -s.requests)), warning)

    def series(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        """Per bin, endpoint and model. Two deployments serving one model in one bin are
        added up; their percentiles are the worse of the two (percentiles do not add)."""
        rows, warning = self._series_and_prefetch(window, endpoint)
        if not rows:
            return _mark_frame(pd.DataFrame(columns=SERIES_OUT), warning)
        df = pd.DataFrame(rows)
        df["model"] = [self._model(e, d or "", m) or "(none)" for e, d, m in zip(df["endpoint"], df["deployment"], df["model"])]
        df["bin"] = pd.to_datetime(df["bin"], utc=True)
        for c in ("requests", "failures", "client_errors"):
            df[c] = pd.to_numeric(df[c]).fillna(0).astype(int)
        for c in ("p50_ms", "p95_ms", "p99_ms"):
            df[c] = pd.to_numeric(df[c])
        g = df.groupby(["bin", "endpoint", "model"], as_index=False).agg(
            requests=("requests", "sum"), failures=("failures", "sum"), client_errors=("client_errors", "sum"),
            p50_ms=("p50_ms", "max"), p95_ms=("p95_ms", "max"), p99_ms=("p99_ms", "max"))
        g["rpm"] = per_minute(g["requests"], g["bin"], window)  # the window's cut first/last bins as locally
        g["failure_rate"] = g["failures"] / g["requests"].where(g["requests"] > 0)
        g["failure_rate"] = g["failure_rate"].fillna(0.0)
        return _mark_frame(g.sort_values(["bin", "endpoint", "model"], ignore_index=True)[SERIES_OUT], warning)

    def _series_and_prefetch(self, window: TimeWindow, endpoint: str | None) -> tuple[list[dict], str | None]:
        """The series, and in the same HTTP request (a ``$batch``) what a monitoring page shows
        with it for the same window: the status mix, the top errors and the slowest requests
        (``DASHBOARD_LIMIT`` each), kept for the calls that follow within ``PREFETCH_S``."""
        builder = self.q.builder(endpoint)
        extra: list[tuple[str, kql.Query, int | None]] = [
            ("top_errors", builder.top_errors(window, endpoint, self.DASHBOARD_LIMIT), self.DASHBOARD_LIMIT),
            ("slowest", builder.slowest(window, endpoint, self.DASHBOARD_LIMIT), self.DASHBOARD_LIMIT)]
        if self._status_scopes(endpoint) == [endpoint]:
            extra.insert(0, ("status_mix", builder.status_mix(window, endpoint), None))
        answers = self.q.run_many([("series", builder.series(window, endpoint))] + [(v, q) for v, q, _ in extra])
        for (view, _, limit), answer in zip(extra, answers[1:]):
            if answer is not None:
                self._keep(view, window, endpoint, limit, answer)
        return answers[0] if answers[0] is not None else self.q.run("series", builder.series(window, endpoint))

    def _status_scopes(self, endpoint: str | None) -> list[str | None]:
        if endpoint is None and self.q.source == "traffic_log" and self.q.ambiguous():
            return sorted({ep for ep, _ in self.q.models()})
        return [endpoint]

    def status_mix(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        """Requests per (status, model). Without an endpoint, when a deployment name serves
        different versions on different endpoints, one query per endpoint (bounded by the
        endpoints' count) so that each request keeps its own model."""
        scopes = self._status_scopes(endpoint)
        totals: dict[tuple[int, str], int] = {}
        warnings = []
        for ep in scopes:
            rows, warning = self._run("status_mix", window, ep, lambda: self.q.builder(ep).status_mix(window, ep))
            if warning:
                warnings.append(warning)
            for r in rows:
                key = (_int(r["status"]), r.get("model") or "(none)")
                totals[key] = totals.get(key, 0) + _int(r["requests"])
        df = pd.DataFrame([(s, m, n) for (s, m), n in totals.items()], columns=["status", "model", "requests"])
        return _mark_frame(df.sort_values(["status", "model"], ignore_index=True), "; ".join(warnings) or None)

    def top_errors(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[ErrorGroup]:
        rows, warning = self._run("top_errors", window, endpoint,
                                  lambda: self.q.builder(endpoint).top_errors(window, endpoint, limit), limit)
        out = [ErrorGroup(message=r.get("message") or "(no message)", status=_int(r["status"]), count=_int(r["count"]),
                          first_seen=_utc(r["first_seen"]), last_seen=_utc(r["last_seen"]),
                          models=tuple(sorted(str(m) for m in _list(r.get("models")) if m)),
                          sample_request_id=r.get("sample_request_id") or "") for r in rows]
        return _mark(out, warning)

    def _record(self, r: dict) -> RequestRecord:
        return RequestRecord(ts=_utc(r["ts"]), endpoint=r["endpoint"], deployment=r.get("deployment") or None,
                             model=self._model(r["endpoint"], r.get("deployment") or "", r.get("model")),
                             status=_int(r["status"]), latency_ms=_num(r["latency_ms"]) or 0.0,
                             request_id=r.get("request_id") or "", request_body=r.get("request_body") or None,
                             response_body=r.get("response_body") or None, error=r.get("error") or None)

    def slowest(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[RequestRecord]:
        rows, warning = self._run("slowest", window, endpoint,
                                  lambda: self.q.builder(endpoint).slowest(window, endpoint, limit), limit)
        return _mark([self._record(r) for r in rows], warning)

    def lookup(self, request_id: str) -> RequestDetail:
        request_id = (request_id or "").strip()
        if not request_id or len(request_id) > 200:
            raise InvalidInput("a request id is 1 to 200 characters",
                               hint="Copy it from the x-request-id header of the response.")
        builder = self.q.builder()
        rows, warning = self.q.run("lookup", builder.lookup(request_id))
        if not rows:
            raise NotFound(f"no request with id {request_id!r} in the endpoints' traffic log (last 30 days)"
                           + (f"; {warning}" if warning else ""),
                           hint="The id is in the response header x-request-id. Log Analytics shows requests "
                                "a few minutes after they are answered.")
        record = self._record(rows[0])
        lines, log_warning = self.q.run("lookup_logs", builder.lookup_logs(request_id))
        log_lines = tuple(LogLine(at=_utc(r.get("at")), source=r.get("source") or "", text=r.get("text") or "")
                          for r in lines)
        warnings = "; ".join(w for w in (warning, log_warning) if w)
        if warnings:
            return PartialRequestDetail(record=record, log_lines=log_lines, warning=warnings)
        return RequestDetail(record=record, log_lines=log_lines)

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = 50_000) -> pd.DataFrame:
        if not self.collect_inputs:
            raise BackendUnavailable(
                "collected inputs are unavailable on this Azure workspace: the endpoint traffic log holds no "
                "request payloads",
                hint="Enable the inference server's model data collection to Application Insights "
                     "(AML_APP_INSIGHTS_ENABLED and AML_MDC_STORAGE_ENABLED on the deployments) and set "
                     "collect_inputs in the Azure settings.")
        records_limit = max(1, min(int(limit), kql.MAX_ROWS))
        q = kql.AppInsightsQueries(self.q.mapping).collected_inputs(window, endpoint, model, records_limit)
        rows, warning = self.q.run("collected_inputs", q)
        records: list[dict] = []
        for r in rows:
            payload, models, rid = _collected(r)
            if payload is None:
                continue
            served = (models[0] if models else None)
            data = payload.get("data") if isinstance(payload, dict) else None
            columns = payload.get("columns") if isinstance(payload, dict) else None
            for row in data if isinstance(data, list) else []:
                if isinstance(row, dict):
                    records.append({**row, "model": served, "request_id": rid})
                elif isinstance(row, list):
                    names = columns if isinstance(columns, list) and len(columns) == len(row) else \
                        [f"f{i}" for i in range(len(row))]
                    records.append({**dict(zip(names, row)), "model": served, "request_id": rid})
                if len(records) >= limit:
                    break
            if len(records) >= limit:
                break
        return _mark_frame(pd.DataFrame.from_records(records), warning)


def _collected(r: dict) -> tuple[Any, list[str], str]:
    """(payload, models, request id) of one model-data-collection record, or (None, …) if cut."""
    dims: dict = {}
    raw = r.get("custom_dimensions")
    if raw:
        try:
            parsed = ast.literal_eval(raw) if isinstance(raw, str) else raw
            dims = parsed if isinstance(parsed, dict) else {}
        except (ValueError, SyntaxError):
            dims = {}  # cut at 8,192 characters by the exporter
    text = r.get("input") or dims.get("Input")
    try:
        payload = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        payload = None
    models = [str(m) for m in _list(r.get("models") or dims.get("Models"))]
    rid = r.get("request_id") or dims.get("Request Id") or ""
    return payload, models, rid


class AzureLogs:
    """``LogService`` over Log Analytics: deployment console logs and the gateway's lines."""

    GATEWAY = "gateway"

    def __init__(self, logs_client, workspace_id: str, endpoints=None, *, source: str = "traffic_log",
                 mapping: kql.AppInsightsMapping | None = None):
        self.q = _Queries(logs_client, workspace_id, endpoints, source=source, mapping=mapping)
        self.endpoints = endpoints

    def sources(self, endpoint: str) -> list[str]:
        names = sorted({d for (ep, d) in self.q.models() if ep == endpoint}) if self.endpoints is not None else []
        return names + [self.GATEWAY]

    def search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
               start: datetime | None = None, end: datetime | None = None, tail: int = 200) -> list[LogLine]:
        if not 1 <= int(tail) <= kql.MAX_ROWS:
            raise InvalidInput(f"tail must be between 1 and {kql.MAX_ROWS}, got {tail}")
        q = self.q.builder(endpoint).log_search(endpoint, source=source, text=text or None, start=start, end=end,
                                               tail=int(tail))
        rows, warning = self.q.run("log_search", q)
        lines = [LogLine(at=_utc(r.get("at")), source=r.get("source") or "", text=r.get("text") or "") for r in rows]
        return _mark(lines, warning)


__all__ = ["AzureTelemetry", "AzureLogs", "PartialList", "PartialRequestDetail", "warning_of"]
