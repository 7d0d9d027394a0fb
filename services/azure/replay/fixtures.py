"""The replay's state from JSON fixtures (the demo workspace: ``services/azure/fixtures``)."""
from __future__ import annotations

import base64
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .transport import ReplayTransport


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# --- fixtures ---------------------------------------------------------------------------------

def load_fixtures(transport: ReplayTransport, folder: Path) -> None:
    """Fill ``transport`` from ``folder``:

    * ``workspace.json`` — ``settings`` (subscription_id, resource_group, workspace_name,
      location, compute, log_analytics_workspace_id, storage_account, ...);
    * ``arm/*.json`` — each a list of ARM resources with their ``id`` (shaped like the
      REST API examples of azure-rest-api-specs);
    * ``mlflow.json`` — ``{"runs": [...MLflow Run JSON...], "history": {run_id: {key: [points]}}}``;
    * ``history.json`` — run history: ``{"runs": [...child runs...], "logs": {run_id: {name: blob}},
      "errors": {run_id: message}}``;
    * ``blobs.json`` — ``{"/container/path": {"file": "relative/path"} | {"text": "..."} |
      {"python": "module:function", "kwargs": {...}}}`` (a ``python`` blob is produced on first
      read; its function gets ``blobs=FakeBlobStore`` plus ``kwargs`` and returns bytes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no replay fixtures in {folder}")
    transport.folder = folder
    ws_file = folder / "workspace.json"
    if ws_file.exists():
        transport.settings = json.loads(ws_file.read_text())["settings"]
        transport.arm.location = transport.settings.get("location", transport.arm.location)
        transport.arm.subscription = transport.settings.get("subscription_id", transport.arm.subscription)
    for f in sorted((folder / "arm").glob("*.json")) if (folder / "arm").is_dir() else []:
        for resource in json.loads(f.read_text()):
            transport.arm.put_raw(resource["id"], resource)
    ml = folder / "mlflow.json"
    if ml.exists():
        data = json.loads(ml.read_text())
        for run in data.get("runs", []):
            transport.mlflow.add_run(run, data.get("history", {}).get(run["info"]["run_id"], {}))
    hist = folder / "history.json"
    if hist.exists():
        data = json.loads(hist.read_text())
        for run in data.get("runs", []):
            transport.history.runs[run["runId"]] = run
        transport.history.logs.update(data.get("logs", {}))
        transport.history.errors.update(data.get("errors", {}))
    blobs = folder / "blobs.json"
    if blobs.exists():
        for path, spec in json.loads(blobs.read_text()).items():
            if "file" in spec:
                transport.blobs.put_lazy(path, lambda p=folder / spec["file"]: p.read_bytes())
            elif "text" in spec:
                transport.blobs.put(path, spec["text"].encode())
            elif "base64" in spec:
                transport.blobs.put(path, base64.b64decode(spec["base64"]))
            elif "python" in spec:
                module, _, fn = spec["python"].partition(":")

                def produce(module=module, fn=fn, kwargs=spec.get("kwargs", {})):
                    return getattr(importlib.import_module(module), fn)(blobs=transport.blobs, **kwargs)
                transport.blobs.put_lazy(path, produce)

