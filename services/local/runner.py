"""The job process of one local training run.

``python -m services.local.runner --workspace PATH --run-id ID``, started by
``LocalJobs.submit`` in a session of its own; its stdout/stderr is the run's log.
Steps: wait for a slot → validate data → train (``pipeline.train``) →
evaluate against the champion → register if the gate passes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from pipeline import provenance as recorded
from pipeline import train as pipeline
from pipeline.tracking import read_metrics

from .. import provenance
from ..release import step_text
from ..release.auto_stage import stage_candidate
from ..entities import CheckStatus, Provenance, Run, RunStatus
from .paths import private_files
from ..evaluation import score_pair
from .db import utcnow
from .models import ALIAS_CHAMPION
from .workspace import LocalWorkspace


class Canceled(Exception):
    pass


class StepFailed(Exception):
    """A readable reason the run failed."""


def say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


class Runner:
    def __init__(self, ws: LocalWorkspace, run_id: str):
        self.ws, self.run_id = ws, run_id
        self.db = ws.db
        self.out = ws.jobs.run_dir(run_id) / "outputs"
        self._offset = 0
        self._ingest_lock = threading.Lock()

    def row(self):
        return self.db.one("SELECT * FROM runs WHERE id = ?", (self.run_id,))

    def update(self, **fields) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.write() as c:
            c.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), self.run_id))

    def step(self, name: str) -> None:
        if self.row()["cancel_requested"]:
            raise Canceled()
        say(f"== step: {name}")
        self.update(step=name)

    # --- metrics: tail metrics.jsonl into SQLite while training runs ----------

    def ingest_metrics(self) -> None:
        with self._ingest_lock:
            records, self._offset = read_metrics(self.out, self._offset)
            if not records:
                return
            with self.db.write() as c:
                c.executemany("INSERT INTO metric_history (run_id, key, step, value, ts) VALUES (?, ?, ?, ?, ?)",
                              [(self.run_id, r["key"], r["step"], r["value"],
                                time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(r["ts"]))) for r in records])
                current = json.loads(c.execute("SELECT metrics_json FROM runs WHERE id = ?",
                                               (self.run_id,)).fetchone()[0])
                current.update({r["key"]: r["value"] for r in records})
                c.execute("UPDATE runs SET metrics_json = ? WHERE id = ?", (json.dumps(current), self.run_id))

    def _tail(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            self.ingest_metrics()

    # --- provenance: the code and environment this process trains with --------

    def record_provenance(self, run: Run) -> Provenance:
        """Who asked (recorded by the submit), the training code's version and the environment,
        into the run's row; the full ``pip freeze`` list as the output ``environment.txt``."""
        asked = run.provenance or Provenance(requested_by=run.created_by)
        recorded.write_environment(self.out)
        origin = provenance.collected(asked.requested_by, asked.trigger, recorded.code_version(),
                                      recorded.environment(), environment=recorded.ENVIRONMENT_FILE)
        self.update(provenance_json=json.dumps(provenance.to_dict(origin)))
        say(f"provenance: requested by {origin.requested_by}" + (f" ({origin.trigger})" if origin.trigger else "")
            + f"; code {origin.code_version}; python {origin.python}; "
            + ", ".join(f"{k} {v}" for k, v in origin.packages.items()))
        return origin

    # --- auto-release to staging ([release] auto_stage) ------------------------

    def auto_stage(self, mv) -> None:
        """The new candidate to staging, smoke-tested, awaiting approval (``services.release.auto_stage``):
        only while the endpoints run — an automatic step does not start what an operator stopped
        (and seeding, which trains before ``up``, places its own candidate). Its outcome is the
        version's, not the run's: the run completes whatever it is."""
        if self.ws.endpoints.supervisor_pid() is None:
            say(f"auto-stage: {mv.ref} not deployed to {self.ws.policy.endpoints.staging}: the local endpoints "
                f"are not running (tollgate.py up starts them; then deploy it from the Releases page or the CLI)")
            return
        say("== step: deploy to staging")     # not self.step: the run's model is registered, a cancel now is late
        self.update(step="deploy to staging")
        result = stage_candidate(self.ws.releases, mv, self.run_id, progress=lambda s: say(f"  {step_text(s)}"))
        say(f"auto-stage: {result.outcome}: {result.reason}")

    # --- the pipeline ---------------------------------------------------------

    def wait_for_slot(self) -> None:
        limit = max(1, self.ws.policy.max_concurrent_jobs)
        while True:
            self.ws.jobs.reconcile()  # a killed runner's row must not hold its slot until someone reads it
            with self.db.write() as c:
                row = c.execute("SELECT status, cancel_requested FROM runs WHERE id = ?", (self.run_id,)).fetchone()
                if row["cancel_requested"]:
                    raise Canceled()
                running = c.execute("SELECT COUNT(*) FROM runs WHERE status = ?",
                                    (RunStatus.RUNNING.value,)).fetchone()[0]
                if running < limit:
                    c.execute("UPDATE runs SET status = ?, started_at = ?, step = ? WHERE id = ?",
                              (RunStatus.RUNNING.value, utcnow(), "starting", self.run_id))
                    return
            time.sleep(0.5)

    def execute(self) -> None:
        run = self.ws.jobs.get(self.run_id)
        policy = self.ws.policy
        say(f"run {run.id}: {run.estimator} on {run.dataset}:{run.dataset_version}, waiting for a slot")
        self.wait_for_slot()
        say(f"running (pid {os.getpid()})")
        origin = self.record_provenance(run)

        self.step("validate data")
        dv = self.ws.datasets.get(run.dataset, run.dataset_version)
        failed = [t for t in self.ws.datasets.data_tests(dv.name, dv.version) if t.status == CheckStatus.FAIL]
        if failed:
            reasons = "; ".join(f"{t.check}" + (f" [{t.column}]" if t.column else "") + f": {t.detail}"
                                for t in failed)
            raise StepFailed(f"dataset {dv.ref} failed {len(failed)} data test(s): {reasons}")
        say(f"data tests of {dv.ref}: {dv.tests_status.value} ({dv.rows} rows)")

        self.step("train")
        stop = threading.Event()
        tail = threading.Thread(target=self._tail, args=(stop,), daemon=True)
        tail.start()
        try:
            pipeline.run(Path(dv.uri) / "data.parquet", run.estimator, dict(run.params), self.out,
                         target=policy.target, test_fraction=policy.test_fraction, seed=policy.split_seed,
                         task=policy.task)
        except pipeline.PipelineError as e:
            raise StepFailed(str(e)) from None
        finally:
            stop.set()
            tail.join()
            self.ingest_metrics()

        self.step("evaluate")
        model = pipeline.joblib.load(self.out / "model.pkl")
        champion = self.ws.models.champion(policy.model_name)
        champion_model = self.ws.models.load(champion.name, champion.version) if champion else None
        frame = self.ws.datasets.load(dv.name, dv.version)
        score = score_pair(frame, dv.ref, policy, f"{policy.model_name}:candidate ({run.id})", model,
                           champion.ref if champion else None, champion_model)
        gate = score.gate
        for reason in gate.reasons:
            say(f"gate: {reason}")
        say(f"gate decision: {'PASS' if gate.passed else 'FAIL'}"
            + (f" against champion {champion.ref}" if champion else " (no champion yet)"))
        self.update(gate_json=json.dumps(gate.to_dict()))

        if gate.passed and self.row()["register"]:
            self.step("register")
            with self.db.write() as c:
                if c.execute("SELECT cancel_requested FROM runs WHERE id = ?", (self.run_id,)).fetchone()[0]:
                    raise Canceled()
                # asked again under the write lock: a run evaluated at the same time may have become it
                first = c.execute("SELECT 1 FROM model_aliases WHERE name = ? AND alias = ?",
                                  (policy.model_name, ALIAS_CHAMPION)).fetchone() is None
                version = self.ws.models.register(
                    policy.model_name, self.out, estimator=run.estimator,
                    metrics=json.loads((self.out / "metrics.json").read_text()), run_id=run.id,
                    dataset=dv.name, dataset_version=dv.version, created_by=run.created_by,
                    description=f"{run.display_name} on {dv.ref}",
                    tags={"estimator": run.estimator, **provenance.to_tags(origin)},
                    conn=c)
                if first:  # the first model to pass becomes the champion
                    c.execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?)",
                              (policy.model_name, ALIAS_CHAMPION, version))
                c.execute("UPDATE runs SET model_name = ?, model_version = ? WHERE id = ?",
                          (policy.model_name, version, self.run_id))
            say(f"registered {policy.model_name}:{version}" + (" as champion" if first else ""))
            if champion is None and not first:
                say("another run became the champion while this one was evaluated: its gate had no champion to compare with")
            if policy.release.auto_stage and not first:
                self.auto_stage(self.ws.models.get(policy.model_name, version))
        elif not gate.passed:
            say("not registered: the candidate did not pass the gate")
        self.update(status=RunStatus.COMPLETED.value, ended_at=utcnow(), step="done")
        say("completed")


def main(argv: list[str] | None = None) -> int:
    private_files()   # its logs, spools and pid files: the workspace user's alone
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--run-id", required=True)
    args = ap.parse_args(argv)

    def on_term(signum, frame):
        raise Canceled()
    signal.signal(signal.SIGTERM, on_term)

    ws = LocalWorkspace(Path(args.workspace))
    runner = Runner(ws, args.run_id)
    try:
        runner.execute()
        return 0
    except Canceled:
        say("canceled")
        runner.update(status=RunStatus.CANCELED.value, ended_at=utcnow(), error="canceled by request")
        return 130
    except StepFailed as e:
        say(f"FAILED: {e}")
        runner.update(status=RunStatus.FAILED.value, ended_at=utcnow(), error=str(e))
        return 1
    except Exception as e:  # anything else: keep the traceback in the log, a readable line in the run
        traceback.print_exc()
        step = runner.row()["step"]
        runner.update(status=RunStatus.FAILED.value, ended_at=utcnow(),
                      error=f"{type(e).__name__} during '{step}': {e}")
        return 1
    finally:
        ws.close()


if __name__ == "__main__":
    sys.exit(main())
