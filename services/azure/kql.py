"""KQL for Azure Monitor Logs: the queries behind ``TelemetryService`` and
``LogService`` on Azure, as text for ``LogsQueryClient.query_workspace``.

Log Analytics has **no query parameters**, so a query is text and this module is
the one place that writes it. Three rules keep user text out of the query's
structure:

* User text (endpoint and deployment names, request ids, search text) enters a
  query only through ``kql_string()``: a double-quoted KQL string literal in
  which ``\\``, ``"``, CR, LF and tab have their backslash escapes and every
  other control character (C0, DEL, C1) and the line/paragraph separators
  U+2028/U+2029 (line breaks to the Kusto lexer) are written ``\\uXXXX``. Nothing
  in the output can end the literal early or break its line.
* Tables and columns come only from ``SCHEMA`` (a frozen whitelist) through
  ``ident()`` / ``table_ident()``; anything else is ``InvalidInput``. A name that
  is a plain identifier and no KQL keyword is emitted as is (every whitelisted
  name is); any other is bracket-quoted, ``["name"]``, with a ``kql_string()``
  literal inside.
* Times go through ``kql_datetime()`` (aware datetimes only), bin sizes through
  ``kql_timespan()``, row counts through ``kql_limit()`` (1 … 10,000).

String literal rules: https://learn.microsoft.com/azure/kusto/query/scalar-data-types/string
(``\\"``, ``\\\\``, ``\\t``, ``\\n``; CR and LF must be escaped) and the Kusto lexer,
which also accepts ``\\r`` and ``\\uXXXX`` and ends a literal at CR, LF, U+2028
and U+2029 (github.com/microsoft/Kusto-Query-Language,
src/Kusto.Language/Parser/TokenParser.cs ``ScanStringEscape`` and
src/Kusto.Language/Parser/TextFacts.cs ``IsLineBreakStart``).

Two sources ("flavours"), the same views
----------------------------------------
``TrafficLogQueries``
    The managed online endpoint diagnostics: ``AmlOnlineEndpointTrafficLog``
    (one row per request, written by Azure ML's gateway: endpoint, deployment,
    final response code, total duration, ``XRequestId``) and
    ``AmlOnlineEndpointConsoleLog`` (the containers' stdout/stderr). Needs the
    endpoint's diagnostic settings to send both categories to the workspace.
    The traffic log has no model version: pass ``deployment_models``
    (deployment name -> "name:version", from ``MLClient``) to fill ``model``;
    without it ``model`` is "".
``AppInsightsQueries``
    Workspace-based Application Insights (``AppRequests``, ``AppExceptions``,
    ``AppTraces``) as written by the Azure ML inference server
    (azureml-inference-server-http 1.5.1, ``server/appinsights_client.py``) when
    the deployment has ``app_insights_enabled``. Its request span carries the
    properties ``Request Id``, ``Client Request Id``, ``resultCode``,
    ``Response Value``, ``Container Id``; ``AppRoleName`` is the server's
    ``SERVICE_NAME``. The mapping (``AppInsightsMapping``) is:

    ==============  ====================================================================
    endpoint        ``AppRoleName`` (``endpoint_column``)
    deployment      ``tostring(Properties["deployment"])``
    model           ``tostring(Properties["model"])``
    status          ``Properties["resultCode"]``, else ``ResultCode``, else 0
    latency_ms      ``DurationMs``
    request_id      ``Properties["Request Id"]``, else ``OperationId``
    weight          ``ItemCount`` (sampling; the server samples ALWAYS_ON)
    ==============  ====================================================================

    The inference server writes neither ``deployment`` nor ``model``: they
    are empty unless score.py adds them to the request span (e.g. an
    OpenTelemetry ``SpanProcessor.on_start`` setting both attributes). Until
    then, per-deployment and per-model views come from the traffic log.

Every builder returns a ``Query``; run it as
``client.query_workspace(workspace_id, q.text, timespan=q.timespan)``. The
result columns are named as in ``q.columns`` (the entity fields of
``services.entities`` where there is one). Windows are half-open,
``TimeGenerated >= start and TimeGenerated < end``, as ``TimeWindow`` is.
Failures are status >= 500 or 0 (no answer); client errors are 4xx.

Schemas (column names and types) from Microsoft's table reference:
see ``DOCS``.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Mapping

from ..entities import TimeWindow
from ..errors import BackendUnavailable, InvalidInput
from ..telemetry import MAX_WINDOW

MAX_TEXT_CHARS = 1_000           # longest user text kql_string() accepts
MAX_ROWS = 10_000                # bounds of take / top
MAX_TIMESPAN_SECONDS = 366 * 86_400
MAX_DEPLOYMENT_MODELS = 100

_REFERENCE = "https://learn.microsoft.com/azure/azure-monitor/reference/tables/"
DOCS: Mapping[str, str] = MappingProxyType({
    "AppRequests": _REFERENCE + "apprequests",
    "AppExceptions": _REFERENCE + "appexceptions",
    "AppTraces": _REFERENCE + "apptraces",
    "AmlOnlineEndpointTrafficLog": _REFERENCE + "amlonlineendpointtrafficlog",
    "AmlOnlineEndpointConsoleLog": _REFERENCE + "amlonlineendpointconsolelog",
})

# The whitelist: table -> the columns Tollgate may name (a subset of each table's
# documented schema, see DOCS).
SCHEMA: Mapping[str, frozenset[str]] = MappingProxyType({
    "AppRequests": frozenset({
        "TimeGenerated", "Name", "Url", "ResultCode", "DurationMs", "Success", "Id", "OperationId",
        "OperationName", "AppRoleName", "AppRoleInstance", "Properties", "ItemCount",
    }),
    "AppExceptions": frozenset({
        "TimeGenerated", "OperationId", "AppRoleName", "AppRoleInstance", "Properties", "ItemCount",
        "ExceptionType", "Message", "OuterMessage", "InnermostMessage", "SeverityLevel", "ProblemId",
    }),
    "AppTraces": frozenset({
        "TimeGenerated", "OperationId", "AppRoleName", "AppRoleInstance", "Properties", "ItemCount",
        "Message", "SeverityLevel",
    }),
    "AmlOnlineEndpointTrafficLog": frozenset({
        "TimeGenerated", "EndpointName", "DeploymentName", "Method", "Path", "ResponseCode",
        "ResponseCodeReason", "ModelStatusCode", "ModelStatusReason", "TotalDurationMs",
        "RequestDurationMs", "ResponseDurationMs", "XRequestId", "XMSClientRequestId",
        "RequestPayloadSize", "ResponsePayloadSize", "AuthType", "Location", "_ResourceId",
    }),
    "AmlOnlineEndpointConsoleLog": frozenset({
        "TimeGenerated", "Message", "DeploymentName", "InstanceId", "ContainerName",
        "ContainerImageName", "_ResourceId",
    }),
})

# KQL keywords that cannot be bare identifiers (Kusto.Language KustoFacts_Keywords.cs,
# the query-language part) plus names of operators and functions Tollgate's output
# columns could shadow. A name in here is bracket-quoted.
_RESERVED = frozenset({
    "and", "as", "asc", "between", "bin", "by", "consume", "contains", "count", "datatable", "date",
    "datetime", "decimal", "desc", "distinct", "double", "dynamic", "extend", "false", "filter", "find",
    "first", "for", "has", "has_all", "has_any", "in", "int", "join", "kind", "last", "let", "like",
    "limit", "long", "materialize", "not", "null", "of", "on", "or", "order", "parse", "print", "project",
    "range", "real", "render", "sample", "search", "serialize", "set", "sort", "string", "summarize",
    "take", "time", "timespan", "to", "top", "toscalar", "true", "typeof", "union", "where", "with",
})
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PROPERTY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}\Z")


# --- literals ---------------------------------------------------------------

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_as_code_point(cp: int) -> bool:
    return cp < 0x20 or 0x7F <= cp <= 0x9F or cp in (0x2028, 0x2029)


def kql_string(text: str) -> str:
    """``text`` as a double-quoted KQL string literal: the only way user text
    enters a query. ``\\`` → ``\\\\``, ``"`` → ``\\"``, LF/CR/tab → ``\\n``/``\\r``/``\\t``,
    other control characters and U+2028/U+2029 → ``\\uXXXX``; everything else as is.

    ``InvalidInput`` for a non-str, for more than ``MAX_TEXT_CHARS`` characters,
    and for lone surrogates (not Unicode text; they cannot be sent as UTF-8).
    """
    if not isinstance(text, str):
        raise InvalidInput(f"query text must be a string, not {type(text).__name__}")
    text = str.__str__(text)  # a plain str, whatever subclass came in
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"query text is too long ({len(text):,} characters; at most {MAX_TEXT_CHARS:,})",
                           hint="Search for a shorter piece of the text.")
    out = ['"']
    for ch in text:
        escape = _ESCAPES.get(ch)
        if escape is not None:
            out.append(escape)
            continue
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            raise InvalidInput("query text is not valid Unicode (it holds a lone surrogate)")
        out.append(f"\\u{cp:04x}" if _escape_as_code_point(cp) else ch)
    out.append('"')
    return "".join(out)


def kql_datetime(dt: datetime) -> str:
    """``datetime(2026-11-21T10:00:00.000000Z)`` from an aware datetime (converted to
    UTC). Naive datetimes are ``InvalidInput``: their time zone would be a guess."""
    if not isinstance(dt, datetime):
        raise InvalidInput(f"a time must be a datetime, not {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidInput(f"time {dt.isoformat()} has no time zone",
                           hint="Pass an aware datetime, e.g. datetime.now(timezone.utc).")
    u = dt.astimezone(timezone.utc)
    return (f"datetime({u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:"
            f"{u.second:02d}.{u.microsecond:06d}Z)")


def _integer(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{what} must be a whole number, not {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidInput(f"{what} must be between {lo:,} and {hi:,}, not {value:,}")
    return value


def kql_timespan(seconds: int) -> str:
    """A KQL timespan literal from a whole number of seconds, in the largest unit
    that divides it: 30 → ``30s``, 300 → ``5m``, 3600 → ``1h``, 86400 → ``1d``, 90 → ``90s``."""
    seconds = _integer(seconds, "a timespan in seconds", 1, MAX_TIMESPAN_SECONDS)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def kql_limit(n: int, what: str = "limit") -> str:
    """A row count for ``take`` / ``top``: a whole number in 1 … ``MAX_ROWS``."""
    return str(_integer(n, what, 1, MAX_ROWS))


# --- names ------------------------------------------------------------------

def _name(name: str) -> str:
    """A name as KQL source: as is when a plain identifier and no keyword, else ``["name"]``."""
    if _PLAIN_NAME.match(name) and name not in _RESERVED:
        return name
    return "[" + kql_string(name) + "]"


def table_ident(table: str) -> str:
    """A whitelisted table's name as KQL source; ``InvalidInput`` for any other."""
    if not isinstance(table, str) or table not in SCHEMA:
        raise InvalidInput(f"table {table!r} is not one Tollgate queries",
                           hint="Known tables: " + ", ".join(sorted(SCHEMA)))
    return _name(table)


def ident(table: str, column: str) -> str:
    """A whitelisted column of a whitelisted table as KQL source; ``InvalidInput``
    for a table or column not in ``SCHEMA``."""
    table_ident(table)
    if not isinstance(column, str) or column not in SCHEMA[table]:
        raise InvalidInput(f"column {column!r} of {table} is not one Tollgate queries",
                           hint="Known columns: " + ", ".join(sorted(SCHEMA[table])))
    return _name(column)


def _prop(table: str, key: str) -> str:
    """``tostring(Properties["key"])``: an App Insights custom dimension as a string."""
    return f"tostring({ident(table, 'Properties')}[{kql_string(key)}])"


# --- the query --------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One KQL query. ``text`` is the query; ``timespan`` the (start, end) UTC
    datetimes for ``LogsQueryClient.query_workspace(..., timespan=)`` (the text filters
    the same window itself); ``table`` the table whose rows the result is made of;
    ``columns`` the result's column names, in order."""
    text: str
    timespan: tuple[datetime, datetime]
    table: str
    columns: tuple[str, ...]


STATS_COLUMNS = ("endpoint", "deployment", "model", "requests", "failures", "client_errors",
                 "p50_ms", "p95_ms", "p99_ms")
SERIES_COLUMNS = ("bin", "endpoint", "deployment", "model", "requests", "failures", "client_errors",
                  "rpm", "failure_rate", "p50_ms", "p95_ms", "p99_ms")
STATUS_MIX_COLUMNS = ("status", "model", "requests")
ERROR_COLUMNS = ("message", "status", "count", "first_seen", "last_seen", "models", "sample_request_id")
REQUEST_COLUMNS = ("ts", "endpoint", "deployment", "model", "status", "latency_ms", "request_id",
                   "request_body", "response_body", "error")
LOG_COLUMNS = ("at", "source", "text", "instance")
LOOKUP_LOG_COLUMNS = ("at", "source", "text", "instance", "carries_id")
COLLECTED_COLUMNS = ("ts", "endpoint", "request_id", "models", "input", "custom_dimensions")

# The normalised request relation both flavours build first (see _requests()).
_BASE_COLUMNS = ("TimeGenerated", "endpoint", "deployment", "model", "status", "latency_ms", "request_id",
                 "weight", "request_body", "response_body", "error")
_FAILED = "status >= 500 or status == 0"      # the service's fault (VersionStats.failures)
_ERROR = "status >= 400 or status == 0"       # any failed request (ErrorGroup, RequestRecord.error)
_AGGREGATES = ", ".join([
    "requests = sum(weight)",
    f"failures = sumif(weight, {_FAILED})",
    "client_errors = sumif(weight, status >= 400 and status < 500)",
    "p50_ms = percentilew(latency_ms, weight, 50)",
    "p95_ms = percentilew(latency_ms, weight, 95)",
    "p99_ms = percentilew(latency_ms, weight, 99)",
])


def _utc(dt: datetime) -> datetime:
    kql_datetime(dt)  # the same checks: a datetime, aware
    return dt.astimezone(timezone.utc)


def _span(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise InvalidInput("the window's end must be after its start")
    return start, end


def _window(window: TimeWindow) -> tuple[datetime, datetime]:
    if not isinstance(window, TimeWindow):
        raise InvalidInput(f"expected a TimeWindow, not {type(window).__name__}")
    return _span(window.start, window.end)


def _recent(window: TimeWindow | None) -> tuple[datetime, datetime]:
    """The given window, or the longest one (``MAX_WINDOW``) up to now."""
    if window is not None:
        return _window(window)
    end = datetime.now(timezone.utc)
    return end - MAX_WINDOW, end


def _open_span(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """``[start, end)`` with ``end`` defaulting to now and ``start`` to ``MAX_WINDOW`` before ``end``."""
    end = _utc(end) if end is not None else datetime.now(timezone.utc)
    start = _utc(start) if start is not None else end - MAX_WINDOW
    return _span(start, end)


def _time_filter(table: str, start: datetime, end: datetime) -> str:
    t = ident(table, "TimeGenerated")
    return f"| where {t} >= {kql_datetime(start)} and {t} < {kql_datetime(end)}"


def _required(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    kql_string(text)  # type, length and Unicode checks now, with a clear message
    return text


def _names(names) -> str:
    return ", ".join(_name(n) for n in names)


def _query(lines: list[str], span: tuple[datetime, datetime], table: str, columns: tuple[str, ...]) -> Query:
    return Query(text="\n".join(lines), timespan=span, table=table, columns=columns)


class _RequestViews:
    """The views shared by both flavours, written over the normalised request relation
    that ``_requests()`` builds (columns ``_BASE_COLUMNS``)."""

    _table: str = ""

    def _requests(self, start: datetime, end: datetime, endpoint: str | None, *,
                  request_id: str | None = None, errors: bool = False) -> list[str]:
        raise NotImplementedError

    def stats(self, window: TimeWindow, endpoint: str | None = None) -> Query:
        """One row per (endpoint, deployment, model) that served in the window: requests,
        failures, client errors and weighted p50/p95/p99 latency. Columns ``STATS_COLUMNS``."""
        span = _window(window)
        lines = self._requests(*span, endpoint)
        lines += [f"| summarize {_AGGREGATES} by endpoint, deployment, model",
                  "| order by endpoint asc, deployment asc, model asc"]
        return _query(lines, span, self._table, STATS_COLUMNS)

    def series(self, window: TimeWindow, endpoint: str | None = None) -> Query:
        """Per bin (``bin(TimeGenerated, window.bin_seconds)``, the bin's UTC start),
        endpoint, deployment and model: the ``stats`` figures plus ``rpm`` and
        ``failure_rate``. Columns ``SERIES_COLUMNS``; bins without requests are absent.
        Group by (bin, endpoint, model) in the adapter if one row per model is wanted."""
        span = _window(window)
        seconds = _integer(window.bin_seconds, "bin size in seconds", 1, MAX_TIMESPAN_SECONDS)
        b = _name("bin")
        lines = self._requests(*span, endpoint)
        lines += [
            f"| summarize {_AGGREGATES} by {b} = bin(TimeGenerated, {kql_timespan(seconds)}), "
            "endpoint, deployment, model",
            f"| extend rpm = todouble(requests) * 60.0 / {seconds}, "
            "failure_rate = iff(requests > 0, todouble(failures) / todouble(requests), 0.0)",
            f"| project {_names(SERIES_COLUMNS)}",
            f"| order by {b} asc, endpoint asc, deployment asc, model asc",
        ]
        return _query(lines, span, self._table, SERIES_COLUMNS)

    def status_mix(self, window: TimeWindow, endpoint: str | None = None) -> Query:
        """Requests per (status, model); status 0 = no answer. Columns ``STATUS_MIX_COLUMNS``."""
        span = _window(window)
        lines = self._requests(*span, endpoint)
        lines += ["| summarize requests = sum(weight) by status, model",
                  "| order by requests desc, status asc, model asc"]
        return _query(lines, span, self._table, STATUS_MIX_COLUMNS)

    def top_errors(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> Query:
        """Failed requests (4xx, 5xx and 0) grouped by (message, status), most frequent
        first: count, first/last seen, the models (up to 20), a sample request id.
        Columns ``ERROR_COLUMNS`` (``ErrorGroup``'s fields)."""
        span = _window(window)
        n = kql_limit(limit)
        c = _name("count")
        lines = self._requests(*span, endpoint, errors=True)
        lines += [
            f"| where {_ERROR}",
            f"| summarize {c} = sum(weight), first_seen = min(TimeGenerated), last_seen = max(TimeGenerated), "
            "models = make_set_if(model, isnotempty(model), 20), sample_request_id = take_any(request_id) "
            "by message = error, status",
            f"| top {n} by {c} desc",
            f"| project {_names(ERROR_COLUMNS)}",
        ]
        return _query(lines, span, self._table, ERROR_COLUMNS)

    def slowest(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> Query:
        """The ``limit`` slowest requests, slowest first. Columns ``REQUEST_COLUMNS``
        (``RequestRecord``'s fields)."""
        span = _window(window)
        lines = self._requests(*span, endpoint, errors=True)
        lines += [f"| top {kql_limit(limit)} by latency_ms desc", self._project_record()]
        return _query(lines, span, self._table, REQUEST_COLUMNS)

    def lookup(self, request_id: str, window: TimeWindow | None = None) -> Query:
        """The request with this id (its ``x-request-id``, or the client's request id),
        the latest if several; in ``window`` or the last 30 days. Columns
        ``REQUEST_COLUMNS``; no row means ``NotFound``. Its log lines: ``lookup_logs``."""
        request_id = _required(request_id, "request id")
        span = _recent(window)
        lines = self._requests(*span, None, request_id=request_id, errors=True)
        lines += ["| top 1 by TimeGenerated desc", self._project_record()]
        return _query(lines, span, self._table, REQUEST_COLUMNS)

    @staticmethod
    def _project_record() -> str:
        return "| project ts = TimeGenerated, " + _names(REQUEST_COLUMNS[1:])

    @staticmethod
    def _log_tail(parts: list[list[str]], text: str | None, tail: int) -> list[str]:
        n = kql_limit(tail, "tail")
        if len(parts) == 1:
            lines = list(parts[0])
        else:
            lines = ["union"] + [
                "    (" + "\n    ".join(part) + ")" + ("," if i < len(parts) - 1 else "")
                for i, part in enumerate(parts)]
        if text:
            lines.append(f"| where text contains {kql_string(text)}")
        lines += [f"| top {n} by at desc", "| order by at asc"]
        return lines


# --- managed online endpoint diagnostics -------------------------------------

TRAFFIC = "AmlOnlineEndpointTrafficLog"
CONSOLE = "AmlOnlineEndpointConsoleLog"


@dataclass(frozen=True)
class TrafficLogQueries(_RequestViews):
    """Queries over ``AmlOnlineEndpointTrafficLog`` (requests) and
    ``AmlOnlineEndpointConsoleLog`` (container output).

    Columns used, traffic log: TimeGenerated, EndpointName, DeploymentName,
    ResponseCode, ResponseCodeReason, ModelStatusReason, TotalDurationMs
    (latency: request start to last response byte), XRequestId,
    XMSClientRequestId, Method, Path. Console log: TimeGenerated, Message,
    DeploymentName, InstanceId, _ResourceId (the endpoint resource,
    ``…/onlineEndpoints/<name>``: the console log has no endpoint column).
    Schemas: ``DOCS[TRAFFIC]``, ``DOCS[CONSOLE]``.

    ``deployment_models`` maps deployment names to the "name:version" they serve
    (the current mapping: a deployment updated in the window is attributed to its
    current model); deployments not in it get ``model`` "".
    """
    deployment_models: Mapping[str, str] = field(default_factory=dict)
    _table = TRAFFIC

    def __post_init__(self):
        models = self.deployment_models
        if not isinstance(models, Mapping):
            raise InvalidInput("deployment_models must map deployment names to model versions")
        if len(models) > MAX_DEPLOYMENT_MODELS:
            raise InvalidInput(f"at most {MAX_DEPLOYMENT_MODELS} deployments can be mapped to models")
        pairs = tuple(sorted((_required(k, "deployment name"), _required(v, "model version"))
                             for k, v in models.items()))
        object.__setattr__(self, "deployment_models", MappingProxyType(dict(pairs)))

    def _model(self) -> str:
        if not self.deployment_models:
            return kql_string("")
        d = ident(TRAFFIC, "DeploymentName")
        cases = ", ".join(f"{d} == {kql_string(k)}, {kql_string(v)}" for k, v in self.deployment_models.items())
        return f"case({cases}, {kql_string('')})"

    def _requests(self, start, end, endpoint, *, request_id=None, errors=False):
        c = lambda column: ident(TRAFFIC, column)  # noqa: E731
        lines = [table_ident(TRAFFIC), _time_filter(TRAFFIC, start, end)]
        if endpoint is not None:
            lines.append(f"| where {c('EndpointName')} =~ {kql_string(_required(endpoint, 'endpoint'))}")
        if request_id is not None:
            rid = kql_string(request_id)
            lines.append(f"| where {c('XRequestId')} =~ {rid} or {c('XMSClientRequestId')} =~ {rid}")
        code = c("ResponseCode")
        lines.append("| extend " + ", ".join([
            f"endpoint = {c('EndpointName')}",
            f"deployment = {c('DeploymentName')}",
            f"model = {self._model()}",
            f"status = iff(isnull({code}), tolong(0), tolong({code}))",
            f"latency_ms = todouble({c('TotalDurationMs')})",
            f"request_id = {c('XRequestId')}",
            "weight = tolong(1)",
            f"request_body = {kql_string('')}",
            f"response_body = {kql_string('')}",
        ]))
        lines.append(
            f"| extend error = iff({_ERROR}, coalesce({c('ResponseCodeReason')}, "
            f"{c('ModelStatusReason')}, strcat({kql_string('HTTP ')}, tostring(status))), {kql_string('')})")
        lines.append(f"| project {_names(_BASE_COLUMNS)}")
        return lines

    def lookup_logs(self, request_id: str, window: TimeWindow | None = None, tail: int = 200) -> Query:
        """The console lines of a request: lines whose Message contains the request id
        (``carries_id`` true, first), then the lines of the deployment that served it
        between its arrival and its last response byte (±2 s), oldest first, at most
        ``tail``. The request is found in the traffic log as by ``lookup``. Columns
        ``LOOKUP_LOG_COLUMNS``."""
        request_id = _required(request_id, "request id")
        span = _recent(window)
        n = kql_limit(tail, "tail")
        rid = kql_string(request_id)
        t = lambda column: ident(TRAFFIC, column)  # noqa: E731
        k = lambda column: ident(CONSOLE, column)  # noqa: E731
        lines = [
            f"let hit = materialize({table_ident(TRAFFIC)}",
            "    " + _time_filter(TRAFFIC, *span),
            f"    | where {t('XRequestId')} =~ {rid} or {t('XMSClientRequestId')} =~ {rid}",
            f"    | top 1 by {t('TimeGenerated')} desc);",
            f"let t0 = toscalar(hit | project {t('TimeGenerated')} - 2s);",
            f"let t1 = toscalar(hit | project {t('TimeGenerated')} + {t('TotalDurationMs')} * 1ms + 2s);",
            f"let dep = toscalar(hit | project {t('DeploymentName')});",
            f"let res = toscalar(hit | project strcat({kql_string('/onlineendpoints/')}, {t('EndpointName')}));",
            table_ident(CONSOLE),
            _time_filter(CONSOLE, *span),
            f"| extend carries_id = {k('Message')} contains {rid}",
            f"| where carries_id or ({k('DeploymentName')} == dep and {k('_ResourceId')} endswith res "
            f"and {k('TimeGenerated')} between (t0 .. t1))",
            f"| project at = {k('TimeGenerated')}, source = {k('DeploymentName')}, text = {k('Message')}, "
            f"instance = {k('InstanceId')}, carries_id",
            f"| top {n} by carries_id desc, at asc",
            "| order by carries_id desc, at asc",
        ]
        return _query(lines, span, CONSOLE, LOOKUP_LOG_COLUMNS)

    def log_search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
                   start: datetime | None = None, end: datetime | None = None, tail: int = 200) -> Query:
        """The last ``tail`` lines (oldest first) of an endpoint within ``[start, end)``
        (default: the 30 days up to now) whose text contains ``text`` (``contains``: a
        case-insensitive plain substring, never a pattern). ``source`` is a deployment
        name (its ``AmlOnlineEndpointConsoleLog`` lines), ``"gateway"`` (one line per
        request from ``AmlOnlineEndpointTrafficLog``: method, path, code, duration,
        deployment, request id) or None for both. Columns ``LOG_COLUMNS``."""
        endpoint = _required(endpoint, "endpoint")
        span = _open_span(start, end)
        if source is not None:
            _required(source, "log source")
        if text is not None and text != "":
            kql_string(text)
        t = lambda column: ident(TRAFFIC, column)  # noqa: E731
        k = lambda column: ident(CONSOLE, column)  # noqa: E731
        console = [table_ident(CONSOLE), _time_filter(CONSOLE, *span),
                   f"| where {k('_ResourceId')} endswith {kql_string('/onlineendpoints/' + endpoint)}"]
        if source is not None:
            console.append(f"| where {k('DeploymentName')} == {kql_string(source)}")
        console.append(f"| project at = {k('TimeGenerated')}, source = {k('DeploymentName')}, "
                       f"text = {k('Message')}, instance = {k('InstanceId')}")
        sp = kql_string(" ")
        gateway = [
            table_ident(TRAFFIC), _time_filter(TRAFFIC, *span),
            f"| where {t('EndpointName')} =~ {kql_string(endpoint)}",
            f"| project at = {t('TimeGenerated')}, source = {kql_string('gateway')}, "
            f"text = strcat({t('Method')}, {sp}, {t('Path')}, {sp}, tostring({t('ResponseCode')}), {sp}, "
            f"tostring({t('TotalDurationMs')}), {kql_string('ms ')}, {t('DeploymentName')}, {sp}, "
            f"{t('XRequestId')}), instance = {kql_string('')}",
        ]
        if source == "gateway":
            parts, table = [gateway], TRAFFIC
        elif source is not None:
            parts, table = [console], CONSOLE
        else:
            parts, table = [console, gateway], CONSOLE
        return _query(self._log_tail(parts, text, tail), span, table, LOG_COLUMNS)

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = MAX_ROWS) -> Query:
        """Not available: the traffic log holds no payloads (Azure ML's data collector
        writes inputs to blob storage, not to Log Analytics). ``BackendUnavailable``."""
        raise BackendUnavailable(
            "the endpoint traffic log holds no request payloads",
            hint="Use AppInsightsQueries.collected_inputs (the inference server's model data "
                 "collection to Application Insights), or read the data collector's blobs.")


# --- Application Insights -----------------------------------------------------

REQUESTS, EXCEPTIONS, TRACES = "AppRequests", "AppExceptions", "AppTraces"


@dataclass(frozen=True)
class AppInsightsMapping:
    """Where the App Insights flavour finds Tollgate's fields (see the module docstring).
    ``endpoint_column`` must be a column of AppRequests, AppExceptions and AppTraces;
    the ``*_property`` fields are keys of ``Properties`` (letters, digits, space, ``_ . -``)."""
    endpoint_column: str = "AppRoleName"
    deployment_property: str = "deployment"
    model_property: str = "model"
    request_id_property: str = "Request Id"
    client_request_id_property: str = "Client Request Id"
    status_property: str = "resultCode"
    response_property: str = "Response Value"
    scoring_path: str = "/score"                     # AppRequests.Name ends with it ("" = every request)
    data_message: str = "model_data_collection"      # AppTraces.Message of the model data logs
    input_property: str = "Input"
    models_property: str = "Models"
    custom_dimensions_property: str = "custom_dimensions"

    def __post_init__(self):
        for table in (REQUESTS, EXCEPTIONS, TRACES):
            ident(table, self.endpoint_column)
        for name in ("deployment_property", "model_property", "request_id_property",
                     "client_request_id_property", "status_property", "response_property",
                     "input_property", "models_property", "custom_dimensions_property"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _PROPERTY_KEY.match(value):
                raise InvalidInput(f"{name} {value!r} is not a property key Tollgate accepts",
                                   hint="Letters, digits, space, '_', '.', '-'; at most 64 characters.")
        kql_string(self.scoring_path)
        _required(self.data_message, "data_message")


@dataclass(frozen=True)
class AppInsightsQueries(_RequestViews):
    """Queries over workspace-based Application Insights: ``AppRequests`` (requests),
    ``AppExceptions`` (error messages), ``AppTraces`` (log lines, model data logs).

    Columns used, AppRequests: TimeGenerated, Name, ResultCode, DurationMs,
    OperationId, ItemCount, Properties and the mapping's endpoint column;
    AppExceptions: TimeGenerated, OperationId, Properties, Message, OuterMessage,
    InnermostMessage, ExceptionType; AppTraces: TimeGenerated, Message,
    OperationId, AppRoleInstance, Properties. Schemas: ``DOCS``.

    Exceptions are matched to requests by request id: the inference server logs
    them with ``Request Id`` in a ``custom_dimensions`` property (with its
    OpenTelemetry log exporter, one property holding the Python repr of a dict,
    read here with a regular expression), not under the request's OperationId.
    """
    mapping: AppInsightsMapping = field(default_factory=AppInsightsMapping)
    _table = REQUESTS

    def __post_init__(self):
        if not isinstance(self.mapping, AppInsightsMapping):
            raise InvalidInput("mapping must be an AppInsightsMapping")

    def _endpoint(self, table: str) -> str:
        return f"tostring({ident(table, self.mapping.endpoint_column)})"

    def _dimension_request_id(self, table: str) -> str:
        """The request id inside the ``custom_dimensions`` property (repr of a dict)."""
        key = self.mapping.request_id_property.replace(".", "\\.")
        pattern = "'" + key + "': '([^']*)'"
        return f"extract({kql_string(pattern)}, 1, {_prop(table, self.mapping.custom_dimensions_property)})"

    def _requests(self, start, end, endpoint, *, request_id=None, errors=False):
        m = self.mapping
        c = lambda column: ident(REQUESTS, column)  # noqa: E731
        lines = [table_ident(REQUESTS), _time_filter(REQUESTS, start, end)]
        if m.scoring_path:
            lines.append(f"| where {c('Name')} endswith {kql_string(m.scoring_path)}")
        if request_id is not None:
            rid = kql_string(request_id)
            lines.append(f"| where {_prop(REQUESTS, m.request_id_property)} =~ {rid} "
                         f"or {_prop(REQUESTS, m.client_request_id_property)} =~ {rid} "
                         f"or {c('OperationId')} =~ {rid}")
        lines.append("| extend " + ", ".join([
            f"endpoint = {self._endpoint(REQUESTS)}",
            f"deployment = {_prop(REQUESTS, m.deployment_property)}",
            f"model = {_prop(REQUESTS, m.model_property)}",
            f"status = coalesce(tolong({_prop(REQUESTS, m.status_property)}), tolong({c('ResultCode')}), tolong(0))",
            f"latency_ms = todouble({c('DurationMs')})",
            f"request_id = coalesce({_prop(REQUESTS, m.request_id_property)}, {c('OperationId')})",
            f"weight = iff(isnull({c('ItemCount')}), tolong(1), tolong({c('ItemCount')}))",
            f"request_body = {kql_string('')}",
            f"response_body = {_prop(REQUESTS, m.response_property)}",
        ]))
        if endpoint is not None:
            lines.append(f"| where endpoint =~ {kql_string(_required(endpoint, 'endpoint'))}")
        failed = _ERROR
        status_text = f"strcat({kql_string('HTTP ')}, tostring(status))"
        if errors:
            e = lambda column: ident(EXCEPTIONS, column)  # noqa: E731
            lines += [
                "| join kind=leftouter (",
                f"    {table_ident(EXCEPTIONS)}",
                f"    {_time_filter(EXCEPTIONS, start, end)}",
                f"    | extend request_id = coalesce({_prop(EXCEPTIONS, m.request_id_property)}, "
                f"{self._dimension_request_id(EXCEPTIONS)}, {e('OperationId')})",
                "    | where isnotempty(request_id)",
                f"    | summarize exception = take_any(coalesce({e('Message')}, {e('OuterMessage')}, "
                f"{e('InnermostMessage')}, {e('ExceptionType')})) by request_id",
                "  ) on request_id",
                f"| extend error = iff({failed}, coalesce(exception, {status_text}), {kql_string('')})",
            ]
        else:
            lines.append(f"| extend error = iff({failed}, {status_text}, {kql_string('')})")
        lines.append(f"| project {_names(_BASE_COLUMNS)}")
        return lines

    def _trace_lines(self, start, end, endpoint: str | None, source: str | None) -> list[str]:
        m = self.mapping
        c = lambda column: ident(TRACES, column)  # noqa: E731
        deployment = _prop(TRACES, m.deployment_property)
        lines = [table_ident(TRACES), _time_filter(TRACES, start, end)]
        if endpoint is not None:
            lines.append(f"| where {self._endpoint(TRACES)} =~ {kql_string(endpoint)}")
        if source is not None:
            lines.append(f"| where {deployment} == {kql_string(source)}")
        lines.append(f"| project at = {c('TimeGenerated')}, source = coalesce({deployment}, "
                     f"{c('AppRoleInstance')}), text = {c('Message')}, instance = {c('AppRoleInstance')}")
        return lines

    def lookup_logs(self, request_id: str, window: TimeWindow | None = None, tail: int = 200) -> Query:
        """The AppTraces lines of a request: those of its operation (the OperationId of
        the AppRequests row found as by ``lookup``), those whose ``Request Id`` property
        or Message holds the id (``carries_id``), oldest first, at most ``tail``.
        Columns ``LOOKUP_LOG_COLUMNS``."""
        request_id = _required(request_id, "request id")
        span = _recent(window)
        n = kql_limit(tail, "tail")
        m = self.mapping
        rid = kql_string(request_id)
        r = lambda column: ident(REQUESTS, column)  # noqa: E731
        c = lambda column: ident(TRACES, column)  # noqa: E731
        lines = [
            f"let ops = {table_ident(REQUESTS)}",
            "    " + _time_filter(REQUESTS, *span),
            f"    | where {_prop(REQUESTS, m.request_id_property)} =~ {rid} "
            f"or {_prop(REQUESTS, m.client_request_id_property)} =~ {rid} or {r('OperationId')} =~ {rid}",
            f"    | distinct {r('OperationId')};",
            table_ident(TRACES),
            _time_filter(TRACES, *span),
            f"| extend carries_id = {_prop(TRACES, m.request_id_property)} =~ {rid} "
            f"or {c('Message')} contains {rid} or {self._dimension_request_id(TRACES)} =~ {rid}",
            f"| where carries_id or {c('OperationId')} in (ops)",
            f"| project at = {c('TimeGenerated')}, source = coalesce({_prop(TRACES, m.deployment_property)}, "
            f"{c('AppRoleInstance')}), text = {c('Message')}, instance = {c('AppRoleInstance')}, carries_id",
            f"| top {n} by carries_id desc, at asc",
            "| order by carries_id desc, at asc",
        ]
        return _query(lines, span, TRACES, LOOKUP_LOG_COLUMNS)

    def log_search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
                   start: datetime | None = None, end: datetime | None = None, tail: int = 200) -> Query:
        """As ``TrafficLogQueries.log_search`` over ``AppTraces`` (source = the
        ``deployment`` property, else AppRoleInstance) and, for ``"gateway"``, one
        line per ``AppRequests`` row (name, status, duration, request id). Columns
        ``LOG_COLUMNS``."""
        endpoint = _required(endpoint, "endpoint")
        span = _open_span(start, end)
        if source is not None:
            _required(source, "log source")
        if text is not None and text != "":
            kql_string(text)
        m = self.mapping
        r = lambda column: ident(REQUESTS, column)  # noqa: E731
        sp = kql_string(" ")
        gateway = [
            table_ident(REQUESTS), _time_filter(REQUESTS, *span),
            f"| where {self._endpoint(REQUESTS)} =~ {kql_string(endpoint)}",
            f"| project at = {r('TimeGenerated')}, source = {kql_string('gateway')}, "
            f"text = strcat({r('Name')}, {sp}, coalesce({_prop(REQUESTS, m.status_property)}, {r('ResultCode')}), "
            f"{sp}, tostring({r('DurationMs')}), {kql_string('ms ')}, "
            f"coalesce({_prop(REQUESTS, m.request_id_property)}, {r('OperationId')})), "
            f"instance = tostring({r('AppRoleInstance')})",
        ]
        if source == "gateway":
            parts, table = [gateway], REQUESTS
        elif source is not None:
            parts, table = [self._trace_lines(*span, endpoint, source)], TRACES
        else:
            parts, table = [self._trace_lines(*span, endpoint, None), gateway], TRACES
        return _query(self._log_tail(parts, text, tail), span, table, LOG_COLUMNS)

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = MAX_ROWS) -> Query:
        """The inference server's model data logs of the window, newest first, at most
        ``limit`` records (each may hold several feature rows): AppTraces rows whose
        Message is ``model_data_collection``, logged only after a successful ``run()``
        and only when the deployment sets ``AML_APP_INSIGHTS_ENABLED`` and
        ``AML_MDC_STORAGE_ENABLED``. Columns ``COLLECTED_COLUMNS``.

        The payload's shape depends on the exporter: with the OpenTelemetry log
        exporter of azureml-inference-server-http 1.5.x the whole custom dimension
        dict arrives as one property, ``custom_dimensions`` = Python repr of
        ``{"Request Id": …, "Models": […], "Input": "<json>", "Prediction": …}``,
        cut at 8,192 characters by the exporter: the adapter parses it with
        ``ast.literal_eval`` then ``json.loads(d["Input"])`` and skips cut records.
        Older (OpenCensus) servers wrote ``Input``/``Models``/``Request Id`` as
        separate properties: returned in ``input``/``models``/``request_id``.
        ``model`` ("name:version") keeps records whose models contain it."""
        span = _window(window)
        endpoint = _required(endpoint, "endpoint")
        n = kql_limit(limit)
        m = self.mapping
        c = lambda column: ident(TRACES, column)  # noqa: E731
        dims = _prop(TRACES, m.custom_dimensions_property)
        lines = [
            table_ident(TRACES), _time_filter(TRACES, *span),
            f"| where {c('Message')} == {kql_string(m.data_message)}",
            f"| where {self._endpoint(TRACES)} =~ {kql_string(endpoint)}",
        ]
        if model is not None:
            lit = kql_string(_required(model, "model"))
            lines.append(f"| where {_prop(TRACES, m.models_property)} contains {lit} or {dims} contains {lit}")
        lines += [
            f"| project ts = {c('TimeGenerated')}, endpoint = {self._endpoint(TRACES)}, "
            f"request_id = coalesce({_prop(TRACES, m.request_id_property)}, {self._dimension_request_id(TRACES)}), "
            f"models = {_prop(TRACES, m.models_property)}, input = {_prop(TRACES, m.input_property)}, "
            f"custom_dimensions = {dims}",
            f"| top {n} by ts desc",
        ]
        return _query(lines, span, TRACES, COLLECTED_COLUMNS)


__all__ = [
    "MAX_TEXT_CHARS", "MAX_ROWS", "DOCS", "SCHEMA", "Query", "kql_string", "kql_datetime", "kql_timespan",
    "kql_limit", "ident", "table_ident", "TrafficLogQueries", "AppInsightsMapping", "AppInsightsQueries",
    "STATS_COLUMNS", "SERIES_COLUMNS", "STATUS_MIX_COLUMNS", "ERROR_COLUMNS", "REQUEST_COLUMNS",
    "LOG_COLUMNS", "LOOKUP_LOG_COLUMNS", "COLLECTED_COLUMNS",
]
