"""Every write button of the console, clicked as ``support`` and as an identity with no role.

The buttons are there for everyone (as on the Releases page); beside them a hint says which role
they need, and a click is refused by the service with the role named — and changes nothing
(the services' state snapshot, audit trail included, is the same before and after).
The Drift page's button is walked in ``test_monitoring_pages.py`` (it needs collected inputs).
"""
from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.entities import RunStatus, TrainingSpec
from services.local.workspace import LocalWorkspace
from services.permissions import roles_needed
from tests.contract.helpers import SLOW, allowing_slow, snapshot, wait_status
from tests.pages.helpers import act, open_page, texts
from ui import models_view, runs_view, schedules_view

LEAD, SUPPORT, NOBODY = "lead@contoso.com", "support@contoso.com", "nobody@contoso.com"
MODEL = "diabetes-regressor"


@pytest.fixture(autouse=True)
def fresh_reads():
    st.cache_data.clear()
    yield


@pytest.fixture(scope="module")
def world(demo_ws):
    """What the buttons act on: a running run (to cancel), an archived version (to restore), a schedule."""
    slow = LocalWorkspace(demo_ws.root, policy=allowing_slow(demo_ws.policy))
    run = slow.jobs.submit(TrainingSpec(dataset="diabetes", experiment="refusals", **SLOW), LEAD)
    slow.close()
    demo_ws.models.archive(MODEL, 4, LEAD)
    schedule = demo_ws.schedules.add("diabetes", "0 3 * * *", LEAD, estimator="ridge")
    wait_status(demo_ws, run.id, RunStatus.RUNNING)  # a status that does not change while the walk runs
    yield {"run": run.id, "schedule": schedule.id}
    demo_ws.jobs.cancel(run.id, LEAD)


# --- what each button needs, and how to click it -------------------------------------------------

def upload(at: AppTest, world) -> None:
    at.file_uploader[0].set_value(("more.csv", b"age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,target\n" + b"1,1,1,1,1,1,1,1,1,1,1\n" * 30,
                                   "text/csv"))
    act(at)
    act(at.button(key="datasets.upload_submit").click())


def retrain(at: AppTest, world) -> None:
    act(at.button(key="runs.new.ridge.submit").click())


def cancel(at: AppTest, world) -> None:
    at.session_state[runs_view.WATCH] = world["run"]
    act(at)
    act(at.button(key="runs.cancel.watch").click())
    act(at.button(key="runs.cancel_yes.watch").click())


def review(at: AppTest, version: int) -> AppTest:
    at.selectbox(key=models_view.selected_key(MODEL)).set_value(version)
    return act(at)


def set_tag(at: AppTest, world) -> None:
    review(at, 2).text_input(key=f"models.tag_key.{MODEL}:2").input("owner")
    act(at.button(key=f"models.set_tag.{MODEL}:2").click())


def remove_tag(at: AppTest, world) -> None:
    review(at, 2).selectbox(key=f"models.remove_key.{MODEL}:2").set_value("estimator")
    act(at.button(key=f"models.remove_tag.{MODEL}:2").click())


def describe(at: AppTest, world) -> None:
    next(t for t in review(at, 2).text_area if t.label == "Description").input("mine now")
    act(at.button(key=f"models.save_description.{MODEL}:2").click())


def archive(at: AppTest, world) -> None:
    act(review(at, 3).button(key="models.archive").click())
    act(at.button(key="models.archive.confirm").click())


def restore(at: AppTest, world) -> None:
    act(at.toggle(key=models_view.SHOW_ARCHIVED).set_value(True))
    act(review(at, 4).button(key="models.restore").click())


def send(endpoint: str):
    def click(at: AppTest, world) -> None:
        act(at.button(key=f"endpoints.test.send.{endpoint}").click())
    return click


def add_schedule(at: AppTest, world) -> None:
    act(at.button(key="schedules.add").click())


def pause_schedule(at: AppTest, world) -> None:
    act(at.selectbox(key=schedules_view.PICK).set_value(world["schedule"]))
    act(at.button(key="schedules.toggle").click())


def remove_schedule(at: AppTest, world) -> None:
    act(at.selectbox(key=schedules_view.PICK).set_value(world["schedule"]))
    act(at.button(key="schedules.remove").click())
    act(at.button(key="schedules.remove.confirm").click())


def trigger_on(at: AppTest, world) -> None:
    act(at.button(key="schedules.trigger.on").click())


BUTTONS = [  # (button, page, the action of services.permissions, click)
    ("upload a dataset version", "pages/datasets.py", "register_dataset", upload),
    ("start a retraining run", "pages/runs.py", "submit_run", retrain),
    ("cancel a run", "pages/runs.py", "cancel_run", cancel),
    ("set a tag", "pages/models.py", "edit_model", set_tag),
    ("remove a tag", "pages/models.py", "edit_model", remove_tag),
    ("save the description", "pages/models.py", "edit_model", describe),
    ("archive", "pages/models.py", "archive_model", archive),
    ("restore", "pages/models.py", "archive_model", restore),
    ("send to production", "pages/endpoints.py", "invoke_production", send("production")),
    ("send to staging", "pages/endpoints.py", "invoke_staging", send("staging")),
    ("add a schedule", "pages/schedules.py", "edit_schedules", add_schedule),
    ("pause a schedule", "pages/schedules.py", "edit_schedules", pause_schedule),
    ("remove a schedule", "pages/schedules.py", "edit_schedules", remove_schedule),
    ("turn a trigger on", "pages/schedules.py", "edit_schedules", trigger_on),
]


@pytest.mark.parametrize("who", [SUPPORT, NOBODY])
@pytest.mark.parametrize("button, page, action, click", BUTTONS, ids=[b[0] for b in BUTTONS])
def test_every_write_button_is_shown_explained_and_refused(demo_env, demo_ws, world, who, button, page, action, click):
    before = snapshot(demo_ws)
    at = open_page(page, who)
    click(at, world)
    needed = roles_needed(action)
    assert f"you need the role {needed}" in texts(at, "caption", "warning"), "the hint beside the button"
    refusal = texts(at, "error")
    assert f"{who} (" in refusal and f"that needs {needed}" in refusal, refusal
    assert snapshot(demo_ws) == before, f"refused '{button}' changed something"


def test_with_the_role_no_hint_is_shown(demo_env, demo_ws, world):
    at = review(open_page("pages/models.py", LEAD), 2)
    assert "you need the role" not in texts(at, "caption", "warning")
