"""Why something failed, in one line, from what the platform left behind.

``last_error_line(log)`` is the last line of a log that names an error (``ModuleNotFoundError: …``,
``ERROR …``): the local supervisor records it when a deployment's process exits, the Azure adapter
when a deployment failed to provision and Azure's operation says no more. Text only: callers show it
escaped, as user text.
"""
from __future__ import annotations

import re

MAX_REASON = 300
# an exception's name ("ValueError: …", "azureml.x.SomeException: …") or a log level naming an error
_ERROR = re.compile(r"(?:\b[A-Za-z_][\w.]*(?:Error|Exception)\b)|(?:\b(?:ERROR|CRITICAL|FATAL)\b)")


def last_error_line(log: str | None) -> str | None:
    """The last line of ``log`` that names an error, trimmed to ``MAX_REASON`` characters; None if none does."""
    for line in reversed((log or "").splitlines()):
        text = line.strip()
        if text and _ERROR.search(text) and not text.startswith("Traceback"):
            return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"
    return None


__all__ = ["last_error_line", "MAX_REASON"]
