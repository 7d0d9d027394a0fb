"""A deployment or endpoint whose provisioning failed shows why, as Azure says it, on the Endpoints
page and in ``tollgate.py endpoint``: the error of the long-running operation it names in
``properties.AzureAsyncOperationUri`` (ARM's asynchronous-operation format), else its console log's
last error line (``getLogs``). The reason is user text: shown escaped."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cli.release import endpoint_data, endpoint_text
from services.azure.provisioning import NO_REASON
from tests.pages.helpers import as_read

APP = str(Path(__file__).resolve().parents[2] / "app.py")
CRASHED = {"code": "ResourceNotReady",
           "message": "User container has crashed or terminated: **init()** failed <img src=x>"}


def add_failed_deployment(t, endpoint: str = "staging", name: str = "green", *, error: dict | None = CRASHED,
                          operation_host: str | None = None) -> str | None:
    """A copy of the endpoint's blue deployment in provisioning state Failed, naming the failed
    operation (with ``error``) as Azure ML does; returns the operation's id."""
    online = t.online
    dep = copy.deepcopy(next(d for d in online.deployments(endpoint) if d["name"] == "blue"))
    dep["name"], dep["id"] = name, dep["id"].rsplit("/", 1)[0] + f"/{name}"
    dep["properties"]["provisioningState"] = "Failed"
    op = None
    if error is not None:
        op = t.arm.new_operation("Failed", error=error)
        url = t.arm.op_url(op)
        if operation_host:
            url = url.replace("management.azure.com", operation_host)
        dep["properties"]["properties"] = {"AzureAsyncOperationUri": url}
    t.arm.put_raw(f"{online.endpoint_path(endpoint)}/deployments/{name}", dep)
    return op


def green(ws):
    return next(d for d in ws.endpoints.get("staging").deployments if d.name == "green")


def test_a_failed_deployment_shows_the_operations_error(ws):
    t = ws.replay
    op = add_failed_deployment(t)
    t.reset_calls()
    d = green(ws)
    assert d.state == "failed" and d.provisioning_state == "Failed"
    assert d.last_error == f"provisioning Failed: {CRASHED['code']}: {CRASHED['message']}"
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in t.calls if "mfeOperations" in c.path] == [("GET", op)]
    assert not [c for c in t.calls if c.path.endswith("/getLogs")]       # the operation said why
    t.reset_calls()
    ws.endpoints.get("staging")                       # kept: no second read of the operation
    assert not [c for c in t.calls if "mfeOperations" in c.path]


def test_without_an_operation_error_the_console_log_says_why(ws):
    t = ws.replay
    add_failed_deployment(t, error=None)
    t.online.logs[("staging", "green")] = ("2026-11-20 10:00:01 starting\nTraceback (most recent call last):\n"
                                           "  File \"score.py\", line 3\nModuleNotFoundError: No module named 'sklearn'\n"
                                           "worker exiting\n")
    d = green(ws)
    assert d.last_error == "provisioning Failed: console log: ModuleNotFoundError: No module named 'sklearn'"


def test_a_failure_with_nothing_to_say_says_so(ws):
    add_failed_deployment(ws.replay, error={"code": "Unknown"})    # no message; an empty console log
    assert green(ws).last_error == f"provisioning Failed: {NO_REASON}; its console log names no error"


def test_the_bearer_token_goes_to_arm_only(ws):
    t = ws.replay
    add_failed_deployment(t, operation_host="operations.example.com")
    t.reset_calls()
    assert green(ws).last_error.startswith("provisioning Failed: ")
    assert all(c.host != "operations.example.com" for c in t.calls)


def test_a_failed_endpoint_shows_why(ws):
    t = ws.replay
    online = t.online
    resource = online.endpoint("staging")
    op = t.arm.new_operation("Failed", error={"code": "QuotaExceeded", "message": "Not enough quota for Standard_DS3_v2"})
    resource["properties"]["provisioningState"] = "Failed"
    resource["properties"]["properties"] = {"AzureAsyncOperationUri": t.arm.op_url(op)}
    t.arm.put_raw(online.endpoint_path("staging"), resource)
    ep = ws.endpoints.get("staging")
    assert ep.provisioning_error == "QuotaExceeded: Not enough quota for Standard_DS3_v2"
    assert endpoint_data(ep)["provisioning_error"] == ep.provisioning_error
    assert "[Failed]  why: QuotaExceeded: Not enough quota" in endpoint_text(ep)
    assert ws.endpoints.get("production").provisioning_error == ""


def test_the_cli_text_names_the_reason_under_the_deployment(ws):
    add_failed_deployment(ws.replay)
    text = endpoint_text(ws.endpoints.get("staging"))
    line = next(i for i, ln in enumerate(text.splitlines()) if ln.strip().startswith("green"))
    assert text.splitlines()[line + 1].strip() == f"why: provisioning Failed: {CRASHED['code']}: {CRASHED['message']}"


def test_the_endpoints_page_shows_the_reason_as_text(replay_env):
    from ui import state
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/endpoints.py")
    at.run()
    add_failed_deployment(state._workspace(state.uri()).replay)
    st.cache_data.clear()
    state._workspace(state.uri()).endpoints.clear_cache()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    shown = [e.value for e in at.error]
    reason = f"{CRASHED['code']}: {CRASHED['message']}"
    assert any(as_read(v).endswith(f"is failed — last error: provisioning Failed: {reason}") for v in shown), shown
    assert not any("**init()**" in v for v in shown)          # escaped: no bold, no image
    errors = {e for df in at.dataframe if "last error" in df.value.columns for e in df.value["last error"]}
    assert f"provisioning Failed: {reason}" in errors
