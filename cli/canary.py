"""Canary rollouts and notifications from the command line.

    tollgate.py canary start --model NAME --version N [--comment TEXT] [--wait [--timeout S]] [--dry-run]
    tollgate.py canary status [--env production] [--json]
    tollgate.py canary pause|resume [--env production] [--comment TEXT]
    tollgate.py canary abort [--env production] --comment TEXT
    tollgate.py notifications [--limit N] [--json]
    tollgate.py agent [--interval S] [--once]

``canary start`` needs an approved version that passed its staging smoke test (as
``promote``), deploys it beside the stable version and gives it the first step's share
of traffic; each step is then judged and advanced — by the endpoints' supervisor locally,
on Azure by ``--wait`` (which ticks while it waits) or by ``tollgate.py agent``
(``services.release.agent``). ``--wait`` follows the rollout to its end. Exit codes: 0
succeeded (or, without ``--wait``, started; ``status``: running, paused or succeeded), 1
rolled back or aborted, 2 error.
"""
from __future__ import annotations

import argparse
import sys
import time

from services import canary as cn
from services.entities import SUPERVISED_ROLLOUTS
from services.errors import InvalidInput, Unsupported
from services.release import agent

from .output import EXIT_ERROR, EXIT_NO, EXIT_OK, emit, plain, table, whole_number
from .release import show_plan, steps_to_stderr

def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
    p = add("canary", cmd_canary, "canary rollouts to production: start, status, pause, resume, abort")
    sub = p.add_subparsers(dest="canary_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    for name in ("--workspace", "--as", "--json"):  # accepted after the action too
        if name == "--json":
            common.add_argument(name, action="store_true", default=argparse.SUPPRESS)
        else:
            common.add_argument(name, dest="actor" if name == "--as" else "workspace", default=argparse.SUPPRESS)
    s = sub.add_parser("start", parents=[common], help="promote an approved version in steps ([canary] in the policy)")
    s.add_argument("--model", required=True)
    s.add_argument("--version", required=True, type=whole_number)
    s.add_argument("--comment", default="")
    s.add_argument("--wait", action="store_true", help="follow the rollout to its end (exit 0 succeeded, 1 rolled back)")
    s.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="with --wait (default 3600)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (what would change) and change nothing")
    s.set_defaults(env=None)
    s = sub.add_parser("status", parents=[common], help="the running rollout (or the latest) with its analysis")
    s.add_argument("--env", default=None, help="default: the production endpoint")
    for action, help in (("pause", "hold the rollout at its current step"),
                         ("resume", "continue a paused rollout (its step is judged afresh)"),
                         ("abort", "end the rollout: all traffic back to the stable version (a comment is required)")):
        s = sub.add_parser(action, parents=[common], help=help)
        s.add_argument("--env", default=None, help="default: the production endpoint")
        s.add_argument("--comment", default="")

    p = add("notifications", cmd_notifications, "recent notification events and their webhook deliveries")
    p.add_argument("--limit", type=whole_number, default=20)

    p = add("agent", cmd_agent, "advance canary rollouts and deliver notifications (Azure; locally the supervisor "
                                "does it)")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="between ticks (default 5)")
    p.add_argument("--once", action="store_true", help="one tick, then exit (for a scheduler)")


def rollout_data(r: cn.Rollout | None, live: cn.Analysis | None = None) -> dict | None:
    if r is None:
        return None
    data = plain(r)
    data.update(model=r.model_ref, traffic=r.traffic, rules=plain(r.rules), step_due=r.step_due().isoformat(),
                last_analysis=r.last_analysis.to_dict() if r.last_analysis else None,
                history=[a.to_dict() for a in r.history], live_analysis=live.to_dict() if live else None)
    return data


def _side(label: str, s: cn.Side) -> str:
    p95 = f", p95 {s.p95_ms:.0f} ms" if s.p95_ms is not None else ""
    return f"{label} {s.requests} requests, {s.failures} failed ({s.failure_rate * 100:.1f} %){p95}"


def rollout_text(r: cn.Rollout | None, live: cn.Analysis | None = None) -> str:
    if r is None:
        return "no canary rollout yet"
    lines = [f"canary of {r.model_ref} on {r.endpoint}: {r.state.replace('_', ' ')}, {r.step_label}"
             + ("" if r.active else f" (ended {r.ended_at:%Y-%m-%d %H:%M:%S})"),
             f"  stable {r.stable_model} on {r.stable_deployment}, canary on {r.canary_deployment}; "
             f"started {r.started_at:%Y-%m-%d %H:%M:%S} by {r.started_by}; steps "
             + " → ".join(f"{s} %" for s in r.steps) + f", {r.rules.step_seconds:g} s each"]
    if r.reason:
        lines.append(f"  {r.reason}")
    if r.active:
        lines.append(f"  this step began {r.step_started_at:%H:%M:%S}, is judged from {r.step_due():%H:%M:%S}")
    if live is not None:
        lines.append(f"  so far: {_side('canary', live.canary)} | {_side('stable', live.stable)}")
        lines.append(f"  verdict so far: {live.verdict} ({live.summary})")
    for a in r.history:
        lines.append(f"  step {a.step + 1} ({a.traffic} %): {a.verdict}: {a.summary}")
    if not r.active and r.last_analysis is not None and r.last_analysis not in r.history:
        a = r.last_analysis
        lines.append(f"  step {a.step + 1} ({a.traffic} %): {a.verdict}: {a.summary}")
    return "\n".join(lines)


def _exit(r: cn.Rollout | None) -> int:
    return EXIT_NO if r is not None and r.state in (cn.ROLLED_BACK, cn.ABORTED) else EXIT_OK


def cmd_canary(ws, args) -> int:
    releases = ws.releases
    env = args.env or ws.policy.endpoints.production
    command = args.canary_command
    if command == "start":
        if args.dry_run:
            return show_plan(args, releases.plan_promote(args.model, args.version, strategy="canary"))
        r = releases.start_canary(args.model, args.version, args.actor, args.comment, progress=steps_to_stderr)
        if args.wait:
            drive = not ws.info.can(SUPERVISED_ROLLOUTS)   # nothing else advances it: this process does
            out = sys.stderr if args.json else sys.stdout
            print(rollout_text(r), file=out, flush=True)
            deadline, seen = time.monotonic() + args.timeout, (r.step_index, r.state)
            while r.active:
                if time.monotonic() > deadline:
                    emit(args, rollout_data(r), rollout_text(r))
                    print(f"error: the rollout did not end within {args.timeout:g} s", file=sys.stderr)
                    return EXIT_ERROR
                time.sleep(1)
                if drive:
                    agent.tick(ws)
                r = releases.rollout(r.endpoint)
                if (r.step_index, r.state) != seen:
                    seen = (r.step_index, r.state)
                    print(f"{r.state.replace('_', ' ')}: {r.step_label}" + (f" ({r.reason})" if r.reason else ""),
                          file=out, flush=True)
        emit(args, rollout_data(r), rollout_text(r))
        return _exit(r)
    if command == "status":
        r = releases.rollout(env)
        live = cn.live_analysis(ws, r) if r is not None and r.active and ws.telemetry is not None else None
        emit(args, rollout_data(r, live), rollout_text(r, live))
        return _exit(r)
    act = {"pause": releases.pause_canary, "resume": releases.resume_canary, "abort": releases.abort_canary}[command]
    r = act(env, args.actor, args.comment)
    emit(args, rollout_data(r), rollout_text(r))
    return EXIT_OK


def cmd_agent(ws, args) -> int:
    if ws.info.can(SUPERVISED_ROLLOUTS):
        raise Unsupported(f"the {ws.info.kind} workspace's supervisor advances rollouts and delivers notifications",
                          hint="python tollgate.py up starts it (make run does).")
    if args.once:
        done = agent.tick(ws)
        emit(args, {"decisions": [{"rollout": r.id, "model": r.model_ref, "action": d.action, "reason": d.reason}
                                  for r, d in done.decisions], "deliveries": done.attempts},
             "\n".join(f"canary {r.model_ref}: {d.action} ({d.reason})" for r, d in done.decisions)
             + f"\n{done.attempts} notification deliveries attempted")
        return EXIT_OK
    print(f"agent for {ws.info.uri}: advancing canary rollouts and delivering notifications every "
          f"{args.interval:g} s (Ctrl-C stops it)", file=sys.stderr, flush=True)
    agent.run(ws, interval_s=args.interval, say=lambda m: print(m, file=sys.stderr, flush=True))
    return EXIT_OK


def cmd_notifications(ws, args) -> int:
    notifications = ws.notifications
    if not 1 <= args.limit <= 1000:
        raise InvalidInput("--limit must be between 1 and 1000")
    events = notifications.events(args.limit)
    deliveries = notifications.deliveries(limit=args.limit * 10)
    by_event: dict[int, list] = {}
    for d in deliveries:
        by_event.setdefault(d.event_id, []).append(d)
    data = {"webhooks": [{"name": h.name, "format": h.format, "events": list(h.events)}
                         for h in ws.policy.notifications.webhooks],
            "events": [{**plain(e), "deliveries": [plain(d) for d in by_event.get(e.id, [])]} for e in events]}
    rows = [{"id": e.id, "at": e.at, "event": e.event, "subject": e.model or e.endpoint,
             "deliveries": ", ".join(f"{d.webhook}: {d.state}" + (f" ({d.attempts} attempts, last {d.last_status})"
                                                                  if d.state != "delivered" or d.attempts > 1 else "")
                                     for d in by_event.get(e.id, [])) or "-",
             "summary": e.summary[:80]} for e in events]
    hooks = ", ".join(f"{h.name} ({h.format})" for h in ws.policy.notifications.webhooks) or "none configured"
    emit(args, data, f"webhooks: {hooks}\n" + table(rows, ["id", "at", "event", "subject", "deliveries", "summary"]))
    return EXIT_OK
