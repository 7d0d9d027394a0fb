"""The training recipes Tollgate offers: the estimators of ``pipeline/train.py`` and their
parameters, as the services, the console and the CLI see them.

``pipeline/`` ships alone as Azure ML job code and knows nothing of the services; this is the one
place above it that reads its catalogue, so pages never import the pipeline.
"""
from __future__ import annotations

from typing import Any, Mapping

from pipeline.train import ESTIMATORS as _CATALOGUE
from pipeline.train import PipelineError, coerce_params

from .errors import InvalidInput


def estimators() -> tuple[str, ...]:
    """The estimator names, in the pipeline's order (``ridge`` first)."""
    return tuple(_CATALOGUE)


def default_params(estimator: str) -> dict[str, Any]:
    """The estimator's parameters with their defaults (their types are the parameters' types)."""
    return dict(_CATALOGUE[_known(estimator)][1])


def full_params(estimator: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults overlaid with ``params``, each cast to its type; ``InvalidInput`` for an
    unknown estimator, an unknown parameter or a value of the wrong type."""
    _known(estimator)
    try:
        return coerce_params(estimator, dict(params or {}))
    except PipelineError as e:
        raise InvalidInput(str(e)) from None


def _known(estimator: str) -> str:
    if estimator not in _CATALOGUE:
        raise InvalidInput(f"unknown estimator {estimator!r}", hint=f"Choose one of: {', '.join(_CATALOGUE)}.")
    return estimator


__all__ = ["estimators", "default_params", "full_params"]
