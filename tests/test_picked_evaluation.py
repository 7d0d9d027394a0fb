"""A model version registered outside Tollgate (no lineage) evaluated on a dataset version and target
column someone picks, against the champion on the same held-out rows (``services.picked_evaluation``,
``tollgate.py evaluate``): on the local workspace, through the CLI, and on the replayed Azure
workspaces (the demo one and the one from real recordings). A read: nothing is recorded."""
from __future__ import annotations

import json
import shlex
from dataclasses import replace

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import tollgate
from services.errors import InvalidInput, NotFound
from services.evaluation import evaluation_split
from services.evidence import missing_evidence
from services.permissions import SYSTEM_ACTOR
from services.picked_evaluation import MIN_ROWS, evaluate_on, usable_rows

MODEL = "diabetes-regressor"
FEATURES = ["age", "bmi", "bp", "s5"]


def register_foreign(ws, tmp_path, name: str, model, *, features=FEATURES, pickle: bytes | None = None) -> int:
    """A version as another tool leaves it: a model file, no dataset, no run, no metrics."""
    folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    if pickle is None:
        joblib.dump(model, folder / "model.pkl")
    else:
        (folder / "model.pkl").write_bytes(pickle)
    (folder / "model.json").write_text(json.dumps({"features": features}))
    return ws.models.register(name, folder, estimator="outside", metrics={}, run_id=None, dataset=None,
                              dataset_version=None, created_by=SYSTEM_ACTOR, description="registered elsewhere")


@pytest.fixture(scope="module")
def foreign(demo_ws, tmp_path_factory):
    """diabetes-regressor:N, a linear model on four columns fitted outside Tollgate."""
    frame = demo_ws.datasets.load("diabetes", 1)
    model = LinearRegression().fit(frame[FEATURES], frame["target"])
    version = register_foreign(demo_ws, tmp_path_factory.mktemp("foreign"), MODEL, model)
    return demo_ws.models.get(MODEL, version)


def test_a_foreign_version_is_evaluated_against_the_champion_on_the_same_rows(demo_ws, foreign):
    assert missing_evidence(foreign)                                  # no lineage: the review's notice
    audit_before, versions_before = len(demo_ws.audit.audit()), demo_ws.models.versions(MODEL)
    c = evaluate_on(demo_ws, MODEL, foreign.version, "diabetes", 2, "target")
    champion = demo_ws.models.champion(MODEL)
    assert (c.candidate.ref, c.champion.ref, c.evaluated_on) == (foreign.ref, champion.ref, "diabetes:2 (target target)")
    frame = demo_ws.datasets.load("diabetes", 2)
    X, y = evaluation_split(frame, demo_ws.policy)                    # the policy's split of the picked data
    assert list(c.actual) == pytest.approx(list(y))
    ours = joblib.load(f"{foreign.uri}/model.pkl").predict(X[FEATURES])
    assert list(c.candidate_pred) == pytest.approx(list(ours))
    theirs = demo_ws.models.load(MODEL, champion.version).predict(X[list(demo_ws.models.features(MODEL, champion.version))])
    assert list(c.champion_pred) == pytest.approx(list(theirs))       # the champion: the same rows
    rmse = float(np.sqrt(np.mean((np.asarray(y) - ours) ** 2)))
    assert c.candidate_metrics["rmse"] == pytest.approx(rmse)
    assert c.gate.checks                                              # the gate's checks, for information
    # a read: nothing recorded, nothing changed
    assert len(demo_ws.audit.audit()) == audit_before and demo_ws.models.versions(MODEL) == versions_before


def test_another_target_column_is_evaluated_as_picked(demo_ws, tmp_path):
    frame = demo_ws.datasets.load("diabetes", 1)
    model = LinearRegression().fit(frame[["age", "sex", "bp"]], frame["bmi"])
    version = register_foreign(demo_ws, tmp_path, "bmi-model", model, features=["age", "sex", "bp"])
    c = evaluate_on(demo_ws, "bmi-model", version, "diabetes", 2, "bmi")
    assert c.champion is None and c.evaluated_on == "diabetes:2 (target bmi)"
    _, y = evaluation_split(demo_ws.datasets.load("diabetes", 2), replace(demo_ws.policy, target="bmi"))
    assert list(c.actual) == pytest.approx(list(y))


@pytest.mark.parametrize("target, says", [
    ("nope", "diabetes:2 has no column 'nope'"),
    ("  ", "name the target column"),
    ("sex", "needs columns the evaluation data lacks: sex"),   # the champion predicts from sex: not a feature now
])
def test_what_cannot_be_evaluated_says_why(demo_ws, foreign, target, says):
    with pytest.raises(InvalidInput, match=says):
        evaluate_on(demo_ws, MODEL, foreign.version, "diabetes", 2, target)


def test_a_target_that_is_not_numeric_or_too_short_is_refused():
    frame = pd.DataFrame({"x": range(20), "y": ["a"] + [1.0] * 19})
    with pytest.raises(InvalidInput, match=r"target column 'y' of d:1 is not numeric \(e.g. 'a'\)"):
        usable_rows(frame, "y", "d:1")
    frame = pd.DataFrame({"x": range(20), "y": [None] * (21 - MIN_ROWS) + [1.0] * (MIN_ROWS - 1)})
    with pytest.raises(InvalidInput, match=f"has {MIN_ROWS - 1} rows with a value in 'y'"):
        usable_rows(frame, "y", "d:1")
    frame = pd.DataFrame({"x": range(20), "y": ["1.5"] * 20})             # numbers as text are numbers
    assert usable_rows(frame, "y", "d:1")["y"].dtype.kind == "f"


def test_a_model_that_cannot_be_loaded_or_cannot_predict_says_so(demo_ws, tmp_path):
    broken = register_foreign(demo_ws, tmp_path, "broken-model", None, pickle=b"not a pickle")
    with pytest.raises(InvalidInput, match=f"model broken-model:{broken} could not be loaded"):
        evaluate_on(demo_ws, "broken-model", broken, "diabetes", 2, "target")
    frame = demo_ws.datasets.load("diabetes", 1)
    numpy_model = LinearRegression().fit(frame[FEATURES].to_numpy(), frame["target"])   # no column names
    blind = register_foreign(demo_ws, tmp_path, "blind-model", numpy_model)
    with pytest.raises(InvalidInput, match=f"blind-model:{blind} could not predict on diabetes:2: ValueError"):
        evaluate_on(demo_ws, "blind-model", blind, "diabetes", 2, "target")


def test_unknown_versions_are_not_found(demo_ws, foreign):
    with pytest.raises(NotFound):
        evaluate_on(demo_ws, MODEL, foreign.version, "diabetes", 99, "target")
    with pytest.raises(NotFound):
        evaluate_on(demo_ws, MODEL, 999, "diabetes", 2, "target")


# --- the CLI -------------------------------------------------------------------------------

def cli(ws, command: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = tollgate.main(["--workspace", f"local://{ws.root}", *shlex.split(command)])
    except SystemExit as e:   # argparse: a usage error
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_evaluates_and_prints_both_models(demo_ws, foreign, capsys):
    code, out, err = cli(demo_ws, f"evaluate {foreign.ref} --dataset diabetes:2 --target target --json", capsys)
    assert code == 0, err
    data = json.loads(out)
    champion = demo_ws.models.champion(MODEL)
    assert (data["model"], data["champion"], data["evaluated_on"]) == (foreign.ref, champion.ref,
                                                                       "diabetes:2 (target target)")
    assert set(data["candidate_metrics"]) >= {"rmse", "r2"} and data["rows"] > 0
    code, out, _ = cli(demo_ws, f"evaluate {foreign.ref} --dataset diabetes:2 --target target", capsys)
    assert code == 0 and out.splitlines()[0] == (f"{foreign.ref} vs champion {champion.ref} on {data['rows']} "
                                                 "held-out rows of diabetes:2 (target target)")
    assert "nothing recorded" in out


@pytest.mark.parametrize("args, says", [
    ("--dataset diabetes:2 --target nope", "has no column 'nope'"),
    ("--dataset diabetes --target target", "name the dataset version"),
    ("--dataset diabetes:99 --target target", "diabetes:99"),
    ("--dataset nosuch:1 --target target", "nosuch"),
])
def test_cli_bad_input_is_exit_2_with_a_message(demo_ws, foreign, args, says, capsys):
    code, _, err = cli(demo_ws, f"evaluate {foreign.ref} {args}", capsys)
    assert code == 2 and says in err and "Traceback" not in err, err


def test_cli_needs_the_version(demo_ws, capsys):
    code, _, err = cli(demo_ws, f"evaluate {MODEL} --dataset diabetes:2 --target target", capsys)
    assert code == 2 and "NAME:VERSION" in err


# --- Azure (replay) ------------------------------------------------------------------------

def test_on_azure_the_same_use_case_reads_the_registry_and_the_datastore():
    from services.azure.workspace import open_replay
    ws = open_replay()
    try:
        t = ws.replay
        t.reset_calls()
        c = evaluate_on(ws, MODEL, 4, "diabetes", 2, "target")
        assert (c.candidate.ref, c.champion.ref) == (f"{MODEL}:4", f"{MODEL}:1") and len(c.actual) > 0
        assert not [x for x in t.calls if x.method not in ("GET", "HEAD")]       # a read: nothing written
    finally:
        ws.close()


def test_on_the_real_recordings_data_tollgate_cannot_read_is_a_clear_error():
    from services.azure.replay import FIXTURES
    from services.azure.workspace import open_replay
    ws = open_replay(FIXTURES / "real")
    try:
        mv = ws.models.versions("model_test_129743542416")[0]
        assert missing_evidence(mv)
        with pytest.raises(InvalidInput, match="cannot read dataset test_60801715751:1: a uri_folder") as e:
            evaluate_on(ws, mv.name, mv.version, "test_60801715751", 1, "target")
        assert e.value.hint
    finally:
        ws.close()


def test_a_classifier_target_may_be_text_labels():
    frame = pd.DataFrame({"x": range(20), "y": ["benign", "malignant"] * 10})
    assert list(usable_rows(frame, "y", "d:1", "binary")["y"][:2]) == ["benign", "malignant"]
    frame.loc[0, "y"] = None
    assert len(usable_rows(frame, "y", "d:1", "binary")) == 19
