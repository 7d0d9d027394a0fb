"""Why something failed, in one line, from what the platform left behind.

``last_error_line(log)`` reads a console log as a person would: the last Python exception it shows
(``ModuleNotFoundError: No module named 'sklearn'``), with the exception that caused it when one
wraps another (the inference server wraps whatever ``init()`` raised in its ``UserScriptException``),
else the last line a log level marks as an error. The local supervisor records it when a
deployment's process exits; the Azure adapter when a deployment failed to provision and Azure's
operation says no more. Text only: callers show it escaped, as user text.
"""
from __future__ import annotations

import re

MAX_REASON = 300
_EXCEPTION = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Exit))(?::\s*(?P<message>.*))?$")
_CAUSED = ("The above exception was the direct cause of the following exception:",
           "During handling of the above exception, another exception occurred:")
_LEVEL = re.compile(r"\b(?:ERROR|CRITICAL|FATAL)\b")


def last_error_line(log: str | None) -> str | None:
    """Why, in one line of at most ``MAX_REASON`` characters; None if the log names no error."""
    lines = [line.strip() for line in (log or "").splitlines()]
    raised = [i for i, line in enumerate(lines) if _EXCEPTION.match(line)]
    if raised:
        last = raised[-1]
        text = _short(lines[last])
        earlier = [i for i in raised if i < last]
        if earlier and any(line in _CAUSED for line in lines[earlier[-1]:last]):
            text += f"; caused by {_short(lines[earlier[-1]])}"
        return _trim(text)
    flagged = [line for line in lines if line and _LEVEL.search(line)]
    return _trim(flagged[-1]) if flagged else None


def _short(line: str) -> str:
    """``package.module.SomeError: message`` → ``SomeError: message``."""
    m = _EXCEPTION.match(line)
    name = m["name"].rsplit(".", 1)[-1]
    return f"{name}: {m['message']}" if m["message"] else name


def _trim(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


__all__ = ["last_error_line", "MAX_REASON"]
