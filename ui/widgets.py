"""Widgets and helpers shared by pages."""
from __future__ import annotations

import math
import re
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
# one colour per model in every chart; green/red stay reserved for better/worse
CANDIDATE_COLOR, CHAMPION_COLOR = "#0969da", "#bc4c00"


# what CommonMark, GitHub's extensions and Streamlit's own (``:red[…]``, ``:material/…:``,
# ``$…$``) read as markup; a backslash before any ASCII punctuation makes it a plain character
_MARKUP = frozenset("\\`*_{}[]()#+-.!|<>~$@:=&\"'^%")


def escaped(text: object) -> str:
    """People's text (comments, descriptions, tags, identities, error messages echoing input) for a
    markdown string, a caption, a message box or a label: shown as text, never read as markdown or
    HTML (no link, no image fetched, no heading, no colour). Line breaks stay line breaks."""
    return "".join("\\" + ch if ch in _MARKUP else ch for ch in str(text)).replace("\n", "  \n")


def code(text: object) -> str:
    """People's text as an inline code span (identities, ids, paths): literal inside, and a
    backtick in it cannot close the span (CommonMark: the fence is longer than any run inside)."""
    text = " ".join(str(text).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def show_error(error: ServiceError) -> None:
    """A refusal or failure: its message echoes people's input, so all of it is text."""
    st.error(escaped(error) + (f"\n\n**What to do:** {escaped(error.hint)}" if error.hint else ""), icon="🚫")


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
