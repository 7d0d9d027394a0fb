"""The release stage of a model version: one vocabulary for every page and the CLI.

A version's stage is the release workflow's (``services.release``): where it is on its way to
production (registered → in staging → awaiting approval → approved → in production, or
rejected, retired, rolled back). It is read from the release ledger and said in these words
only — Overview, Models, Releases and the CLI all ask here. Azure ML's own model ``stage``
field (Development, Production, Archived…), set by whoever registered the version, is another
thing: it is ``ModelVersion.azure_stage``, shown as "Azure stage" beside this one, never mixed in.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from .entities import ModelVersion, ReleaseState, Stage
from .versions import Version, newest_first, parse_version, same

WORDS = {
    Stage.REGISTERED: "registered (not deployed)", Stage.STAGING: "in staging, smoke test not passed",
    Stage.AWAITING_APPROVAL: "awaiting approval", Stage.APPROVED: "approved", Stage.REJECTED: "rejected",
    Stage.PRODUCTION: "in production", Stage.RETIRED: "retired (replaced in production)",
    Stage.ROLLED_BACK: "rolled back",
}
ARCHIVED = "archived"

# the stage whose versions wait for someone's decision (the ML lead's): Overview's queue
AWAITING_DECISION = Stage.AWAITING_APPROVAL


def stage_of(state: ReleaseState | None) -> Stage:
    """A version with no release state was never deployed: registered."""
    return state.stage if state is not None else Stage.REGISTERED


def stage_words(stage: Stage, archived: bool = False) -> str:
    """The stage as every page and the CLI say it; an archived version says so (a version in the
    release process cannot be archived: ``release_rules.check_archive``)."""
    if archived:
        return ARCHIVED if stage == Stage.REGISTERED else f"{WORDS[stage]}, {ARCHIVED}"
    return WORDS[stage]


def version_stage(mv: ModelVersion, state: ReleaseState | None) -> str:
    """What a version's stage column or badge says."""
    return stage_words(stage_of(state), mv.archived)


def stages_by_version(states: Iterable[ReleaseState], name: str | None = None) -> dict[Version, Stage]:
    """Each version's stage (of model ``name``, or of every model when None), by version."""
    return {s.model_version: s.stage for s in states if name is None or s.model_name == name}


def awaiting_decision(states: Iterable[ReleaseState], name: str | None = None) -> list[ReleaseState]:
    """The decision queue: the versions (of ``name``) awaiting approval — exactly those; an approved,
    rejected, rolled-back or merely registered version waits for nobody's decision."""
    return [s for s in states if s.stage == AWAITING_DECISION and (name is None or s.model_name == name)]


def on_the_board(versions: Iterable[ModelVersion], released: Iterable[Version], newest: int) -> list[ModelVersion]:
    """The release board's versions, newest first: every version in ``released`` (those with a release
    state), and the ``newest`` newest other versions that are not archived. It does not depend on
    the champion, so no row leaves the board when a promote or a rollback moves it."""
    keep = {str(v) for v in released}
    ordered = newest_first(versions)
    others = [v for v in ordered if str(v.version) not in keep and not v.archived][:newest]
    chosen = {id(v) for v in others}
    return [v for v in ordered if id(v) in chosen or str(v.version) in keep]


def evidence_baseline(mv: ModelVersion, state: ReleaseState | None, champion: ModelVersion | None) -> Version | None:
    """The champion version ``mv``'s evidence (comparison, gate decision) is read against: the one it was
    approved against, when it was approved — so the evidence of a promoted, retired or rolled-back
    version stays the evidence it was released on — else today's champion (None: nothing to compare
    with, e.g. the champion itself, never approved against another)."""
    against = state.approved_against if state is not None else None
    if against:
        name, _, version = against.rpartition(":")
        if name == mv.name and version and not same(version, mv.version):
            return parse_version(version)
    if champion is None or (champion.name == mv.name and same(champion.version, mv.version)):
        return None
    return champion.version


def stage_counts(states: Iterable[ReleaseState]) -> Mapping[Stage, int]:
    """How many versions are in each stage, in the workflow's order (stages with none left out)."""
    counts = {stage: 0 for stage in Stage}
    for s in states:
        counts[s.stage] += 1
    return {stage: n for stage, n in counts.items() if n}


__all__ = ["WORDS", "ARCHIVED", "AWAITING_DECISION", "stage_of", "stage_words", "version_stage", "stages_by_version",
           "awaiting_decision", "on_the_board", "evidence_baseline", "stage_counts"]
