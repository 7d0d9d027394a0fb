"""Plans: what a release action will change, computed before it happens (pure functions).

The workflow (``services.release.workflow``) gathers the facts — the endpoint as it is, the
version's release state, the champion — and these functions say what the action will do
with them: the deployment it creates or replaces (blue/green takes the colour that is not
serving), the traffic before and after, the stage changes, what happens on failure. The
same function is used to show the plan (console dialog, ``--dry-run``) and, inside the
operation's lock, to execute it; ``basis`` tells whether the world moved in between.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping

from ..canary import Rollout
from ..entities import Deployment, Endpoint, ModelVersion, Plan, ReleaseState, StageChange, Stage
from ..policy import Policy
from ..stages import WORDS

COLOURS = ("blue", "green")


# --- words --------------------------------------------------------------------------

def short(name: str, version: int, policy_model: str) -> str:
    """``v3`` for the policy's model, ``other-model:3`` otherwise."""
    return f"v{version}" if name == policy_model else f"{name}:{version}"


def dep_label(d: Deployment, policy_model: str) -> str:
    return f"{d.name} ({short(d.model_name, d.model_version, policy_model)})"


def traffic_text(ep: Endpoint, policy_model: str) -> str:
    """``blue (v1) 100 %`` — the deployments that take traffic now."""
    serving = [f"{dep_label(d, policy_model)} {d.traffic} %" for d in ep.deployments if d.traffic > 0]
    return " + ".join(serving) or "no traffic"


# --- facts ----------------------------------------------------------------------------

def new_colour(ep: Endpoint) -> tuple[str, Deployment | None]:
    """The deployment a blue/green step creates (the colour not serving) and the one of that name it replaces."""
    live = ep.live
    name = next(c for c in COLOURS if c != (live.name if live else None))
    replaced = next((d for d in ep.deployments if d.name == name and d.state != "stopped"), None)
    return name, replaced


def warm_previous(ep: Endpoint) -> Deployment | None:
    """The deployment a rollback gives the traffic back to: healthy, at 0 %, not the live one."""
    live = ep.live
    return next((d for d in ep.deployments if d is not live and d.state == "healthy" and d.traffic == 0), None)


def full_split(ep: Endpoint, changes: Mapping[str, int]) -> dict[str, int]:
    """The split after ``changes``, every running deployment named (0 % included)."""
    split = {d.name: d.traffic for d in ep.deployments if d.state != "stopped" or d.traffic}
    split.update(changes)
    return split


def basis(ep: Endpoint | None, *states: ReleaseState, rollout: Rollout | None = None) -> str:
    """A fingerprint of what a plan depends on: the endpoint's deployments (name, model, traffic,
    running or not), the versions' stages and the active rollout. Health flapping is left out."""
    facts = {
        "endpoint": None if ep is None else sorted((d.name, d.model_ref, d.traffic, d.state == "stopped")
                                                   for d in ep.deployments),
        "stages": sorted((s.ref, s.stage.value) for s in states),
        "rollout": None if rollout is None else (rollout.id, rollout.state, rollout.step_index),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _stage_line(change: StageChange, pm: str) -> str:
    v = short(change.model_name, change.model_version, pm)
    return f"release stage of {v}: {WORDS[change.before]} → {WORDS[change.after]}"


# --- the plans --------------------------------------------------------------------------

def deploy(policy: Policy, ep: Endpoint, mv: ModelVersion, state: ReleaseState) -> Plan:
    pm = policy.model_name
    v = short(mv.name, mv.version, pm)
    new, replaced = new_colour(ep)
    live = ep.live
    after = Stage.PRODUCTION if ep.name == policy.endpoints.production else \
        state.stage if state.stage in (Stage.APPROVED, Stage.PRODUCTION) else Stage.AWAITING_APPROVAL
    stages = (StageChange(mv.name, mv.version, state.stage, after),) if after != state.stage else ()
    split = full_split(ep, {new: 100, **({live.name: 0} if live else {})})
    lines = [f"{ep.name}: new deployment {new} ({mv.ref}) starts" + (f" beside {dep_label(live, pm)}" if live else "")
             + " at 0 % traffic",
             *([f"the warm deployment {dep_label(replaced, pm)} is stopped and replaced"] if replaced else []),
             f"health probe, then the smoke test pinned to it ({policy.smoke.cases} held-out rows and one malformed "
             f"request, prediction parity within {policy.smoke.tolerance:g})"
             + (f", and {policy.smoke.latency_requests} requests to it and to the live one for latency"
                if policy.smoke.latency_requests and live else ""),
             f"if both pass, {ep.name} traffic: {traffic_text(ep, pm)} → {new} ({v}) 100 %"
             + (f"; {live.name} stays warm" if live else ""),
             *([_stage_line(s, pm) for s in stages] or [f"release stage of {v} stays {WORDS[state.stage]}"])]
    on_failure = (f"if the probe or the smoke test fails, {new} is stopped and {ep.name} traffic stays as it is"
                  + ("; production is not touched" if ep.name != policy.endpoints.production else ""))
    return Plan("deploy", f"Deploy {mv.ref} to {ep.name}", (*lines, on_failure), mv.name, mv.version, ep.name,
                deployment=new, replaced=replaced.model_ref if replaced else None, traffic_before=dict(ep.traffic),
                traffic_after=split, stages=stages, on_failure=on_failure,
                steps=blue_green_steps(new, mv, live), basis=basis(ep, state))


def blue_green_steps(new: str, mv: ModelVersion, live: Deployment | None) -> tuple[str, ...]:
    return (f"deployment {new} ({mv.ref}) created at 0 %", f"{new} healthy", f"smoke test of {new}",
            f"traffic shifted to {new}", *([f"{live.name} kept warm for rollback"] if live else []))


def promote(policy: Policy, ep: Endpoint, mv: ModelVersion, state: ReleaseState, champion: ModelVersion | None,
            warnings: tuple[str, ...] = ()) -> Plan:
    pm = policy.model_name
    v = short(mv.name, mv.version, pm)
    title = f"Promote {mv.ref} to {ep.name}"
    live = ep.live
    if live and live.model_ref == mv.ref and state.stage == Stage.PRODUCTION:
        return Plan("promote", title, (f"{mv.ref} already serves {ep.name}: nothing changes",), mv.name, mv.version,
                    ep.name, strategy="blue_green", traffic_before=dict(ep.traffic), traffic_after=dict(ep.traffic),
                    warnings=warnings, comment="optional", basis=basis(ep, state))
    new, replaced = new_colour(ep)
    stages = [StageChange(mv.name, mv.version, state.stage, Stage.PRODUCTION)]
    if live and live.model_ref != mv.ref:
        stages.append(StageChange(live.model_name, live.model_version, Stage.PRODUCTION, Stage.RETIRED))
    lines = [f"{ep.name}: new deployment {new} ({mv.ref}) starts" + (f" beside {dep_label(live, pm)}" if live else "")
             + " at 0 % traffic; health probe and smoke test pinned to it"
             + (f", with {policy.smoke.latency_requests} requests to it and to {live.name} for latency"
                if policy.smoke.latency_requests and live else ""),
             *([f"the warm deployment {dep_label(replaced, pm)} (today's rollback target) is stopped and replaced"]
               if replaced else []),
             f"{ep.name} traffic: {traffic_text(ep, pm)} → {new} ({v}) 100 %"
             + (f"; {live.name} stays warm for rollback" if live else ""),
             f"champion alias moves {short(champion.name, champion.version, pm) if champion else '(none)'} → {v}",
             *[_stage_line(s, pm) for s in stages]]
    on_failure = f"if the probe or the smoke test fails, {new} is stopped and {ep.name} traffic stays as it is"
    return Plan("promote", title, (*lines, on_failure), mv.name, mv.version, ep.name, strategy="blue_green",
                deployment=new, replaced=replaced.model_ref if replaced else None, traffic_before=dict(ep.traffic),
                traffic_after=full_split(ep, {new: 100, **({live.name: 0} if live else {})}), stages=tuple(stages),
                champion_after=mv.ref, on_failure=on_failure, warnings=warnings, comment="optional",
                steps=blue_green_steps(new, mv, live), basis=basis(ep, state))


def canary(policy: Policy, ep: Endpoint, mv: ModelVersion, state: ReleaseState,
           warnings: tuple[str, ...] = (), rollout: Rollout | None = None) -> Plan:
    c = policy.canary
    pm = policy.model_name
    stable = ep.live
    new, replaced = new_colour(ep)
    first = c.steps[0]
    steps = " → ".join(f"{s} %" for s in c.steps)
    lines = [f"{ep.name}: {mv.ref} is deployed as {new} beside "
             + (f"{stable.model_ref} ({stable.name})" if stable else "(nothing serves it: a canary needs a stable version)")
             + " at 0 %; health probe and smoke test pinned to it",
             *([f"the warm deployment {dep_label(replaced, pm)} (today's rollback target) is stopped and replaced"]
               if replaced else []),
             f"then it gets {first} % of {ep.name}'s traffic; it moves {steps}, one step every {c.step_seconds:g} s, "
             f"if each step's analysis passes",
             f"a step fails if the canary's failure rate exceeds max({c.max_failure_rate:.1%}, stable's + "
             f"{c.max_failure_rate_increase:.1%}) or its p95 exceeds max(stable p95 × {c.max_p95_ratio:g}, "
             f"stable p95 + {c.max_p95_increase_ms:g} ms): then all traffic goes back to the stable version at once",
             f"a step short of {c.min_requests} canary requests waits up to {c.max_step_seconds:g} s, then "
             + ("pauses for a decision" if c.on_low_traffic == "pause" else "rolls back"),
             "on success the candidate becomes the champion and the stable version stays warm for a rollback"]
    on_failure = f"if the probe or the smoke test fails, {new} is stopped and {ep.name} traffic stays as it is"
    return Plan("canary", f"Canary release of {mv.ref}", (*lines, on_failure), mv.name, mv.version, ep.name,
                strategy="canary", deployment=new, replaced=replaced.model_ref if replaced else None,
                traffic_before=dict(ep.traffic),
                traffic_after=full_split(ep, {new: first, **({stable.name: 100 - first} if stable else {})}),
                stages=(), on_failure=on_failure, warnings=warnings, comment="optional",
                steps=(f"deployment {new} ({mv.ref}) created at 0 %", f"{new} healthy", f"smoke test of {new}",
                       f"{first} % of traffic to {new}"),
                basis=basis(ep, state, rollout=rollout))


def rollback(policy: Policy, ep: Endpoint, live_state: ReleaseState | None, back_state: ReleaseState | None) -> Plan:
    pm = policy.model_name
    title = f"Roll back {ep.name}"
    live, back = ep.live, warm_previous(ep)
    states = [s for s in (live_state, back_state) if s is not None]
    if live is None or back is None:
        why = "nothing serves it" if live is None else "it has no warm previous deployment"
        return Plan("rollback", title, (f"{ep.name} cannot be rolled back: {why}. A rollback needs the previous "
                                        f"deployment kept warm by a promote.",), env=ep.name, comment="required",
                    traffic_before=dict(ep.traffic), traffic_after=dict(ep.traffic), basis=basis(ep, *states))
    lv, bv = short(live.model_name, live.model_version, pm), short(back.model_name, back.model_version, pm)
    lines = [f"{ep.name} traffic: {traffic_text(ep, pm)} → {back.name} ({bv}) 100 % "
             f"(instant: {back.name} is already running)",
             f"{live.name} ({lv}) stays deployed at 0 %"]
    stages: tuple[StageChange, ...] = ()
    champion_after = None
    if ep.name == policy.endpoints.production:
        champion_after = back.model_ref
        stages = (StageChange(live.model_name, live.model_version, Stage.PRODUCTION, Stage.ROLLED_BACK),
                  StageChange(back.model_name, back.model_version,
                              back_state.stage if back_state else Stage.RETIRED, Stage.PRODUCTION))
        lines += [f"champion alias moves {lv} → {bv}", *[_stage_line(s, pm) for s in stages],
                  f"{lv} needs a new deploy to staging and a new approval before it can serve {ep.name} again"]
    return Plan("rollback", title, tuple(lines), env=ep.name, deployment=back.name, comment="required",
                traffic_before=dict(ep.traffic), traffic_after=full_split(ep, {back.name: 100, live.name: 0}),
                stages=stages, champion_after=champion_after, basis=basis(ep, *states))


def canary_control(r: Rollout, action: str) -> Plan:
    """Pause, resume or abort a running canary."""
    if action == "pause":
        lines = (f"the rollout holds at {r.step_label}: {r.model_ref} keeps {r.traffic} % of {r.endpoint}'s traffic",
                 "no step is judged until someone continues or aborts it")
        return Plan("pause", f"Pause the canary of {r.model_ref}", lines, r.model_name, r.model_version, r.endpoint,
                    strategy="canary", comment="optional", basis=basis(None, rollout=r))
    if action == "resume":
        lines = (f"the rollout continues at {r.step_label}",
                 f"this step is judged afresh: its analysis window starts now and lasts {r.rules.step_seconds:g} s")
        return Plan("resume", f"Continue the canary of {r.model_ref}", lines, r.model_name, r.model_version,
                    r.endpoint, strategy="canary", comment="optional", basis=basis(None, rollout=r))
    lines = (f"{r.endpoint} traffic → {r.stable_deployment} ({r.stable_model}) 100 % at once",
             f"{r.canary_deployment} ({r.model_ref}) is stopped; its release stage → rolled back (it needs a new "
             f"approval to be promoted again)",
             "recorded in the audit trail with your comment and announced (canary_aborted)")
    return Plan("abort", f"Abort the canary of {r.model_ref}", lines, r.model_name, r.model_version, r.endpoint,
                strategy="canary", deployment=r.stable_deployment,
                traffic_after={r.stable_deployment: 100, r.canary_deployment: 0}, comment="required",
                basis=basis(None, rollout=r))


def traffic(policy: Policy, ep: Endpoint, split: Mapping[str, int]) -> Plan:
    pm = policy.model_name
    after = full_split(ep, split)
    names = {d.name: d for d in ep.deployments}
    shown = " + ".join(f"{n} ({short(names[n].model_name, names[n].model_version, pm)}) {p} %"
                       for n, p in after.items() if p and n in names) or "no traffic"
    lines = (f"{ep.name} traffic: {traffic_text(ep, pm)} → {shown}",
             "release stages and the champion alias do not change")
    return Plan("traffic", f"Change the traffic of {ep.name}", lines, env=ep.name, comment="optional",
                traffic_before=dict(ep.traffic), traffic_after=after, basis=basis(ep))


def smoke_test(policy: Policy, endpoints: list[Endpoint], mv: ModelVersion) -> Plan:
    """Against where ``mv`` runs: on staging first, a deployment taking traffic first."""
    found = [(ep, d) for ep in endpoints for d in ep.deployments if d.model_ref == mv.ref and d.state != "stopped"]
    found.sort(key=lambda item: (item[0].name != policy.endpoints.staging, -item[1].traffic))
    title = f"Run the smoke test of {mv.ref}"
    if not found:
        why = f"{mv.ref} is not deployed on any endpoint: there is nothing to test"
        return Plan("smoke_test", title, (f"{why}. Deploy it to {policy.endpoints.staging} first.",), mv.name,
                    mv.version, refused=why)
    ep, dep = found[0]
    lines = (f"sends {policy.smoke.cases} held-out rows of {mv.dataset}:{mv.dataset_version} and one malformed "
             f"request to {ep.name}/{dep.name} ({mv.ref}), pinned with the header "
             f"azureml-model-deployment: {dep.name}",
             f"checks the HTTP status, the response schema and prediction parity with the registered model "
             f"offline (tolerance {policy.smoke.tolerance:g}), and measures its latency",
             "the result is stored and recorded in the audit trail; traffic and release stages do not change")
    return Plan("smoke_test", title, lines, mv.name, mv.version, ep.name, deployment=dep.name,
                steps=(f"smoke test of {dep.name}",), basis=basis(ep))


def approve(policy: Policy, mv: ModelVersion, state: ReleaseState, champion: ModelVersion | None) -> Plan:
    v = short(mv.name, mv.version, policy.model_name)
    deployer = state.deployed_by or "nobody yet"
    lines = (f"release stage of {v}: {WORDS[state.stage]} → approved",
             f"approved against the champion {champion.ref if champion else '(none)'}; your name, the time and "
             f"your comment go into the audit trail",
             f"nothing is deployed: QA promotes it to {policy.endpoints.production} afterwards",
             f"four eyes: whoever deployed it ({deployer}) may not approve it")
    return Plan("approve", f"Approve {mv.ref}", lines, mv.name, mv.version,
                stages=(StageChange(mv.name, mv.version, state.stage, Stage.APPROVED),),
                comment="required" if policy.release.approve_comment_required else "optional", basis=basis(None, state))


def reject(policy: Policy, mv: ModelVersion, state: ReleaseState) -> Plan:
    v = short(mv.name, mv.version, policy.model_name)
    lines = (f"release stage of {v}: {WORDS[state.stage]} → rejected",
             f"it can no longer be promoted (a new deploy to {policy.endpoints.staging} re-opens its review)",
             "your name, the time and your comment (required: say why) go into the audit trail",
             "nothing is undeployed: traffic does not change")
    return Plan("reject", f"Reject {mv.ref}", lines, mv.name, mv.version,
                stages=(StageChange(mv.name, mv.version, state.stage, Stage.REJECTED),), comment="required",
                basis=basis(None, state))


def regenerate_key(ep: Endpoint, which: str) -> Plan:
    other = "secondary" if which == "primary" else "primary"
    lines = (f"{ep.name}: the {which} key is replaced by a new random key",
             f"clients still using the old {which} key get 401 Unauthorized from that moment",
             f"the {other} key keeps working: move clients to it first for a rotation without downtime",
             "recorded in the audit trail")
    return Plan("regenerate_key", f"Regenerate the {which} key of {ep.name}", lines, env=ep.name, key=which,
                basis=basis(ep))


__all__ = ["COLOURS", "WORDS", "short", "dep_label", "traffic_text", "new_colour", "warm_previous", "full_split",
           "basis", "deploy", "promote", "canary", "canary_control", "rollback", "traffic", "smoke_test", "approve", "reject",
           "regenerate_key", "blue_green_steps"]
