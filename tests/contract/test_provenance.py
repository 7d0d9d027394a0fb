"""Provenance: who asked for a run, which code and environment trained it, copied onto the
model version it registered; and the default dataset version a run trains on."""
from __future__ import annotations

import pytest

from pipeline import provenance as recorded
from services.entities import CheckStatus
from services.errors import InvalidInput, NotFound
from services.permissions import canonical

from .helpers import LEAD, SLOW, allowing_slow, diabetes, spec, write_csv


def _cancel(ws, run_id: str) -> None:
    from services.errors import Conflict
    try:
        ws.jobs.cancel(run_id, LEAD)
    except Conflict:
        pass


def test_every_demo_run_names_who_asked_its_code_version_and_environment(demo):
    runs = demo.jobs.list()
    assert runs
    for run in runs:
        p = run.provenance
        assert p is not None, run.id
        assert p.requested_by == run.created_by
        assert p.code_sha256 and len(p.code_sha256) == 64
        assert p.code_version.startswith(("git ", "sha256 "))
        assert p.python and p.python.count(".") == 2
        assert {"scikit-learn", "numpy", "pandas"} <= set(p.packages)
        assert p.environment


def test_a_model_version_keeps_the_provenance_of_the_run_that_trained_it(demo):
    versions = demo.models.versions()
    assert versions
    for mv in versions:
        assert mv.provenance is not None, mv.ref
        assert mv.provenance == demo.jobs.get(mv.run_id).provenance, mv.ref
        assert not any(k.startswith("provenance.") for k in mv.tags), "kept apart from the editable tags"


def test_a_run_records_the_training_code_and_packages_it_ran_with(demo):
    run = demo.jobs.list()[0]
    assert run.provenance.code_sha256 == recorded.code_sha256()
    assert run.provenance.packages["scikit-learn"] == recorded.package_version("scikit-learn")


def test_the_full_package_list_is_an_output_of_the_run(demo):
    run = demo.jobs.list()[0]
    listing = demo.jobs.artifact(run.id, "environment.txt").decode()
    assert f"scikit-learn=={run.provenance.packages['scikit-learn']}" in listing.splitlines()
    with pytest.raises(NotFound):
        demo.jobs.artifact(run.id, "no-such-output.txt")
    with pytest.raises(NotFound):
        demo.jobs.artifact("run-00000000-000000-000000", "environment.txt")
    for name in ("../log.txt", "/etc/passwd", "outputs/model.pkl", ""):
        with pytest.raises(InvalidInput):
            demo.jobs.artifact(run.id, name)


def test_submit_records_who_asked_and_what_fired_it_at_once(backend, demo):
    run = backend.with_policy(demo, allowing_slow(demo.policy)).jobs.submit(spec(version=2, experiment="contract-provenance", trigger="new dataset version diabetes:2",
                                **SLOW), LEAD)
    try:
        for seen in (run, demo.jobs.get(run.id)):
            assert seen.provenance is not None
            assert seen.provenance.requested_by == canonical(LEAD)
            assert seen.provenance.trigger == "new dataset version diabetes:2"
    finally:
        _cancel(demo, run.id)


def test_provenance_tags_cannot_be_edited(demo):
    mv = demo.models.versions()[0]
    with pytest.raises(InvalidInput, match="provenance"):
        demo.models.set_tags(mv.name, mv.version, {"provenance.requested_by": "someone-else"}, LEAD)
    edited = demo.models.set_tags(mv.name, mv.version, {"reviewed": "yes"}, LEAD)
    assert edited.tags["reviewed"] == "yes"
    assert edited.provenance == mv.provenance, "editing other tags keeps the provenance"


def test_a_run_without_a_version_trains_the_latest_passing_one(backend, demo, tmp_path):
    broken = demo.datasets.register("diabetes", write_csv(tmp_path, diabetes().drop(columns=["bmi"])), actor=LEAD)
    assert broken.tests_status == CheckStatus.FAIL
    run = backend.with_policy(demo, allowing_slow(demo.policy)).jobs.submit(
        spec(version=None, experiment="contract-provenance", **SLOW), LEAD)
    try:
        assert (run.dataset, run.dataset_version) == ("diabetes", 2), "not the failing newest version"
    finally:
        _cancel(demo, run.id)


def test_a_run_without_a_version_is_refused_when_no_version_passed(workspace, tmp_path):
    workspace.datasets.register("tiny", write_csv(tmp_path, diabetes().head(3)), actor=LEAD)
    with pytest.raises(InvalidInput, match="passed its data tests"):
        workspace.jobs.submit(spec("tiny", None), LEAD)
    assert workspace.jobs.list() == []
