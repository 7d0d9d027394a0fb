"""Shared fixtures.

``demo_template`` seeds one demo workspace per test session (shared by xdist
workers through a file lock); ``demo_ws_path`` gives each test module its own
copy, so tests can write freely. ``empty_ws`` is a fresh empty workspace.
"""
from __future__ import annotations

import fcntl
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.local.workspace import LocalWorkspace  # noqa: E402


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every xdist worker
    target = shared / "demo-template"
    with open(shared / "demo-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".seeded").exists():
            shutil.rmtree(target, ignore_errors=True)
            from services.demo import seed_demo
            ws = LocalWorkspace(target)
            seed_demo(ws, progress=lambda m: None, deploy_endpoints=False)
            ws.close()
            (target / ".seeded").touch()
    return target


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "*.pid", ".seeded"))
    return dst


@pytest.fixture(scope="module")
def demo_ws_path(demo_template, tmp_path_factory) -> Path:
    return copy_workspace(demo_template, tmp_path_factory.mktemp("demo") / "ws")


@pytest.fixture(scope="module")
def demo_ws(demo_ws_path):
    ws = LocalWorkspace(demo_ws_path)
    yield ws
    ws.close()


@pytest.fixture
def empty_ws(tmp_path):
    ws = LocalWorkspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def demo_env(demo_ws_path, monkeypatch):
    """Point TOLLGATE_WORKSPACE at this module's demo copy (for AppTest and the CLI)."""
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{demo_ws_path}")
    return demo_ws_path


@pytest.fixture(autouse=True)
def _pages_come_from_st_navigation(monkeypatch):
    """Run AppTests as the console runs (``ui/serve.py``): app.py's ``st.navigation``
    declares the pages, so every rerun goes through app.py, never pages/ alone."""
    from streamlit.runtime import pages_manager
    original = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False
    monkeypatch.setattr(pages_manager.PagesManager, "__init__", init)
