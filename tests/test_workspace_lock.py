"""The workspace file under a long write: reads go on, a writer gets a clear error (exit 2).

Another process holds ``tollgate.db``'s write lock (``BEGIN IMMEDIATE``, as a long
write would) while the CLI runs as a user would run it, in its own process.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from services.local.workspace import LocalWorkspace

ROOT = Path(__file__).resolve().parent.parent
LOCK_TIMEOUT_S = 1.5


@pytest.fixture
def workspace(tmp_path) -> Path:
    LocalWorkspace(tmp_path / "ws").close()  # created and migrated
    return tmp_path / "ws"


@contextmanager
def write_lock_held(root: Path):
    """The write lock of the workspace database, held by another connection until the block ends."""
    conn = sqlite3.connect(root / "tollgate.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def tollgate(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOLLGATE_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S)}
    return subprocess.run([sys.executable, str(ROOT / "tollgate.py"), "--workspace", f"local://{root}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_reads_do_not_wait_for_a_writer(workspace):
    with write_lock_held(workspace):
        done = tollgate(workspace, "status", "--json")
    # had it needed the lock, it would have given up after LOCK_TIMEOUT_S with exit 2
    assert done.returncode == 0, done.stderr
    assert '"datasets": []' in done.stdout


def test_a_write_past_the_lock_timeout_exits_2_with_the_reason_and_writes_nothing(workspace, tmp_path):
    csv = tmp_path / "patients.csv"
    pd.DataFrame({"age": range(60), "target": range(60)}).to_csv(csv, index=False)
    with write_lock_held(workspace):
        done = tollgate(workspace, "--as", "lead@contoso.com", "register-dataset", "patients", str(csv))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"the workspace database {workspace / 'tollgate.db'} is locked" in done.stderr
    assert "hint:" in done.stderr and "TOLLGATE_LOCK_TIMEOUT_S" in done.stderr
    # nothing half-written: no version, no leftover folder; and the same command works once the lock is gone
    ws = LocalWorkspace(workspace)
    try:
        assert ws.datasets.names() == []
        assert not any((workspace / "datasets").glob("patients/*"))
    finally:
        ws.close()
    done = tollgate(workspace, "--as", "lead@contoso.com", "register-dataset", "patients", str(csv))
    assert done.returncode == 0, done.stderr
    assert "registered patients:1: 60 rows" in done.stdout


def _open_fresh(folder: str) -> str | None:
    from services.local.telemetry_store import open_telemetry
    try:
        db = open_telemetry(Path(folder))
        db.one("SELECT COUNT(*) FROM requests")
        db.close()
        return None
    except Exception as e:  # noqa: BLE001 - the test reports what each process met
        return repr(e)


def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path):
    """A gateway and the supervisor open a new telemetry file together: SQLite answers 'locked' at once
    to the switch to WAL (no busy handler there); opening retries instead of failing. Before the retry,
    12 of 40 such rounds had a process fail with WorkspaceLocked."""
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round_ in range(8):
            folder = tmp_path / f"r{round_}"
            folder.mkdir()
            assert [e for e in pool.map(_open_fresh, [str(folder)] * 4) if e] == []
