"""Managed online endpoints as the release workflow drives them (``services.release.ports.EndpointDriver``).

Blue/green, as Azure ML documents it: PUT a deployment of the new version (the colour not
serving; it gets 0 % because the endpoint's traffic does not name it) and wait for the
long-running operation; the workflow smoke-tests it through the scoring URI with
``azureml-model-deployment: <colour>``; then PUT the endpoint with the new traffic (a canary
step is the same PUT with a partial split). A deployment that fails is deleted (a managed
deployment costs money while it exists). The new deployment copies the serving one's
environment, code, instance type and count, probes and settings (or the settings'
``deployment_template`` when the endpoint has none to copy). Operations started outside
Tollgate (the endpoint or a deployment Creating/Updating/Deleting) make ``busy`` refuse.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from ..entities import Endpoint, ModelVersion, ScoreResult
from ..errors import Conflict, GateFailed, ServiceError
from ..release.ports import Say
from .endpoints import AzureEndpoints, _text
from .errors import azure_call as translated

BUSY_STATES = {"creating", "updating", "deleting", "scaling"}


class AzureEndpointDriver:
    """``AzureEndpointDriver(ml_client, endpoints, deployment_template=None)``."""

    def __init__(self, ml_client, endpoints: AzureEndpoints, *, deployment_template: Mapping[str, Any] | None = None):
        self.ml, self.endpoints = ml_client, endpoints
        self.template = dict(deployment_template or {})
        self._pollers: dict[tuple[str, str], Any] = {}

    def names(self) -> list[str]:
        return self.endpoints.names()

    def snapshot(self, env: str) -> Endpoint:
        raw = self.endpoints._raw_endpoint(env)
        return self.endpoints._to_endpoint(raw, self.endpoints._raw_deployments(env), None)

    def busy(self, env: str) -> list[str]:
        self.endpoints.clear_cache()          # what Azure says now, not what a page read a moment ago
        raw = self.endpoints._raw_endpoint(env)
        busy = [f"endpoint {env} is {_text(raw.provisioning_state)}"] if _text(raw.provisioning_state) in BUSY_STATES \
            else []
        return busy + [f"deployment {d.name} is {_text(d.provisioning_state)}"
                       for d in self.endpoints._raw_deployments(env) if _text(d.provisioning_state) in BUSY_STATES]

    def ensure_running(self) -> None:
        """Managed endpoints are always up."""

    def create(self, env: str, name: str, mv: ModelVersion, actor: str, *, like: str | None, say: Say) -> None:
        deployments = {d.name: d for d in self.endpoints._raw_deployments(env)}
        spec = self._spec(env, name, mv, actor, deployments.get(like) if like else None)
        say(f"PUT deployment {env}/{name}")
        try:
            with translated(f"create deployment {env}/{name}"):
                self._pollers[(env, name)] = self.ml.online_deployments.begin_create_or_update(
                    spec, skip_script_validation=True)
        finally:
            self.endpoints.clear_cache()

    def wait_healthy(self, env: str, name: str, say: Say) -> None:
        poller = self._pollers.pop((env, name), None)
        if poller is None:
            return
        try:
            self.endpoints.wait(poller, f"create deployment {env}/{name}", say)
        except ServiceError as e:           # accepted, then failed to provision
            raise GateFailed(f"deployment {env}/{name} failed to provision ({e}); traffic unchanged",
                             hint="Its console log:\n" + self._log_or_note(env, name)) from e
        finally:
            self.endpoints.clear_cache()

    def shift(self, env: str, traffic: Mapping[str, int], say: Say) -> None:
        """PUT the endpoint with the split (azure-ai-ml leaves 0 % entries out) and wait for it."""
        raw = copy.deepcopy(self.endpoints._raw_endpoint(env))   # listings are cached: never mutated
        raw.traffic = {k: int(v) for k, v in traffic.items()}
        try:
            with translated(f"change the traffic of {env}"):
                poller = self.ml.online_endpoints.begin_create_or_update(raw)
            self.endpoints.wait(poller, f"shift the traffic of {env}", say)
        finally:
            self.endpoints.clear_cache()

    def settle(self, env: str, traffic: Mapping[str, int]) -> None:
        """The PUT waited for: Azure routes by the new split once it succeeded."""

    def stop(self, env: str, name: str, say: Say) -> None:
        """Delete the deployment: a managed deployment costs money while it exists, even at 0 %."""
        try:
            with translated(f"delete the deployment {env}/{name}"):
                poller = self.ml.online_deployments.begin_delete(name=name, endpoint_name=env)
            self.endpoints.wait(poller, f"delete the deployment {env}/{name}", say)
        finally:
            self.endpoints.clear_cache()

    def invoke(self, env: str, payload, *, deployment: str | None = None) -> ScoreResult:
        return self.endpoints.invoke(env, payload, deployment=deployment)

    def console_log(self, env: str, deployment: str, tail: int = 40) -> str:
        return self.endpoints.console_log(env, deployment, tail)

    def regenerate_key(self, env: str, which: str, say: Say) -> None:
        try:
            with translated(f"regenerate the {which} key of {env}"):
                poller = self.ml.online_endpoints.begin_regenerate_keys(env, key_type=which)
            self.endpoints.wait(poller, f"regenerate the {which} key of {env}", say)
        finally:
            self.endpoints.clear_cache()

    # --- the deployment's specification ---------------------------------------------------

    def _spec(self, env: str, colour: str, mv: ModelVersion, actor: str, like):
        """A copy of ``like`` (environment, code, instance type and count, probes, settings) with the
        new model — or the settings' template."""
        from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment
        model_id = self._model_arm_id(mv.name, mv.version)
        tags = {**((like.tags or {}) if like is not None else {}), "tollgate.deployed_by": actor,
                "tollgate.model": mv.ref}
        if like is not None:
            return ManagedOnlineDeployment(
                name=colour, endpoint_name=env, model=model_id, tags=tags,
                environment=like.environment, code_configuration=like.code_configuration,
                instance_type=like.instance_type, instance_count=like.instance_count or 1,
                environment_variables=like.environment_variables, request_settings=like.request_settings,
                liveness_probe=like.liveness_probe, readiness_probe=like.readiness_probe,
                app_insights_enabled=like.app_insights_enabled, scale_settings=like.scale_settings,
                description=f"{mv.ref} deployed by {actor}")
        t = self.template
        if not t.get("environment") or not t.get("instance_type"):
            raise Conflict(f"endpoint {env} has no deployment to copy the environment and instance type from",
                           hint="Set deployment_environment, deployment_code and instance_type in the Azure "
                                "settings (README, Use with Azure), or create a first deployment by hand.")
        code = CodeConfiguration(code=t["code"], scoring_script=t.get("scoring_script", "score.py")) \
            if t.get("code") else None
        return ManagedOnlineDeployment(name=colour, endpoint_name=env, model=model_id, tags=tags,
                                       environment=t["environment"], code_configuration=code,
                                       instance_type=t["instance_type"], instance_count=int(t.get("instance_count", 1)),
                                       app_insights_enabled=bool(t.get("app_insights_enabled", True)),
                                       description=f"{mv.ref} deployed by {actor}")

    def _model_arm_id(self, name: str, version: int) -> str:
        return (f"/subscriptions/{self.ml.subscription_id}/resourceGroups/{self.ml.resource_group_name}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.ml.workspace_name}"
                f"/models/{name}/versions/{version}")

    def _log_or_note(self, env: str, deployment: str, tail: int = 40) -> str:
        try:
            return self.endpoints.console_log(env, deployment, tail) or "(empty)"
        except ServiceError as e:
            return f"(the console log could not be read: {e})"


__all__ = ["AzureEndpointDriver", "BUSY_STATES"]
