"""Widgets and helpers shared by pages."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from services.entities import CheckStatus, RunStatus
from services.errors import ServiceError

STATUS_ICON = {
    CheckStatus.PASS: "✅", CheckStatus.WARN: "⚠️", CheckStatus.FAIL: "❌",
    RunStatus.QUEUED: "⏳", RunStatus.RUNNING: "🔄", RunStatus.COMPLETED: "✅",
    RunStatus.FAILED: "❌", RunStatus.CANCELED: "⛔",
}
# better / worse colours used for metric deltas everywhere
BETTER, WORSE, NEUTRAL = "#1a7f37", "#cf222e", "#6e7781"


def show_error(error: ServiceError) -> None:
    st.error(f"{error}" + (f"\n\n**What to do:** {error.hint}" if error.hint else ""), icon="🚫")


@contextmanager
def guard() -> Iterator[None]:
    """Show a ServiceError as a message instead of a traceback; the page goes on."""
    try:
        yield
    except ServiceError as e:
        show_error(e)


def badge(status) -> str:
    return f"{STATUS_ICON.get(status, '')} {getattr(status, 'value', status)}"


def fmt_metric(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    if seconds < 0.1:
        return "< 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
