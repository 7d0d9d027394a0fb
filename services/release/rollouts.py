"""Canary rollouts as use cases of the release workflow (``ReleaseWorkflow`` mixes this in).

``services.canary`` is the state machine (analysis and decisions, pure, clock injected);
this module starts a rollout (the blue/green machinery up to the smoke test, then the first
step's share of production traffic), pauses, resumes and aborts it, and applies the
decisions ``canary.advance_rollouts`` takes on each tick (next step, success, automatic
rollback, pause). Each change of a rollout happens under the production endpoint's lock,
after reading the rollout again: a decision taken on a rollout that moved on meanwhile (a
pause, another tick) is not applied. The traffic change, the rollout's state, the stage
changes, the audit record and the notification are one unit of work.

Who advances rollouts: locally the supervisor's release thread; on Azure ``tollgate.py canary
start --wait`` while it waits, or the long-running ``tollgate.py agent`` (``services.release.agent``).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from .. import canary as cn
from .. import release_rules as rules
from ..entities import Endpoint, ModelVersion, Plan, ReleaseState, Stage
from ..errors import Conflict, NotFound
from ..permissions import SYSTEM_ACTOR, SYSTEM_ROLE, authorize
from . import plans
from .progress import Listener, Progress

# the only operations allowed on an endpoint while a rollout runs there
CANARY_OPS = ("canary", "canary.step", "canary.pause", "canary.resume", "canary.abort")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Rollouts:
    """The canary part of ``ReleaseWorkflow`` (it provides ``policy``, ``models``, ``driver``,
    ``ledger`` and the workflow's mechanics)."""

    # --- reads ---------------------------------------------------------------------------

    def rollouts(self, env: str | None = None, *, active: bool = False, limit: int = 20) -> list[cn.Rollout]:
        """Canary rollouts, newest first (``active``: running or paused only)."""
        return self.ledger.rollouts(env, active=active, limit=limit)

    def rollout(self, env: str | None = None) -> cn.Rollout | None:
        """The active rollout of ``env`` (production by default), else its latest one, else None."""
        env = self._rollout_env(env)
        return self._active_rollout(env) or next(iter(self.ledger.rollouts(env, limit=1)), None)

    def _rollout_env(self, env: str | None) -> str:
        """Rollouts run on the endpoints the policy names; any other name is a typo, not "no rollout"."""
        names = (self.policy.endpoints.production, self.policy.endpoints.staging)
        if env is None:
            return names[0]
        if env not in names:
            raise NotFound(f"endpoint {env!r} does not exist", hint=f"Rollouts run on {' or '.join(names)}.")
        return env

    def _active_rollout(self, env: str) -> cn.Rollout | None:
        return next(iter(self.ledger.rollouts(env, active=True, limit=1)), None)

    def _require_rollout(self, env: str) -> cn.Rollout:
        r = self._active_rollout(self._rollout_env(env))
        if r is None:
            raise Conflict(f"no canary rollout is running on {env}",
                           hint="Start one: python tollgate.py canary start --model NAME --version N.")
        return r

    def _fresh(self, r: cn.Rollout) -> cn.Rollout | None:
        return next((x for x in self.ledger.rollouts(r.endpoint, limit=50) if x.id == r.id), None)

    def plan_canary_control(self, action: str, env: str | None = None) -> Plan:
        """What pausing, continuing or aborting the running canary of ``env`` would do."""
        if action not in ("pause", "resume", "abort"):
            raise ValueError(f"unknown canary action {action!r}")
        return plans.canary_control(self._require_rollout(env or self.policy.endpoints.production), action)

    # --- start, pause, resume, abort ------------------------------------------------------------

    def _check_canary(self, ep: Endpoint, mv: ModelVersion, state: ReleaseState) -> None:
        active = self._active_rollout(ep.name)
        if active is not None:
            raise Conflict(f"a canary rollout of {active.model_ref} is already {active.state} on {ep.name}",
                           hint=f"python tollgate.py canary status --env {ep.name}")
        self._check_promote(mv, state)
        stable = ep.live
        if stable is None or stable.state != "healthy":
            raise Conflict(f"a canary needs a healthy version serving {ep.name} to compare with",
                           hint="Promote the first version blue/green (promote --strategy blue_green).")
        if stable.model_ref == mv.ref:
            raise Conflict(f"{mv.ref} already serves {ep.name}")

    def start_canary(self, name: str, version: int, actor: str, comment: str = "", *, plan: Plan | None = None,
                     progress: Listener | None = None) -> cn.Rollout:
        """Promote an approved version in steps (``[canary]``): deployed beside the stable version
        (health probe, smoke test pinned to it), then the first step's share of production traffic.
        Each step is judged on live telemetry (failures and p95 against the stable version) and
        advanced by ``canary.advance_rollouts``."""
        role = authorize(self.policy, actor, "promote")
        prod, cfg = self.policy.endpoints.production, self.policy.canary
        mv = self.models.get(name, version)
        started: dict[str, cn.Rollout] = {}
        with self._operation(prod, actor, "canary", versions=(mv,)) as ep:
            state = self.ledger.state(mv)
            self._check_canary(ep, mv, state)
            p = plans.canary(self.policy, ep, mv, state)
            self._same(plan, p)
            stable, first = ep.live, cfg.steps[0]

            def record(uow, result) -> None:
                now = _now()
                started["r"] = uow.save_rollout(cn.Rollout(
                    id=0, endpoint=prod, model_name=mv.name, model_version=mv.version, canary_deployment=p.deployment,
                    stable_deployment=stable.name, stable_model=stable.model_ref, steps=tuple(cfg.steps), rules=cfg,
                    step_index=0, state=cn.RUNNING, started_at=now, started_by=actor, step_started_at=now,
                    updated_at=now))
                uow.emit("canary_step", actor=actor, model=mv.ref, endpoint=prod,
                         summary=f"canary of {mv.ref} on {prod} started: {first} % of traffic (step 1 of "
                                 f"{len(cfg.steps)}), {stable.model_ref} serves the rest",
                         details={"step": 1, "steps": list(cfg.steps), "traffic": first, "stable": stable.model_ref,
                                  "step_seconds": cfg.step_seconds, "comment": comment, "smoke_test": result.id})
            # latency is judged by the canary analysis on live traffic, step by step: not by the smoke test
            self._blue_green(p, ep, mv, actor, role, Progress(progress),
                             ("canary.deploy", "canary.failed", "canary.started"), record, judge=False,
                             comment=comment, share=first,
                             extra={"model": mv.ref, "stable": stable.model_ref, "steps": list(cfg.steps)})
        return started["r"]

    def pause_canary(self, env: str, actor: str, comment: str = "", *, plan: Plan | None = None) -> cn.Rollout:
        """Hold the rollout at its current step (traffic unchanged) until resumed or aborted."""
        role = authorize(self.policy, actor, "promote")
        with self._operation(env, actor, "canary.pause", wait_s=self.LOCK_WAIT_S):
            r = self._require_rollout(env)
            self._same(plan, plans.canary_control(r, "pause"))
            if r.state != cn.PAUSED:
                self._pause(r, actor, role, f"paused by {actor}" + (f": {comment}" if comment else ""), comment)
        return self._fresh(r)

    def resume_canary(self, env: str, actor: str, comment: str = "", *, plan: Plan | None = None) -> cn.Rollout:
        """Continue a paused rollout. Its step is judged afresh from now (the decision to continue
        is made on new traffic, not on the window before the pause)."""
        role = authorize(self.policy, actor, "promote")
        with self._operation(env, actor, "canary.resume", wait_s=self.LOCK_WAIT_S):
            r = self._require_rollout(env)
            self._same(plan, plans.canary_control(r, "resume"))
            if r.state == cn.RUNNING:
                return r
            now = _now()
            with self.ledger.unit() as uow:
                uow.save_rollout(replace(r, state=cn.RUNNING, step_started_at=now, updated_at=now, reason=""))
                uow.record(actor, "canary.resumed", f"{env}/{r.canary_deployment}", role=role, comment=comment,
                           before={"state": r.state, "reason": r.reason},
                           after={"state": cn.RUNNING, "model": r.model_ref, "step": r.step_index + 1,
                                  "traffic": r.traffic})
                uow.emit("canary_step", actor=actor, model=r.model_ref, endpoint=env,
                         summary=f"canary of {r.model_ref} on {env} resumed by {actor} at {r.step_label}"
                                 + (f": {comment}" if comment else ""),
                         details={"step": r.step_index + 1, "traffic": r.traffic, "resumed": True, "comment": comment})
        return self._fresh(r)

    def abort_canary(self, env: str, actor: str, comment: str = "", *, plan: Plan | None = None) -> cn.Rollout:
        """End the rollout now (a rollback: a comment is required): all traffic back to the stable
        version, the candidate stopped and marked rolled back."""
        role = authorize(self.policy, actor, "rollback")
        rules.require_comment("rollback", comment)
        with self._operation(env, actor, "canary.abort", wait_s=self.LOCK_WAIT_S):
            r = self._require_rollout(env)
            self._same(plan, plans.canary_control(r, "abort"))
            reason = f"aborted by {actor}: {comment}"
            self._end(r, cn.ABORTED, actor, role, reason, [reason], None, comment)
        return self._fresh(r)

    # --- the supervisor's decisions ---------------------------------------------------------------

    def apply_canary(self, rollout: cn.Rollout, decision: cn.Decision, now: datetime) -> cn.Rollout | None:
        """Apply a decision of ``canary.advance_rollouts``, only if the rollout is still running at
        the step judged; None if it moved on meanwhile (or the endpoint is busy: the next tick
        decides again)."""
        try:
            with self._operation(rollout.endpoint, SYSTEM_ACTOR, "canary.step"):
                r = self._fresh(rollout)
                if r is None or r.state != cn.RUNNING or r.step_index != rollout.step_index:
                    return None
                a = decision.analysis
                if decision.action == cn.NEXT:
                    self._next(r, a, now)
                elif decision.action == cn.COMPLETE:
                    self._complete(r, a, now)
                elif decision.action == cn.ROLLBACK:
                    reasons = list(a.reasons) if a is not None and a.verdict == cn.FAIL else [decision.reason]
                    self._end(r, cn.ROLLED_BACK, SYSTEM_ACTOR, SYSTEM_ROLE,
                              "automatic rollback: " + "; ".join(reasons), reasons, a)
                elif decision.action == cn.PAUSE:
                    self._pause(r, SYSTEM_ACTOR, SYSTEM_ROLE, decision.reason, "", a)
                else:
                    return None
        except Conflict:
            return None
        return self._fresh(rollout)

    def _pause(self, r: cn.Rollout, actor: str, role: str, reason: str, comment: str,
               analysis: cn.Analysis | None = None) -> None:
        with self.ledger.unit() as uow:
            uow.save_rollout(replace(r, state=cn.PAUSED, reason=reason, updated_at=_now(),
                                     last_analysis=analysis or r.last_analysis))
            uow.record(actor, "canary.paused", f"{r.endpoint}/{r.canary_deployment}", role=role, comment=comment,
                       before={"state": r.state}, after={"state": cn.PAUSED, "model": r.model_ref, "reason": reason,
                                                        "step": r.step_index + 1, "traffic": r.traffic})
            uow.emit("canary_paused", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                     summary=f"canary of {r.model_ref} on {r.endpoint} paused at {r.step_label}: {reason}",
                     details={"step": r.step_index + 1, "traffic": r.traffic, "reasons": [reason],
                              "analysis": analysis.to_dict() if analysis else None})

    def _shift_with(self, r: cn.Rollout, split: dict[str, int], action: str, comment: str, actor: str, role: str,
                    after: dict[str, Any], changes) -> None:
        """The rollout's traffic change with ``changes(uow)`` in one unit of work, then wait until it is in force."""
        ep = self.driver.snapshot(r.endpoint)
        before = dict(ep.traffic)
        with self.ledger.unit() as uow:
            self.driver.shift(r.endpoint, plans.full_split(ep, split), lambda _: None)
            uow.record(actor, action, r.endpoint, role=role, before={"traffic": before},
                       after={"traffic": {**before, **split}, **after}, comment=comment)
            changes(uow)
        self.driver.settle(r.endpoint, split)

    def _next(self, r: cn.Rollout, a: cn.Analysis, now: datetime) -> None:
        idx = r.step_index + 1
        share = r.steps[idx]

        def changes(uow) -> None:
            uow.save_rollout(replace(r, step_index=idx, step_started_at=now, updated_at=now, last_analysis=a,
                                     history=r.history + (a,), reason=""))
            uow.emit("canary_step", actor=SYSTEM_ACTOR, model=r.model_ref, endpoint=r.endpoint,
                     summary=f"canary of {r.model_ref} on {r.endpoint} passed {r.step_label}: {a.summary}; "
                             f"now {share} % of traffic (step {idx + 1} of {len(r.steps)})",
                     details={"step": idx + 1, "steps": list(r.steps), "traffic": share, "analysis": a.to_dict(),
                              "reasons": list(a.reasons)})
        self._shift_with(r, {r.canary_deployment: share, r.stable_deployment: 100 - share}, "canary.step", a.summary,
                         SYSTEM_ACTOR, SYSTEM_ROLE, {"rollout": r.id, "model": r.model_ref, "step": idx + 1,
                                                     "analysis": a.to_dict()}, changes)

    def _complete(self, r: cn.Rollout, a: cn.Analysis, now: datetime) -> None:
        canary_state = self.state(r.model_name, r.model_version)
        stable_name, _, stable_version = r.stable_model.rpartition(":")
        stable_state = self.state(stable_name, int(stable_version)) if r.stable_model != r.model_ref else None

        def changes(uow) -> None:
            uow.save_rollout(replace(r, state=cn.SUCCEEDED, ended_at=now, updated_at=now, last_analysis=a,
                                     history=r.history + (a,), reason=a.summary))
            uow.move_champion(r.model_name, r.model_version, actor=SYSTEM_ACTOR, role=SYSTEM_ROLE)
            uow.set_stage(canary_state, Stage.PRODUCTION, actor=SYSTEM_ACTOR, role=SYSTEM_ROLE)
            if stable_state is not None:
                uow.set_stage(stable_state, Stage.RETIRED, actor=SYSTEM_ACTOR, role=SYSTEM_ROLE)
            uow.emit("promoted", actor=r.started_by, model=r.model_ref, endpoint=r.endpoint,
                     summary=f"{r.model_ref} serves {r.endpoint} after a canary of {len(r.steps)} steps "
                             f"({' → '.join(f'{s} %' for s in r.steps)}), replacing {r.stable_model}: {a.summary}",
                     details={"previous": r.stable_model, "strategy": "canary", "rollout": r.id,
                              "reasons": list(a.reasons), "analysis": a.to_dict()})
        self._shift_with(r, {r.canary_deployment: 100, r.stable_deployment: 0}, "canary.succeeded", a.summary,
                         SYSTEM_ACTOR, SYSTEM_ROLE, {"rollout": r.id, "model": r.model_ref, "analysis": a.to_dict()},
                         changes)

    def _end(self, r: cn.Rollout, state: str, actor: str, role: str, reason: str, reasons: list[str],
             a: cn.Analysis | None, comment: str = "") -> None:
        """Rolled back (automatically) or aborted (by a person): stable 100 %, the candidate stopped."""
        automatic = state == cn.ROLLED_BACK
        canary_state = self.state(r.model_name, r.model_version)

        def changes(uow) -> None:
            now = _now()
            uow.save_rollout(replace(r, state=state, ended_at=now, updated_at=now, reason=reason,
                                     last_analysis=a or r.last_analysis))
            uow.set_stage(canary_state, Stage.ROLLED_BACK, actor=actor, role=role, comment=reason)
            if automatic:
                uow.emit("rolled_back", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                         summary=f"canary of {r.model_ref} on {r.endpoint} rolled back automatically at "
                                 f"{r.step_label}: {'; '.join(reasons)}; {r.stable_model} serves all traffic",
                         details={"automatic": True, "from": r.model_ref, "to": r.stable_model, "rollout": r.id,
                                  "step": r.step_index + 1, "reasons": reasons,
                                  "analysis": a.to_dict() if a else None})
            else:
                uow.emit("canary_aborted", actor=actor, model=r.model_ref, endpoint=r.endpoint,
                         summary=f"canary of {r.model_ref} on {r.endpoint} aborted at {r.step_label} by {actor}: "
                                 f"{comment}; {r.stable_model} serves all traffic",
                         details={"automatic": False, "from": r.model_ref, "to": r.stable_model, "rollout": r.id,
                                  "step": r.step_index + 1, "reasons": reasons})
        self._shift_with(r, {r.stable_deployment: 100, r.canary_deployment: 0}, f"canary.{state}",
                         "; ".join(reasons), actor, role,
                         {"rollout": r.id, "model": r.model_ref, "stable": r.stable_model, "step": r.step_index + 1,
                          "reasons": reasons, **({"analysis": a.to_dict()} if a else {})}, changes)
        self.driver.stop(r.endpoint, r.canary_deployment, lambda _: None)


__all__ = ["Rollouts", "CANARY_OPS"]
