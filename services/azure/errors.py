"""Azure SDK and HTTP errors → ``services.errors``, with a message that says what to do.

* 401 / no token — ``BackendUnavailable``: sign in (``az login``, a service principal,
  a managed identity);
* 403 — ``Forbidden``: the signed-in identity lacks a role; the message names it;
* 404 — ``NotFound``;
* 409 — ``Conflict``;
* 400 and SDK validation errors — ``InvalidInput``;
* 429 — azure-core's ``RetryPolicy`` has already retried with back-off (honouring
  ``Retry-After``); what still arrives here is ``BackendUnavailable`` "throttled";
* 5xx and network failures — ``BackendUnavailable`` (also retried by azure-core first).

Use ``with azure_call("list the models"):`` around SDK calls, or ``translate(e, what)``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..errors import BackendUnavailable, Conflict, Forbidden, InvalidInput, NotFound, ServiceError
from .config import ROLE_HINT

REFUSED_HINT = "Check the names and values asked for; Azure's message says which one it refused."
# azure-ai-ml raising on what Azure returned: an asset another tool made, or an API version it does not know
UNREADABLE_HINT = ("Azure returned something azure-ai-ml cannot read (made by another tool, or by a newer API "
                   "version): look at it in Azure ML studio; upgrading azure-ai-ml may help.")
SIGN_IN_HINT = ("Sign in with `az login` (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, "
                "or run with a managed identity), then reload.")


def _status(e: BaseException) -> int | None:
    status = getattr(e, "status_code", None)
    if status is None:
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
    return status


def _reason(e: BaseException) -> str:
    err = getattr(e, "error", None)
    message = getattr(err, "message", None) if err is not None else None
    if not message:
        message = getattr(e, "message", None) or str(e)
    first = str(message).strip().splitlines()
    text = first[0] if first else type(e).__name__
    if text.startswith("(") and ") " in text:  # "(Code) message" as azure-core formats it
        text = text.split(") ", 1)[1]
    return text[:300]


def translate(e: BaseException, what: str, *, role: str = "AzureML Data Scientist") -> ServiceError:
    """The ``ServiceError`` for an exception raised while trying to ``what``."""
    if isinstance(e, ServiceError):
        return e
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                       ResourceNotFoundError, ServiceRequestError, ServiceResponseError)
    status = _status(e)
    if isinstance(e, ClientAuthenticationError) and status in (None, 401):
        return BackendUnavailable(f"could not sign in to Azure to {what}: {_reason(e)}", hint=SIGN_IN_HINT)
    if status == 403:
        return Forbidden(f"no permission to {what}: Azure answered 403 Forbidden ({_reason(e)})",
                         hint=f"The signed-in identity needs the '{role}' role on the workspace. {ROLE_HINT}")
    if isinstance(e, ResourceNotFoundError) or status == 404:
        return NotFound(f"not found while trying to {what}: {_reason(e)}",
                        hint="Check the name and version; the workspace settings may point at another workspace.")
    if isinstance(e, ResourceExistsError) or status == 409:
        return Conflict(f"could not {what}: {_reason(e)}", hint="Reload and try again.")
    if status == 429:
        return BackendUnavailable(f"Azure is throttling requests (429 Too Many Requests) while trying to {what}; "
                                  "retried with back-off and still throttled",
                                  hint="Wait a minute and reload; fewer people refreshing at once helps.")
    if status is not None and status >= 500:
        return BackendUnavailable(f"Azure ML had a service error ({status}) while trying to {what}: {_reason(e)}",
                                  hint="Retried already; try again in a few minutes and check "
                                       "https://status.azure.com if it persists.")
    if status is not None and 400 <= status < 500:
        return InvalidInput(f"Azure refused to {what} ({status}): {_reason(e)}", hint=REFUSED_HINT)
    if isinstance(e, (ServiceRequestError, ServiceResponseError)):
        return BackendUnavailable(f"cannot reach Azure to {what}: {_reason(e)}",
                                  hint="Check the network connection (and a proxy, if one is needed).")
    if isinstance(e, ClientAuthenticationError):
        return BackendUnavailable(f"could not sign in to Azure to {what}: {_reason(e)}", hint=SIGN_IN_HINT)
    if type(e).__name__ in ("CredentialUnavailableError",):
        return BackendUnavailable(f"no Azure credential is available to {what}", hint=SIGN_IN_HINT)
    try:
        from azure.ai.ml.exceptions import MlException, ValidationException
    except ImportError:  # pragma: no cover
        MlException = ValidationException = ()  # type: ignore
    if isinstance(e, ValidationException):
        return InvalidInput(f"could not {what}: {_reason(e)}", hint=UNREADABLE_HINT)
    if isinstance(e, MlException):
        return BackendUnavailable(f"Azure ML could not {what}: {_reason(e)}", hint=UNREADABLE_HINT)
    if isinstance(e, HttpResponseError):
        return BackendUnavailable(f"Azure answered an error while trying to {what}: {_reason(e)}",
                                  hint="Try again in a few minutes; check https://status.azure.com if it persists.")
    raise e


@contextmanager
def azure_call(what: str, *, role: str = "AzureML Data Scientist") -> Iterator[None]:
    """Translate whatever the SDK raises inside the block."""
    try:
        yield
    except ServiceError:
        raise
    except Exception as e:  # translate() re-raises what it does not know (programming errors)
        raise translate(e, what, role=role) from e
