"""Arrange a canary rollout in a workspace's database, without processes: production serving
v1 on blue (90 %) and v3 on green (10 %) as step 1 of a running rollout started at ``started``."""
from __future__ import annotations

from datetime import datetime

from services import canary as cn
from services.local.db import utcnow
from services.policy import CanaryPolicy

MODEL = "diabetes-regressor"


def arrange_rollout(ws, started: datetime, rules: CanaryPolicy | None = None, by: str = "qa@contoso.com") -> None:
    ws.endpoints.ensure_endpoints()
    now = utcnow()
    with ws.db.write() as c:
        for name, version, traffic in (("blue", 1, 90), ("green", 3, 10)):
            c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, desired, state,"
                      " created_at, created_by) VALUES ('production', ?, ?, ?, ?, 'running', 'healthy', ?, ?)",
                      (name, MODEL, version, traffic, now, by))
        for version, stage in ((1, "production"), (3, "approved")):
            c.execute("INSERT INTO releases (model_name, model_version, stage, updated_at) VALUES (?, ?, ?, ?)"
                      " ON CONFLICT(model_name, model_version) DO UPDATE SET stage = excluded.stage",
                      (MODEL, version, stage, now))
        c.execute("INSERT INTO rollouts (endpoint, model_name, model_version, canary_deployment, stable_deployment,"
                  " stable_model, steps_json, policy_json, step_index, state, started_at, started_by, step_started_at,"
                  " updated_at) VALUES ('production', ?, 3, 'green', 'blue', ?, '[10, 50, 100]', ?, 0, 'running',"
                  " ?, ?, ?, ?)", (MODEL, f"{MODEL}:1", cn.rules_to_json(rules or CanaryPolicy(), 500.0),
                                   started.isoformat(), by, started.isoformat(), started.isoformat()))


def arrange_production(ws, approved: int, by: str = "qa@contoso.com") -> None:
    """Production serving v1 on blue (100 %, healthy), ``approved`` approved, no rollout."""
    ws.endpoints.ensure_endpoints()
    now = utcnow()
    with ws.db.write() as c:
        c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, desired, state,"
                  " created_at, created_by) VALUES ('production', 'blue', ?, 1, 100, 'running', 'healthy', ?, ?)",
                  (MODEL, now, by))
        for version, stage in ((1, "production"), (approved, "approved")):
            c.execute("INSERT INTO releases (model_name, model_version, stage, updated_at) VALUES (?, ?, ?, ?)"
                      " ON CONFLICT(model_name, model_version) DO UPDATE SET stage = excluded.stage",
                      (MODEL, version, stage, now))
