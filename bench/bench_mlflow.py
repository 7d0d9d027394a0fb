"""Tollgate's run listing beside MLflow's, on the same runs: the newest 500, and a metric/parameter search.

    .venv/bin/python bench/bench_mlflow.py --mlflow-python PATH [--workspace bench/out/ws-large-x10]

MLflow is not a dependency of Tollgate: ``--mlflow-python`` names an interpreter that has it
(``python -m venv /tmp/mlflow && /tmp/mlflow/bin/pip install mlflow-skinny sqlalchemy alembic``
gives MLflow's tracking store without its server). This script copies every run of a
``bench/seed_large.py`` workspace — parameters, final metrics (and their ``latest_metrics``), the
estimator as a tag, status, times — into a fresh MLflow SQLite store (rows written with SQL into
the schema MLflow's ``SqlAlchemyStore`` creates, which would take hours through the API), then in
each process measures, median of ``--repeats``, CPU and wall time:

* **newest 500**: ``ws.jobs.list(RunFilter(limit=500))`` vs
  ``MlflowClient.search_runs([experiment], max_results=500, order_by=["attributes.start_time DESC"])``;
* **search**: ridge runs with rmse < 55 — ``RunFilter(estimators=("ridge",), metrics=(rmse < 55,),
  limit=500)`` vs ``filter_string="tags.estimator = 'ridge' and metrics.rmse < 55"``.

Both return full run objects (parameters, metrics, tags) from SQLite files on the same disk, in
one process each (MLflow's store is warmed with one call first, as ours is). Prints the table
and the Tollgate/MLflow ratio (target <= 0.1); exits 1 if a ratio is above it.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LIMIT = 500
TARGET = 0.1
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "canceled": "KILLED", "running": "RUNNING",
                 "queued": "SCHEDULED"}


def median_cpu(fn, repeats: int) -> tuple[float, float, int]:
    fn()  # warm: imports, statement caches, the OS file cache
    walls, cpus, n = [], [], 0
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        n = len(fn())
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), n


# --- the MLflow side (run with --mlflow-python; imports only mlflow) -----------------------

def mlflow_side(db: Path, repeats: int) -> dict:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("bench").experiment_id
    newest = median_cpu(lambda: client.search_runs([experiment], max_results=LIMIT,
                                                   order_by=["attributes.start_time DESC"]), repeats)
    search = median_cpu(lambda: client.search_runs(
        [experiment], filter_string="tags.estimator = 'ridge' and metrics.rmse < 55", max_results=LIMIT,
        order_by=["attributes.start_time DESC"]), repeats)
    import mlflow
    return {"newest": newest, "search": search, "version": mlflow.__version__}


def create_mlflow_store(db: Path) -> None:
    """The schema, from MLflow itself (its migrations), and one experiment."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    store = SqlAlchemyStore(f"sqlite:///{db}", str(db.parent / "mlflow-artifacts"))
    store.create_experiment("bench")


# --- copying the runs ------------------------------------------------------------------

def millis(text: str | None) -> int | None:
    return int(datetime.fromisoformat(text).timestamp() * 1000) if text else None


def copy_runs(workspace: Path, db: Path) -> int:
    src = sqlite3.connect(workspace / "tollgate.db")
    dst = sqlite3.connect(db)
    experiment = dst.execute("SELECT experiment_id FROM experiments WHERE name = 'bench'").fetchone()[0]
    runs, params, metrics, latest, tags = [], [], [], [], []
    for rid, status, estimator, params_json, metrics_json, created, started, ended, author in src.execute(
            "SELECT id, status, estimator, params_json, metrics_json, created_at, started_at, ended_at, created_by"
            " FROM runs"):
        uuid = rid.replace("-", "")[-32:].rjust(32, "0")
        start = millis(started) or millis(created)
        runs.append((uuid, rid, "LOCAL", "", "", author, MLFLOW_STATUS[status], start, millis(ended), "", "active",
                     f"file:///artifacts/{uuid}", experiment))
        params += [(k, str(v), uuid) for k, v in json.loads(params_json).items()]
        for k, v in json.loads(metrics_json).items():
            metrics.append((k, v, millis(ended) or start, uuid, 0, 0))
            latest.append((k, v, millis(ended) or start, 0, 0, uuid))
        tags += [("estimator", estimator, uuid), ("mlflow.runName", rid, uuid), ("mlflow.user", author, uuid)]
    with dst:
        dst.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,"
                        " start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
        dst.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", params)
        dst.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)",
                        metrics)
        dst.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                        " VALUES (?, ?, ?, ?, ?, ?)", latest)
        dst.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
    src.close()
    dst.close()
    return len(runs)


# --- the Tollgate side -------------------------------------------------------------------

def tollgate_side(workspace: Path, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from services.entities import RunFilter
    from services.local.workspace import LocalWorkspace
    from services.run_search import parse_condition
    ws = LocalWorkspace(workspace)
    try:
        rmse = parse_condition("rmse < 55")[1]
        return {"newest": median_cpu(lambda: ws.jobs.list(RunFilter(limit=LIMIT)), repeats),
                "search": median_cpu(lambda: ws.jobs.list(RunFilter(estimators=("ridge",), metrics=(rmse,),
                                                                     limit=LIMIT)), repeats)}
    finally:
        ws.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mlflow-python", type=Path, help="an interpreter with mlflow (and sqlalchemy, alembic)")
    ap.add_argument("--workspace", type=Path, default=OUT / "ws-large-x10", help="a bench/seed_large.py workspace")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mlflow-side", type=Path, help=argparse.SUPPRESS)   # in the MLflow interpreter
    ap.add_argument("--create-store", type=Path, help=argparse.SUPPRESS)  # in the MLflow interpreter
    args = ap.parse_args(argv)
    if args.create_store:
        create_mlflow_store(args.create_store)
        return 0
    if args.mlflow_side:
        print(json.dumps(mlflow_side(args.mlflow_side, args.repeats)))
        return 0
    if args.mlflow_python is None:
        ap.error("--mlflow-python is required (MLflow is not a dependency of Tollgate; see the docstring)")
    db = OUT / f"mlflow-{args.workspace.name}.db"
    db.unlink(missing_ok=True)
    me = [str(args.mlflow_python), str(Path(__file__).resolve())]
    subprocess.run([*me, "--create-store", str(db)], check=True, capture_output=True)
    n = copy_runs(args.workspace, db)
    print(f"{n:,} runs copied into {db}; load average {os.getloadavg()[0]:.1f}")
    theirs = json.loads(subprocess.run([*me, "--mlflow-side", str(db), "--repeats", str(args.repeats)],
                                       check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    ours = tollgate_side(args.workspace, args.repeats)
    ok = True
    print(f"\n| {n:,} runs, median of {args.repeats} | Tollgate wall / CPU | MLflow {theirs['version']} wall / CPU"
          f" | runs | Tollgate / MLflow (CPU) |\n|---|---:|---:|---:|---:|")
    for label, key in ((f"newest {LIMIT}", "newest"), ("ridge with rmse < 55", "search")):
        (ow, oc, on), (tw, tc, tn) = ours[key], theirs[key]
        ok &= oc / tc <= TARGET
        print(f"| {label} | {ow * 1000:,.1f} / {oc * 1000:,.1f} ms | {tw * 1000:,.1f} / {tc * 1000:,.1f} ms | "
              f"{on} / {tn} | **{oc / tc:.3f}** |")
    print(f"\nload average {os.getloadavg()[0]:.1f}; target Tollgate/MLflow <= {TARGET}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
