"""A gateway killed with SIGKILL under load: every answered request is still recorded, once.

The gateway writes each record ahead, to its spool file, before it answers
(``services.local.telemetry_spool``); the supervisor restarts the dead gateway and audits
the incident, and the new gateway folds the dead one's spool into ``telemetry.db``.
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
import requests

from services.local.processes import pid_alive
from services.local.telemetry_spool import spool_dir
from services.release_rules import SYSTEM_ACTOR

from .conftest import MODEL, SteadyLoad, live_workspace, scoring, sent_id, telemetry_rows, wait_for, wait_telemetry

RATE = 50  # requests per second


@pytest.fixture(scope="module")
def prod(demo_template, tmp_path_factory):
    with live_workspace(demo_template, tmp_path_factory.mktemp("durability")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        yield ws


def answers(uri: str) -> bool:
    try:
        return requests.get(uri.removesuffix("/score") + "/", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def gateway_pid(ws) -> int | None:
    return ws.db.one("SELECT gateway_pid FROM endpoints WHERE name = 'production'")[0]


@pytest.mark.slow
def test_a_gateway_killed_under_load_loses_no_answered_request_and_its_restart_is_audited(prod):
    ws = prod
    uri, key = scoring(ws, "production")
    old = gateway_pid(ws)
    assert old and pid_alive(old)
    trail_before = ws.releases.audit(1)[0].id

    with SteadyLoad(uri, key, rate=RATE, max_s=120, workers=32) as load:
        time.sleep(3)
        os.kill(old, signal.SIGKILL)
        killed_at = time.time()
        wait_for(lambda: (pid := gateway_pid(ws)) not in (None, old) and pid_alive(pid), 30, "a new gateway")
        wait_for(lambda: answers(uri), 60, "the new gateway to answer")
        restarted_at = time.time()
        time.sleep(3)
    outcomes = load.outcomes
    answered = [o for o in outcomes if o.status is not None]
    unanswered = [o for o in outcomes if o.status is None]
    assert any(o.sent > restarted_at and o.ok for o in outcomes), "the new gateway serves"
    assert len([o for o in answered if o.sent < killed_at]) > RATE, "load before the kill"

    # every answer the client got has exactly one row, with the status the client saw
    rows = wait_telemetry(ws.root, [o.request_id for o in answered], timeout_s=60)
    counts = Counter(sent_id(r) for r in rows)
    assert set(counts.values()) == {1}, [i for i, n in counts.items() if n > 1][:5]
    assert {sent_id(r): r["status"] for r in rows} == {o.request_id: o.status for o in answered}
    # a request the gateway spooled but did not live to answer may have a row; never two
    extra = Counter(sent_id(r) for r in telemetry_rows(ws.root, [o.request_id for o in unanswered]))
    assert set(extra.values()) <= {1}
    # the dead gateway's spool was folded and removed; the live one's is the only file left
    wait_for(lambda: [p.name for p in spool_dir(ws.root).glob("*.jsonl")
                      if f".{old}." in p.name] == [], 30, "the dead gateway's spool to be folded")

    crashes = [e for e in ws.releases.audit() if e.id > trail_before and e.action == "gateway.crashed"]
    assert len(crashes) == 1
    crash = crashes[0]
    assert (crash.actor, crash.role, crash.target) == ("supervisor", "system", "production")
    assert crash.before == {"pid": old} and crash.after["action"] == "restart" and crash.after["pid"] == gateway_pid(ws)
    print(f"\ngateway kill -9 under {RATE} req/s: {len(answered)} answered, all recorded once; "
          f"{len(unanswered)} failed at the connection level ({dict(Counter(o.error.split(':')[0] for o in unanswered))}),"
          f" {restarted_at - killed_at:.1f} s until a new gateway answered; {len(extra)} of them recorded")
