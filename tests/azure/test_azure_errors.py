"""What the user reads when Azure says no: 403, 404, 429 (after back-off), 5xx, no sign-in,
no configuration — through the real SDKs on the replay transport."""
from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ClientAuthenticationError

from services.azure import config
from services.errors import BackendUnavailable, Forbidden, InvalidInput, NotFound
from services.workspace import open_workspace

MODEL = "diabetes-regressor"


def test_403_is_forbidden_naming_the_role(ws):
    ws.replay.fail_next("GET", r"/workspaces/[^/]+/models$", 403,
                        body={"error": {"code": "AuthorizationFailed",
                                        "message": "The client does not have authorization to perform action"}})
    with pytest.raises(Forbidden) as err:
        ws.models.versions()
    assert "no permission to list the registered models" in str(err.value)
    assert "AzureML Data Scientist" in err.value.hint


def test_403_on_the_storage_names_the_storage_role(ws):
    body = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>'
            "This request is not authorized to perform this operation using this permission.</Message></Error>")
    ws.replay.fail_next("GET", r"/tollgate/datasets/diabetes/1/", 403, body=body,
                        headers={"x-ms-error-code": "AuthorizationPermissionMismatch", "Content-Type": "application/xml"})
    with pytest.raises(Forbidden) as err:
        ws.datasets.load("diabetes", 1)
    assert "Storage Blob Data Reader" in err.value.hint


def test_403_from_mlflow_is_forbidden(ws):
    ws.replay.fail_next("POST", r"/mlflow/runs/search$", 403)
    with pytest.raises(Forbidden):
        ws.jobs.list()


def test_404_is_not_found_with_what_exists(ws):
    with pytest.raises(NotFound) as err:
        ws.datasets.get("nope")
    assert "nope" in str(err.value) and "diabetes" in err.value.hint
    with pytest.raises(NotFound) as err:
        ws.jobs.get("run-that-never-was")
    assert "run-that-never-was" in str(err.value)
    with pytest.raises(NotFound) as err:
        ws.models.get(MODEL, 42)
    assert f"{MODEL}:42" in str(err.value) and "1 to 5" in err.value.hint


def test_a_single_429_is_retried_transparently(ws):
    ws.replay.fail_next("GET", r"/workspaces/[^/]+/data$", 429, headers={"Retry-After": "3"})
    assert ws.datasets.names() == ["diabetes"]
    assert [c.status for c in ws.replay.find("GET", r"/workspaces/[^/]+/data$")] == [429, 200]
    assert 3.0 in ws.replay.sleeps


def test_persistent_429_is_throttled_after_back_off(ws):
    ws.replay.fail_next("GET", r"/workspaces/[^/]+/jobs$", 429, headers={"Retry-After": "2"}, times=100)
    with pytest.raises(BackendUnavailable) as err:
        ws.jobs.list()
    assert "throttling" in str(err.value) and "429" in str(err.value)
    assert "Wait a minute" in err.value.hint
    attempts = ws.replay.find("GET", r"/workspaces/[^/]+/jobs$")
    assert len(attempts) > 3 and all(c.status == 429 for c in attempts), "retried before giving up"
    assert ws.replay.sleeps.count(2.0) == len(attempts) - 1


def test_5xx_is_backend_unavailable_after_retries(ws):
    ws.replay.fail_next("GET", r"/models/diabetes-regressor/versions$", 503, times=100)
    with pytest.raises(BackendUnavailable) as err:
        ws.models.versions(MODEL)
    assert "service error (503)" in str(err.value) and "status.azure.com" in err.value.hint
    assert len(ws.replay.find("GET", r"/models/diabetes-regressor/versions$")) > 1


def test_no_sign_in_says_how_to_sign_in(ws):
    class NoLogin:
        def get_token(self, *scopes, **kw):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

        def get_token_info(self, *scopes, **kw):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
    from azure.ai.ml import MLClient
    from services.azure.workspace import AzureWorkspace
    ml = MLClient(NoLogin(), ws.settings.subscription_id, ws.settings.resource_group, ws.settings.workspace_name,
                  transport=ws.replay, enable_telemetry=False)
    broken = AzureWorkspace(ml, None, ws.settings, transport=ws.replay)
    with pytest.raises(BackendUnavailable) as err:
        broken.datasets.names()
    assert "could not sign in to Azure" in str(err.value) and "az login" in err.value.hint


# --- configuration ------------------------------------------------------------------------

def test_no_configuration_is_invalid_input_naming_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in (*config.ENV.values(), config.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(InvalidInput) as err:
        open_workspace("azure://")
    assert "subscription_id" in str(err.value) and "config.json" in err.value.hint


def test_settings_come_from_environment_then_secrets_then_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in (*config.ENV.values(), config.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-file", "resource_group": "rg-file", "workspace_name": "ws-file"}))
    assert (config.load_settings().subscription_id, config.load_settings().workspace_name) == ("sub-file", "ws-file")
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[azure]\nworkspace_name = "ws-secret"\ncompute = "gpu"\n')
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg-env")
    s = config.load_settings()
    assert (s.subscription_id, s.resource_group, s.workspace_name, s.compute) == ("sub-file", "rg-env", "ws-secret", "gpu")
    assert "environment" in s.source and "config.json" in s.source


def test_a_real_workspace_builds_its_credential_only_when_opened(tmp_path, monkeypatch):
    """Opening ``azure://`` constructs DefaultAzureCredential (here a stand-in) once, and no request
    is sent before a read; importing the adapter or opening the replay constructs none."""
    import azure.identity

    from services.azure.replay import FakeCredential, ReplayTransport
    made = []

    def stand_in(*args, **kwargs):
        made.append(kwargs)
        return FakeCredential()
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", stand_in)
    from services.azure.workspace import open_replay
    open_replay().close()
    assert made == []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "s")
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "g")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "w")
    before = ReplayTransport.sent
    real = open_workspace("azure://")
    assert len(made) == 1
    assert real.info.kind == "azure" and "w" in real.info.description
    assert real.ml._operation_scope.workspace_name == "w"
    assert ReplayTransport.sent == before
    real.close()


def test_bad_azure_uri_is_invalid_input():
    with pytest.raises(InvalidInput):
        open_workspace("azure://only/two")
