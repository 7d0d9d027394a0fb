#!/usr/bin/env python3
"""Tollgate from the command line: the same services and rules as the console.

    python tollgate.py [--workspace URI] [--json] COMMAND ...

Exit codes: 0 success; 1 the thing asked about did not pass (a gate, a data
test, a failed run); 2 an error (unknown model, bad input, backend unavailable);
3 a wait ran out of time (``retrain --wait --timeout``) and the run goes on.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from services import ServiceError, open_workspace
from services.entities import AUTO_STAGE, CheckStatus, RunFilter, RunStatus, Stage, TrainingSpec
from services.errors import InvalidInput
from services.picked_evaluation import evaluate_on
from services.permissions import SYSTEM_ACTOR, canonical
from services.release import auto_stage
from services.run_search import parse_condition
from services.stages import stage_counts, stage_words
from services.versions import parse_version

from cli import canary, delivery, junit, lineage, monitoring, release
from cli.output import EXIT_ERROR, EXIT_NO, EXIT_OK, EXIT_TIMEOUT, emit, plain, safe_terminal, seconds, table, whole_number


def parse_ref(text: str) -> tuple[str, int | str | None]:
    """``NAME[:VERSION]``; a version is a number or, as Azure ML allows, any text (``data:foo``)."""
    name, sep, version = text.partition(":")
    if not name or (sep and not version.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME[:VERSION], got {text!r}")
    return name, version_arg(version) if version else None


def version_arg(text: str) -> int | str:
    try:
        return parse_version(text)
    except ServiceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


# --- commands -----------------------------------------------------------------

def cmd_status(ws, args) -> int:
    datasets = ws.datasets.all_versions()
    runs = ws.jobs.list()
    models = ws.models.versions()
    states = ws.releases.states()
    stages = by_ref(states)
    champion = ws.models.champion(ws.policy.model_name)
    data = {
        "workspace": ws.info,
        "datasets": [{"name": d.name, "version": d.version, "rows": d.rows, "tests": d.tests_status}
                     for d in datasets],
        "runs": [{"id": r.id, "status": r.status, "estimator": r.estimator, "dataset": r.dataset,
                  "dataset_version": r.dataset_version, "metrics": dict(r.metrics),
                  "gate": r.gate.passed if r.gate else None,
                  "model_version": r.model_version} for r in runs],
        "models": [{"name": m.name, "version": m.version, "estimator": m.estimator, "metrics": dict(m.metrics),
                    "aliases": list(m.aliases), "archived": m.archived,
                    "release_stage": stages.get((m.name, str(m.version)), Stage.REGISTERED),
                    "azure_stage": m.azure_stage or None} for m in models],
        "champion": champion.ref if champion else None,
    }
    in_release = ", ".join(f"{n} {stage_words(stage)}" for stage, n in stage_counts(
        s for s in states if s.stage != Stage.REGISTERED).items())
    by_status = {}
    for r in runs:
        by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
    text = (f"workspace  {ws.info.uri}\n"
            f"datasets   {len(datasets)} versions of {len({d.name for d in datasets})} datasets\n"
            f"runs       {len(runs)} ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items())) or 'none'})\n"
            f"models     {len(models)} versions; champion {champion.ref if champion else 'none'}\n"
            f"releases   {in_release or 'nothing in the release process'}")
    emit(args, data, text)
    return EXIT_OK


def cmd_seed_demo(ws, args) -> int:
    from services.demo import seed_demo
    t0 = time.monotonic()
    created = seed_demo(ws, progress=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    created["seconds"] = round(time.monotonic() - t0, 1)
    emit(args, created, f"demo workspace ready in {created['seconds']} s")
    return EXIT_OK


def cmd_datasets(ws, args) -> int:
    if args.ref:
        name, version = args.ref
        newest = ws.datasets.get(name, version)
        # without a version: the latest passing one, as everywhere a version is picked by default
        dv = (ws.datasets.latest_passing(name) or newest) if version is None else newest
        if dv is not newest and dv.version != newest.version:
            print(f"note: {newest.ref} failed its data tests; showing {dv.ref}, the latest that passed "
                  f"(ask for {newest.ref} to see it)", file=sys.stderr)
        tests = ws.datasets.data_tests(dv.name, dv.version)
        tested = (f"{dv.rows} rows  data tests: {dv.tests_status.value}  (baseline: {dv.baseline_version or 'none'})"
                  if dv.tested else f"{dv.kind}  data tests: not tested (registered outside Tollgate)")
        text = (f"{dv.ref}  {tested}" + (f"\ncannot be read: {dv.unreadable}" if dv.unreadable else "") + "\n\n"
                + table([c.__dict__ for c in dv.columns], ["name", "dtype", "missing", "min", "max", "mean", "std"])
                + "\n\n" + table([t.__dict__ for t in tests], ["check", "column", "status", "detail"]))
        emit(args, {"version": dv, "tests": tests}, text)
        return EXIT_OK
    versions = ws.datasets.all_versions()
    rows = [{"name": v.name, "version": v.version, "rows": v.rows, "columns": len(v.columns),
             "tests": v.tests_status.value if v.tested else "not tested", "created": v.created_at,
             "by": v.created_by, "source": v.source, "type": v.kind} for v in versions]
    emit(args, versions, table(rows, ["name", "version", "rows", "columns", "tests", "created", "by", "source", "type"]))
    return EXIT_OK


def cmd_runs(ws, args) -> int:
    flt = RunFilter(status=tuple(RunStatus(s) for s in args.status or ()), experiment=args.experiment,
                    dataset=args.dataset, limit=args.limit, offset=args.offset or 0,
                    estimators=tuple(args.estimator or ()),
                    metrics=tuple(parse_condition(c)[1] for c in args.metric or ()),
                    params=tuple(parse_condition(f"params.{c.strip().removeprefix('params.')}")[1]
                                 for c in args.param or ()))
    runs = ws.jobs.list(flt)
    rows = [{"id": r.id, "status": r.status, "estimator": r.estimator, "data": f"{r.dataset}:{r.dataset_version}",
             "rmse": r.metrics.get("rmse"), "mae": r.metrics.get("mae"), "r2": r.metrics.get("r2"),
             "gate": None if r.gate is None else ("pass" if r.gate.passed else "fail"),
             "model": f"v{r.model_version}" if r.model_version else None, "created": r.created_at} for r in runs]
    emit(args, runs, table(rows, list(rows[0]) if rows else ["id"]))
    return EXIT_OK


def cmd_log(ws, args) -> int:
    print(ws.jobs.log(args.run_id, tail=args.tail), end="")
    return EXIT_OK


def cmd_cancel(ws, args) -> int:
    run = ws.jobs.cancel(args.run_id, actor=args.actor)
    emit(args, run, f"{run.id}: {run.status.value}")
    return EXIT_OK


def by_ref(states) -> dict[tuple[str, str], Stage]:
    """Release stages (``services.stages``) by (model name, version as text); no state: registered."""
    return {(s.model_name, str(s.model_version)): s.stage for s in states}


def cmd_models(ws, args) -> int:
    versions = ws.models.versions(args.name, include_archived=args.all)
    stages = by_ref(ws.releases.states(args.name))
    stage = {m.ref: stages.get((m.name, str(m.version)), Stage.REGISTERED) for m in versions}
    rows = [{"name": m.name, "version": m.version, "estimator": m.estimator, "rmse": m.metrics.get("rmse"),
             "r2": m.metrics.get("r2"), "aliases": ",".join(m.aliases) or None,
             "stage": stage_words(stage[m.ref], m.archived), "azure stage": m.azure_stage or None,
             "data": f"{m.dataset}:{m.dataset_version}" if m.dataset else "(no lineage)", "run": m.run_id,
             "created": m.created_at} for m in versions]
    emit(args, [{**plain(m), "release_stage": stage[m.ref]} for m in versions],
         table(rows, list(rows[0]) if rows else ["name"]))
    return EXIT_OK


def cmd_register_dataset(ws, args) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return EXIT_ERROR
    dv = ws.datasets.register(args.name, path, actor=args.actor, description=args.description)
    tests = ws.datasets.data_tests(dv.name, dv.version)
    problems = [t for t in tests if t.status != CheckStatus.PASS]
    text = f"registered {dv.ref}: {dv.rows} rows, data tests {dv.tests_status.value.upper()}"
    if problems:
        text += "\n" + table([t.__dict__ for t in problems], ["check", "column", "status", "detail"])
    emit(args, {"version": dv, "tests": tests}, text)
    return EXIT_NO if dv.tests_status == CheckStatus.FAIL else EXIT_OK


def cmd_check_dataset(ws, args) -> int:
    """``FILE`` tested as the next version of ``NAME`` would be, against its latest passing version;
    nothing is registered or written. Exit 0 pass or warnings, 1 a check failed, 2 error."""
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return EXIT_ERROR
    check = ws.datasets.check(args.name, path)
    against = f"against {args.name}:{check.baseline_version}" if check.baseline_version else \
        f"(no version of {args.name} passed its tests: checked on its own)"
    problems = [t for t in check.tests if t.status != CheckStatus.PASS]
    text = (f"{path.name} as the next version of {args.name}: {check.rows} rows, data tests "
            f"{check.status.value.upper()} {against}; nothing was registered")
    if problems:
        text += "\n" + table([t.__dict__ for t in problems], ["check", "column", "status", "detail"])
    emit(args, {"dataset": args.name, "file": str(path), "status": check.status, "registered": False,
                "check": check}, text)
    return EXIT_NO if check.status == CheckStatus.FAIL else EXIT_OK


def cmd_retrain(ws, args) -> int:
    if args.timeout is not None and not args.wait:
        raise InvalidInput("--timeout bounds a wait: it needs --wait", hint="tollgate.py retrain --wait --timeout 600")
    timeout = args.timeout or ws.policy.training.wait_timeout_s
    deadline = time.monotonic() + timeout      # from the command's start: it bounds a pipeline's step
    if args.dataset:
        name, version = args.dataset
    else:
        names = ws.datasets.names()
        if not names:
            raise ServiceError("the workspace has no dataset", hint="Register one: tollgate.py register-dataset NAME FILE")
        name, version = ("diabetes" if "diabetes" in names else names[0]), None
    if version is None:  # the service trains the latest passing version with labels: say so if it is not the newest
        newest = ws.datasets.get(name)
        chosen = ws.datasets.latest_passing(name, labelled=True)
        if chosen is not None and chosen.version != newest.version:
            print(f"note: training on {chosen.ref}, the latest version with labels that passed its data tests "
                  f"(not {newest.ref}, data tests {newest.tests_status.value})", file=sys.stderr)
    cannot = auto_stage.unavailable(ws.info, ws.policy)
    if cannot:
        print(f"warning: {cannot}", file=sys.stderr)
    run = ws.jobs.submit(TrainingSpec(dataset=name, dataset_version=version, estimator=args.estimator,
                                      params=dict(args.param), experiment=args.experiment or ws.policy.experiment,
                                      register=not args.no_register), args.actor)
    if not args.wait:
        emit(args, run, f"submitted {run.id} ({run.display_name} on {run.dataset}:{run.dataset_version})")
        return EXIT_OK
    log = sys.stderr if args.json else sys.stdout
    print(f"submitted {run.id}; waiting (at most {timeout:g} s)…", file=log, flush=True)
    last_step = None
    while not run.status.is_terminal:
        left = deadline - time.monotonic()
        if left <= 0:
            return still_running(args, run, timeout)
        time.sleep(min(0.5, left))
        run = ws.jobs.get(run.id)
        if run.step != last_step:
            print(f"  step: {run.step}", file=log, flush=True)
            last_step = run.step
    lines = [f"{run.id}: {run.status.value}"]
    if run.error:
        lines.append(f"reason: {run.error}")
    if run.metrics:
        lines.append("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(run.metrics.items())))
    if run.gate:
        lines.append(f"gate: {'PASS' if run.gate.passed else 'FAIL'}"
                     + (f" vs champion {run.gate.champion}" if run.gate.champion else ""))
        lines += [f"  - {r}" for r in run.gate.reasons]
    if run.model_version:
        lines.append(f"registered {run.model_name}:{run.model_version}")
        if ws.policy.release.auto_stage and ws.info.can(AUTO_STAGE):   # the runner may have staged it
            stage = ws.releases.state(run.model_name, run.model_version).stage
            lines.append(f"release stage: {stage.value.replace('_', ' ')} ([release] auto_stage)")
    emit(args, run, "\n".join(lines))
    return EXIT_OK if run.status == RunStatus.COMPLETED else EXIT_NO


def still_running(args, run, timeout: float) -> int:
    """``retrain --wait`` out of time: what still runs and how to follow it; the run goes on."""
    print(f"timeout: {run.id} is still {run.status.value} (step: {run.step or '-'}) after {timeout:g} s; "
          f"it was not canceled", file=sys.stderr)
    print(f"hint: follow it with  tollgate.py runs --limit 5  and  tollgate.py log {run.id} --tail 50 ; "
          f"stop it with  tollgate.py cancel {run.id}", file=sys.stderr)
    emit(args, run)
    return EXIT_TIMEOUT


def cmd_gate(ws, args) -> int:
    """The gate, for people and pipelines: besides the verdict it prints the Azure DevOps output
    variable ``deployModel`` (yes/no) and appends ``deploy_model=true|false`` to $GITHUB_OUTPUT.
    On an error (exit 2) neither is written: the step fails instead (docs/ci-cd.md)."""
    with junit.report(args.junit, "gate") as suite:
        comparison = ws.evaluation.compare(args.model, args.version)
        junit.gate_cases(suite, comparison.gate, comparison.candidate.ref, ws.policy.require_improvement)
    gate = comparison.gate
    data = {"model": comparison.candidate.ref, "champion": comparison.champion.ref if comparison.champion else None,
            "evaluated_on": comparison.evaluated_on, "passed": gate.passed, "reasons": list(gate.reasons),
            "candidate_metrics": dict(comparison.candidate_metrics),
            "champion_metrics": dict(comparison.champion_metrics), "checks": gate.checks,
            "deploy_model": gate.passed}
    text = "\n".join([f"{comparison.candidate.ref} vs champion "
                      f"{comparison.champion.ref if comparison.champion else '(none)'} on {comparison.evaluated_on}: "
                      f"{'PASS' if gate.passed else 'FAIL'}"] + [f"  - {c.reason}" for c in gate.checks]
                     + [f"  ! {r}" for r in gate.reasons if not gate.passed])
    emit(args, data, text)
    delivery.write_gate_outputs(gate.passed, json_mode=args.json)
    return EXIT_OK if gate.passed else EXIT_NO


def cmd_evaluate(ws, args) -> int:
    """A model version and the champion on a dataset version and target column picked here (a
    version registered outside Tollgate has no dataset to be evaluated on): a read, exit 0 whatever
    the gate's checks say (they are for information); 2 for what cannot be evaluated."""
    name, version = args.ref
    if version is None:
        raise InvalidInput("name the model version: NAME:VERSION")
    dataset, dataset_version = args.dataset
    if dataset_version is None:
        raise InvalidInput("name the dataset version: --dataset NAME:VERSION")
    c = evaluate_on(ws, name, version, dataset, dataset_version, args.target, champion_version=args.champion)
    compared = c.champion is not None and c.champion.ref != c.candidate.ref
    metrics = list(dict.fromkeys([*c.candidate_metrics, *c.champion_metrics]))
    data = {"model": c.candidate.ref, "champion": c.champion.ref if compared else None,
            "evaluated_on": c.evaluated_on, "rows": len(c.actual), "candidate_metrics": dict(c.candidate_metrics),
            "champion_metrics": dict(c.champion_metrics) if compared else {},
            "checks": c.gate.checks, "would_pass_gate": c.gate.passed}
    columns = ["metric", c.candidate.ref] + ([c.champion.ref] if compared else [])
    rows = [{"metric": m, c.candidate.ref: c.candidate_metrics.get(m),
             **({c.champion.ref: c.champion_metrics.get(m)} if compared else {})} for m in metrics]
    text = "\n".join([f"{c.candidate.ref}" + (f" vs champion {c.champion.ref}" if compared else "")
                      + f" on {len(c.actual)} held-out rows of {c.evaluated_on}", table(rows, columns),
                      f"gate checks (for information, nothing recorded): {'pass' if c.gate.passed else 'fail'}"]
                     + [f"  - {check.reason}" for check in c.gate.checks])
    emit(args, data, text)
    return EXIT_OK


# --- wiring -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", metavar="URI", default=argparse.SUPPRESS,
                        help="local://PATH (default: $TOLLGATE_WORKSPACE or local://.tollgate)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument("--as", dest="actor", metavar="EMAIL", default=argparse.SUPPRESS,
                        help="who is acting (recorded in the audit trail)")

    ap = argparse.ArgumentParser(prog="tollgate.py", description=__doc__.split("\n\n")[0], parents=[common],
                                 epilog="Exit codes: 0 ok, 1 did not pass (gate, data tests, failed run), 2 error, "
                                        "3 a wait timed out (retrain --wait --timeout; the run goes on).")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help):
        p = sub.add_parser(name, help=help, parents=[common], description=help)
        p.set_defaults(func=func)
        return p

    add("status", cmd_status, "what the workspace holds: datasets, runs, models, champion")
    add("seed-demo", cmd_seed_demo, "populate an empty workspace with demo data (idempotent)")
    p = add("datasets", cmd_datasets, "list dataset versions, or show one with its profile and data tests")
    p.add_argument("ref", nargs="?", type=parse_ref, metavar="NAME[:VERSION]")
    p = add("runs", cmd_runs, "list training runs")
    p.add_argument("--status", action="append", choices=[s.value for s in RunStatus])
    p.add_argument("--experiment")
    p.add_argument("--dataset")
    p.add_argument("--estimator", action="append", help="repeatable: any of these estimators")
    p.add_argument("--metric", action="append", metavar="CONDITION",
                   help="repeatable, all must hold: a final metric compared, e.g. 'rmse<55' or 'r2 >= 0.4'")
    p.add_argument("--param", action="append", metavar="CONDITION",
                   help="repeatable, all must hold: a parameter compared, e.g. 'alpha=1' or 'n_estimators>=200'")
    p.add_argument("--limit", type=whole_number)
    p.add_argument("--offset", type=whole_number, help="skip this many of the newest matching runs (paging)")
    p = add("log", cmd_log, "print a run's log")
    p.add_argument("run_id")
    p.add_argument("--tail", type=whole_number)
    p = add("cancel", cmd_cancel, "cancel a queued or running run")
    p.add_argument("run_id")
    p = add("models", cmd_models, "list registered model versions")
    p.add_argument("--name")
    p.add_argument("--all", action="store_true", default=True, help=argparse.SUPPRESS)
    p = add("register-dataset", cmd_register_dataset,
            "register FILE (CSV/Parquet) as the next version of dataset NAME; exit 1 if its data tests fail")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--description", default="")
    p = add("check-dataset", cmd_check_dataset,
            "test FILE against dataset NAME's latest passing version without registering it "
            "(exit 0 pass or warn, 1 fail, 2 error)")
    p.add_argument("name")
    p.add_argument("file")
    p = add("retrain", cmd_retrain, "start the training pipeline (validate, train, evaluate, register if better)")
    p.add_argument("--dataset", type=parse_ref, metavar="NAME[:VERSION]",
                   help="default: the latest version with labels that passed its data tests")
    p.add_argument("--estimator", default="ridge")
    p.add_argument("--param", type=parse_param, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--experiment")
    p.add_argument("--no-register", action="store_true", help="evaluate only; never register")
    p.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    p.add_argument("--timeout", type=seconds, metavar="SECONDS",
                   help=f"with --wait: stop waiting after this long and exit {EXIT_TIMEOUT}, the run going on "
                        "(default: [training] wait_timeout_s of the policy, 3600)")
    p = add("gate", cmd_gate, "quality gate of a model version against the champion (exit 0 pass, 1 fail, 2 error)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True, type=version_arg)
    junit.add_option(p)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("CI outputs (docs/ci-cd.md): prints the Azure DevOps logging command\n"
                "  ##vso[task.setvariable variable=deployModel;isOutput=true]yes|no\n"
                "(text mode only: with --json, stdout is one JSON document with \"deploy_model\"), and appends\n"
                "  deploy_model=true|false\n"
                "to the file named by $GITHUB_OUTPUT when that is set.\n\n"
                "Exit codes: 0 the gate passes (deploy); 1 it does not pass (do not deploy; not an error);\n"
                "2 error (unknown model or version, bad input, backend unavailable): nothing is written\n"
                "to the CI outputs and the reason is on stderr.")

    p = add("evaluate", cmd_evaluate, "a model version and the champion on a dataset version and target column "
                                      "you pick (for versions registered outside Tollgate); records nothing")
    p.add_argument("ref", type=parse_ref, metavar="NAME:VERSION")
    p.add_argument("--dataset", required=True, type=parse_ref, metavar="NAME:VERSION")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column the model predicts")
    p.add_argument("--champion", type=version_arg, metavar="VERSION", help="compare with this version instead")

    release.register(add)
    monitoring.register(add)
    delivery.register(add)
    canary.register(add)
    lineage.register(add)
    return ap


def main(argv: list[str] | None = None) -> int:
    with safe_terminal():
        return run(argv)


def run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    named = getattr(args, "actor", None) or os.environ.get("TOLLGATE_AS")
    args.actor = named or "cli-user"
    if canonical(args.actor) == SYSTEM_ACTOR:
        print(f"error: {SYSTEM_ACTOR} is reserved for Tollgate itself", file=sys.stderr)
        return EXIT_ERROR
    try:
        ws = open_workspace(getattr(args, "workspace", None))
        try:
            if not named:   # a policy binding the identity to the OS user names who acts (services enforce it)
                args.actor = ws.policy.auth.bound_identity() or args.actor
            return args.func(ws, args)
        finally:
            ws.close()
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:  # `tollgate.py … | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
