"""The metrics of each task (pipeline/metrics.py, read through services.metrics): what they compute
on real bundled data (iris: three classes; breast cancer: two) against scikit-learn called directly."""
from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from pipeline.train import split, validate
from services.metrics import TASKS, compute, direction, display_name, metrics_of


def fitted(loader, **kwargs):
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=5000, **kwargs).fit(X_train, y_train)
    return model, X_test, y_test


def test_multiclass_metrics_are_macro_averages_and_one_vs_rest_auc():
    model, X, y = fitted(load_iris, C=0.05)   # regularised: some mistakes, so the averages differ
    pred, proba = model.predict(X), model.predict_proba(X)
    got = compute("multiclass", y, pred, proba, model.classes_)
    assert got == pytest.approx({
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="macro"),
        "recall": skm.recall_score(y, pred, average="macro"),
        "f1": skm.f1_score(y, pred, average="macro"),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "log_loss": skm.log_loss(y, proba),
    })
    assert got["f1"] != pytest.approx(skm.f1_score(y, pred, average="micro")), "macro, not micro"
    assert 0 < got["log_loss"] and got["accuracy"] < 1


def test_binary_metrics_are_of_the_positive_class():
    model, X, y = fitted(load_breast_cancer)
    pred, proba = model.predict(X), model.predict_proba(X)
    got = compute("binary", y, pred, proba, model.classes_)
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    # labels that are not 0/1: the positive class is the last of the sorted classes
    relabelled = np.where(y == 1, 7, 3)
    again = compute("binary", relabelled, np.where(pred == 1, 7, 3), proba, np.array([3, 7]))
    assert again == pytest.approx(got)


def test_probability_metrics_only_with_probabilities():
    model = SVC().fit(*load_iris(return_X_y=True))   # no predict_proba without probability=True
    assert not hasattr(model, "predict_proba")
    X, y = load_iris(return_X_y=True)
    got = compute("multiclass", y, model.predict(X))
    assert set(got) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1"}


def test_a_metric_the_rows_cannot_define_is_left_out():
    y = np.zeros(10)   # one class only: ROC AUC is undefined, not 0 or 0.5
    got = compute("binary", y, y, np.column_stack([np.ones(10), np.zeros(10)]), np.array([0.0, 1.0]))
    assert "roc_auc" not in got and got["accuracy"] == 1.0


def test_regression_metrics_are_as_they_were():
    y, pred = np.array([3.0, 5.0, 7.0, 9.0]), np.array([2.5, 5.5, 7.0, 10.0])
    assert compute("regression", y, pred) == pytest.approx({
        "rmse": np.sqrt(skm.mean_squared_error(y, pred)), "mae": skm.mean_absolute_error(y, pred),
        "r2": skm.r2_score(y, pred)})


def test_every_metric_declares_its_direction_and_display_name():
    for task in TASKS:
        for m in metrics_of(task):
            assert m.direction in ("lower", "higher") and m.display
            assert direction(m.name) == direction(f"train_{m.name}") == m.direction
    assert [m.name for m in metrics_of("regression")] == ["rmse", "mae", "r2"]
    assert {m.name: m.direction for m in metrics_of("binary")} == {
        "accuracy": "higher", "balanced_accuracy": "higher", "precision": "higher", "recall": "higher",
        "f1": "higher", "roc_auc": "higher", "log_loss": "lower"}
    assert display_name("roc_auc") == "ROC AUC" and display_name("custom") == "custom"


def test_the_classification_split_is_stratified_and_the_regression_split_unchanged():
    frame = load_iris(as_frame=True).frame
    _, _, _, y_test = split(frame, "target", 0.2, 42, "multiclass")
    assert sorted(y_test.value_counts().tolist()) == [10, 10, 10]
    # regression: exactly scikit-learn's unstratified split, as lineage recorded before expects
    X = frame.drop(columns=["target"])
    expected = train_test_split(X, frame["target"], test_size=0.2, random_state=42)[1]
    assert list(split(frame, "target", 0.2, 42)[1].index) == list(expected.index)


@pytest.mark.parametrize("task, target, message", [
    ("binary", [0, 1, 2] * 10, "the task is binary but 'target' has 3 distinct label(s)"),
    ("multiclass", [0, 1] * 15, "two labels make a binary task"),
    ("multiclass", list(range(27)) + [0, 1, 2], "occur once"),
])
def test_labels_that_do_not_fit_the_task_are_refused(task, target, message):
    import pandas as pd
    frame = pd.DataFrame({"x": np.arange(30.0), "target": target})
    assert any(message in p for p in validate(frame, "target", task)), validate(frame, "target", task)
