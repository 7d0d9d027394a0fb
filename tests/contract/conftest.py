"""The behaviour suite's fixtures: one set of tests, every backend.

Tests talk to a workspace only through the Protocols (``ws.datasets``,
``ws.jobs``, ``ws.models``, ``ws.evaluation``, ``ws.releases``). The few things
that need to reach *under* them — corrupting an artifact, killing a job process,
looking for half-written files — are hooks of the backend object, so a new
backend (Azure with a replay transport) adds a class here, not new tests. A hook
a backend cannot honour calls ``pytest.skip``.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import uuid
from pathlib import Path

import pytest

from services.entities import RunFilter, RunStatus
from services.errors import Conflict
from services.local.jobs import _alive
from services.local.workspace import LocalWorkspace
from services.policy import Policy
from tests.conftest import copy_workspace

BACKENDS = ["local"]


class LocalBackend:
    """The embedded workspace: a folder with SQLite, files and runner subprocesses."""

    name = "local"

    def __init__(self, base: Path, demo_template: Path):
        self.base, self.demo_template = base, demo_template
        self._open: list[LocalWorkspace] = []

    # --- workspaces -------------------------------------------------------------

    def _new_root(self, label: str) -> Path:
        return self.base / f"{label}-{uuid.uuid4().hex[:8]}"

    def empty(self, policy_toml: str | None = None) -> LocalWorkspace:
        """A fresh workspace; ``policy_toml`` is its policy file (job processes read it too)."""
        root = self._new_root("empty")
        root.mkdir(parents=True)
        if policy_toml is not None:
            (root / "tollgate.toml").write_text(policy_toml)
        return self._track(LocalWorkspace(root))

    def demo(self, policy_toml: str | None = None) -> LocalWorkspace:
        """A private copy of the seeded demo: diabetes v1/v2, 5 completed runs, champion v1."""
        root = copy_workspace(self.demo_template, self._new_root("demo"))
        if policy_toml is not None:
            (root / "tollgate.toml").write_text(policy_toml)
        return self._track(LocalWorkspace(root))

    def with_policy(self, ws: LocalWorkspace, policy: Policy) -> LocalWorkspace:
        """The same workspace seen under another policy (in this process)."""
        return self._track(LocalWorkspace(ws.root, policy=policy))

    def _track(self, ws: LocalWorkspace) -> LocalWorkspace:
        self._open.append(ws)
        return ws

    def release(self, ws) -> None:
        """Stop whatever the workspace still runs, then close it."""
        if ws in self._open:
            self._open.remove(ws)
        for run in ws.jobs.list(RunFilter(status=(RunStatus.QUEUED, RunStatus.RUNNING))):
            try:
                ws.jobs.cancel(run.id, actor="test-teardown")
            except Conflict:
                pass
        ws.close()

    def close(self) -> None:
        for ws in list(self._open):
            self.release(ws)

    # --- hooks under the Protocols -----------------------------------------------

    def _pid(self, ws: LocalWorkspace, run_id: str) -> int | None:
        return ws.db.one("SELECT pid FROM runs WHERE id = ?", (run_id,))[0]

    def kill_runner(self, ws: LocalWorkspace, run_id: str) -> None:
        """Kill the run's job process without warning (kill -9: no handler runs)."""
        os.killpg(self._pid(ws, run_id), signal.SIGKILL)

    def runner_alive(self, ws: LocalWorkspace, run_id: str) -> bool:
        return _alive(self._pid(ws, run_id))

    def corrupt_model(self, ws: LocalWorkspace, name: str, version: int) -> None:
        (Path(ws.models.get(name, version).uri) / "model.pkl").write_bytes(b"this is not a pickle")

    def half_written(self, ws: LocalWorkspace) -> list[str]:
        """Staging folders left behind by a registration (there must be none)."""
        return [str(p.relative_to(ws.root)) for p in ws.root.rglob(".incoming-*")]

    def leave_interrupted_version(self, ws: LocalWorkspace, kind: str, name: str, version: int) -> bool:
        """What a process killed between moving a version's files in place and committing leaves:
        the folder of a version that no record owns. Used inside a shared fixture, so a backend
        without such a state returns False instead of skipping."""
        folder = ws.root / kind / name / str(version)
        folder.mkdir(parents=True)
        (folder / "half-written").write_text("from a registration that never committed")
        return True

    def stored_files(self, ws: LocalWorkspace, kind: str) -> list[str]:
        """Every file under the ``kind`` folder (datasets, models, runs)."""
        folder = ws.root / kind
        return sorted(str(p.relative_to(ws.root)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def tamper_audit(self, ws: LocalWorkspace) -> list[str]:
        """Try to rewrite and to delete audit records behind the service; the errors."""
        errors = []
        conn = sqlite3.connect(ws.root / "tollgate.db")
        try:
            for sql in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
                try:
                    conn.execute(sql)
                    conn.commit()
                except sqlite3.DatabaseError as e:
                    conn.rollback()
                    errors.append(str(e))
        finally:
            conn.close()
        return errors


def make_backend(name: str, base: Path, demo_template: Path):
    if name == "local":
        return LocalBackend(base, demo_template)
    raise ValueError(f"no contract backend {name!r}")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory, demo_template):
    b = make_backend(request.param, tmp_path_factory.mktemp(f"contract-{request.param}"), demo_template)
    yield b
    b.close()


@pytest.fixture
def workspace(backend):
    """A fresh, empty workspace for one test."""
    ws = backend.empty()
    yield ws
    backend.release(ws)


@pytest.fixture(scope="module")
def demo(backend):
    """This module's copy of the seeded demo workspace (tests may add to it, not undo it)."""
    return backend.demo()
