"""The gateway's routing rule (services/local/routing.py) on a real workspace database:
which deployment answers when none with traffic is healthy."""
from __future__ import annotations

import pytest

from services.local.routing import load_routes
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace

MODEL = "diabetes-regressor"


@pytest.fixture
def ws(demo_template, tmp_path):
    ws = LocalWorkspace(copy_workspace(demo_template, tmp_path / "ws"))
    yield ws
    ws.close()


def production_after_a_rollback(ws: LocalWorkspace, live_state: str, warm_stage: str | None) -> None:
    """production: green serves v1 (100 %, ``live_state``), blue keeps v3 warm and healthy, v3's
    release stage ``warm_stage`` — as the database says it, no process needed to route."""
    ws.endpoints.ensure_endpoints()
    with ws.db.write() as c:
        c.execute("DELETE FROM deployments WHERE endpoint = 'production'")
        for name, version, traffic, state, port in (("green", 1, 100, live_state, 40001),
                                                    ("blue", 3, 0, "healthy", 40002)):
            c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, state, desired,"
                      " port, created_at, created_by) VALUES ('production', ?, ?, ?, ?, ?, 'running', ?,"
                      " '2026-01-01T00:00:00+00:00', 'qa@contoso.com')",
                      (name, MODEL, version, traffic, state, port))
        c.execute("DELETE FROM releases WHERE model_name = ? AND model_version = 3", (MODEL,))
        if warm_stage:
            c.execute("INSERT INTO releases (model_name, model_version, stage, updated_at)"
                      " VALUES (?, 3, ?, '2026-01-01T00:00:00+00:00')", (MODEL, warm_stage))


@pytest.mark.parametrize("warm_stage", [None, "approved", "retired", "production"])
def test_the_warm_deployment_answers_while_the_one_with_traffic_is_down(ws, warm_stage):
    production_after_a_rollback(ws, "unhealthy", warm_stage)
    routes = load_routes(ws.db, "production")
    assert routes.failover is not None and routes.failover.deployment == "blue"
    assert routes.pick().deployment == "blue"


@pytest.mark.parametrize("warm_stage", ["rolled_back", "rejected"])
def test_a_rolled_back_or_rejected_version_never_answers_as_the_failover(ws, warm_stage):
    production_after_a_rollback(ws, "unhealthy", warm_stage)
    routes = load_routes(ws.db, "production")
    assert routes.failover is None and routes.pick() is None   # the gateway answers 503 until green is back
    assert routes.named("blue") is not None, "still reachable when pinned by name (smoke tests, diagnosis)"


def test_with_a_healthy_deployment_with_traffic_the_withdrawn_one_is_irrelevant(ws):
    production_after_a_rollback(ws, "healthy", "rolled_back")
    assert load_routes(ws.db, "production").pick().deployment == "green"
