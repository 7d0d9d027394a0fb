"""Roles on every write (issue 10): each action that changes anything, walked as ``support`` and as
an identity with no role, on every backend. Each must be refused — ``Forbidden`` naming the role
it needs — and leave everything as it was: datasets, runs, models (tags, description, archive,
aliases), schedules and triggers, release states, endpoints, and the audit trail's length.

The release actions (deploy … keys, up/down, canary) go through the release workflow
(``services/release``), on both backends.
"""
from __future__ import annotations

import pytest

from services.drift import register_collected_inputs
from services.entities import ENDPOINT_PROCESSES, RunStatus
from services.errors import Forbidden, Unsupported
from services.permissions import roles_needed
from services.scoring import send_request
from services.simulator import simulate
from services.telemetry import window

from .helpers import LEAD, SUPPORT, diabetes, snapshot, spec, stop_endpoints, write_csv

MODEL = "diabetes-regressor"
NOBODY = "nobody@contoso.com"  # not in [roles]: may read everything, change nothing


@pytest.fixture(scope="module")
def world(demo, tmp_path_factory):
    """The demo with one schedule (so there is something to pause and remove) and a data file."""
    schedule = demo.schedules.add("diabetes", "0 3 * * *", LEAD, estimator="ridge")
    folder = tmp_path_factory.mktemp("roles")
    run = next(r for r in demo.jobs.list() if r.status == RunStatus.COMPLETED)
    return {"schedule": schedule.id, "csv": write_csv(folder, diabetes().head(80), "more.csv"), "run": run.id}


# (case, the action of services.permissions it needs, the call) — ``c`` is the world, ``who`` the actor
WRITES = [
    ("register a dataset version", "register_dataset",
     lambda ws, c, who: ws.datasets.register("diabetes", c["csv"], actor=who)),
    ("start a training run", "submit_run", lambda ws, c, who: ws.jobs.submit(spec(version=2), who)),
    ("cancel a run", "cancel_run", lambda ws, c, who: ws.jobs.cancel(c["run"], who)),
    ("set a model tag", "edit_model", lambda ws, c, who: ws.models.set_tags(MODEL, 2, {"owner": "me"}, who)),
    ("remove a model tag", "edit_model", lambda ws, c, who: ws.models.set_tags(MODEL, 2, {"estimator": None}, who)),
    ("describe a model", "edit_model", lambda ws, c, who: ws.models.set_description(MODEL, 2, "mine", who)),
    ("archive a model version", "archive_model", lambda ws, c, who: ws.models.archive(MODEL, 3, who)),
    ("restore a model version", "archive_model", lambda ws, c, who: ws.models.restore(MODEL, 3, who)),
    ("move the champion alias", "set_alias", lambda ws, c, who: ws.models.set_alias(MODEL, "champion", 2, who)),
    ("add a schedule", "edit_schedules", lambda ws, c, who: ws.schedules.add("diabetes", "0 4 * * *", who)),
    ("pause a schedule", "edit_schedules", lambda ws, c, who: ws.schedules.set_enabled(c["schedule"], False, who)),
    ("remove a schedule", "edit_schedules", lambda ws, c, who: ws.schedules.remove(c["schedule"], who)),
    ("turn a trigger on", "edit_schedules", lambda ws, c, who: ws.schedules.set_trigger("diabetes", True, who)),
    ("register collected inputs", "register_collected_inputs",
     lambda ws, c, who: register_collected_inputs(ws, "production", window("1h"), "production-inputs", who)),
    ("send a request to production", "invoke_production",
     lambda ws, c, who: send_request(ws, "production", {"data": [[0] * 10]}, who)),
    ("send a request to staging", "invoke_staging",
     lambda ws, c, who: send_request(ws, "staging", {"data": [[0] * 10]}, who)),
    ("simulate traffic to production", "invoke_production",
     lambda ws, c, who: simulate(ws, "production", 5, 1, actor=who)),
]

RELEASES = [
    ("deploy to staging", "deploy", lambda ws, c, who: ws.releases.deploy(MODEL, 2, "staging", who)),
    ("run a smoke test", "smoke_test", lambda ws, c, who: ws.releases.smoke_test("staging", who)),
    ("approve", "approve", lambda ws, c, who: ws.releases.approve(MODEL, 2, who, "fine")),
    ("reject", "reject", lambda ws, c, who: ws.releases.reject(MODEL, 2, who, "not fine")),
    ("promote", "promote", lambda ws, c, who: ws.releases.promote(MODEL, 2, who)),
    ("roll back", "rollback", lambda ws, c, who: ws.releases.rollback("production", who, "bad")),
    ("set traffic", "set_traffic", lambda ws, c, who: ws.releases.set_traffic("production", {"blue": 100}, who)),
    ("regenerate a key", "regenerate_key", lambda ws, c, who: ws.releases.regenerate_key("production", "primary", who)),
    ("see the keys", "show_keys", lambda ws, c, who: ws.endpoints.keys("production", who)),
    ("start a canary", "promote", lambda ws, c, who: ws.releases.start_canary(MODEL, 2, who)),
    ("pause a canary", "promote", lambda ws, c, who: ws.releases.pause_canary("production", who)),
    ("resume a canary", "promote", lambda ws, c, who: ws.releases.resume_canary("production", who)),
    ("abort a canary", "rollback", lambda ws, c, who: ws.releases.abort_canary("production", who)),
]


def refused(ws, world, who: str, action: str, call) -> None:
    before = snapshot(ws)
    with pytest.raises(Forbidden) as err:
        call(ws, world, who)
    message = str(err.value)
    assert who in message and roles_needed(action) in message, message
    assert snapshot(ws) == before, "a refused write changed something"


@pytest.mark.parametrize("who", [SUPPORT, NOBODY])
@pytest.mark.parametrize("case, action, call", WRITES, ids=[w[0] for w in WRITES])
def test_every_write_is_refused_without_the_role_and_changes_nothing(demo, world, who, case, action, call):
    refused(demo, world, who, action, call)


@pytest.mark.parametrize("who", [SUPPORT, NOBODY])
@pytest.mark.parametrize("case, action, call", RELEASES, ids=[r[0] for r in RELEASES])
def test_every_release_action_is_refused_without_the_role_and_changes_nothing(backend, demo, world, who,
                                                                              case, action, call):
    refused(demo, world, who, action, call)


@pytest.mark.parametrize("who", [SUPPORT, NOBODY])
def test_starting_and_stopping_the_endpoints_is_refused_without_the_role(backend, demo, world, who):
    """``up``/``down`` (``operate_endpoints``) where the backend runs endpoint processes; Azure
    says it has none to start. A wrongly allowed ``up`` is stopped again: the walk leaves no process."""
    before = snapshot(demo)
    expected = Forbidden if ENDPOINT_PROCESSES in demo.info.capabilities else Unsupported
    try:
        with pytest.raises(expected) as err:
            demo.endpoints.up(who)
        if expected is Forbidden:
            assert roles_needed("operate_endpoints") in str(err.value)
        with pytest.raises(expected):
            demo.endpoints.down(who)
    finally:
        if ENDPOINT_PROCESSES in demo.info.capabilities and demo.endpoints.supervisor_pid():
            stop_endpoints(demo)
    assert snapshot(demo) == before



def test_the_same_writes_go_through_with_the_role(demo, world):
    """The walk refuses for the right reason: the role. With it, the same calls change things and
    say who did, under which role (the actor in one spelling)."""
    count = len(demo.audit.audit())
    demo.models.set_tags(MODEL, 2, {"owner": "ml-team"}, "Lead@Contoso.com")
    demo.schedules.set_enabled(world["schedule"], False, LEAD)
    records = demo.audit.audit()
    assert len(records) == count + 2
    assert {(r.action, r.actor, r.role) for r in records[:2]} == {
        ("model.tags", LEAD, "ml_lead"), ("schedule.disable", LEAD, "ml_lead")}
