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
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.azure.replay import ReplayTransport

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = sorted(p.stem for p in (Path(APP).parent / "pages").glob("*.py"))
SERVICE_ERROR_ICON = "🚫"  # ui.widgets.show_error
URI = "azure+replay://real"
COLD_BUDGET = 10


@pytest.fixture
def real_env(monkeypatch):
    monkeypatch.setenv("TOLLGATE_WORKSPACE", URI)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield URI
    st.cache_data.clear()
    st.cache_resource.clear()


def _render(page: str) -> tuple[AppTest, int, int]:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(f"pages/{page}.py")
    st.cache_data.clear()
    st.cache_resource.clear()
    before = ReplayTransport.sent
    at.run()
    cold = ReplayTransport.sent - before
    before = ReplayTransport.sent
    at.run()
    return at, cold, ReplayTransport.sent - before


def _shown(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [t.value for t in at.text]
    for df in at.dataframe:
        parts.append(df.value.to_string())
    for sb in at.selectbox:
        parts += [str(o) for o in sb.options]
    return "\n".join(parts)


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
