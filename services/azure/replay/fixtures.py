"""The replay's state from JSON fixtures (the demo workspace: ``services/azure/fixtures``)."""
from __future__ import annotations

import base64
import importlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .transport import ReplayTransport


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# ``azure+replay://NAME``: fixture sets kept beside the demo's (``real``: bodies recorded against real
# Azure by the Azure SDK team, see ``fixtures/real/README.md``)
FIXTURE_SETS = {"real": FIXTURES / "real"}


def fixture_folder(rest: str) -> Path | None:
    """The folder ``azure+replay://REST`` names: none (the demo), a named set, or a path."""
    if not rest:
        return None
    return FIXTURE_SETS.get(rest, Path(rest))


# --- fixtures ---------------------------------------------------------------------------------

def load_fixtures(transport: ReplayTransport, folder: Path) -> None:
    """Fill ``transport`` from ``folder``:

    * ``workspace.json`` — ``settings`` (subscription_id, resource_group, workspace_name,
      location, compute, log_analytics_workspace_id, storage_account, ...);
    * ``arm/*.json`` — each a list of ARM resources with their ``id`` (shaped like the
      REST API examples of azure-rest-api-specs), or ``{"sources": {...}, "resources": [...]}``
      for bodies copied from recordings (``sources`` says where each came from); with
      ``"rebase": true`` a body recorded in another workspace is stored under this one's scope
      (its body unchanged);
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
        data = json.loads(f.read_text())
        recorded = isinstance(data, dict)  # {"sources": ..., "rebase": bool, "resources": [...]}
        for resource in data["resources"] if recorded else data:
            path = resource["id"]
            if recorded and data.get("rebase"):
                path = _rebase(path, transport.settings)
            transport.arm.put_raw(path, resource)
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



_WORKSPACE_SCOPE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices"
                              r"/workspaces/[^/]+", re.IGNORECASE)


def _rebase(path: str, settings: dict) -> str:
    """``path`` moved under the workspace of ``settings`` (subscription, resource group, name)."""
    scope = (f"/subscriptions/{settings['subscription_id']}/resourceGroups/{settings['resource_group']}"
             f"/providers/Microsoft.MachineLearningServices/workspaces/{settings['workspace_name']}")
    return _WORKSPACE_SCOPE.sub(scope, path, count=1)
