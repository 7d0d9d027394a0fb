"""The Schedules page: retraining schedules and dataset triggers, what they fired, and the scheduler.

Everyone reads; ``ml_lead`` and ``admin`` change (enforced by ``ws.schedules``: every
button is shown to everyone and a refusal is shown as the service words it). Removing
a schedule asks for confirmation in an ``st.dialog``.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from services import training
from services.entities import DatasetTrigger, Firing, Schedule, SchedulerStatus
from services.errors import ServiceError
from services.schedules import describe_missed, next_times, parse_assignments, parse_cron, recipe_text

from . import state
from .chrome import refusal, role_hint
from .widgets import code, escaped, fmt_duration, show_error

READ_TTL = 5               # firings appear without a write of this session: keep the page near live
FIRINGS_SHOWN = 50
CHAMPION = "champion's recipe"

# session-state keys of this page
FLASH = "schedules.flash"
CONFIRM_REMOVE = "schedules.confirm_remove"   # the id of the schedule whose removal dialog is open
PICK = "schedules.pick"
ADD_DATASET, ADD_CRON, ADD_ESTIMATOR, ADD_PARAMS, ADD_ENABLED = (
    "schedules.add.dataset", "schedules.add.cron", "schedules.add.estimator", "schedules.add.params",
    "schedules.add.enabled")
TRIGGER_DATASET, TRIGGER_ESTIMATOR, TRIGGER_PARAMS = (
    "schedules.trigger.dataset", "schedules.trigger.estimator", "schedules.trigger.params")


# --- cached reads --------------------------------------------------------------------

@st.cache_data(ttl=READ_TTL, show_spinner=False)
def schedules(ws_uri: str) -> list[Schedule]:
    return state._workspace(ws_uri).schedules.list()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def triggers(ws_uri: str) -> list[DatasetTrigger]:
    return state._workspace(ws_uri).schedules.triggers()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def firings(ws_uri: str, limit: int = FIRINGS_SHOWN) -> list[Firing]:
    return state._workspace(ws_uri).schedules.firings(limit)


@st.cache_data(ttl=2, show_spinner=False)
def scheduler_status(ws_uri: str) -> SchedulerStatus:
    return state._workspace(ws_uri).schedules.scheduler()


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def dataset_names(ws_uri: str) -> list[str]:
    return state._workspace(ws_uri).datasets.names()


# --- shaping (no streamlit) ------------------------------------------------------------

def when(at: datetime | None) -> str:
    return "—" if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_link(run_id: str | None) -> str | None:
    """A link to the run on the Runs page (relative: works under any base URL)."""
    return None if not run_id else f"runs?run={run_id}"


def firing_note(f: Firing) -> str:
    return f.error or describe_missed(f.skipped)


def schedules_frame(items: list[Schedule]) -> pd.DataFrame:
    rows = [{"id": s.id, "dataset": s.dataset, "recipe": recipe_text(s.estimator, s.params), "cron (UTC)": s.cron,
             "state": "▶️ enabled" if s.enabled else "⏸️ paused",
             "next fire times": " · ".join(when(t) for t in s.next_fire_at) or "—",
             "last fired": when(s.last_firing.fired_at) if s.last_firing else "—",
             "last run": run_link(s.last_firing.run_id) if s.last_firing else None,
             "created by": s.created_by} for s in items]
    return pd.DataFrame(rows, columns=["id", "dataset", "recipe", "cron (UTC)", "state", "next fire times",
                                       "last fired", "last run", "created by"])


def triggers_frame(items: list[DatasetTrigger]) -> pd.DataFrame:
    rows = [{"dataset": t.dataset, "retrain on new version": "🟢 on" if t.enabled else "⚪ off",
             "recipe": recipe_text(t.estimator, t.params), "fires after version": t.since_version,
             "last fired": when(t.last_firing.fired_at) if t.last_firing else "—",
             "last run": run_link(t.last_firing.run_id) if t.last_firing else None,
             "changed by": t.updated_by} for t in items]
    return pd.DataFrame(rows, columns=["dataset", "retrain on new version", "recipe", "fires after version",
                                       "last fired", "last run", "changed by"])


def firings_frame(items: list[Firing]) -> pd.DataFrame:
    rows = [{"fired": when(f.fired_at), "by": f.target, "occurrence": when(f.due_at) if f.due_at else "—",
             "data": f"{f.dataset}:{f.dataset_version}" if f.dataset_version else f.dataset,
             "recipe": recipe_text(f.estimator, f.params), "run": run_link(f.run_id), "note": firing_note(f)}
            for f in items]
    return pd.DataFrame(rows, columns=["fired", "by", "occurrence", "data", "recipe", "run", "note"])


LINK = st.column_config.LinkColumn("run", display_text=r"runs\?run=(.*)", help="Open the run on the Runs page")


# --- the page ------------------------------------------------------------------------

def render() -> None:
    st.title("Schedules")
    st.caption("What starts a retraining run without anyone clicking: cron schedules (UTC) and "
               "*retrain on new version* per dataset. Each run goes through validate → train → evaluate → "
               "register if the gate passes; deploying stays a decision. Every firing is in the audit trail.")
    ws_uri, ws = state.uri(), state.workspace()
    flash()
    scheduler_banner(scheduler_status(ws_uri))
    who(ws.policy, state.actor())
    st.subheader("Cron schedules")
    items = schedules(ws_uri)
    schedule_table(items)
    if items:
        schedule_actions(items)
    add_form(ws_uri)
    st.subheader("Retrain on new version")
    trigger_section(ws_uri)
    st.subheader("Recent firings")
    firings_table(firings(ws_uri))
    if st.session_state.get(CONFIRM_REMOVE) is not None:
        target = next((s for s in items if s.id == st.session_state[CONFIRM_REMOVE]), None)
        if target is None:
            close_remove_dialog()
        else:
            confirm_remove(target)


def flash() -> None:
    message = st.session_state.pop(FLASH, None)
    if message:
        st.success(message, icon="✅")


def done(message: str) -> None:
    state.after_write()
    st.session_state[FLASH] = message
    st.rerun()


def scheduler_banner(status: SchedulerStatus) -> None:
    if status.running:
        ago = (datetime.now(timezone.utc) - status.last_tick_at).total_seconds() if status.last_tick_at else None
        st.caption(":material/schedule: Scheduler **running**" + (f" (pid {status.pid})" if status.pid else "")
                   + (f", last tick {fmt_duration(ago)} ago" if ago is not None else "") + ".")
    else:
        st.warning(f"The scheduler is {status.detail}.", icon="⏸️")


def who(policy, actor: str) -> None:
    if refusal(policy, actor, "edit_schedules") is None:
        st.caption(f"Acting as {code(actor)} ({', '.join(policy.roles_of(actor))}): you may add, pause, resume and "
                   "remove schedules and turn triggers on or off.")
    else:
        role_hint("edit_schedules")


def schedule_table(items: list[Schedule]) -> None:
    if not items:
        st.info("No schedule yet. Add one below, e.g. `0 2 * * *` retrains every night at 02:00 UTC.")
        return
    st.dataframe(schedules_frame(items), hide_index=True, width="stretch",
                 column_config={"last run": st.column_config.LinkColumn("last run", display_text=r"runs\?run=(.*)")})


def schedule_actions(items: list[Schedule]) -> None:
    by_id = {s.id: s for s in items}
    if st.session_state.get(PICK) not in by_id:
        st.session_state[PICK] = items[0].id
    pick_col, toggle_col, remove_col = st.columns([3, 1, 1], vertical_alignment="bottom")
    chosen = by_id[pick_col.selectbox("Schedule", list(by_id), key=PICK,
                                      format_func=lambda i: f"#{i} {by_id[i].dataset} · {by_id[i].cron}"
                                                            f" · {recipe_text(by_id[i].estimator, by_id[i].params)}")]
    label = "Pause" if chosen.enabled else "Resume"
    if toggle_col.button(label, key="schedules.toggle", width="stretch",
                         icon=":material/pause:" if chosen.enabled else ":material/play_arrow:",
                         help="Resuming does not fire what fell due while paused."):
        try:
            s = state.workspace().schedules.set_enabled(chosen.id, not chosen.enabled, state.actor())
        except ServiceError as e:
            show_error(e)
        else:
            done(f"Schedule #{s.id} " + (f"resumed; next run {when(s.next_fire_at[0])}." if s.enabled else "paused."))
    if remove_col.button("Remove…", key="schedules.remove", width="stretch", icon=":material/delete:",
                         help="Asks for confirmation."):
        st.session_state[CONFIRM_REMOVE] = chosen.id


def close_remove_dialog() -> None:
    st.session_state.pop(CONFIRM_REMOVE, None)


@st.dialog("Remove this schedule?", on_dismiss=close_remove_dialog)
def confirm_remove(s: Schedule) -> None:
    st.markdown(f"Removing **schedule #{s.id}** — retrain {code(s.dataset)} with "
                f"{code(recipe_text(s.estimator, s.params))} at {code(s.cron)} (UTC):\n"
                f"- it never fires again" + (f" (next would have been {when(s.next_fire_at[0])})" if s.next_fire_at
                                              else "") + ";\n"
                "- its past firings and their runs stay in the history and the audit trail;\n"
                "- runs it already started go on.\n\n"
                "To stop it for a while instead, **Pause** it.")
    why = refusal(state.workspace().policy, state.actor(), "edit_schedules")
    if why:
        st.warning(why, icon="🔒")
    ok, cancel = st.columns(2)
    if cancel.button("Cancel", key="schedules.remove.cancel", width="stretch"):
        close_remove_dialog()
        st.rerun()
    if ok.button(f"Remove schedule #{s.id}", key="schedules.remove.confirm", type="primary", width="stretch"):
        try:
            state.workspace().schedules.remove(s.id, state.actor())
        except ServiceError as e:
            show_error(e)
            return
        close_remove_dialog()
        done(f"Removed schedule #{s.id}; its firings stay in the history.")


def recipe_inputs(estimator_key: str, params_key: str) -> tuple[str | None, dict | None]:
    est_col, params_col = st.columns([1, 2])
    estimator = est_col.selectbox("Estimator", [CHAMPION, *training.estimators(state.workspace().policy.task)], key=estimator_key,
                                  help="The champion's recipe: its estimator and parameters, copied when saved.")
    text = params_col.text_input("Parameters", key=params_key, placeholder="e.g. alpha=0.5, max_iter=2000",
                                 help="KEY=VALUE, separated by commas; unset ones take the estimator's defaults.")
    params = parse_assignments(text.replace("\n", ",").split(","))  # InvalidInput for a malformed entry
    if estimator == CHAMPION:
        return None, (params or None)
    return estimator, params


def add_form(ws_uri: str) -> None:
    with st.expander("Add a schedule", icon=":material/add:", expanded=not schedules(ws_uri)):
        names = dataset_names(ws_uri)
        if not names:
            st.info("Register a dataset first (Datasets page).")
            return
        ds_col, cron_col = st.columns([1, 1])
        dataset = ds_col.selectbox("Dataset", names, key=ADD_DATASET,
                                   help="Each run trains on the dataset's latest version with labels that passed its data tests.")
        cron = cron_col.text_input("Cron expression (UTC)", key=ADD_CRON, value="0 2 * * *",
                                   help="minute hour day-of-month month day-of-week, e.g. */15 * * * *")
        try:
            upcoming = next_times(parse_cron(cron), datetime.now(timezone.utc), 3)
            st.caption("Next: " + " · ".join(when(t) for t in upcoming))
        except ServiceError as e:
            st.caption(f":red[{escaped(e)}] — {escaped(e.hint or '')}")
        try:
            estimator, params = recipe_inputs(ADD_ESTIMATOR, ADD_PARAMS)
        except ServiceError as e:
            show_error(e)
            return
        enabled = st.checkbox("Enabled", value=True, key=ADD_ENABLED)
        if st.button("Add schedule", key="schedules.add", type="primary", icon=":material/add:"):
            try:
                s = state.workspace().schedules.add(dataset, cron, state.actor(), estimator=estimator,
                                                    params=params, enabled=enabled)
            except ServiceError as e:
                show_error(e)
            else:
                done(f"Added schedule #{s.id}: {s.dataset} with {code(recipe_text(s.estimator, s.params))} "
                     f"at {code(s.cron)} "
                     + (f"— next run {when(s.next_fire_at[0])}." if s.next_fire_at else "(paused)."))


def trigger_section(ws_uri: str) -> None:
    items = triggers(ws_uri)
    if items:
        st.dataframe(triggers_frame(items), hide_index=True, width="stretch",
                     column_config={"last run": st.column_config.LinkColumn("last run",
                                                                            display_text=r"runs\?run=(.*)")})
    else:
        st.caption("No dataset retrains on new versions yet.")
    names = dataset_names(ws_uri)
    if not names:
        return
    by_name = {t.dataset: t for t in items}
    dataset = st.selectbox("Dataset", names, key=TRIGGER_DATASET)
    current = by_name.get(dataset)
    try:
        estimator, params = recipe_inputs(TRIGGER_ESTIMATOR, TRIGGER_PARAMS)
    except ServiceError as e:
        show_error(e)
        return
    on_col, off_col, _ = st.columns([1, 1, 3])
    on = on_col.button("Turn on" if not (current and current.enabled) else "Update recipe", key="schedules.trigger.on",
                       type="primary", width="stretch",
                       help="Every version registered from now on starts one retraining run (existing ones do not).")
    off = off_col.button("Turn off", key="schedules.trigger.off", width="stretch",
                         disabled=not (current and current.enabled))
    if on or off:
        try:
            t = state.workspace().schedules.set_trigger(dataset, bool(on), state.actor(),
                                                        estimator=estimator if on else None,
                                                        params=params if on else None)
        except ServiceError as e:
            show_error(e)
        else:
            done(f"{t.dataset}: every version after v{t.since_version} starts a run "
                 f"({recipe_text(t.estimator, t.params)})." if t.enabled else f"{t.dataset}: trigger off.")


def firings_table(items: list[Firing]) -> None:
    if not items:
        st.caption("Nothing has fired yet.")
        return
    st.dataframe(firings_frame(items), hide_index=True, width="stretch", column_config={"run": LINK})
