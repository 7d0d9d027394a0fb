"""The training recipes Tollgate offers: the estimators of ``pipeline/train.py`` and their
parameters, as the services, the console and the CLI see them.

``pipeline/`` ships alone as Azure ML job code and knows nothing of the services; this is the one
place above it that reads its catalogue, so pages never import the pipeline.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from pipeline.train import ESTIMATORS as _CATALOGUE
from pipeline.train import PipelineError, coerce_params

from .errors import InvalidInput
from .policy import TrainingPolicy


def estimators() -> tuple[str, ...]:
    """The estimator names, in the pipeline's order (``ridge`` first)."""
    return tuple(_CATALOGUE)


def default_params(estimator: str) -> dict[str, Any]:
    """The estimator's parameters with their defaults (their types are the parameters' types)."""
    return dict(_CATALOGUE[_known(estimator)][1])


def full_params(estimator: str, params: Mapping[str, Any] | None = None,
                policy: TrainingPolicy | None = None) -> dict[str, Any]:
    """The defaults overlaid with ``params``, each cast to its type; ``InvalidInput`` for an
    unknown estimator, an unknown parameter, a value of the wrong type, a number that is not
    finite, or one outside the policy's ``[training.bounds]`` (checked when a run is submitted or a
    schedule saved, on every backend, before anything starts)."""
    _known(estimator)
    try:
        full = coerce_params(estimator, dict(params or {}))
    except PipelineError as e:
        raise InvalidInput(str(e)) from None
    bounds = (policy or TrainingPolicy()).bounds_of(estimator)
    for key in dict(params or {}):   # what the run asks for; the pipeline's own defaults are its choice
        value = full[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"parameter {key}={value!r} is not a finite number")
        if key in bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = bounds[key]
            if not lo <= value <= hi:
                raise InvalidInput(f"parameter {key}={value} of {estimator} is out of bounds: {lo:g} … {hi:g}",
                                   hint="The policy's [training.bounds] sets what a run may ask for "
                                        "(tollgate.toml); ask an admin to raise it if you need more.")
    return full


def _known(estimator: str) -> str:
    if estimator not in _CATALOGUE:
        raise InvalidInput(f"unknown estimator {estimator!r}", hint=f"Choose one of: {', '.join(_CATALOGUE)}.")
    return estimator


__all__ = ["estimators", "default_params", "full_params"]
