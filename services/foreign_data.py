"""Testing on demand a dataset version that Tollgate did not register.

Tollgate profiles and tests every version it registers and keeps the outcome with the version.
A version registered by another tool has neither; when its data is readable (one CSV or Parquet
file) the same profile and data tests can be run on demand, against the dataset's newest version
that passed its own tests (as a registration would). The outcome is returned, not kept: Azure ML
makes a version's properties immutable, and re-registering the data is what makes it a version
Tollgate can train on.
"""
from __future__ import annotations

from dataclasses import replace

from .datatests import profile, run_data_tests
from .entities import CheckStatus, DatasetVersion, DataTestResult
from .errors import InvalidInput
from .policy import Policy
from .protocols import DatasetStore
from .versions import same


def test_on_demand(datasets: DatasetStore, policy: Policy, dv: DatasetVersion) -> tuple[DatasetVersion, list[DataTestResult]]:
    """``dv`` profiled and tested against its baseline, as a registration would have done."""
    if dv.unreadable:
        raise InvalidInput(f"cannot test {dv.ref}: {dv.unreadable}")
    frame = datasets.load(dv.name, dv.version)
    baseline = next((v for v in datasets.versions(dv.name) if v.tested and not v.unreadable
                     and v.tests_status != CheckStatus.FAIL and not same(v.version, dv.version)), None)
    base_frame = datasets.load(baseline.name, baseline.version) if baseline else None
    tests = run_data_tests(frame, base_frame, policy.data_tests, target=policy.target)
    tested = replace(dv, rows=len(frame), columns=profile(frame), tests_status=CheckStatus.worst(t.status for t in tests),
                     baseline_version=baseline.version if baseline else None)
    return tested, tests
