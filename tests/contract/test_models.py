"""ModelRegistry: versions with lineage, tags, description, archive and aliases (the champion)."""
from __future__ import annotations

import numpy as np
import pytest

from services.errors import Conflict, InvalidInput, NotFound

from .helpers import LEAD, QA, diabetes

MODEL = "diabetes-regressor"


def test_versions_are_numbered_from_1_newest_first(demo):
    assert demo.models.names() == [MODEL]
    versions = demo.models.versions(MODEL)
    assert [m.version for m in versions] == [5, 4, 3, 2, 1]
    assert demo.models.get(MODEL).version == 5
    assert [m.ref for m in demo.models.versions()] == [m.ref for m in versions]


def test_every_version_records_its_lineage(demo):
    for m in demo.models.versions(MODEL):
        run = demo.jobs.get(m.run_id)
        assert (run.model_name, run.model_version) == (MODEL, m.version)
        assert (m.dataset, m.dataset_version) == (run.dataset, run.dataset_version)
        assert m.estimator == run.estimator
        assert m.metrics["rmse"] == pytest.approx(run.metrics["rmse"])
        demo.datasets.get(m.dataset, m.dataset_version)  # the data it was trained on still exists


def test_the_first_registered_model_is_the_champion(demo):
    champion = demo.models.champion(MODEL)
    assert champion.version == 1 and champion.is_champion and champion.aliases == ("champion",)
    assert [m.version for m in demo.models.versions(MODEL) if m.is_champion] == [1]


def test_load_gives_a_model_that_predicts(demo):
    model = demo.models.load(MODEL, 3)
    X = diabetes().drop(columns=["target"]).head(25)
    pred = np.asarray(model.predict(X), dtype=float)
    assert pred.shape == (25,) and np.isfinite(pred).all()
    assert 25 < pred.mean() < 350  # the target's range in the diabetes study


def test_tags_are_set_and_removed(demo):
    original = dict(demo.models.get(MODEL, 2).tags)
    tagged = demo.models.set_tags(MODEL, 2, {"reviewed-by": "lead@example.com", "ticket": "ML-42"}, actor=LEAD)
    assert tagged.tags == {**original, "reviewed-by": "lead@example.com", "ticket": "ML-42"}
    untagged = demo.models.set_tags(MODEL, 2, {"ticket": None, "never-set": None}, actor=LEAD)
    assert untagged.tags == {**original, "reviewed-by": "lead@example.com"}
    assert demo.models.get(MODEL, 2).tags == untagged.tags
    with pytest.raises(InvalidInput):
        demo.models.set_tags(MODEL, 2, {"": "empty key"}, actor=LEAD)


def test_description_is_replaced(demo):
    described = demo.models.set_description(MODEL, 2, "Lasso on the March data", actor=LEAD)
    assert described.description == "Lasso on the March data"
    assert demo.models.get(MODEL, 2).description == "Lasso on the March data"


def test_archive_and_restore_are_idempotent(demo):
    archived = demo.models.archive(MODEL, 4, actor=LEAD)
    assert archived.archived
    assert demo.models.archive(MODEL, 4, actor=LEAD).archived
    assert 4 not in [m.version for m in demo.models.versions(MODEL, include_archived=False)]
    assert 4 in [m.version for m in demo.models.versions(MODEL)]
    assert demo.models.get(MODEL, 4).archived

    assert not demo.models.restore(MODEL, 4, actor=LEAD).archived
    assert not demo.models.restore(MODEL, 4, actor=LEAD).archived
    assert 4 in [m.version for m in demo.models.versions(MODEL, include_archived=False)]


def test_archiving_the_champion_is_a_conflict(demo):
    with pytest.raises(Conflict) as err:
        demo.models.archive(MODEL, 1, actor=LEAD)
    assert "champion" in str(err.value) and err.value.hint
    assert not demo.models.get(MODEL, 1).archived


def test_set_alias_moves_the_champion(demo):
    try:
        moved = demo.models.set_alias(MODEL, "champion", 2, actor=QA)
        assert moved.version == 2 and moved.is_champion
        assert demo.models.champion(MODEL).version == 2
        assert not demo.models.get(MODEL, 1).is_champion
        assert [m.version for m in demo.models.versions(MODEL) if m.is_champion] == [2]
        demo.models.set_alias(MODEL, "champion", 4, actor=QA)
        demo.models.archive(MODEL, 2, actor=LEAD)  # no longer the champion (and serving nothing): may be archived
        demo.models.restore(MODEL, 2, actor=LEAD)
    finally:
        demo.models.set_alias(MODEL, "champion", 1, actor=QA)
    assert demo.models.champion(MODEL).version == 1


def test_aliases_are_independent_and_an_alias_brings_back_an_archived_version(demo):
    demo.models.archive(MODEL, 5, actor=LEAD)
    staged = demo.models.set_alias(MODEL, "staging", 5, actor=QA)
    assert staged.aliases == ("staging",) and not staged.archived
    assert demo.models.champion(MODEL).version == 1
    with pytest.raises(Conflict):
        demo.models.archive(MODEL, 5, actor=LEAD)
    with pytest.raises(InvalidInput):
        demo.models.set_alias(MODEL, "not an alias!", 5, actor=QA)


def test_unknown_model_or_version_is_not_found(demo):
    calls = [
        lambda: demo.models.get("nope"),
        lambda: demo.models.get("nope", 1),
        lambda: demo.models.versions("nope"),
        lambda: demo.models.load("nope", 1),
        lambda: demo.models.set_tags("nope", 1, {"a": "b"}, actor=LEAD),
        lambda: demo.models.archive("nope", 1, actor=LEAD),
    ]
    for call in calls:
        with pytest.raises(NotFound) as err:
            call()
        assert MODEL in err.value.hint, "the hint names the registered models"
    for call in [lambda: demo.models.get(MODEL, 99), lambda: demo.models.load(MODEL, 99),
                 lambda: demo.models.set_alias(MODEL, "champion", 99, actor=QA),
                 lambda: demo.models.set_description(MODEL, 99, "x", actor=LEAD),
                 lambda: demo.models.restore(MODEL, 99, actor=LEAD)]:
        with pytest.raises(NotFound) as err:
            call()
        assert "99" in str(err.value) and err.value.hint
    assert demo.models.champion("nope") is None
    assert demo.models.champion(MODEL).version == 1


def test_version_that_is_not_a_number_is_invalid_input(demo):
    """Locally versions are numbers; Azure allows names (issue 11), so there "three" does not exist."""
    with pytest.raises(NotFound if demo.info.kind == "azure" else InvalidInput):
        demo.models.get(MODEL, "three")


def test_loading_a_corrupt_artifact_is_invalid_input(backend):
    ws = backend.demo()
    backend.corrupt_model(ws, MODEL, 2)
    with pytest.raises(InvalidInput) as err:
        ws.models.load(MODEL, 2)
    assert f"{MODEL}:2" in str(err.value) and err.value.hint
    assert ws.models.load(MODEL, 3) is not None, "other versions still load"
    backend.release(ws)


def test_empty_registry(workspace):
    assert workspace.models.names() == []
    assert workspace.models.versions() == []
    assert workspace.models.champion(MODEL) is None
