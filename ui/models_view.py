"""The Models page: the versions table, a version's card, candidate vs champion.

The first half is pure (frames, deltas, figures: cheap to test); the second half
renders the page's sections with Streamlit and does its writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from services.entities import Comparison, GateDecision, ModelVersion, ReleaseState, Stage
from services.errors import ServiceError
from services.evidence import missing_evidence
from services.gate import relative_change
from services.metrics import is_classification
from services.policy import Policy
from services.stages import stage_of, stage_words, stages_by_version

from . import state
from .chrome import role_hint
from .picked_review import picked_comparison
from .provenance_view import provenance_block
from .classification_view import classification_charts
from .widgets import (BETTER, CANDIDATE_COLOR, CHAMPION_COLOR, NEUTRAL, WORSE, code, escaped, fmt_metric, guard,
                      show_error)


# --- versions -------------------------------------------------------------------

REGISTRY_COLUMNS = ["version", "estimator", "aliases", "release stage", "azure stage", "dataset", "run", "created",
                    "created by", "archived"]


def versions_frame(versions: Sequence[ModelVersion], metrics: Sequence[str],
                   states: Sequence[ReleaseState] = ()) -> pd.DataFrame:
    """One row per version, newest first, in the order the page shows the columns, plus ``label``
    (what the version picker shows) and ``champion``; the release stage from ``states`` (the release
    ledger's). Built column by column: 20,000 versions."""
    stages = stages_by_version(states)
    frame = pd.DataFrame({
        "version": [v.version for v in versions],  # text where Azure says so (services.versions)
        "estimator": [v.estimator for v in versions],
        **{m: pd.array([v.metrics.get(m) for v in versions], dtype="Float64").astype(float) for m in metrics},
        "aliases": [list(v.aliases) for v in versions],
        "release stage": [stage_words(stages.get(v.version, Stage.REGISTERED), v.archived) for v in versions],
        "azure stage": [v.azure_stage for v in versions],  # Azure ML's own stage field, never mixed in
        "dataset": [f"{v.dataset}:{v.dataset_version}" if v.dataset else "(no lineage)" for v in versions],
        "run": [v.run_id or "" for v in versions],
        "created": pd.to_datetime([v.created_at for v in versions], utc=True),
        "created by": [v.created_by for v in versions],
        "archived": [v.archived for v in versions],
        "champion": [v.is_champion for v in versions],
        "label": [version_label(v) for v in versions],
    }, columns=[*REGISTRY_COLUMNS[:2], *metrics, *REGISTRY_COLUMNS[2:], "champion", "label"])
    return frame


@st.cache_data(ttl=state.READ_TTL, show_spinner=False)
def registry_frame(ws_uri: str, name: str, gated: tuple[str, ...]) -> pd.DataFrame:
    """Every version of ``name`` as a table (cached as a DataFrame: a list of 20,000 ``ModelVersion``
    objects cost ~1 s to pickle into the cache and back on every rerun)."""
    versions = state.workspace().models.versions(name)
    metrics = list(gated) or sorted({k for v in versions for k in v.metrics if not k.startswith("train_")})
    return versions_frame(versions, metrics, state.release_states(ws_uri, name))


def frame_metrics(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in REGISTRY_COLUMNS and c not in ("champion", "label")]


def _plain(value):
    """A frame cell as the plain Python value (numpy's int64 → int; text stays)."""
    return value.item() if hasattr(value, "item") else value


def default_candidate(frame: pd.DataFrame) -> int | str | None:
    """What to review first: the newest version that is neither champion nor archived.

    ``frame`` (``versions_frame``) is newest first. Falls back to the champion, then to the newest version.
    """
    if frame.empty:
        return None
    for mask in (~frame["champion"] & ~frame["archived"], frame["champion"]):
        if mask.any():
            return _plain(frame.loc[mask, "version"].iloc[0])
    return _plain(frame["version"].iloc[0])


def version_label(v: ModelVersion) -> str:
    parts = [f"v{v.version}", v.estimator or v.model_type]
    if v.dataset:
        parts.append(f"{v.dataset}:{v.dataset_version}")
    elif v.azure_stage:
        parts.append(f"Azure stage {v.azure_stage}")
    if v.is_champion:
        parts.append("champion")
    if v.archived:
        parts.append("archived")
    return " · ".join(p for p in parts if p)


def summary(frame: pd.DataFrame) -> dict[str, int]:
    return {
        "versions": len(frame),
        "archived": int(frame["archived"].sum()),
        "candidates": int((~frame["archived"] & ~frame["champion"]).sum()),
    }


# --- candidate vs champion ------------------------------------------------------

@dataclass(frozen=True)
class MetricDelta:
    metric: str
    direction: str                 # lower | higher is better
    candidate: float
    champion: float | None
    delta: float | None            # candidate - champion
    relative: float | None         # delta as a fraction of the champion's value
    verdict: str | None            # better | worse | equal; None without a champion

    @property
    def color(self) -> str:
        return {"better": BETTER, "worse": WORSE}.get(self.verdict or "", NEUTRAL)


def ordered_metrics(policy: Policy, metrics: Iterable[str]) -> list[str]:
    """The gate's metrics first (in the policy's order), then the rest alphabetically."""
    metrics = list(metrics)
    gated = [r.metric for r in policy.gate_rules if r.metric in metrics]
    return gated + sorted(m for m in metrics if m not in gated)


def metric_deltas(comparison: Comparison, policy: Policy, *, with_champion: bool = True) -> list[MetricDelta]:
    """Per metric: both values, the change and whether it is better under the policy's direction."""
    out = []
    for metric in ordered_metrics(policy, comparison.candidate_metrics):
        cand = comparison.candidate_metrics[metric]
        champ = comparison.champion_metrics.get(metric) if with_champion else None
        direction = policy.direction(metric)
        if champ is None:
            out.append(MetricDelta(metric, direction, cand, None, None, None, None))
            continue
        improvement = relative_change(cand, champ, direction)
        verdict = "better" if improvement > 1e-12 else "worse" if improvement < -1e-12 else "equal"
        relative = (cand - champ) / abs(champ) if champ else None
        out.append(MetricDelta(metric, direction, cand, champ, cand - champ, relative, verdict))
    return out


def rule_text(policy: Policy, metric: str) -> str:
    """The gate rule for ``metric`` in words, e.g. 'at most 2% worse; ≥ 0.3'."""
    rule = next((r for r in policy.gate_rules if r.metric == metric), None)
    if rule is None:
        return "not gated"
    parts = []
    if rule.max_regression is not None:
        parts.append("no worse than the champion" if rule.max_regression == 0
                     else f"at most {rule.max_regression:.0%} worse")
    if rule.min is not None:
        parts.append(f"≥ {rule.min:g}")
    if rule.max is not None:
        parts.append(f"≤ {rule.max:g}")
    if policy.require_improvement == metric:
        parts.append("must improve")
    return "; ".join(parts) or "no limit"


def deltas_frame(deltas: Sequence[MetricDelta], gate: GateDecision | None, policy: Policy,
                 candidate_label: str = "candidate") -> pd.DataFrame:
    """The comparison table; without a champion only the candidate's side, without a gate no check column."""
    checks = {c.metric: c for c in gate.checks} if gate else {}
    rows = []
    for d in deltas:
        check = checks.get(d.metric)
        rows.append({
            "metric": d.metric,
            "better when": d.direction,
            candidate_label: d.candidate,
            "champion": d.champion,
            "change": d.delta,
            "change %": None if d.relative is None else 100 * d.relative,
            "verdict": d.verdict or "",
            "gate rule": rule_text(policy, d.metric),
            "gate check": "" if check is None else ("pass" if check.passed else "fail"),
        })
    frame = pd.DataFrame(rows)
    if all(d.champion is None for d in deltas):
        frame = frame.drop(columns=["champion", "change", "change %", "verdict"])
    if gate is None:
        frame = frame.drop(columns=["gate check"])
    return frame


def style_deltas(frame: pd.DataFrame, deltas: Sequence[MetricDelta]):
    """Colour change, change % and verdict green when better and red when worse; same for the gate check."""
    def paint(column: pd.Series) -> list[str]:
        return [f"color: {d.color}; font-weight: 600" if d.verdict in ("better", "worse") else "" for d in deltas]

    def paint_check(value: str) -> str:
        return {"pass": f"color: {BETTER}", "fail": f"color: {WORSE}; font-weight: 600"}.get(value, "")

    styler = frame.style
    if "change" in frame.columns:
        styler = styler.apply(paint, subset=["change", "change %", "verdict"])
    if "gate check" in frame.columns:
        styler = styler.map(paint_check, subset=["gate check"])
    formats = {"champion": fmt_metric, "change": lambda v: "—" if pd.isna(v) else f"{v:+.4g}",
               "change %": lambda v: "—" if pd.isna(v) else f"{v:+.1f} %"}
    formats[frame.columns[2]] = fmt_metric  # the candidate's values, whatever their column is called
    return styler.format({c: f for c, f in formats.items() if c in frame.columns})


def delta_text(d: MetricDelta) -> str | None:
    """What ``st.metric`` shows under the value: '-3.5 (-6.5 %)'."""
    if d.delta is None:
        return None
    relative = "" if d.relative is None else f" ({100 * d.relative:+.1f} %)"
    return f"{d.delta:+.3g}{relative}"


# --- charts ---------------------------------------------------------------------

def _series(comparison: Comparison, with_champion: bool) -> list[tuple[str, str, np.ndarray]]:
    """(label, colour, predictions) for each model drawn."""
    cand = comparison.candidate
    role = "champion" if cand.is_champion else "candidate"
    series = [(f"{role} v{cand.version}", CANDIDATE_COLOR, np.asarray(comparison.candidate_pred, dtype=float))]
    if with_champion and comparison.champion is not None and comparison.champion_pred is not None:
        series.append((f"champion v{comparison.champion.version}", CHAMPION_COLOR,
                       np.asarray(comparison.champion_pred, dtype=float)))
    return series


def predicted_vs_actual_figure(comparison: Comparison, *, with_champion: bool = True) -> go.Figure:
    actual = np.asarray(comparison.actual, dtype=float)
    fig = go.Figure()
    series = _series(comparison, with_champion)
    for label, color, pred in series:
        fig.add_trace(go.Scatter(
            x=actual, y=pred, mode="markers", name=label, marker=dict(color=color, size=7, opacity=0.65),
            hovertemplate="actual %{x:.4g}<br>predicted %{y:.4g}<extra>" + label + "</extra>"))
    low = float(min(actual.min(), *(p.min() for _, _, p in series)))
    high = float(max(actual.max(), *(p.max() for _, _, p in series)))
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="perfect (y = x)",
                             line=dict(color=NEUTRAL, dash="dash", width=1), hoverinfo="skip"))
    fig.update_layout(title="Predicted vs actual", xaxis_title="actual", yaxis_title="predicted",
                      height=420, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def residuals_figure(comparison: Comparison, *, with_champion: bool = True) -> go.Figure:
    """Residual (actual − predicted) against predicted, with each model's residual distribution beside it."""
    actual = np.asarray(comparison.actual, dtype=float)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.78, 0.22], shared_yaxes=True, horizontal_spacing=0.02)
    for label, color, pred in _series(comparison, with_champion):
        residual = actual - pred
        fig.add_trace(go.Scatter(
            x=pred, y=residual, mode="markers", name=label, legendgroup=label,
            marker=dict(color=color, size=7, opacity=0.65),
            hovertemplate="predicted %{x:.4g}<br>residual %{y:.4g}<extra>" + label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Box(y=residual, name=label.split(" ")[0], legendgroup=label, showlegend=False,
                             marker_color=color, boxmean=True, hoverinfo="y"), row=1, col=2)
    fig.add_hline(y=0, line=dict(color=NEUTRAL, dash="dash", width=1), row=1, col=1)
    fig.update_layout(title="Residuals (actual − predicted)", height=420, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="predicted", row=1, col=1)
    fig.update_yaxes(title_text="residual", row=1, col=1)
    return fig


def error_summary(comparison: Comparison, *, with_champion: bool = True) -> pd.DataFrame:
    """Bias and spread of each model's errors on the evaluation rows."""
    actual = np.asarray(comparison.actual, dtype=float)
    rows = []
    for label, _, pred in _series(comparison, with_champion):
        residual = actual - pred
        rows.append({"model": label, "mean residual (bias)": float(residual.mean()),
                     "residual std": float(residual.std()),
                     "largest miss": float(np.abs(residual).max())})
    return pd.DataFrame(rows)


# --- rendering: session-state keys, sections, writes ------------------------------------

FLASH = "models.flash"                    # a success message carried over a rerun
SHOW_ARCHIVED = "models.show_archived"
MODEL_NAME = "models.name"
CONFIRM_ARCHIVE = "models.confirm_archive"  # the version whose archive dialog is open


def selected_key(name: str) -> str:
    return f"models.selected.{name}"


def show_flash() -> None:
    if FLASH in st.session_state:
        st.success(st.session_state.pop(FLASH), icon=":material/check:")


def flash_and_rerun(message: str) -> None:
    state.after_write()
    st.session_state[FLASH] = message
    st.rerun()


# --- registry ---------------------------------------------------------------------

def empty_registry() -> None:
    st.info(
        "**No model is registered yet.**\n\n"
        "Models get here from training runs: a run trains on a dataset version, scores the model on the "
        "held-out split, and registers it only if it **passes the quality gate** against the champion "
        "(the first model that meets the gate's absolute rules becomes the champion).\n\n"
        "Start a run on the Runs page, or from a pipeline: "
        "`python tollgate.py retrain --dataset NAME:VERSION --estimator ridge --wait`.",
        icon=":material/deployed_code:")
    st.page_link("pages/runs.py", label="Go to Runs", icon=":material/model_training:")


def pick_model_name(names: list[str], policy_name: str) -> str:
    if len(names) == 1:
        return names[0]
    follow_link(MODEL_NAME, "model", names)
    if st.session_state.get(MODEL_NAME) not in names:
        st.session_state[MODEL_NAME] = policy_name if policy_name in names else names[0]
    name = st.selectbox("Registered model", names, key=MODEL_NAME)
    echo_in_link(MODEL_NAME, "model", name)
    return name


def follow_link(key: str, param: str, options: list) -> None:
    """Select what the address asks for (``?model=NAME&version=N``, e.g. a link from the Runs page),
    unless it is only the echo of the user's own last pick (see ``echo_in_link``)."""
    wanted = st.query_params.get(param)
    if wanted is None or wanted == st.session_state.get(f"{key}.link"):
        return
    match = next((o for o in options if str(o) == wanted), None)
    if match is not None:
        st.session_state[key] = match


def echo_in_link(key: str, param: str, value) -> None:
    """Keep the pick in the address, so the page can be shared as a link."""
    st.session_state[f"{key}.link"] = str(value)
    if st.query_params.get(param) != str(value):
        st.query_params[param] = str(value)


def header(name: str, frame: pd.DataFrame, champion: ModelVersion | None) -> None:
    st.caption(f"Registered model **{name}**: every version with its lineage, and the review of a candidate "
               "against the production champion before approval.")
    counts = summary(frame)
    cols = st.columns(4)
    cols[0].metric("Champion", f"v{champion.version}" if champion else "none",
                   help="The version serving production (the `champion` alias).")
    cols[1].metric("Candidates", counts["candidates"], help="Versions that are neither champion nor archived.")
    cols[2].metric("Latest", f"v{frame['version'].iloc[0]}",
                   help=f"Registered {frame['created'].iloc[0]:%Y-%m-%d %H:%M} UTC")
    cols[3].metric("Archived", counts["archived"], help=f"of {counts['versions']} versions")


def versions_table(frame: pd.DataFrame) -> None:
    st.subheader("Versions")
    show_archived = st.toggle("Show archived versions", key=SHOW_ARCHIVED)
    shown = frame if show_archived else frame[~frame["archived"]]
    metrics = frame_metrics(frame)
    number = {m: st.column_config.NumberColumn(m, format="%.4g") for m in metrics}
    st.dataframe(
        shown, hide_index=True, width="stretch", height=min(38 + 35 * len(shown), 420),
        column_order=[c for c in [*REGISTRY_COLUMNS[:2], *metrics, *REGISTRY_COLUMNS[2:]]
                      if show_archived or c != "archived"],
        column_config={
            "version": (st.column_config.NumberColumn("version", format="v%d", width="small")
                        if pd.api.types.is_integer_dtype(frame["version"])
                        else st.column_config.TextColumn("version", width="small")),
            **number,
            # a Styler would highlight the champion's row but costs ~1 s at 2,000 versions: chips instead
            "aliases": st.column_config.ListColumn("aliases", help="`champion` marks the production version"),
            "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
            "archived": st.column_config.CheckboxColumn("archived", width="small"),
        })
    st.caption("Metrics are those each run logged on the held-out split of *its own* dataset version, so versions "
               "trained on different data are not directly comparable: the review below scores the candidate "
               "and the champion on the same rows.")


PICKER_LIMIT = 500  # the version picker offers the newest versions (and the champion and the current pick)


def pick_version(name: str, frame: pd.DataFrame) -> int | None:
    """The version number to review (its ``ModelVersion`` is read alone: ``state.model_version``)."""
    visible = frame if st.session_state.get(SHOW_ARCHIVED) else frame[~frame["archived"]]
    if visible.empty:
        st.info("Every version is archived: turn on **Show archived versions** to see and restore them.")
        return None
    labels = dict(zip((_plain(v) for v in visible["version"]), visible["label"].tolist()))
    key = selected_key(name)
    follow_link(key, "version", list(labels))
    if st.session_state.get(key) not in labels:
        st.session_state[key] = default_candidate(visible)
    offered = list(labels)[:PICKER_LIMIT]
    offered += [v for v in (st.session_state[key], *map(_plain, visible.loc[visible["champion"], "version"]))
                if v not in offered[:PICKER_LIMIT]]
    number = st.selectbox("Version to review", offered, key=key, format_func=lambda n: labels[n],
                          help="Defaults to the newest version that is neither champion nor archived."
                               + (f" Offers the newest {PICKER_LIMIT:,}; older ones open by their link "
                                  "(?version=N)." if len(labels) > PICKER_LIMIT else ""))
    echo_in_link(key, "version", number)
    return number


# --- candidate vs champion ----------------------------------------------------------

def comparison_section(mv: ModelVersion, champion: ModelVersion | None, policy: Policy) -> None:
    against_champion = champion is not None and not mv.is_champion
    st.subheader(f"Candidate v{mv.version} vs champion v{champion.version}" if against_champion
                 else "Candidate vs champion")
    if champion is None:
        st.info(f"**{mv.name} has no champion yet**, so there is nothing to compare with: v{mv.version} is shown "
                "alone. The first version that passes the gate's absolute rules becomes the champion.")
    elif mv.is_champion:
        st.info(f"**v{mv.version} is the champion** — nothing to compare it with. Below: how it scores on "
                "the held-out rows of its own dataset. Pick another version to review it against the champion.")
    if not mv.dataset:   # registered outside Tollgate: evaluated on data the reviewer picks, if asked
        evidence_notice(mv)
        comparison = picked_comparison(mv, champion, policy.target)
        if comparison is None:
            return
    else:
        try:
            with st.spinner(f"Scoring v{mv.version}" + (f" and champion v{champion.version}" if against_champion
                                                         else "") + " on the same held-out rows…"):
                comparison = state.comparison(state.uri(), mv.name, mv.version, champion.version if champion else None)
        except ServiceError as e:
            show_error(e)
            st.caption("Without both models loaded there is no comparison and no gate decision; "
                       "the version's details below are still available.")
            return

    rows = len(comparison.actual)
    split = f"{policy.test_fraction:.0%} test split, seed {policy.split_seed}"
    if not mv.dataset:
        st.markdown(f"Evaluated on **{rows} held-out rows of {code(comparison.evaluated_on)}** (picked for this "
                    f"review; {split})" + (" — the same rows for both models." if against_champion else "."))
    else:
        trained_on = f"{champion.dataset}:{champion.dataset_version}" if champion and champion.dataset else "unknown data"
        st.markdown(
            f"Evaluated on **{rows} held-out rows of `{comparison.evaluated_on}`** (the dataset v{mv.version} was "
            f"trained on; {split})"
            + (f" — the same rows for both models. Champion v{champion.version} was trained on `{trained_on}`."
               if against_champion else "."))

    deltas = metric_deltas(comparison, policy, with_champion=against_champion)
    per_row = 4   # a classifier has seven metrics: in one row their values would not fit
    cols = [col for start in range(0, len(deltas), per_row) for col in st.columns(per_row)][:len(deltas)]
    for col, d in zip(cols, deltas):
        col.metric(
            f"{d.metric} · {d.direction} is better", fmt_metric(d.candidate), delta_text(d), border=True,
            delta_color="off" if d.verdict in (None, "equal") else "inverse" if d.direction == "lower" else "normal",
            delta_description=None if d.champion is None else f"vs champion {fmt_metric(d.champion)}",
            help=f"Candidate v{mv.version}" + (f" against champion v{champion.version}" if against_champion else ""))

    gate = None if mv.is_champion or not mv.dataset else comparison.gate
    if gate is not None:
        gate_banner(gate, mv, against_champion)
    elif not mv.dataset:
        st.caption("For information: no gate decision is made on data picked for a review. Releasing this "
                   "version still needs the evidence Tollgate records (a training run on a dataset version).")
    frame = deltas_frame(deltas, gate, policy, candidate_label="candidate" if gate else f"v{mv.version}")
    st.dataframe(style_deltas(frame, deltas), hide_index=True, width="stretch")

    if is_classification(comparison.task):
        classification_charts(comparison, with_champion=against_champion)
        return
    left, right = st.columns(2)
    left.plotly_chart(predicted_vs_actual_figure(comparison, with_champion=against_champion),
                      width="stretch", key="models.chart.pred")
    right.plotly_chart(residuals_figure(comparison, with_champion=against_champion),
                       width="stretch", key="models.chart.residuals")
    st.dataframe(error_summary(comparison, with_champion=against_champion), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3g")
                                for c in ("mean residual (bias)", "residual std", "largest miss")})


def evidence_notice(mv: ModelVersion) -> None:
    """A version registered outside Tollgate: what it lacks for a review, instead of an error."""
    missing = "\n".join(f"- {m}" for m in missing_evidence(mv))
    st.info(f"**v{mv.version} cannot be reviewed yet**: it was registered outside Tollgate, and its review "
            f"needs evidence that is not recorded:\n\n{missing}\n\nWithout the dataset version it was trained on "
            "there are no held-out rows of its own to score it on, and no gate decision. You can evaluate it on a "
            "dataset version you pick, against the champion; its details below are still available.",
            icon=":material/info:")


def gate_banner(gate: GateDecision, mv: ModelVersion, against_champion: bool) -> None:
    versus = f" against champion {gate.champion}" if against_champion and gate.champion else ""
    checks = "\n".join(f"- {':material/check: pass' if c.passed else ':material/close: **fail**'} · {c.reason}"
                       for c in gate.checks)
    if gate.passed:
        st.success(f"**Quality gate: PASS** — v{mv.version}{versus}: {'; '.join(gate.reasons)}.\n\n{checks}",
                   icon=":material/check_circle:")
    else:
        failures = "\n".join(f"- {r}" for r in gate.reasons)
        st.error(f"**Quality gate: FAIL** — v{mv.version}{versus} must not be released:\n\n{failures}\n\n"
                 f"**Every check:**\n\n{checks}", icon=":material/block:")


# --- the version's card --------------------------------------------------------------

def version_card(mv: ModelVersion) -> None:
    st.subheader(f"Version v{mv.version}")
    badges = []
    if mv.is_champion:
        badges.append(":orange-badge[:material/trophy: champion]")
    badges += [f":blue-badge[alias: {a}]" for a in mv.aliases if a != "champion"]
    release = next((s for s in state.release_states(state.uri(), mv.name) if s.model_version == mv.version), None)
    badges.append(f":violet-badge[release stage: {stage_words(stage_of(release))}]")   # the Releases page's words
    if mv.archived:
        badges.append(":gray-badge[archived]")
    st.markdown(" ".join(badges))
    if mv.azure_stage or mv.model_type:  # Azure ML's own fields, set by whoever registered the version: plain text
        st.text(" · ".join(x for x in (f"Azure stage: {mv.azure_stage}" if mv.azure_stage else "",
                                       f"type: {mv.model_type}" if mv.model_type else "") if x))

    details, edits = st.columns([1, 1], gap="large")
    with details:
        st.markdown("**Metrics logged by the training run**")
        metrics = [(k, mv.metrics[k]) for k in ordered_metrics(state.workspace().policy, mv.metrics)]
        st.dataframe({"metric": [k for k, _ in metrics], "value": [fmt_metric(v) for _, v in metrics]},
                     hide_index=True, width="stretch")
        st.markdown("**Lineage**")
        if mv.run_id:
            st.page_link("pages/runs.py", label=f"Run {mv.run_id}", icon=":material/model_training:",
                         query_params={"run": mv.run_id})
        else:
            st.caption("No training run recorded.")
        if mv.dataset:
            st.page_link("pages/datasets.py", label=f"Dataset {mv.dataset}:{mv.dataset_version}",
                         icon=":material/dataset:",
                         query_params={"dataset": mv.dataset, "version": str(mv.dataset_version)})
        st.markdown(f"Estimator **{escaped(mv.estimator)}** · created by {code(mv.created_by)} on "
                    f"{mv.created_at:%Y-%m-%d %H:%M} UTC")
        st.caption(f"Artifacts: {code(mv.uri)}")
    with edits:
        role_hint("edit_model")
        description_editor(mv)
        tags_editor(mv)
        archive_controls(mv)
    st.markdown("**Provenance** (copied from the run that trained it)")
    provenance_block(mv.provenance, mv.run_id, key=f"models.{mv.ref}")


def description_editor(mv: ModelVersion) -> None:
    # the saved text is part of the key, so a saved change re-initialises the box
    key = f"models.description.{mv.ref}.{hash(mv.description)}"
    text = st.text_area("Description", value=mv.description, key=key, height=90)
    # never disabled: a click right after typing must not be lost while the box commits its text
    if st.button("Save description", key=f"models.save_description.{mv.ref}"):
        if text == mv.description:
            st.caption("Nothing to save: the description is unchanged.")
            return
        with guard():
            state.workspace().models.set_description(mv.name, mv.version, text, actor=state.actor())
            flash_and_rerun(f"Saved the description of {mv.ref}.")


def tags_editor(mv: ModelVersion) -> None:
    st.markdown("**Tags**")
    if mv.tags:
        st.dataframe({"key": list(mv.tags), "value": list(mv.tags.values())}, hide_index=True, width="stretch")
    else:
        st.caption("No tags.")
    with st.form(f"models.tag_form.{mv.ref}", clear_on_submit=True, border=False):
        key_col, value_col, button_col = st.columns([2, 3, 1.3], vertical_alignment="bottom")
        tag_key = key_col.text_input("Tag", key=f"models.tag_key.{mv.ref}", placeholder="e.g. reviewed_by")
        tag_value = value_col.text_input("Value", key=f"models.tag_value.{mv.ref}")
        if button_col.form_submit_button("Set tag", key=f"models.set_tag.{mv.ref}"):
            if not tag_key.strip():
                st.warning("Give the tag a name.")
            else:
                with guard():
                    state.workspace().models.set_tags(mv.name, mv.version, {tag_key.strip(): tag_value},
                                                      actor=state.actor())
                    flash_and_rerun(f"Set tag {code(tag_key.strip())} on {mv.ref}.")
    if mv.tags:
        key_col, button_col = st.columns([5, 1.3], vertical_alignment="bottom")
        doomed = key_col.selectbox("Remove a tag", list(mv.tags), key=f"models.remove_key.{mv.ref}")
        if button_col.button("Remove", key=f"models.remove_tag.{mv.ref}"):
            with guard():
                state.workspace().models.set_tags(mv.name, mv.version, {doomed: None}, actor=state.actor())
                flash_and_rerun(f"Removed tag {code(doomed)} from {mv.ref}.")


def archive_controls(mv: ModelVersion) -> None:
    st.markdown("**Archive**")
    role_hint("archive_model")
    if mv.archived:
        st.caption("Archived: hidden from the version list and from the review picker.")
        if st.button("Restore", key="models.restore", icon=":material/unarchive:"):
            with guard():
                state.workspace().models.restore(mv.name, mv.version, actor=state.actor())
                flash_and_rerun(f"Restored {mv.ref}: it is back in the version list.")
        return
    if st.button("Archive…", key="models.archive", icon=":material/archive:",
                 help="Hide this version from default listings (asks for confirmation)."):
        st.session_state[CONFIRM_ARCHIVE] = mv.ref
    if st.session_state.get(CONFIRM_ARCHIVE) == mv.ref:
        confirm_archive(mv)


def close_archive_dialog() -> None:
    st.session_state.pop(CONFIRM_ARCHIVE, None)


@st.dialog("Archive this model version?", on_dismiss=close_archive_dialog)
def confirm_archive(mv: ModelVersion) -> None:
    st.markdown(
        f"Archiving **{mv.ref}** ({mv.estimator}):\n"
        f"- hides it from the version list and from the version picker (turn on *Show archived versions* "
        "to see it again);\n"
        "- keeps its files, metrics, lineage, tags and audit history;\n"
        "- can be undone at any time with **Restore**.")
    if mv.aliases:
        st.warning(f"{mv.ref} holds the alias **{', '.join(mv.aliases)}**: the registry refuses to archive "
                   "a version that an alias points at.")
    confirm, cancel = st.columns(2)
    if cancel.button("Cancel", key="models.archive.cancel", width="stretch"):
        close_archive_dialog()
        st.rerun()
    if confirm.button(f"Archive v{mv.version}", key="models.archive.confirm", type="primary", width="stretch"):
        try:
            state.workspace().models.archive(mv.name, mv.version, actor=state.actor())
        except ServiceError as e:
            show_error(e)
            return
        close_archive_dialog()
        flash_and_rerun(f"Archived {mv.ref}: hidden from the version list. Turn on **Show archived versions** "
                        "to see or restore it.")
