"""Every page of the console renders against the replayed Azure workspace (``azure+replay://``)
without an exception, shows the fixtures' content, and reruns without a single HTTP request."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.azure.replay import FIXTURES, ReplayTransport

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = sorted(p.stem for p in (Path(APP).parent / "pages").glob("*.py"))
SERVICE_ERROR_ICON = "🚫"  # ui.widgets.show_error
# what the demo cannot show on Azure, said on the page rather than failing it
EXPECTED_NOTICES = {"drift": "collected inputs are unavailable"}


def _render(page: str) -> tuple[AppTest, int, int]:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(f"pages/{page}.py")
    st.cache_data.clear()  # cold: a fresh workspace (and transport), nothing cached
    st.cache_resource.clear()
    before = ReplayTransport.sent
    at.run()
    cold = ReplayTransport.sent - before
    before = ReplayTransport.sent
    at.run()
    return at, cold, ReplayTransport.sent - before


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    for df in at.dataframe:
        parts.append(df.value.to_string())
    for sb in at.selectbox:
        parts += [str(o) for o in sb.options]
    return "\n".join(parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_the_replayed_workspace(replay_env, page):
    at, cold, warm = _render(page)
    assert not at.exception, [e.message for e in at.exception]
    problems = [e.value for e in at.error if e.icon == SERVICE_ERROR_ICON
                and EXPECTED_NOTICES.get(page, "\0") not in e.value]
    assert problems == []
    assert warm == 0, f"a rerun within the cache TTL sent {warm} requests"


def test_overview_datasets_runs_and_models_show_the_fixtures(replay_env):
    jobs = json.loads((FIXTURES / "arm" / "jobs.json").read_text())
    versions = [r for r in json.loads((FIXTURES / "arm" / "models.json").read_text()) if "/versions/" in r["id"]]

    at, _, _ = _render("overview")
    assert "Azure ML workspace" in _text(at) and "diabetes-regressor:1" in _text(at)

    at, _, _ = _render("runs")
    shown = _text(at)
    assert all(job["name"] in shown or job["properties"]["displayName"] in shown for job in jobs)

    at, _, _ = _render("models")
    shown = _text(at)
    assert all(f"diabetes-regressor:{v['name']}" in shown or f"v{v['name']}" in shown for v in versions)

    at, _, _ = _render("datasets")
    assert "diabetes" in _text(at)


@pytest.mark.parametrize("page", ["overview", "datasets", "runs", "models"])
def test_registry_pages_need_few_requests(replay_env, page):
    """Cold (fresh workspace, empty caches): a bounded number of requests, none per row."""
    _, cold, _ = _render(page)
    assert 0 < cold <= 25, cold
