"""The console and the CLI on what real Azure ML workspaces return: ``azure+replay://real`` serves
response bodies the Azure SDK team recorded against real Azure (``services/azure/fixtures/real``,
each file citing its recording): a data version named ``foo`` and a ``uri_folder``, MLflow and
custom models registered outside Tollgate (one archived, Azure ``stage`` set), a serverless command
job and a pipeline job whose steps failed without a start time, an ``aml_token`` endpoint still
being created, without a scoring URI or a deployment. Every page renders with no error box and no
exception, within the HTTP budget; the CLI prints them, exit 0."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.azure.conftest import console_on
from tests.azure.test_azure_pages import PAGES, SERVICE_ERROR_ICON, _render, _text

URI = "azure+replay://real"
COLD_BUDGET = 10


@pytest.fixture
def real_env(monkeypatch):
    with console_on(monkeypatch, URI) as uri:
        yield uri


def _shown(at) -> str:
    return "\n".join([_text(at), *(w.value for w in at.warning), *(i.value for i in at.info), *(t.value for t in at.text)])


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_real_recordings(real_env, page):
    at, cold, warm = _render(page)
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error if e.icon == SERVICE_ERROR_ICON] == []
    assert cold <= COLD_BUDGET and warm == 0, (cold, warm)


def test_pages_describe_foreign_assets_as_they_are(real_env):
    at, _, _ = _render("datasets")
    shown = _shown(at)
    assert "foo" in shown and "uri_folder" in shown, shown
    assert "not tested" in shown and "✅" not in shown  # never tested by Tollgate: not "pass"
    assert "is not a CSV or Parquet file" in shown  # the latest (foo, a .py file) says why it cannot be read
    at, _, _ = _render("models")
    shown = _shown(at)
    assert "Development" in shown and "(no lineage)" in shown, shown  # Azure's own stage, beside ours
    assert "cannot be reviewed yet" in shown and "the dataset version it was trained on" in shown


@pytest.mark.parametrize("argv", [["status"], ["datasets"], ["runs"], ["models"], ["datasets", "test_777353693968:foo"]])
def test_cli_prints_real_recordings(real_env, capsys, argv):
    import tollgate
    code = tollgate.main(["--workspace", URI, "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    json.loads(out)


def test_cli_endpoint_shows_a_token_endpoint_being_created(real_env, capsys):
    import tollgate
    code = tollgate.main(["--workspace", URI, "--json", "endpoint", "--env", "online-ept-6696557f8dec409"])
    out, err = capsys.readouterr()
    assert code == 0, err
    shown = json.loads(out)
    assert shown["auth_mode"] == "aml_token" and shown["provisioning_state"] == "Creating"
    assert shown["scoring_uri"] == "" and shown["deployments"] == []


def test_versions_keep_their_text_and_foreign_models_their_stage():
    from services.azure.workspace import open_azure
    ws = open_azure(URI)
    try:
        dv = ws.datasets.get("test_777353693968", "foo")
        assert dv.version == "foo" and not dv.tested and "not a CSV or Parquet" in dv.unreadable
        folder = ws.datasets.get("test_60801715751")
        assert (folder.version, folder.kind) == (1, "uri_folder") and "uri_folder" in folder.unreadable
        stages = {m.ref: (m.azure_stage, m.model_type, m.archived) for m in ws.models.versions()}
        assert stages == {"test_269749567585:3": ("Production", "mlflow_model", False),
                          "model_test_129743542416:2": ("Development", "custom_model", False),
                          "model_test_129743542416:1": ("Archived", "custom_model", True)}
    finally:
        ws.close()


@pytest.mark.parametrize("ref, source, workspace_model", [
    ("azureml://registries/azureml/models/distilbert-base-uncased/versions/3",
     "registry azureml: distilbert-base-uncased:3", None),
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/models/m/versions/2",
     "", ("m", 2)),
])
def test_deployment_models_from_registries_and_anonymous_ones_are_not_taken_for_workspace_models(
        ref, source, workspace_model):
    from services.azure.endpoints import model_of
    from services.azure.online_convert import model_source
    assert model_source(ref) == source and model_of(ref) == workspace_model


def test_runs_page_shows_the_failed_steps_of_a_pipeline_with_their_errors(real_env):
    from ui import runs_view
    history = json.loads((Path(__file__).resolve().parents[2] / "services/azure/fixtures/real/history.json")
                         .read_text())["runs"]
    at, _, _ = _render("runs")
    at.multiselect(key=runs_view.PICK).set_value(["test_680454434153"]).run()
    at.session_state["runs.steps.test_680454434153"] = True  # open the collapsed steps
    at.run()
    assert not at.exception and not [e for e in at.error if e.icon == SERVICE_ERROR_ICON]
    steps = next(df.value for df in at.dataframe if "step" in df.value.columns)
    assert sorted(steps["step"]) == sorted(r["displayName"] for r in history)
    assert all("Authentication failed" in e for e in steps["error"]) and steps["started"].notna().all()
