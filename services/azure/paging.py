"""Reading an SDK listing page by page without losing what was read.

azure-ai-ml's ``list()`` calls return azure-core pagers: one request per page, each page's items
converted by the SDK as they arrive. Two things go wrong on real workspaces:

* a later page fails (throttled, a 5xx after the retries, a ``nextLink`` the service cannot follow):
  the pages already read are kept and the result is a ``PartialList`` whose warning says what
  failed (as Log Analytics' partial results are, ``services.telemetry``); a failure on the first
  page raises the translated ``ServiceError``;
* one entity cannot be converted (the SDK raises ``ValidationException`` for a job type it does not
  know, a field it cannot parse): the listing's converter returns an ``Unparsable`` in its place,
  which is skipped, counted and named in the warning; the rest is listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..telemetry import PartialList
from .errors import translate

SHOWN_NAMES = 5  # the warning names this many skipped entities, then counts the rest


@dataclass(frozen=True)
class Unparsable:
    """An entity of a listing that could not be converted: its name and why."""
    name: str
    reason: str


def converting(convert: Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    """``convert`` for one raw entity of a listing, returning ``Unparsable`` instead of raising for
    an entity it cannot handle (any SDK or conversion error; a ``ServiceError`` included)."""
    def one(raw: Any) -> Any:
        try:
            return convert(raw)
        except Exception as e:  # one entity must not take the listing down: it is named instead
            name = name_of(raw)
            try:
                reason = str(translate(e, f"read {what} {name}"))
            except Exception:  # translate() re-raises what it does not know: still one entity
                reason = f"{type(e).__name__}: {e}"
            return Unparsable(name, reason)
    return one


def name_of(raw: Any) -> str:
    """The name of a raw entity: an SDK/REST object's ``name``, a run history JSON's ``displayName``/``runId``."""
    if isinstance(raw, dict):
        return str(raw.get("name") or raw.get("displayName") or raw.get("runId") or "?")
    return str(getattr(raw, "name", None) or "?")


def read_listing(items: Iterable[Any], what: str) -> list:
    """Every item of ``items`` (a pager), ``Unparsable`` ones left out; a ``PartialList`` with a
    warning when some were left out or a later page failed."""
    it = iter(items)
    read: list = []
    skipped: list[Unparsable] = []
    failure: str | None = None
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - translated below; unknown errors re-raise in translate()
            error = translate(e, f"list {what}")
            if not read and not skipped:
                raise error from e
            failure = f"listing {what} stopped after {len(read) + len(skipped)}: {error}"
            break
        if isinstance(item, Unparsable):
            skipped.append(item)
        elif item is not None:
            read.append(item)
    warning = "; ".join(w for w in (failure, skipped_warning(skipped, what)) if w)
    return PartialList(read, warning) if warning else read


def skipped_warning(skipped: list[Unparsable], what: str) -> str:
    if not skipped:
        return ""
    names = ", ".join(f"{s.name} ({s.reason})" for s in skipped[:SHOWN_NAMES])
    more = f" and {len(skipped) - SHOWN_NAMES} more" if len(skipped) > SHOWN_NAMES else ""
    return f"{len(skipped)} of {what} could not be read and are not shown: {names}{more}"
