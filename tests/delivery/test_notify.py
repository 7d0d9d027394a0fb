"""Notifications: the outbox, the three message formats, delivery with retries and back-off,
and the audit trail of every delivery — against a real HTTP receiver on 127.0.0.1."""
from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import pytest

from services import notify
from services.entities import EndpointHealth, HealthStatus
from services.errors import InvalidInput
from services.local.outbox import LocalNotifications, emit, health_transition, scan_candidates, scan_health
from services.notify import Event
from services.policy import NOTIFY_EVENTS, parse_policy

from .receiver import Receiver

T0 = 1_700_000_000.0
GENERIC_KEYS = {"event", "at", "actor", "model", "endpoint", "summary", "details", "console_url"}


def policy_with(*hooks: str, backoff_s: float = 60, max_attempts: int = 6, console_url: str = "http://console.test"):
    text = f"[notifications]\nbackoff_s = {backoff_s}\nmax_attempts = {max_attempts}\ntimeout_s = 5\n" \
           f'console_url = "{console_url}"\n'
    for hook in hooks:
        text += "[[notifications.webhooks]]\n" + hook + "\n"
    return parse_policy(text)


def hook(name: str, url: str, fmt: str = "generic", events: list[str] | None = None) -> str:
    text = f'name = "{name}"\nformat = "{fmt}"\nurl = "{url}"\n'
    if events is not None:
        text += f"events = {json.dumps(events)}\n"
    return text


def add_event(ws, event: str = "rolled_back", **kw) -> int:
    with ws.db.write() as c:
        emit(c, event, actor=kw.pop("actor", "qa@contoso.com"), model=kw.pop("model", "diabetes-regressor:6"),
             endpoint=kw.pop("endpoint", "production"),
             summary=kw.pop("summary", "canary of diabetes-regressor:6 on production rolled back automatically"),
             details=kw.pop("details", {"automatic": True, "reasons": ["canary failure rate 18.0 % > 2.0 % (stable 0.0 %)"]}),
             **kw)
        return c.execute("SELECT MAX(id) FROM outbox").fetchone()[0]


def audit_rows(ws, action_prefix: str = "notification."):
    return [r for r in ws.releases.audit() if r.action.startswith(action_prefix)]


def delivery(ws, event_id: int, webhook: str):
    return ws.db.one("SELECT * FROM deliveries WHERE event_id = ? AND webhook = ?", (event_id, webhook))


def sample_event() -> Event:
    return Event(7, "rolled_back", datetime(2025, 3, 1, 12, 30, tzinfo=timezone.utc), "tollgate-system",
                 "diabetes-regressor:6", "production", "canary rolled back <automatically> & fast",
                 {"automatic": True, "reasons": ["canary failure rate 18.0 % > 2.0 % (stable 0.0 %)"]})


# --- message formats ------------------------------------------------------------------

def test_the_generic_message_has_exactly_the_documented_keys():
    body = notify.generic_payload(sample_event(), "http://console.test")
    assert set(body) == GENERIC_KEYS
    assert body["event"] == "rolled_back" and body["model"] == "diabetes-regressor:6"
    assert body["at"] == "2025-03-01T12:30:00+00:00"
    assert body["details"]["reasons"] == ["canary failure rate 18.0 % > 2.0 % (stable 0.0 %)"]
    assert body["console_url"] == "http://console.test/releases"


def test_the_teams_message_is_one_adaptive_card_attachment():
    body = notify.teams_payload(sample_event(), "http://console.test")
    assert set(body) == {"type", "summary", "attachments"} and body["type"] == "message"
    (attachment,) = body["attachments"]
    assert set(attachment) == {"contentType", "contentUrl", "content"}
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive" and attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert texts[0] == "Rolled back: diabetes-regressor:6"
    assert any("canary failure rate 18.0 % > 2.0 %" in t for t in texts)
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert {"title": "Endpoint", "value": "production"} in facts
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in Tollgate", "url": "http://console.test/releases"}]


def test_the_slack_message_has_a_fallback_text_and_blocks_with_markup_escaped():
    body = notify.slack_payload(sample_event(), "http://console.test")
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Rolled back: diabetes-regressor:6: canary rolled back &lt;automatically&gt; &amp; fast")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    header, summary, fields, context = body["blocks"]
    assert header["text"] == {"type": "plain_text", "text": "Rolled back: diabetes-regressor:6", "emoji": True}
    assert summary["text"]["type"] == "mrkdwn" and "<automatically>" not in summary["text"]["text"]
    assert "• canary failure rate 18.0 % &gt; 2.0 % (stable 0.0 %)" in summary["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Model*\ndiabetes-regressor:6"} in fields["fields"]
    assert "<http://console.test/releases|Open in Tollgate>" in context["elements"][0]["text"]


# --- delivery -------------------------------------------------------------------------

def test_each_event_goes_to_the_webhooks_that_subscribe_to_it_in_their_format(empty_ws):
    ws = empty_ws
    with Receiver() as rx:
        policy = policy_with(hook("g", rx.url("/generic")), hook("t", rx.url("/teams"), "teams"),
                             hook("s", rx.url("/slack"), "slack", events=["promoted"]))
        n = LocalNotifications(ws.db, policy)
        event_id = add_event(ws)
        assert n.deliver_due(T0) == 2
        by_path = {r.path: r for r in rx.received}
        assert set(by_path) == {"/generic", "/teams"}, "slack subscribes to 'promoted' only"
        assert set(by_path["/generic"].body) == GENERIC_KEYS
        assert by_path["/teams"].body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert all(r.content_type == "application/json" for r in rx.received)
        assert n.deliver_due(T0 + 1) == 0, "a delivered event is not sent again"
    rows = audit_rows(ws)
    assert sorted((r.action, r.target, r.after["status"], r.after["attempt"]) for r in rows) == [
        ("notification.delivered", "webhook/g", 200, 1), ("notification.delivered", "webhook/t", 200, 1)]
    assert all(r.after["event_id"] == event_id and r.after["event"] == "rolled_back" for r in rows)
    assert delivery(ws, event_id, "s") is None


def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt_after_backing_off(empty_ws):
    ws = empty_ws
    with Receiver(statuses=(500, 503)) as rx:
        n = LocalNotifications(ws.db, policy_with(hook("ops", rx.url()), backoff_s=60))
        event_id = add_event(ws)
        assert n.deliver_due(T0) == 1
        d = delivery(ws, event_id, "ops")
        assert (d["state"], d["attempts"], d["last_status"], d["next_attempt_at"]) == ("pending", 1, 500, T0 + 60)
        assert n.deliver_due(T0 + 59.9) == 0, "not before the back-off"
        assert n.deliver_due(T0 + 60) == 1
        d = delivery(ws, event_id, "ops")
        assert (d["attempts"], d["last_status"], d["next_attempt_at"]) == (2, 503, T0 + 60 + 120)
        assert n.deliver_due(T0 + 179) == 0
        assert n.deliver_due(T0 + 180) == 1
        assert [r.answered for r in rx.received] == [500, 503, 200]
    d = delivery(ws, event_id, "ops")
    assert (d["state"], d["attempts"], d["last_status"]) == ("delivered", 3, 200) and d["delivered_at"]
    assert [(r.action, r.after["status"], r.after["attempt"]) for r in audit_rows(ws)] == \
        [("notification.delivered", 200, 3)], "retries in between are not audit events; the outcome is"


def test_a_receiver_that_always_fails_is_given_up_after_six_attempts_over_half_an_hour(empty_ws):
    ws = empty_ws
    schedule = notify.retry_schedule(6, 60)
    assert schedule == [0, 60, 180, 420, 900, 1860]
    with Receiver(default=500) as rx:
        n = LocalNotifications(ws.db, policy_with(hook("ops", rx.url()), backoff_s=60, max_attempts=6))
        event_id = add_event(ws)
        assert n.deliver_due(T0) == 1
        for i, at in enumerate(schedule[1:], 2):
            assert n.deliver_due(T0 + at - 0.5) == 0, f"attempt {i} too early"
            assert n.deliver_due(T0 + at) == 1, f"attempt {i} at +{at} s"
        assert n.deliver_due(T0 + 10 ** 6) == 0, "given up: never tried again"
        assert len(rx.received) == 6
    d = delivery(ws, event_id, "ops")
    assert (d["state"], d["attempts"], d["last_status"]) == ("failed", 6, 500)
    (failed,) = audit_rows(ws)
    assert (failed.action, failed.after["status"], failed.after["attempt"]) == ("notification.failed", 500, 6)
    assert "receiver says no" in failed.after["error"]


def test_a_client_error_is_final_but_429_waits_as_long_as_retry_after_asks(empty_ws):
    ws = empty_ws
    with Receiver(statuses=(404,)) as gone, Receiver(statuses=(429,), headers={"Retry-After": "300"}) as busy:
        n = LocalNotifications(ws.db, policy_with(hook("gone", gone.url()), hook("busy", busy.url())))
        event_id = add_event(ws)
        n.deliver_due(T0)
        assert (delivery(ws, event_id, "gone")["state"], delivery(ws, event_id, "gone")["attempts"]) == ("failed", 1)
        assert delivery(ws, event_id, "busy")["next_attempt_at"] == T0 + 300
        assert n.deliver_due(T0 + 299) == 0 and n.deliver_due(T0 + 300) == 1
    assert {(r.action, r.target, r.after["status"]) for r in audit_rows(ws)} == {
        ("notification.failed", "webhook/gone", 404), ("notification.delivered", "webhook/busy", 200)}


def test_no_answer_at_all_is_retried(empty_ws):
    ws = empty_ws
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    n = LocalNotifications(ws.db, policy_with(hook("down", f"http://127.0.0.1:{closed}/hook")))
    event_id = add_event(ws)
    n.deliver_due(T0)
    d = delivery(ws, event_id, "down")
    assert (d["state"], d["attempts"], d["last_status"]) == ("pending", 1, 0) and "Connection" in d["last_error"]


def test_a_url_from_the_environment_is_used_and_its_token_never_recorded(empty_ws):
    ws = empty_ws
    secret_path, secret_query = "/webhookb2/SECRET-PATH-TOKEN/IncomingWebhook", "sig=SECRET-QUERY-TOKEN"
    policy = parse_policy('[notifications]\n[[notifications.webhooks]]\nname = "teams"\nformat = "teams"\n'
                          'url_env = "TOLLGATE_TEST_TEAMS_WEBHOOK"\n'
                          '[[notifications.webhooks]]\nname = "unset"\nurl_env = "TOLLGATE_TEST_UNSET"\n')
    with Receiver(statuses=(500,)) as rx:
        environ = {"TOLLGATE_TEST_TEAMS_WEBHOOK": rx.url(f"{secret_path}?{secret_query}")}
        n = LocalNotifications(ws.db, policy)
        event_id = add_event(ws)
        n.deliver_due(T0, environ=environ)
        n.deliver_due(T0 + 60, environ=environ)
        assert [r.path for r in rx.received] == [f"{secret_path}?{secret_query}"] * 2
    unset = delivery(ws, event_id, "unset")
    assert unset["state"] == "failed" and "TOLLGATE_TEST_UNSET is not set" in unset["last_error"]
    delivered = next(r for r in audit_rows(ws) if r.target == "webhook/teams")
    assert delivered.after["url"] == f"http://127.0.0.1:{rx.port}/…"
    everything = json.dumps([[*r] for r in ws.db.query("SELECT * FROM events")]) + \
        json.dumps([[*r] for r in ws.db.query("SELECT * FROM deliveries")])
    assert "SECRET" not in everything


def test_redaction_keeps_scheme_and_host_only():
    assert notify.redact_url("https://hooks.slack.com/services/T000/B000/XXXX") == "https://hooks.slack.com/…"
    assert notify.redact_url("https://x.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d?x=1") == \
        "https://x.webhook.office.com/…"
    assert notify.redact_url("http://127.0.0.1:8080/hook?token=abc") == "http://127.0.0.1:8080/…"


# --- the outbox ---------------------------------------------------------------------------

def test_an_event_exists_only_if_its_transaction_commits(empty_ws):
    ws = empty_ws
    with pytest.raises(RuntimeError):
        with ws.db.write() as c:
            emit(c, "promoted", actor="qa@contoso.com", summary="never happened")
            raise RuntimeError("the change failed")
    assert ws.db.one("SELECT COUNT(*) FROM outbox")[0] == 0
    add_event(ws, "promoted", dedupe_key="once")
    add_event(ws, "promoted", dedupe_key="once")
    assert ws.db.one("SELECT COUNT(*) FROM outbox")[0] == 1


def test_events_written_while_no_webhook_listens_are_not_sent_later(empty_ws):
    ws = empty_ws
    add_event(ws)
    LocalNotifications(ws.db, policy_with()).deliver_due(T0)
    with Receiver() as rx:
        assert LocalNotifications(ws.db, policy_with(hook("late", rx.url()))).deliver_due(T0 + 1) == 0
        assert rx.received == []


def test_a_model_version_registered_by_a_run_is_announced_once(demo_ws, tmp_path):
    ws = demo_ws
    assert scan_candidates(ws.db) == 0, "the first scan only sets the watermark"
    run = next(r for r in ws.jobs.list() if r.model_version)
    mv = ws.models.get(run.model_name, run.model_version)
    artifacts = tmp_path / "artifacts"
    import shutil
    shutil.copytree(ws.root / ws.db.one("SELECT path FROM models WHERE name = ? AND version = ?",
                                        (mv.name, mv.version))["path"], artifacts)
    version = ws.models.register(mv.name, artifacts, estimator=mv.estimator, metrics=mv.metrics, run_id=run.id,
                                 dataset=mv.dataset, dataset_version=mv.dataset_version, created_by="lee@contoso.com")
    ws.models.register(mv.name, artifacts, estimator=mv.estimator, metrics=mv.metrics, run_id=None,
                       dataset=mv.dataset, dataset_version=mv.dataset_version, created_by="lead@contoso.com")
    assert scan_candidates(ws.db) == 1, "only the version a run registered (past the gate) is a candidate"
    assert scan_candidates(ws.db) == 0
    (row,) = ws.db.query("SELECT * FROM outbox WHERE event = 'candidate_ready'")
    assert row["model"] == f"{mv.name}:{version}" and row["actor"] == "lee@contoso.com"
    assert "passed the quality gate" in row["summary"]


@pytest.mark.parametrize("old, new, event, remembered", [
    (None, "healthy", None, "healthy"),
    ("healthy", "degraded", "endpoint_degraded", "degraded"),
    ("idle", "down", "endpoint_degraded", "down"),
    ("degraded", "degraded", None, "degraded"),
    ("degraded", "down", "endpoint_degraded", "down"),
    ("down", "degraded", None, "degraded"),
    ("degraded", "idle", None, "degraded"),
    ("degraded", "healthy", "endpoint_recovered", "healthy"),
    ("healthy", "idle", None, "idle"),
])
def test_health_is_announced_once_per_transition(old, new, event, remembered):
    assert health_transition(old, new) == (event, remembered)


def test_health_scans_emit_on_transitions_only(empty_ws):
    ws = empty_ws

    def health(status: str) -> list[EndpointHealth]:
        return [EndpointHealth("production", HealthStatus(status), ("failure rate 5.0 % > 2.0 %",), 15, 100, 0.05,
                               20.0, 1, 1)]
    seq = ["healthy", "degraded", "degraded", "degraded", "healthy", "healthy"]
    assert [scan_health(ws, health(s)) for s in seq] == [[], ["endpoint_degraded"], [], [], ["endpoint_recovered"], []]
    rows = ws.db.query("SELECT event, summary FROM outbox ORDER BY id")
    assert [r["event"] for r in rows] == ["endpoint_degraded", "endpoint_recovered"]
    assert rows[0]["summary"] == "endpoint production is degraded: failure rate 5.0 % > 2.0 %"


# --- policy -----------------------------------------------------------------------------

def test_the_notifications_table_is_parsed_with_defaults():
    p = parse_policy('[notifications]\n[[notifications.webhooks]]\nurl = "https://example.invalid/x"\n'
                     '[[notifications.webhooks]]\nformat = "slack"\nurl_env = "SLACK_URL"\nevents = ["promoted"]\n')
    a, b = p.notifications.webhooks
    assert (a.name, a.format, a.events, a.url) == ("generic-1", "generic", NOTIFY_EVENTS, "https://example.invalid/x")
    assert (b.name, b.format, b.events, b.url_env, b.url) == ("slack-2", "slack", ("promoted",), "SLACK_URL", None)
    assert (p.notifications.max_attempts, p.notifications.backoff_s) == (6, 60.0)


@pytest.mark.parametrize("hook_text, mentions", [
    ('url = "https://x.invalid"\nurl_env = "X"', "exactly one of url or url_env"),
    ('format = "generic"', "exactly one of url or url_env"),
    ('url = "ftp://x.invalid"', "http:// or https://"),
    ('url = "https://x.invalid"\nformat = "discord"', "format must be one of"),
    ('url = "https://x.invalid"\nevents = ["deployed"]', "unknown event(s) deployed"),
    ('url = "https://x.invalid"\nsecret = "x"', "unknown key(s) secret"),
])
def test_a_malformed_webhook_is_refused_with_the_culprit_named(hook_text, mentions):
    with pytest.raises(InvalidInput) as err:
        parse_policy("[notifications]\n[[notifications.webhooks]]\n" + hook_text + "\n", source="t.toml")
    assert mentions in str(err.value)
