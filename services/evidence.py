"""What a model version's review needs, and what is missing from one registered outside Tollgate.

Tollgate records, for every version it registers, the dataset version it was trained on (its
lineage), the training run and the metrics on a held-out split. A version registered by another
tool (the Azure ML studio, the SDK, an MLflow ``log_model``) usually has none of these; the review
then says which evidence is missing instead of failing.
"""
from __future__ import annotations

from .entities import ModelVersion
from .errors import MissingEvidence

LINEAGE = "the dataset version it was trained on (no lineage recorded)"
RUN = "the training run that produced it"
METRICS = "evaluation metrics on a held-out split"


def missing_evidence(mv: ModelVersion) -> tuple[str, ...]:
    """The pieces of evidence the review of ``mv`` lacks (empty when it can be reviewed)."""
    missing = []
    if not mv.dataset:
        missing.append(LINEAGE)
    if not mv.run_id:
        missing.append(RUN)
    if not mv.metrics:
        missing.append(METRICS)
    return tuple(missing)


def require_lineage(mv: ModelVersion) -> None:
    """``MissingEvidence`` when ``mv`` has no dataset lineage: nothing to evaluate it on."""
    if not mv.dataset:
        raise MissingEvidence(f"{mv.ref} has no dataset lineage, so it cannot be evaluated", missing_evidence(mv),
                              hint="It was registered outside Tollgate. Register it from a Tollgate training run, "
                                   "or record the dataset version it was trained on.")
