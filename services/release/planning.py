"""The release workflow's plans (``ReleaseWorkflow`` mixes this in): what each action would do now.

Each ``plan_…`` reads the endpoint and the release state as they are, asks
``services.release.plans`` what the action would change, and says why it would be refused
(``Plan.refused``: the same checks the action runs, here without raising). Reads only: a plan
needs no role and changes nothing.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

from .. import release_rules as rules
from ..entities import ModelVersion, Plan, ReleaseState, Stage
from ..errors import ServiceError
from . import plans


class Planning:
    """The plans of ``ReleaseWorkflow`` (it provides ``policy``, ``models``, ``evaluation``,
    ``driver``, ``ledger`` and the checks)."""

    def plan_deploy(self, name: str, version: int, env: str) -> Plan:
        mv = self.models.get(name, version)
        self._known(env)
        p = plans.deploy(self.policy, self.driver.snapshot(env), mv, self.ledger.state(mv))
        return self._refusal(p, lambda: self._check_deploy_target(env, mv), lambda: self._no_rollout(env, "deploy"))

    def plan_promote(self, name: str, version: int, strategy: str | None = None) -> Plan:
        mv = self.models.get(name, version)
        strategy = self._strategy(strategy)
        prod = self.policy.endpoints.production
        ep, state = self.driver.snapshot(prod), self.ledger.state(mv)
        warnings = self._promote_warnings(mv, state)
        if strategy == "canary":
            p = plans.canary(self.policy, ep, mv, state, warnings, self._active_rollout(prod))
            return self._refusal(p, lambda: self._check_canary(ep, mv, state))
        p = plans.promote(self.policy, ep, mv, state, self.models.champion(name), warnings)
        if not p.steps:        # already serving: nothing to refuse
            return p
        return self._refusal(p, lambda: self._no_rollout(prod, "promote"), lambda: self._check_promote(mv, state))

    def plan_rollback(self, env: str) -> Plan:
        self._known(env)
        ep = self.driver.snapshot(env)
        live_state, back_state, back_mv = self._rollback_facts(env, ep)
        p = plans.rollback(self.policy, ep, live_state, back_state)
        return self._refusal(p, lambda: rules.check_rollback(env, ep.live, plans.warm_previous(ep), back_state,
                                                             back_mv))

    def plan_traffic(self, env: str, traffic: Mapping[str, int]) -> Plan:
        self._known(env)
        ep = self.driver.snapshot(env)
        rules.check_traffic(ep, traffic)
        return self._refusal(plans.traffic(self.policy, ep, traffic), lambda: self._no_rollout(env, "traffic"))

    def plan_smoke_test(self, name: str, version: int) -> Plan:
        mv = self.models.get(name, version)
        return plans.smoke_test(self.policy, [self.driver.snapshot(n) for n in self.driver.names()], mv)

    def plan_approve(self, name: str, version: int, actor: str | None = None) -> Plan:
        mv = self.models.get(name, version)
        state = self.ledger.state(mv)
        p = plans.approve(self.policy, mv, state, self.models.champion(name))
        return self._refusal(p, lambda: rules.check_approve(state, actor or ""))

    def plan_reject(self, name: str, version: int) -> Plan:
        mv = self.models.get(name, version)
        state = self.ledger.state(mv)
        return self._refusal(plans.reject(self.policy, mv, state),
                             lambda: rules.check_reject(state, "(the comment you give)"))

    def plan_regenerate_key(self, env: str, which: str) -> Plan:
        self._known(env)
        self._which(which)
        return plans.regenerate_key(self.driver.snapshot(env), which)

    @staticmethod
    def _refusal(plan: Plan, *checks: Callable[[], None]) -> Plan:
        """The plan, with the reason the action would be refused now (the first check that fails)."""
        for check in checks:
            try:
                check()
            except ServiceError as e:
                return replace(plan, refused=str(e) + (f" ({e.hint})" if e.hint else ""))
        return plan

    def _promote_warnings(self, mv: ModelVersion, state: ReleaseState) -> tuple[str, ...]:
        """What QA should know before promoting: a better approved version, a changed champion."""
        warnings = []
        champion = self.models.champion(mv.name)
        if state.approved_against and champion is not None and state.approved_against != champion.ref:
            warnings.append(f"{mv.ref} was approved against the champion {state.approved_against}; "
                            f"{champion.ref} is the champion now (the quality gate is checked again against it)")
        for other in self.ledger.states(mv.name):
            if other.stage != Stage.APPROVED or other.model_version == mv.version:
                continue
            try:
                better = self.evaluation.compare(mv.name, other.model_version, champion_version=mv.version)
            except ServiceError:
                continue
            if better.gate.passed:
                metric = self.policy.require_improvement
                figures = (f" ({metric} {better.candidate_metrics[metric]:.4g} vs {better.champion_metrics[metric]:.4g}"
                           f" on {better.evaluated_on})" if metric in better.candidate_metrics
                           and metric in better.champion_metrics else "")
                warnings.append(f"{other.ref} is also approved and beats {mv.ref} on the same held-out rows{figures}")
        return tuple(warnings)
