"""Production under steady load while it is promoted and rolled back: no request fails.

A client on loopback sends 50 requests/s to production (v1) while QA promotes v3
(new deployment beside the old one, health probe, smoke test, traffic shift) and
then rolls back. Every request must succeed, the answers must switch from v1 to v3
and back exactly when the operations say they are done, and the telemetry must
hold one record per request sent.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest

from services.permissions import SYSTEM_ACTOR

from .conftest import LEAD, MODEL, QA, SteadyLoad, live_workspace, scoring, sent_id, telemetry_rows, wait_telemetry

RATE = 50  # requests per second


@pytest.fixture(scope="module")
def ready_to_promote(demo_template, tmp_path_factory):
    with live_workspace(demo_template, tmp_path_factory.mktemp("zero-downtime")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        ws.releases.deploy(MODEL, 3, "staging", QA)
        ws.releases.approve(MODEL, 3, LEAD, "ready")
        yield ws


@pytest.mark.slow
def test_no_request_fails_while_production_is_promoted_and_rolled_back(ready_to_promote):
    ws = ready_to_promote
    uri, key = scoring(ws, "production")
    v1, v3 = f"{MODEL}:1", f"{MODEL}:3"

    with SteadyLoad(uri, key, rate=RATE, max_s=300) as load:
        time.sleep(3)
        promote_started = time.time()
        ws.releases.promote(MODEL, 3, QA, "zero-downtime test")
        promoted = time.time()
        time.sleep(3)
        rollback_started = time.time()
        ws.releases.rollback("production", QA, "zero-downtime test")
        rolled_back = time.time()
        time.sleep(3)
    outcomes = load.outcomes
    duration = outcomes[-1].sent - outcomes[0].sent

    failed = [o for o in outcomes if not o.ok]
    summary = Counter(o.status for o in failed)
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed ({dict(summary)}), e.g. {failed[:3]}"
    assert len(outcomes) >= 0.8 * RATE * duration, f"only {len(outcomes)} requests in {duration:.1f} s"
    assert promoted - promote_started > 2, "the promote was too quick to have overlapped the load"

    # who answered: v1 until the promote, v3 once it returned, v1 again once the rollback returned
    before = {o.model for o in outcomes if o.done < promote_started}
    between = {o.model for o in outcomes if promoted <= o.sent and o.done < rollback_started}
    after = {o.model for o in outcomes if o.sent >= rolled_back}
    assert (before, between, after) == ({v1}, {v3}, {v1}), Counter((o.model) for o in outcomes)
    during_promote = Counter(o.model for o in outcomes if promote_started <= o.sent < promoted)
    assert during_promote[v1] > 0, "production kept answering with v1 while v3 was being deployed beside it"

    # exactly one telemetry record per request sent, with the same status and model the client saw
    rows = wait_telemetry(ws.root, load.request_ids, timeout_s=30)
    by_id = Counter(sent_id(r) for r in rows)
    assert len(rows) == len(outcomes) and set(by_id.values()) == {1}, \
        f"{len(rows)} telemetry rows for {len(outcomes)} requests; duplicates: {[i for i, n in by_id.items() if n > 1][:5]}"
    seen = {o.request_id: (o.status, o.model) for o in outcomes}
    assert {sent_id(r): (r["status"], r["model"]) for r in rows} == seen
    load_rows = [r for r in telemetry_rows(ws.root) if (r["client_request_id"] or "").startswith(f"load-{load.run_id}-")]
    assert len(load_rows) == len(outcomes)
    print(f"\n{len(outcomes)} requests in {duration:.1f} s ({len(outcomes) / duration:.1f}/s), 0 failed; "
          f"promote {promoted - promote_started:.1f} s, rollback {rolled_back - rollback_started:.2f} s; "
          f"answers {dict(Counter(o.model for o in outcomes))}")
