"""Pick the backend from a workspace URI.

``local://PATH`` (default ``local://.tollgate``, relative to the current folder)
opens the embedded local workspace. ``azure://`` opens the Azure ML workspace named
by config.json / the environment / ``.streamlit/secrets.toml`` (``azure://SUB/RG/WS``
names it in the URI); ``azure+replay://[FIXTURE_DIR]`` opens the demo Azure workspace
replayed in memory through the real SDKs (default ``services/azure/fixtures``).
The URI comes from the argument, else the
``TOLLGATE_WORKSPACE`` environment variable, else the default.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInput
from .protocols import Workspace

DEFAULT_URI = "local://.tollgate"
ENV_VAR = "TOLLGATE_WORKSPACE"


def workspace_uri(uri: str | None = None) -> str:
    return uri or os.environ.get(ENV_VAR) or DEFAULT_URI


def open_workspace(uri: str | None = None) -> Workspace:
    uri = workspace_uri(uri)
    scheme, sep, rest = uri.partition("://")
    if not sep:  # a bare path means a local workspace
        scheme, rest = "local", uri
    if scheme == "local":
        from .local.workspace import LocalWorkspace
        if not rest:
            raise InvalidInput("local:// needs a folder, e.g. local://.tollgate")
        return LocalWorkspace(Path(rest).expanduser())
    if scheme in ("azure", "azure+replay"):
        from .azure.workspace import open_azure
        return open_azure(uri)
    raise InvalidInput(f"unknown workspace URI scheme {scheme!r} in {uri!r}",
                       hint="Use local://PATH (default local://.tollgate), azure:// or azure+replay://.")
