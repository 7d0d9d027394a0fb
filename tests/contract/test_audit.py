"""The audit trail: every write leaves an append-only record with actor, target, before/after."""
from __future__ import annotations

from .helpers import diabetes, spec, write_csv

MODEL = "diabetes-regressor"


def events(ws, action: str, target: str | None = None):
    return [e for e in ws.releases.audit() if e.action == action and (target is None or e.target == target)]


def test_registering_data_is_recorded(workspace, tmp_path):
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes()), created_by="ana@example.com")
    [event] = events(workspace, "dataset.register", "diabetes:1")
    assert event.actor == "ana@example.com"
    assert event.after["rows"] == 442 and event.after["tests"] == "pass"


def test_registered_models_are_recorded(demo):
    registered = events(demo, "model.register")
    assert {e.target for e in registered} >= {f"{MODEL}:{v}" for v in range(1, 6)}
    for e in registered:
        assert e.after["run"] and "rmse" in e.after["metrics"]


def test_model_changes_are_recorded_with_actor_before_and_after(demo):
    demo.models.set_tags(MODEL, 2, {"owner": "ml-team"}, actor="lead@example.com")
    demo.models.set_description(MODEL, 2, "new words", actor="lead@example.com")
    demo.models.set_alias(MODEL, "challenger", 2, actor="qa@example.com")
    demo.models.set_alias(MODEL, "challenger", 3, actor="qa@example.com")
    demo.models.archive(MODEL, 4, actor="qa@example.com")
    demo.models.archive(MODEL, 4, actor="qa@example.com")  # idempotent: no second record
    demo.models.restore(MODEL, 4, actor="qa@example.com")

    [tags] = events(demo, "model.tags", f"{MODEL}:2")
    assert tags.actor == "lead@example.com" and tags.after["owner"] == "ml-team" and "owner" not in tags.before
    [description] = events(demo, "model.description", f"{MODEL}:2")
    assert description.after == {"description": "new words"}
    moves = events(demo, "model.alias", f"{MODEL}@challenger")
    assert [(m.before, m.after) for m in reversed(moves)] == [(None, {"version": 2}),
                                                              ({"version": 2}, {"version": 3})]
    assert all(m.actor == "qa@example.com" for m in moves)
    assert len(events(demo, "model.archive", f"{MODEL}:4")) == 1
    assert len(events(demo, "model.restore", f"{MODEL}:4")) == 1


def test_submitted_runs_are_recorded(demo):
    before = len(events(demo, "run.submit"))
    run = demo.jobs.submit(spec(version=1, created_by="bot@example.com"))
    demo.jobs.cancel(run.id, actor="qa@example.com")
    [submit] = events(demo, "run.submit", run.id)
    assert submit.actor == "bot@example.com" and submit.after["dataset"] == "diabetes:1"
    assert len(events(demo, "run.submit")) == before + 1
    [cancel] = events(demo, "run.cancel", run.id)
    assert cancel.actor == "qa@example.com"


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
