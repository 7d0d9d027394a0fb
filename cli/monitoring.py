"""Support commands: simulate, telemetry, lookup, logs.

    tollgate.py simulate --env production --rps 20 --duration 60 [--error-rate 0.02] [--seed N]
    tollgate.py telemetry [--env ENV] [--since 15m | --from ISO [--to ISO]] [--json]
    tollgate.py lookup REQUEST_ID [--json]
    tollgate.py logs --env ENV [--deployment NAME] [--grep TEXT] [--since 1h] [--tail N]
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from services.errors import BackendUnavailable, InvalidInput
from services.simulator import UP_HINT, simulate
from services.telemetry import between, endpoints_health, parse_since, window

from .output import EXIT_OK, emit, plain, table, whole_number


def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
    p = add("simulate", cmd_simulate, "send scoring traffic to an endpoint: good rows and realistic bad requests")
    p.add_argument("--env", required=True)
    p.add_argument("--rps", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--duration", type=float, default=60.0, metavar="SECONDS", help="default 60")
    p.add_argument("--error-rate", type=float, default=0.0, metavar="FRACTION",
                   help="share of bad requests (wrong feature count, strings, null/NaN, malformed JSON, "
                        "empty body, no 'data' key, wrong key), e.g. 0.02")
    p.add_argument("--seed", type=whole_number, help="the same seed sends the same requests")
    p.add_argument("--concurrency", type=whole_number, default=8, help="requests in flight at most (default 8)")

    p = add("telemetry", cmd_telemetry,
            "requests, failures, latency per model version and deployment, and endpoint health")
    p.add_argument("--env", help="one endpoint (default: all)")
    p.add_argument("--since", default="15m", help="the last 15m … 30d (default 15m)")
    p.add_argument("--from", dest="start", type=_time, metavar="ISO", help="window start (UTC if no offset)")
    p.add_argument("--to", dest="end", type=_time, metavar="ISO", help="window end (default: now)")

    p = add("lookup", cmd_lookup, "one request by its id (x-request-id): what it got, and its log lines")
    p.add_argument("request_id")

    p = add("logs", cmd_logs, "console logs of an endpoint's deployments and its gateway")
    p.add_argument("--env", required=True)
    p.add_argument("--deployment", metavar="NAME", help="one source: a deployment name or 'gateway'")
    p.add_argument("--grep", metavar="TEXT", help="plain text, case-insensitive (never a pattern)")
    p.add_argument("--since", help="only lines of the last 10m, 1h, 2d, …")
    p.add_argument("--tail", type=whole_number, default=200, help="the last N matching lines (default 200)")


def _time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time like 2025-01-31T14:05:00Z, got {text!r}")
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _log(args):
    return sys.stderr if args.json else sys.stdout


# --- simulate -----------------------------------------------------------------------

def cmd_simulate(ws, args) -> int:
    out = _log(args)
    print(f"simulating {args.rps:g} requests/s for {args.duration:g} s to {args.env}"
          f" (error rate {args.error_rate:g})…", file=out, flush=True)

    def progress(p) -> None:
        mix = "  ".join(f"{'no answer' if s == 0 else s}: {n}" for s, n in sorted(p.by_status.items()))
        print(f"  {p.elapsed_s:5.1f} s  sent {p.sent}/{p.planned}  {mix}", file=out, flush=True)

    result = simulate(ws, args.env, args.rps, args.duration, args.error_rate, args.seed, progress,
                      actor=args.actor, concurrency=args.concurrency)
    summary = result.summary()
    statuses = ", ".join(f"{'no answer' if s == 0 else s}: {n}" for s, n in sorted(result.by_status.items()))
    text = "\n".join([
        f"sent {result.sent} of {result.planned} requests to {result.endpoint} in {result.elapsed_s:.1f} s",
        f"  status      {statuses or '-'}",
        "  kinds       " + ", ".join(f"{k}: {n}" for k, n in sorted(result.by_kind.items())),
        "  models      " + (", ".join(f"{m}: {n}" for m, n in sorted(result.by_model.items())) or "-"),
        f"  rate        {result.achieved_rps:.1f} requests/s achieved (target {result.target_rps:g})",
        f"  latency     p50 {_ms(result.p50_ms)}  p95 {_ms(result.p95_ms)} (client side)",
        f"  window      --from {result.started_at.isoformat()} --to {result.ended_at.isoformat()}"])
    if result.sent > 1 and result.achieved_rps < 0.9 * result.target_rps:
        text += (f"\n  note        below the target rate: at most {args.concurrency} requests in flight"
                 f" (--concurrency) at p50 {_ms(result.p50_ms)}")
    emit(args, summary, text)
    if not result.completed:
        reason = result.aborted or f"{result.no_answer} of {result.sent} requests got no answer"
        raise BackendUnavailable(f"endpoint {args.env} stopped answering: {reason}", hint=UP_HINT)
    return EXIT_OK


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


# --- telemetry ----------------------------------------------------------------------

def _window(args):
    if args.start is not None:
        return between(args.start, args.end or datetime.now(timezone.utc)), None
    if args.end is not None:
        raise InvalidInput("--to needs --from")
    return window(args.since, clamp=False), args.since


def cmd_telemetry(ws, args) -> int:
    if ws.telemetry is None:
        raise BackendUnavailable("this workspace has no request telemetry")
    win, since = _window(args)
    if args.env and ws.endpoints is not None:
        ws.endpoints.get(args.env)  # NotFound for an unknown endpoint
    stats = ws.telemetry.stats(win, args.env)
    health = {h.endpoint: h for h in endpoints_health(ws)}
    names = [args.env] if args.env else list(dict.fromkeys(
        [*(e.name for e in ws.endpoints.list()), *(s.endpoint for s in stats)] if ws.endpoints is not None
        else [s.endpoint for s in stats]))
    endpoints = []
    for name in names:
        rows = [s for s in stats if s.endpoint == name]
        requests, failures = sum(s.requests for s in rows), sum(s.failures for s in rows)
        endpoints.append({
            "endpoint": name, "requests": requests, "failures": failures,
            "failure_rate": failures / requests if requests else 0.0,
            "client_errors": sum(s.client_errors for s in rows),
            "health": health.get(name),
            "versions": [{"deployment": s.deployment, "model": s.model, "requests": s.requests,
                          "failures": s.failures, "failure_rate": s.failure_rate, "client_errors": s.client_errors,
                          "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms} for s in rows]})
    data = {"window": {"start": win.start, "end": win.end, "seconds": win.seconds, "since": since},
            "endpoints": endpoints}
    span = f"last {since}" if since else "window"
    lines = [f"{span}: {win.start:%Y-%m-%d %H:%M:%S} → {win.end:%Y-%m-%d %H:%M:%S} UTC"]
    for ep in endpoints:
        h = ep["health"]
        lines.append("")
        lines.append(f"{ep['endpoint']}: {ep['requests']} requests, {ep['failures']} failures "
                     f"({ep['failure_rate']:.1%}), {ep['client_errors']} client errors"
                     + (f" — health {h.status.value.upper()} (last {h.window_minutes} min)" if h else ""))
        lines += [f"  - {r}" for r in (h.reasons if h else ())]
        if ep["versions"]:
            rows = [{**v, "model": v["model"] or "(none)", "deployment": v["deployment"] or "(none)",
                     "failure_rate": f"{v['failure_rate']:.1%}",
                     **{k: None if v[k] is None else f"{v[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")}}
                    for v in ep["versions"]]
            lines.append("  " + table(rows, ["deployment", "model", "requests", "failures", "failure_rate",
                                              "client_errors", "p50_ms", "p95_ms", "p99_ms"]).replace("\n", "\n  "))
    emit(args, data, "\n".join(lines))
    return EXIT_OK


# --- lookup -------------------------------------------------------------------------

def cmd_lookup(ws, args) -> int:
    if ws.telemetry is None:
        raise BackendUnavailable("this workspace has no request telemetry")
    detail = ws.telemetry.lookup(args.request_id)
    r = detail.record
    data = {**plain(r), "log_lines": [plain(line) for line in detail.log_lines]}
    lines = [f"request   {r.request_id}"]
    if r.client_request_id:
        lines.append(f"client id {r.client_request_id}")
    lines += [f"time      {r.ts.isoformat()}",
              f"endpoint  {r.endpoint}",
              f"deployment {r.deployment or '(none)'}",
              f"model     {r.model or '(none)'}",
              f"status    {r.status or 'no answer'}",
              f"latency   {r.latency_ms:.1f} ms"
              + (f" (upload {r.upload_ms:.1f} ms before it)" if r.upload_ms is not None else "")]
    if r.error:
        lines.append(f"error     {r.error}")
    lines += ["", "request body:", f"  {r.request_body if r.request_body is not None else '(empty)'}",
              "response body:", f"  {r.response_body if r.response_body is not None else '(none)'}",
              "", f"log lines ({len(detail.log_lines)}):"]
    lines += [f"  [{line.source}] {line.text}" for line in detail.log_lines] or ["  (none)"]
    emit(args, data, "\n".join(lines))
    return EXIT_OK


# --- logs ---------------------------------------------------------------------------

def cmd_logs(ws, args) -> int:
    if ws.logs is None:
        raise BackendUnavailable("this workspace has no logs")
    if ws.endpoints is not None:
        ws.endpoints.get(args.env)  # NotFound for an unknown endpoint
    start = datetime.now(timezone.utc) - parse_since(args.since) if args.since else None
    lines = ws.logs.search(args.env, source=args.deployment, text=args.grep, start=start, tail=args.tail)
    if args.json:
        emit(args, lines)
        return EXIT_OK
    several = args.deployment is None
    for line in lines:
        print(f"[{line.source}] {line.text}" if several else line.text)
    if not lines:
        print("(no matching lines)", file=sys.stderr)
    return EXIT_OK

