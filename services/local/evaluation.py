"""Candidate vs champion on the local workspace."""
from __future__ import annotations

from ..entities import Comparison, GateDecision
from ..evaluation import compare_models
from ..evidence import require_lineage
from ..policy import Policy
from .datasets import LocalDatasets
from .models import LocalModels


class LocalEvaluator:
    def __init__(self, datasets: LocalDatasets, models: LocalModels, policy: Policy):
        self.datasets, self.models, self.policy = datasets, models, policy

    def compare(self, name: str, version: int, champion_version: int | None = None) -> Comparison:
        candidate = self.models.get(name, version)
        champion = (self.models.get(name, champion_version) if champion_version is not None
                    else self.models.champion(name))
        require_lineage(candidate)
        frame = self.datasets.load(candidate.dataset, candidate.dataset_version)
        evaluated_on = f"{candidate.dataset}:{candidate.dataset_version}"
        return compare_models(frame, evaluated_on, self.policy,
                              candidate, self.models.load(name, candidate.version),
                              champion, self.models.load(name, champion.version) if champion else None)

    def gate(self, name: str, version: int) -> GateDecision:
        return self.compare(name, version).gate
