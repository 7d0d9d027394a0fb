"""Requests that people send to an endpoint by hand: the console's Test panel and ``simulate``.

A client with the key can call an endpoint anyway; what this adds is the rule for the
console, which holds the keys for everyone who opens it: sending to the staging endpoint
needs ``invoke_staging``, to any other endpoint (production) ``invoke_production``
(``services.permissions``), and every request sent this way is in the audit trail —
its size, digest and request id, never the payload itself (the request id finds it in the
telemetry, where payloads are kept under the telemetry's own retention).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from .entities import ScoreResult
from .errors import ServiceError
from .permissions import authorize, invoke_action

AUDIT_ACTION = "endpoint.invoke"


def payload_bytes(payload: str | bytes | Mapping) -> bytes:
    """The request body as sent: text as UTF-8, a mapping as JSON."""
    if isinstance(payload, bytes):
        return payload
    return (payload if isinstance(payload, str) else json.dumps(payload)).encode()


def payload_summary(body: bytes) -> dict[str, Any]:
    """What the audit trail keeps of a request body: its size and a digest to match it with."""
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()[:16]}


def send_request(ws, endpoint: str, payload: str | bytes | Mapping, actor: str, *,
                 deployment: str | None = None, timeout_s: float = 30) -> ScoreResult:
    """POST ``payload`` to ``endpoint`` as a client would (``deployment`` pins one) for ``actor``.

    ``Forbidden`` naming the role needed before anything is sent. The request is audited whatever
    its outcome: the status and the deployment and model that answered, or the error."""
    role = authorize(ws.policy, actor, invoke_action(ws.policy, endpoint))
    body = payload_bytes(payload)
    target = f"{endpoint}/{deployment}" if deployment else endpoint
    sent = payload_summary(body)
    try:
        result = ws.endpoints.invoke(endpoint, body, deployment=deployment, timeout_s=timeout_s)
    except ServiceError as e:
        ws.audit.record(actor, AUDIT_ACTION, target, role=role, before=sent, after={"error": str(e)})
        raise
    ws.audit.record(actor, AUDIT_ACTION, target, role=role, before=sent,
                    after={"status": result.status, "request_id": result.request_id,
                           "deployment": result.deployment, "model": result.model,
                           "latency_ms": round(result.latency_ms, 1)})
    return result


__all__ = ["AUDIT_ACTION", "send_request", "payload_bytes", "payload_summary"]
