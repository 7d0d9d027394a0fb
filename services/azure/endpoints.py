"""Managed online endpoints and the release workflow on an Azure ML workspace.

``AzureEndpoints`` and ``AzureReleases`` are the ``EndpointService`` and
``ReleaseService`` of the Azure workspace, with the public methods of
``services.local.endpoints`` (so pages and the CLI work unchanged). Both are built
from an ``MLClient`` handed in by the caller; scoring requests go through an
azure-core pipeline on ``transport`` (the same transport the ``MLClient`` got when
none is given), so a test can answer everything with ``ReplayTransport``.

Where things live (shared by every console and pipeline using the workspace):

* endpoints, deployments, traffic, keys: the managed online endpoints themselves
  (``ml_client.online_endpoints`` / ``online_deployments``); deployment status is its
  ARM ``provisioningState``;
* release state of a model version: tags on the model version (``tollgate.stage``,
  ``tollgate.deployed_by``, ``tollgate.decided_by``, ``tollgate.decision_comment``,
  ``tollgate.smoke_test_id``, ``tollgate.updated_at``); the champion: the model
  registry's ``champion`` alias (``models.set_alias``);
* who deployed a deployment: its ``tollgate.deployed_by`` tag;
* audit trail and smoke-test results: append blobs (``services.azure.audit``);
* one operation per endpoint at a time: a blob lease (``services.azure.audit``),
  plus a refusal while Azure itself reports the endpoint or a deployment
  Creating/Updating/Deleting (someone changing it outside Tollgate).

Blue/green, as Azure ML documents it: PUT a deployment of the new version (the colour
not serving; it gets 0 % because the endpoint's traffic does not name it) and wait for
the long-running operation, reporting progress; smoke test through the scoring URI
with ``azureml-model-deployment: <colour>`` (status, response schema and prediction
parity with the registered model's offline predictions); then PUT the endpoint with the
new traffic. Promote is the same on production; rollback and set_traffic are one
endpoint PUT. A deployment that fails to provision or fails its smoke test is deleted
(a managed deployment costs money while it exists), traffic untouched, and the error
carries its console log. Scoring is a POST to ``scoring_uri`` with the key — never
``online_endpoints.invoke()``, which keeps the key and deployment header in a dict
shared by later calls.
"""
from __future__ import annotations

import copy
import json
import logging
import re
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import UserAgentPolicy
from azure.core.rest import HttpRequest

from ..entities import (Deployment, Endpoint, ReleaseState, ScoreResult, SmokeCase, SmokeTestResult, Stage)
from ..errors import (BackendUnavailable, Conflict, Forbidden, GateFailed, InvalidInput, NotFound,
                      ServiceError)
from ..evaluation import evaluation_split, predict
from .. import release_rules as rules
from ..permissions import SYSTEM_ACTOR
from . import online_convert
from .audit import BlobAudit, OperationLocks
from .errors import azure_call as translated, translate

COLORS = ("blue", "green")
TAG = "tollgate."
STAGE_TAGS = ("stage", "deployed_by", "decided_by", "decision_comment", "smoke_test_id", "updated_at")
BUSY_STATES = {"creating", "updating", "deleting", "scaling"}
DEPLOYMENT_STATE = {"succeeded": "healthy", "creating": "starting", "updating": "starting",
                    "scaling": "starting", "deleting": "stopped", "failed": "failed", "canceled": "failed"}
_MODEL_ARM = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$", re.IGNORECASE)
_MODEL_SHORT = re.compile(r"^azureml:(?P<name>[^:/]+):(?P<version>\d+)$")

Progress = Callable[[str], None]


def mask(key: str | None) -> str:
    """First and last four characters; a key is never shown in full."""
    if not key:
        return ""
    return f"{key[:4]}…{key[-4:]}" if len(key) > 12 else "…"


def model_of(model_ref: Any) -> tuple[str, int] | None:
    """(name, version) from a deployment's model: an ARM id or ``azureml:name:version``."""
    text = str(model_ref or "")
    if online_convert.model_source(model_ref):  # a registry's or an anonymous model: not this workspace's
        return None
    m = _MODEL_ARM.search(text) or _MODEL_SHORT.match(text)
    return (m["name"], int(m["version"])) if m else None


def _error_message(e: Exception) -> str:
    err = getattr(e, "error", None)
    msg = getattr(err, "message", None) if err is not None else None
    if msg:
        return str(msg)
    text = getattr(e, "message", None) or str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def _quiet_azureml_polling() -> None:
    """azure-ai-ml's ``AzureMLPolling`` prints a dot to stdout per status poll (from the
    poller's thread), which corrupts the CLI's ``--json`` output and litters the console's
    log. Tollgate reports progress itself, so the dots are turned off, once, for the process
    (the same status logic as ``ARMPolling``, without the print)."""
    try:
        from azure.ai.ml._utils._azureml_polling import AzureMLPolling
        from azure.mgmt.core.polling.arm_polling import ARMPolling
    except ImportError:  # pragma: no cover - moved in another SDK version: only cosmetic
        return
    if AzureMLPolling.update_status is not ARMPolling.update_status:
        AzureMLPolling.update_status = ARMPolling.update_status
    # "Check: endpoint NAME exists" on stderr before every deployment PUT: not for our users
    logging.getLogger("azure.ai.ml.operations._online_deployment_operations").setLevel(logging.WARNING)


_quiet_azureml_polling()


def _text(value: Any) -> str:
    """An SDK enum (``DeploymentProvisioningState.SUCCEEDED``) or string as its value, lower case."""
    return str(getattr(value, "value", value) or "").lower()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _default_transport(ml_client):
    transport = getattr(ml_client, "_kwargs", {}).get("transport")
    if transport is None:
        from azure.core.pipeline.transport import RequestsTransport
        transport = RequestsTransport()
    return transport


class AzureEndpoints:
    """Managed online endpoints, deployments, keys and scoring (the EndpointService of Azure).

    ``AzureEndpoints(ml_client, policy, transport=None, poll_s=2.0, lro_timeout_s=1800)``:
    ``transport`` carries the scoring POSTs (default: the one given to ``MLClient``, else
    azure-core's requests transport).
    """

    MODELS_TTL_S = 60.0
    READ_TTL_S = 3.0

    def __init__(self, ml_client, policy, *, transport=None, poll_s: float = 2.0, lro_timeout_s: float = 1800):
        from azure.core import PipelineClient
        self.ml, self.policy = ml_client, policy
        self.poll_s, self.lro_timeout_s = poll_s, lro_timeout_s
        self._models_cache: tuple[float, dict] | None = None
        self._reads: dict[str, tuple[float, Any]] = {}
        self._scoring = PipelineClient(base_url="https://scoring.invalid", transport=transport or _default_transport(ml_client),
                                       policies=[UserAgentPolicy(user_agent="tollgate")])

    # --- processes: none to run on Azure ----------------------------------------

    def up(self) -> int:
        raise InvalidInput("Azure runs managed online endpoints itself: there is nothing to start",
                           hint="`up` and `down` start and stop the local workspace's endpoints; on Azure a "
                                "deployment serves while it exists (scale it with its instance count).")

    def down(self, timeout_s: float = 30) -> bool:
        self.up()
        return False

    def wait_gateways(self, timeout_s: float = 30) -> None:
        """Nothing to wait for: managed endpoints answer once their deployments succeed."""

    # --- reads ----------------------------------------------------------------

    def names(self) -> list[str]:
        return [self.policy.endpoints.staging, self.policy.endpoints.production]

    def _cached(self, key: str, read: Callable[[], Any]) -> Any:
        """Endpoint and deployment listings are kept ``READ_TTL_S`` seconds, so that a page
        polling an operation's progress (``ws.endpoints.get`` twice a second) does not
        poll ARM as often; every write through ``AzureReleases`` clears them."""
        now = time.monotonic()
        hit = self._reads.get(key)
        if hit is not None and now - hit[0] < self.READ_TTL_S:
            return hit[1]
        value = read()
        self._reads[key] = (now, value)
        return value

    def _raw_endpoints(self) -> dict[str, Any]:
        def read():
            with translated("list the online endpoints"):
                return {e.name: e for e in self.ml.online_endpoints.list()}
        return dict(self._cached("endpoints", read))

    def _raw_endpoint(self, name: str):
        found = self._raw_endpoints().get(name)
        if found is None:
            raise NotFound(f"endpoint {name!r} does not exist in the Azure ML workspace",
                           hint=f"Create the managed online endpoints {', '.join(self.names())} "
                                f"(README, Use with Azure).")
        return found

    def _raw_deployments(self, name: str) -> list:
        def read():
            with translated(f"list the deployments of {name}"):
                return list(self.ml.online_deployments.list(name))
        return list(self._cached(f"deployments/{name}", read))

    def _raw_keys(self, name: str, auth_mode: str | None) -> tuple[str, str] | None:
        """Both keys, or None when the endpoint does not use keys or the identity may not read them."""
        if (_text(auth_mode) or "key") != "key":
            return None
        return self._cached(f"keys/{name}", lambda: self._read_keys(name))

    def _read_keys(self, name: str) -> tuple[str, str] | None:
        ops = self.ml.online_endpoints
        try:
            try:  # one POST (listKeys); the public get_keys() GETs the endpoint first
                keys = ops._get_online_credentials(name=name, auth_mode="key")
            except (AttributeError, TypeError):
                keys = ops.get_keys(name)
        except HttpResponseError as e:
            if e.status_code == 403:
                return None
            raise translate(e, f"read the keys of {name}") from e
        except AzureError as e:
            raise translate(e, f"read the keys of {name}") from e
        return getattr(keys, "primary_key", None) or "", getattr(keys, "secondary_key", None) or ""

    def _to_endpoint(self, raw, deployments: list, keys: tuple[str, str] | None) -> Endpoint:
        traffic = {k: int(v) for k, v in (raw.traffic or {}).items()}
        deps = []
        for d in sorted(deployments, key=lambda d: d.name):
            ref = model_of(d.model) or ("", 0)
            ctx = getattr(d, "creation_context", None)
            state = DEPLOYMENT_STATE.get(_text(d.provisioning_state), "starting")
            deps.append(Deployment(
                name=d.name, endpoint=raw.name, model_name=ref[0], model_version=ref[1], state=state,
                traffic=traffic.get(d.name, 0), created_at=getattr(ctx, "created_at", None),
                created_by=(d.tags or {}).get(TAG + "deployed_by") or getattr(ctx, "created_by", None) or "",
                last_error=None if state != "failed" else f"provisioning {_text(d.provisioning_state)}",
                provisioning_state=online_convert.text(d.provisioning_state), compute=online_convert.compute_kind(d),
                instance_type=online_convert.text(getattr(d, "instance_type", None)),
                instance_count=online_convert.instance_count(d), model_source=online_convert.model_source(d.model)))
        up = _text(raw.provisioning_state) == "succeeded"
        return Endpoint(name=raw.name, scoring_uri=raw.scoring_uri or "", deployments=tuple(deps),
                        auth_mode=_text(raw.auth_mode) or "key",
                        primary_key_masked=mask(keys[0]) if keys else "",
                        secondary_key_masked=mask(keys[1]) if keys else "", gateway_up=up,
                        provisioning_state=online_convert.text(raw.provisioning_state),
                        compute=online_convert.compute_kind(raw))

    def get(self, name: str) -> Endpoint:
        """One endpoint with its masked keys: 3 requests (list endpoints, list its deployments,
        list keys), each kept ``READ_TTL_S`` seconds."""
        raw = self._raw_endpoint(name)
        return self._to_endpoint(raw, self._raw_deployments(name), self._raw_keys(name, raw.auth_mode))

    def list(self) -> list[Endpoint]:
        """The policy's endpoints that exist (staging, production): 1 request for the endpoints
        plus 1 per endpoint for its deployments. The keys are **not** read (a ``listKeys`` POST per
        endpoint that most pages never show): ``primary_key_masked``/``secondary_key_masked`` are
        ``""`` here; ``masked_keys(name)`` (or ``get(name)``) reads them where they are shown."""
        raws = self._raw_endpoints()
        return [self._to_endpoint(raws[n], self._raw_deployments(n), None) for n in self.names() if n in raws]

    def masked_keys(self, name: str) -> tuple[str, str] | None:
        """(primary, secondary) masked as on the local workspace (first and last four characters),
        for anyone who may read the endpoint; None when it does not use keys or the console's
        identity may not list them. One ``listKeys`` POST, kept ``READ_TTL_S`` seconds."""
        raw = self._raw_endpoint(name)
        keys = self._raw_keys(name, raw.auth_mode)
        return (mask(keys[0]), mask(keys[1])) if keys else None

    def deployment_models(self) -> dict[tuple[str, str], str]:
        """(endpoint, deployment) -> "name:version" of every deployment of the policy's endpoints,
        for telemetry; kept ``MODELS_TTL_S`` seconds (cleared by every release write)."""
        now = time.monotonic()
        cached = self._models_cache
        if cached is not None and now - cached[0] < self.MODELS_TTL_S:
            return cached[1]
        raws = self._raw_endpoints()
        found = {}
        for n in self.names():
            if n in raws:
                for d in self._raw_deployments(n):
                    ref = model_of(d.model)
                    if ref:
                        found[(n, d.name)] = f"{ref[0]}:{ref[1]}"
        self._models_cache = (now, found)
        return found

    def clear_cache(self) -> None:
        self._models_cache = None
        self._reads.clear()

    def keys(self, name: str, actor: str) -> tuple[str, str]:
        """Both keys in full (QA and admins)."""
        rules.authorize(self.policy, actor, "show_keys")
        raw = self._raw_endpoint(name)
        keys = self._raw_keys(name, raw.auth_mode)
        if keys is None:
            raise Forbidden(f"the keys of {name} cannot be read (auth mode {raw.auth_mode}, or no permission)",
                            hint="The console's identity needs the listKeys permission on the endpoint.")
        return keys

    def console_log(self, endpoint: str, deployment: str, tail: int = 200) -> str:
        """The inference server container's last ``tail`` lines (``online_deployments.get_logs``)."""
        if not 1 <= int(tail) <= 10_000:
            raise InvalidInput("tail must be between 1 and 10000 lines")
        with translated(f"read the console log of {endpoint}/{deployment}"):
            return self.ml.online_deployments.get_logs(name=deployment, endpoint_name=endpoint, lines=int(tail))

    # --- scoring --------------------------------------------------------------

    def invoke(self, name: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
               key: str | None = None, timeout_s: float = 30) -> ScoreResult:
        """POST to the endpoint's scoring URI as a client would (with the primary key);
        ``deployment`` pins one with the ``azureml-model-deployment`` header."""
        raw = self._raw_endpoint(name)
        if not raw.scoring_uri:
            raise BackendUnavailable(f"endpoint {name} has no scoring URI yet ({_text(raw.provisioning_state)})")
        if key is None:
            keys = self._raw_keys(name, raw.auth_mode)
            if keys is None:
                raise Forbidden(f"endpoint {name} uses {raw.auth_mode} authentication or its keys cannot be read",
                                hint="Tollgate scores key-authenticated endpoints.")
            key = keys[0]
        models = {d.name: model_of(d.model) for d in self._raw_deployments(name)}
        return self.post(raw.scoring_uri, key, payload, deployment=deployment, timeout_s=timeout_s, models=models)

    def post(self, scoring_uri: str, key: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
             timeout_s: float = 30, models: Mapping[str, tuple[str, int] | None] | None = None) -> ScoreResult:
        """One scoring request (no retries: a smoke test must see what a client sees)."""
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}",
                   "x-ms-client-request-id": str(uuid.uuid4())}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        request = HttpRequest("POST", scoring_uri, headers=headers,
                              content=body.encode() if isinstance(body, str) else body)
        started = time.perf_counter()
        try:
            response = self._scoring.send_request(request, connection_timeout=timeout_s, read_timeout=timeout_s)
        except AzureError as e:
            raise BackendUnavailable(f"the endpoint did not answer: {_error_message(e)}") from e
        latency = (time.perf_counter() - started) * 1000
        raw = response.content or b""
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        h = response.headers
        served = h.get("azureml-model-deployment")
        ref = (models or {}).get(served) if served else None
        return ScoreResult(response.status_code, parsed, latency,
                           h.get("x-request-id") or h.get("x-ms-request-id"), served,
                           f"{ref[0]}:{ref[1]}" if ref else None)

    # --- long-running operations ---------------------------------------------

    def wait(self, poller, what: str, progress: Progress | None = None):
        """Wait for an ARM long-running operation, reporting its status every ``poll_s``."""
        started = time.monotonic()
        last = None
        with translated(what):                  # the poller re-raises its thread's failure in wait()
            while not poller.done():
                status = f"{what}: {poller.status()} ({time.monotonic() - started:.0f} s)"
                if progress and status != last:
                    progress(status)
                    last = status
                if time.monotonic() - started > self.lro_timeout_s:
                    raise BackendUnavailable(f"{what} did not finish in {self.lro_timeout_s:.0f} s",
                                             hint="It may still finish; the Endpoints page shows its state.")
                poller.wait(self.poll_s)
            result = poller.result()
        if progress:
            progress(f"{what}: done ({time.monotonic() - started:.0f} s)")
        return result


class AzureReleases:
    """The release workflow on managed online endpoints (the ReleaseService of Azure).

    ``AzureReleases(ml_client, policy, models, datasets, endpoints, evaluation, audit, locks)``:
    ``models``/``datasets``/``evaluation`` are the workspace's (``set_tags``, ``set_alias``,
    ``load``, ``gate``), ``audit`` a ``BlobAudit``, ``locks`` an ``OperationLocks``.
    Optional ``deployment_template`` (environment, code, scoring_script, instance_type,
    instance_count) describes a first deployment on an endpoint that has none to copy.
    Every long method takes ``progress=callable(str)``.
    """

    def __init__(self, ml_client, policy, models, datasets, endpoints: AzureEndpoints, evaluation,
                 audit: BlobAudit, locks: OperationLocks, *, deployment_template: Mapping[str, Any] | None = None):
        self.ml, self.policy = ml_client, policy
        self.models, self.datasets, self.endpoints, self.evaluation = models, datasets, endpoints, evaluation
        self.trail, self.locks = audit, locks
        self.template = dict(deployment_template or {})

    # --- reads ----------------------------------------------------------------

    def state(self, name: str, version: int) -> ReleaseState:
        return _state_of(self.models.get(name, version))

    def states(self, name: str | None = None) -> list[ReleaseState]:
        """Release state of every version that left the registry, newest change first."""
        found = [_state_of(mv) for mv in self.models.versions(name) if mv.tags.get(TAG + "stage")]
        return sorted(found, key=lambda s: s.updated_at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)

    def smoke_test_result(self, test_id: int) -> SmokeTestResult:
        rec = self.trail.get(test_id)
        if rec.action != "smoke_test" or not rec.after or "cases" not in rec.after:
            raise NotFound(f"smoke test {test_id} does not exist")
        return _to_smoke(rec)

    def smoke_tests(self, limit: int = 50) -> list[SmokeTestResult]:
        return [_to_smoke(r) for r in self.trail.find("smoke_test", limit) if r.after and "cases" in r.after]

    def audit(self, limit: int | None = None):
        return self.trail.audit(limit)

    # --- the workflow ---------------------------------------------------------

    def deploy(self, name: str, version: int, env: str, actor: str, *, progress: Progress | None = None) -> Endpoint:
        """Blue/green deploy of ``name:version`` to staging (module docstring)."""
        rules.authorize(self.policy, actor, "deploy")  # before reading anything
        mv = self.models.get(name, version)
        role = rules.check_deploy(self.policy, actor, env, mv, self.endpoints.names())
        state = _state_of(mv)
        smoke = self._blue_green(env, mv, actor, role, "deploy", progress=progress)
        stage = (Stage.PRODUCTION if env == self.policy.endpoints.production
                 else state.stage if state.stage in (Stage.APPROVED, Stage.PRODUCTION) else Stage.AWAITING_APPROVAL)
        self._set_stage(mv.name, mv.version, stage, actor, role, "release.stage", before=state,
                        deployed_by=actor, smoke_test_id=smoke.id)
        if env == self.policy.endpoints.production:
            self.models.set_alias(mv.name, "champion", mv.version, actor=actor)
        else:
            self._keep_evaluation(mv)
        return self.endpoints.get(env)

    def _keep_evaluation(self, mv) -> None:
        """Evaluate the candidate against the champion now, while its model and data are in
        memory from the smoke test: the evaluation is kept (``AzureEvaluator``), so the
        reviewers' Releases page and the approve/promote gates read one small file. Best
        effort: a failure here leaves the deploy as it is (the gate scores the models then)."""
        compare = getattr(self.evaluation, "compare", None)
        if compare is None:
            return
        try:
            compare(mv.name, mv.version)
        except ServiceError:
            pass

    def smoke_test(self, env: str, actor: str, deployment: str | None = None) -> SmokeTestResult:
        """Run the smoke test against the endpoint's serving deployment (or ``deployment``)."""
        role = rules.authorize(self.policy, actor, "smoke_test")
        ep = self.endpoints.get(env)
        target = next((d for d in ep.deployments if d.name == deployment), None) if deployment else ep.live
        if target is None:
            raise Conflict(f"endpoint {env} has no deployment {'named ' + deployment if deployment else 'serving traffic'}")
        return self._run_smoke(env, target.name, self.models.get(target.model_name, target.model_version), actor, role)

    def approve(self, name: str, version: int, actor: str, comment: str = "") -> ReleaseState:
        role = rules.authorize(self.policy, actor, "approve")
        state = self.state(name, version)
        rules.check_approve(state, actor)
        gate = self.evaluation.gate(name, state.model_version)
        if not gate.passed:
            raise GateFailed(f"{state.ref} does not pass the quality gate: " + "; ".join(gate.reasons))
        return self._set_stage(name, state.model_version, Stage.APPROVED, actor, role, "approve", before=state,
                               decided_by=actor, decision_comment=comment)

    def reject(self, name: str, version: int, actor: str, comment: str) -> ReleaseState:
        role = rules.authorize(self.policy, actor, "reject")
        state = self.state(name, version)
        rules.check_reject(state, comment)
        return self._set_stage(name, state.model_version, Stage.REJECTED, actor, role, "reject", before=state,
                               decided_by=actor, decision_comment=comment)

    def promote(self, name: str, version: int, actor: str, comment: str = "", *,
                progress: Progress | None = None) -> Endpoint:
        """Blue/green to production of an approved version; the previous one stays warm."""
        role = rules.authorize(self.policy, actor, "promote")
        state = self.state(name, version)
        prod = self.policy.endpoints.production
        live = self.endpoints.get(prod).live
        if state.stage == Stage.PRODUCTION and live is not None and live.model_ref == state.ref:
            return self.endpoints.get(prod)  # idempotent: already serving
        smoke = self.smoke_test_result(state.smoke_test_id) if state.smoke_test_id else None
        gate = self.evaluation.gate(name, state.model_version)
        rules.check_promote(state, smoke, gate.passed, gate.reasons)
        mv = self.models.get(name, state.model_version)
        self._blue_green(prod, mv, actor, role, "promote", comment, progress=progress)
        self.models.set_alias(name, "champion", mv.version, actor=actor)
        self._set_stage(name, mv.version, Stage.PRODUCTION, actor, role, "release.stage", before=state)
        if live and live.model_ref != mv.ref and live.model_name:
            self._set_stage(live.model_name, live.model_version, Stage.RETIRED, actor, role, "release.stage")
        return self.endpoints.get(prod)

    def rollback(self, env: str, actor: str, comment: str = "", *, progress: Progress | None = None) -> Endpoint:
        """Give the traffic back to the warm previous deployment (one endpoint PUT)."""
        role = rules.authorize(self.policy, actor, "rollback")
        with self._operation(env, actor, "rollback") as (raw, deployments):
            ep = self.endpoints._to_endpoint(raw, deployments, None)
            live = ep.live
            warm = [d for d in ep.deployments if d is not live and d.state == "healthy" and d.traffic == 0]
            if live is None or not warm:
                raise Conflict(f"endpoint {env} has no previous deployment to roll back to",
                               hint="Rollback needs a warm previous deployment (kept after each promote).")
            back = warm[0]
            self._shift(env, {back.name: 100, live.name: 0}, actor, role, "rollback", comment, progress, raw=raw,
                        names=[d.name for d in deployments])
        if env == self.policy.endpoints.production and back.model_name:
            self.models.set_alias(back.model_name, "champion", back.model_version, actor=actor)
            if live.model_name:
                self._set_stage(live.model_name, live.model_version, Stage.ROLLED_BACK, actor, role, "release.stage")
            self._set_stage(back.model_name, back.model_version, Stage.PRODUCTION, actor, role, "release.stage")
        return self.endpoints.get(env)

    def set_traffic(self, env: str, traffic: Mapping[str, int], actor: str, comment: str = "", *,
                    progress: Progress | None = None) -> Endpoint:
        role = rules.authorize(self.policy, actor, "set_traffic")
        rules.check_traffic(self.endpoints.get(env), traffic)
        with self._operation(env, actor, "set_traffic") as (raw, deployments):
            self._shift(env, dict(traffic), actor, role, "traffic", comment, progress, raw=raw,
                        names=[d.name for d in deployments])
        return self.endpoints.get(env)

    def regenerate_key(self, env: str, which: str, actor: str, *, progress: Progress | None = None) -> Endpoint:
        role = rules.authorize(self.policy, actor, "regenerate_key")
        if which not in ("primary", "secondary"):
            raise InvalidInput("which key: 'primary' or 'secondary'")
        self.endpoints._raw_endpoint(env)
        with self._operation(env, actor, "regenerate_key"):
            with translated(f"regenerate the {which} key of {env}"):
                poller = self.ml.online_endpoints.begin_regenerate_keys(env, key_type=which)
            self.endpoints.wait(poller, f"regenerate the {which} key of {env}", progress)
            self.trail.record(actor, "key.regenerate", f"{env}/{which}", role=role)
        return self.endpoints.get(env)

    # --- mechanics ------------------------------------------------------------

    @contextmanager
    def _operation(self, env: str, actor: str, op: str) -> Iterator[tuple[Any, list]]:
        """One long-running operation per endpoint at a time: refused, not queued. Yields the
        endpoint and its deployments as Azure has them once the lock is held."""
        with self.locks.hold(f"endpoint-{env}", actor, op, f"endpoint {env}"):
            self.endpoints.clear_cache()
            raw = self.endpoints._raw_endpoint(env)
            deployments = self.endpoints._raw_deployments(env)
            busy = [f"endpoint {env} is {_text(raw.provisioning_state)}"] if _text(raw.provisioning_state) in BUSY_STATES else []
            busy += [f"deployment {d.name} is {_text(d.provisioning_state)}" for d in deployments
                     if _text(d.provisioning_state) in BUSY_STATES]
            if busy:
                raise Conflict(f"an operation is already in progress on Azure: {'; '.join(busy)}",
                               hint="Wait for it to finish (it may have been started outside Tollgate).")
            try:
                yield raw, deployments
            finally:
                self.endpoints.clear_cache()

    def _blue_green(self, env: str, mv, actor: str, role: str, action: str, comment: str = "", *,
                    progress: Progress | None = None) -> SmokeTestResult:
        say = progress or (lambda _msg: None)
        with self._operation(env, actor, action) as (raw, deployments):
            traffic = {k: int(v) for k, v in (raw.traffic or {}).items()}
            serving = [d for d in deployments if traffic.get(d.name, 0) > 0]
            live = max(serving, key=lambda d: traffic[d.name]) if serving else None
            colour = next(c for c in COLORS if c != (live.name if live else None))
            replaced = next((d for d in deployments if d.name == colour), None)
            spec = self._deployment_spec(env, colour, mv, actor, live or replaced or (deployments[0] if deployments else None))
            self.trail.record(actor, f"{action}.started", f"{env}/{colour}", role=role, comment=comment,
                              before={"traffic": traffic}, after={"deployment": colour, "model": mv.ref, "traffic": 0})
            say(f"creating deployment {env}/{colour} with {mv.ref} at 0 % traffic")
            try:
                with translated(f"create deployment {env}/{colour}"):
                    poller = self.ml.online_deployments.begin_create_or_update(spec, skip_script_validation=True)
            except ServiceError as e:           # refused outright (403, 409, 400…): nothing was created
                self.trail.record(actor, f"{action}.failed", f"{env}/{colour}", role=role,
                                  after={"model": mv.ref, "summary": str(e)})
                raise
            try:
                self.endpoints.wait(poller, f"create deployment {env}/{colour}", progress)
            except ServiceError as e:           # accepted, then failed to provision
                log = self._log_or_note(env, colour)
                self._discard(env, colour, actor, role, action, mv, f"provisioning failed: {e}", progress)
                raise GateFailed(f"deployment {env}/{colour} of {mv.ref} failed to provision ({e}); traffic unchanged",
                                 hint="Its console log:\n" + log) from e
            say(f"smoke test of {mv.ref} on {env}/{colour}")
            try:
                smoke = self._run_smoke(env, colour, mv, actor, role)
            except ServiceError as e:           # no inputs, no key…: nothing proves it works
                self._discard(env, colour, actor, role, action, mv, f"smoke test could not run: {e}", progress)
                raise GateFailed(f"the smoke test of {mv.ref} on {env}/{colour} could not run ({e}); "
                                 f"traffic unchanged", hint=e.hint) from e
            if not smoke.passed:
                self._discard(env, colour, actor, role, action, mv, smoke.summary, progress, smoke_id=smoke.id)
                raise GateFailed(f"smoke test of {mv.ref} on {env}/{colour} failed: {smoke.summary}; traffic unchanged",
                                 hint=_failed_cases(smoke))
            self._shift(env, {colour: 100, **({live.name: 0} if live else {})}, actor, role, action, comment,
                        progress, raw=raw, names=[d.name for d in deployments] + [colour])
            return smoke

    def _deployment_spec(self, env: str, colour: str, mv, actor: str, like):
        """The new deployment: a copy of the serving one (environment, code, instance type
        and count, probes, settings) with the new model — or the settings' template."""
        from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment
        model_id = self._model_arm_id(mv.name, mv.version)
        tags = {**((like.tags or {}) if like is not None else {}), TAG + "deployed_by": actor,
                TAG + "model": mv.ref}
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

    def _discard(self, env: str, colour: str, actor: str, role: str, action: str, mv, why: str,
                 progress: Progress | None, smoke_id: int | None = None) -> None:
        """Delete a deployment that failed (it costs money at 0 %); traffic is untouched."""
        after = {"model": mv.ref, "summary": why, **({"smoke_test": smoke_id} if smoke_id else {})}
        try:
            with translated(f"delete the failed deployment {env}/{colour}"):
                poller = self.ml.online_deployments.begin_delete(name=colour, endpoint_name=env)
            self.endpoints.wait(poller, f"delete the failed deployment {env}/{colour}", progress)
            after["deleted"] = True
        except ServiceError as e:
            after["deleted"] = False
            after["delete_error"] = str(e)
        self.trail.record(actor, f"{action}.failed", f"{env}/{colour}", role=role, after=after)

    def _shift(self, env: str, traffic: Mapping[str, int], actor: str, role: str, action: str, comment: str,
               progress: Progress | None, raw=None, names=()) -> None:
        """PUT the endpoint with the new traffic and wait for it; audit before/after (every
        deployment named, 0 % included: Azure leaves zeroes out)."""
        raw = copy.deepcopy(raw or self.endpoints._raw_endpoint(env))   # listings are cached: never mutated
        before = {**{n: 0 for n in names}, **{k: int(v) for k, v in (raw.traffic or {}).items()}}
        after = {**before, **{k: int(v) for k, v in traffic.items()}}
        raw.traffic = dict(after)
        if progress:
            progress(f"shifting traffic on {env}: " + ", ".join(f"{k} {v} %" for k, v in after.items()))
        with translated(f"change the traffic of {env}"):
            poller = self.ml.online_endpoints.begin_create_or_update(raw)
        self.endpoints.wait(poller, f"shift the traffic of {env}", progress)
        self.trail.record(actor, action, env, role=role, before={"traffic": before}, after={"traffic": after},
                          comment=comment)

    def _smoke_inputs(self, mv) -> tuple[list[tuple[str, list[float], float | None]], str | None]:
        """Named cases from the held-out split with the registered model's offline
        predictions; (cases, None), or ([...] without expectations, why parity is not checked)."""
        frame = self.datasets.load(mv.dataset, mv.dataset_version)
        X, _ = evaluation_split(frame, self.policy)
        sample = X.head(self.policy.smoke.cases)
        note = None
        try:
            model = self.models.load(mv.name, mv.version)
            names = getattr(model, "feature_names_in_", None)
            features = [str(f) for f in names] if names is not None else []
            if not features and hasattr(self.models, "features"):
                features = list(self.models.features(mv.name, mv.version))
            features = features or list(sample.columns)
            offline = [float(v) for v in predict(model, sample, mv.ref)]
        except ServiceError as e:
            features, offline, note = list(sample.columns), [None] * len(sample), f"parity not checked: {e}"
        cases = [(f"held-out row {idx}", [float(row[f]) for f in features], exp)
                 for (idx, row), exp in zip(sample.iterrows(), offline)]
        return cases, note

    def _run_smoke(self, env: str, deployment: str, mv, actor: str, role: str) -> SmokeTestResult:
        """Cases from the held-out split through the scoring URI, pinned to ``deployment``:
        status, response schema, parity with the offline predictions; plus a malformed
        request that must get a 4xx. Recorded in the audit trail (its id is the result's id)."""
        raw = self.endpoints._raw_endpoint(env)
        keys = self.endpoints._raw_keys(env, raw.auth_mode)
        if not raw.scoring_uri or keys is None:
            raise BackendUnavailable(f"endpoint {env} cannot be scored (no scoring URI or no readable key)")
        uri, key = raw.scoring_uri, keys[0]
        tol = self.policy.smoke.tolerance
        cases: list[SmokeCase] = []
        inputs, note = self._smoke_inputs(mv)
        for name, row, expected in inputs:
            res = self.endpoints.post(uri, key, {"data": [row]}, deployment=deployment)
            if res.status != 200:
                cases.append(SmokeCase(name, False, res.status, expected, None, f"HTTP {res.status}: {res.body}"))
                continue
            preds = res.body.get("predictions") if isinstance(res.body, dict) else None
            if not (isinstance(preds, list) and len(preds) == 1 and isinstance(preds[0], (int, float))):
                cases.append(SmokeCase(name, False, res.status, expected, None,
                                       f"response does not match {{'predictions': [number]}}: {res.body!r:.200}"))
                continue
            got = float(preds[0])
            if expected is None:
                cases.append(SmokeCase(name, True, res.status, None, got, f"answered; {note}"))
                continue
            ok = bool(abs(got - expected) <= tol * max(1.0, abs(expected)))
            cases.append(SmokeCase(name, ok, res.status, expected, got,
                                   "matches the offline prediction" if ok else
                                   f"differs from the offline prediction by {abs(got - expected):.6g}"))
        bad = self.endpoints.post(uri, key, '{"data": [[1, 2, 3]]}', deployment=deployment)
        cases.append(SmokeCase("wrong number of features → 4xx", 400 <= bad.status < 500, bad.status, None, None,
                               f"HTTP {bad.status}: {bad.body}"))
        passed = all(c.passed for c in cases)
        failed = [c for c in cases if not c.passed]
        summary = (f"{len(cases)} cases passed" if passed else f"{len(failed)} of {len(cases)} cases failed")
        if note:
            summary += f" ({note})"
        rec = self.trail.record(actor, "smoke_test", f"{env}/{deployment}", role=role, after={
            "passed": passed, "model": mv.ref, "summary": summary, "endpoint": env, "deployment": deployment,
            "cases": [c.__dict__ for c in cases]})
        return _to_smoke(rec)

    def _set_stage(self, name: str, version: int, stage: Stage, actor: str, role: str, action: str, *,
                   before: ReleaseState | None = None, **fields) -> ReleaseState:
        before = before or self.state(name, version)
        tags = {TAG + "stage": stage.value, TAG + "updated_at": _utcnow().isoformat()}
        for k, v in fields.items():
            tags[TAG + k] = None if v is None else str(v)
        # the stage is kept in tags: written by the workflow itself (the actor's role was checked for
        # ``action`` above, and the record below is theirs), not as a tag edit of the actor's
        mv = self.models.set_tags(name, version, tags, actor=SYSTEM_ACTOR)
        self.trail.record(actor, action, f"{name}:{version}", role=role, before={"stage": before.stage.value},
                          after={"stage": stage.value}, comment=fields.get("decision_comment") or "")
        return _state_of(mv) if getattr(mv, "tags", None) is not None else self.state(name, version)


def _state_of(mv) -> ReleaseState:
    t = mv.tags or {}
    try:
        stage = Stage(t.get(TAG + "stage") or Stage.REGISTERED.value)
    except ValueError:
        stage = Stage.REGISTERED
    smoke = t.get(TAG + "smoke_test_id")
    updated = t.get(TAG + "updated_at")
    return ReleaseState(mv.name, mv.version, stage, t.get(TAG + "deployed_by") or None,
                        t.get(TAG + "decided_by") or None, t.get(TAG + "decision_comment") or None,
                        int(smoke) if smoke and str(smoke).isdigit() else None,
                        datetime.fromisoformat(updated) if updated else None)


def _to_smoke(rec) -> SmokeTestResult:
    a = rec.after or {}
    env, _, dep = rec.target.partition("/")
    name, _, version = str(a.get("model", ":0")).rpartition(":")
    return SmokeTestResult(rec.id, a.get("endpoint", env), a.get("deployment", dep), name,
                           int(version) if version.isdigit() else 0, rec.at, rec.actor, bool(a.get("passed")),
                           a.get("summary", ""), tuple(SmokeCase(**c) for c in a.get("cases", ())))


def _failed_cases(smoke: SmokeTestResult) -> str:
    return "\n".join(f"{c.name}: {c.detail}" for c in smoke.cases if not c.passed)
