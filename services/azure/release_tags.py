"""Release state of a model version on Azure: tags on the model version (``tollgate.stage``,
``tollgate.deployed_by``, ``tollgate.decided_by``, ``tollgate.decision_comment``,
``tollgate.smoke_test_id``, ``tollgate.approved_against``, ``tollgate.updated_at``), read by
every console and pipeline using the workspace. Shared by the release ledger, which writes
them, and the model registry, which refuses to archive a version in the release process."""
from __future__ import annotations

from datetime import datetime

from ..entities import ModelVersion, ReleaseState, Stage

TAG = "tollgate."


def stage_of(mv: ModelVersion) -> Stage:
    try:
        return Stage((mv.tags or {}).get(TAG + "stage") or Stage.REGISTERED.value)
    except ValueError:
        return Stage.REGISTERED


def state_of(mv: ModelVersion) -> ReleaseState:
    t = mv.tags or {}
    smoke = t.get(TAG + "smoke_test_id")
    updated = t.get(TAG + "updated_at")
    return ReleaseState(mv.name, mv.version, stage_of(mv), t.get(TAG + "deployed_by") or None,
                        t.get(TAG + "decided_by") or None, t.get(TAG + "decision_comment") or None,
                        int(smoke) if smoke and str(smoke).isdigit() else None,
                        datetime.fromisoformat(updated) if updated else None,
                        t.get(TAG + "approved_against") or None)


__all__ = ["TAG", "stage_of", "state_of"]
