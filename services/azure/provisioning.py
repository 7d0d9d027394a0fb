"""Why an online endpoint or deployment is in provisioning state ``Failed``, as Azure tells it.

An ARM ``OnlineDeployment`` carries no error of its own. What Azure ML leaves is the long-running
operation that failed: real endpoints and deployments name it in ``properties.properties
["AzureAsyncOperationUri"]`` (as the Azure SDK team's recordings show), and its status answers
``{"status": "Failed", "error": {"code", "message"}}`` (ARM's asynchronous-operation format). Where
that says nothing, the deployment's console log often does (``get_logs``: its last error line).

Read only for what failed, once per ``cached`` period; a reason that cannot be read never breaks a
listing (it says so instead). The bearer token goes to ``management.azure.com`` only.
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest

from ..errors import ServiceError
from ..failure import MAX_REASON, last_error_line
from .errors import azure_call
from .mlflow_rest import ARM, make_client

LOG_LINES = 200
NO_REASON = "Azure gave no reason"
OPERATION_URI = "AzureAsyncOperationUri"


class ProvisioningReasons:
    """``deployment(endpoint, d)`` / ``endpoint(raw)``: one line saying why provisioning failed."""

    def __init__(self, ml_client, credential, transport, cached: Callable[[str, Callable[[], Any]], Any]):
        self.ml, self.credential, self.transport, self.cached = ml_client, credential, transport, cached
        self._arm = None

    def deployment(self, endpoint: str, d: Any) -> str:
        return self.cached(f"failed/{endpoint}/{d.name}", lambda: self._deployment(endpoint, d))

    def endpoint(self, raw: Any) -> str:
        return self.cached(f"failed/{raw.name}", lambda: self._operation_error(raw.properties) or
                           f"{NO_REASON}; the Azure ML studio's endpoint page may say more")

    def _deployment(self, endpoint: str, d: Any) -> str:
        reason = self._operation_error(d.properties)
        if reason:
            return reason
        try:
            with azure_call(f"read the console log of {endpoint}/{d.name}"):
                log = self.ml.online_deployments.get_logs(name=d.name, endpoint_name=endpoint, lines=LOG_LINES)
        except ServiceError as e:
            return f"{NO_REASON}, and its console log could not be read: {e}"
        line = last_error_line(log)
        return f"console log: {line}" if line else f"{NO_REASON}; its console log names no error"

    def _operation_error(self, properties: Any) -> str | None:
        """``CODE: message`` of the failed operation named in ``properties``, or None."""
        uri = str((properties or {}).get(OPERATION_URI) or "")
        if urlsplit(uri).hostname != urlsplit(ARM).hostname:
            return None
        try:
            if self._arm is None:
                self._arm = make_client(ARM, self.credential, self.transport, retry_total=1)
            response = self._arm.send_request(HttpRequest("GET", uri))
            body = response.json() if response.status_code < 400 and response.content else {}
        except (AzureError, ValueError):
            return None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not error.get("message"):
            return None
        text = f"{error['code']}: {error['message']}" if error.get("code") else str(error["message"])
        text = " ".join(text.split())
        return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


__all__ = ["ProvisioningReasons", "NO_REASON", "OPERATION_URI"]
