"""The Schedules page: list with next fire times, add, pause/resume, remove behind a confirmation,
dataset triggers, recent firings linked to their runs; roles enforced by the service."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.local.scheduler import Scheduler
from tests.pages.helpers import act, texts
from tests.pages.helpers import open_page as open_schedules
from ui import schedules_view as view

PAGE = "pages/schedules.py"
LEAD, SUPPORT = "lead@contoso.com", "support@contoso.com"


@pytest.fixture(autouse=True)
def fresh_reads():
    st.cache_data.clear()  # the tests also write through the services
    yield


def open_page(actor: str | None = None) -> AppTest:
    return open_schedules(PAGE, actor)


def frame_with(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_the_page_renders_empty_and_says_the_scheduler_is_not_running(demo_env):
    at = open_page()
    assert at.title[0].value == "Schedules"
    assert "The scheduler is not running" in texts(at, "warning")
    assert "No schedule yet" in texts(at, "info")
    assert "you need the role admin or ml_lead" in texts(at, "caption")  # the default identity has no role
    assert "Next: " in texts(at, "caption")  # the add form previews the default expression


def test_a_lead_adds_a_schedule_and_sees_its_next_fire_times(demo_env, demo_ws):
    at = open_page(LEAD)
    at.text_input(key=view.ADD_CRON).input("*/10 * * * *")
    act(at)
    preview = [c.value for c in at.caption if c.value.startswith("Next: ")][0]
    assert preview.count("UTC") == 3
    at.selectbox(key=view.ADD_ESTIMATOR).set_value("ridge")
    at.text_input(key=view.ADD_PARAMS).input("alpha=0.25")
    act(at.button(key="schedules.add").click())
    added = [s for s in demo_ws.schedules.list() if s.cron == "*/10 * * * *"]
    assert len(added) == 1 and added[0].estimator == "ridge" and dict(added[0].params) == {"alpha": 0.25}
    assert f"Added schedule #{added[0].id}" in texts(at, "success")
    table = frame_with(at, "cron (UTC)")
    row = table[table["id"] == added[0].id].iloc[0]
    assert row["recipe"] == "ridge alpha=0.25" and row["state"] == "▶️ enabled"
    assert row["next fire times"].count("UTC") == 3
    demo_ws.schedules.remove(added[0].id, LEAD)  # later tests tick the scheduler: only their own schedules fire


def test_a_bad_expression_is_explained_before_and_refused_on_add(demo_env, demo_ws):
    count = len(demo_ws.schedules.list())
    at = open_page(LEAD)
    at.text_input(key=view.ADD_CRON).input("every night")
    act(at)
    assert "five fields" in texts(at, "caption")
    act(at.button(key="schedules.add").click())
    assert "five fields" in texts(at, "error") and len(demo_ws.schedules.list()) == count


def test_support_sees_everything_but_the_service_refuses_changes(demo_env, demo_ws):
    count = len(demo_ws.schedules.list())
    at = open_page(SUPPORT)
    assert "you need the role admin or ml_lead" in texts(at, "caption")
    at.text_input(key=view.ADD_CRON).input("0 5 * * *")
    act(at.button(key="schedules.add").click())
    assert "support@contoso.com (support) may not change retraining schedules" in texts(at, "error")
    assert len(demo_ws.schedules.list()) == count


def test_pause_resume_and_remove_after_confirming(demo_env, demo_ws):
    s = demo_ws.schedules.add("diabetes", "15 3 * * *", LEAD, estimator="lasso")
    at = open_page(LEAD)
    at.selectbox(key=view.PICK).set_value(s.id)
    act(at)
    act(at.button(key="schedules.toggle").click())
    assert not demo_ws.schedules.get(s.id).enabled and f"Schedule #{s.id} paused" in texts(at, "success")
    act(at.button(key="schedules.toggle").click())
    assert demo_ws.schedules.get(s.id).enabled and "resumed" in texts(at, "success")

    act(at.button(key="schedules.remove").click())
    assert "it never fires again" in texts(at, "markdown")  # the dialog says what changes
    assert s.id in [x.id for x in demo_ws.schedules.list()], "nothing happens before confirming"
    act(at.button(key="schedules.remove.cancel").click())
    assert not any(b.key == "schedules.remove.confirm" for b in at.button)
    act(at.button(key="schedules.remove").click())
    act(at.button(key="schedules.remove.confirm").click())
    assert s.id not in [x.id for x in demo_ws.schedules.list()]
    assert f"Removed schedule #{s.id}" in texts(at, "success")


def test_trigger_on_and_firings_link_to_their_runs(demo_env, demo_ws):
    s = demo_ws.schedules.add("diabetes", "0 * * * *", LEAD, estimator="ridge", params={"alpha": "3"})
    due = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    fired = Scheduler.of(demo_ws).tick(due)
    assert [f.schedule_id for f in fired] == [s.id]
    try:
        at = open_page(LEAD)
        firings = frame_with(at, "occurrence")
        assert firings.iloc[0]["run"] == f"runs?run={fired[0].run_id}" and firings.iloc[0]["by"] == f"schedule #{s.id}"
        link = next(d for d in at.dataframe if "occurrence" in d.value.columns)
        assert '"run"' in link.proto.columns and "runs\\\\?run=" in link.proto.columns  # a LinkColumn showing the id

        at.selectbox(key=view.TRIGGER_DATASET).set_value("diabetes")
        act(at.button(key="schedules.trigger.on").click())
        trigger = demo_ws.schedules.trigger("diabetes")
        champion_run = demo_ws.jobs.get(demo_ws.models.champion(demo_ws.policy.model_name).run_id)
        assert trigger.enabled and trigger.estimator == champion_run.estimator
        assert "every version after v" in texts(at, "success")
        table = frame_with(at, "retrain on new version")
        assert table.iloc[0]["retrain on new version"] == "🟢 on"
        act(at.button(key="schedules.trigger.off").click())
        assert not demo_ws.schedules.trigger("diabetes").enabled
    finally:
        demo_ws.jobs.wait(fired[0].run_id, timeout_s=300)
        demo_ws.schedules.remove(s.id, LEAD)
