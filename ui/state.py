"""The workspace object, cached reads and session-state keys.

``st.cache_resource`` holds one workspace per URI for the whole server;
``st.cache_data`` holds reads for ``READ_TTL`` seconds, keyed by the URI and the
arguments. Every write goes through ``after_write`` which clears the reads.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

from services import open_workspace
from services.drift import DriftReport, drift_for_endpoint
from services.entities import (AuditRecord, Comparison, DatasetVersion, DataTestResult, Endpoint, EndpointHealth,
                               ErrorGroup, LogLine, MetricPoint, ModelVersion, ReleaseState, RequestDetail,
                               RequestRecord, Run, RunFilter, SmokeTestResult, VersionStats)
from services.errors import BackendUnavailable
from services.stages import on_the_board
from services.telemetry import endpoints_health as _endpoints_health, parse_since, window
from services.workspace import workspace_uri

READ_TTL = 10  # seconds; writes clear the cache at once

# session-state keys shared by pages (one place, so pages never disagree on a name)
ACTOR = "tollgate.actor"


def uri() -> str:
    return workspace_uri()


@st.cache_resource(show_spinner=False)
def _workspace(ws_uri: str):
    return open_workspace(ws_uri)


def workspace():
    """The workspace of this server (``TOLLGATE_WORKSPACE``), opened once."""
    return _workspace(uri())


def actor() -> str:
    return st.session_state.get(ACTOR) or "local-user"


def after_write() -> None:
    """Call after any write: the next read sees it."""
    st.cache_data.clear()


# --- cached reads: each takes the URI first so two workspaces never share entries ---

@st.cache_data(ttl=READ_TTL, show_spinner=False)
def dataset_versions(ws_uri: str) -> list[DatasetVersion]:
    return _workspace(ws_uri).datasets.all_versions()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def data_tests(ws_uri: str, name: str, version: int) -> list[DataTestResult]:
    return _workspace(ws_uri).datasets.data_tests(name, version)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def dataset_frame(ws_uri: str, name: str, version: int) -> pd.DataFrame:
    return _workspace(ws_uri).datasets.load(name, version)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def runs(ws_uri: str, flt: RunFilter | None = None) -> list[Run]:
    return _workspace(ws_uri).jobs.list(flt)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def experiments(ws_uri: str) -> list[str]:
    return _workspace(ws_uri).jobs.experiments()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def metric_history(ws_uri: str, run_id: str) -> list[MetricPoint]:
    return _workspace(ws_uri).jobs.metric_history(run_id)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def model_versions(ws_uri: str, name: str | None = None) -> list[ModelVersion]:
    return _workspace(ws_uri).models.versions(name)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def model_names(ws_uri: str) -> list[str]:
    return _workspace(ws_uri).models.names()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def model_version(ws_uri: str, name: str, version: int) -> ModelVersion:
    return _workspace(ws_uri).models.get(name, version)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def board_versions(ws_uri: str, name: str, released: tuple = (), newest: int = 0) -> list[ModelVersion]:
    """The versions ``released`` of ``name`` (those with a release state) and the ``newest`` newest others
    not archived, newest first (``services.stages.on_the_board``): what the Releases board and Overview's
    queue show. Only these go through the cache (pickling all 20,000 versions of a registry cost ~1 s
    per rerun)."""
    return on_the_board(_workspace(ws_uri).models.versions(name), released, newest)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def champion(ws_uri: str, name: str) -> ModelVersion | None:
    return _workspace(ws_uri).models.champion(name)


@st.cache_data(ttl=60, show_spinner=False)
def comparison(ws_uri: str, name: str, version: int, champion_version: int | None = None) -> Comparison:
    # keyed by versions, which are immutable; a new champion changes champion_version
    return _workspace(ws_uri).evaluation.compare(name, version, champion_version)


def runs_frame(items: list[Run]) -> pd.DataFrame:
    """Runs as a table: one row per run, one column per final metric."""
    rows: list[dict[str, Any]] = []
    for r in items:
        row = {"id": r.id, "name": r.display_name, "status": r.status.value, "experiment": r.experiment,
               "estimator": r.estimator, "dataset": f"{r.dataset}:{r.dataset_version}",
               "created": r.created_at, "duration_s": r.duration_s, "created_by": r.created_by,
               "gate": None if r.gate is None else ("pass" if r.gate.passed else "fail"),
               "model": f"{r.model_name}:{r.model_version}" if r.model_version else None}
        row.update({f"m.{k}": v for k, v in r.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


# --- endpoints and releases (issue 3) ---------------------------------------------
# Endpoint health changes without a write (a deployment becomes healthy, crashes):
# a short TTL keeps the Endpoints page close to live.
ENDPOINT_TTL = 3


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def endpoints(ws_uri: str) -> list[Endpoint]:
    return _workspace(ws_uri).endpoints.list()


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def masked_keys(ws_uri: str, endpoint: str) -> tuple[str, str] | None:
    """Masked keys where a listing leaves them out (Azure: one request per endpoint, made
    when the keys panel is shown); None when they cannot be read."""
    return _workspace(ws_uri).endpoints.masked_keys(endpoint)


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def console_log(ws_uri: str, endpoint: str, deployment: str, tail: int) -> str:
    return _workspace(ws_uri).endpoints.console_log(endpoint, deployment, tail)


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def gateway_log(ws_uri: str, endpoint: str, tail: int) -> str:
    """The gateway's own log (where the workspace declares ``gateway_log``)."""
    return _workspace(ws_uri).endpoints.gateway_log(endpoint, tail)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def release_states(ws_uri: str, name: str | None = None) -> list[ReleaseState]:
    return _workspace(ws_uri).releases.states(name)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def release_state(ws_uri: str, name: str, version: int) -> ReleaseState:
    return _workspace(ws_uri).releases.state(name, version)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def smoke_tests(ws_uri: str, limit: int = 200) -> list[SmokeTestResult]:
    return _workspace(ws_uri).releases.smoke_tests(limit)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def smoke_test(ws_uri: str, test_id: int) -> SmokeTestResult:
    return _workspace(ws_uri).releases.smoke_test_result(test_id)


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def audit(ws_uri: str, limit: int | None = None) -> list[AuditRecord]:
    return _workspace(ws_uri).releases.audit(limit)


# --- monitoring: telemetry, logs, request lookup, health (issue 4) -----------------
# Keyed by the window's *span* ("1h"), not its end time: the window is computed inside,
# so reruns within TELEMETRY_TTL reuse the entry and the data is at most that old.
TELEMETRY_TTL = 10


def _telemetry(ws_uri: str):
    ops = _workspace(ws_uri).telemetry
    if ops is None:
        raise BackendUnavailable("this workspace has no request telemetry")
    return ops


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def telemetry_stats(ws_uri: str, since: str, endpoint: str | None = None) -> list[VersionStats]:
    return _telemetry(ws_uri).stats(window(since), endpoint)


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def telemetry_series(ws_uri: str, since: str, endpoint: str | None = None) -> pd.DataFrame:
    return _telemetry(ws_uri).series(window(since), endpoint)


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def status_mix(ws_uri: str, since: str, endpoint: str | None = None) -> pd.DataFrame:
    return _telemetry(ws_uri).status_mix(window(since), endpoint)


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def top_errors(ws_uri: str, since: str, endpoint: str | None = None, limit: int = 10) -> list[ErrorGroup]:
    return _telemetry(ws_uri).top_errors(window(since), endpoint, limit)


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def slowest(ws_uri: str, since: str, endpoint: str | None = None, limit: int = 10) -> list[RequestRecord]:
    return _telemetry(ws_uri).slowest(window(since), endpoint, limit)


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def endpoints_health(ws_uri: str) -> list[EndpointHealth]:
    """Every endpoint's health under the policy's ``[health]`` rules (its own window)."""
    return _endpoints_health(_workspace(ws_uri))


@st.cache_data(ttl=TELEMETRY_TTL, show_spinner=False)
def request_detail(ws_uri: str, request_id: str) -> RequestDetail:
    """One request and its log lines. ``NotFound`` is raised, not cached: a request
    recorded a moment later is found on the next try."""
    return _telemetry(ws_uri).lookup(request_id)


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def log_sources(ws_uri: str, endpoint: str) -> list[str]:
    ops = _workspace(ws_uri).logs
    return [] if ops is None else ops.sources(endpoint)


@st.cache_data(ttl=ENDPOINT_TTL, show_spinner=False)
def log_search(ws_uri: str, endpoint: str, source: str | None, text: str | None, tail: int,
               since: str | None = None, start: datetime | None = None, end: datetime | None = None) -> list[LogLine]:
    """Matching log lines, oldest first. ``since`` ("1h") is a span ending now (computed
    here, so the cache key does not change every second); else ``[start, end)``, open-ended if None."""
    ops = _workspace(ws_uri).logs
    if ops is None:
        raise BackendUnavailable("this workspace has no logs")
    if since:  # up to now, including what is written while the page renders
        start, end = datetime.now(timezone.utc) - parse_since(since), None
    return ops.search(endpoint, source=source, text=text or None, start=start, end=end, tail=tail)


# Drift reads up to 50,000 collected rows and the training data of each serving version:
# heavier than the telemetry aggregates, and it changes slowly.
DRIFT_TTL = 30


@st.cache_data(ttl=DRIFT_TTL, show_spinner="Comparing the collected inputs with the training data…")
def drift_reports(ws_uri: str, endpoint: str, since: str, model: str | None = None) -> list[DriftReport]:
    return drift_for_endpoint(_workspace(ws_uri), endpoint, window(since), model)
