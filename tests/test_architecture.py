"""The layering rules, checked on the source: thin pages, a streamlit-free service
layer, and a pipeline that ships alone as job code."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved,
    imports inside functions included)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[:len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def offences(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``folder`` is a folder (every module under it) or one module's path."""
    target = ROOT / folder
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return [f"{path.relative_to(ROOT)} imports {name}"
            for path in files for name in sorted(imported_modules(path))
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


# ui/ is the console's own layer: it reads the services (and streamlit), never a backend, an SDK,
# the network or the training code (the estimators come through services.training).
UI_FORBIDDEN = ("sqlite3", "azure", "requests", "httpx", "pipeline", "services.local", "services.azure")
# the CLI is a client of the services, as the console is: no backend internals, no streamlit
CLI_FORBIDDEN = ("streamlit", "sqlite3", "azure", "services.local", "services.azure")


def test_pages_do_not_reach_past_the_services():
    assert offences("pages", ("sqlite3", "azure", "requests", "httpx", "services.local")) == []


def test_services_never_import_streamlit():
    assert offences("services", ("streamlit",)) == []


def test_the_pipeline_does_not_import_the_services():
    assert offences("pipeline", ("services", "streamlit")) == []


def test_the_azure_backend_does_not_reach_into_the_local_one():
    # fixtures/build.py is the tool that records the replay fixtures from a seeded local workspace
    assert [o for o in offences("services/azure", ("services.local",))
            if not o.startswith("services/azure/fixtures/")] == []


def test_the_console_layer_reads_only_the_services():
    assert offences("ui", UI_FORBIDDEN) == []


def test_the_cli_reaches_only_the_services():
    assert offences("cli", CLI_FORBIDDEN) + offences("tollgate.py", CLI_FORBIDDEN) == []


@pytest.mark.parametrize("source, module, expected", [
    ("import sqlite3\n", "pages/x.py", "sqlite3"),
    ("from azure.ai.ml import MLClient\n", "pages/x.py", "azure.ai.ml"),
    ("def f():\n    import httpx\n", "pages/x.py", "httpx"),
    ("from services.local import jobs\n", "pages/x.py", "services.local"),
    ("from ..local.db import Database\n", "services/local/x.py", "services.local.db"),
    ("from . import audit\n", "services/local/x.py", "services.local.audit"),
    ("from .. import errors\n", "services/local/x.py", "services.errors"),
])
def test_the_import_scanner_sees_every_form(tmp_path, source, module, expected):
    path = tmp_path / module
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert expected in imported_modules(path, root=tmp_path)
