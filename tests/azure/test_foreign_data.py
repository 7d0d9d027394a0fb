"""A data version registered by another tool (no Tollgate properties, a text version) over a
readable CSV: listed as "not tested", and tested on demand against the dataset's last good version."""
from __future__ import annotations

import copy

from services.foreign_data import test_on_demand as check


def test_a_foreign_readable_version_is_tested_on_demand(ws):
    v2 = next(r for r in ws.replay.arm.resources.values() if r["id"].lower().endswith("/data/diabetes/versions/2"))
    foreign = copy.deepcopy(v2)
    foreign["id"] = v2["id"][: -len("/2")] + "/external-2026"
    foreign["name"], foreign["properties"]["properties"] = "external-2026", {}
    ws.replay.arm.put_raw(foreign["id"], foreign)

    dv = ws.datasets.get("diabetes", "external-2026")
    assert dv.version == "external-2026" and not dv.tested and dv.unreadable == "" and dv.columns == ()
    tested, tests = check(ws.datasets, ws.policy, dv)
    assert tested.rows == len(ws.datasets.load("diabetes", 2)) and tested.columns and tests
    assert tested.baseline_version == 2  # the newest version that passed its own tests, not itself
    assert not tested.tested  # shown, not kept: the version's properties are immutable on Azure
