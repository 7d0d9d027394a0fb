"""DatasetStore: versioned, immutable data assets with a profile and data tests."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from services.entities import CheckStatus
from services.errors import InvalidInput, NotFound

from .helpers import LEAD, diabetes, results_for, write_csv, write_text


def test_register_csv_creates_version_1_with_its_data(workspace, tmp_path):
    frame = diabetes()
    dv = workspace.datasets.register("diabetes", write_csv(tmp_path, frame, "patients.csv"),
                                     description="first upload", actor=LEAD)
    assert (dv.name, dv.version, dv.format, dv.source) == ("diabetes", 1, "csv", "patients.csv")
    assert (dv.rows, dv.description, dv.created_by) == (442, "first upload", LEAD)
    assert [c.name for c in dv.columns] == list(frame.columns)
    assert dv.baseline_version is None and dv.sha256
    pd.testing.assert_frame_equal(workspace.datasets.load("diabetes", 1), frame, check_dtype=False)
    assert workspace.datasets.names() == ["diabetes"]


def test_register_parquet(workspace, tmp_path):
    frame = diabetes().head(100)
    path = tmp_path / "patients.parquet"
    frame.to_parquet(path, index=False)
    dv = workspace.datasets.register("from-parquet", path, actor=LEAD)
    assert (dv.format, dv.rows) == ("parquet", 100)
    pd.testing.assert_frame_equal(workspace.datasets.load("from-parquet"), frame, check_dtype=False)


def test_original_name_decides_source_and_format(workspace, tmp_path):
    upload = write_csv(tmp_path, diabetes(), "tmp-upload-1234")  # as a browser upload lands on disk
    dv = workspace.datasets.register("uploaded", upload, original_name="march.csv", actor=LEAD)
    assert (dv.source, dv.format) == ("march.csv", "csv")


def test_versions_increment_and_old_versions_never_change(workspace, tmp_path):
    first = diabetes()
    v1 = workspace.datasets.register("diabetes", write_csv(tmp_path, first, "v1.csv"), actor=LEAD)
    second = first.copy()
    second["target"] = second["target"] + 1
    v2 = workspace.datasets.register("diabetes", write_csv(tmp_path, second, "v2.csv"), actor=LEAD)
    v3 = workspace.datasets.register("diabetes", write_csv(tmp_path, first, "v1.csv"), actor=LEAD)  # same file again

    assert [v.version for v in workspace.datasets.versions("diabetes")] == [3, 2, 1]
    assert workspace.datasets.get("diabetes").version == 3
    assert v3.sha256 == v1.sha256 != v2.sha256
    again = workspace.datasets.get("diabetes", 1)
    assert (again.sha256, again.rows, again.created_at) == (v1.sha256, v1.rows, v1.created_at)
    pd.testing.assert_frame_equal(workspace.datasets.load("diabetes", 1), first, check_dtype=False)
    pd.testing.assert_frame_equal(workspace.datasets.load("diabetes", 2), second, check_dtype=False)
    assert [v.ref for v in workspace.datasets.all_versions()] == ["diabetes:3", "diabetes:2", "diabetes:1"]


def test_profile_matches_pandas(workspace, tmp_path):
    frame = diabetes()
    frame.loc[[3, 17, 99], "bmi"] = np.nan
    dv = workspace.datasets.register("profiled", write_csv(tmp_path, frame), actor=LEAD)
    assert dv.rows == len(frame)
    for col in frame.columns:
        prof = dv.column(col)
        assert prof is not None, col
        s = frame[col]
        assert prof.missing == int(s.isna().sum()), col
        assert prof.min == pytest.approx(s.min()), col
        assert prof.max == pytest.approx(s.max()), col
        assert prof.mean == pytest.approx(s.mean()), col
        assert prof.std == pytest.approx(s.std()), col
    assert dv.column("bmi").missing == 3
    assert dv.column("no-such-column") is None


def test_profile_of_a_text_column_has_no_statistics(workspace, tmp_path):
    frame = diabetes()
    frame["clinic"] = "north"
    dv = workspace.datasets.register("with-text", write_csv(tmp_path, frame), actor=LEAD)
    clinic = dv.column("clinic")
    assert clinic.missing == 0
    assert (clinic.min, clinic.max, clinic.mean, clinic.std) == (None, None, None, None)


# --- data tests against the previous version ----------------------------------------------

@pytest.fixture
def with_baseline(workspace, tmp_path):
    """``workspace`` with diabetes:1; returns a function registering the next version."""
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes(), "base.csv"), actor=LEAD)

    def register_next(frame: pd.DataFrame):
        dv = workspace.datasets.register("diabetes", write_csv(tmp_path, frame, "next.csv"), actor=LEAD)
        return dv, workspace.datasets.data_tests(dv.name, dv.version)
    return register_next


def test_identical_data_passes_every_test(with_baseline):
    dv, tests = with_baseline(diabetes())
    assert dv.baseline_version == 1
    assert dv.tests_status == CheckStatus.PASS
    assert tests and all(t.status == CheckStatus.PASS for t in tests), [t for t in tests if t.status != "pass"]
    assert {"rows", "missing", "schema", "range", "shift_mean", "psi"} <= {t.check for t in tests}


def test_missing_column_fails_schema_naming_it(with_baseline):
    dv, tests = with_baseline(diabetes().drop(columns=["bmi"]))
    assert dv.version == 2, "a file that parses is registered even when its tests fail"
    assert dv.tests_status == CheckStatus.FAIL
    [schema] = results_for(tests, "schema", "bmi")
    assert schema.status == CheckStatus.FAIL
    assert "bmi" in schema.detail


def test_non_numeric_value_fails_type_naming_column_and_value(with_baseline):
    frame = diabetes().astype({"bp": object})
    frame.loc[41, "bp"] = "n/a?"
    dv, tests = with_baseline(frame)
    assert dv.tests_status == CheckStatus.FAIL
    [typ] = results_for(tests, "type", "bp")
    assert typ.status == CheckStatus.FAIL
    assert "'n/a?'" in typ.detail and "row 42" in typ.detail
    assert not results_for(tests, "type", "bmi")


def test_a_few_missing_values_warn_and_many_fail(with_baseline):
    few = diabetes()
    few.loc[[5, 6], "s1"] = np.nan                  # 0.5 %: above the warn limit (0), below fail (5 %)
    dv, tests = with_baseline(few)
    [missing] = results_for(tests, "missing", "s1")
    assert missing.status == CheckStatus.WARN and "2 missing" in missing.detail
    assert dv.tests_status == CheckStatus.WARN

    many = diabetes()
    many.loc[many.index[:60], "s2"] = np.nan        # 13.6 %
    dv, tests = with_baseline(many)
    [missing] = results_for(tests, "missing", "s2")
    assert missing.status == CheckStatus.FAIL and "60 missing" in missing.detail
    assert dv.tests_status == CheckStatus.FAIL


def test_shifted_column_is_flagged_by_name(with_baseline):
    frame = diabetes()
    frame["bmi"] = frame["bmi"] + 3 * frame["bmi"].std()
    dv, tests = with_baseline(frame)
    flagged = {(t.check, t.column) for t in tests if t.status != CheckStatus.PASS}
    assert ("shift_mean", "bmi") in flagged and ("psi", "bmi") in flagged
    assert {col for _, col in flagged} == {"bmi"}, "only the shifted column is flagged"
    [shift] = results_for(tests, "shift_mean", "bmi")
    assert shift.status == CheckStatus.FAIL and shift.value == pytest.approx(3.0, abs=0.01)
    [psi] = results_for(tests, "psi", "bmi")
    assert psi.value > 0.25


def test_baseline_is_the_newest_version_that_did_not_fail(with_baseline):
    broken, _ = with_baseline(diabetes().drop(columns=["age"]))
    assert broken.tests_status == CheckStatus.FAIL
    fixed, tests = with_baseline(diabetes())
    assert fixed.baseline_version == 1
    assert fixed.tests_status == CheckStatus.PASS


def test_too_few_rows_fail(workspace, tmp_path):
    dv = workspace.datasets.register("tiny", write_csv(tmp_path, diabetes().head(10)), actor=LEAD)
    [rows] = results_for(workspace.datasets.data_tests("tiny", 1), "rows")
    assert rows.status == CheckStatus.FAIL and dv.tests_status == CheckStatus.FAIL


# --- files that cannot be registered ---------------------------------------------------------

BAD_FILES = {
    "ragged-short-row": ("bad.csv", "a,b,target\n1,2,3\n4,5\n7,8,9\n"),
    "ragged-long-row": ("bad.csv", "a,b,target\n1,2,3\n4,5,6,7\n7,8,9\n"),
    "every-row-one-field-too-many": ("bad.csv", "a,b\n1,2,3\n4,5,6\n"),
    "empty-file": ("bad.csv", ""),
    "header-only": ("bad.csv", "a,b,target\n"),
    "duplicate-header": ("bad.csv", "a,a,target\n1,2,3\n4,5,6\n"),
    "unnamed-header": ("bad.csv", "a,,target\n1,2,3\n4,5,6\n"),
    "not-text": ("bad.csv", bytes(range(256)) * 4),
    "not-parquet": ("bad.parquet", "a,b\n1,2\n"),
    "unsupported-extension": ("data.xlsx", "a,b\n1,2\n"),
    "no-extension": ("data", "a,b\n1,2\n"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unreadable_file_is_refused_and_writes_nothing(backend, workspace, tmp_path, case):
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes(), "good.csv"), actor=LEAD)
    files_before = backend.stored_files(workspace, "datasets")
    file_name, content = BAD_FILES[case]

    with pytest.raises(InvalidInput) as err:
        workspace.datasets.register("diabetes", write_text(tmp_path, file_name, content), actor=LEAD)
    assert file_name in str(err.value)
    with pytest.raises(InvalidInput):
        workspace.datasets.register("fresh", write_text(tmp_path, file_name, content), actor=LEAD)

    assert [v.version for v in workspace.datasets.versions("diabetes")] == [1]
    assert "fresh" not in workspace.datasets.names()
    assert backend.stored_files(workspace, "datasets") == files_before
    assert backend.half_written(workspace) == []


def test_missing_source_file_is_invalid_input(workspace, tmp_path):
    with pytest.raises(InvalidInput):
        workspace.datasets.register("ghost", tmp_path / "nowhere.csv", actor=LEAD)
    assert workspace.datasets.names() == []


@pytest.mark.parametrize("name", ["", " ", "a b", "../escape", "x/y", "-dash-first", ".hidden", "x" * 65, "naïve"])
def test_invalid_dataset_names_are_refused(workspace, tmp_path, name):
    with pytest.raises(InvalidInput):
        workspace.datasets.register(name, write_csv(tmp_path, diabetes().head(60)), actor=LEAD)
    assert workspace.datasets.names() == []


def test_unknown_name_or_version_is_not_found_with_a_hint(workspace, tmp_path):
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes().head(60)), actor=LEAD)
    for call in (lambda: workspace.datasets.versions("nope"),
                 lambda: workspace.datasets.get("nope"),
                 lambda: workspace.datasets.get("nope", 1),
                 lambda: workspace.datasets.load("nope"),
                 lambda: workspace.datasets.data_tests("nope", 1)):
        with pytest.raises(NotFound) as err:
            call()
        assert "nope" in str(err.value) and "diabetes" in err.value.hint

    with pytest.raises(NotFound) as err:
        workspace.datasets.get("diabetes", 7)
    assert "diabetes:7" in str(err.value) and "1" in err.value.hint
    with pytest.raises(NotFound):
        workspace.datasets.load("diabetes", 7)
    with pytest.raises(NotFound):
        workspace.datasets.data_tests("diabetes", 7)


def test_empty_workspace_lists_nothing(workspace):
    assert workspace.datasets.names() == []
    assert workspace.datasets.all_versions() == []


def test_concurrent_registrations_get_distinct_versions(backend, workspace, tmp_path):
    threads_n = 6
    frames = [diabetes().head(100 + 10 * i) for i in range(threads_n)]
    paths = [write_csv(tmp_path, f, f"part-{i}.csv") for i, f in enumerate(frames)]
    results, errors = {}, []
    start = threading.Barrier(threads_n)

    def register(i):
        try:
            start.wait()
            results[i] = workspace.datasets.register("shared", paths[i], actor=LEAD)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(dv.version for dv in results.values()) == list(range(1, threads_n + 1))
    for i, dv in results.items():  # each version holds the data of the call that got it
        assert workspace.datasets.get("shared", dv.version).rows == len(frames[i])
        assert len(workspace.datasets.load("shared", dv.version)) == len(frames[i])
    assert backend.half_written(workspace) == []


def test_a_version_left_half_written_by_a_killed_process_does_not_block_the_next(backend, workspace, tmp_path):
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes(), "v1.csv"), actor=LEAD)
    backend.leave_interrupted_version(workspace, "datasets", "diabetes", 2)
    second = diabetes().head(300)
    dv = workspace.datasets.register("diabetes", write_csv(tmp_path, second, "v2.csv"), actor=LEAD)
    assert (dv.version, dv.rows) == (2, 300)
    pd.testing.assert_frame_equal(workspace.datasets.load("diabetes", 2), second, check_dtype=False)
    assert not any("half-written" in f for f in backend.stored_files(workspace, "datasets"))


def test_a_version_that_is_not_a_number_is_invalid_input(workspace, tmp_path):
    """Locally versions are numbers; Azure allows names (issue 11), so there "two" is one that does not exist."""
    workspace.datasets.register("diabetes", write_csv(tmp_path, diabetes().head(60)), actor=LEAD)
    expected = NotFound if workspace.info.kind == "azure" else InvalidInput
    for call in (lambda: workspace.datasets.get("diabetes", "two"),
                 lambda: workspace.datasets.load("diabetes", "two"),
                 lambda: workspace.datasets.data_tests("diabetes", "two")):
        with pytest.raises(expected):
            call()


# --- the latest passing version, and checking a file without registering it -----------------

def test_a_failing_version_is_registered_but_never_the_latest_passing(with_baseline, workspace):
    assert workspace.datasets.latest_passing("diabetes").version == 1
    broken, _ = with_baseline(diabetes().drop(columns=["age"]))
    assert broken.tests_status == CheckStatus.FAIL
    assert workspace.datasets.get("diabetes").version == 2, "still registered and readable as the newest"
    assert workspace.datasets.latest_passing("diabetes").version == 1
    assert workspace.datasets.latest_passing("diabetes", labelled=True).version == 1


def test_latest_passing_with_labels_skips_a_feature_only_version(with_baseline, workspace):
    features, _ = with_baseline(diabetes().drop(columns=["target"]))
    assert features.tests_status != CheckStatus.FAIL
    assert workspace.datasets.latest_passing("diabetes").version == features.version
    assert workspace.datasets.latest_passing("diabetes", labelled=True).version == 1


def test_latest_passing_is_none_when_every_version_failed_and_not_found_for_an_unknown_name(workspace, tmp_path):
    workspace.datasets.register("tiny", write_csv(tmp_path, diabetes().head(3), "tiny.csv"), actor=LEAD)
    assert workspace.datasets.get("tiny").tests_status == CheckStatus.FAIL
    assert workspace.datasets.latest_passing("tiny") is None
    with pytest.raises(NotFound):
        workspace.datasets.latest_passing("no-such-dataset")


def test_check_tests_a_file_against_the_latest_passing_version_and_writes_nothing(with_baseline, workspace,
                                                                                 tmp_path):
    with_baseline(diabetes().drop(columns=["age"]))  # v2 fails: not the baseline
    versions = [v.ref for v in workspace.datasets.all_versions()]
    audit = len(workspace.audit.audit())

    shifted = diabetes()
    shifted["bmi"] = shifted["bmi"] + 3 * shifted["bmi"].std()
    check = workspace.datasets.check("diabetes", write_csv(tmp_path, shifted, "shifted.csv"))
    assert (check.name, check.source, check.format, check.rows) == ("diabetes", "shifted.csv", "csv", len(shifted))
    assert check.baseline_version == 1
    assert check.status == CheckStatus.FAIL
    [shift] = results_for(list(check.tests), "shift_mean", "bmi")
    assert shift.status == CheckStatus.FAIL and shift.value == pytest.approx(3.0, abs=0.01)
    assert {c.name for c in check.columns} == set(shifted.columns)

    same = workspace.datasets.check("diabetes", write_csv(tmp_path, diabetes(), "same.csv"))
    assert same.status == CheckStatus.PASS and same.baseline_version == 1

    assert [v.ref for v in workspace.datasets.all_versions()] == versions, "nothing registered"
    assert len(workspace.audit.audit()) == audit, "nothing audited"


def test_check_of_a_parquet_file_gives_what_registering_it_gives(with_baseline, workspace, tmp_path):
    frame = diabetes()
    frame.loc[[5, 6], "s1"] = np.nan
    path = tmp_path / "next.parquet"
    frame.to_parquet(path)
    check = workspace.datasets.check("diabetes", path)
    dv = workspace.datasets.register("diabetes", path, actor=LEAD)
    registered = workspace.datasets.data_tests(dv.name, dv.version)
    assert check.format == "parquet"
    assert [(t.check, t.column, t.status) for t in check.tests] == [(t.check, t.column, t.status) for t in registered]


def test_check_refuses_an_unknown_dataset_and_an_unreadable_file(workspace, tmp_path):
    good = write_csv(tmp_path, diabetes(), "good.csv")
    with pytest.raises(NotFound):
        workspace.datasets.check("no-such-dataset", good)
    workspace.datasets.register("diabetes", good, actor=LEAD)
    with pytest.raises(InvalidInput):
        workspace.datasets.check("diabetes", write_text(tmp_path, "bad.csv", b"\x00\x01\x02 not a table"))
    with pytest.raises(InvalidInput):
        workspace.datasets.check("diabetes", tmp_path / "missing.csv")
    assert [v.version for v in workspace.datasets.versions("diabetes")] == [1]
