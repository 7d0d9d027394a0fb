"""The training recipes Tollgate offers: the estimators of ``pipeline/train.py`` and their
parameters, as the services, the console and the CLI see them.

``pipeline/`` ships alone as Azure ML job code and knows nothing of the services; this is the one
place above it that reads its catalogue, so pages never import the pipeline.
"""
from __future__ import annotations

import re
import math
from typing import Any, Mapping

from pipeline.train import ESTIMATORS as _CATALOGUE
from pipeline.train import PipelineError, coerce_params, estimators_for

from .datatests import has_labels, no_labels_message, no_passing_version
from .entities import DatasetVersion, TrainingSpec
from .errors import InvalidInput
from .policy import TrainingPolicy

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def estimators(task: str | None = None) -> tuple[str, ...]:
    """The estimator names, in the pipeline's order (``ridge`` first); those serving ``task`` when given."""
    return tuple(_CATALOGUE) if task is None else estimators_for(task)


def default_estimator(task: str) -> str:
    """What a schedule trains when nothing says otherwise: the task's first estimator."""
    return estimators_for(task)[0]


def default_params(estimator: str) -> dict[str, Any]:
    """The estimator's parameters with their defaults (their types are the parameters' types)."""
    return dict(_CATALOGUE[_known(estimator)].defaults)


def full_params(estimator: str, params: Mapping[str, Any] | None = None,
                policy: TrainingPolicy | None = None, task: str = "regression") -> dict[str, Any]:
    """The defaults overlaid with ``params``, each cast to its type; ``InvalidInput`` for an
    unknown estimator or one that does not serve ``task`` (a regressor for a classifier), an
    unknown parameter, a value of the wrong type, a number that is not finite, or one outside the
    policy's ``[training.bounds]`` (checked when a run is submitted or a schedule saved, on every
    backend, before anything starts)."""
    _known(estimator)
    if task not in _CATALOGUE[estimator].tasks:
        raise InvalidInput(f"estimator {estimator!r} does not serve the task {task!r} of this project",
                           hint=f"Choose one of: {', '.join(estimators_for(task))} ([project] task in tollgate.toml).")
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


def training_data(datasets, spec: TrainingSpec, target: str) -> DatasetVersion:
    """The dataset version a run trains on: the one ``spec`` names, else the latest passing one
    with labels (``DatasetStore.latest_passing``). ``NotFound`` for an unknown dataset,
    ``InvalidInput`` for a version that cannot be trained on or none that passed."""
    if spec.dataset_version is None:
        dataset = datasets.latest_passing(spec.dataset, labelled=True)  # NotFound if unknown
        if dataset is None:
            raise InvalidInput(no_passing_version(spec.dataset, target, labelled=True),
                               hint="Register a version that passes its data tests, or name the version to train on.")
        return dataset
    dataset = datasets.get(spec.dataset, spec.dataset_version)  # NotFound if unknown
    if not has_labels(dataset, target):
        raise InvalidInput(no_labels_message(dataset.ref, target),
                           hint="It is a feature-only dataset (e.g. inputs collected by an endpoint): "
                                "register a version with the target column, or train on another version.")
    return dataset


def output_file(name: str) -> str:
    """``name`` if it is a plain file name a run may write to its outputs (no folder, no ``..``)."""
    if not isinstance(name, str) or not _FILE_NAME.match(name):
        raise InvalidInput(f"{name!r} is not the name of a run's output file",
                           hint="A plain file name such as environment.txt.")
    return name


__all__ = ["estimators", "default_estimator", "default_params", "full_params", "training_data", "output_file"]
