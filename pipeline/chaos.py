"""A deliberately broken model, for testing canary analysis and automatic rollback.

``FlakyModel`` wraps a fitted estimator and raises for a share of the input rows in the
serving environment (where ``AZUREML_MODEL_DIR`` is set: the inference server running
``score.py``), so ``run()`` fails and the endpoint answers HTTP 500 for those rows. Offline
(the quality gate, the smoke test's expected values) it predicts like the estimator it
wraps: the kind of bug only production traffic reveals — a serving image missing a native
library for some code path, say. Which rows fail is decided by a hash of the row's values,
so the same input always fails (or always succeeds), in every process, and ``salt`` picks
another share.

It lives in ``pipeline/`` because the inference server unpickles the model: its class must
be importable there, as the project's training code is.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

SERVING_ENV = "AZUREML_MODEL_DIR"


class ChaosError(RuntimeError):
    pass


class FlakyModel:
    """``predict`` raises ``ChaosError`` if any row of the batch is one of the failing share."""

    def __init__(self, estimator, failure_rate: float = 0.3, salt: int = 0, serving_only: bool = True):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be between 0 and 1, got {failure_rate}")
        self.estimator, self.failure_rate, self.salt, self.serving_only = estimator, failure_rate, salt, serving_only

    def fails(self, row) -> bool:
        """Whether this row (feature values in the model's order) is one that fails."""
        values = np.round(np.asarray(row, dtype=float), 6) + 0.0  # -0.0 and 0.0 alike
        digest = hashlib.sha256(f"{self.salt}:".encode() + values.tobytes()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64 < self.failure_rate

    def active(self) -> bool:
        return not self.serving_only or bool(os.environ.get(SERVING_ENV))

    def predict(self, X):
        if self.active():
            matrix = np.asarray(X, dtype=float)
            bad = [i for i, row in enumerate(np.atleast_2d(matrix)) if self.fails(row)]
            if bad:
                raise ChaosError(f"chaos: deliberately broken model failed on row(s) {bad[:5]} of {len(matrix)}")
        return self.estimator.predict(X)

    def __getattr__(self, name):  # feature_names_in_, n_features_in_, ... of the wrapped estimator
        if name in ("estimator", "__setstate__", "__getstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.estimator, name)
