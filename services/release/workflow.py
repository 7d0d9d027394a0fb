"""The release workflow, written once for every backend (the ``ReleaseService``).

Deploy to staging, smoke test, approve, reject, promote (blue/green, or a canary per
``[canary] strategy``), roll back, set traffic, regenerate keys — and the canary rollouts
(``services.release.rollouts``) — as use cases above two narrow Protocols
(``services.release.ports``): an ``EndpointDriver`` (local: processes; Azure: ARM) and a
``Ledger`` (local: SQLite transactions; Azure: model tags, append blobs, blob leases). The
rules are ``services.permissions`` (who) and ``services.release_rules`` (which transitions);
plans are ``services.release.plans``; the smoke test is ``services.release.smoke``.

Every operation that changes something:

1. authorizes the actor before it reads anything (``Forbidden``, nothing written);
2. takes its locks — the endpoint's, and the model version's for what changes its stage —
   refused, not queued (``Conflict``), and only then reads the endpoint and the release state,
   so the checks and the change happen under the same lock (two promotes of one version a few
   seconds apart: the second finds it in production and does nothing);
3. computes its plan from what it read; given the plan the caller was shown, refuses when it
   no longer holds (``Conflict``: the endpoint or the stage changed meanwhile);
4. does the steps, reporting each (``progress``: ``ProgressStep``s); a failed step stops the
   new deployment and leaves the traffic as it was;
5. records the traffic change, the stage changes, the champion, the audit records and the
   notification in one unit of work.
"""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Mapping

from .. import release_rules as rules
from ..entities import Endpoint, ModelVersion, Plan, ReleaseState, SmokeTestResult, Stage
from ..errors import Conflict, GateFailed, InvalidInput, NotFound, ServiceError
from ..permissions import SYSTEM_ACTOR, authorize
from . import plans, smoke
from .ports import EndpointDriver, Ledger, Say, UnitOfWork
from .planning import Planning
from .progress import Listener, Progress
from .rollouts import CANARY_OPS, Rollouts


class ReleaseWorkflow(Planning, Rollouts):
    """``ReleaseWorkflow(policy, models, datasets, evaluation, driver, ledger)``; ``after_staging``
    is called with a version just deployed to staging (Azure keeps its evaluation then)."""

    LOCK_WAIT_S = 10.0   # how long a short person-initiated step (pause, abort) waits for a canary tick

    def __init__(self, policy, models, datasets, evaluation, driver: EndpointDriver, ledger: Ledger, *,
                 after_staging: Callable[[ModelVersion], None] | None = None):
        self.policy, self.models, self.datasets, self.evaluation = policy, models, datasets, evaluation
        self.driver, self.ledger = driver, ledger
        self.after_staging = after_staging

    # --- reads ---------------------------------------------------------------------------

    def state(self, name: str, version: int) -> ReleaseState:
        return self.ledger.state(self.models.get(name, version))

    def states(self, name: str | None = None) -> list[ReleaseState]:
        return self.ledger.states(name)

    def smoke_tests(self, limit: int = 50) -> list[SmokeTestResult]:
        return self.ledger.smoke_tests(limit)

    def smoke_test_result(self, test_id: int) -> SmokeTestResult:
        return self.ledger.smoke_test(test_id)

    def audit(self, limit: int | None = None):
        return self.ledger.audit(limit)

    # --- the workflow ------------------------------------------------------------------------

    def deploy(self, name: str, version: int, env: str, actor: str, *, plan: Plan | None = None,
               progress: Listener | None = None, wait_s: float = 0.0) -> Endpoint:
        """Blue/green to ``env`` (staging; production only for Tollgate itself): the version beside
        the current one at 0 %, health, smoke test pinned to it, then all the traffic; the previous
        deployment stays warm. ``wait_s``: how long to wait for another operation holding the
        endpoint (Tollgate's own auto-stage waits; a person is refused at once)."""
        authorize(self.policy, actor, "deploy")          # before reading anything
        mv = self.models.get(name, version)
        role = rules.check_deploy(self.policy, actor, env, mv, self.driver.names())
        steps = Progress(progress)
        with self._operation(env, actor, "deploy", versions=(mv,), wait_s=wait_s) as ep:
            state = self.ledger.state(mv)
            p = plans.deploy(self.policy, ep, mv, state)
            self._same(plan, p)
            production = env == self.policy.endpoints.production

            def record(uow: UnitOfWork, result: SmokeTestResult) -> None:
                after = p.stages[0].after if p.stages else state.stage
                review = after == Stage.AWAITING_APPROVAL      # a new review: an earlier decision no longer holds
                uow.set_stage(state, after, actor=actor, role=role, deployed_by=actor, smoke_test_id=result.id,
                              **({"decided_by": None, "decision_comment": None, "approved_against": None}
                                 if review else {}))
                if review:
                    uow.emit("approval_requested", actor=actor, model=mv.ref, endpoint=env,
                             summary=f"{mv.ref} passed its smoke test in {env} ({result.summary}) and awaits an "
                                     f"ML lead's approval", details={"smoke_test": result.id, "deployed_by": actor})
                if production:
                    uow.move_champion(mv.name, mv.version, actor=actor, role=role)
            self._blue_green(p, ep, mv, actor, role, steps, ("deploy.started", "deploy.failed", "deploy"),
                             record, judge=False)
        if not production and self.after_staging is not None:
            self.after_staging(mv)
        return self.driver.snapshot(env)

    def smoke_test(self, env: str, actor: str, deployment: str | None = None, *,
                   progress: Listener | None = None) -> SmokeTestResult:
        """The smoke test against the endpoint's serving deployment (or ``deployment``)."""
        role = authorize(self.policy, actor, "smoke_test")
        self._known(env)
        ep = self.driver.snapshot(env)
        target = next((d for d in ep.deployments if d.name == deployment), None) if deployment else ep.live
        if target is None:
            raise Conflict(f"endpoint {env} has no deployment "
                           f"{'named ' + deployment if deployment else 'serving traffic'}")
        live = ep.live if ep.live is not None and ep.live.name != target.name else None
        with Progress(progress).step("smoke_test", f"smoke test of {env}/{target.name}"):
            return self._smoke(env, target.name, self.models.get(target.model_name, target.model_version), actor,
                               role, live=live.name if live else None, judge=False)

    def approve(self, name: str, version: int, actor: str, comment: str = "", *, plan: Plan | None = None) -> ReleaseState:
        """ML lead, not whoever deployed it (four eyes, whatever the letter case); the smoke test
        must have passed and the quality gate must pass against the champion of now."""
        role = authorize(self.policy, actor, "approve")
        if self.policy.release.approve_comment_required:
            rules.require_comment("approval", comment)
        mv = self.models.get(name, version)
        with self._version_lock(mv, actor, "approve"):
            state = self.ledger.state(mv)
            self._same(plan, plans.approve(self.policy, mv, state, None))
            rules.check_approve(state, actor)
            gate = self.evaluation.gate(name, mv.version)
            if not gate.passed:
                raise GateFailed(f"{state.ref} does not pass the quality gate: " + "; ".join(gate.reasons))
            with self.ledger.unit() as uow:
                uow.set_stage(state, Stage.APPROVED, actor=actor, role=role, action="approve", comment=comment,
                              decided_by=actor, decision_comment=comment, approved_against=gate.champion)
        return self.state(name, mv.version)

    def reject(self, name: str, version: int, actor: str, comment: str, *, plan: Plan | None = None) -> ReleaseState:
        """ML lead; a comment is required. A version in a running canary is aborted, not rejected."""
        role = authorize(self.policy, actor, "reject")
        rules.require_comment("rejection", comment)
        mv = self.models.get(name, version)
        with self._version_lock(mv, actor, "reject"):
            state = self.ledger.state(mv)
            self._same(plan, plans.reject(self.policy, mv, state))
            rules.check_reject(state, comment)
            active = self._active_rollout(self.policy.endpoints.production)
            if active is not None and active.model_ref == mv.ref:
                raise Conflict(f"{mv.ref} is in a canary rollout on {active.endpoint}; abort the canary instead",
                               hint=f"python tollgate.py canary abort --env {active.endpoint} --comment TEXT")
            with self.ledger.unit() as uow:
                uow.set_stage(state, Stage.REJECTED, actor=actor, role=role, action="reject", comment=comment,
                              decided_by=actor, decision_comment=comment)
        return self.state(name, mv.version)

    def promote(self, name: str, version: int, actor: str, comment: str = "", *, strategy: str | None = None,
                plan: Plan | None = None, progress: Listener | None = None) -> Endpoint:
        """QA: an approved version to production, blue/green (the previous stays warm), or as a
        canary (``strategy="canary"`` or ``[canary] strategy``: returns at its first step)."""
        strategy = self._strategy(strategy if strategy else plan.strategy if plan else None)
        prod = self.policy.endpoints.production
        if strategy == "canary":
            self.start_canary(name, version, actor, comment, plan=plan, progress=progress)
            return self.driver.snapshot(prod)
        role = authorize(self.policy, actor, "promote")
        mv = self.models.get(name, version)
        serving = self.driver.snapshot(prod)
        if self._serves(serving, mv):
            return serving                                  # idempotent: already serving, nothing to lock
        steps = Progress(progress)
        with self._operation(prod, actor, "promote", versions=(mv,)) as ep:
            state = self.ledger.state(mv)
            live = ep.live
            if self._serves(ep, mv):                        # promoted meanwhile (the same request twice)
                return ep
            self._check_promote(mv, state)
            p = plans.promote(self.policy, ep, mv, state, None)
            self._same(plan, p)
            previous = {s.ref: s for s in self._states_of(live)}

            def record(uow: UnitOfWork, result: SmokeTestResult) -> None:
                uow.move_champion(mv.name, mv.version, actor=actor, role=role)
                uow.set_stage(state, Stage.PRODUCTION, actor=actor, role=role)
                if live is not None and live.model_ref != mv.ref and live.model_ref in previous:
                    uow.set_stage(previous[live.model_ref], Stage.RETIRED, actor=actor, role=role)
                uow.emit("promoted", actor=actor, model=mv.ref, endpoint=prod,
                         summary=f"{mv.ref} serves {prod} (blue/green)"
                                 + (f", replacing {live.model_ref}" if live else "") + (f": {comment}" if comment else ""),
                         details={"previous": live.model_ref if live else None, "strategy": "blue_green",
                                  "comment": comment, "smoke_test": result.id,
                                  "latency": result.latency.to_dict() if result.latency else None})
            self._blue_green(p, ep, mv, actor, role, steps, ("promote.started", "promote.failed", "promote"), record,
                             judge=True, comment=comment)
        return self.driver.snapshot(prod)

    def rollback(self, env: str, actor: str, comment: str = "", *, plan: Plan | None = None,
                 progress: Listener | None = None) -> Endpoint:
        """The traffic back to the warm previous deployment (a comment is required). On production
        that is the previous champion, if it was not itself rolled back; the version rolled back
        needs a new approval. During a canary rollout this aborts the rollout."""
        role = authorize(self.policy, actor, "rollback")
        self._known(env)
        rules.require_comment("rollback", comment)
        if self._active_rollout(env) is not None:
            self.abort_canary(env, actor, comment)
            return self.driver.snapshot(env)
        steps = Progress(progress)
        with self._operation(env, actor, "rollback") as ep:
            live, back = ep.live, plans.warm_previous(ep)
            live_state, back_state, back_mv = self._rollback_facts(env, ep)
            self._same(plan, plans.rollback(self.policy, ep, live_state, back_state))
            rules.check_rollback(env, live, back, back_state, back_mv)
            split = {back.name: 100, live.name: 0}
            with steps.step("traffic", f"traffic back to {back.name} ({back.model_ref})") as say:
                with self.ledger.unit() as uow:
                    before = dict(ep.traffic)
                    self.driver.shift(env, plans.full_split(ep, split), say)
                    uow.record(actor, "rollback", env, role=role, before={"traffic": before},
                               after={"traffic": {**before, **split}}, comment=comment)
                    if live_state is not None and back_state is not None:
                        uow.move_champion(back.model_name, back.model_version, actor=actor, role=role)
                        uow.set_stage(live_state, Stage.ROLLED_BACK, actor=actor, role=role, comment=comment)
                        uow.set_stage(back_state, Stage.PRODUCTION, actor=actor, role=role)
                        uow.emit("rolled_back", actor=actor, model=live.model_ref, endpoint=env,
                                 summary=f"{env} rolled back from {live.model_ref} to {back.model_ref}: {comment}",
                                 details={"automatic": False, "from": live.model_ref, "to": back.model_ref,
                                          "comment": comment, "reasons": [comment]})
                self.driver.settle(env, split)
        return self.driver.snapshot(env)

    def set_traffic(self, env: str, traffic: Mapping[str, int], actor: str, comment: str = "", *,
                    plan: Plan | None = None, progress: Listener | None = None) -> Endpoint:
        """An explicit split in whole percent adding up to 100 (admin)."""
        role = authorize(self.policy, actor, "set_traffic")
        self._known(env)
        with self._operation(env, actor, "set_traffic") as ep:
            rules.check_traffic(ep, traffic)
            p = plans.traffic(self.policy, ep, traffic)
            self._same(plan, p)
            with Progress(progress).step("traffic", f"traffic of {env} set") as say:
                with self.ledger.unit() as uow:
                    self.driver.shift(env, p.traffic_after, say)
                    uow.record(actor, "traffic", env, role=role, before={"traffic": dict(ep.traffic)},
                               after={"traffic": {**ep.traffic, **traffic}}, comment=comment)
                self.driver.settle(env, p.traffic_after)
        return self.driver.snapshot(env)

    def regenerate_key(self, env: str, which: str, actor: str, *, progress: Listener | None = None) -> Endpoint:
        """A new ``primary`` or ``secondary`` key (admin); the old one is refused once this returns."""
        role = authorize(self.policy, actor, "regenerate_key")
        self._which(which)
        self._known(env)
        with self._operation(env, actor, "regenerate_key"):
            with Progress(progress).step("key", f"new {which} key of {env}") as say:
                self.driver.regenerate_key(env, which, say)
            self.ledger.record(actor, "key.regenerate", f"{env}/{which}", role=role)
        return self.driver.snapshot(env)

    # --- checks ------------------------------------------------------------------------------

    def _known(self, env: str) -> None:
        names = self.driver.names()
        if env not in names:
            raise NotFound(f"endpoint {env!r} does not exist", hint=f"Endpoints: {', '.join(names)}.")

    @staticmethod
    def _which(which: str) -> None:
        if which not in ("primary", "secondary"):
            raise InvalidInput("which key: 'primary' or 'secondary'")

    def _strategy(self, strategy: str | None) -> str:
        strategy = strategy or self.policy.canary.strategy
        if strategy not in ("blue_green", "canary"):
            raise InvalidInput(f"unknown promote strategy {strategy!r}", hint="Use 'blue_green' or 'canary'.")
        return strategy

    def _serves(self, ep: Endpoint, mv: ModelVersion) -> bool:
        """``mv`` is in production and takes the endpoint's traffic: a promote has nothing to do."""
        live = ep.live
        return live is not None and live.model_ref == mv.ref and self.ledger.state(mv).stage == Stage.PRODUCTION

    def _check_deploy_target(self, env: str, mv: ModelVersion) -> None:
        rules.check_deploy(self.policy, SYSTEM_ACTOR, env, mv, self.driver.names())
        if env == self.policy.endpoints.production:
            raise Conflict("production is reached by promote, not deploy",
                           hint=f"python tollgate.py promote --model {mv.name} --version {mv.version}")

    def _check_promote(self, mv: ModelVersion, state: ReleaseState) -> None:
        smoke_result = self.ledger.smoke_test(state.smoke_test_id) if state.smoke_test_id else None
        rules.check_promote(state, smoke_result, True, (), mv)   # what refuses it without scoring anything
        gate = self.evaluation.gate(mv.name, mv.version)
        rules.check_promote(state, smoke_result, gate.passed, gate.reasons, mv)

    def _rollback_facts(self, env: str, ep: Endpoint) -> tuple[ReleaseState | None, ReleaseState | None,
                                                               ModelVersion | None]:
        """On production: the release states of the live and the warm version, and the warm version."""
        live, back = ep.live, plans.warm_previous(ep)
        if env != self.policy.endpoints.production or live is None or back is None \
                or not (live.model_name and back.model_name):
            return None, None, None
        try:
            back_mv = self.models.get(back.model_name, back.model_version)
            return self.state(live.model_name, live.model_version), self.ledger.state(back_mv), back_mv
        except NotFound:
            return None, None, None

    def _states_of(self, *deployments) -> list[ReleaseState]:
        out = []
        for d in deployments:
            if d is not None and d.model_name:
                try:
                    out.append(self.state(d.model_name, d.model_version))
                except NotFound:
                    pass
        return out

    @staticmethod
    def _same(plan: Plan | None, fresh: Plan) -> None:
        """Execute ``plan`` only if it still describes what will happen."""
        if plan is None:
            return
        if (plan.action, plan.model_name, plan.model_version, plan.env) != \
                (fresh.action, fresh.model_name, fresh.model_version, fresh.env):
            raise InvalidInput(f"the plan shown ({plan.title}) is not a plan of this action ({fresh.title})")
        if plan.basis != fresh.basis:
            where = f"endpoint {fresh.env}" if fresh.env else fresh.ref
            raise Conflict(f"{where} changed since the plan was made: {fresh.title} would not do what it said",
                           hint="Look at the new plan and confirm again.")

    # --- mechanics ---------------------------------------------------------------------------

    @contextmanager
    def _hold(self, key: str, actor: str, op: str, what: str, wait_s: float = 0.0) -> Iterator[None]:
        """The lock ``key``; with ``wait_s``, tried again that long while someone else holds it."""
        deadline = time.monotonic() + wait_s
        with ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(self.ledger.exclusive(key, actor, op, what))
                    break
                except Conflict:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
            yield

    def _version_lock(self, mv: ModelVersion, actor: str, op: str):
        return self.ledger.exclusive(f"release-{mv.name}-{mv.version}", actor, op, mv.ref)

    @contextmanager
    def _operation(self, env: str, actor: str, op: str, *, versions: tuple[ModelVersion, ...] = (),
                   wait_s: float = 0.0) -> Iterator[Endpoint]:
        """One operation per endpoint at a time (and per model version): refused, not queued. Yields
        the endpoint as it is once the locks are held."""
        with ExitStack() as stack:
            stack.enter_context(self._hold(f"endpoint-{env}", actor, op, f"endpoint {env}", wait_s))
            for mv in versions:
                stack.enter_context(self._version_lock(mv, actor, op))
            busy = self.driver.busy(env)
            if busy:
                raise Conflict(f"an operation is already in progress on {env}: {'; '.join(busy)}",
                               hint="Wait for it to finish (it may have been started outside Tollgate).")
            if op not in CANARY_OPS:
                self._no_rollout(env, op)
            yield self.driver.snapshot(env)

    def _no_rollout(self, env: str, op: str) -> None:
        active = self._active_rollout(env)
        if active is not None:
            raise Conflict(f"a canary rollout of {active.model_ref} is {active.state} on {env}; '{op}' must wait "
                           f"until it ends", hint=f"python tollgate.py canary status --env {env} (abort ends it at once).")

    def _blue_green(self, p: Plan, ep: Endpoint, mv: ModelVersion, actor: str, role: str, steps: Progress,
                    actions: tuple[str, str, str], record: Callable[[UnitOfWork, SmokeTestResult], None], *,
                    judge: bool, comment: str = "", share: int = 100,
                    extra: Mapping[str, Any] | None = None) -> SmokeTestResult:
        """The new deployment ``p.deployment`` at 0 %, healthy, smoke-tested, then ``share`` % of the
        traffic (the rest stays on the live one) together with ``record``'s changes."""
        started, failed, shifted = actions
        env, new, live = ep.name, p.deployment, ep.live
        self.driver.ensure_running()
        like = live or next((d for d in ep.deployments if d.name == new), None) or next(iter(ep.deployments), None)
        with steps.step("created", f"deployment {new} ({mv.ref}) created at 0 %") as say:
            self.ledger.record(actor, started, f"{env}/{new}", role=role, comment=comment,
                               before={"traffic": dict(ep.traffic)},
                               after={"deployment": new, "model": mv.ref, "traffic": 0,
                                      **({"steps": list(self.policy.canary.steps)} if share < 100 else {})})
            try:
                self.driver.create(env, new, mv, actor, like=like.name if like else None, say=say)
            except ServiceError as e:                    # refused outright: nothing was created
                self.ledger.record(actor, failed, f"{env}/{new}", role=role, after={"model": mv.ref, "summary": str(e)})
                raise
        with steps.step("healthy", f"{new} healthy") as say:
            try:
                self.driver.wait_healthy(env, new, say)
            except ServiceError as e:
                self._discard(env, new, actor, role, failed, mv, str(e), say)
                raise
        with steps.step("smoke_test", f"smoke test of {new}") as say:
            try:
                result = self._smoke(env, new, mv, actor, role, live=live.name if live else None, judge=judge)
            except ServiceError as e:                    # no inputs, no key…: nothing proves it works
                self._discard(env, new, actor, role, failed, mv, f"smoke test could not run: {e}", say)
                raise GateFailed(f"the smoke test of {mv.ref} on {env}/{new} could not run ({e}); traffic unchanged",
                                 hint=e.hint) from e
            if not result.passed:
                self._discard(env, new, actor, role, failed, mv, result.summary, say, smoke_id=result.id)
                raise GateFailed(f"smoke test of {mv.ref} on {env}/{new} failed: {result.summary}; traffic unchanged",
                                 hint=smoke.failed_cases(result.cases, result.latency))
        split = {new: share, **({live.name: 100 - share} if live else {})}
        with steps.step("traffic", f"{share} % of traffic to {new}" if share < 100 else f"traffic shifted to {new}") \
                as say:
            before = {**ep.traffic, new: 0}
            with self.ledger.unit() as uow:
                self.driver.shift(env, plans.full_split(ep, split), say)
                uow.record(actor, shifted, env, role=role, before={"traffic": before},
                           after={"traffic": {**before, **split}, **(extra or {})}, comment=comment)
                record(uow, result)
            self.driver.settle(env, split)
        if live is not None and share == 100:
            steps.note("warm", f"{live.name} ({live.model_ref}) kept warm for rollback")
        return result

    def _discard(self, env: str, name: str, actor: str, role: str, failed: str, mv: ModelVersion, why: str,
                 say: Say, smoke_id: int | None = None) -> None:
        """Stop (delete) a deployment that failed; traffic is untouched."""
        after: dict[str, Any] = {"model": mv.ref, "summary": why, **({"smoke_test": smoke_id} if smoke_id else {})}
        try:
            self.driver.stop(env, name, say)
            after["deleted"] = True
        except ServiceError as e:
            after.update(deleted=False, delete_error=str(e))
        self.ledger.record(actor, failed, f"{env}/{name}", role=role, after=after)

    def _smoke(self, env: str, deployment: str, mv: ModelVersion, actor: str, role: str, *, live: str | None,
               judge: bool) -> SmokeTestResult:
        given = smoke.inputs(self.models, self.datasets, self.policy, mv)
        cases = smoke.run_cases(self.driver, env, deployment, given, self.policy.smoke.tolerance)
        latency = None
        if all(c.passed for c in cases):                 # a version that answers wrongly is not timed
            latency = smoke.measure_latency(self.driver, env, deployment, live, [case.row for case in given.cases],
                                            self.policy, judge=judge)
        passed, summary = smoke.summary(cases, latency, given.note)
        return self.ledger.save_smoke(env, deployment, mv, actor, role, passed=passed, summary=summary,
                                      cases=tuple(cases), latency=latency)


__all__ = ["ReleaseWorkflow"]
