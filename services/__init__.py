"""Tollgate's services: the Protocols, entities, errors and release rules, and the
backends behind them. Never imports streamlit."""
from .errors import (BackendUnavailable, Conflict, Forbidden, GateFailed, InvalidInput, NotFound,  # noqa: F401
                     ServiceError)
from .workspace import open_workspace  # noqa: F401
