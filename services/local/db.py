"""The local workspace's SQLite file: connections, transactions, migrations.

Datasette's habits: WAL so readers never wait for the writer, short transactions,
``BEGIN IMMEDIATE`` for writes (a writer takes the lock up front instead of
failing half-way), parameterised SQL only, and a schema version with forward
migrations applied at open — under the write lock only when there is one to apply,
so that opening a workspace to read never waits for a writer.

A writer waits at most ``TOLLGATE_LOCK_TIMEOUT_S`` seconds (default 30) for the lock,
then gets ``WorkspaceLocked``: a ``BackendUnavailable`` naming the file (the CLI exits 2).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import BackendUnavailable, InvalidInput

# Each entry migrates from version i to i+1. Append, never edit.
MIGRATIONS: list[str] = [
    # 1: datasets, runs, metrics, models, audit events
    """
    CREATE TABLE datasets (  -- paths are relative to the workspace folder
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        format TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        rows INTEGER NOT NULL,
        profile_json TEXT NOT NULL,
        baseline_version INTEGER,
        tests_status TEXT NOT NULL,
        tags_json TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (name, version)
    );
    CREATE TABLE data_tests (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        check_name TEXT NOT NULL,
        column_name TEXT,
        status TEXT NOT NULL,
        detail TEXT NOT NULL,
        value REAL,
        threshold REAL,
        PRIMARY KEY (name, version, seq),
        FOREIGN KEY (name, version) REFERENCES datasets(name, version)
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        experiment TEXT NOT NULL,
        display_name TEXT NOT NULL,
        status TEXT NOT NULL,
        estimator TEXT NOT NULL,
        params_json TEXT NOT NULL,
        metrics_json TEXT NOT NULL DEFAULT '{}',
        dataset TEXT NOT NULL,
        dataset_version INTEGER,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        pid INTEGER,
        step TEXT,
        error TEXT,
        gate_json TEXT,
        register INTEGER NOT NULL DEFAULT 1,
        model_name TEXT,
        model_version INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_created ON runs(created_at DESC);
    CREATE INDEX runs_status ON runs(status, created_at DESC);
    CREATE INDEX runs_experiment ON runs(experiment, created_at DESC);
    CREATE INDEX runs_dataset ON runs(dataset, created_at DESC);
    CREATE TABLE metric_history (
        run_id TEXT NOT NULL REFERENCES runs(id),
        key TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX metric_history_run ON metric_history(run_id, key, step);
    CREATE TABLE models (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        estimator TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        run_id TEXT REFERENCES runs(id),
        dataset TEXT,
        dataset_version INTEGER,
        path TEXT NOT NULL,
        tags_json TEXT NOT NULL DEFAULT '{}',
        archived INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX models_created ON models(created_at DESC);
    CREATE TABLE model_aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES models(name, version)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before_json TEXT,
        after_json TEXT,
        comment TEXT NOT NULL DEFAULT ''
    );
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    """,
    # 2: online endpoints, deployments, release state, smoke tests
    """
    CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        port INTEGER,
        primary_key TEXT NOT NULL,
        secondary_key TEXT NOT NULL,
        config_version INTEGER NOT NULL DEFAULT 0,
        gateway_pid INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE TABLE deployments (
        endpoint TEXT NOT NULL REFERENCES endpoints(name),
        name TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version INTEGER NOT NULL,
        traffic INTEGER NOT NULL DEFAULT 0,
        desired TEXT NOT NULL DEFAULT 'running',
        state TEXT NOT NULL DEFAULT 'starting',
        port INTEGER,
        pid INTEGER,
        restarts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (endpoint, name),
        FOREIGN KEY (model_name, model_version) REFERENCES models(name, version)
    );
    CREATE TABLE releases (
        model_name TEXT NOT NULL,
        model_version INTEGER NOT NULL,
        stage TEXT NOT NULL,
        deployed_by TEXT,
        smoke_test_id INTEGER,
        decided_by TEXT,
        decision_comment TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (model_name, model_version),
        FOREIGN KEY (model_name, model_version) REFERENCES models(name, version)
    );
    CREATE TABLE smoke_tests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        deployment TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version INTEGER NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        passed INTEGER NOT NULL,
        summary TEXT NOT NULL,
        cases_json TEXT NOT NULL
    );
    CREATE TABLE endpoint_ops (
        endpoint TEXT PRIMARY KEY,
        busy_op TEXT,
        busy_since REAL,
        busy_by TEXT
    );
    """,
    # 3: retraining triggers: cron schedules, "retrain on new dataset version", and their firings.
    # A firing row is inserted in the BEGIN IMMEDIATE transaction that decides to fire; the UNIQUE
    # constraints make a second decision for the same occurrence / version impossible.
    """
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: (schedule_id, due_at) stays unique forever
        dataset TEXT NOT NULL,
        estimator TEXT NOT NULL,
        params_json TEXT NOT NULL DEFAULT '{}',
        cron TEXT NOT NULL,                    -- five fields, UTC
        enabled INTEGER NOT NULL DEFAULT 1,
        active_since TEXT NOT NULL,            -- occurrences before this never fire (creation, last enable)
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        removed_at TEXT,
        removed_by TEXT
    );
    CREATE TABLE dataset_triggers (
        dataset TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        estimator TEXT NOT NULL,
        params_json TEXT NOT NULL DEFAULT '{}',
        since_version INTEGER NOT NULL,        -- versions after this one fire
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE firings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('schedule', 'dataset')),
        schedule_id INTEGER REFERENCES schedules(id),
        due_at TEXT,                           -- the cron occurrence, UTC, '%Y-%m-%dT%H:%M:%S+00:00'
        dataset TEXT NOT NULL,
        dataset_version INTEGER,
        estimator TEXT NOT NULL,
        params_json TEXT NOT NULL,
        skipped INTEGER NOT NULL DEFAULT 0,    -- missed occurrences folded into this one
        claimed_at TEXT NOT NULL,
        claimed_pid INTEGER NOT NULL,          -- the process that decided to fire (recovery after a crash)
        run_id TEXT REFERENCES runs(id),
        submitted_at TEXT,
        error TEXT,
        UNIQUE (schedule_id, due_at)
    );
    CREATE UNIQUE INDEX firings_dataset_version ON firings(dataset, dataset_version) WHERE kind = 'dataset';
    CREATE INDEX firings_pending ON firings(id) WHERE run_id IS NULL AND error IS NULL;
    """,
    # 4: notifications (a transactional outbox and its deliveries per webhook) and canary rollouts.
    # An outbox row is written in the transaction of the change it announces; the supervisor's
    # deliverer fans it out to the webhooks of the policy and POSTs with retries.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        model TEXT,
        endpoint TEXT,
        summary TEXT NOT NULL,
        details_json TEXT NOT NULL DEFAULT '{}',
        dedupe_key TEXT UNIQUE,               -- events found by scanning are written once
        fanned_out INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_pending ON outbox(id) WHERE fanned_out = 0;
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id INTEGER NOT NULL REFERENCES outbox(id),
        webhook TEXT NOT NULL,                -- its name in [[notifications.webhooks]]
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,        -- epoch seconds
        last_status INTEGER,                  -- HTTP status of the last attempt; 0: no answer
        last_error TEXT,
        delivered_at TEXT,
        UNIQUE (event_id, webhook)
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE state = 'pending';
    CREATE TABLE notify_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version INTEGER NOT NULL,
        canary_deployment TEXT NOT NULL,
        stable_deployment TEXT NOT NULL,
        stable_model TEXT NOT NULL,           -- "name:version"
        steps_json TEXT NOT NULL,
        policy_json TEXT NOT NULL,            -- the [canary] rules it started with
        step_index INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'succeeded', 'rolled_back', 'aborted')),
        started_at TEXT NOT NULL,
        started_by TEXT NOT NULL,
        step_started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        ended_at TEXT,
        reason TEXT NOT NULL DEFAULT '',
        analysis_json TEXT,                   -- the latest analysis
        history_json TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX rollouts_active ON rollouts(endpoint) WHERE state IN ('running', 'paused');
    """,
    # 5: the workspace's identity, for pid files: a process is this workspace's only if its pid file
    # names this folder and this id (services.local.processes)
    """
    CREATE TABLE workspace_identity (id TEXT NOT NULL);
    INSERT INTO workspace_identity (id) VALUES (lower(hex(randomblob(16))));
    """,
    # 6: runs searched by estimator (RunFilter.estimators), newest first, without walking every run
    """
    CREATE INDEX IF NOT EXISTS runs_estimator ON runs(estimator, created_at DESC);
    """,
    # 7: the champion a version was approved against (a promote warns when another serves by then),
    # and the smoke test's latency measurement (new and live deployment, p50/p95)
    lambda conn: (_add_column(conn, "releases", "approved_against", "TEXT"),
                  _add_column(conn, "smoke_tests", "latency_json", "TEXT")),
    # 8: a run's provenance (who asked, code version, environment), JSON
    lambda conn: _add_column(conn, "runs", "provenance_json", "TEXT"),
]


def _add_column(conn: sqlite3.Connection, table: str, column: str, decl: str) -> None:
    """``ALTER TABLE … ADD COLUMN`` unless the column is there (SQLite has no IF NOT EXISTS for
    it): a migration that a branch numbered differently may already have applied."""
    if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


SCHEMA_VERSION = len(MIGRATIONS)
DEFAULT_LOCK_TIMEOUT_S = 30.0


def lock_timeout_s() -> float:
    """How long a writer waits for the write lock (``TOLLGATE_LOCK_TIMEOUT_S``)."""
    try:
        value = float(os.environ.get("TOLLGATE_LOCK_TIMEOUT_S", DEFAULT_LOCK_TIMEOUT_S))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT_S
    return value if 0 < value < 86_400 else DEFAULT_LOCK_TIMEOUT_S


class WorkspaceLocked(BackendUnavailable, sqlite3.OperationalError):
    """Another process held the write lock longer than the timeout. Also an
    ``sqlite3.OperationalError``, so loops that retry a locked file keep doing so."""


def workspace_id(db: "Database") -> str:
    """The id this workspace's database was created with (migration 5)."""
    return db.one("SELECT id FROM workspace_identity")[0]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@contextmanager
def _numbers_in_range() -> Iterator[None]:
    """A number no row can hold (a version of 20 digits) is bad input, not a crash."""
    try:
        yield
    except OverflowError:
        raise InvalidInput("a number is out of range (at most 2^63−1)") from None


def _switch_to_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the file in WAL mode once. The switch needs the file to itself and SQLite answers "locked" at
    once, without its busy handler, while another connection opens it too: retry until the timeout."""
    deadline = time.monotonic() + timeout_s
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as e:
            if not _is_locked(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class Database:
    """One SQLite file; a connection per thread (Streamlit serves sessions from threads)."""

    def __init__(self, path: Path, migrations: list | None = None):
        """``migrations``: SQL scripts, or callables taking the connection (data migrations)."""
        self.path = Path(path)
        self.migrations = MIGRATIONS if migrations is None else migrations
        self._local = threading.local()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        timeout_s = lock_timeout_s()
        try:
            conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            _switch_to_wal(conn, timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as e:
            raise self._locked(e) if _is_locked(e) else \
                BackendUnavailable(f"cannot open the workspace database {self.path}: {e}") from e
        except sqlite3.Error as e:
            raise BackendUnavailable(f"cannot open the workspace database {self.path}: {e}") from e
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with _numbers_in_range():
            return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        with _numbers_in_range():
            return self.conn.execute(sql, params).fetchone()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (``BEGIN IMMEDIATE``)."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._locked(e) if _is_locked(e) else e
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _locked(self, error: sqlite3.OperationalError) -> WorkspaceLocked:
        return WorkspaceLocked(
            f"the workspace database {self.path} is locked: another process has been writing to it "
            f"for more than {lock_timeout_s():g} s ({error})",
            hint="Try again in a moment. If it stays locked, look for a stuck Tollgate process "
                 f"(e.g. `fuser {self.path}`); TOLLGATE_LOCK_TIMEOUT_S sets how long to wait.")

    def _migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        latest = len(self.migrations)
        if self._schema_version() == latest:
            return  # the common case: a read, no lock
        with self.write() as conn:
            current = self._schema_version()  # again under the lock: another process may have migrated
            if current > latest:
                raise BackendUnavailable(
                    f"{self.path} has schema version {current}, newer than this Tollgate ({latest})",
                    hint="Upgrade Tollgate, or point TOLLGATE_WORKSPACE at another folder.")
            for version in range(current, latest):
                migration = self.migrations[version]
                if callable(migration):  # a data migration that needs Python, in the same transaction
                    migration(conn)
                else:
                    for statement in _split_sql(migration):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    def _schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _is_locked(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error)  # "database is locked" after busy_timeout


def _split_sql(script: str) -> list[str]:
    """Statements of a migration, keeping trigger bodies whole (``executescript`` would commit)."""
    statements, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            buf = []
    if "\n".join(buf).strip():
        statements.append("\n".join(buf).strip())
    return statements
