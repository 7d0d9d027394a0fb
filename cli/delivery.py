"""Continuous-delivery commands: retraining schedules and triggers, the scheduler, the gate's CI outputs.

    tollgate.py schedules [--json]
    tollgate.py schedule add --dataset NAME --cron "*/5 * * * *" [--estimator E] [--param K=V ...] [--disabled]
    tollgate.py schedule enable|disable|remove ID
    tollgate.py trigger on|off --dataset NAME [--estimator E] [--param K=V ...]
    tollgate.py scheduler start|stop|status|tick

Changing schedules and triggers needs the ``ml_lead`` or ``admin`` role (``--as``).
Without ``--estimator``/``--param`` a schedule or trigger retrains the champion's
recipe (its estimator and parameters). Cron expressions are five fields in UTC.
"""
from __future__ import annotations

import os
from datetime import datetime

from services.entities import SCHEDULER_PROCESS
from services.errors import InvalidInput, ServiceError, Unsupported
from services.schedules import parse_assignments, recipe_text

from .output import EXIT_OK, emit, table, whole_number

# The gate's answer in the two CI systems' documented formats (docs/ci-cd.md).
AZURE_OUTPUT = "##vso[task.setvariable variable=deployModel;isOutput=true]{}"
GITHUB_OUTPUT_ENV = "GITHUB_OUTPUT"


def gate_ci_lines(passed: bool) -> tuple[str, str]:
    """``(Azure DevOps logging command, GitHub Actions output line)`` for a gate decision."""
    return AZURE_OUTPUT.format("yes" if passed else "no"), f"deploy_model={'true' if passed else 'false'}"


def write_gate_outputs(passed: bool, *, json_mode: bool = False) -> None:
    """Print the Azure DevOps line (on stdout, where the agent reads logging commands; not in
    ``--json`` mode, whose stdout is one JSON document) and append ``deploy_model=…`` to the
    file named by ``$GITHUB_OUTPUT`` when it is set."""
    azure, github = gate_ci_lines(passed)
    if not json_mode:
        print(azure, flush=True)
    path = os.environ.get(GITHUB_OUTPUT_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as out:
                out.write(github + "\n")
        except OSError as e:
            raise ServiceError(f"cannot write the gate's output to ${GITHUB_OUTPUT_ENV} ({path}): {e}",
                               hint="GitHub Actions sets GITHUB_OUTPUT to a writable file; unset it outside CI.")


def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
    p = add("schedules", cmd_schedules,
            "retraining schedules and dataset triggers: next fire times, last firings, the scheduler")
    p.add_argument("--firings", type=whole_number, default=10, metavar="N", help="recent firings shown (default 10)")

    p = add("schedule", cmd_schedule, "add, enable, disable or remove a retraining schedule (ml_lead or admin)")
    p.add_argument("action", choices=["add", "enable", "disable", "remove"])
    p.add_argument("id", nargs="?", type=whole_number, metavar="ID", help="the schedule (enable, disable, remove)")
    p.add_argument("--dataset", metavar="NAME", help="add: the dataset to retrain on (its latest version)")
    p.add_argument("--cron", metavar="EXPR", help='add: five fields in UTC, e.g. "*/5 * * * *"')
    _recipe_options(p)
    p.add_argument("--disabled", action="store_true", help="add: create it paused")

    p = add("trigger", cmd_trigger, "retrain on every new version of a dataset: on or off (ml_lead or admin)")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--dataset", required=True, metavar="NAME")
    _recipe_options(p)

    p = add("scheduler", cmd_scheduler,
            "the local scheduler process that fires schedules and triggers: start, stop, status, or one tick now")
    p.add_argument("action", choices=["start", "stop", "status", "tick"])


def _recipe_options(p) -> None:
    p.add_argument("--estimator", help="default: the champion's estimator (and its parameters)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="repeatable")


def _service(ws):
    return ws.schedules


def _recipe(args) -> tuple[str | None, dict | None]:
    params = parse_assignments(args.param)
    return args.estimator, (params or None)


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.strftime("%Y-%m-%d %H:%M UTC")


def _firing_text(f) -> str | None:
    if f is None:
        return None
    return f"{_when(f.fired_at)} → " + (f.run_id or f"no run: {f.error}")


# --- commands -----------------------------------------------------------------------

def cmd_schedules(ws, args) -> int:
    svc = _service(ws)
    schedules, triggers = svc.list(), svc.triggers()
    firings, status = svc.firings(args.firings), svc.scheduler()
    data = {"scheduler": status, "schedules": schedules, "triggers": triggers, "firings": firings}
    lines = ["SCHEDULES (cron in UTC)",
             table([{"id": s.id, "dataset": s.dataset, "recipe": recipe_text(s.estimator, s.params), "cron": s.cron,
                     "enabled": "yes" if s.enabled else "paused",
                     "next": _when(s.next_fire_at[0]) if s.next_fire_at else None,
                     "last fired": _firing_text(s.last_firing)} for s in schedules],
                   ["id", "dataset", "recipe", "cron", "enabled", "next", "last fired"]),
             "", "DATASET TRIGGERS (retrain on every new version)",
             table([{"dataset": t.dataset, "on": "on" if t.enabled else "off",
                     "recipe": recipe_text(t.estimator, t.params), "after version": t.since_version,
                     "last fired": _firing_text(t.last_firing)} for t in triggers],
                   ["dataset", "on", "recipe", "after version", "last fired"]),
             "", "RECENT FIRINGS",
             table([{"fired": f.fired_at, "by": f.target, "due": _when(f.due_at),
                     "data": f"{f.dataset}:{f.dataset_version}" if f.dataset_version else f.dataset,
                     "run": f.run_id, "note": f.error or (f"{f.skipped} missed skipped" if f.skipped else None)}
                    for f in firings], ["fired", "by", "due", "data", "run", "note"]),
             "", f"scheduler: {status.detail}"]
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_schedule(ws, args) -> int:
    svc = _service(ws)
    if args.action == "add":
        if args.id is not None:
            raise InvalidInput("schedule add takes no ID", hint='tollgate.py schedule add --dataset NAME --cron "EXPR"')
        if not args.dataset or not args.cron:
            raise InvalidInput("schedule add needs --dataset and --cron",
                               hint='e.g. tollgate.py schedule add --dataset diabetes --cron "0 2 * * *"')
        estimator, params = _recipe(args)
        s = svc.add(args.dataset, args.cron, args.actor, estimator=estimator, params=params, enabled=not args.disabled)
        text = (f"schedule #{s.id}: retrain {s.dataset} with {recipe_text(s.estimator, s.params)} at '{s.cron}' (UTC)"
                + (f"; next {_when(s.next_fire_at[0])}" if s.next_fire_at else "; paused"))
        emit(args, s, text)
        return EXIT_OK
    if args.id is None:
        raise InvalidInput(f"schedule {args.action} needs the schedule's ID", hint="List them: tollgate.py schedules")
    if args.dataset or args.cron or args.estimator or args.param or args.disabled:
        raise InvalidInput(f"schedule {args.action} takes only an ID")
    if args.action == "remove":
        s = svc.remove(args.id, args.actor)
        emit(args, s, f"removed schedule #{s.id} ({s.dataset}, '{s.cron}'); its firings stay in the history")
        return EXIT_OK
    s = svc.set_enabled(args.id, args.action == "enable", args.actor)
    emit(args, s, f"schedule #{s.id}: " + (f"enabled; next {_when(s.next_fire_at[0])}" if s.enabled else "paused"))
    return EXIT_OK


def cmd_trigger(ws, args) -> int:
    svc = _service(ws)
    estimator, params = _recipe(args)
    t = svc.set_trigger(args.dataset, args.state == "on", args.actor, estimator=estimator, params=params)
    text = (f"{t.dataset}: every version after v{t.since_version} starts a run "
            f"({recipe_text(t.estimator, t.params)})" if t.enabled else f"{t.dataset}: trigger off")
    status = svc.scheduler()
    if t.enabled and not status.running:
        text += f"\nnote: the scheduler is {status.detail}"
    emit(args, t, text)
    return EXIT_OK


def cmd_scheduler(ws, args) -> int:
    svc = _service(ws)
    local = ws.info.can(SCHEDULER_PROCESS)   # else the backend fires its schedules itself (Azure ML)
    if args.action == "status":
        status = svc.scheduler()
        emit(args, status, f"scheduler: {status.detail}"
             + (f"; last tick {status.last_tick_at:%H:%M:%S} UTC" if status.last_tick_at else ""))
        return EXIT_OK
    if not local:
        raise Unsupported(f"the {ws.info.kind} workspace runs its schedules itself; there is no process to {args.action}")
    if args.action == "start":
        pid, started = svc.start_scheduler()
        emit(args, {"pid": pid, "started": started},
             f"scheduler {'started' if started else 'already running'} (pid {pid})")
    elif args.action == "stop":
        stopped = svc.stop_scheduler()
        emit(args, {"stopped": stopped}, "scheduler stopped" if stopped else "the scheduler was not running")
    else:
        fired = svc.tick()
        emit(args, fired, "\n".join(f"fired {f.target}: " + (f"run {f.run_id}" if f.run_id else f"no run ({f.error})")
                                    for f in fired) or "nothing due")
    return EXIT_OK
