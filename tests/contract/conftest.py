"""The behaviour suite's fixtures: one set of tests, every backend.

Tests talk to a workspace only through the Protocols (``ws.datasets``,
``ws.jobs``, ``ws.models``, ``ws.evaluation``, ``ws.releases``). The few things
that need to reach *under* them — corrupting an artifact, killing a job process,
looking for half-written files — are hooks of the backend object, so a new
backend (Azure with a replay transport) adds a class here, not new tests. A hook
a backend cannot honour calls ``pytest.skip``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import uuid
from pathlib import Path

import pytest

from services.entities import RunFilter, RunStatus
from services.errors import Conflict
from services.local.jobs import _alive
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from services.policy import Policy
from tests.conftest import copy_workspace

BACKENDS = ["local", "azure"]


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
        """Stop whatever the workspace still runs (runs, endpoints), then close it."""
        if ws in self._open:
            self._open.remove(ws)
        for run in ws.jobs.list(RunFilter(status=(RunStatus.QUEUED, RunStatus.RUNNING))):
            try:
                ws.jobs.cancel(run.id, actor=SYSTEM_ACTOR)  # the harness cleaning up, whatever the policy
            except Conflict:
                pass
        ws.endpoints.down(SYSTEM_ACTOR)
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

    # --- the release workflow's hooks ------------------------------------------------------

    def serve_champion(self, ws: LocalWorkspace) -> None:
        """Production serving the champion, as the demo seeding leaves it (real processes)."""
        champion = ws.models.champion(ws.policy.model_name)
        ws.releases.deploy(champion.name, champion.version, ws.policy.endpoints.production, SYSTEM_ACTOR)

    def slow_version(self, ws: LocalWorkspace, base: int, work: Path, delay_s: float) -> int:
        """A version that answers ``delay_s`` slower when it serves: a model that is slow itself."""
        from tests.delivery.faulty_model import register_slow
        return register_slow(ws, ws.policy.model_name, base, work, delay_s)

    def slow_down(self, ws, env: str, deployment: str, delay_s: float) -> None:
        """Nothing to do: the slow version's model is slow wherever it serves."""

    def archive_outside_tollgate(self, ws, name: str, version: int) -> None:
        """What an archive made outside Tollgate leaves (Azure: the portal): the version archived
        whatever its release stage."""
        ws.models._set_archived(ws.models.get(name, version), True, "portal-user@contoso.com", role="")

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


# --- Azure: the replayed demo workspace through the real SDKs ----------------------------

TRAINING = "training jobs run on Azure ML compute; the replay records the submitted job but runs nothing"
PROCESSES = "Azure ML jobs are not processes on this machine: there is nothing to kill or to queue locally"


class AzureBackend:
    """The Azure ML adapter on ``ReplayTransport`` (``azure+replay://``): the demo fixtures of
    ``services/azure/fixtures`` for ``demo()``, a workspace with only its datastore and compute
    for ``empty()``. ``unsupported`` names the tests that need Azure to *run* something; they
    are skipped with the reason (``pytest_collection_modifyitems`` below)."""

    name = "azure"
    unsupported = {
        "test_submit_returns_at_once_with_a_queued_run": TRAINING,
        "test_completed_run_has_metrics_history_log_times_and_data": TRAINING,
        "test_latest_dataset_version_is_recorded_on_the_run": TRAINING,
        "test_a_candidate_that_beats_the_champion_is_registered_with_lineage": TRAINING,
        "test_a_model_version_left_half_written_does_not_block_registration": TRAINING,
        "test_a_candidate_that_does_not_beat_the_champion_is_completed_but_not_registered": TRAINING,
        "test_register_false_evaluates_but_never_registers": TRAINING,
        "test_training_on_data_that_fails_its_tests_fails_with_the_reason": TRAINING,
        "test_cancel_a_running_run_stops_its_process": TRAINING,
        "test_list_is_newest_first_and_limit_takes_the_newest": TRAINING + " (it lists the runs it trained)",
        "test_filter_by_experiment_status_and_dataset": TRAINING + " (it filters the runs it trained)",
        "test_filter_by_creation_time_in_any_timezone": TRAINING + " (it filters the runs it trained)",
        "test_runs_beyond_max_concurrent_wait_queued_for_a_slot": PROCESSES,
        "test_a_killed_job_process_is_reconciled_to_failed_and_frees_its_slot": PROCESSES,
        "test_a_run_records_the_training_code_and_packages_it_ran_with":
            "the replayed jobs were recorded with an earlier version of the training code",
    }

    def __init__(self, base: Path):
        from services.azure.replay import FIXTURES
        self.base, self.fixtures = base, FIXTURES
        self._open: list = []

    def _folder(self, label: str, full: bool, policy_toml: str | None) -> Path:
        """A fixture folder: the demo (a copy, so a policy file can sit beside it) or only the
        workspace, its datastore, compute and environment."""
        folder = self.base / f"{label}-{uuid.uuid4().hex[:8]}"
        if full:
            shutil.copytree(self.fixtures, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        else:
            (folder / "arm").mkdir(parents=True)
            shutil.copy(self.fixtures / "workspace.json", folder / "workspace.json")
            shutil.copy(self.fixtures / "arm" / "workspace.json", folder / "arm" / "workspace.json")
            # its Log Analytics workspace has the tables, without a row
            tables = json.loads((self.fixtures / "online" / "loganalytics.json").read_text())
            (folder / "online").mkdir()
            (folder / "online" / "loganalytics.json").write_text(
                json.dumps({view: {**table, "rows": []} for view, table in tables.items()}))
        if policy_toml is not None:
            (folder / "tollgate.toml").write_text(policy_toml)
        return folder

    def _open_ws(self, folder: Path, **kw):
        from services.azure.workspace import open_replay
        ws = open_replay(folder, **kw)
        self._open.append(ws)
        return ws

    def empty(self, policy_toml: str | None = None):
        return self._open_ws(self._folder("empty", False, policy_toml))

    def demo(self, policy_toml: str | None = None):
        return self._open_ws(self._folder("demo", True, policy_toml))

    def with_policy(self, ws, policy: Policy):
        from services.azure.workspace import open_replay
        other = open_replay(None, transport=ws.replay, policy=policy)
        self._open.append(other)
        return other

    def release(self, ws) -> None:
        if ws in self._open:
            self._open.remove(ws)
        ws.close()

    def close(self) -> None:
        for ws in list(self._open):
            self.release(ws)

    # --- hooks under the Protocols ---------------------------------------------------

    def kill_runner(self, ws, run_id: str) -> None:
        pytest.skip(PROCESSES)

    def runner_alive(self, ws, run_id: str) -> bool:
        return False  # no job process on this machine, ever

    def _blob_path(self, ws, uri: str) -> str:
        store, path = ws.blobs.parse(uri)
        container = ws.blobs._container(store).container_name
        return f"/{container}/{path}"

    def corrupt_model(self, ws, name: str, version: int) -> None:
        uri = ws.models.get(name, version).uri.rstrip("/") + "/model.pkl"
        ws.replay.blobs.put(self._blob_path(ws, uri), b"this is not a pickle")

    def _dataset_blobs(self, ws) -> list[str]:
        container = ws.blobs._container(ws.settings.datastore).container_name
        return ws.replay.blobs.list(f"/{container}/tollgate/datasets/")

    def half_written(self, ws) -> list[str]:
        """Uploaded data files that no data asset version points at (there must be none)."""
        referenced = {self._blob_path(ws, v.uri) for v in ws.datasets.all_versions()}
        return [p for p in self._dataset_blobs(ws) if p not in referenced]

    def leave_interrupted_version(self, ws, kind: str, name: str, version: int) -> bool:
        return False  # a version is one PUT: Azure has no half-written version to leave behind

    def stored_files(self, ws, kind: str) -> list[str]:
        container = ws.blobs._container(ws.settings.datastore).container_name
        return ws.replay.blobs.list(f"/{container}/tollgate/{kind}/")

    # --- the release workflow's hooks ------------------------------------------------------

    def serve_champion(self, ws) -> None:
        """The replayed workspace's production serves the champion (v1) already."""
        assert ws.endpoints.get(ws.policy.endpoints.production).live.model_ref == \
            ws.models.champion(ws.policy.model_name).ref

    def slow_version(self, ws, base: int, work: Path, delay_s: float) -> int:
        """The replay makes a deployment slow, not a model (``slow_down``): the base version itself."""
        return base

    def slow_down(self, ws, env: str, deployment: str, delay_s: float) -> None:
        """The deployment answers ``delay_s`` slower (0: as fast as the others)."""
        ws.replay.online.slow[(env, deployment)] = delay_s

    def archive_outside_tollgate(self, ws, name: str, version: int) -> None:
        ws.models._set_archived(ws.models.get(name, version), True, "portal-user@contoso.com", role="")

    def tamper_audit(self, ws) -> list[str]:
        """Try to overwrite and to delete the audit blobs behind the service; the errors."""
        from azure.core.exceptions import HttpResponseError
        ws.releases.audit()  # make sure the trail exists
        container = ws.audit_trail.container
        errors = []
        names = [b.name for b in container.list_blobs(name_starts_with="audit/")]
        for attempt in (lambda n: container.upload_blob(n, b'{"actor": "mallory"}\n', overwrite=True),
                        lambda n: container.delete_blob(n)):
            try:
                for n in names:
                    attempt(n)
            except HttpResponseError as e:
                code = str(getattr(e, "error_code", None) or e.status_code)
                worm = "Immutable" in code  # BlobImmutableDueToPolicy: the container's WORM policy refused
                errors.append(f"the audit trail is append-only ({code})" if worm else f"refused otherwise: {code}")
        return errors


def make_backend(name: str, base: Path, demo_template: Path):
    if name == "local":
        return LocalBackend(base, demo_template)
    if name == "azure":
        return AzureBackend(base)
    raise ValueError(f"no contract backend {name!r}")


def pytest_collection_modifyitems(config, items):
    """Skip, with the backend's reason, the tests a backend cannot run (before any fixture is set up)."""
    reasons = {"azure": AzureBackend.unsupported}
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend_name = callspec.params.get("backend") if callspec else None
        reason = reasons.get(backend_name, {}).get(getattr(item, "originalname", item.name))
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"{backend_name}: {reason}"))


@pytest.fixture(autouse=True)
def _no_real_azure_credential(monkeypatch):
    """Nothing in the contract suite may build a real credential chain (a managed-identity probe
    would leave the machine): constructing one fails the test."""
    try:
        import azure.identity
    except ImportError:
        return

    def refuse(*args, **kwargs):
        raise AssertionError("a test constructed a real Azure credential")
    for name in ("DefaultAzureCredential", "ManagedIdentityCredential", "AzureCliCredential",
                 "EnvironmentCredential", "ClientSecretCredential"):
        monkeypatch.setattr(azure.identity, name, refuse)


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
