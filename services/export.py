"""Files we write for people to open elsewhere (CSV exports: the audit trail from the console and
the CLI). A spreadsheet reads a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return as a formula (``=HYPERLINK(…)``, DDE): every text cell that starts so is prefixed with a
single quote, as OWASP's "CSV Injection" page recommends. Numbers stay numbers.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a spreadsheet will show it, never as a formula it would run."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return "" if value is None else value


def write_csv(out, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write ``rows`` under ``header`` to the text stream ``out``, every cell through ``csv_cell``."""
    w = csv.writer(out)
    w.writerow([csv_cell(h) for h in header])
    for row in rows:
        w.writerow([csv_cell(v) for v in row])


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """The CSV file (UTF-8) of ``rows`` under ``header``: what a download button serves."""
    buf = io.StringIO()
    write_csv(buf, header, rows)
    return buf.getvalue().encode("utf-8")


__all__ = ["FORMULA_PREFIXES", "csv_cell", "csv_bytes", "write_csv"]
