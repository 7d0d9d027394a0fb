"""The audit trail: every write leaves an append-only record with actor, target, before/after."""
from __future__ import annotations

from .helpers import LEAD, QA, diabetes, spec, write_csv

MODEL = "diabetes-regressor"


def events(ws, action: str, target: str | None = None):
    return [e for e in ws.releases.audit() if e.action == action and (target is None or e.target == target)]


def test_registering_data_is_recorded_with_the_actor_in_one_spelling_and_the_role(workspace, tmp_path):
    dv = workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes()), actor=" Lead@Contoso.COM")
    [event] = events(workspace, "dataset.register", "diabetes:1")
    assert (event.actor, event.role, dv.created_by) == (LEAD, "ml_lead", LEAD)
    assert event.after["rows"] == 442 and event.after["tests"] == "pass"


def test_registered_models_are_recorded(demo):
    registered = events(demo, "model.register")
    assert {e.target for e in registered} >= {f"{MODEL}:{v}" for v in range(1, 6)}
    for e in registered:
        assert e.after["run"] and "rmse" in e.after["metrics"]


def test_model_changes_are_recorded_with_actor_before_and_after(demo):
    demo.models.set_tags(MODEL, 2, {"owner": "ml-team"}, actor=LEAD)
    demo.models.set_description(MODEL, 2, "new words", actor="LEAD@contoso.com")
    demo.models.set_alias(MODEL, "challenger", 2, actor=QA)
    demo.models.set_alias(MODEL, "challenger", 3, actor=QA)
    demo.models.archive(MODEL, 4, actor=LEAD)
    demo.models.archive(MODEL, 4, actor=LEAD)  # idempotent: no second record
    demo.models.restore(MODEL, 4, actor=LEAD)

    [tags] = events(demo, "model.tags", f"{MODEL}:2")
    assert tags.actor == LEAD and tags.after["owner"] == "ml-team" and "owner" not in tags.before
    [description] = events(demo, "model.description", f"{MODEL}:2")
    assert description.after == {"description": "new words"} and description.actor == LEAD
    moves = events(demo, "model.alias", f"{MODEL}@challenger")
    assert [(m.before, m.after) for m in reversed(moves)] == [(None, {"version": 2}),
                                                              ({"version": 2}, {"version": 3})]
    assert all((m.actor, m.role) == (QA, "qa") for m in moves)
    assert len(events(demo, "model.archive", f"{MODEL}:4")) == 1
    assert len(events(demo, "model.restore", f"{MODEL}:4")) == 1
    for action, version in [("model.tags", 2), ("model.description", 2), ("model.archive", 4), ("model.restore", 4)]:
        assert {e.role for e in events(demo, action, f"{MODEL}:{version}")} == {"ml_lead"}, action


def test_submitted_runs_are_recorded(demo):
    before = len(events(demo, "run.submit"))
    run = demo.jobs.submit(spec(version=1), "Lee@Contoso.com")
    demo.jobs.cancel(run.id, actor="admin@contoso.com")
    [submit] = events(demo, "run.submit", run.id)
    assert (submit.actor, submit.role) == ("lee@contoso.com", "ml_lead") and submit.after["dataset"] == "diabetes:1"
    assert run.created_by == "lee@contoso.com"
    assert len(events(demo, "run.submit")) == before + 1
    [cancel] = events(demo, "run.cancel", run.id)
    assert (cancel.actor, cancel.role) == ("admin@contoso.com", "admin")


def test_audit_is_newest_first_and_limited(demo):
    trail = demo.releases.audit()
    assert [e.id for e in trail] == sorted((e.id for e in trail), reverse=True)
    assert [e.at for e in trail] == sorted((e.at for e in trail), reverse=True)
    assert demo.releases.audit(limit=3) == trail[:3]


def test_the_trail_cannot_be_rewritten_or_deleted(backend, demo):
    trail = demo.releases.audit()
    assert trail
    errors = backend.tamper_audit(demo)
    assert len(errors) == 2 and all("append-only" in e for e in errors), errors
    assert demo.releases.audit() == trail
