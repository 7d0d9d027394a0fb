"""The release workflow from the command line: the same ``ws.releases`` as the console.

    tollgate.py deploy --model NAME --version N [--env staging] [--dry-run]
    tollgate.py smoke-test --env ENV [--deployment NAME]
    tollgate.py approve|reject --model NAME --version N --comment TEXT
    tollgate.py promote --model NAME --version N [--strategy blue_green|canary] [--dry-run]
    tollgate.py rollback [--env production] --comment TEXT [--dry-run]
    tollgate.py traffic --env ENV blue=90 green=10 [--dry-run]
    tollgate.py endpoint --env ENV [--show-keys] | up | down | audit [--limit N] [--csv]

``--dry-run`` prints the plan the workflow computes (what will change, the traffic before
and after, the stage changes, what happens on failure, warnings) and changes nothing: exit 0
when the action could run now, 2 with the reason when it would be refused. Long operations
print their steps on stderr as they end, with the time each took.
"""
from __future__ import annotations

import json
import sys

from services.entities import Plan
from services.errors import InvalidInput
from services.export import write_csv
from services.release import step_text
from services.stages import stage_words

from . import junit
from .output import EXIT_ERROR, EXIT_NO, EXIT_OK, emit, table, whole_number


def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
    add("up", cmd_up, "start the local endpoints (supervisor, gateways, deployments; qa or admin)")
    add("down", cmd_down, "stop the local endpoints (qa or admin)")
    p = add("endpoint", cmd_endpoint, "an endpoint: scoring URI, deployments, traffic, masked keys")
    p.add_argument("--env", required=True)
    p.add_argument("--show-keys", action="store_true", help="print the full keys (qa or admin)")
    for name, func, help in [("deploy", cmd_deploy, "deploy a model version to staging: blue/green with smoke test"),
                             ("approve", cmd_approve, "approve a version that passed staging (ml_lead; not its deployer)"),
                             ("reject", cmd_reject, "reject a version (ml_lead; a comment is required)"),
                             ("promote", cmd_promote, "promote an approved version to production (qa)")]:
        p = add(name, func, help)
        p.add_argument("--model", required=True)
        p.add_argument("--version", required=True, type=whole_number)
        if name == "deploy":
            p.add_argument("--env", default="staging")
            junit.add_option(p)
        if name == "promote":
            p.add_argument("--strategy", choices=["blue_green", "canary"],
                           help="default: [canary] strategy in the policy (blue_green)")
        p.add_argument("--comment", default="")
        if name in ("deploy", "promote"):
            _dry_run(p)
    p = add("smoke-test", cmd_smoke_test, "run the smoke test against an endpoint (exit 1 if it fails)")
    p.add_argument("--env", required=True)
    p.add_argument("--deployment")
    junit.add_option(p)
    p = add("rollback", cmd_rollback, "give the traffic back to the previous champion (warm; a comment is required)")
    p.add_argument("--env", default="production")
    p.add_argument("--comment", default="")
    _dry_run(p)
    p = add("traffic", cmd_traffic, "set an endpoint's traffic split (admin), e.g. traffic --env staging blue=50 green=50")
    p.add_argument("--env", required=True)
    p.add_argument("split", nargs="+", metavar="DEPLOYMENT=PERCENT")
    p.add_argument("--comment", default="")
    _dry_run(p)
    p = add("audit", cmd_audit, "the audit trail, newest first")
    p.add_argument("--limit", type=whole_number)
    p.add_argument("--csv", action="store_true", help="write CSV to stdout")


def _dry_run(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the plan (what would change) and change nothing")


# --- output -------------------------------------------------------------------------

def endpoint_data(ep, keys: tuple[str, str] | None = None) -> dict:
    data = {"name": ep.name, "scoring_uri": ep.scoring_uri, "gateway_up": ep.gateway_up,
            "traffic": ep.traffic, "primary_key": ep.primary_key_masked, "secondary_key": ep.secondary_key_masked,
            "auth_mode": ep.auth_mode, "provisioning_state": ep.provisioning_state or None,
            "provisioning_error": ep.provisioning_error or None,
            "deployments": [{"name": d.name, "model": d.model_source or d.model_ref, "state": d.state,
                             "traffic": d.traffic, "restarts": d.restarts, "last_error": d.last_error,
                             "provisioning_state": d.provisioning_state or None, "compute": d.compute or None,
                             "instance_type": d.instance_type or None, "instance_count": d.instance_count}
                            for d in ep.deployments]}
    if keys:
        data["primary_key"], data["secondary_key"] = keys
    return data


def endpoint_text(ep) -> str:
    lines = [f"{ep.name}: {ep.scoring_uri or '(not running)'}"
             + (f"  [{ep.provisioning_state}]" if ep.provisioning_state not in ("", "Succeeded") else "")
             + (f"  why: {ep.provisioning_error}" if ep.provisioning_error else "")]
    for d in ep.deployments:
        lines.append(f"  {d.name:6} {d.model_source or d.model_ref:28} {d.state:10} {d.traffic:3d}%"
                     + (f"  restarts={d.restarts}" if d.restarts else "")
                     + (f"  {d.provisioning_state}" if d.provisioning_state not in ("", "Succeeded") else "")
                     + (f"  {d.instance_count or ''}×{d.instance_type}" if d.instance_type else ""))
        if d.last_error and d.state in ("failed", "unhealthy", "starting"):
            lines.append(f"         why: {d.last_error}")
    return "\n".join(lines)


def plan_text(plan: Plan) -> str:
    lines = [f"{plan.title} (dry run: nothing changes)"]
    lines += [f"  - {line}" for line in plan.changes]
    if plan.steps:
        lines.append("  steps: " + " → ".join(plan.steps))
    lines += [f"  warning: {w}" for w in plan.warnings]
    if plan.refused:
        lines.append(f"  refused now: {plan.refused}")
    return "\n".join(lines)


def show_plan(args, plan: Plan) -> int:
    """``--dry-run``: the plan on stdout; exit 2 (the reason on stderr) when it would be refused."""
    emit(args, plan, plan_text(plan))
    if plan.refused:
        print(f"error: {plan.refused}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def steps_to_stderr(step) -> None:
    """Progress of a long operation, one line per step as it starts, changes and ends."""
    print(step_text(step), file=sys.stderr, flush=True)


# --- commands -----------------------------------------------------------------------

def cmd_up(ws, args) -> int:
    pid = ws.endpoints.up(args.actor)
    ws.endpoints.wait_gateways()
    emit(args, {"supervisor_pid": pid, "endpoints": [endpoint_data(e) for e in ws.endpoints.list()]},
         f"endpoints up (supervisor pid {pid})\n" + "\n".join(endpoint_text(e) for e in ws.endpoints.list()))
    return EXIT_OK


def cmd_down(ws, args) -> int:
    stopped = ws.endpoints.down(args.actor)
    emit(args, {"stopped": stopped}, "endpoints stopped" if stopped else "endpoints were not running")
    return EXIT_OK


def cmd_endpoint(ws, args) -> int:
    ep = ws.endpoints.get(args.env)
    keys = ws.endpoints.keys(args.env, args.actor) if args.show_keys else None
    masked = (ep.primary_key_masked, ep.secondary_key_masked) if ep.primary_key_masked else \
        ws.endpoints.masked_keys(args.env) or ("", "")
    text = endpoint_text(ep) + (f"\n  primary key   {keys[0]}\n  secondary key {keys[1]}" if keys else
                                f"\n  keys {masked[0]} / {masked[1]} (--show-keys for full)" if ep.auth_mode == "key"
                                else f"\n  auth {ep.auth_mode}: callers send a token, no keys")
    data = endpoint_data(ep, keys)
    if not keys:
        data["primary_key"], data["secondary_key"] = masked
    emit(args, data, text)
    return EXIT_OK


def cmd_deploy(ws, args) -> int:
    with junit.report(args.junit, "deploy") as suite:
        if args.dry_run:
            plan = ws.releases.plan_deploy(args.model, args.version, args.env)
            junit.plan_case(suite, plan)
            return show_plan(args, plan)
        to_report = junit.step_listener(suite)

        def progress(step) -> None:
            steps_to_stderr(step)
            to_report(step)
        ep = ws.releases.deploy(args.model, args.version, args.env, args.actor, progress=progress)
    state = ws.releases.state(args.model, args.version)
    emit(args, {"endpoint": endpoint_data(ep), "stage": state.stage},
         endpoint_text(ep) + f"\n{state.ref}: {stage_words(state.stage)}")
    return EXIT_OK


def cmd_smoke_test(ws, args) -> int:
    with junit.report(args.junit, "smoke-test") as suite:
        result = ws.releases.smoke_test(args.env, args.actor, deployment=args.deployment)
        junit.smoke_cases(suite, result)
    lines = [f"smoke test of {result.model_name}:{result.model_version} on {result.endpoint}/"
             f"{result.deployment}: {'PASS' if result.passed else 'FAIL'} ({result.summary})"]
    lines += [f"  {'ok ' if c.passed else 'BAD'} {c.name}: {c.detail}" for c in result.cases]
    if result.latency is not None:
        lines.append(f"  latency: {result.latency.reason}")
    emit(args, result, "\n".join(lines))
    return EXIT_OK if result.passed else EXIT_NO


def cmd_approve(ws, args) -> int:
    state = ws.releases.approve(args.model, args.version, args.actor, args.comment or "")
    emit(args, state, f"{state.ref}: approved by {state.decided_by}")
    return EXIT_OK


def cmd_reject(ws, args) -> int:
    state = ws.releases.reject(args.model, args.version, args.actor, args.comment or "")
    emit(args, state, f"{state.ref}: rejected by {state.decided_by}: {state.decision_comment}")
    return EXIT_OK


def cmd_promote(ws, args) -> int:
    if args.dry_run:
        return show_plan(args, ws.releases.plan_promote(args.model, args.version, strategy=args.strategy))
    ep = ws.releases.promote(args.model, args.version, args.actor, args.comment or "", strategy=args.strategy,
                             progress=steps_to_stderr)
    emit(args, endpoint_data(ep), endpoint_text(ep))
    return EXIT_OK


def cmd_rollback(ws, args) -> int:
    if args.dry_run:
        return show_plan(args, ws.releases.plan_rollback(args.env))
    ep = ws.releases.rollback(args.env, args.actor, args.comment or "", progress=steps_to_stderr)
    emit(args, endpoint_data(ep), endpoint_text(ep))
    return EXIT_OK


def parse_split(items: list[str]) -> dict[str, int]:
    split = {}
    for item in items:
        name, sep, pct = item.partition("=")
        if not sep or not name.strip() or not pct.strip().isdigit():
            raise InvalidInput(f"expected DEPLOYMENT=PERCENT, got {item!r}", hint="e.g. tollgate.py traffic "
                                                                                  "--env staging blue=90 green=10")
        split[name.strip()] = int(pct)
    return split


def cmd_traffic(ws, args) -> int:
    split = parse_split(args.split)
    if args.dry_run:
        return show_plan(args, ws.releases.plan_traffic(args.env, split))
    ep = ws.releases.set_traffic(args.env, split, args.actor, args.comment or "", progress=steps_to_stderr)
    emit(args, endpoint_data(ep), endpoint_text(ep))
    return EXIT_OK


def cmd_audit(ws, args) -> int:
    records = ws.releases.audit(args.limit)
    if args.csv:
        write_csv(sys.stdout, ["id", "at", "actor", "role", "action", "target", "before", "after", "comment"],
                  ([r.id, r.at.isoformat(), r.actor, r.role, r.action, r.target,
                    json.dumps(r.before) if r.before is not None else "",
                    json.dumps(r.after) if r.after is not None else "", r.comment] for r in records))
        return EXIT_OK
    rows = [{"at": r.at, "actor": r.actor, "role": r.role, "action": r.action, "target": r.target,
             "comment": r.comment or None} for r in records]
    emit(args, records, table(rows, ["at", "actor", "role", "action", "target", "comment"]))
    return EXIT_OK


__all__ = ["register", "endpoint_data", "endpoint_text", "plan_text", "show_plan", "steps_to_stderr"]
