"""Local jobs: each training run is a real subprocess (``services.local.runner``).

The runner owns its row while it lives (status, step, metrics, gate). This side
submits, cancels, reads, and reconciles runs whose process vanished (a
``kill -9`` or a reboot) into ``failed`` with a reason.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .. import provenance
from ..entities import Condition, GateDecision, MetricPoint, Provenance, Run, RunFilter, RunStatus, TrainingSpec
from ..errors import Conflict, InvalidInput, NotFound
from ..permissions import authorize, canonical
from ..training import full_params, output_file, training_data
from ..run_search import condition
from . import audit
from .datasets import LocalDatasets
from .db import Database, parse_ts, utcnow
from .processes import pid_alive, reap_when_done

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)

# Runners started by this process, kept so that ``_alive`` can ask them (their own threads reap them).
_children: dict[int, subprocess.Popen] = {}


# The columns a Run is made of, read as plain tuples (``sqlite3.Row`` lookups by name cost
# more than the rest of a row's conversion).
RUN_COLUMNS = ("id, experiment, display_name, status, estimator, params_json, metrics_json, dataset, dataset_version,"
               " created_at, created_by, started_at, ended_at, error, step, gate_json, model_name, model_version,"
               " provenance_json")
_STATUS = {s.value: s for s in RunStatus}
_ts = datetime.fromisoformat


def _to_run(row: tuple) -> Run:
    """One run from a ``RUN_COLUMNS`` tuple. Each listing parses only the rows it returns (a page,
    not the table): no cache of parsed gates, which at 100,000 runs never hit (docs/benchmarks.md)."""
    (run_id, experiment, display_name, status, estimator, params, metrics, dataset, dataset_version, created_at,
     created_by, started_at, ended_at, error, step, gate, model_name, model_version, origin) = row
    return Run(
        id=run_id, experiment=experiment, display_name=display_name, status=_STATUS[status], estimator=estimator,
        params=json.loads(params), metrics=json.loads(metrics), dataset=dataset, dataset_version=dataset_version,
        created_at=_ts(created_at), created_by=created_by, started_at=started_at and _ts(started_at),
        ended_at=ended_at and _ts(ended_at), error=error, step=step,
        gate=GateDecision.from_dict(json.loads(gate)) if gate else None,
        model_name=model_name, model_version=model_version,
        provenance=provenance.from_dict(json.loads(origin)) if origin else None,
    )


def _condition_sql(column: str, cond: Condition) -> tuple[str, list]:
    """``cond`` on a JSON object column, meaning what ``run_search.holds`` means: a number only
    against JSON numbers, a text only against JSON texts; a missing key never matches."""
    cond = condition(cond.key, cond.op, cond.value)  # checked again: the operator goes into the SQL
    path = f'$."{cond.key}"'
    types = "('integer', 'real')" if isinstance(cond.value, float) else "('text')"
    op = "=" if cond.op == "=" else cond.op
    return (f"(json_type({column}, ?) IN {types} AND json_extract({column}, ?) {op} ?)",
            [path, path, cond.value])


def _as_stored(moment: datetime) -> str:
    """A datetime as the text ``created_at`` is stored in (UTC, microseconds), so
    that comparing the strings compares the instants. Naive means local time."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _bounded(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**62:
        raise InvalidInput(f"{name} must be a whole number from 0, got {value!r}")
    return value


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:  # our own child: poll() also reaps it
        if child.poll() is None:
            return True
        _children.pop(pid, None)
        return False
    return pid_alive(pid)


class LocalJobs:
    def __init__(self, db: Database, root: Path, datasets: LocalDatasets, policy):
        self.db, self.root, self.datasets, self.policy = db, Path(root), datasets, policy

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # --- reads ----------------------------------------------------------------

    def list(self, flt: RunFilter | None = None) -> list[Run]:
        self.reconcile()
        flt = flt or RunFilter()
        where, params = [], []
        if flt.status:
            where.append(f"status IN ({', '.join('?' * len(flt.status))})")
            params += [RunStatus(s).value for s in flt.status]
        if flt.experiment:
            where.append("experiment = ?")
            params.append(flt.experiment)
        if flt.dataset:
            where.append("dataset = ?")
            params.append(flt.dataset)
        if flt.since:
            where.append("created_at >= ?")
            params.append(_as_stored(flt.since))
        if flt.until:
            where.append("created_at < ?")
            params.append(_as_stored(flt.until))
        if flt.estimators:
            where.append(f"estimator IN ({', '.join('?' * len(flt.estimators))})")
            params += list(flt.estimators)
        for column, conditions in (("metrics_json", flt.metrics), ("params_json", flt.params)):
            for cond in conditions:
                sql, values = _condition_sql(column, cond)
                where.append(sql)
                params += values
        sql = (f"SELECT {RUN_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_at DESC, id DESC")
        if flt.limit is not None or flt.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if flt.limit is None else _bounded("limit", flt.limit), _bounded("offset", flt.offset)]
        cursor = self.db.conn.cursor()
        cursor.row_factory = None
        return [_to_run(r) for r in cursor.execute(sql, tuple(params))]

    def experiments(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT DISTINCT experiment FROM runs ORDER BY experiment")]

    def get(self, run_id: str) -> Run:
        self.reconcile(run_id)
        cursor = self.db.conn.cursor()
        cursor.row_factory = None
        row = cursor.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return _to_run(row)

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricPoint]:
        self.get(run_id)
        sql = "SELECT key, step, value, ts FROM metric_history WHERE run_id = ?"
        params: tuple = (run_id,)
        if key:
            sql += " AND key = ?"
            params += (key,)
        rows = self.db.query(sql + " ORDER BY key, step, ts", params)
        return [MetricPoint(r["key"], r["step"], r["value"], parse_ts(r["ts"])) for r in rows]

    def artifact(self, run_id: str, name: str) -> bytes:
        self.get(run_id)
        path = self.run_dir(run_id) / "outputs" / output_file(name)
        if not path.is_file():
            raise NotFound(f"run {run_id} has no output {name!r}",
                           hint="A run records its outputs while it trains; runs from before a file was "
                                "recorded do not have it.")
        return path.read_bytes()

    def log(self, run_id: str, tail: int | None = None) -> str:
        self.get(run_id)
        path = self.run_dir(run_id) / "log.txt"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace")
        if tail:
            text = "\n".join(text.splitlines()[-tail:])
        return text

    # --- writes ---------------------------------------------------------------

    def submit(self, spec: TrainingSpec, actor: str) -> Run:
        role = authorize(self.policy, actor, "submit_run")
        params = full_params(spec.estimator, spec.params, self.policy.training, self.policy.task)
        dataset = training_data(self.datasets, spec, self.policy.target)
        given = {k: params[k] for k in spec.params}
        run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        display = spec.display_name or (spec.estimator + "".join(f" {k}={v}" for k, v in given.items()))
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True)
        with self.db.write() as c:
            requested = Provenance(requested_by=canonical(actor), trigger=spec.trigger)
            c.execute("INSERT INTO runs (id, experiment, display_name, status, estimator, params_json, dataset,"
                      " dataset_version, created_at, created_by, register, step, provenance_json)"
                      " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (run_id, spec.experiment, display, RunStatus.QUEUED.value, spec.estimator,
                       json.dumps(params), dataset.name, dataset.version, utcnow(), canonical(actor),
                       int(spec.register), "queued", json.dumps(provenance.to_dict(requested))))
            audit.record(c, actor, "run.submit", run_id, role=role,
                         after={"estimator": spec.estimator, "params": params, "dataset": dataset.ref})
        log = open(run_dir / "log.txt", "ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.local.runner", "--workspace", str(self.root), "--run-id", run_id],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: cancel kills the whole job
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as e:
            with self.db.write() as c:
                c.execute("UPDATE runs SET status = ?, error = ?, ended_at = ? WHERE id = ?",
                          (RunStatus.FAILED.value, f"could not start the job process: {e}", utcnow(), run_id))
            raise
        finally:
            log.close()
        _children[proc.pid] = proc
        reap_when_done(proc)  # reaped as soon as it exits, whether or not anyone asks about it again
        with self.db.write() as c:
            c.execute("UPDATE runs SET pid = ? WHERE id = ? AND pid IS NULL", (proc.pid, run_id))
        return self.get(run_id)

    def cancel(self, run_id: str, actor: str) -> Run:
        role = authorize(self.policy, actor, "cancel_run")
        run = self.get(run_id)
        if run.status.is_terminal:
            raise Conflict(f"run {run_id} already ended ({run.status.value}); nothing to cancel")
        with self.db.write() as c:
            c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            audit.record(c, actor, "run.cancel", run_id, role=role, before={"status": run.status.value})
        pid = self.db.one("SELECT pid FROM runs WHERE id = ?", (run_id,))[0]
        if pid and _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            run = self.get(run_id)
            if run.status.is_terminal:
                return run
            time.sleep(0.1)
        if pid and _alive(pid):  # did not stop in time: force it
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._finish(run_id, RunStatus.CANCELED, f"canceled by {canonical(actor)} (forced)")
        return self.get(run_id)

    def wait(self, run_id: str, timeout_s: float = 600.0) -> Run:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.get(run_id)
            if run.status.is_terminal or time.monotonic() >= deadline:
                return run
            time.sleep(0.2)

    # --- housekeeping ---------------------------------------------------------

    def reconcile(self, run_id: str | None = None) -> None:
        """Mark active runs whose process is gone as failed (or canceled, if asked)."""
        sql = "SELECT id, pid, status, cancel_requested, created_at FROM runs WHERE status IN (?, ?)"
        params: tuple = ACTIVE
        if run_id:
            sql += " AND id = ?"
            params += (run_id,)
        for row in self.db.query(sql, params):
            if row["pid"] is None:
                # submit() writes the pid right after spawning; allow it a moment
                if (time.time() - parse_ts(row["created_at"]).timestamp()) < 30:
                    continue
            elif _alive(row["pid"]):
                continue
            if row["cancel_requested"]:
                self._finish(row["id"], RunStatus.CANCELED, "canceled")
            else:
                self._finish(row["id"], RunStatus.FAILED,
                             f"the job process (pid {row['pid']}) exited without reporting a result; see its log")

    def _finish(self, run_id: str, status: RunStatus, error: str | None) -> None:
        with self.db.write() as c:
            c.execute("UPDATE runs SET status = ?, error = COALESCE(error, ?), ended_at = COALESCE(ended_at, ?)"
                      " WHERE id = ? AND status IN (?, ?)", (status.value, error, utcnow(), run_id, *ACTIVE))
