"""Provenance of runs and model versions, backend-independent: how it is written down.

A run's ``Provenance`` (who asked for it, the code version, the environment) is recorded
by whatever runs the training (``services.local.runner``; an Azure ML job's properties and
the training script's MLflow tags) and copied to the model version it registers, as
string key/value pairs under ``provenance.`` (local: the version's tags; Azure: its
immutable properties, behind the ``tollgate.`` prefix). Those keys are the record: a
version's tag editor may not change them (``check_tags``).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .entities import Provenance
from .errors import InvalidInput

PREFIX = "provenance."
_FIELDS = ("requested_by", "trigger", "code_commit", "code_dirty", "code_sha256", "python", "packages", "environment")


def collected(requested_by: str, trigger: str | None, code: Mapping[str, Any], env: Mapping[str, Any],
              environment: str | None) -> Provenance:
    """A ``Provenance`` from what ``pipeline.provenance`` collected (``code_version()``, ``environment()``)."""
    return Provenance(requested_by=requested_by, trigger=trigger, code_commit=code.get("commit"),
                      code_dirty=code.get("dirty"), code_sha256=code.get("sha256"), python=env.get("python"),
                      packages=dict(env.get("packages") or {}), environment=environment)


def to_dict(p: Provenance) -> dict[str, Any]:
    return {"requested_by": p.requested_by, "trigger": p.trigger, "code_commit": p.code_commit,
            "code_dirty": p.code_dirty, "code_sha256": p.code_sha256, "python": p.python,
            "packages": dict(p.packages), "environment": p.environment}


def from_dict(d: Mapping[str, Any] | None) -> Provenance | None:
    if not d or not d.get("requested_by"):
        return None
    return Provenance(**{k: d.get(k) for k in _FIELDS if k != "packages"}, packages=dict(d.get("packages") or {}))


def to_tags(p: Provenance, prefix: str = PREFIX) -> dict[str, str]:
    """String pairs (tags, properties); absent values are left out."""
    out = {}
    for key, value in to_dict(p).items():
        if value is None or value == {}:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        out[prefix + key] = str(value)
    return out


def from_tags(tags: Mapping[str, str], prefix: str = PREFIX) -> Provenance | None:
    """The provenance kept in ``tags`` (``to_tags``), or None when there is none."""
    raw = {k[len(prefix):]: v for k, v in tags.items() if k.startswith(prefix)}
    if not raw.get("requested_by"):
        return None
    try:
        packages = json.loads(raw.get("packages") or "{}")
    except ValueError:
        packages = {}
    dirty = raw.get("code_dirty")
    return Provenance(requested_by=raw["requested_by"], trigger=raw.get("trigger"),
                      code_commit=raw.get("code_commit"), code_dirty=None if dirty is None else dirty == "true",
                      code_sha256=raw.get("code_sha256"), python=raw.get("python"),
                      packages=packages if isinstance(packages, dict) else {}, environment=raw.get("environment"))


def split_tags(tags: Mapping[str, str]) -> tuple[dict[str, str], Provenance | None]:
    """(the other tags, the provenance) of a version whose tags hold both (the local registry)."""
    return {k: v for k, v in tags.items() if not k.startswith(PREFIX)}, from_tags(tags)


def check_tags(tags: Mapping[str, Any]) -> None:
    """``InvalidInput`` for an edit of the provenance: it is what the training run recorded."""
    fixed = sorted(k for k in tags if str(k).startswith(PREFIX))
    if fixed:
        raise InvalidInput(f"{', '.join(fixed)}: provenance tags are recorded by the training run and cannot be "
                           "changed", hint=f"Use a tag name that does not start with {PREFIX!r}.")


def schedule_trigger(schedule: int | str, due: str | None = None) -> str:
    """The trigger of a run a schedule started: the schedule (its id, or its name on Azure ML)
    and the occurrence it fired for."""
    return f"schedule {'#' if isinstance(schedule, int) else ''}{schedule}" + (f", occurrence due {due}" if due else "")


def dataset_trigger(ref: str) -> str:
    """The trigger of a run a "retrain on new version" trigger started."""
    return f"new dataset version {ref}"
