"""The Datasets page: versions, schema and profile, data tests, distributions, upload."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from services.datatests import latest_passing
from services.entities import CheckStatus, DatasetCheck, DatasetVersion, DataTestResult
from services.errors import ServiceError
from services.foreign_data import test_on_demand
from services.telemetry import warning_of
from services.versions import newest_first

from . import state
from .chrome import role_hint
from .widgets import STATUS_ICON, badge, code, escaped, fmt_metric, guard, show_error

# session-state keys of this page
SELECTED_NAME = "datasets.name"
PENDING_SELECTION = "datasets.pending_selection"  # (name, version) to select on the next run
UPLOAD_NONCE = "datasets.upload_nonce"            # bumped after a registration: fresh upload widgets
UPLOAD_OUTCOME = "datasets.upload_outcome"        # (level, message) of the last registration
UPLOAD_OPEN = "datasets.upload_open"              # the upload panel's expanded state (kept across reruns)
CHECKED = "datasets.checked"                      # the last "check this file" result (DatasetCheck)
NEW_DATASET = "➕ New dataset…"
NOT_TESTED = "⚪ not tested"
PREVIEW_ROWS = 100
STATUS_ORDER = {CheckStatus.FAIL: 0, CheckStatus.WARN: 1, CheckStatus.PASS: 2}
ROW_TINT = {CheckStatus.FAIL: "background-color: rgba(207, 34, 46, 0.12)",
            CheckStatus.WARN: "background-color: rgba(212, 167, 44, 0.16)"}

CHECKS_EXPLAINED = (
    "Each version is tested when it is registered, on its own and against its baseline (the newest earlier "
    "version whose own tests did not fail, so a broken upload never becomes the reference): "
    "**rows** (enough to train on), **type** (every column numeric), **missing** (share of empty cells), "
    "**schema** (same columns and dtypes as the baseline), **range** (values outside the baseline's range), "
    "**shift_mean** (how far the mean moved, in baseline standard deviations σ, as Microsoft's MLOpsPython "
    "reference does; also a std ratio) and **psi** (population stability index per feature: < 0.1 stable, "
    "0.1–0.25 moderate shift, > 0.25 significant). A failing version is kept so you can see why, "
    "but it is never the default (for training, schedules or the pickers' latest) and training on it "
    "fails at the validation step."
)

CHECK_MEANING = {
    "rows": "enough rows to train on",
    "type": "every value of the column is a number",
    "missing": "share of empty cells in the column",
    "schema": "the same columns and dtypes as the baseline",
    "range": "values outside the baseline's min–max",
    "shift_mean": "how far the mean moved, in baseline standard deviations (σ)",
    "psi": "population stability index: < 0.1 stable, 0.1–0.25 moderate, > 0.25 significant shift",
}


# --- data shaping (no streamlit; tested directly) ------------------------------

def tests_badge(v: DatasetVersion) -> str:
    """The data tests' outcome, or "not tested" for a version registered outside Tollgate."""
    return badge(v.tests_status) if v.tested else NOT_TESTED


def versions_frame(versions: list[DatasetVersion]) -> pd.DataFrame:
    return pd.DataFrame([{
        "dataset": v.name, "version": str(v.version), "type": v.kind,
        "rows": v.rows if v.tested else None, "columns": len(v.columns) if v.tested else None,
        "data tests": tests_badge(v), "created": v.created_at, "by": v.created_by,
        "source file": v.source, "description": v.description, "readable": v.unreadable or "yes",
    } for v in versions])


def failures_first(tests: list[DataTestResult]) -> list[DataTestResult]:
    return sorted(tests, key=lambda t: STATUS_ORDER[t.status])  # stable: keeps the checks' order within a status


def tests_frame(tests: list[DataTestResult]) -> pd.DataFrame:
    """One row per check, failures first: what it checks, and why it passed or failed (the detail,
    the measured value and its limit)."""
    return pd.DataFrame([{
        "check": t.check, "column": t.column or "—", "status": badge(t.status), "detail": t.detail,
        "value": fmt_metric(t.value), "threshold": fmt_metric(t.threshold), "what it checks": CHECK_MEANING.get(t.check, ""),
    } for t in failures_first(tests)],
        columns=["check", "column", "status", "detail", "value", "threshold", "what it checks"])


def group_by_check(tests: list[DataTestResult]) -> str:
    """'schema [bmi], type [bp, s1]': the checks and the columns they are about."""
    groups: dict[str, list[str]] = {}
    for t in tests:
        groups.setdefault(t.check, [])
        if t.column and t.column not in groups[t.check]:
            groups[t.check].append(t.column)
    return ", ".join(f"{check} [{', '.join(cols)}]" if cols else check for check, cols in groups.items())


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def verdict(tests: list[DataTestResult], baseline_version: int | None) -> tuple[CheckStatus, str]:
    """The worst status and one line saying what failed (or that all passed)."""
    failed = [t for t in tests if t.status == CheckStatus.FAIL]
    warned = [t for t in tests if t.status == CheckStatus.WARN]
    against = f"against baseline v{baseline_version}" if baseline_version else "(first version: no baseline to compare with)"
    if failed:
        line = f"{plural(len(failed), 'check')} failed: {group_by_check(failed)}"
        if warned:
            line += f"; {plural(len(warned), 'warning')}: {group_by_check(warned)}"
        return CheckStatus.FAIL, line
    if warned:
        return CheckStatus.WARN, f"{plural(len(warned), 'warning')}: {group_by_check(warned)}; no check failed {against}"
    return CheckStatus.PASS, f"All {plural(len(tests), 'check')} passed {against}"


def figures_link(dv: DatasetVersion, column: str | None = None) -> dict[str, str]:
    """The query parameters of ``dv`` on this page (its data tests), or of one column's figures: the page
    opens on that version and, given a column, on its distribution against the baseline (``render_version``)."""
    return {"dataset": dv.name, "version": str(dv.version), **({"column": column} if column else {})}


def checks_by_column(tests: list[DataTestResult]) -> list[tuple[str | None, CheckStatus, list[str]]]:
    """The checks that did not pass, grouped by the column they are about (one figure each), worst first:
    (column or None for the whole table, the worst status, the checks)."""
    groups: dict[str | None, list[DataTestResult]] = {}
    for t in failures_first(tests):
        if t.status != CheckStatus.PASS:
            groups.setdefault(t.column or None, []).append(t)
    return [(column, group[0].status, list(dict.fromkeys(t.check for t in group))) for column, group in groups.items()]


def render_check_links(dv: DatasetVersion, tests: list[DataTestResult]) -> None:
    """From a review: each check that did not pass links to its figures here (shift in σ, PSI and ranges
    are drawn per column), and the whole report is one more link."""
    for column, status, checks in checks_by_column(tests):
        st.page_link("pages/datasets.py", query_params=figures_link(dv, column), icon=":material/bar_chart:",
                     label=f"{STATUS_ICON[status]} {escaped(column) if column else 'whole table'}: "
                           f"{', '.join(checks)} — " + ("its figures" if column else "the checks"))
    st.page_link("pages/datasets.py", query_params=figures_link(dv), icon=":material/dataset:",
                 label=f"All {plural(len(tests), 'check')} of {dv.ref} and their figures")


def profile_frame(dv: DatasetVersion) -> pd.DataFrame:
    return pd.DataFrame([{"column": c.name, "dtype": c.dtype, "missing": c.missing, "min": c.min, "max": c.max,
                          "mean": c.mean, "std": c.std} for c in dv.columns])


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def most_shifted_column(columns: list[str], tests: list[DataTestResult]) -> str | None:
    """The column with the largest PSI: the one a reviewer should look at first."""
    psi = {t.column: t.value for t in tests if t.check == "psi" and t.column in columns and t.value is not None}
    if psi:
        return max(psi, key=psi.get)
    return columns[0] if columns else None


def histogram_figure(current: pd.Series, baseline: pd.Series | None, column: str,
                     current_label: str, baseline_label: str | None) -> go.Figure:
    """This version's histogram over its baseline's, on shared bins, each normalised to 1."""
    values = [current.dropna().astype(float)]
    if baseline is not None:
        values.append(baseline.dropna().astype(float))
    lo = min(v.min() for v in values if len(v))
    hi = max(v.max() for v in values if len(v))
    bins = dict(start=lo, end=hi, size=(hi - lo) / 30 if hi > lo else 1)
    fig = go.Figure()
    if baseline is not None:
        fig.add_trace(go.Histogram(x=values[1], name=baseline_label, histnorm="probability", xbins=bins,
                                   marker_color="#8c959f", opacity=0.6))
    fig.add_trace(go.Histogram(x=values[0], name=current_label, histnorm="probability", xbins=bins,
                               marker_color="#0969da", opacity=0.6))
    fig.update_layout(barmode="overlay", height=340, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=column, yaxis_title="share of rows", legend=dict(orientation="h", y=1.12))
    return fig


@contextmanager
def _uploaded(filename: str, data: bytes) -> Iterator[Path]:
    """The uploaded bytes as a temporary file named like the upload (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="tollgate-upload-") as tmp:
        path = Path(tmp) / (Path(filename).name or "upload.csv")
        path.write_bytes(data)
        yield path


def register_upload(ws, name: str, filename: str, data: bytes, description: str, actor: str) -> DatasetVersion:
    """Register the uploaded bytes as the next version of ``name``.
    ``InvalidInput`` (nothing registered) when the file cannot be parsed."""
    with _uploaded(filename, data) as path:
        return ws.datasets.register(name, path, actor=actor, description=description, original_name=filename)


def check_upload(ws, name: str, filename: str, data: bytes) -> DatasetCheck:
    """The data tests the uploaded bytes would get as the next version of ``name``; nothing is
    registered. ``InvalidInput`` when the file cannot be parsed, ``NotFound`` for a new name."""
    with _uploaded(filename, data) as path:
        return ws.datasets.check(name, path, original_name=filename)


def check_outcome(check: DatasetCheck) -> tuple[str, str]:
    """('success' | 'warning' | 'error', message) for a file checked without registering it."""
    status, line = verdict(list(check.tests), check.baseline_version)
    against = (f"against {check.name}:{check.baseline_version}, the latest passing version"
               if check.baseline_version else f"on its own (no version of {check.name} passed its tests)")
    head = f"Checked the file ({check.rows:,} rows) as the next version of **{check.name}**, {against}"
    level = {CheckStatus.FAIL: "error", CheckStatus.WARN: "warning"}.get(status, "success")
    return level, f"{head} — {line}. Nothing was registered."


def upload_outcome(dv: DatasetVersion, tests: list[DataTestResult]) -> tuple[str, str]:
    """('success' | 'warning' | 'error', message) for a version just registered."""
    status, line = verdict(tests, dv.baseline_version)
    if status == CheckStatus.FAIL:
        return "error", (f"Registered **{dv.ref}** ({dv.rows} rows), but its data tests failed — {line}. "
                         "The version is kept so you can see why, but training on it will fail at the "
                         "validation step. Fix the file and upload it again as a new version.")
    if status == CheckStatus.WARN:
        return "warning", f"Registered **{dv.ref}** ({dv.rows} rows) with warnings — {line}. Review them below."
    return "success", f"Registered **{dv.ref}** ({dv.rows} rows) — {line}."


# --- rendering ----------------------------------------------------------------

def render() -> None:
    uri = state.uri()
    st.title("Datasets")
    st.caption("Versioned, immutable training data. Every upload is profiled and tested against the last good "
               "version before anyone trains on it.")
    versions = state.dataset_versions(uri)
    if warning_of(versions):  # a listing that stopped early: what was read is shown, and said to be partial
        st.warning(escaped(warning_of(versions)), icon=":material/warning:")
    if not versions:
        st.info("No datasets yet. Upload a CSV or Parquet file below to register the first version, "
                "or load the demo data from the Overview page.", icon=":material/info:")
    render_upload(sorted({v.name for v in versions}), expanded=not versions)
    if not versions:
        return

    st.subheader("All versions")
    st.dataframe(versions_frame(versions), hide_index=True, width="stretch",
                 column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                                "description": st.column_config.TextColumn(width="large")})

    dv = select_version(versions)
    baseline = next((v for v in versions if v.name == dv.name and v.version == dv.baseline_version), None)
    render_version(uri, dv, baseline)


def linked_selection(versions: list[DatasetVersion]) -> tuple[str, int] | None:
    """``?dataset=NAME&version=N`` (links from Models and Runs), applied once per link."""
    link = (st.query_params.get("dataset"), st.query_params.get("version"))
    if not link[0] or st.session_state.get("datasets.applied_link") == link:
        return None
    st.session_state["datasets.applied_link"] = link
    match = next((v for v in versions if v.name == link[0] and str(v.version) == (link[1] or str(v.version))), None)
    return (match.name, match.version) if match else None


def select_version(versions: list[DatasetVersion]) -> DatasetVersion:
    pending = st.session_state.pop(PENDING_SELECTION, None) or linked_selection(versions)
    if pending:
        st.session_state[SELECTED_NAME] = pending[0]
        st.session_state[f"datasets.version.{pending[0]}"] = pending[1]
    names = sorted({v.name for v in versions})
    if st.session_state.get(SELECTED_NAME) not in names:
        st.session_state.pop(SELECTED_NAME, None)
    left, right = st.columns([1, 2])
    name = left.selectbox("Dataset", names, key=SELECTED_NAME)
    of_name = {v.version: v for v in versions if v.name == name}
    numbers = [v.version for v in newest_first(of_name.values())]  # latest first
    passing = latest_passing(of_name.values(), state.workspace().policy.target)
    version_key = f"datasets.version.{name}"
    if st.session_state.get(version_key) not in numbers:  # the default: the latest passing version
        st.session_state[version_key] = passing.version if passing else numbers[0]

    def label(n) -> str:
        dv = of_name[n]
        mark = (" · latest passing" if passing is not None and n == passing.version
                else " · failed: not used by default" if dv.tested and dv.tests_status == CheckStatus.FAIL else "")
        tests = (f"{STATUS_ICON[dv.tests_status]} data tests {dv.tests_status.value} · {dv.rows} rows · "
                 if dv.tested else f"{NOT_TESTED} · {dv.kind} · ")
        return f"v{n} · {tests}{dv.created_at:%Y-%m-%d %H:%M}{mark}"
    version = right.selectbox("Version", numbers, key=version_key, format_func=label)
    return of_name[version]


def render_foreign(dv: DatasetVersion) -> None:
    """A version Tollgate never tested: what Azure says of it, and whether its data can be read."""
    by = code(dv.created_by) if dv.created_by else "someone"
    st.info(f"Registered outside Tollgate, by {by} on {dv.created_at:%Y-%m-%d %H:%M} UTC: "
            "never profiled nor tested, so it has no data tests yet.", icon=":material/info:")
    st.text(f"type: {dv.kind}\npath: {dv.uri}")
    if dv.unreadable:
        st.warning(f"Tollgate cannot read this version's data: {escaped(dv.unreadable)}.", icon=":material/block:")


def render_test_on_demand(dv: DatasetVersion) -> None:
    """Profile and test a readable version Tollgate never tested; the outcome is shown, not kept."""
    key = f"datasets.on_demand.{dv.ref}"
    if st.button("Profile and test this version", key=f"{key}.run", icon=":material/fact_check:",
                 help="Runs the data tests a registration runs, against the dataset's newest version that passed "
                      "them. The outcome is shown here, not kept: re-register the file to train on it."):
        with st.spinner(f"Reading and testing {dv.ref}…"), guard():
            st.session_state[key] = test_on_demand(state.workspace().datasets, state.workspace().policy, dv)
    if key not in st.session_state:
        return
    tested, tests = st.session_state[key]
    status, line = verdict(tests, tested.baseline_version)
    (st.error if status == CheckStatus.FAIL else st.warning if status == CheckStatus.WARN else st.success)(
        f"{line} ({tested.rows:,} rows; tested now, not kept).")
    render_tests(tests)
    st.dataframe(profile_frame(tested), hide_index=True, width="stretch")


def render_version(uri: str, dv: DatasetVersion, baseline: DatasetVersion | None) -> None:
    st.subheader(dv.ref)
    if dv.description:
        st.caption(f"{escaped(dv.description)} · source {code(dv.source)} · by {code(dv.created_by)}")
    if not dv.tested or dv.unreadable:
        render_foreign(dv)
        if dv.unreadable:
            return
    if not dv.tested:
        render_test_on_demand(dv)
        with st.expander("Preview", icon=":material/table:"):
            with guard():
                frame = state.dataset_frame(uri, dv.name, dv.version)
                st.dataframe(frame.head(PREVIEW_ROWS), width="stretch")
        return
    tests = state.data_tests(uri, dv.name, dv.version)

    missing = sum(c.missing for c in dv.columns)
    cells = dv.rows * len(dv.columns)
    cols = st.columns(5)
    cols[0].metric("Rows", f"{dv.rows:,}", border=True,
                   delta=f"{dv.rows - baseline.rows:+,} vs v{baseline.version}" if baseline else None,
                   delta_color="off")
    cols[1].metric("Columns", len(dv.columns), border=True,
                   delta=(f"{len(dv.columns) - len(baseline.columns):+} vs v{baseline.version}"
                          if baseline and len(baseline.columns) != len(dv.columns) else None), delta_color="off")
    cols[2].metric("Missing cells", f"{missing:,}", border=True,
                   help=f"{missing / cells:.2%} of {cells:,} cells" if cells else None)
    cols[3].metric("Baseline", f"v{dv.baseline_version}" if dv.baseline_version else "none", border=True,
                   help="The version the data tests compared against: the newest earlier version "
                        "whose own tests did not fail.")
    cols[4].metric("Data tests", badge(dv.tests_status), border=True)

    status, line = verdict(tests, dv.baseline_version)
    if status == CheckStatus.FAIL:
        st.error(f"{escaped(line)}. Training on this version fails at its validation step.")
    else:
        (st.warning if status == CheckStatus.WARN else st.success)(escaped(line))

    # ?column=NAME (a data check's link, e.g. from a review) opens that column's figures
    focus = st.query_params.get("column")
    focus = focus if focus in {c.name for c in dv.columns} else None
    tab_tests, tab_profile, tab_dist, tab_preview = st.tabs(
        ["Data tests", "Schema & profile", "Distribution", "Preview"], default="Distribution" if focus else None)
    with tab_tests:
        render_tests(tests)
    with tab_profile:
        st.dataframe(profile_frame(dv), hide_index=True, width="stretch",
                     column_config={k: st.column_config.NumberColumn(format="%.4g")
                                    for k in ("min", "max", "mean", "std")})
    with tab_dist:
        with guard():
            render_distribution(uri, dv, tests, focus)
    with tab_preview:
        with guard():
            frame = state.dataset_frame(uri, dv.name, dv.version)
            st.dataframe(frame.head(PREVIEW_ROWS), width="stretch")
            st.caption(f"First {min(PREVIEW_ROWS, len(frame))} of {len(frame):,} rows.")


def render_tests(tests: list[DataTestResult]) -> None:
    frame = tests_frame(tests)
    tint = [ROW_TINT.get(t.status, "") for t in failures_first(tests)]
    styled = frame.style.apply(lambda row: [tint[row.name]] * len(row), axis=1)
    st.dataframe(styled, hide_index=True, width="stretch",
                 column_config={"detail": st.column_config.TextColumn(width="large")})
    st.caption(CHECKS_EXPLAINED)


def render_distribution(uri: str, dv: DatasetVersion, tests: list[DataTestResult], focus: str | None = None) -> None:
    frame = state.dataset_frame(uri, dv.name, dv.version)
    base = state.dataset_frame(uri, dv.name, dv.baseline_version) if dv.baseline_version else None
    columns = numeric_columns(frame)
    if not columns:
        st.info("This version has no numeric column to plot.")
        return
    default = focus if focus in columns else most_shifted_column(columns, tests)
    column = st.selectbox("Column", columns, index=columns.index(default), key=f"datasets.column.{dv.ref}.{focus}",
                          help="Preselected: the column the link named, else the one with the largest PSI "
                               "against the baseline.")
    has_base = base is not None and column in base and column in numeric_columns(base)
    fig = histogram_figure(frame[column], base[column] if has_base else None, column,
                           f"v{dv.version} (this version)", f"v{dv.baseline_version} (baseline)" if has_base else None)
    st.plotly_chart(fig, width="stretch", key=f"datasets.hist.{dv.ref}.{column}")
    about = [t for t in failures_first(tests) if t.column == column]   # what a check's link from a review points at
    if about:
        st.caption(" · ".join(f"{STATUS_ICON[t.status]} **{t.check}**: {escaped(t.detail)}" for t in about))
    elif base is None:
        st.caption("First version: there is no baseline to compare with.")
    elif not has_base:
        st.caption(f"{code(column)} is not a numeric column of the baseline v{dv.baseline_version}.")
    skipped = [c for c in frame.columns if c not in columns]
    if skipped:
        st.caption(f"Not numeric, so not plotted: {escaped(', '.join(skipped))}.")


def render_upload(names: list[str], expanded: bool) -> None:
    outcome = st.session_state.pop(UPLOAD_OUTCOME, None)
    nonce = st.session_state.setdefault(UPLOAD_NONCE, 0)
    if expanded or outcome is not None:
        st.session_state[UPLOAD_OPEN] = True
    # keyed: its open state is the user's, not recomputed each run (it closed when a file was attached)
    with st.expander("Upload a new version, or check a file", key=UPLOAD_OPEN, on_change="rerun",
                     icon=":material/upload:"):
        if outcome:
            level, message = outcome
            getattr(st, level)(message)
        left, right = st.columns(2)
        browsing = st.session_state.get(SELECTED_NAME)
        target = left.selectbox("Dataset", names + [NEW_DATASET], key="datasets.upload_target",
                                index=names.index(browsing) if browsing in names else 0,
                                help="Add a version to an existing dataset, or start a new one.")
        name = target
        if target == NEW_DATASET:
            name = right.text_input("New dataset name", key="datasets.upload_new_name",
                                    placeholder="e.g. diabetes", help="Letters, digits, '.', '_' or '-'.").strip()
        upload = st.file_uploader("CSV or Parquet file", type=["csv", "parquet"], key=f"datasets.upload_file.{nonce}")
        description = st.text_input("Description", key=f"datasets.upload_description.{nonce}",
                                    placeholder="What is new in this data? (where it came from, what changed)")
        st.caption("The file is profiled and tested against the dataset's latest passing version. "
                   "**Check** only tests it (nothing is stored); **Register** adds it as the next version. "
                   "A file that cannot be read is rejected and nothing is registered.")
        register_col, check_col = st.columns([1, 3])
        clicked = register_col.button("Register version", type="primary", key="datasets.upload_submit",
                                      disabled=upload is None or not name)
        checking = check_col.button("Check this file", key="datasets.upload_check", icon=":material/rule:",
                                    disabled=upload is None or target == NEW_DATASET,
                                    help="Run the data tests against the latest passing version without "
                                         "registering anything (an existing dataset only).")
        role_hint("register_dataset")
        if checking and upload is not None:
            try:
                st.session_state[CHECKED] = check_upload(state.workspace(), name, upload.name, upload.getvalue())
            except ServiceError as e:
                st.session_state.pop(CHECKED, None)
                show_error(e)
                st.caption("Nothing was checked or registered.")
        checked = st.session_state.get(CHECKED)
        if checked is not None and upload is not None and checked.source == upload.name and checked.name == name:
            render_check(checked)
        if clicked and upload is not None and name:
            try:
                dv = register_upload(state.workspace(), name, upload.name, upload.getvalue(), description,
                                     state.actor())
            except ServiceError as e:
                show_error(e)
                st.caption("Nothing was registered.")
            else:
                state.after_write()
                st.session_state.pop(CHECKED, None)
                st.session_state[UPLOAD_OUTCOME] = upload_outcome(dv, state.data_tests(state.uri(), dv.name, dv.version))
                st.session_state[PENDING_SELECTION] = (dv.name, dv.version)
                st.session_state[UPLOAD_NONCE] = nonce + 1
                st.rerun()


def render_check(check: DatasetCheck) -> None:
    level, message = check_outcome(check)
    getattr(st, level)(message)
    st.text(f"File: {check.source}")
    render_tests(list(check.tests))
