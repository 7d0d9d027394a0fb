"""The Endpoints page and the identity picker.

Endpoints are real processes: the ``live`` fixture deploys the champion to production
once for the module (~20 s) and stops everything in teardown.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.entities import Deployment, Endpoint
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from tests.conftest import copy_workspace
from tests.pages.helpers import as_read
from tests.release.conftest import wait_for_exit
from ui import chrome, endpoints_view as ev, plan_dialog, state

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/endpoints.py"


def open_app(actor: str | None = None) -> AppTest:
    """The console on its default page (the sidebar with the identity picker is rendered by app.py)."""
    from streamlit import cache_data
    cache_data.clear()  # tests write through the services directly; the page must not see stale reads
    at = AppTest.from_file(APP, default_timeout=60)
    if actor:
        at.session_state[state.ACTOR] = actor
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(actor: str | None = None) -> AppTest:
    # NB: with a ``pages/`` folder, AppTest.switch_page runs the page script on its own (Streamlit's
    # legacy pages mode), without app.py's sidebar: the identity is set in session state instead.
    at = open_app(actor)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    return as_read("\n".join(e.value for e in at.error))


@pytest.fixture
def stopped_env(demo_template, tmp_path, monkeypatch):
    """A demo workspace whose endpoints have never run (its own copy: this test must not see the live one)."""
    path = copy_workspace(demo_template, tmp_path / "ws")
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    ws = LocalWorkspace(path)
    yield ws
    ws.endpoints.down(SYSTEM_ACTOR)  # in case a test started them
    ws.close()


@pytest.fixture(scope="module")
def live(demo_ws):
    champion = demo_ws.models.champion(demo_ws.policy.model_name)
    try:
        demo_ws.releases.deploy(champion.name, champion.version, demo_ws.policy.endpoints.production, SYSTEM_ACTOR)
        yield demo_ws
    finally:
        demo_ws.endpoints.down(SYSTEM_ACTOR)
        # the crash test's killed server leaves workers: the supervisor must reap them
        left = wait_for_exit(demo_ws.root, 15)
        assert not left, f"processes left behind: {left}"
        assert "tick failed" not in (demo_ws.root / "logs" / "supervisor.log").read_text()


@pytest.fixture
def live_env(live, demo_env):
    return live


def test_not_running_says_so_and_start_is_refused_to_support(stopped_env):
    at = open_page("support@contoso.com")
    assert any("endpoints are not running" in w.value for w in at.warning)
    assert [t.label for t in at.tabs] == ["🔴 production", "🔴 staging"]
    at.button(key="endpoints.up").click().run()
    assert "support@contoso.com (support) may not start or stop the endpoints" in errors(at)
    assert stopped_env.endpoints.supervisor_pid() is None  # nothing was started


def sidebar_only() -> AppTest:
    # app.py's sidebar renders on the first run only under AppTest (see open_page): drive the chrome alone
    at = AppTest.from_string("from ui import chrome\nchrome.sidebar()", default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_identity_picker_sets_the_actor(stopped_env):
    assert open_app().sidebar.selectbox(key=chrome.PICK_KEY).label == "Acting as"  # app.py renders it
    at = sidebar_only()
    assert at.session_state[state.ACTOR] == chrome.DEFAULT_ACTOR
    picker = at.sidebar.selectbox(key=chrome.PICK_KEY)
    assert "qa@contoso.com — qa" in picker.options and picker.options[-1] == chrome.SOMEONE_ELSE
    picker.set_value("qa@contoso.com").run()
    assert at.session_state[state.ACTOR] == "qa@contoso.com"
    assert any("Roles: **qa**" in c.value for c in at.sidebar.caption)
    assert any("No sign-in configured" in c.value for c in at.sidebar.caption)

    at.sidebar.selectbox(key=chrome.PICK_KEY).set_value(chrome.SOMEONE_ELSE).run()
    at.sidebar.text_input(key=chrome.OTHER_KEY).input("dana@contoso.com").run()
    assert at.session_state[state.ACTOR] == "dana@contoso.com"
    assert any("has no role" in c.value for c in at.sidebar.caption)

    at.sidebar.text_input(key=chrome.OTHER_KEY).input(SYSTEM_ACTOR).run()  # reserved: never pickable
    assert at.session_state[state.ACTOR] == chrome.DEFAULT_ACTOR
    assert any("reserved" in e.value for e in at.sidebar.error)


def test_identity_set_elsewhere_shows_in_the_picker(stopped_env):
    at = open_app("lead@contoso.com")
    assert at.sidebar.selectbox(key=chrome.PICK_KEY).value == "lead@contoso.com"


def test_live_endpoint_shows_deployments_traffic_and_uri(live_env):
    at = open_page()
    assert not any("not running" in w.value for w in at.warning)
    ep = live_env.endpoints.get("production")
    assert any(c.value == ep.scoring_uri for c in at.code)
    table = at.dataframe[0].value
    assert list(table["deployment"]) == ["blue"]
    champion = live_env.models.champion(live_env.policy.model_name)
    assert table.loc[0, "model"] == champion.ref and table.loc[0, "traffic"] == 100
    assert table.loc[0, "state"] == "🟢 healthy"
    assert at.get("plotly_chart")  # the traffic bar
    logs = [c.value for c in at.code if "azmlinfsrv" in c.value or "score.py" in c.value]
    assert logs, "the console log of blue is shown"


def test_test_panel_scores_and_names_a_bad_payload(live_env):
    at = open_page("QA@contoso.com")
    at.button(key="endpoints.test.send.production").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "200"
    assert metrics["Answered by"] == "blue"
    assert metrics["Model"] == f"v{live_env.models.champion(live_env.policy.model_name).version}"
    assert any(isinstance(j.value, str) and "predictions" in j.value for j in at.json)
    sent = live_env.releases.audit(1)[0]  # the request is audited: who, under which role, what came back
    assert (sent.action, sent.target, sent.actor, sent.role) == ("endpoint.invoke", "production", "qa@contoso.com", "qa")
    assert sent.after["status"] == 200 and sent.after["deployment"] == "blue" and sent.after["request_id"]
    assert set(sent.before) == {"bytes", "sha256"}, "the payload itself is not in the trail"

    at.text_area(key="endpoints.test.body.production").input('{"data": [[1, 2, 3]]}').run()
    at.button(key="endpoints.test.send.production").click().run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "400"
    assert "expected 10 features" in errors(at)


def test_keys_are_shown_to_qa_and_refused_to_support(live_env):
    full = live_env.endpoints.keys("production", "admin@contoso.com")[0]
    at = open_page("support@contoso.com")
    at.toggle(key="endpoints.keys.production").set_value(True).run()
    assert "may not see endpoint keys" in errors(at)
    assert not any(c.value == full for c in at.code)

    at = open_page("qa@contoso.com")
    at.toggle(key="endpoints.keys.production").set_value(True).run()
    assert any(c.value == full for c in at.code)


def test_regenerate_asks_first_and_then_the_old_key_gets_401(live_env):
    at = open_page("admin@contoso.com")
    at.button(key="endpoints.regen.production.primary").click().run()
    dialog = "\n".join(m.value for m in at.markdown)
    assert "get 401 Unauthorized" in dialog
    old = live_env.endpoints.keys("production", "admin@contoso.com")[0]
    at.button(key="dialog.confirm").click().run()
    assert not at.exception
    assert any("primary key of production is new" in s.value for s in at.success)
    new = live_env.endpoints.keys("production", "admin@contoso.com")[0]
    assert new != old
    payload = {"data": [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]}
    assert live_env.endpoints.invoke("production", payload, key=old).status == 401
    assert live_env.endpoints.invoke("production", payload).status == 200


def test_a_crashed_deployment_shows_as_an_incident(live_env):
    row = live_env.db.one("SELECT pid FROM deployments WHERE endpoint = 'production' AND name = 'blue'")
    os.kill(row["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:  # the supervisor notices, restarts it and records why
        blue = live_env.endpoints.get("production").deployments[0]
        if blue.restarts and blue.state == "healthy":
            break
        assert time.monotonic() < deadline, blue
        time.sleep(0.5)
    at = open_page()
    assert f"**blue** ({blue.model_ref}) was restarted 1× by the supervisor and is healthy" in \
        "\n".join(w.value for w in at.warning)
    assert at.dataframe[0].value.loc[0, "restarts"] == 1
    assert [m.value for m in at.metric if m.label == "Restarts"] == ["1", "0"]  # production, staging


def test_incident_levels():
    ep = Endpoint("production", "", (Deployment("blue", "production", "m", 1, "unhealthy", 100, last_error="boom"),
                                     Deployment("green", "production", "m", 2, "healthy", 0, restarts=2),
                                     Deployment("old", "production", "m", 0, "stopped", 0, restarts=5)))
    assert ev.incidents(ep) == [("error", "**blue** (m:1) is unhealthy — last error: boom"),
                                ("warning", "**green** (m:2) was restarted 2× by the supervisor and is healthy")]
    assert [ev.deployment_role(ep, d) for d in ep.deployments] == ["serving", "warm: rollback target", "stopped"]


def test_regenerate_is_refused_to_qa(live_env):
    plan = live_env.releases.plan_regenerate_key("production", "secondary")
    from services.errors import Forbidden
    with pytest.raises(Forbidden, match="may not regenerate endpoint keys"):
        plan_dialog.perform(live_env, plan, "qa@contoso.com")
