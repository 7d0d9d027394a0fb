"""Endpoints with ``aml_token`` and ``aad_token`` auth on the replayed Azure workspace: the smoke test,
the Endpoints page's Test panel and the traffic simulator send the credential the endpoint's auth
mode asks for, and the replay (which checks it, 401 otherwise) records the ``Authorization`` header.

``aml_token``: the token comes from ``POST …/onlineEndpoints/E/token``, answered with the body the
Azure SDK team recorded against real Azure (``services/azure/fixtures/online/token.json``; its token
is the recording's sanitised ``"Sanitized"``). ``aad_token``: the signed-in identity's token for
``https://ml.azure.com`` (the replay credential's ``REPLAY_TOKEN``); no ARM request for it.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.azure.replay.credential import REPLAY_TOKEN
from services.azure.replay.online import TOKEN_FIXTURE
from services.azure.scoring_auth import AAD_SCOPE, auth_mode
from services.errors import Unsupported
from services.simulator import simulate

APP = str(Path(__file__).resolve().parents[2] / "app.py")
MODEL = "diabetes-regressor"
QA = "qa@contoso.com"
ROW = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.86, 87]
RECORDED = json.loads(TOKEN_FIXTURE.read_text())["body"]["accessToken"]
REST_MODE = {"aml_token": "AMLToken", "aad_token": "AADToken", "key": "Key"}
EXPECTED = {"aml_token": RECORDED, "aad_token": REPLAY_TOKEN}
TOKEN_ROUTE = r"/onlineEndpoints/staging/token$"


def use_auth_mode(transport, endpoint: str, mode: str) -> None:
    """Give the replayed endpoint the auth mode ``mode`` (REST spelling, as ARM returns it)."""
    online = transport.online
    resource = online.endpoint(endpoint)
    resource["properties"]["authMode"] = REST_MODE[mode]
    transport.arm.put_raw(online.endpoint_path(endpoint), resource)


def auth_headers(transport, endpoint: str) -> list[str]:
    return [s["authorization"] for s in transport.online.scored if s["endpoint"] == endpoint]


def credential_requests(transport) -> list[str]:
    return [c.path.rsplit("/", 1)[-1] for c in transport.calls if c.path.endswith(("/token", "/listKeys"))]


@pytest.fixture(params=["aml_token", "aad_token"])
def token_ws(request, ws):
    use_auth_mode(ws.replay, "staging", request.param)
    ws.replay.reset_calls()
    return ws, request.param


def test_auth_modes_are_read_in_every_spelling():
    assert [auth_mode(m) for m in ("Key", "AMLToken", "aml_token", "AADToken", "aad_token", None)] == \
        ["key", "aml_token", "aml_token", "aad_token", "aad_token", "key"]


def test_endpoint_shows_its_auth_mode_and_no_key(token_ws):
    ws, mode = token_ws
    ep = ws.endpoints.get("staging")
    assert ep.auth_mode == mode
    assert ep.primary_key_masked == ep.secondary_key_masked == ""
    assert ws.endpoints.masked_keys("staging") is None
    assert credential_requests(ws.replay) == []          # no listKeys for an endpoint without keys


def test_invoke_sends_the_token_of_the_auth_mode(token_ws):
    ws, mode = token_ws
    t = ws.replay
    res = ws.endpoints.invoke("staging", {"data": [ROW]}, deployment="blue")
    assert res.status == 200 and res.deployment == "blue"
    assert auth_headers(t, "staging") == [f"Bearer {EXPECTED[mode]}"]
    if mode == "aml_token":      # one POST …/token, not listKeys
        assert credential_requests(t) == ["token"]
        assert [c.method for c in t.find("POST", TOKEN_ROUTE)] == ["POST"]
    else:                        # the identity's token for Azure ML; nothing asked of ARM
        assert credential_requests(t) == []
        assert (AAD_SCOPE,) in ws.credential.scopes


def test_a_token_is_kept_until_it_expires_and_a_refused_one_comes_back_as_401(token_ws):
    ws, mode = token_ws
    t = ws.replay
    t.online.token_body = {**t.online.token_body, "expiryTimeUtc": int(time.time()) + 3600}
    assert ws.endpoints.invoke("staging", {"data": [ROW]}).status == 200
    ws.endpoints.clear_cache()        # what a release write does: the token is kept all the same
    t.reset_calls()
    if mode == "aml_token":
        t.online.tokens["staging"] = "rotated"
    else:
        t.online.aad_token = "another-identity"
    assert ws.endpoints.invoke("staging", {"data": [ROW]}).status == 401
    assert credential_requests(t) == []


def test_smoke_test_scores_with_the_token(token_ws):
    ws, mode = token_ws
    t = ws.replay
    t.arm.lro_polls = 1
    ws.endpoints.poll_s = 0.01
    ws.releases.deploy(MODEL, 4, "staging", QA)
    smoke = ws.releases.smoke_test_result(ws.releases.state(MODEL, 4).smoke_test_id)
    assert smoke.passed, smoke.summary
    sent = auth_headers(t, "staging")
    assert len(sent) >= ws.policy.smoke.cases and set(sent) == {f"Bearer {EXPECTED[mode]}"}


def test_simulator_sends_with_the_token(token_ws):
    ws, mode = token_ws
    t = ws.replay
    result = simulate(ws, "staging", rps=50, duration_s=0.2, error_rate=0.0, seed=1, actor=QA,
                      transport=t.httpx_transport(), progress_interval_s=10)
    assert result.sent == result.planned == 10
    assert result.by_status == {200: 10}
    assert set(auth_headers(t, "staging")) == {f"Bearer {EXPECTED[mode]}"}


def test_simulator_wrong_key_requests_get_401_on_token_endpoints(token_ws):
    ws, _ = token_ws
    result = simulate(ws, "staging", rps=50, duration_s=0.2, error_rate=1.0, seed=2, actor=QA, kinds=("wrong_key",),
                      transport=ws.replay.httpx_transport(), progress_interval_s=10)
    assert result.by_status == {401: result.sent}


def test_an_unknown_auth_mode_is_refused_before_sending(ws):
    t = ws.replay
    resource = t.online.endpoint("staging")
    resource["properties"]["authMode"] = "Certificate"
    t.arm.put_raw(t.online.endpoint_path("staging"), resource)
    t.reset_calls()
    with pytest.raises(Unsupported, match="auth mode 'Certificate'"):
        ws.endpoints.invoke("staging", {"data": [ROW]})
    assert t.find("POST", r"^/score$") == []


def test_tokens_are_never_logged(token_ws, caplog):
    ws, mode = token_ws
    caplog.set_level(logging.DEBUG)
    ws.endpoints.invoke("staging", {"data": [ROW]})
    assert auth_headers(ws.replay, "staging") == [f"Bearer {EXPECTED[mode]}"]
    assert all(EXPECTED[mode] not in repr(s) for s in ws.endpoints.auth._tokens.values())
    assert EXPECTED[mode] not in caplog.text


# --- the Test panel -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["aml_token", "aad_token"])
def test_test_panel_sends_with_the_token(replay_env, mode):
    from ui import state
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[state.ACTOR] = QA
    at.run()
    at.switch_page("pages/endpoints.py")
    at.run()
    t = state._workspace(state.uri()).replay
    use_auth_mode(t, "staging", mode)
    st.cache_data.clear()
    state._workspace(state.uri()).endpoints.clear_cache()
    t.reset_calls()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    shown = "\n".join(c.value for c in at.caption)
    assert ("Azure ML tokens" if mode == "aml_token" else "Microsoft Entra tokens") in shown
    assert credential_requests(t) == []                  # the page view reads no token
    at.text_area(key="endpoints.test.body.staging").set_value(json.dumps({"data": [ROW]}))
    at.button(key="endpoints.test.send.staging").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[-4].value == "200"
    assert auth_headers(t, "staging") == [f"Bearer {EXPECTED[mode]}"]
    page = "\n".join([c.value for c in at.code] + [m.value for m in at.markdown] + [c.value for c in at.caption])
    assert REPLAY_TOKEN not in page
