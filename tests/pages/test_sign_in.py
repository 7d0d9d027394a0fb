"""Console sign-in (st.login with Microsoft Entra ID): identity and roles from the verified token.

AppTest stands in for the identity provider through ``AppTest.user`` (what ``st.user`` reads)
and ``AppTest.secrets`` (the ``[auth]`` section that turns sign-in on).
"""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from services.local.workspace import LocalWorkspace
from services.policy import parse_policy
from services.release_rules import authorize
from tests.conftest import copy_workspace
from ui import chrome, state

AUTH_SECRETS = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "not-a-real-secret",
                "microsoft": {"client_id": "00000000-0000-0000-0000-000000000000", "client_secret": "x",
                              "server_metadata_url": "https://login.microsoftonline.com/common/v2.0/"
                                                     ".well-known/openid-configuration"}}


@pytest.fixture
def ws_env(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "ws")
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    ws = LocalWorkspace(path)
    yield ws
    ws.close()


def sidebar(user: dict, secrets: dict | None = AUTH_SECRETS) -> AppTest:
    at = AppTest.from_string("from ui import chrome\nchrome.sidebar()", default_timeout=30)
    if secrets is not None:
        at.secrets["auth"] = secrets
    at.user = user
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_signed_out_users_are_read_only_and_offered_sign_in(ws_env):
    at = sidebar({"is_logged_in": False})
    assert at.session_state[state.ACTOR] == chrome.DEFAULT_ACTOR
    assert [b.label for b in at.sidebar.button] == ["Sign in with Microsoft"]
    assert not at.sidebar.selectbox  # no identity picker once sign-in is configured


def test_the_token_names_the_actor_and_its_app_roles_grant_roles(ws_env):
    at = sidebar({"is_logged_in": True, "email": "Jo@Contoso.com", "roles": ["Tollgate.QA", "Unrelated.Role"]})
    assert at.session_state[state.ACTOR] == "jo@contoso.com"
    assert any("Roles: **qa**" in c.value for c in at.sidebar.caption)
    assert [b.label for b in at.sidebar.button] == ["Sign out"]
    # the services see the granted role: the same rules as for [roles]
    assert authorize(ws_env.policy, "jo@contoso.com", "promote") == "qa"


def test_roles_from_the_policy_apply_to_signed_in_users_without_app_roles(ws_env):
    at = sidebar({"is_logged_in": True, "preferred_username": "lead@contoso.com"})
    assert at.session_state[state.ACTOR] == "lead@contoso.com"
    assert any("Roles: **ml_lead**" in c.value for c in at.sidebar.caption)


def test_a_token_without_a_name_acts_read_only(ws_env):
    at = sidebar({"is_logged_in": True, "roles": ["Tollgate.Admin"]})
    assert at.session_state[state.ACTOR] == chrome.DEFAULT_ACTOR
    assert any("no usable e-mail" in e.value for e in at.sidebar.error)


def test_without_auth_secrets_the_identity_picker_stays(ws_env):
    at = sidebar({"is_logged_in": False}, secrets=None)
    assert at.sidebar.selectbox(key=chrome.PICK_KEY).label == "Acting as"


def test_app_roles_must_map_to_tollgate_roles():
    with pytest.raises(Exception, match="unknown role"):
        parse_policy('[auth]\napp_roles = { "Tollgate.Boss" = "boss" }')
    policy = parse_policy('[auth]\napp_roles = { "Tollgate.QA" = "qa" }')
    assert chrome.token_roles(policy, {"roles": "Tollgate.QA"}) == ("qa",)
    assert chrome.token_roles(policy, {"roles": ["Other"]}) == ()


def test_bound_to_the_os_user_the_picker_is_off_and_the_os_user_acts(demo_template, tmp_path, monkeypatch):
    from services.policy import os_login
    path = copy_workspace(demo_template, tmp_path / "ws")
    (path / "tollgate.toml").write_text(f'[auth]\nlocal_identity = "os-user"\n[auth.os_users]\n'
                                        f'"{os_login()}" = "me@contoso.com"\n[roles]\n"me@contoso.com" = "qa"\n')
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    at = AppTest.from_string("from ui import chrome\nchrome.sidebar()", default_timeout=30)
    at.session_state[state.ACTOR] = "admin@contoso.com"      # what a previous pick or a link left
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.sidebar.selectbox and not at.sidebar.text_input      # nothing to pick, nothing to type
    assert at.session_state[state.ACTOR] == "me@contoso.com"
    assert any("me@contoso.com" in m.value for m in at.sidebar.markdown)
