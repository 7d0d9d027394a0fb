"""Canary rollouts and notifications from the command line.

    tollgate.py canary start --model NAME --version N [--comment TEXT] [--wait [--timeout S]]
    tollgate.py canary status [--env production] [--json]
    tollgate.py canary pause|resume|abort [--env production] [--comment TEXT]
    tollgate.py notifications [--limit N] [--json]

``canary start`` needs an approved version that passed its staging smoke test (as
``promote``), deploys it beside the stable version and gives it the first step's share
of traffic; the endpoints' supervisor judges and advances each step. ``--wait`` follows
the rollout to its end. Exit codes: 0 succeeded (or, without ``--wait``, started;
``status``: running, paused or succeeded), 1 rolled back or aborted, 2 error.
"""
from __future__ import annotations

import argparse
import sys
import time

from services import canary as cn
from services.errors import BackendUnavailable, ServiceError

from .output import EXIT_ERROR, EXIT_NO, EXIT_OK, emit, plain, table

ACTIONS = {"pause": "pause_canary", "resume": "resume_canary", "abort": "abort_canary"}


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
    s.add_argument("--version", required=True, type=int)
    s.add_argument("--comment", default="")
    s.add_argument("--wait", action="store_true", help="follow the rollout to its end (exit 0 succeeded, 1 rolled back)")
    s.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="with --wait (default 3600)")
    s = sub.add_parser("status", parents=[common], help="the running rollout (or the latest) with its analysis")
    s.add_argument("--env", default=None, help="default: the production endpoint")
    for action, help in (("pause", "hold the rollout at its current step"),
                         ("resume", "continue a paused rollout (its step is judged afresh)"),
                         ("abort", "end the rollout: all traffic back to the stable version")):
        s = sub.add_parser(action, parents=[common], help=help)
        s.add_argument("--env", default=None, help="default: the production endpoint")
        s.add_argument("--comment", default="")

    p = add("notifications", cmd_notifications, "recent notification events and their webhook deliveries")
    p.add_argument("--limit", type=int, default=20)


def _releases(ws):
    releases = ws.releases
    if releases is None or not hasattr(releases, "start_canary"):
        raise BackendUnavailable("this workspace has no canary rollouts",
                                 hint="Canary rollouts run on the local workspace's endpoints.")
    return releases


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
    releases = _releases(ws)
    env = getattr(args, "env", None) or ws.policy.endpoints.production
    command = args.canary_command
    if command == "start":
        r = releases.start_canary(args.model, args.version, args.actor, args.comment)
        if args.wait:
            out = sys.stderr if args.json else sys.stdout
            print(rollout_text(r), file=out, flush=True)
            deadline, seen = time.monotonic() + args.timeout, (r.step_index, r.state)
            while r.active:
                if time.monotonic() > deadline:
                    emit(args, rollout_data(r), rollout_text(r))
                    print(f"error: the rollout did not end within {args.timeout:g} s", file=sys.stderr)
                    return EXIT_ERROR
                time.sleep(1)
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
    r = getattr(releases, ACTIONS[command])(env, args.actor, args.comment)
    emit(args, rollout_data(r), rollout_text(r))
    return EXIT_OK


def cmd_notifications(ws, args) -> int:
    try:
        from services.local.outbox import LocalNotifications
        notifications = LocalNotifications(ws.db, ws.policy)
    except (AttributeError, ImportError):
        raise BackendUnavailable("this workspace keeps no notification outbox") from None
    if not 1 <= args.limit <= 1000:
        raise ServiceError("--limit must be between 1 and 1000")
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
