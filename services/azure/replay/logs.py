"""Log Analytics answers: result tables and partial results."""
from __future__ import annotations

from typing import Any


def logs_table(name: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> dict:
    """A Log Analytics result table: ``columns`` as (name, type), e.g. ("TimeGenerated", "datetime")."""
    return {"name": name, "columns": [{"name": n, "type": t} for n, t in columns], "rows": rows}


def partial_result(tables: list[dict], message: str = "Query partially succeeded") -> dict:
    """A Log Analytics answer with data *and* an error: ``LogsQueryClient`` returns it as partial."""
    return {"tables": tables, "error": {"code": "PartialError", "message": message,
                                        "details": [{"code": "EngineError", "message": message}]}}


