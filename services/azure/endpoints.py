"""Managed online endpoints of an Azure ML workspace (the ``EndpointService`` of Azure).

``AzureEndpoints`` is built from an ``MLClient`` handed in by the caller; scoring requests
go through an azure-core pipeline on ``transport`` (the same transport the ``MLClient`` got
when none is given), so a test can answer everything with ``ReplayTransport``. The release
workflow (``services.release``) drives these endpoints through
``services.azure.release_driver`` and keeps its state with ``services.azure.ledger``.

Endpoints, deployments, traffic and keys are the managed online endpoints themselves
(``ml_client.online_endpoints`` / ``online_deployments``); a deployment's status is its ARM
``provisioningState``; who deployed it, its ``tollgate.deployed_by`` tag. Reads are kept a
few seconds (a page polling an operation's progress does not poll ARM as often); every
write through the release driver clears them. Scoring is a POST to ``scoring_uri`` with the
credential the endpoint's auth mode asks for (key, Azure ML token or Microsoft Entra token:
``services.azure.scoring_auth``) — never ``online_endpoints.invoke()``, which keeps the key and
deployment header in a dict shared by later calls. Managed endpoints are always up: ``up``/``down`` and the
gateway's log are not Azure's (``Unsupported``; not in the workspace's capabilities).
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Callable, Mapping

from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import UserAgentPolicy
from azure.core.rest import HttpRequest

from ..entities import Deployment, Endpoint, ScoreResult
from ..errors import BackendUnavailable, Forbidden, InvalidInput, NotFound, Unsupported
from ..permissions import authorize
from . import online_convert
from .errors import azure_call as translated
from .provisioning import ProvisioningReasons
from .scoring_auth import KEY, ScoringAuth, auth_mode

TAG = "tollgate."
DEPLOYMENT_STATE = {"succeeded": "healthy", "creating": "starting", "updating": "starting",
                    "scaling": "starting", "deleting": "stopped", "failed": "failed", "canceled": "failed"}
_MODEL_ARM = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$", re.IGNORECASE)
_MODEL_SHORT = re.compile(r"^azureml:(?P<name>[^:/]+):(?P<version>\d+)$")

Progress = Callable[[str], None]   # what a long-running operation is doing, in words


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

    def __init__(self, ml_client, policy, *, credential=None, transport=None, poll_s: float = 2.0,
                 lro_timeout_s: float = 1800):
        from azure.core import PipelineClient
        self.ml, self.policy = ml_client, policy
        self.poll_s, self.lro_timeout_s = poll_s, lro_timeout_s
        self._models_cache: tuple[float, dict] | None = None
        self._reads: dict[str, tuple[float, Any]] = {}
        self.auth = ScoringAuth(ml_client, credential, self._cached)
        self.failures = ProvisioningReasons(ml_client, credential, transport, self._cached)
        self._scoring = PipelineClient(base_url="https://scoring.invalid", transport=transport or _default_transport(ml_client),
                                       policies=[UserAgentPolicy(user_agent="tollgate")])

    # --- processes: none to run on Azure ----------------------------------------

    def up(self, actor: str) -> int:
        raise Unsupported("Azure runs managed online endpoints itself: there is nothing to start",
                          hint="`up` and `down` start and stop the local workspace's endpoints; on Azure a "
                               "deployment serves while it exists (scale it with its instance count).")

    def down(self, actor: str, timeout_s: float = 30) -> bool:
        return self.up(actor)

    def gateway_log(self, endpoint: str, tail: int = 200) -> str:
        raise Unsupported("managed online endpoints have no gateway log of Tollgate's",
                          hint="Their requests are in the traffic log: the Logs page, or tollgate.py logs.")

    def wait_gateways(self, timeout_s: float = 30) -> None:
        """Nothing to wait for: managed endpoints answer once their deployments succeed."""

    # --- reads ----------------------------------------------------------------

    def names(self) -> list[str]:
        return [self.policy.endpoints.staging, self.policy.endpoints.production]

    def _cached(self, key: str, read: Callable[[], Any]) -> Any:
        """Endpoint and deployment listings are kept ``READ_TTL_S`` seconds, so that a page
        polling an operation's progress (``ws.endpoints.get`` twice a second) does not
        poll ARM as often; every write through the release driver clears them."""
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

    def _raw_keys(self, name: str, mode: Any) -> tuple[str, str] | None:
        """Both keys, or None when the endpoint does not use keys or the identity may not read them."""
        return self.auth.keys(name) if auth_mode(mode) == KEY else None

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
                last_error=self._failure(raw.name, d, state),
                provisioning_state=online_convert.text(d.provisioning_state), compute=online_convert.compute_kind(d),
                instance_type=online_convert.text(getattr(d, "instance_type", None)),
                instance_count=online_convert.instance_count(d), model_source=online_convert.model_source(d.model)))
        up = _text(raw.provisioning_state) == "succeeded"
        return Endpoint(name=raw.name, scoring_uri=raw.scoring_uri or "", deployments=tuple(deps),
                        auth_mode=auth_mode(raw.auth_mode),
                        primary_key_masked=mask(keys[0]) if keys else "",
                        secondary_key_masked=mask(keys[1]) if keys else "", gateway_up=up,
                        provisioning_state=online_convert.text(raw.provisioning_state),
                        provisioning_error=self.failures.endpoint(raw) if _text(raw.provisioning_state) == "failed"
                        else "", compute=online_convert.compute_kind(raw))

    def _failure(self, endpoint: str, d: Any, state: str) -> str | None:
        """Why a deployment failed to provision (Azure's operation error, else its console log's)."""
        if state != "failed":
            return None
        return f"provisioning {online_convert.text(d.provisioning_state)}: {self.failures.deployment(endpoint, d)}"

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
        authorize(self.policy, actor, "show_keys")
        raw = self._raw_endpoint(name)
        keys = self._raw_keys(name, raw.auth_mode)
        if keys is None:
            raise Forbidden(f"the keys of {name} cannot be read (auth mode {raw.auth_mode}, or no permission)",
                            hint="The console's identity needs the listKeys permission on the endpoint.")
        return keys

    def bearer(self, name: str) -> str:
        """What a client sends as ``Authorization: Bearer`` to ``name``: its primary key, its Azure ML
        token or the signed-in identity's token, by its auth mode (``scoring_auth``). For the services
        that score (the simulator); never shown or logged."""
        return self.auth.bearer(name, self._raw_endpoint(name).auth_mode)

    def console_log(self, endpoint: str, deployment: str, tail: int = 200) -> str:
        """The inference server container's last ``tail`` lines (``online_deployments.get_logs``)."""
        if not 1 <= int(tail) <= 10_000:
            raise InvalidInput("tail must be between 1 and 10000 lines")
        with translated(f"read the console log of {endpoint}/{deployment}"):
            return self.ml.online_deployments.get_logs(name=deployment, endpoint_name=endpoint, lines=int(tail))

    # --- scoring --------------------------------------------------------------

    def invoke(self, name: str, payload: str | bytes | Mapping, *, deployment: str | None = None,
               key: str | None = None, timeout_s: float = 30) -> ScoreResult:
        """POST to the endpoint's scoring URI as a client would (with what its auth mode asks for);
        ``deployment`` pins one with the ``azureml-model-deployment`` header."""
        raw = self._raw_endpoint(name)
        if not raw.scoring_uri:
            raise BackendUnavailable(f"endpoint {name} has no scoring URI yet ({_text(raw.provisioning_state)})")
        if key is None:
            key = self.auth.bearer(name, raw.auth_mode)
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
        """Wait for an ARM long-running operation, reporting its status when it changes (polled
        every ``poll_s``; the step it belongs to keeps the time)."""
        started = time.monotonic()
        last = None
        with translated(what):                  # the poller re-raises its thread's failure in wait()
            while not poller.done():
                status = f"{what}: {poller.status()}"
                if progress and status != last:
                    progress(status)
                    last = status
                if time.monotonic() - started > self.lro_timeout_s:
                    raise BackendUnavailable(f"{what} did not finish in {self.lro_timeout_s:.0f} s",
                                             hint="It may still finish; the Endpoints page shows its state.")
                poller.wait(self.poll_s)
            result = poller.result()
        if progress:
            progress(f"{what}: done")
        return result
