"""The Logs page: an endpoint's deployment console logs and gateway log, searched by
plain text (case-insensitive, never a pattern) within a time range, the last N lines,
newest at the bottom, with a download of exactly what is shown.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import streamlit as st

from services.entities import LogLine
from services.telemetry import WINDOW_CHOICES, parse_since

from . import state
from .monitoring_view import adopt_query_params, endpoint_names, show_partial
from .widgets import escaped, guard

ALL = "all sources"
ALL_TIME, CUSTOM = "all time", "custom…"
RANGES = (*WINDOW_CHOICES, ALL_TIME, CUSTOM)
DEFAULT_RANGE = "1h"
TAILS = (50, 200, 1000, 5000)
DEFAULT_TAIL = 200
KEY = "logs.{}"


# --- data shaping (no streamlit) ------------------------------------------------------

def covering_range(age: timedelta) -> str:
    """The shortest time range that still holds something ``age`` old (for a link to its logs)."""
    return next((c for c in WINDOW_CHOICES if parse_since(c) > age + timedelta(minutes=1)), ALL_TIME)


def adopt_search_params() -> None:
    """``?q=TEXT&range=6h`` (the Request lookup's "All logs" link) fill the search and the range,
    once per new value (then they are the user's)."""
    params = {k: st.query_params.get(k) for k in ("q", "range")}
    if params == st.session_state.get(KEY.format("search_seen")):
        return
    st.session_state[KEY.format("search_seen")] = params
    if params["q"]:
        st.session_state[KEY.format("text")] = params["q"][:500]
    if params["range"] in RANGES and params["range"] != CUSTOM:
        st.session_state[KEY.format("range")] = params["range"]


def log_text(lines: list[LogLine], with_source: bool) -> str:
    """One line per line, oldest first; ``[source]`` in front when several sources are mixed."""
    width = max((len(line.source) for line in lines), default=0)
    return "\n".join((f"[{line.source}]".ljust(width + 3) if with_source else "") + line.text for line in lines)


def range_words(choice: str, start: datetime | None, end: datetime | None) -> str:
    if choice == ALL_TIME:
        return "at any time"
    if choice == CUSTOM:
        return f"between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC"
    return f"in the last {choice}"


def nothing_found(endpoint: str, source: str | None, text: str, when: str, sources: list[str]) -> str:
    where = f"the {source} log" if source else f"any log of {endpoint} ({', '.join(sources)})"
    what = f"containing “{escaped(text)}”" if text else ""
    checks = ["the search is plain text, case-insensitive: no wildcards or patterns (`*`, `%`, `.*` match "
              "themselves)" if text else None,
              "a longer time range, or **all time**",
              "another source: a deployment logs its requests, the gateway only warnings and errors"
              if source else None,
              "whether the endpoint has run at all: its deployments write a log only while they run"]
    return (f"**No lines {what} in {where} {when}.** Check:\n"
            + "\n".join(f"- {c}" for c in checks if c))


# --- rendering -------------------------------------------------------------------------

def render() -> None:
    ws, uri = state.workspace(), state.uri()
    st.title("Logs")
    st.caption("Deployment console logs (the inference server's output) and the gateway's log. "
               "Newest at the bottom; times in UTC.")
    if ws.logs is None or ws.endpoints is None:
        st.info("This workspace has no logs.")
        return
    names = endpoint_names(state.endpoints(uri), ws.policy)
    if not names:
        st.info("No online endpoint exists yet, so there are no logs.")
        return
    adopt_query_params(names, KEY.format("endpoint"), None, KEY.format("params_seen"))
    adopt_search_params()
    st.session_state.setdefault(KEY.format("range"), DEFAULT_RANGE)
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    endpoint = c1.selectbox("Endpoint", names, key=KEY.format("endpoint"))
    sources = state.log_sources(uri, endpoint)
    source = c2.selectbox("Source", [ALL, *sources], key=KEY.format("source"),
                          help="A deployment's console log, or the gateway's (keys, routing, errors)")
    choice = c3.selectbox("Time range", RANGES, key=KEY.format("range"))
    tail = c4.selectbox("Last lines", TAILS, index=TAILS.index(DEFAULT_TAIL), key=KEY.format("tail"))
    text = st.text_input("Search", key=KEY.format("text"), max_chars=500,
                         placeholder="plain text, case-insensitive — e.g. a request id, ERROR, Traceback")
    start = end = None
    if choice == CUSTOM:
        now = datetime.now(timezone.utc).replace(tzinfo=None, second=0, microsecond=0)
        d1, d2 = st.columns(2)
        start = d1.datetime_input("From (UTC)", value=now - timedelta(hours=1), key=KEY.format("from"),
                                  format="YYYY-MM-DD", step=timedelta(minutes=5))
        end = d2.datetime_input("To (UTC)", value=now + timedelta(minutes=5), key=KEY.format("to"),
                                format="YYYY-MM-DD", step=timedelta(minutes=5))
        if start is None or end is None or end <= start:
            st.warning("Pick a start before the end.", icon="⚠️")
            return
        start, end = start.replace(tzinfo=timezone.utc), end.replace(tzinfo=timezone.utc)
    picked = None if source == ALL else source
    needle = text if text.strip() else None  # searched as typed: a literal substring
    with guard():
        since = choice if choice in WINDOW_CHOICES else None
        lines = state.log_search(uri, endpoint, picked, needle, tail, since=since, start=start, end=end)
        show_partial(lines)
        when = range_words(choice, start, end)
        if not lines:
            st.info(nothing_found(endpoint, picked, needle or "", when, sources), icon="📭")
            return
        body = log_text(lines, with_source=picked is None)
        cut = len(lines) >= tail
        st.caption(f"{'The last ' if cut else ''}{len(lines)} line(s)"
                   + (f" containing “{needle}”" if needle else "")
                   + f" from {picked or ALL} of {endpoint} {when}; newest at the bottom"
                   + (" (older matches are cut: raise “Last lines” or narrow the search)" if cut else "") + ".")
        # a fixed-height box scrolled to its end: the newest lines are in view, older ones above
        with st.container(height=620 if len(lines) > 28 else "content", autoscroll=True, border=False):
            st.code(body, language=None, wrap_lines=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
        st.download_button("Download", body + "\n", file_name=f"tollgate-{endpoint}-{picked or 'all'}-{stamp}.log",
                           mime="text/plain", icon=":material/download:", key=KEY.format("download"))
