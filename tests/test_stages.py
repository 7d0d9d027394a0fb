"""One vocabulary for a version's release stage (``services.stages``): the words, the decision
queue, the release board's rows and the champion a version's evidence is read against."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.entities import ModelVersion, ReleaseState, Stage
from services.stages import (WORDS, awaiting_decision, evidence_baseline, on_the_board, stage_counts, stage_of,
                             stage_words, version_stage)

MODEL = "diabetes-regressor"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def mv(version, *, champion: bool = False, archived: bool = False, name: str = MODEL) -> ModelVersion:
    created = T0 + timedelta(hours=version if isinstance(version, int) else 100)
    return ModelVersion(name, version, created, "lead@contoso.com", "", "ridge", {}, None, None, None, {},
                        aliases=("champion",) if champion else (), archived=archived)


def rs(version, stage: Stage, approved_against: str | None = None, name: str = MODEL) -> ReleaseState:
    return ReleaseState(name, version, stage, approved_against=approved_against)


def test_every_stage_has_its_words_and_an_archived_version_says_so():
    assert set(WORDS) == set(Stage)
    assert stage_words(Stage.AWAITING_APPROVAL) == "awaiting approval"
    assert stage_words(Stage.ROLLED_BACK) == "rolled back"
    assert stage_words(Stage.REGISTERED, archived=True) == "archived"
    assert stage_words(Stage.REJECTED, archived=True) == "rejected, archived"
    assert stage_of(None) == Stage.REGISTERED           # never deployed
    assert version_stage(mv(2), None) == "registered (not deployed)"
    assert version_stage(mv(3), rs(3, Stage.APPROVED)) == "approved"


def test_the_queue_is_exactly_the_versions_awaiting_approval():
    states = [rs(1, Stage.PRODUCTION), rs(2, Stage.ROLLED_BACK), rs(3, Stage.APPROVED), rs(4, Stage.AWAITING_APPROVAL),
              rs(5, Stage.REJECTED), rs(6, Stage.STAGING), rs(7, Stage.AWAITING_APPROVAL),
              rs(1, Stage.AWAITING_APPROVAL, name="other-model")]
    assert [s.model_version for s in awaiting_decision(states, MODEL)] == [4, 7]
    assert len(awaiting_decision(states)) == 3
    assert list(stage_counts(states).items())[:2] == [(Stage.STAGING, 1), (Stage.AWAITING_APPROVAL, 3)]


def test_board_rows_do_not_depend_on_the_champion():
    states = [rs(1, Stage.PRODUCTION), rs(3, Stage.AWAITING_APPROVAL)]
    before = [mv(1, champion=True), mv(2), mv(3), mv(4, archived=True), mv(5)]
    promoted = [mv(1), mv(2), mv(3, champion=True), mv(4, archived=True), mv(5)]
    rows = [v.version for v in on_the_board(before, [s.model_version for s in states], newest=10)]
    assert rows == [5, 3, 2, 1]                                    # newest first; the archived v4 left out
    assert [v.version for v in on_the_board(promoted, [1, 3], newest=10)] == rows
    # only the newest others without a release state, and a released archived version stays
    assert [v.version for v in on_the_board(before, [1, 4], newest=1)] == [5, 4, 1]
    # text versions (Azure) go after the numbered ones, and "3" names the version 3
    assert [v.version for v in on_the_board([mv("foo"), mv(3)], ["3"], newest=0)] == [3]


def test_evidence_is_read_against_the_champion_it_was_approved_against():
    champion = mv(3, champion=True)
    promoted = rs(3, Stage.PRODUCTION, approved_against=f"{MODEL}:1")
    assert evidence_baseline(champion, promoted, champion) == 1                    # promoted: still vs v1
    assert evidence_baseline(mv(3), rs(3, Stage.ROLLED_BACK, f"{MODEL}:1"), mv(1, champion=True)) == 1
    assert evidence_baseline(mv(4), rs(4, Stage.AWAITING_APPROVAL), champion) == 3  # not approved: today's champion
    assert evidence_baseline(champion, rs(3, Stage.PRODUCTION), champion) is None   # nothing to compare with
    assert evidence_baseline(mv(2), None, None) is None                              # no champion yet
    assert evidence_baseline(mv(5), rs(5, Stage.APPROVED, "other-model:1"), champion) == 3
