"""Local online endpoints and the release workflow.

The database holds what should run (endpoints, deployments, traffic, keys); the
supervisor (``services.local.supervisor``) makes it so; the gateways route by
it. The operations here are what QA and ML leads do: deploy blue/green, smoke
test, approve, reject, promote, roll back, change traffic, rotate keys — each
checked by ``services.release_rules`` and recorded in the audit trail.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..entities import (Deployment, Endpoint, ReleaseState, ScoreResult, SmokeCase, SmokeTestResult, Stage)
from ..errors import BackendUnavailable, Conflict, GateFailed, InvalidInput, NotFound
from ..evaluation import evaluation_split, predict
from .. import canary as cn
from .. import release_rules as rules
from . import audit
from .outbox import emit
from .db import Database, parse_ts, utcnow
from .processes import pid_alive, running_pid, stop_process
from .supervisor import PROJECT_ROOT, console_log_path, gateway_log_path

COLORS = ("blue", "green")
OP_STALE_S = 15 * 60
CANARY_OPS = ("canary", "canary.step", "canary.abort")  # the only operations allowed during a rollout


class _Stale(Exception):
    """The rollout moved on since it was read (another tick, a pause): nothing to apply."""


def mask(key: str) -> str:
    return f"{key[:4]}…{key[-4:]}" if len(key) > 12 else "…"


def new_key() -> str:
    return secrets.token_urlsafe(32)


def tail_text(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines else text


class LocalEndpoints:
    """Endpoints, deployments, keys, scoring (the EndpointService of the local workspace)."""

    def __init__(self, db: Database, root: Path, policy, models, datasets):
        self.db, self.root, self.policy = db, Path(root), policy
        self.models, self.datasets = models, datasets

    # --- supervisor -----------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        return running_pid(self.root, "supervisor")  # this workspace's, never a copied folder's original

    def up(self) -> int:
        """Start the supervisor if it is not running; returns its pid."""
        pid = self.supervisor_pid()
        if pid:
            return pid
        self.ensure_endpoints()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "supervisor.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.local.supervisor", "--workspace", str(self.root)],
                                    cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pid = self.supervisor_pid()
            if pid:
                return pid
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BackendUnavailable("the endpoint supervisor did not start",
                                 hint=f"See {logs / 'supervisor.log'}.")

    def down(self, timeout_s: float = 30) -> bool:
        """Stop the supervisor, which stops every gateway and deployment. False if none ran."""
        pid = self.supervisor_pid()
        if not pid:
            return False
        stop_process(pid, timeout_s)
        return True

    def wait_gateways(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        for ep in self.db.query("SELECT name FROM endpoints"):
            while True:
                row = self.db.one("SELECT port, gateway_pid FROM endpoints WHERE name = ?", (ep["name"],))
                if row["port"] and pid_alive(row["gateway_pid"]) and _http_ok(row["port"]):
                    break
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"the gateway of {ep['name']} did not come up",
                                             hint=f"See {gateway_log_path(self.root, ep['name'])}.")
                time.sleep(0.1)

    # --- reads ----------------------------------------------------------------

    def names(self) -> list[str]:
        return [self.policy.endpoints.staging, self.policy.endpoints.production]

    def ensure_endpoints(self) -> None:
        with self.db.write() as c:
            for name in self.names():
                c.execute("INSERT OR IGNORE INTO endpoints (name, primary_key, secondary_key, created_at)"
                          " VALUES (?, ?, ?, ?)", (name, new_key(), new_key(), utcnow()))

    def _row(self, name: str):
        row = self.db.one("SELECT * FROM endpoints WHERE name = ?", (name,))
        if row is None:
            if name in self.names():
                self.ensure_endpoints()
                return self.db.one("SELECT * FROM endpoints WHERE name = ?", (name,))
            raise NotFound(f"endpoint {name!r} does not exist", hint=f"Endpoints: {', '.join(self.names())}.")
        return row

    def _deployments(self, name: str) -> list[Deployment]:
        rows = self.db.query("SELECT * FROM deployments WHERE endpoint = ? ORDER BY name", (name,))
        return [Deployment(r["name"], r["endpoint"], r["model_name"], r["model_version"],
                           r["state"] if r["desired"] == "running" else "stopped", r["traffic"],
                           parse_ts(r["created_at"]), r["created_by"], r["restarts"], r["last_error"])
                for r in rows]

    def get(self, name: str) -> Endpoint:
        row = self._row(name)
        port = row["port"]
        return Endpoint(
            name=name, scoring_uri=f"http://127.0.0.1:{port}/score" if port else "",
            deployments=tuple(self._deployments(name)), primary_key_masked=mask(row["primary_key"]),
            secondary_key_masked=mask(row["secondary_key"]), gateway_up=pid_alive(row["gateway_pid"]))

    def list(self) -> list[Endpoint]:
        return [self.get(n) for n in self.names()]

    def keys(self, name: str, actor: str) -> tuple[str, str]:
        """Both keys in full (QA and admins)."""
        rules.authorize(self.policy, actor, "show_keys")
        row = self._row(name)
        return row["primary_key"], row["secondary_key"]

    def console_log(self, endpoint: str, deployment: str, tail: int = 200) -> str:
        return tail_text(console_log_path(self.root, endpoint, deployment), tail)

    def gateway_log(self, endpoint: str, tail: int = 200) -> str:
        return tail_text(gateway_log_path(self.root, endpoint), tail)

    # --- scoring --------------------------------------------------------------

    def invoke(self, name: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
               key: str | None = None, timeout_s: float = 30) -> ScoreResult:
        """POST to the endpoint's scoring URI as a client would (with the primary key)."""
        row = self._row(name)
        if not row["port"] or not pid_alive(row["gateway_pid"]):
            raise BackendUnavailable(f"endpoint {name} is not running",
                                     hint="Start the endpoints: python tollgate.py up (make run does it).")
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {key if key is not None else row['primary_key']}",
                   "x-request-id": str(uuid.uuid4())}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        req = urllib.request.Request(f"http://127.0.0.1:{row['port']}/score",
                                     data=body.encode() if isinstance(body, str) else body,
                                     headers=headers, method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status, raw, h = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, h = e.code, e.read(), e.headers
        except OSError as e:
            raise BackendUnavailable(f"endpoint {name} did not answer: {e}") from e
        latency = (time.perf_counter() - started) * 1000
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return ScoreResult(status, parsed, latency, h.get("x-request-id"), h.get("azureml-model-deployment"),
                           h.get("x-tollgate-model"))


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class LocalReleases:
    """The release workflow on local endpoints (the ReleaseService of the local workspace)."""

    def __init__(self, db: Database, root: Path, policy, models, datasets, endpoints: LocalEndpoints, evaluation):
        self.db, self.root, self.policy = db, Path(root), policy
        self.models, self.datasets, self.endpoints, self.evaluation = models, datasets, endpoints, evaluation

    # --- reads ----------------------------------------------------------------

    def state(self, name: str, version: int) -> ReleaseState:
        mv = self.models.get(name, version)  # NotFound for unknown versions
        row = self.db.one("SELECT * FROM releases WHERE model_name = ? AND model_version = ?", (name, mv.version))
        if row is None:
            return ReleaseState(name, mv.version, Stage.REGISTERED)
        return ReleaseState(name, mv.version, Stage(row["stage"]), row["deployed_by"], row["decided_by"],
                            row["decision_comment"], row["smoke_test_id"], parse_ts(row["updated_at"]))

    def states(self, name: str | None = None) -> list[ReleaseState]:
        """Release state of every version that left the registry, newest first."""
        rows = self.db.query("SELECT * FROM releases" + (" WHERE model_name = ?" if name else "")
                             + " ORDER BY updated_at DESC", (name,) if name else ())
        return [ReleaseState(r["model_name"], r["model_version"], Stage(r["stage"]), r["deployed_by"],
                             r["decided_by"], r["decision_comment"], r["smoke_test_id"], parse_ts(r["updated_at"]))
                for r in rows]

    def smoke_test_result(self, test_id: int) -> SmokeTestResult:
        r = self.db.one("SELECT * FROM smoke_tests WHERE id = ?", (test_id,))
        if r is None:
            raise NotFound(f"smoke test {test_id} does not exist")
        return _to_smoke(r)

    def smoke_tests(self, limit: int = 50) -> list[SmokeTestResult]:
        return [_to_smoke(r) for r in self.db.query("SELECT * FROM smoke_tests ORDER BY id DESC LIMIT ?", (limit,))]

    def audit(self, limit: int | None = None):
        return audit.LocalAudit(self.db).audit(limit)

    # --- the workflow ---------------------------------------------------------

    def deploy(self, name: str, version: int, env: str, actor: str) -> Endpoint:
        """Blue/green deploy of ``name:version`` to staging: new deployment at 0 %, health probe,
        smoke test through the gateway, then all traffic to it; the previous one stays warm."""
        rules.authorize(self.policy, actor, "deploy")  # before reading anything
        mv = self.models.get(name, version)
        role = rules.check_deploy(self.policy, actor, env, mv, self.endpoints.names())
        state = self.state(name, mv.version)
        smoke = self._blue_green(env, mv, actor, role, "deploy")
        stage = (Stage.PRODUCTION if env == self.policy.endpoints.production
                 else state.stage if state.stage in (Stage.APPROVED, Stage.PRODUCTION) else Stage.AWAITING_APPROVAL)
        event = None
        if stage == Stage.AWAITING_APPROVAL:
            event = dict(event="approval_requested", actor=actor, model=mv.ref, endpoint=env,
                         summary=f"{mv.ref} passed its smoke test in {env} ({smoke.summary}) and awaits an "
                                 f"ML lead's approval", details={"smoke_test": smoke.id, "deployed_by": actor})
        self._set_stage(mv.name, mv.version, stage, actor, role, "release.stage", event=event,
                        deployed_by=actor, smoke_test_id=smoke.id)
        if env == self.policy.endpoints.production:
            self.models.set_alias(mv.name, "champion", mv.version, actor=actor)
        return self.endpoints.get(env)

    def smoke_test(self, env: str, actor: str, deployment: str | None = None) -> SmokeTestResult:
        """Run the smoke test against the endpoint's serving deployment (or ``deployment``)."""
        role = rules.authorize(self.policy, actor, "smoke_test")
        ep = self.endpoints.get(env)
        target = next((d for d in ep.deployments if d.name == deployment), None) if deployment else ep.live
        if target is None:
            raise Conflict(f"endpoint {env} has no deployment {'named ' + deployment if deployment else 'serving traffic'}")
        result = self._run_smoke(env, target.name, self.models.get(target.model_name, target.model_version), actor)
        with self.db.write() as c:
            audit.record(c, actor, "smoke_test", f"{env}/{target.name}", role=role,
                         after={"passed": result.passed, "model": target.model_ref, "summary": result.summary})
        return result

    def approve(self, name: str, version: int, actor: str, comment: str = "") -> ReleaseState:
        role = rules.authorize(self.policy, actor, "approve")
        state = self.state(name, version)
        rules.check_approve(state, actor)
        gate = self.evaluation.gate(name, state.model_version)
        if not gate.passed:
            raise GateFailed(f"{state.ref} does not pass the quality gate: " + "; ".join(gate.reasons))
        return self._set_stage(name, state.model_version, Stage.APPROVED, actor, role, "approve",
                               decided_by=actor, decision_comment=comment)

    def reject(self, name: str, version: int, actor: str, comment: str) -> ReleaseState:
        role = rules.authorize(self.policy, actor, "reject")
        state = self.state(name, version)
        rules.check_reject(state, comment)
        return self._set_stage(name, state.model_version, Stage.REJECTED, actor, role, "reject",
                               decided_by=actor, decision_comment=comment)

    def promote(self, name: str, version: int, actor: str, comment: str = "", strategy: str | None = None) -> Endpoint:
        """Blue/green to production of an approved version; the previous one stays warm.
        ``strategy="canary"`` (or ``[canary] strategy``) starts a canary rollout instead
        (``start_canary``) and returns at its first step."""
        strategy = strategy or self.policy.canary.strategy
        if strategy == "canary":
            self.start_canary(name, version, actor, comment)
            return self.endpoints.get(self.policy.endpoints.production)
        if strategy != "blue_green":
            raise InvalidInput(f"unknown promote strategy {strategy!r}", hint="Use 'blue_green' or 'canary'.")
        role = rules.authorize(self.policy, actor, "promote")
        state = self.state(name, version)
        prod = self.policy.endpoints.production
        if state.stage == Stage.PRODUCTION and (self.endpoints.get(prod).live or None) and \
                self.endpoints.get(prod).live.model_ref == state.ref:
            return self.endpoints.get(prod)  # idempotent: already serving
        smoke = self.smoke_test_result(state.smoke_test_id) if state.smoke_test_id else None
        gate = self.evaluation.gate(name, state.model_version)
        rules.check_promote(state, smoke, gate.passed, gate.reasons)
        mv = self.models.get(name, state.model_version)
        previous = self.endpoints.get(prod).live
        self._blue_green(prod, mv, actor, role, "promote", comment)
        self.models.set_alias(name, "champion", mv.version, actor=actor)
        self._set_stage(name, mv.version, Stage.PRODUCTION, actor, role, "release.stage", event=dict(
            event="promoted", actor=actor, model=mv.ref, endpoint=prod,
            summary=f"{mv.ref} serves {prod} (blue/green)" + (f", replacing {previous.model_ref}" if previous else "")
                    + (f": {comment}" if comment else ""),
            details={"previous": previous.model_ref if previous else None, "strategy": "blue_green",
                     "comment": comment}))
        if previous and previous.model_ref != mv.ref:
            self._set_stage(previous.model_name, previous.model_version, Stage.RETIRED, actor, role, "release.stage")
        return self.endpoints.get(prod)

    def rollback(self, env: str, actor: str, comment: str = "") -> Endpoint:
        """Give the traffic back to the warm previous deployment. During a canary rollout this
        aborts the rollout (all traffic back to the stable version)."""
        role = rules.authorize(self.policy, actor, "rollback")
        if self._active_rollout(env) is not None:
            self.abort_canary(env, actor, comment or "rolled back during the canary")
            return self.endpoints.get(env)
        with self._operation(env, actor, "rollback"):
            ep = self.endpoints.get(env)
            live = ep.live
            warm = [d for d in ep.deployments if d is not live and d.state == "healthy" and d.traffic == 0]
            if live is None or not warm:
                raise Conflict(f"endpoint {env} has no previous deployment to roll back to",
                               hint="Rollback needs a warm previous deployment (kept after each promote).")
            back = warm[0]
            self._shift(env, {back.name: 100, live.name: 0}, actor, role, "rollback", comment)
        if env == self.policy.endpoints.production:
            self.models.set_alias(back.model_name, "champion", back.model_version, actor=actor)
            self._set_stage(live.model_name, live.model_version, Stage.ROLLED_BACK, actor, role, "release.stage",
                            event=dict(event="rolled_back", actor=actor, model=live.model_ref, endpoint=env,
                                       summary=f"{env} rolled back from {live.model_ref} to {back.model_ref}"
                                               + (f": {comment}" if comment else ""),
                                       details={"automatic": False, "from": live.model_ref, "to": back.model_ref,
                                                "comment": comment, "reasons": [comment] if comment else []}))
            self._set_stage(back.model_name, back.model_version, Stage.PRODUCTION, actor, role, "release.stage")
        return self.endpoints.get(env)

    def set_traffic(self, env: str, traffic: Mapping[str, int], actor: str, comment: str = "") -> Endpoint:
        role = rules.authorize(self.policy, actor, "set_traffic")
        rules.check_traffic(self.endpoints.get(env), traffic)
        with self._operation(env, actor, "set_traffic"):
            self._shift(env, dict(traffic), actor, role, "traffic", comment)
        return self.endpoints.get(env)

    def regenerate_key(self, env: str, which: str, actor: str) -> Endpoint:
        role = rules.authorize(self.policy, actor, "regenerate_key")
        if which not in ("primary", "secondary"):
            raise InvalidInput("which key: 'primary' or 'secondary'")
        self.endpoints._row(env)
        with self.db.write() as c:
            c.execute(f"UPDATE endpoints SET {which}_key = ?, config_version = config_version + 1 WHERE name = ?",
                      (new_key(), env))
            audit.record(c, actor, "key.regenerate", f"{env}/{which}", role=role)
        self._wait_gateway_config(env)  # once this returns, the old key is refused
        return self.endpoints.get(env)

    # --- canary ---------------------------------------------------------------

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[cn.Rollout]:
        """Canary rollouts, newest first (``active``: running or paused only)."""
        where, params = [], []
        if env:
            where.append("endpoint = ?")
            params.append(env)
        if active:
            where.append("state IN ('running', 'paused')")
        sql = "SELECT * FROM rollouts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_to_rollout(r) for r in self.db.query(sql, (*params, limit))]

    def rollout(self, env: str | None = None) -> cn.Rollout | None:
        """The active rollout of ``env`` (production by default), else its latest one, else None."""
        env = env or self.policy.endpoints.production
        return self._active_rollout(env) or next(iter(self.rollouts(env, limit=1)), None)

    def _active_rollout(self, env: str) -> cn.Rollout | None:
        return next(iter(self.rollouts(env, active=True, limit=1)), None)

    def _rollout_by_id(self, rollout_id: int) -> cn.Rollout:
        return _to_rollout(self.db.one("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)))

    def start_canary(self, name: str, version: int, actor: str, comment: str = "") -> cn.Rollout:
        """Promote an approved version to production in steps (``[canary]``): deploy it beside the
        stable version (health probe, smoke test pinned to it), then give it the first step's
        share of traffic. The supervisor judges and advances each step (``canary.advance_rollouts``)."""
        role = rules.authorize(self.policy, actor, "promote")
        prod = self.policy.endpoints.production
        state = self.state(name, version)
        active = self._active_rollout(prod)
        if active is not None:
            raise Conflict(f"a canary rollout of {active.model_ref} is already {active.state} on {prod}",
                           hint=f"python tollgate.py canary status --env {prod}")
        smoke = self.smoke_test_result(state.smoke_test_id) if state.smoke_test_id else None
        gate = self.evaluation.gate(name, state.model_version)
        rules.check_promote(state, smoke, gate.passed, gate.reasons)
        mv = self.models.get(name, state.model_version)
        cfg = self.policy.canary
        with self._operation(prod, actor, "canary"):
            self.endpoints.up()
            ep = self.endpoints.get(prod)
            stable = ep.live
            if stable is None or stable.state != "healthy":
                raise Conflict(f"a canary needs a healthy version serving {prod} to compare with",
                               hint="Promote the first version blue/green (promote --strategy blue_green).")
            if stable.model_ref == mv.ref:
                raise Conflict(f"{mv.ref} already serves {prod}")
            colour = next(c for c in COLORS if c != stable.name)
            self._replace_deployment(prod, colour, mv, actor)
            with self.db.write() as c:
                audit.record(c, actor, "canary.deploy", f"{prod}/{colour}", role=role, comment=comment,
                             before={"traffic": ep.traffic},
                             after={"deployment": colour, "model": mv.ref, "traffic": 0, "steps": list(cfg.steps)})
            self._wait_healthy(prod, colour)
            smoke = self._run_smoke(prod, colour, mv, actor)
            if not smoke.passed:
                self._stop_deployment(prod, colour)
                with self.db.write() as c:
                    audit.record(c, actor, "canary.failed", f"{prod}/{colour}", role=role,
                                 after={"model": mv.ref, "smoke_test": smoke.id, "summary": smoke.summary})
                raise GateFailed(f"smoke test of {mv.ref} on {prod}/{colour} failed: {smoke.summary}; "
                                 f"traffic unchanged", hint=_failed_cases(smoke))
            first, now = cfg.steps[0], utcnow()
            info: dict[str, Any] = {"model": mv.ref, "stable": stable.model_ref, "steps": list(cfg.steps)}

            def also(c):
                info["rollout"] = c.execute(
                    "INSERT INTO rollouts (endpoint, model_name, model_version, canary_deployment, stable_deployment,"
                    " stable_model, steps_json, policy_json, step_index, state, started_at, started_by,"
                    " step_started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 'running', ?, ?, ?, ?)",
                    (prod, mv.name, mv.version, colour, stable.name, stable.model_ref, json.dumps(list(cfg.steps)),
                     cn.rules_to_json(cfg, self.policy.health.max_p95_ms), now, actor, now, now)).lastrowid
                emit(c, "canary_step", actor=actor, model=mv.ref, endpoint=prod,
                     summary=f"canary of {mv.ref} on {prod} started: {first} % of traffic (step 1 of "
                             f"{len(cfg.steps)}), {stable.model_ref} serves the rest",
                     details={"step": 1, "steps": list(cfg.steps), "traffic": first, "stable": stable.model_ref,
                              "step_seconds": cfg.step_seconds, "comment": comment})
            self._shift(prod, {colour: first, stable.name: 100 - first}, actor, role, "canary.started", comment,
                        also=also, after=info)
        return self._rollout_by_id(info["rollout"])

    def pause_canary(self, env: str, actor: str, comment: str = "") -> cn.Rollout:
        """Hold the rollout at its current step (traffic unchanged) until resumed or aborted."""
        role = rules.authorize(self.policy, actor, "promote")
        r = self._require_rollout(env)
        if r.state == cn.PAUSED:
            return r
        reason = f"paused by {actor}" + (f": {comment}" if comment else "")
        self._pause(r, actor, role, reason, comment, r.step_index)
        return self._rollout_by_id(r.id)

    def resume_canary(self, env: str, actor: str, comment: str = "") -> cn.Rollout:
        """Continue a paused rollout. The current step is judged afresh from now (the window
        before the pause is not used: the decision to continue is made on new traffic)."""
        role = rules.authorize(self.policy, actor, "promote")
        r = self._require_rollout(env)
        if r.state == cn.RUNNING:
            return r
        now = utcnow()
        with self.db.write() as c:
            if c.execute("UPDATE rollouts SET state = 'running', step_started_at = ?, updated_at = ?, reason = ''"
                         " WHERE id = ? AND state = 'paused'", (now, now, r.id)).rowcount != 1:
                raise Conflict("the rollout changed meanwhile", hint="Look at its state again.")
            audit.record(c, actor, "canary.resumed", f"{env}/{r.canary_deployment}", role=role, comment=comment,
                         before={"state": r.state, "reason": r.reason},
                         after={"state": cn.RUNNING, "model": r.model_ref, "step": r.step_index + 1,
                                "traffic": r.traffic})
            emit(c, "canary_step", actor=actor, model=r.model_ref, endpoint=env,
                 summary=f"canary of {r.model_ref} on {env} resumed by {actor} at {r.step_label}"
                         + (f": {comment}" if comment else ""),
                 details={"step": r.step_index + 1, "traffic": r.traffic, "resumed": True, "comment": comment})
        return self._rollout_by_id(r.id)

    def abort_canary(self, env: str, actor: str, comment: str = "") -> cn.Rollout:
        """End the rollout now: all traffic back to the stable version, the candidate stopped and
        marked rolled back."""
        role = rules.authorize(self.policy, actor, "rollback")
        reason = f"aborted by {actor}" + (f": {comment}" if comment else "")
        deadline = time.monotonic() + 10  # a supervisor tick may be shifting this rollout's traffic right now
        while True:
            r = self._require_rollout(env)  # Conflict once it has ended (e.g. rolled back meanwhile)
            try:
                self._end_canary(r, cn.ABORTED, actor, role, reason, [reason], None, comment=comment)
                return self._rollout_by_id(r.id)
            except _Stale:
                continue
            except Conflict:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def apply_canary(self, rollout: cn.Rollout, decision: cn.Decision, now) -> cn.Rollout | None:
        """Apply the supervisor's decision on a running rollout (``canary.advance_rollouts``). Only if
        the rollout is still running at the step judged; None if it moved on meanwhile."""
        r, a = rollout, decision.analysis
        try:
            if decision.action == cn.NEXT:
                self._canary_next(r, a, now)
            elif decision.action == cn.COMPLETE:
                self._canary_complete(r, a, now)
            elif decision.action == cn.ROLLBACK:
                reasons = list(a.reasons) if a is not None and a.verdict == cn.FAIL else [decision.reason]
                self._end_canary(r, cn.ROLLED_BACK, rules.SYSTEM_ACTOR, "system",
                                 "automatic rollback: " + "; ".join(reasons), reasons, a, expect_step=r.step_index)
            elif decision.action == cn.PAUSE:
                self._pause(r, rules.SYSTEM_ACTOR, "system", decision.reason, "", r.step_index, a)
            else:
                return None
        except _Stale:
            return None
        return self._rollout_by_id(r.id)

    def _require_rollout(self, env: str) -> cn.Rollout:
        r = self._active_rollout(env)
        if r is None:
            raise Conflict(f"no canary rollout is running on {env}",
                           hint="Start one: python tollgate.py canary start --model NAME --version N.")
        return r

    def _pause(self, r: cn.Rollout, actor: str, role: str, reason: str, comment: str, step: int,
               analysis: cn.Analysis | None = None) -> None:
        now = utcnow()
        with self.db.write() as c:
            if c.execute("UPDATE rollouts SET state = 'paused', reason = ?, updated_at = ?,"
                         " analysis_json = COALESCE(?, analysis_json) WHERE id = ? AND state = 'running'"
                         " AND step_index = ?", (reason, now, json.dumps(analysis.to_dict()) if analysis else None,
                                                 r.id, step)).rowcount != 1:
                raise _Stale() if actor == rules.SYSTEM_ACTOR else \
                    Conflict("the rollout changed meanwhile", hint="Look at its state again.")
            audit.record(c, actor, "canary.paused", f"{r.endpoint}/{r.canary_deployment}", role=role, comment=comment,
                         before={"state": r.state}, after={"state": cn.PAUSED, "model": r.model_ref, "reason": reason,
                                                          "step": r.step_index + 1, "traffic": r.traffic})
            emit(c, "canary_paused", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                 summary=f"canary of {r.model_ref} on {r.endpoint} paused at {r.step_label}: {reason}",
                 details={"step": r.step_index + 1, "traffic": r.traffic, "reasons": [reason],
                          "analysis": analysis.to_dict() if analysis else None})

    def _canary_next(self, r: cn.Rollout, a: cn.Analysis, now) -> None:
        idx = r.step_index + 1
        share = r.steps[idx]
        at = now.isoformat()
        history = json.dumps([h.to_dict() for h in r.history] + [a.to_dict()])

        def also(c):
            if c.execute("UPDATE rollouts SET step_index = ?, step_started_at = ?, updated_at = ?, analysis_json = ?,"
                         " history_json = ?, reason = '' WHERE id = ? AND state = 'running' AND step_index = ?",
                         (idx, at, at, json.dumps(a.to_dict()), history, r.id, r.step_index)).rowcount != 1:
                raise _Stale()
            emit(c, "canary_step", actor=rules.SYSTEM_ACTOR, model=r.model_ref, endpoint=r.endpoint,
                 summary=f"canary of {r.model_ref} on {r.endpoint} passed {r.step_label}: {a.summary}; "
                         f"now {share} % of traffic (step {idx + 1} of {len(r.steps)})",
                 details={"step": idx + 1, "steps": list(r.steps), "traffic": share, "analysis": a.to_dict(),
                          "reasons": list(a.reasons)})
        with self._operation(r.endpoint, rules.SYSTEM_ACTOR, "canary.step"):
            self._shift(r.endpoint, {r.canary_deployment: share, r.stable_deployment: 100 - share},
                        rules.SYSTEM_ACTOR, "system", "canary.step", a.summary, also=also,
                        after={"rollout": r.id, "model": r.model_ref, "step": idx + 1, "analysis": a.to_dict()})

    def _canary_complete(self, r: cn.Rollout, a: cn.Analysis, now) -> None:
        at = now.isoformat()
        history = json.dumps([h.to_dict() for h in r.history] + [a.to_dict()])
        system = rules.SYSTEM_ACTOR
        stable_name, stable_version = r.stable_model.rsplit(":", 1)

        def also(c):
            if c.execute("UPDATE rollouts SET state = 'succeeded', ended_at = ?, updated_at = ?, analysis_json = ?,"
                         " history_json = ?, reason = ? WHERE id = ? AND state = 'running' AND step_index = ?",
                         (at, at, json.dumps(a.to_dict()), history, a.summary, r.id, r.step_index)).rowcount != 1:
                raise _Stale()
            self._stage_in(c, r.model_name, r.model_version, Stage.PRODUCTION, system, "system")
            if r.stable_model != r.model_ref:
                self._stage_in(c, stable_name, int(stable_version), Stage.RETIRED, system, "system")
            emit(c, "promoted", actor=r.started_by, model=r.model_ref, endpoint=r.endpoint,
                 summary=f"{r.model_ref} serves {r.endpoint} after a canary of {len(r.steps)} steps "
                         f"({' → '.join(f'{s} %' for s in r.steps)}), replacing {r.stable_model}: {a.summary}",
                 details={"previous": r.stable_model, "strategy": "canary", "rollout": r.id,
                          "reasons": list(a.reasons), "analysis": a.to_dict()})
        with self._operation(r.endpoint, system, "canary.step"):
            self._shift(r.endpoint, {r.canary_deployment: 100, r.stable_deployment: 0}, system, "system",
                        "canary.succeeded", a.summary, also=also,
                        after={"rollout": r.id, "model": r.model_ref, "analysis": a.to_dict()})
        self.models.set_alias(r.model_name, "champion", r.model_version, actor=system)

    def _end_canary(self, r: cn.Rollout, state: str, actor: str, role: str, reason: str, reasons: list[str],
                    a: cn.Analysis | None, expect_step: int | None = None, comment: str = "") -> None:
        """Rolled back (automatic) or aborted (by a person): stable 100 %, candidate stopped."""
        at = utcnow()
        automatic = state == cn.ROLLED_BACK
        # an automatic decision applies only to the running step it judged (not after a pause)
        step_clause = " AND state = 'running' AND step_index = ?" if expect_step is not None else ""

        def also(c):
            params = (state, at, at, reason, json.dumps(a.to_dict()) if a else None, r.id)
            if c.execute("UPDATE rollouts SET state = ?, ended_at = ?, updated_at = ?, reason = ?,"
                         " analysis_json = COALESCE(?, analysis_json) WHERE id = ? AND state IN ('running', 'paused')"
                         + step_clause, params + ((expect_step,) if expect_step is not None else ())).rowcount != 1:
                raise _Stale()
            c.execute("UPDATE deployments SET desired = 'stopped' WHERE endpoint = ? AND name = ?",
                      (r.endpoint, r.canary_deployment))
            self._stage_in(c, r.model_name, r.model_version, Stage.ROLLED_BACK, actor, role, comment=reason)
            if automatic:
                emit(c, "rolled_back", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                     summary=f"canary of {r.model_ref} on {r.endpoint} rolled back automatically at "
                             f"{r.step_label}: {'; '.join(reasons)}; {r.stable_model} serves all traffic",
                     details={"automatic": True, "from": r.model_ref, "to": r.stable_model, "rollout": r.id,
                              "step": r.step_index + 1, "reasons": reasons,
                              "analysis": a.to_dict() if a else None})
            else:
                emit(c, "canary_aborted", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                     summary=f"canary of {r.model_ref} on {r.endpoint} aborted at {r.step_label} by {actor}"
                             + (f": {comment}" if comment else "") + f"; {r.stable_model} serves all traffic",
                     details={"automatic": False, "from": r.model_ref, "to": r.stable_model, "rollout": r.id,
                              "step": r.step_index + 1, "reasons": reasons})
        with self._operation(r.endpoint, actor, "canary.abort"):
            self._shift(r.endpoint, {r.stable_deployment: 100, r.canary_deployment: 0}, actor, role,
                        f"canary.{state}", "; ".join(reasons), also=also,
                        after={"rollout": r.id, "model": r.model_ref, "stable": r.stable_model,
                               "step": r.step_index + 1, "reasons": reasons,
                               **({"analysis": a.to_dict()} if a else {})})

    # --- mechanics ------------------------------------------------------------

    @contextmanager
    def _operation(self, env: str, actor: str, op: str) -> Iterator[None]:
        """One long-running operation per endpoint at a time (a second one is refused, not queued)."""
        self.endpoints.ensure_endpoints()
        now = time.time()
        with self.db.write() as c:
            row = c.execute("SELECT busy_op, busy_since, busy_by FROM endpoint_ops WHERE endpoint = ?", (env,)).fetchone()
            if row and row["busy_op"] and now - row["busy_since"] < OP_STALE_S:
                raise Conflict(f"{row['busy_by']} is already running '{row['busy_op']}' on {env}",
                               hint="Wait for it to finish; the console shows its progress.")
            if op not in CANARY_OPS:
                active = c.execute("SELECT model_name, model_version, state FROM rollouts WHERE endpoint = ?"
                                   " AND state IN ('running', 'paused')", (env,)).fetchone()
                if active:
                    raise Conflict(f"a canary rollout of {active['model_name']}:{active['model_version']} is "
                                   f"{active['state']} on {env}; '{op}' must wait until it ends",
                                   hint=f"python tollgate.py canary status --env {env} (abort ends it at once).")
            c.execute("INSERT INTO endpoint_ops (endpoint, busy_op, busy_since, busy_by) VALUES (?, ?, ?, ?)"
                      " ON CONFLICT(endpoint) DO UPDATE SET busy_op = excluded.busy_op,"
                      " busy_since = excluded.busy_since, busy_by = excluded.busy_by", (env, op, now, actor))
        try:
            yield
        finally:
            with self.db.write() as c:
                c.execute("UPDATE endpoint_ops SET busy_op = NULL WHERE endpoint = ?", (env,))

    def _blue_green(self, env: str, mv, actor: str, role: str, action: str, comment: str = "") -> SmokeTestResult:
        with self._operation(env, actor, action):
            self.endpoints.up()
            ep = self.endpoints.get(env)
            live = ep.live
            # the new deployment takes the colour that is not serving (the warm one is replaced)
            taken = live.name if live else None
            name = next(c for c in COLORS if c != taken)
            self._replace_deployment(env, name, mv, actor)
            with self.db.write() as c:
                audit.record(c, actor, f"{action}.started", f"{env}/{name}", role=role, comment=comment,
                             before={"traffic": ep.traffic}, after={"deployment": name, "model": mv.ref, "traffic": 0})
            self._wait_healthy(env, name)
            smoke = self._run_smoke(env, name, mv, actor)
            if not smoke.passed:
                self._stop_deployment(env, name)
                with self.db.write() as c:
                    audit.record(c, actor, f"{action}.failed", f"{env}/{name}", role=role,
                                 after={"model": mv.ref, "smoke_test": smoke.id, "summary": smoke.summary})
                raise GateFailed(f"smoke test of {mv.ref} on {env}/{name} failed: {smoke.summary}; "
                                 f"traffic unchanged", hint=_failed_cases(smoke))
            shift = {name: 100, **({live.name: 0} if live else {})}
            self._shift(env, shift, actor, role, action, comment)
            return smoke

    def _replace_deployment(self, env: str, name: str, mv, actor: str) -> None:
        old = self.db.one("SELECT pid FROM deployments WHERE endpoint = ? AND name = ?", (env, name))
        if old is not None:
            with self.db.write() as c:
                c.execute("UPDATE deployments SET desired = 'stopped', traffic = 0 WHERE endpoint = ? AND name = ?",
                          (env, name))
                c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))
            stop_process(old["pid"])  # the supervisor would too; doing it here makes the name free at once
        with self.db.write() as c:
            c.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (env, name))
            c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, desired, state,"
                      " created_at, created_by) VALUES (?, ?, ?, ?, 0, 'running', 'starting', ?, ?)",
                      (env, name, mv.name, mv.version, utcnow(), actor))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))

    def _stop_deployment(self, env: str, name: str) -> None:
        with self.db.write() as c:
            c.execute("UPDATE deployments SET desired = 'stopped', traffic = 0 WHERE endpoint = ? AND name = ?",
                      (env, name))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))

    def _wait_healthy(self, env: str, name: str) -> None:
        deadline = time.monotonic() + self.policy.endpoints.health_timeout_s
        while True:
            row = self.db.one("SELECT state, pid, restarts, last_error FROM deployments WHERE endpoint = ? AND name = ?",
                              (env, name))
            if row["state"] == "healthy":
                return
            if row["state"] == "unhealthy" or row["restarts"] > 0 or time.monotonic() > deadline:
                log = self.endpoints.console_log(env, name, 40)
                self._stop_deployment(env, name)
                raise GateFailed(f"deployment {env}/{name} failed its health probe"
                                 f" ({row['last_error'] or 'did not become healthy in time'}); traffic unchanged",
                                 hint="Its console log:\n" + log)
            time.sleep(0.1)

    def _shift(self, env: str, traffic: Mapping[str, int], actor: str, role: str, action: str, comment: str,
               *, also=None, after: Mapping[str, Any] | None = None) -> None:
        """Change the split (and whatever ``also(conn)`` writes) in one transaction, then wait
        until the gateway routes by it."""
        before = self.endpoints.get(env).traffic
        with self.db.write() as c:
            if also is not None:
                also(c)
            for dep, pct in traffic.items():
                c.execute("UPDATE deployments SET traffic = ? WHERE endpoint = ? AND name = ?", (pct, env, dep))
            c.execute("UPDATE endpoints SET config_version = config_version + 1 WHERE name = ?", (env,))
            audit.record(c, actor, action, env, role=role, before={"traffic": before},
                         after={"traffic": {**before, **traffic}, **(after or {})}, comment=comment)
        self._wait_gateway_routes(env, {**before, **traffic})

    def _wait_gateway_routes(self, env: str, traffic: Mapping[str, int], timeout_s: float = 5) -> None:
        """Return once the gateway routes by the new split (so 'done' means done)."""
        row = self.endpoints._row(env)
        port = row["port"]
        if not port or not pid_alive(row["gateway_pid"]):
            return  # not running: it routes by the current split when it starts
        deadline = time.monotonic() + timeout_s
        want = {k: v for k, v in traffic.items() if v}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    got = {k: v for k, v in json.loads(r.read())["traffic"].items() if v}
                if got == want:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)

    def _wait_gateway_config(self, env: str, timeout_s: float = 5) -> None:
        """Return once a running gateway has loaded the endpoint's current configuration (keys)."""
        row = self.endpoints._row(env)
        if not row["port"] or not pid_alive(row["gateway_pid"]):
            return  # not running: it loads the current keys when it starts
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{row['port']}/", timeout=1) as r:
                    if json.loads(r.read()).get("config_version", -1) >= row["config_version"]:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def _run_smoke(self, env: str, deployment: str, mv, actor: str) -> SmokeTestResult:
        """Named cases from the held-out split through the gateway, pinned to ``deployment``:
        status, response schema, and parity with the registered model's offline predictions."""
        frame = self.datasets.load(mv.dataset, mv.dataset_version)
        X, _ = evaluation_split(frame, self.policy)
        model = self.models.load(mv.name, mv.version)
        features = self.models.features(mv.name, mv.version)
        sample = X.head(self.policy.smoke.cases)
        offline = predict(model, sample, mv.ref)
        cases: list[SmokeCase] = []
        tol = self.policy.smoke.tolerance
        for (idx, row), expected in zip(sample.iterrows(), offline):
            name = f"held-out row {idx}"
            res = self.endpoints.invoke(env, {"data": [[float(row[f]) for f in features]]}, deployment=deployment)
            got = None
            if res.status != 200:
                cases.append(SmokeCase(name, False, res.status, float(expected), None, f"HTTP {res.status}: {res.body}"))
                continue
            preds = res.body.get("predictions") if isinstance(res.body, dict) else None
            if not (isinstance(preds, list) and len(preds) == 1 and isinstance(preds[0], (int, float))):
                cases.append(SmokeCase(name, False, res.status, float(expected), None,
                                       f"response does not match {{'predictions': [number]}}: {res.body!r:.200}"))
                continue
            got = float(preds[0])
            ok = bool(abs(got - expected) <= tol * max(1.0, abs(expected)))
            cases.append(SmokeCase(name, ok, res.status, float(expected), got,
                                   "matches the offline prediction" if ok else
                                   f"differs from the offline prediction by {abs(got - expected):.6g}"))
        bad = self.endpoints.invoke(env, '{"data": [[1, 2, 3]]}', deployment=deployment)
        cases.append(SmokeCase("wrong number of features → 4xx", 400 <= bad.status < 500, bad.status, None, None,
                               f"HTTP {bad.status}: {bad.body}"))
        passed = all(c.passed for c in cases)
        failed = [c for c in cases if not c.passed]
        summary = (f"{len(cases)} cases passed" if passed else f"{len(failed)} of {len(cases)} cases failed")
        with self.db.write() as c:
            cur = c.execute("INSERT INTO smoke_tests (endpoint, deployment, model_name, model_version, at, actor,"
                            " passed, summary, cases_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (env, deployment, mv.name, mv.version, utcnow(), actor, int(passed), summary,
                             json.dumps([c_.__dict__ for c_ in cases])))
            test_id = cur.lastrowid
        return self.smoke_test_result(test_id)

    def _set_stage(self, name: str, version: int, stage: Stage, actor: str, role: str, action: str,
                   event: Mapping[str, Any] | None = None, **fields) -> ReleaseState:
        """Set a version's stage with its audit record and (``event``: ``outbox.emit`` arguments)
        its notification, in one transaction."""
        self.models.get(name, version)  # NotFound for unknown versions
        with self.db.write() as c:
            if event:
                emit(c, **event)
            self._stage_in(c, name, version, stage, actor, role, action, comment=fields.get("decision_comment") or "",
                           **fields)
        return self.state(name, version)

    @staticmethod
    def _stage_in(c, name: str, version: int, stage: Stage, actor: str, role: str, action: str = "release.stage",
                  comment: str = "", **fields) -> None:
        """Upsert a version's release stage and its audit record, in the caller's transaction."""
        row = c.execute("SELECT stage FROM releases WHERE model_name = ? AND model_version = ?",
                        (name, version)).fetchone()
        cols = {"stage": stage.value, "updated_at": utcnow(), **fields}
        c.execute(f"INSERT INTO releases (model_name, model_version, {', '.join(cols)}) VALUES (?, ?, "
                  f"{', '.join('?' * len(cols))}) ON CONFLICT(model_name, model_version) DO UPDATE SET "
                  + ", ".join(f"{k} = excluded.{k}" for k in cols), (name, version, *cols.values()))
        audit.record(c, actor, action, f"{name}:{version}", role=role,
                     before={"stage": row["stage"] if row else Stage.REGISTERED.value},
                     after={"stage": stage.value}, comment=comment)


def _to_smoke(r) -> SmokeTestResult:
    return SmokeTestResult(r["id"], r["endpoint"], r["deployment"], r["model_name"], r["model_version"],
                           parse_ts(r["at"]), r["actor"], bool(r["passed"]), r["summary"],
                           tuple(SmokeCase(**c) for c in json.loads(r["cases_json"])))


def _failed_cases(smoke: SmokeTestResult) -> str:
    return "\n".join(f"{c.name}: {c.detail}" for c in smoke.cases if not c.passed)


def _to_rollout(r) -> cn.Rollout:
    rules_, _ = cn.rules_from_json(r["policy_json"])
    return cn.Rollout(
        id=r["id"], endpoint=r["endpoint"], model_name=r["model_name"], model_version=r["model_version"],
        canary_deployment=r["canary_deployment"], stable_deployment=r["stable_deployment"],
        stable_model=r["stable_model"], steps=tuple(json.loads(r["steps_json"])), rules=rules_,
        step_index=r["step_index"], state=r["state"], started_at=parse_ts(r["started_at"]),
        started_by=r["started_by"], step_started_at=parse_ts(r["step_started_at"]),
        updated_at=parse_ts(r["updated_at"]), ended_at=parse_ts(r["ended_at"]), reason=r["reason"],
        last_analysis=cn.Analysis.from_dict(json.loads(r["analysis_json"])) if r["analysis_json"] else None,
        history=tuple(cn.Analysis.from_dict(h) for h in json.loads(r["history_json"] or "[]")))
