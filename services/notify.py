"""Notifications: release events as webhook messages (generic JSON, Microsoft Teams, Slack).

Backend-independent parts: the events (``policy.NOTIFY_EVENTS``), the message of each
format, the retry schedule, URL redaction, the POST itself and the delivery loop
(``deliver_due`` over a backend's ``DeliveryStore``). An event is written in the same unit
of work as the change it announces — the local workspace's outbox table
(``services.local.outbox``), a line of the Azure audit trail (``services.azure.outbox``) —
and the deliverer POSTs it to every webhook of ``[notifications]`` that subscribes to it,
with retries: locally the supervisor, on Azure ``tollgate.py agent`` or a waiting
``canary start --wait``.

Formats (what each receiver expects):

* ``generic``: ``{event, at, actor, model, endpoint, summary, details, console_url}``.
* ``teams``: a message with one Adaptive Card attachment
  (``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
  "contentUrl": null, "content": {AdaptiveCard}}]}``), the shape Teams incoming webhooks and the
  Workflows "post to a channel when a webhook request is received" trigger accept.
* ``slack``: ``{"text": fallback, "blocks": [header, section, fields, context]}`` (Slack
  incoming webhooks; ``text`` is what notifications show).

A webhook URL carries its secret (Teams and Slack put the token in the path), so it is
never logged or recorded whole: ``redact_url`` keeps the scheme and host only.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol

from .errors import InvalidInput
from .policy import NOTIFY_EVENTS, NotificationPolicy, Webhook

TITLES = {
    "candidate_ready": "Candidate ready",
    "auto_stage_failed": "Not deployed to staging automatically",
    "approval_requested": "Approval requested",
    "promoted": "Promoted to production",
    "rolled_back": "Rolled back",
    "endpoint_degraded": "Endpoint degraded",
    "endpoint_recovered": "Endpoint recovered",
    "canary_step": "Canary step",
    "canary_paused": "Canary paused",
    "canary_aborted": "Canary aborted",
}
assert set(TITLES) == set(NOTIFY_EVENTS)

# the console page each event links to (pages/*.py url paths)
PAGES = {"endpoint_degraded": "monitoring", "endpoint_recovered": "monitoring", "candidate_ready": "models"}
RETRYABLE = frozenset({408, 425, 429})
MAX_RETRY_AFTER_S = 3600.0
LEASE_S = 5.0   # beyond the POST timeout: how long a claimed delivery is hidden from another deliverer


@dataclass(frozen=True)
class Event:
    """One event of the outbox."""
    id: int
    event: str
    at: datetime
    actor: str
    model: str | None              # "name:version"
    endpoint: str | None
    summary: str                   # one sentence that says what happened and why
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        subject = self.model or self.endpoint
        return f"{TITLES.get(self.event, self.event)}: {subject}" if subject else TITLES.get(self.event, self.event)


@dataclass(frozen=True)
class Delivery:
    """One event to one webhook: its attempts so far."""
    id: int
    event_id: int
    event: str
    webhook: str
    state: str                     # pending | delivered | failed
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None        # 0: no HTTP answer
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class PostResult:
    status: int                    # 0: no HTTP answer (refused, timeout, DNS)
    error: str | None
    latency_ms: float
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth another attempt: no answer, 408/425/429 or a server error. Other 4xx are final
        (a wrong URL or a refused message does not get better by waiting)."""
        return self.status == 0 or self.status in RETRYABLE or self.status >= 500


def console_link(console_url: str, event: Event) -> str:
    base = (console_url or "").rstrip("/")
    return f"{base}/{PAGES.get(event.event, 'releases')}" if base else ""


# --- message formats ------------------------------------------------------------

def generic_payload(event: Event, console_url: str) -> dict:
    return {"event": event.event, "at": event.at.isoformat(), "actor": event.actor, "model": event.model,
            "endpoint": event.endpoint, "summary": event.summary, "details": dict(event.details),
            "console_url": console_link(console_url, event)}


def _facts(event: Event) -> list[tuple[str, str]]:
    facts = [("Event", event.event)]
    if event.model:
        facts.append(("Model", event.model))
    if event.endpoint:
        facts.append(("Endpoint", event.endpoint))
    facts.append(("By", event.actor))
    facts.append(("At", event.at.strftime("%Y-%m-%d %H:%M:%S UTC")))
    return facts


def _reasons(event: Event) -> list[str]:
    reasons = event.details.get("reasons") if isinstance(event.details, Mapping) else None
    return [str(r) for r in reasons] if isinstance(reasons, (list, tuple)) else []


def teams_payload(event: Event, console_url: str) -> dict:
    body: list[dict] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "style": "heading", "wrap": True,
         "text": event.title},
        {"type": "TextBlock", "wrap": True, "text": event.summary},
    ]
    reasons = _reasons(event)
    if reasons:
        body.append({"type": "TextBlock", "wrap": True, "text": "\n".join(f"- {r}" for r in reasons)})
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(event)]})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body, "msteams": {"width": "Full"}}
    link = console_link(console_url, event)
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Tollgate", "url": link}]
    return {"type": "message", "summary": event.title,
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                             "content": card}]}


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup (``<!channel>`` would ping everyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: Event, console_url: str) -> dict:
    text = _slack_escape(event.summary)
    reasons = _reasons(event)
    if reasons:
        text += "\n" + "\n".join(f"• {_slack_escape(r)}" for r in reasons)
    context = f"{_slack_escape(event.actor)} · {event.at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    link = console_link(console_url, event)
    if link:
        context += f" · <{link}|Open in Tollgate>"
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"} for k, v in _facts(event)[:-2]]
    return {
        "text": _slack_escape(f"{event.title}: {event.summary}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": event.title[:150], "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


FORMATS = {"generic": generic_payload, "teams": teams_payload, "slack": slack_payload}


def payload(fmt: str, event: Event, console_url: str) -> dict:
    try:
        return FORMATS[fmt](event, console_url)
    except KeyError:
        raise InvalidInput(f"unknown webhook format {fmt!r}", hint=f"Formats: {', '.join(FORMATS)}.") from None


# --- delivery mechanics -----------------------------------------------------------

def redact_url(url: str) -> str:
    """Scheme and host only: webhook tokens live in the path or the query."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def resolve_url(hook: Webhook, environ: Mapping[str, str] | None = None) -> str:
    """The webhook's URL, from the policy file or from its environment variable."""
    if hook.url:
        return hook.url
    environ = os.environ if environ is None else environ
    url = (environ.get(hook.url_env or "") or "").strip()
    if not url:
        raise InvalidInput(f"webhook {hook.name}: environment variable {hook.url_env} is not set",
                           hint="Set it where the endpoints' supervisor runs (tollgate.py up / make run).")
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"webhook {hook.name}: {hook.url_env} does not hold an http(s) URL")
    return url


def backoff_delay(attempt: int, base_s: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): base, 2 base, 4 base, ..."""
    return base_s * (2 ** max(0, attempt - 1))


def retry_schedule(max_attempts: int, base_s: float) -> list[float]:
    """Seconds after the first attempt at which each attempt is made (if the previous failed)."""
    out, t = [0.0], 0.0
    for attempt in range(1, max_attempts):
        t += backoff_delay(attempt, base_s)
        out.append(t)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # an HTTP date: ignored, the back-off applies


def post_json(url: str, body: Mapping[str, Any], timeout_s: float = 10.0) -> PostResult:
    """POST ``body`` as JSON. Never raises for HTTP or network errors; the error text never
    contains the URL (it holds the webhook's token)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "tollgate-notify/1"})
    started = time.perf_counter()
    status, error, retry_after = 0, None, None
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status = resp.status
            resp.read(65536)
    except urllib.error.HTTPError as e:
        status, retry_after = e.code, _retry_after(e.headers.get("Retry-After") if e.headers else None)
        try:
            text = e.read(300).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        error = f"HTTP {e.code}" + (f": {text}" if text else "")
    except (OSError, ValueError) as e:  # refused, reset, timeout, DNS, bad URL
        reason = getattr(e, "reason", None) or e
        error = f"{type(e).__name__}: {reason}"
    latency = (time.perf_counter() - started) * 1000
    if error:
        error = error.replace(url, redact_url(url))[:500]
    return PostResult(status, error, latency, retry_after)


# --- the delivery loop, over a backend's store -------------------------------------------

@dataclass(frozen=True)
class Pending:
    """A delivery that is due: one event to one webhook, and its attempts so far."""
    id: int
    webhook: str
    attempts: int
    next_attempt_at: float         # epoch seconds
    event: Event


class DeliveryStore(Protocol):
    """Where a backend keeps deliveries (local: the ``deliveries`` table; Azure: a blob)."""

    def fan_out(self, webhooks: tuple[Webhook, ...], now: float) -> int:
        """A pending delivery for each new event and each webhook that subscribes to it; how many."""

    def due(self, now: float, limit: int) -> list[Pending]:
        """Pending deliveries whose next attempt is due, oldest first."""

    def claim(self, pending: Pending, lease_until: float) -> bool:
        """Hide ``pending`` from other deliverers until ``lease_until``; False if another took it."""

    def retry(self, pending: Pending, attempt: int, next_at: float, status: int, error: str | None) -> None:
        """Attempt ``attempt`` failed and will be tried again at ``next_at``."""

    def finish(self, pending: Pending, attempt: int, state: str, status: int, error: str | None,
               record: Mapping[str, Any]) -> None:
        """Delivered or given up (``state``), with the audit record's ``after`` (``notification.STATE``)."""


def outcome(pending: Pending, attempt: int, status: int, error: str | None, where: str,
            latency_ms: float | None = None) -> dict:
    """The ``after`` of a delivery's audit record (``notification.delivered`` / ``.failed``)."""
    after: dict[str, Any] = {"event": pending.event.event, "event_id": pending.event.id, "status": status,
                             "attempt": attempt, "url": where}
    if latency_ms is not None:
        after["latency_ms"] = round(latency_ms, 1)
    if error:
        after["error"] = error
    return after


def deliver_due(store: DeliveryStore, rules: NotificationPolicy, now: float, *,
                send: Callable[..., PostResult] | None = None, environ: Mapping[str, str] | None = None,
                limit: int = 20) -> int:
    """Fan out, then attempt every delivery that is due; returns how many attempts were made.
    A retryable failure waits ``backoff_delay`` (or the answer's ``Retry-After``); after
    ``max_attempts``, or on a final answer, the delivery is given up."""
    send = send or post_json
    store.fan_out(rules.webhooks, now)
    hooks = {h.name: h for h in rules.webhooks}
    attempts = 0
    for d in store.due(now, limit):
        if not store.claim(d, now + rules.timeout_s + LEASE_S):
            continue  # another deliverer took it
        attempts += 1
        attempt = d.attempts + 1
        hook = hooks.get(d.webhook)
        if hook is None:
            error = f"webhook {d.webhook!r} is no longer in the policy"
            store.finish(d, attempt, "failed", 0, error, outcome(d, attempt, 0, error, ""))
            continue
        try:
            url = resolve_url(hook, environ)
        except InvalidInput as e:
            store.finish(d, attempt, "failed", 0, str(e), outcome(d, attempt, 0, str(e), ""))
            continue
        result = send(url, payload(hook.format, d.event, rules.console_url), rules.timeout_s)
        where = redact_url(url)
        if result.ok:
            store.finish(d, attempt, "delivered", result.status, None,
                         outcome(d, attempt, result.status, None, where, result.latency_ms))
        elif result.retryable and attempt < rules.max_attempts:
            wait = max(backoff_delay(attempt, rules.backoff_s), result.retry_after_s or 0.0)
            store.retry(d, attempt, now + wait, result.status, result.error)
        else:
            store.finish(d, attempt, "failed", result.status, result.error,
                         outcome(d, attempt, result.status, result.error, where, result.latency_ms))
    return attempts
