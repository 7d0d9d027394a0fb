"""Azure ML online endpoints and deployments → the display fields of ``Endpoint``/``Deployment``.

What the Endpoints page shows of a deployment beyond its model and traffic: the compute kind
(managed or Kubernetes), the instance type and count, Azure's own provisioning state, and — for a
deployment that does not serve a workspace model version — where its model comes from (a registry,
an anonymous model registered inline with the deployment).
"""
from __future__ import annotations

import re
from typing import Any

_REGISTRY = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$",
                       re.IGNORECASE)


def text(value: Any) -> str:
    """An SDK enum or string as its plain value ("" for None)."""
    return str(getattr(value, "value", value) or "")


def compute_kind(entity: Any) -> str:
    """``managed`` or ``kubernetes`` (endpoint ``kind``/deployment ``type``; ``compute`` set: Kubernetes)."""
    kind = text(getattr(entity, "kind", None) or getattr(entity, "type", None)).lower()
    if kind:
        return "kubernetes" if kind.startswith("k") else "managed"
    return "kubernetes" if getattr(entity, "compute", None) else "managed"


def model_source(model_ref: Any) -> str:
    """Where a deployment's model comes from when it is not a workspace model version: ``"registry
    R: NAME:VERSION"``, ``"anonymous model"`` (registered inline), ``""`` for a workspace model."""
    ref = model_ref if isinstance(model_ref, str) else getattr(model_ref, "id", None) or ""
    m = _REGISTRY.match(str(ref))
    if m:
        return f"registry {m['registry']}: {m['name']}:{m['version']}"
    if model_ref is not None and not isinstance(model_ref, str) and not getattr(model_ref, "name", None):
        return "anonymous model"  # a model given inline (a path), registered by the SDK without a name
    return ""


def instance_count(deployment: Any) -> int | None:
    count = getattr(deployment, "instance_count", None)
    try:
        return int(count) if count is not None else None
    except (TypeError, ValueError):
        return None
