"""Where the Azure workspace is, and how to sign in to it.

Settings come from, in this order (a later source fills only what earlier ones left
empty):

1. environment variables — ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP``,
   ``AZUREML_WORKSPACE_NAME``, ``TOLLGATE_LOG_ANALYTICS_WORKSPACE_ID``,
   ``TOLLGATE_AZURE_COMPUTE``, ``TOLLGATE_AZURE_ENVIRONMENT``, ``TOLLGATE_AZURE_DATASTORE``;
2. ``.streamlit/secrets.toml``, table ``[azure]`` with the keys of ``AzureSettings``;
3. ``config.json`` as ``MLClient.from_config`` reads it (``subscription_id``,
   ``resource_group``, ``workspace_name``), searched in the current folder, its
   ``.azureml/`` and the parents (``TOLLGATE_AZURE_CONFIG`` names a file directly).

``DefaultAzureCredential`` is constructed only in ``open_real`` — when a real
``azure://`` workspace is opened — never at import time, never in tests.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import BackendUnavailable, InvalidInput

ENV = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "workspace_name": "AZUREML_WORKSPACE_NAME",
    "log_analytics_workspace_id": "TOLLGATE_LOG_ANALYTICS_WORKSPACE_ID",
    "compute": "TOLLGATE_AZURE_COMPUTE",
    "environment": "TOLLGATE_AZURE_ENVIRONMENT",
    "datastore": "TOLLGATE_AZURE_DATASTORE",
}
CONFIG_ENV = "TOLLGATE_AZURE_CONFIG"
REQUIRED = ("subscription_id", "resource_group", "workspace_name")
CONFIG_KEYS = {"subscription_id": "subscription_id", "resource_group": "resource_group",
               "workspace_name": "workspace_name"}
# what the identity signing in needs, named in messages and the README
ROLE_HINT = ("Assign the signed-in identity the 'AzureML Data Scientist' role on the workspace "
             "(and 'Storage Blob Data Contributor' on its storage account, 'Log Analytics Reader' "
             "on the Log Analytics workspace).")


@dataclass(frozen=True)
class AzureSettings:
    subscription_id: str = ""
    resource_group: str = ""
    workspace_name: str = ""
    log_analytics_workspace_id: str = ""    # the Log Analytics workspace behind Application Insights
    compute: str = "cpu-cluster"            # the compute cluster retraining jobs run on
    environment: str = "azureml:tollgate-sklearn:1"  # the training environment (name:version)
    datastore: str = "workspaceblobstore"   # where uploads and model files go
    experiment: str = "diabetes-retrain"
    location: str = ""
    source: str = ""                        # where the settings came from (shown in messages)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def workspace_scope(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}")

    @property
    def description(self) -> str:
        return f"{self.workspace_name} (resource group {self.resource_group}, subscription {self.subscription_id})"

    def missing(self) -> list[str]:
        return [k for k in REQUIRED if not getattr(self, k)]


def _known(d: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(AzureSettings)} - {"extra", "source"}
    return {k: str(v) for k, v in d.items() if k in names and v not in (None, "")}


def find_config_json(start: Path | None = None) -> Path | None:
    """``config.json`` as ``MLClient.from_config`` finds it: here, ``.azureml/``, then parents."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    folder = (start or Path.cwd()).resolve()
    for d in (folder, *folder.parents):
        for candidate in (d / "config.json", d / ".azureml" / "config.json"):
            if candidate.is_file():
                return candidate
    return None


def read_config_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InvalidInput(f"the Azure ML config file {path} cannot be read: {e}",
                           hint="Download config.json from the workspace's overview page in the Azure portal.") from e
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} is not a JSON object")
    # MLClient.from_config also accepts the older "Scope" form
    if "Scope" in data and "subscription_id" not in data:
        parts = str(data["Scope"]).split("/")
        data = {"subscription_id": parts[2], "resource_group": parts[4], "workspace_name": parts[8]}
    return _known({k: data.get(v) for k, v in CONFIG_KEYS.items()} | data)


def read_secrets_table(path: Path | None = None) -> dict[str, Any]:
    """The ``[azure]`` table of ``.streamlit/secrets.toml`` (empty if there is none)."""
    path = path or Path.cwd() / ".streamlit" / "secrets.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"{path} cannot be read: {e}") from e
    return dict(data.get("azure", {}))


def read_secrets(path: Path | None = None) -> dict[str, str]:
    return _known(read_secrets_table(path))


def load_settings(*, env: Mapping[str, str] | None = None, config_path: Path | None = None,
                  secrets_path: Path | None = None, overrides: Mapping[str, str] | None = None) -> AzureSettings:
    """Settings from ``overrides``, the environment, secrets.toml and config.json, in that order.
    ``InvalidInput`` naming what is missing and where to put it."""
    env = os.environ if env is None else env
    sources: list[tuple[str, dict[str, str]]] = []
    if overrides:
        sources.append(("the workspace URI", _known(overrides)))
    sources.append(("environment", _known({k: env.get(v) for k, v in ENV.items()})))
    sources.append((str(secrets_path or ".streamlit/secrets.toml"), read_secrets(secrets_path)))
    cfg = config_path or find_config_json()
    if cfg is not None and Path(cfg).is_file():
        sources.append((str(cfg), read_config_json(Path(cfg))))
    merged: dict[str, str] = {}
    used: list[str] = []
    for label, values in sources:
        new = {k: v for k, v in values.items() if k not in merged}
        if new:
            used.append(label)
        merged.update(new)
    # the rest of the [azure] table: options of the online side (audit_container_url, deployment
    # template, telemetry source, collect_inputs, cache_ttl_s)
    names = {f.name for f in fields(AzureSettings)}
    extra = {k: v for k, v in read_secrets_table(secrets_path).items() if k not in names}
    settings = replace(AzureSettings(), **merged, source=", ".join(used) or "nothing", extra=extra)
    if settings.missing():
        raise InvalidInput(
            "no Azure ML workspace is configured: missing " + ", ".join(settings.missing()),
            hint="Put config.json (from the workspace's overview page in the Azure portal) in this folder, "
                 "or set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME, "
                 "or add an [azure] table to .streamlit/secrets.toml.")
    return settings


def open_real(settings: AzureSettings, credential: Any = None):
    """``(MLClient, LogsQueryClient, credential)`` for a real workspace. Builds
    ``DefaultAzureCredential`` when no credential is given — the only place that does."""
    try:
        from azure.ai.ml import MLClient
        from azure.monitor.query import LogsQueryClient
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise BackendUnavailable(f"the Azure SDK is not installed: {e}",
                                 hint="pip install -r requirements.txt") from e
    if credential is None:
        try:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        except Exception as e:  # construction itself rarely fails; say what to do if it does
            raise BackendUnavailable(f"no Azure credential could be set up: {e}",
                                     hint="Sign in with `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID "
                                          "and AZURE_CLIENT_SECRET, or run with a managed identity.") from e
    ml = MLClient(credential, settings.subscription_id, settings.resource_group, settings.workspace_name,
                  enable_telemetry=False)
    logs = LogsQueryClient(credential)
    return ml, logs, credential
