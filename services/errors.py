"""One error hierarchy for every backend.

Adapters translate SQLite, filesystem and SDK errors into these; pages catch
``ServiceError`` and show ``str(error)`` (plus ``error.hint`` when there is one),
so a user never sees a traceback. The CLI maps them to exit code 2.
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base class. ``hint`` tells the user what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self)


class NotFound(ServiceError):
    """The named dataset, run, model version, endpoint… does not exist."""


class Conflict(ServiceError):
    """The request clashes with the current state (already exists, wrong status)."""


class InvalidInput(ServiceError):
    """The caller's input is malformed: a bad file, a bad parameter, a bad payload."""


class Forbidden(ServiceError):
    """The actor's role does not allow this action."""


class GateFailed(ServiceError):
    """A release gate (quality, data tests, smoke test) refused the transition."""


class BackendUnavailable(ServiceError):
    """The backend cannot be reached or is not configured (network, credentials, throttling)."""


class Unsupported(ServiceError):
    """This backend does not do that (declared in ``WorkspaceInfo.capabilities``), e.g. starting
    endpoint processes on a managed Azure workspace."""
