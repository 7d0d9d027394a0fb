"""Metric logging that works in both places.

Every value goes to ``<output>/metrics.jsonl`` (the local workspace tails it while
the run goes on) and, when ``mlflow`` is importable — as in Azure ML's curated
training environments, where it reports to the workspace — to MLflow as well.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

try:  # pragma: no cover - mlflow is not a dependency of the local workspace
    import mlflow  # type: ignore
except ImportError:  # the local workspace reads metrics.jsonl instead
    mlflow = None


class MetricLogger:
    def __init__(self, output: Path):
        self.path = Path(output) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, key: str, value: float, step: int = 0) -> None:
        record = {"key": key, "value": float(value), "step": int(step), "ts": time.time()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if mlflow is not None:
            mlflow.log_metric(key, float(value), step=int(step))

    def log_params(self, params: dict) -> None:
        if mlflow is not None:
            mlflow.log_params(params)

    def set_tags(self, tags: dict) -> None:
        """Tags of the MLflow run (on Azure ML, what the console reads back as the run's provenance)."""
        if mlflow is not None:
            mlflow.set_tags(tags)


def read_metrics(output: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended to ``metrics.jsonl`` since byte ``offset``, and the new offset.
    A half-written last line is left for the next read."""
    path = Path(output) / "metrics.jsonl"
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    records, consumed = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        consumed += len(line)
        if line.strip():
            records.append(json.loads(line))
    return records, offset + consumed
