"""Seed a large local workspace for the page benchmark.

    .venv/bin/python bench/seed_large.py PATH [--runs 10000] [--models 2000] [--force]

Builds, in well under a minute on 2 cores, a workspace the size of a busy team's
quarter: 50 dataset versions, 10,000 runs over 90 days, 2,000 versions of the
policy's model with one champion.

What is real (made through the services, exactly as the console makes it):
  * the 50 dataset versions: 5 datasets x 10 versions, each a CSV resampled from
    scikit-learn's diabetes data with growing drift (two versions get 8 % missing
    values, so their data tests fail), registered with ``ws.datasets.register``:
    real Parquet files, profiles and data-test results;
  * one training run through ``ws.jobs.submit`` (a real subprocess): its log,
    metric history, gate decision and model artifact; it registers
    ``<model>:1`` and becomes the first champion.

What is synthesized (SQL inserts into the schema of ``services/local/db.py``,
one transaction, fixed random seed):
  * the other runs (9,999 by default): ids, names, parameters, experiments,
    authors and timestamps spread over 90 days; status mix about 84 % completed,
    11 % failed (at "validate data" when the dataset version failed its data
    tests, else at "train"/"evaluate"), 5 % canceled, plus the 5 newest runs
    active (2 running, 3 queued); 5 final metrics per run that got past training
    (rmse, mae, r2, train_rmse, train_r2) and a short history (a 5-to-10-point
    cv_rmse / val_rmse curve plus the finals at step 0), as the runner logs it;
    gate decisions computed by the real ``services.gate.decide`` against the
    champion of the day; no log files (``jobs.log`` returns "" for them);
  * model versions 2..2,000: rows with lineage to a synthesized completed run
    whose gate passed (run_id, dataset, dataset_version, metrics), about 40
    promotions along the way, the ``champion`` alias on the last promoted one,
    a quarter of the versions older than 30 days archived. Each version has its
    own folder ``models/<model>/N/`` hard-linked to the real artifact of
    version 1, so loading and comparing any version works (its predictions are
    version 1's; its stored metrics are the synthetic ones);
  * audit events for the synthesized runs, registrations and promotions;
  * timestamps of the real rows are moved back in time (datasets spread over
    the 90 days, the real run to the first day) so the history is consistent.
    The audit events written by the real steps cannot be changed (the table is
    append-only), so they keep the seeding time.

The active runs have no job process. ``attach_active_runs(root, pid)`` points
them at a live placeholder process (the benchmark starts ``sleep``), so
``reconcile()`` sees them as alive; without it the first read of the workspace
marks them failed ("exited without reporting a result"), as it would after a
crash. Their ids are kept in ``PATH/bench-seed.json`` with the seeding summary.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.train import coerce_params  # noqa: E402
from services.demo import diabetes_v1  # noqa: E402
from services.entities import RunStatus, TrainingSpec  # noqa: E402
from services.gate import decide  # noqa: E402
from services.local.models import ALIAS_CHAMPION  # noqa: E402
from services.local.workspace import LocalWorkspace  # noqa: E402

SEED_FILE = "bench-seed.json"
DATASETS = ["diabetes", "diabetes-clinic-a", "diabetes-clinic-b", "diabetes-clinic-c", "diabetes-clinic-d"]
VERSIONS_PER_DATASET = 10
BROKEN_VERSIONS = {("diabetes-clinic-b", 6), ("diabetes-clinic-d", 8)}  # 8 % missing: data tests fail
EXPERIMENTS = [("diabetes-retrain", 0.55), ("diabetes-hparam-sweep", 0.25), ("diabetes-nightly", 0.15),
               ("feature-ablation", 0.05)]
AUTHORS = [("ci-pipeline", 0.5), ("nightly-cron", 0.15), ("alice", 0.15), ("bob", 0.12), ("carol", 0.08)]
# estimator -> (share of runs, typical test rmse, training seconds range)
ESTIMATOR_MIX = {"ridge": (0.3, 55.0, (3, 8)), "lasso": (0.2, 55.5, (3, 8)),
                 "gbr": (0.3, 57.0, (15, 60)), "random_forest": (0.2, 56.0, (15, 90))}
FINAL_METRICS = ("rmse", "mae", "r2", "train_rmse", "train_r2")
ACTIVE = [RunStatus.RUNNING] * 2 + [RunStatus.QUEUED] * 3
PROMOTE_EVERY = 50  # on average one registered version in 50 gets promoted
LEAD = "lead@contoso.com"  # the identity of the real writes (registering data, the one run): it needs the role


def ts(t: datetime) -> str:
    """The format of ``services.local.db.utcnow``."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def history_ts(t: datetime) -> str:
    """The format the runner writes into metric_history."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def pick(rng: random.Random, weighted):
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


# --- datasets (real) ------------------------------------------------------------

def dataset_frame(name: str, version: int, seed: int):
    base = diabetes_v1()
    if name == DATASETS[0] and version == 1:
        return base  # what the real run trains on
    rng = np.random.default_rng(seed)
    n = int(rng.integers(420, 900))
    frame = base.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    drift = 0.004 * version  # each version a little further from the study population
    for col in ["bp", "s1", "s2", "s3", "s5", "s6"]:
        frame[col] = (frame[col] * (1 + drift) + rng.normal(0, 0.05 * base[col].std(), n)).round(4)
    frame["age"] = (frame["age"] + version // 4).clip(upper=85)
    frame["bmi"] = (frame["bmi"] + rng.normal(0.05 * version, 0.3, n)).round(1)
    frame["target"] = (frame["target"] + rng.normal(0, 10, n)).clip(lower=25).round(0)
    if (name, version) in BROKEN_VERSIONS:
        frame.loc[frame.sample(frac=0.08, random_state=seed).index, "s4"] = np.nan
    return frame


def register_datasets(ws: LocalWorkspace, start: datetime, days: int, say) -> dict:
    """Registers every version; returns {(name, version): (created_at, failing tests as the runner words them)}."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d, name in enumerate(DATASETS):
            for v in range(1, VERSIONS_PER_DATASET + 1):
                path = Path(tmp) / f"{name}-v{v}.csv"
                dataset_frame(name, v, seed=1000 * d + v).to_csv(path, index=False)
                dv = ws.datasets.register(name, path, actor=LEAD, description=f"{name} extract #{v}")
                # version 1 before the first run, the rest spread over the period
                created = start - timedelta(days=2) + timedelta(days=(v - 1) * days / VERSIONS_PER_DATASET,
                                                                hours=5 * d)
                failed = [t for t in ws.datasets.data_tests(name, v) if t.status.value == "fail"]
                out[(name, v)] = (created, f"dataset {dv.ref} failed {len(failed)} data test(s): " + "; ".join(
                    f"{t.check}" + (f" [{t.column}]" if t.column else "") + f": {t.detail}" for t in failed)
                    if failed else None)
    with ws.db.write() as c:
        c.executemany("UPDATE datasets SET created_at = ? WHERE name = ? AND version = ?",
                      [(ts(t), n, v) for (n, v), (t, _) in out.items()])
    say(f"registered {len(out)} dataset versions "
        f"({sum(bool(f) for _, f in out.values())} failing their data tests)")
    return out


# --- the one real run -----------------------------------------------------------

def real_run(ws: LocalWorkspace, start: datetime, say) -> dict:
    run = ws.jobs.submit(TrainingSpec(dataset=DATASETS[0], dataset_version=1, estimator="ridge",
                                      params={"alpha": 1.0}, experiment=ws.policy.experiment), LEAD)
    run = ws.jobs.wait(run.id, timeout_s=300)
    if run.status != RunStatus.COMPLETED or run.model_version != 1:
        raise SystemExit(f"the real training run did not register {ws.policy.model_name}:1 "
                         f"({run.status.value}: {run.error}); see {ws.jobs.run_dir(run.id) / 'log.txt'}")
    shift = run.created_at - start  # move it to the first day of the period
    with ws.db.write() as c:
        c.execute("UPDATE runs SET created_at = ?, started_at = ?, ended_at = ? WHERE id = ?",
                  (ts(run.created_at - shift), ts(run.started_at - shift), ts(run.ended_at - shift), run.id))
        rows = c.execute("SELECT rowid, ts FROM metric_history WHERE run_id = ?", (run.id,)).fetchall()
        c.executemany("UPDATE metric_history SET ts = ? WHERE rowid = ?",
                      [(history_ts(datetime.fromisoformat(r[1]) - shift), r[0]) for r in rows])
        c.execute("UPDATE models SET created_at = ? WHERE name = ? AND version = 1",
                  (ts(run.ended_at - shift), ws.policy.model_name))
    say(f"trained {run.id} for real (ridge alpha=1.0 on {DATASETS[0]}:1): rmse {run.metrics['rmse']:.2f}, "
        f"registered {ws.policy.model_name}:1 as champion")
    return {"id": run.id, "metrics": {k: run.metrics[k] for k in FINAL_METRICS}}


# --- synthesized runs, models, events -------------------------------------------

def synth_metrics(rng: random.Random, estimator: str) -> dict[str, float]:
    rmse = rng.gauss(ESTIMATOR_MIX[estimator][1], 2.0)
    overfit = 0.97 if estimator in ("ridge", "lasso") else rng.uniform(0.55, 0.85)
    return {"rmse": rmse, "mae": rmse * rng.uniform(0.79, 0.83), "r2": max(0.05, 0.98 - rmse ** 2 / 5500),
            "train_rmse": rmse * overfit, "train_r2": min(0.99, 1.02 - (rmse * overfit) ** 2 / 5500)}


def beat(rng: random.Random, champion: dict[str, float]) -> dict[str, float]:
    """Metrics slightly better than the champion's, so the gate passes."""
    gain = rng.uniform(0.001, 0.006)
    rmse = champion["rmse"] * (1 - gain)
    return {"rmse": rmse, "mae": champion["mae"] * (1 - rng.uniform(-0.01, 0.01)),
            "r2": champion["r2"] + rng.uniform(0.0, 0.004),
            "train_rmse": rmse * rng.uniform(0.6, 0.97), "train_r2": min(0.99, champion["r2"] + rng.uniform(0.02, 0.2))}


def curve(rng: random.Random, estimator: str, final: float) -> tuple[str, list[tuple[int, float]]]:
    if estimator in ("ridge", "lasso"):  # 5-fold CV, as the pipeline logs it
        return "cv_rmse", [(i, final * rng.uniform(0.9, 1.1)) for i in range(5)]
    steps = [15 * (i + 1) for i in range(10)]
    return "val_rmse", [(s, final * (1 + 1.5 * np.exp(-s / 30)) * rng.uniform(0.99, 1.01)) for s in steps]


def synthesize(ws: LocalWorkspace, datasets: dict, first: dict, *, runs: int, models: int,
               start: datetime, end: datetime, seed: int, say) -> dict:
    rng = random.Random(seed)
    policy, model = ws.policy, ws.policy.model_name
    span = (end - start).total_seconds()
    versions_of = {n: sorted(v for (m, v) in datasets if m == n) for n in DATASETS}
    plan = []  # what each run is, decided first so the completed runs can be counted
    times = sorted(start + timedelta(seconds=rng.uniform(60, span - 600)) for _ in range(runs - 1 - len(ACTIVE)))
    times += [end - timedelta(seconds=60 * (len(ACTIVE) - i)) for i in range(len(ACTIVE))]
    for i, t in enumerate(times):
        ds = DATASETS[0] if rng.random() < 0.6 else rng.choice(DATASETS[1:])
        existing = [v for v in versions_of[ds] if datasets[(ds, v)][0] <= t] or [1]
        dv = existing[-1] if rng.random() < 0.8 else rng.choice(existing)
        if i >= len(times) - len(ACTIVE):
            status = ACTIVE[i - (len(times) - len(ACTIVE))]
        else:
            u = rng.random()
            status = RunStatus.COMPLETED if u < 0.86 else RunStatus.FAILED if u < 0.95 else RunStatus.CANCELED
            if status == RunStatus.COMPLETED and datasets[(ds, dv)][1]:
                status = RunStatus.FAILED  # it cannot get past "validate data"
        plan.append((t, ds, dv, status))
    completed_left = sum(p[3] == RunStatus.COMPLETED for p in plan)
    to_register = models - 1
    if completed_left < to_register:
        raise SystemExit(f"{runs} runs give {completed_left} completed runs: too few for {models} model versions")

    run_rows, metric_rows, model_rows, event_rows, promotions, active_ids = [], [], [], [], [], []
    champion = {"ref": f"{model}:1", "metrics": first["metrics"]}
    next_version = 2
    for t, ds, dv, status in plan:
        est = pick(rng, [(e, w[0]) for e, w in ESTIMATOR_MIX.items()])
        given = {"ridge": lambda: {"alpha": rng.choice([0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])},
                 "lasso": lambda: {"alpha": rng.choice([0.01, 0.03, 0.1, 0.3, 1.0])},
                 "gbr": lambda: {"n_estimators": rng.choice([100, 150, 200, 300]),
                                 "learning_rate": rng.choice([0.03, 0.05, 0.1])},
                 "random_forest": lambda: {"n_estimators": rng.choice([100, 200]),
                                           "max_depth": rng.choice([4, 6, 8])}}[est]()
        params = coerce_params(est, given)
        name = est + "".join(f" {k}={v}" for k, v in given.items())
        run_id = f"run-{t.strftime('%Y%m%d-%H%M%S')}-{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}"
        author = pick(rng, AUTHORS)
        started = t + timedelta(seconds=rng.uniform(0.5, 120))
        ended = started + timedelta(seconds=rng.uniform(*ESTIMATOR_MIX[est][2]))
        metrics, gate, step, error, mv, curve_only = {}, None, "done", None, None, False

        if status in (RunStatus.RUNNING, RunStatus.QUEUED):
            active_ids.append({"id": run_id, "status": status.value})
            step, ended = ("train", None) if status == RunStatus.RUNNING else ("queued", None)
            started = started if status == RunStatus.RUNNING else None
            curve_only = status == RunStatus.RUNNING
        elif status == RunStatus.FAILED and datasets[(ds, dv)][1]:
            step = "validate data"
            error = datasets[(ds, dv)][1]
            ended = started + timedelta(seconds=rng.uniform(1, 3))
        elif status == RunStatus.FAILED:
            step = rng.choice(["train", "train", "evaluate"])
            error = (f"the job process (pid {rng.randint(2000, 60000)}) exited without reporting a result; "
                     "see its log" if rng.random() < 0.4 else f"MemoryError during '{step}': unable to allocate array")
            if step == "evaluate":  # training finished: its metrics are there
                metrics = synth_metrics(rng, est)
            else:
                curve_only = True
        elif status == RunStatus.CANCELED:
            step, error = rng.choice(["queued", "train"]), "canceled by request"
            if step == "queued":
                started = None
            curve_only = step == "train"
        else:  # completed
            completed_left -= 1
            register = rng.random() < to_register / (completed_left + 1)
            metrics = beat(rng, champion["metrics"]) if register else synth_metrics(rng, est)
            if not register and metrics["rmse"] < champion["metrics"]["rmse"]:
                metrics["rmse"] = champion["metrics"]["rmse"] * rng.uniform(1.0005, 1.05)
            decision = decide(metrics, champion["metrics"], policy, champion_ref=champion["ref"],
                              evaluated_on=f"{ds}:{dv}")
            if decision.passed != register:
                raise AssertionError(f"synthetic metrics did not give the intended gate result: {decision}")
            gate = json.dumps(decision.to_dict())
            if register:
                mv, next_version, to_register = next_version, next_version + 1, to_register - 1
                model_rows.append((model, mv, ts(ended), author, f"{name} on {ds}:{dv}", est, json.dumps(metrics),
                                   run_id, ds, dv, f"models/{model}/{mv}",
                                   json.dumps({"estimator": est})))
                event_rows.append((ts(ended), author, "model.register", f"{model}:{mv}", None,
                                   json.dumps({"run": run_id, "metrics": metrics})))
                if rng.random() < 1 / PROMOTE_EVERY:
                    previous = int(champion["ref"].split(":")[1])
                    champion = {"ref": f"{model}:{mv}", "metrics": metrics}
                    promoted = min(end, ended + timedelta(hours=rng.uniform(2, 30)))
                    promotions.append(mv)
                    event_rows.append((ts(promoted), rng.choice(["alice", "bob"]), "model.alias",
                                       f"{model}@{ALIAS_CHAMPION}", json.dumps({"version": previous}),
                                       json.dumps({"version": mv})))

        if metrics or curve_only:
            key, points = curve(rng, est, metrics.get("rmse") or synth_metrics(rng, est)["rmse"])
            if curve_only:
                points = points[:rng.randint(1, len(points) - 1)]  # stopped part-way
            metric_rows += [(run_id, key, s, v, history_ts(started + timedelta(seconds=s / 10)))
                            for s, v in points]
            metric_rows += [(run_id, k, 0, v, history_ts(ended)) for k, v in metrics.items()]
        run_rows.append((run_id, pick(rng, EXPERIMENTS), name, status.value, est, json.dumps(params),
                         json.dumps(metrics), ds, dv, ts(t), author, ts(started) if started else None,
                         ts(ended) if ended else None, step, error, gate, model if mv else None, mv))
        event_rows.append((ts(t), author, "run.submit", run_id, None,
                           json.dumps({"estimator": est, "params": params, "dataset": f"{ds}:{dv}"})))

    if to_register:
        raise AssertionError(f"{to_register} model versions left unregistered")
    champion_version = int(champion["ref"].split(":")[1])
    event_rows.sort(key=lambda e: e[0])
    archived_before = ts(end - timedelta(days=30))
    archive = [(model, r[1]) for r in model_rows
               if r[2] < archived_before and r[1] != champion_version and rng.random() < 0.25]

    with ws.db.write() as c:
        c.executemany(
            "INSERT INTO runs (id, experiment, display_name, status, estimator, params_json, metrics_json, dataset,"
            " dataset_version, created_at, created_by, started_at, ended_at, step, error, gate_json, model_name,"
            " model_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", run_rows)
        c.executemany("INSERT INTO metric_history (run_id, key, step, value, ts) VALUES (?,?,?,?,?)", metric_rows)
        c.executemany(
            "INSERT INTO models (name, version, created_at, created_by, description, estimator, metrics_json,"
            " run_id, dataset, dataset_version, path, tags_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", model_rows)
        c.executemany("UPDATE models SET archived = 1 WHERE name = ? AND version = ?", archive)
        c.execute("UPDATE model_aliases SET version = ? WHERE name = ? AND alias = ?",
                  (champion_version, model, ALIAS_CHAMPION))
        c.executemany("INSERT INTO events (at, actor, action, target, before_json, after_json)"
                      " VALUES (?,?,?,?,?,?)", event_rows)
    link_artifacts(ws.root, model, [r[1] for r in model_rows])
    say(f"synthesized {len(run_rows)} runs ({len(metric_rows)} metric points), {len(model_rows)} model versions "
        f"({len(archive)} archived, {len(promotions)} promotions, champion {model}:{champion_version}), "
        f"{len(event_rows)} audit events")
    return {"active_runs": active_ids, "champion": champion_version}


def link_artifacts(root: Path, model: str, versions: list[int]) -> None:
    """Each version its own folder, hard-linked to version 1's real artifact."""
    source = root / "models" / model / "1"
    files = [p for p in source.iterdir() if p.is_file()]
    for v in versions:
        folder = source.parent / str(v)
        folder.mkdir()
        for f in files:
            os.link(f, folder / f.name)


# --- entry points ---------------------------------------------------------------

def attach_active_runs(root: Path, pid: int | None) -> list[str]:
    """Put the seeded active runs back in their state, owned by ``pid`` (a live process)."""
    meta = json.loads((Path(root) / SEED_FILE).read_text())
    ws = LocalWorkspace(Path(root))
    try:
        with ws.db.write() as c:
            for run in meta["active_runs"]:
                c.execute("UPDATE runs SET status = ?, pid = ?, error = NULL, ended_at = NULL,"
                          " cancel_requested = 0 WHERE id = ?", (run["status"], pid, run["id"]))
    finally:
        ws.close()
    return [r["id"] for r in meta["active_runs"]]


def seed_large(path: Path, *, runs: int = 10_000, models: int = 2_000, days: int = 90, seed: int = 42,
               say=print) -> dict:
    t0 = time.perf_counter()
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"{path} is not empty; pass --force to replace it")
    end = datetime.now(timezone.utc)
    start = end - timedelta(days=days)
    ws = LocalWorkspace(path)
    try:
        datasets = register_datasets(ws, start, days, say)
        first = real_run(ws, start, say)
        meta = synthesize(ws, datasets, first, runs=runs, models=models, start=start, end=end, seed=seed, say=say)
        counts = {t: ws.db.one(f"SELECT COUNT(*) FROM {t}")[0]
                  for t in ("datasets", "runs", "metric_history", "models", "events")}
    finally:
        ws.close()
    meta.update(seeded_at=ts(end), seconds=round(time.perf_counter() - t0, 1), counts=counts,
                args={"runs": runs, "models": models, "days": days, "seed": seed})
    (path / SEED_FILE).write_text(json.dumps(meta, indent=2))
    say(f"seeded {path} in {meta['seconds']} s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", type=Path, help="the workspace folder to create")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--models", type=int, default=2_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--force", action="store_true", help="delete PATH first if it exists")
    args = ap.parse_args(argv)
    if args.force and args.path.exists():
        shutil.rmtree(args.path)
    seed_large(args.path, runs=args.runs, models=args.models, days=args.days, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
