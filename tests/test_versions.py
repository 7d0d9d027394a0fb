"""Asset versions as Azure keeps them (text), and where a data asset's data is readable from."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from services.azure.paths import data_unreadable
from services.errors import InvalidInput
from services.versions import describe, newest_first, next_number, order_key, parse_version, same


def at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=timezone.utc)


def test_text_stays_text_and_numbers_become_numbers():
    assert parse_version("3") == 3 and parse_version(" 12 ") == 12 and parse_version(7) == 7
    assert parse_version("foo") == "foo" and parse_version("2024-01-01") == "2024-01-01"
    for bad in ("", "  ", None, True):
        with pytest.raises(InvalidInput):
            parse_version(bad)


def test_numbers_in_numeric_order_then_text_by_creation_time():
    items = [SimpleNamespace(version=v, created_at=c) for v, c in
             [(10, at(1)), ("2024-01-01", at(9)), (2, at(5)), ("foo", at(3))]]
    assert [i.version for i in newest_first(items)] == ["2024-01-01", "foo", 10, 2]
    assert order_key(2) < order_key(10) < order_key("a", at(1)) < order_key("b", at(2))


def test_helpers_for_lookups_and_new_versions():
    assert same(3, "3") and not same(3, "foo") and not same(None, None)
    assert next_number([1, "foo", 4]) == 5 and next_number(["foo"]) == 1
    assert describe([1, 2, 3, 4, 5]) == "1 to 5" and describe([1, 3, "foo"]) == "1, 3, foo" and describe([]) == "none"


@pytest.mark.parametrize("kind, path, fmt, readable", [
    ("uri_file", "azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/d/paths/a/b.csv", "csv", True),
    ("uri_file", "azureml://datastores/workspaceblobstore/paths/x/data.parquet", "parquet", True),
    ("uri_file", "https://example.blob.core.windows.net/c/data.csv", "csv", False),
    ("uri_file", "wasbs://c@account.blob.core.windows.net/data.csv", "csv", False),
    ("uri_file", "abfss://fs@account.dfs.core.windows.net/data.csv", "csv", False),
    ("uri_file", "azureml://datastores/workspaceblobstore/paths/x/train.py", "py", False),
    ("uri_folder", "azureml://datastores/workspaceblobstore/paths/x/", "uri_folder", False),
    ("mltable", "azureml://datastores/workspaceblobstore/paths/x/", "mltable", False),
])
def test_what_tollgate_can_read_and_why_not(kind, path, fmt, readable):
    reason = data_unreadable(kind, path, fmt)
    assert (reason == "") == readable
    if not readable:
        assert "Tollgate reads one CSV or Parquet file" in reason


def test_overview_orders_text_and_number_versions_without_failing():
    from services.entities import CheckStatus, ModelVersion, ReleaseState, Stage
    from ui.overview_view import decision_queue, latest_failing_datasets

    def mv(version, day, aliases=()):
        return ModelVersion(name="m", version=version, created_at=at(day), created_by="", description="", estimator="",
                            metrics={}, run_id=None, dataset=None, dataset_version=None, tags={}, aliases=aliases)
    waiting, more = decision_queue([mv(1, 1, ("champion",)), mv(2, 2), mv("foo", 3)],
                                   [ReleaseState("m", v, Stage.AWAITING_APPROVAL) for v in (2, "foo")])
    assert [v.version for v in waiting] == ["foo", 2] and more == 0
    dv = SimpleNamespace(name="d", version="foo", created_at=at(3), tests_status=CheckStatus.FAIL)
    assert latest_failing_datasets([SimpleNamespace(name="d", version=1, created_at=at(1),
                                                    tests_status=CheckStatus.PASS), dv]) == [dv]
