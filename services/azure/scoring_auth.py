"""What a scoring request to a managed online endpoint carries, chosen by the endpoint's auth mode.

An Azure ML online endpoint takes one kind of credential (its ``auth_mode``, data on ``Endpoint``):

============  =====================================================  ==============================
auth mode     ``Authorization: Bearer …``                            read with
============  =====================================================  ==============================
``key``       the endpoint's primary key (does not expire)           ``POST …/onlineEndpoints/E/listKeys``
``aml_token`` a token Azure ML issues for the endpoint (expires)     ``POST …/onlineEndpoints/E/token``
``aad_token`` the signed-in identity's Microsoft Entra token          ``credential.get_token("https://ml.azure.com/.default")``
============  =====================================================  ==============================

``ScoringAuth.bearer(name, auth_mode)`` is the one place that chooses (``_READERS``); the smoke test,
the Test panel and the simulator all score through it. Secrets stay in ``services/``: pages get
``mask()``-ed text, and nothing here logs a secret (``Secret`` hides its value from ``repr``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from azure.core.exceptions import AzureError, HttpResponseError

from ..errors import Forbidden, Unsupported
from .errors import translate

KEY, AML_TOKEN, AAD_TOKEN = "key", "aml_token", "aad_token"
AUTH_MODES = (KEY, AML_TOKEN, AAD_TOKEN)
AAD_SCOPE = "https://ml.azure.com/.default"   # azure-ai-ml's AAD_TOKEN_RESOURCE_ENDPOINT as a scope
TOKEN_MARGIN_S = 60.0                          # a token this close to its expiry is read again

_REST_MODES = {"key": KEY, "amltoken": AML_TOKEN, "aml_token": AML_TOKEN, "aadtoken": AAD_TOKEN,
               "aad_token": AAD_TOKEN}


def auth_mode(value: Any) -> str:
    """Azure's auth mode (SDK ``aml_token``, REST ``AMLToken``, an enum) as one of ``AUTH_MODES``;
    an unknown one is kept, lower case, and refused when a request is to be sent."""
    text = str(getattr(value, "value", value) or "").strip()
    return _REST_MODES.get(text.lower(), text.lower() or KEY)


@dataclass(frozen=True)
class Secret:
    """A key or token; ``expires_at`` (epoch seconds) for tokens. Its value never appears in a repr."""
    value: str = field(repr=False)
    expires_at: float | None = None

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at - TOKEN_MARGIN_S


class ScoringAuth:
    """Reads an endpoint's keys or token. ``cached(key, read)`` keeps reads a few seconds (the
    endpoints' read cache); tokens are kept until shortly before they expire as well."""

    def __init__(self, ml_client, credential, cached: Callable[[str, Callable[[], Any]], Any],
                 clock: Callable[[], float] = time.time):
        self.ml, self.credential, self.cached, self.clock = ml_client, credential, cached, clock
        self._tokens: dict[str, Secret] = {}

    def bearer(self, name: str, mode: str) -> str:
        """What ``Authorization: Bearer`` carries to endpoint ``name`` with auth mode ``mode``."""
        reader = _READERS.get(auth_mode(mode))
        if reader is None:
            raise Unsupported(f"endpoint {name} uses the auth mode {mode!r}, which Tollgate cannot send with",
                              hint=f"Tollgate scores endpoints with the auth modes {', '.join(AUTH_MODES)}.")
        return reader(self, name).value

    # --- keys -------------------------------------------------------------------------------

    def keys(self, name: str) -> tuple[str, str] | None:
        """Both keys, or None when the console's identity may not read them (403)."""
        return self.cached(f"keys/{name}", lambda: self._read_keys(name))

    def _read_keys(self, name: str) -> tuple[str, str] | None:
        ops = self.ml.online_endpoints
        try:  # one POST (listKeys); the public get_keys() GETs the endpoint first
            keys = ops._get_online_credentials(name=name, auth_mode="key")
        except HttpResponseError as e:
            if e.status_code == 403:
                return None
            raise translate(e, f"read the keys of {name}") from e
        except AzureError as e:
            raise translate(e, f"read the keys of {name}") from e
        return keys.primary_key or "", keys.secondary_key or ""

    def _primary_key(self, name: str) -> Secret:
        keys = self.keys(name)
        if keys is None:
            raise Forbidden(f"the keys of endpoint {name} cannot be read",
                            hint="The console's identity needs the listKeys permission on the endpoint "
                                 "(Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listKeys/action).")
        return Secret(keys[0])

    # --- tokens -----------------------------------------------------------------------------

    def _token(self, cache_key: str, read: Callable[[], Secret]) -> Secret:
        held = self._tokens.get(cache_key)
        if held is not None and held.fresh(self.clock()):
            return held
        token = self.cached(cache_key, read)   # also shared by concurrent reads within the read TTL
        self._tokens[cache_key] = token
        return token

    def _aml_token(self, name: str) -> Secret:
        """The endpoint's own token: one POST …/token (``EndpointAuthToken``)."""
        def read() -> Secret:
            try:
                token = self.ml.online_endpoints._get_online_credentials(name=name, auth_mode="amltoken")
            except HttpResponseError as e:
                if e.status_code == 403:
                    raise Forbidden(f"the token of endpoint {name} cannot be read",
                                    hint="The console's identity needs the token permission on the endpoint "
                                         "(…/onlineEndpoints/token/action, e.g. AzureML Data Scientist).") from e
                raise translate(e, f"read the token of {name}") from e
            except AzureError as e:
                raise translate(e, f"read the token of {name}") from e
            return Secret(token.access_token or "", _epoch(token.expiry_time_utc))
        return self._token(f"aml_token/{name}", read)

    def _aad_token(self, name: str) -> Secret:
        """The signed-in identity's token for Azure ML (the same for every endpoint)."""
        def read() -> Secret:
            if self.credential is None:
                raise Forbidden(f"endpoint {name} takes Microsoft Entra tokens and the console has no credential",
                                hint="Sign in with `az login` (or a service principal / managed identity).")
            try:
                token = self.credential.get_token(AAD_SCOPE)
            except AzureError as e:
                raise translate(e, f"get a Microsoft Entra token for endpoint {name}") from e
            return Secret(token.token, _epoch(token.expires_on))
        return self._token("aad_token", read)


_READERS: dict[str, Callable[[ScoringAuth, str], Secret]] = {
    KEY: ScoringAuth._primary_key, AML_TOKEN: ScoringAuth._aml_token, AAD_TOKEN: ScoringAuth._aad_token}


def _epoch(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


__all__ = ["ScoringAuth", "Secret", "auth_mode", "AUTH_MODES", "KEY", "AML_TOKEN", "AAD_TOKEN", "AAD_SCOPE"]
