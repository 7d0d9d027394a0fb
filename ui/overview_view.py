"""The Overview page: what serves production and staging, what waits for a decision,
what ran lately. Everything here must stay fast on a workspace with thousands of
runs and model versions: runs are read with ``RunFilter(limit=...)``, and
candidates are compared on the metrics stored at registration (no re-scoring).
The decision queue is the release workflow's: the versions awaiting approval
(``services.stages``), as the Releases page and the CLI say it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from services.datatests import latest_passing
from services.entities import (CheckStatus, DatasetVersion, Endpoint, ModelVersion, ReleaseState, Run, RunFilter,
                               RunStatus, Stage)
from services.errors import NotFound
from services.policy import Policy
from services.release import auto_stage
from services.stages import AWAITING_DECISION, awaiting_decision, stage_counts, stage_words
from services.versions import newest_first, order_key

from . import state
from .datasets_view import group_by_check
from .monitoring_view import NOT_DEPLOYED, health_badge
from .widgets import BETTER, NEUTRAL, WORSE, badge, code, escaped, fmt_duration, fmt_metric, guard

CANDIDATE_LIMIT = 5
LATEST_RUNS = 8
FAILED_WINDOW_DAYS = 7
COUNT_CAP = 1000  # counts above this show as "1000+": never load an unbounded list for a number


# --- data shaping (no streamlit; tested directly) ------------------------------

def key_metrics(policy: Policy) -> list[str]:
    """The metrics decisions are made on: the quality gate's."""
    return list(dict.fromkeys(r.metric for r in policy.gate_rules))


def decision_queue(versions: list[ModelVersion], states: list[ReleaseState],
                   limit: int = CANDIDATE_LIMIT) -> tuple[list[ModelVersion], int]:
    """The versions awaiting a decision (``services.stages.awaiting_decision``), newest first:
    the first ``limit`` of them and how many more there are."""
    waiting = {(s.model_name, str(s.model_version)) for s in awaiting_decision(states)}
    queue = newest_first(v for v in versions if (v.name, str(v.version)) in waiting)
    return queue[:limit], max(0, len(queue) - limit)


def in_release_text(states: list[ReleaseState]) -> str:
    """The other versions on their way ('1 approved · 1 in staging, smoke test not passed'), for the queue's
    caption: they wait for a promote or a smoke test, not for a decision."""
    counts = stage_counts(s for s in states if s.stage in (Stage.STAGING, Stage.APPROVED))
    return " · ".join(f"{n} {stage_words(stage)}" for stage, n in counts.items())


def delta_verdict(delta: float | None, direction: str) -> str:
    """'better', 'worse' or 'same' for a candidate-minus-champion difference."""
    if delta is None or delta == 0:
        return "same"
    improved = delta < 0 if direction == "lower" else delta > 0
    return "better" if improved else "worse"


def candidates_frame(candidates: list[ModelVersion], champion: ModelVersion | None,
                     metrics: list[str]) -> pd.DataFrame:
    rows = []
    for v in candidates:
        row = {"version": v.ref, "estimator": v.estimator,
               "trained on": f"{v.dataset}:{v.dataset_version}" if v.dataset else "—",
               "registered": v.created_at}
        for m in metrics:
            value = v.metrics.get(m)
            base = champion.metrics.get(m) if champion else None
            row[m] = value
            row[f"Δ {m}"] = None if value is None or base is None else value - base
            row[f"Δ% {m}"] = None if value is None or not base else (value - base) / abs(base)
        rows.append(row)
    return pd.DataFrame(rows)


def delta_text(delta: float | None, relative: float | None) -> str:
    if delta is None or pd.isna(delta):
        return "—"
    pct = "" if relative is None or pd.isna(relative) else f" ({relative:+.1%})"
    return f"{delta:+.3g}{pct}"


def styled_candidates(frame: pd.DataFrame, policy: Policy, metrics: list[str]):
    """The candidates table for display: each Δ as text ("-4.35 (-7.9%)"), green when the
    candidate is better than the champion, red when worse."""
    colours = {"better": BETTER, "worse": WORSE, "same": NEUTRAL}
    shown = frame.drop(columns=[f"Δ% {m}" for m in metrics])
    css = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for m in metrics:
        deltas, relative = frame[f"Δ {m}"], frame[f"Δ% {m}"]
        shown[m] = [fmt_metric(None if pd.isna(v) else v) for v in frame[m]]
        shown[f"Δ {m}"] = [delta_text(d, r) for d, r in zip(deltas, relative)]
        css[f"Δ {m}"] = ["" if pd.isna(d) else
                         f"color: {colours[delta_verdict(d, policy.direction(m))]}; font-weight: 600"
                         for d in deltas]
    return shown.style.apply(lambda _: css, axis=None)


def gate_outcome(run: Run) -> str:
    if run.gate is None:
        return "—"
    return "✅ passed" if run.gate.passed else "❌ failed"


def run_note(run: Run) -> str:
    """One line a QA person needs: why it failed, where it is, what it produced."""
    if run.status == RunStatus.FAILED:
        return (run.error or "failed").splitlines()[0][:120]
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return f"step: {run.step}" if run.step else ""
    if run.model_version:
        return f"registered {run.model_name}:{run.model_version}"
    if run.status == RunStatus.COMPLETED:
        return "not registered"
    return ""


def latest_runs_frame(runs: list[Run]) -> pd.DataFrame:
    # metrics as text: a failed run has none, and "—" reads better than "None"
    return pd.DataFrame([{
        "status": badge(r.status), "run": r.display_name, "estimator": r.estimator,
        "data": f"{r.dataset}:{r.dataset_version}", "rmse": fmt_metric(r.metrics.get("rmse")),
        "r2": fmt_metric(r.metrics.get("r2")), "gate": gate_outcome(r), "duration": fmt_duration(r.duration_s),
        "note": run_note(r), "started": r.created_at, "by": r.created_by, "id": r.id,
    } for r in runs])


def latest_failing_datasets(versions: list[DatasetVersion]) -> list[DatasetVersion]:
    """The newest version of each dataset, where it failed its data tests: training on it will fail."""
    latest: dict[str, DatasetVersion] = {}
    for v in versions:
        if v.name not in latest or order_key(v.version, v.created_at) > order_key(latest[v.name].version,
                                                                                 latest[v.name].created_at):
            latest[v.name] = v
    return sorted((v for v in latest.values() if v.tests_status == CheckStatus.FAIL), key=lambda v: v.name)


def count_label(n: int) -> str:
    return f"{COUNT_CAP}+" if n >= COUNT_CAP else str(n)


# --- rendering ----------------------------------------------------------------

def render() -> None:
    ws = state.workspace()
    uri = state.uri()
    st.title("Overview")
    where = "Local workspace" if ws.info.kind == "local" else "Azure ML workspace"
    st.caption(f"{where} {code(ws.info.description)} · policy {code(ws.policy.source)} · "
               f"model `{ws.policy.model_name}`")
    cannot = auto_stage.unavailable(ws.info, ws.policy)
    if cannot:
        st.warning(escaped(cannot), icon=":material/warning:")

    if not state.dataset_versions(uri):
        render_welcome()
        return

    champion = state.champion(uri, ws.policy.model_name)
    states = state.release_states(uri, ws.policy.model_name)
    waiting = tuple(s.model_version for s in awaiting_decision(states))
    try:  # only the versions in the queue are read through the cache; none waiting, none read
        versions = state.board_versions(uri, ws.policy.model_name, waiting) if waiting else []
    except NotFound:  # nothing registered under the policy's model name yet
        versions = []
    candidates, more = decision_queue(versions, states)

    render_counts(uri, len(candidates) + more, len(state.dataset_versions(uri)))
    render_data_alerts(uri)

    left, right = st.columns(2)
    with left:
        render_production(ws, champion)
    with right:
        render_staging(ws)

    render_candidates(ws.policy, champion, candidates, more, in_release_text(states))
    render_latest_runs(uri)


def render_welcome() -> None:
    st.subheader("Welcome to Tollgate")
    st.markdown(
        "This workspace is empty. Tollgate takes a model from new data to production with evidence at every step:\n\n"
        "1. **Datasets** — upload a CSV or Parquet file. Each upload becomes an immutable version, "
        "profiled and tested against the last good one (schema, missing values, ranges, drift).\n"
        "2. **Runs** — train a model on a dataset version. The pipeline validates the data, trains, "
        "evaluates on a held-out split and registers the model if it passes the quality gate.\n"
        "3. **Models** — compare a candidate with the production champion on the same evaluation data, "
        "then approve or reject it.\n\n"
        "To look around first, load the demo: scikit-learn's diabetes data in two versions and five trained "
        "models (about 15 seconds)."
    )
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    with c1:
        load = st.button("Load demo data", type="primary", icon=":material/download:", key="overview.load_demo")
    with c2:
        st.page_link("pages/datasets.py", label="Or upload your own data on the Datasets page",
                     icon=":material/upload:")
    if load:
        load_demo()


def load_demo() -> None:
    from services.demo import seed_demo

    with st.status("Loading demo data…", expanded=True) as status:
        with guard():
            seed_demo(state.workspace(), progress=status.write)
            status.update(label="Demo data loaded", state="complete")
            state.after_write()
            st.rerun()
        status.update(label="Loading the demo data failed", state="error")


def render_counts(uri: str, waiting: int, dataset_versions: int) -> None:
    active = state.runs(uri, RunFilter(status=(RunStatus.QUEUED, RunStatus.RUNNING), limit=COUNT_CAP))
    # whole minutes, so the cached read is reused within a minute
    since = (datetime.now(timezone.utc) - timedelta(days=FAILED_WINDOW_DAYS)).replace(second=0, microsecond=0)
    failed = state.runs(uri, RunFilter(status=(RunStatus.FAILED,), since=since, limit=COUNT_CAP))
    cols = st.columns(5)
    cols[0].metric("Running", count_label(sum(r.status == RunStatus.RUNNING for r in active)), border=True)
    cols[1].metric("Queued", count_label(sum(r.status == RunStatus.QUEUED for r in active)), border=True)
    cols[2].metric(f"Failed · last {FAILED_WINDOW_DAYS} days", count_label(len(failed)), border=True,
                   help="Training runs that ended in failure; the Runs page shows why.")
    cols[3].metric("Awaiting decision", waiting, border=True,
                   help=f"Versions {stage_words(AWAITING_DECISION)}: deployed to staging, smoke test passed, "
                        "waiting for an ML lead to approve or reject them (the Releases page).")
    cols[4].metric("Dataset versions", dataset_versions, border=True)


def render_health(uri: str, endpoint: Endpoint, window_minutes: int) -> None:
    """The endpoint's status from the policy's [health] rules, the reasons, a link to Monitoring."""
    h = next((h for h in state.endpoints_health(uri) if h.endpoint == endpoint.name), None)
    text, colour, _, reasons = health_badge(h, endpoint)
    if (text, colour) == NOT_DEPLOYED[:2]:
        return
    st.markdown(f"Health :{colour}-badge[{text}]"
                + (f" &nbsp; :gray[{h.requests} requests in the last {window_minutes} min]" if h else ""))
    for r in reasons:
        st.caption(f"• {r}")
    st.page_link("pages/monitoring.py", label=f"Monitoring · {endpoint.name}", icon=":material/monitoring:",
                 query_params={"endpoint": endpoint.name})


def render_data_alerts(uri: str) -> None:
    versions = state.dataset_versions(uri)
    target = state.workspace().policy.target
    for dv in latest_failing_datasets(versions):
        failed = [t for t in state.data_tests(uri, dv.name, dv.version) if t.status == CheckStatus.FAIL]
        passing = latest_passing([v for v in versions if v.name == dv.name], target, labelled=True)
        instead = (f"runs and schedules train on **{passing.ref}**, the latest passing version, "
                   if passing else "nothing can be trained on it by default ")
        st.warning(f"The latest data, **{dv.ref}**, failed its data tests ({group_by_check(failed)}): "
                   f"{instead}until a corrected version is uploaded.", icon=":material/warning:")


def render_production(ws, champion: ModelVersion | None) -> None:
    with st.container(border=True):
        st.markdown("#### :material/public: Production")
        if champion is None:
            st.info(f"No model serves production yet: no version of `{ws.policy.model_name}` holds the "
                    "`champion` alias. The first trained model that meets the gate's absolute rules becomes it; "
                    "train one on the Runs page.")
            return
        st.markdown(f"**{champion.ref}** · `{champion.estimator}` · alias `champion`")
        metrics = key_metrics(ws.policy)
        cols = st.columns(max(1, len(metrics)))
        for col, m in zip(cols, metrics):
            col.metric(m, fmt_metric(champion.metrics.get(m)),
                       help=f"{'lower' if ws.policy.direction(m) == 'lower' else 'higher'} is better; "
                            "measured on its own held-out split when it was trained")
        lineage = f"`{champion.dataset}:{champion.dataset_version}`" if champion.dataset else "unknown data"
        run = f" by run `{champion.run_id}`" if champion.run_id else ""
        st.caption(f"Trained on {lineage}{run} · registered {champion.created_at:%Y-%m-%d %H:%M} UTC "
                   f"by {code(champion.created_by)}")
        endpoint_note("production",
                      "Served by the `champion` alias: no online endpoint exists yet in this workspace.")


def render_staging(ws) -> None:
    with st.container(border=True):
        st.markdown("#### :material/science: Staging")
        if not endpoint_note("staging", None):
            st.info("No staging endpoint exists yet in this workspace, so nothing is in staging. "
                    "Candidates are reviewed on the Models page against the champion.")


def endpoint_note(name: str, absent: str | None) -> bool:
    """Describe what the endpoint ``name`` serves; False when there is no such endpoint."""
    with guard():
        # the cached read: Overview draws two cards from one endpoint listing per TTL
        endpoint = next((e for e in state.endpoints(state.uri()) if e.name == name), None)
        if endpoint is None:
            if absent:
                st.caption(absent)
            return False
        serving = [f"`{d.model_name}:{d.model_version}` ({d.name}, {d.traffic}% traffic, {d.state})"
                   for d in endpoint.deployments]
        st.caption(f"Endpoint `{endpoint.name}`: " + ("; ".join(serving) or "no deployments"))
        ws = state.workspace()
        if ws.telemetry is not None:
            render_health(state.uri(), endpoint, ws.policy.health.window_minutes)
        return True
    return False


def render_candidates(policy: Policy, champion: ModelVersion | None, candidates: list[ModelVersion],
                      more: int, also: str) -> None:
    st.subheader("Candidates awaiting a decision")
    elsewhere = f" Also on their way: {also}." if also else ""
    if not candidates:
        st.caption(f"None: no version is {stage_words(AWAITING_DECISION)} (a version gets there by a deploy to "
                   f"staging that passes its smoke test).{elsewhere}")
        st.page_link("pages/releases.py", label="Releases", icon=":material/rocket_launch:")
        return
    metrics = key_metrics(policy)
    frame = candidates_frame(candidates, champion, metrics)
    st.dataframe(styled_candidates(frame, policy, metrics), hide_index=True, width="stretch",
                 column_config={"registered": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                                **{f"Δ {m}": st.column_config.TextColumn(
                                    f"Δ {m}", help=f"candidate − champion; {policy.direction(m)} is better")
                                   for m in metrics},
                                **{m: st.column_config.TextColumn(m) for m in metrics}})
    directions = ", ".join(f"{m} {policy.direction(m)}" for m in metrics)
    baseline = f"the champion {champion.ref}" if champion else "no champion"
    st.caption(f"Each is {stage_words(AWAITING_DECISION)}.{elsewhere} "
               f"Δ = candidate − {baseline}, on the metrics each stored when it was trained "
               f"(their own held-out splits; the Models page re-scores both on the same data). "
               f"Green is better, red is worse ({directions} is better).")
    label = f"Decide on the Releases page ({more} more waiting)" if more else "Decide on the Releases page"
    st.page_link("pages/releases.py", label=label, icon=":material/rocket_launch:")
    st.page_link("pages/models.py", label="Review on the Models page", icon=":material/deployed_code:")


def render_latest_runs(uri: str) -> None:
    st.subheader("Latest runs")
    runs = state.runs(uri, RunFilter(limit=LATEST_RUNS))
    if not runs:
        st.caption("No training runs yet: start one on the Runs page.")
    else:
        st.dataframe(latest_runs_frame(runs), hide_index=True, width="stretch",
                     column_config={
                         "run": st.column_config.TextColumn(width="medium"),
                         "note": st.column_config.TextColumn(width="medium"),
                         "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                         "id": st.column_config.TextColumn("run id"),
                     })
    st.page_link("pages/runs.py", label="All runs", icon=":material/model_training:")
