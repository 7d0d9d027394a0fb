"""Data assets and their versions on Azure ML; the blob storage behind them.

A dataset version is an Azure ML data asset version of type ``uri_file`` whose file
lives on the workspace's default blob datastore under ``tollgate/datasets/NAME/…``.
Its profile and data tests are computed here at registration (the same code as the
local workspace: ``services.datatests``) and kept in the version's ``properties``, so
a listing shows them without reading any data (see ``convert``).

Registration: parse (``InvalidInput`` before anything is written) → data tests against
the baseline → upload the file to a fresh blob folder → PUT the version
(``ml_client.data.create_or_update``). Version numbers are chosen as *latest + 1*;
when another registration took that number first Azure answers 409 and the next
number is tried. A failed PUT deletes the uploaded blob: either the whole version
exists or nothing does.

Blobs are read and written with azure-storage-blob's ``ContainerClient`` using the
same credential (the identity needs *Storage Blob Data Contributor* on the account)
and, when given, the same transport as the ``MLClient`` — so a replayed workspace's
files are replayed too.
"""
from __future__ import annotations

import hashlib
import io
import re
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from .. import versions
from ..datatests import LABELS_TAG, NO_LABELS, baseline_of, latest_passing, profile, read_table, run_data_tests
from ..entities import CheckStatus, DatasetCheck, DatasetVersion, DataTestResult
from ..errors import Conflict, InvalidInput, NotFound, ServiceError
from ..naming import check_name
from ..permissions import authorize, canonical
from ..policy import Policy
from ..telemetry import mark, warning_of
from . import convert, paging
from .config import AzureSettings
from .errors import azure_call, translate

PREFIX = "tollgate"
CACHE_TTL_S = 5.0


class ReadCache:
    """Listings kept for a few seconds, shared by the workspace's stores, so one page render
    that asks for the same listing several times (with different filters) sends one request.
    Every write through the workspace clears what it changed (``invalidate(kind)``)."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, clock: Callable[[], float] | None = None):
        import time
        self.ttl_s, self.clock = ttl_s, clock or time.monotonic
        self._items: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = load()
        with self._lock:
            self._items[key] = (now, value)
        return value

    def peek(self, key: tuple) -> Any | None:
        """The fresh cached value of ``key``, or None (never loads)."""
        with self._lock:
            hit = self._items.get(key)
            return hit[1] if hit is not None and self.clock() - hit[0] < self.ttl_s else None

    def invalidate(self, kind: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._items if kind is None or k[0] == kind]:
                del self._items[key]
_DATASTORE_PATH = re.compile(r"datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")
MAX_ATTEMPTS = 20


class BlobStore:
    """Files on the workspace's blob datastores, addressed by ``azureml://…/datastores/X/paths/P``."""

    def __init__(self, ml_client: Any, settings: AzureSettings, credential: Any, transport: Any = None):
        self.ml, self.settings, self.credential, self.transport = ml_client, settings, credential, transport
        self._containers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _container(self, store: str):
        with self._lock:
            client = self._containers.get(store)
        if client is not None:
            return client
        with azure_call(f"read datastore {store!r}"):
            ds = self.ml.datastores.get(store)
        from azure.storage.blob import ContainerClient
        account = getattr(ds, "account_name", None)
        container = getattr(ds, "container_name", None)
        if not account or not container:
            raise InvalidInput(f"datastore {store!r} is not an Azure Blob datastore",
                               hint="Set TOLLGATE_AZURE_DATASTORE to a blob datastore (e.g. workspaceblobstore).")
        endpoint = getattr(ds, "endpoint", None) or "core.windows.net"
        protocol = getattr(ds, "protocol", None) or "https"
        kwargs = {"transport": self.transport} if self.transport is not None else {}
        client = ContainerClient(f"{protocol}://{account}.blob.{endpoint}", container,
                                 credential=self.credential, **kwargs)
        with self._lock:
            self._containers.setdefault(store, client)
            return self._containers[store]

    def uri(self, path: str, store: str | None = None) -> str:
        s = self.settings
        return (f"azureml://subscriptions/{s.subscription_id}/resourcegroups/{s.resource_group}"
                f"/workspaces/{s.workspace_name}/datastores/{store or s.datastore}/paths/{path}")

    @staticmethod
    def parse(uri: str) -> tuple[str, str]:
        m = _DATASTORE_PATH.search(uri or "")
        if not m:
            raise InvalidInput(f"{uri!r} is not a datastore path (azureml://…/datastores/NAME/paths/PATH)")
        return m["store"], m["path"]

    def upload(self, path: str, data: bytes, store: str | None = None) -> str:
        store = store or self.settings.datastore
        with azure_call(f"upload {path} to datastore {store!r}", role="Storage Blob Data Contributor"):
            self._container(store).upload_blob(path, data, overwrite=True)
        return self.uri(path, store)

    def download(self, uri: str) -> bytes:
        store, path = self.parse(uri)
        with azure_call(f"download {path} from datastore {store!r}", role="Storage Blob Data Reader"):
            return self._container(store).download_blob(path).readall()

    def delete(self, uri: str) -> None:
        store, path = self.parse(uri)
        try:
            self._container(store).delete_blob(path)
        except Exception:  # best effort: an orphan blob is harmless, a raised error here would hide the real one
            pass

    def list(self, prefix: str, store: str | None = None) -> list[str]:
        store = store or self.settings.datastore
        with azure_call(f"list {prefix} on datastore {store!r}", role="Storage Blob Data Reader"):
            return sorted(b.name for b in self._container(store).list_blobs(name_starts_with=prefix))


class AzureDatasets:
    """``DatasetStore`` over Azure ML data assets (see the module docstring)."""

    def __init__(self, ml_client: Any, blobs: BlobStore, policy: Policy,
                 audit: Callable[..., None] | None = None, cache: ReadCache | None = None):
        self.ml, self.blobs, self.policy = ml_client, blobs, policy
        self.audit = audit
        self.cache = cache or ReadCache()
        self._frames: dict[tuple[str, int], pd.DataFrame] = {}  # versions are immutable
        self._lock = threading.Lock()

    # --- reads ----------------------------------------------------------------------

    def names(self) -> list[str]:
        """The data assets' names (a ``PartialList`` when a later page of the listing failed)."""
        def load():
            listed = paging.read_listing(self.ml.data.list(), "the data assets")
            return mark(sorted(d.name for d in listed), warning_of(listed))
        return self.cache.get(("data", "names"), load)

    def _data_versions(self, name: str) -> list[Any]:
        def load():
            try:
                items = paging.read_listing(self.ml.data.list(name=name), f"the versions of dataset {name!r}")
            except NotFound:
                items = []
            order = sorted(items, key=lambda d: versions.order_key(convert.version_of(d.version), convert.created(d)[0]),
                           reverse=True)
            return mark(order, warning_of(items))
        return self.cache.get(("data", "versions", name), load)

    def _unknown(self, name: str) -> NotFound:
        return NotFound(f"dataset {name!r} does not exist",
                        hint=f"Known datasets: {', '.join(self.names()) or 'none'}.")

    def versions(self, name: str) -> list[DatasetVersion]:
        items = self._data_versions(name)
        if not items:
            raise self._unknown(name)
        return [convert.dataset_version(d) for d in items]

    def all_versions(self) -> list[DatasetVersion]:
        """Every version of every data asset, newest first; a ``PartialList`` saying what could not be
        listed when a listing stopped early."""
        out: list[DatasetVersion] = []
        names = self.names()
        warnings = [warning_of(names)]
        for name in names:
            try:
                listed = self._data_versions(name)
            except ServiceError as e:  # one data asset Azure answers badly for: the others are still listed
                warnings.append(str(e))
                continue
            warnings.append(warning_of(listed))
            out.extend(convert.dataset_version(d) for d in listed)
        out.sort(key=lambda v: (v.created_at, v.name, str(v.version)), reverse=True)
        return mark(out, "; ".join(w for w in warnings if w))

    def _get_data(self, name: str, version: int | None) -> Any:
        """One version from the (briefly cached) listing of the dataset's versions."""
        if version is not None:
            version = _version(version, "dataset")
        items = self._data_versions(name)
        if not items:
            raise self._unknown(name)
        if version is None:
            return items[0]
        found = next((d for d in items if versions.same(convert.version_of(d.version), version)), None)
        if found is None:
            raise NotFound(f"dataset {name}:{version} does not exist",
                           hint=f"Versions of {name}: {versions.describe(convert.version_of(d.version) for d in items)}.")
        return found

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        return convert.dataset_version(self._get_data(name, version))

    def latest_passing(self, name: str, *, labelled: bool = False) -> DatasetVersion | None:
        return latest_passing(self.versions(name), self.policy.target, labelled=labelled)

    def data_tests(self, name: str, version: int) -> list[DataTestResult]:
        return convert.data_tests(self._get_data(name, version))

    def load(self, name: str, version: int | None = None) -> pd.DataFrame:
        if version is not None:
            with self._lock:
                cached = self._frames.get((name, str(version)))
            if cached is not None:  # versions are immutable: no request for data already read
                return cached.copy()
        dv = self.get(name, version)
        if dv.unreadable:
            raise InvalidInput(f"cannot read dataset {dv.ref}: {dv.unreadable}",
                               hint="Register the data as a CSV or Parquet file (uri_file) to profile, test and "
                                    "train on it.")
        key = (dv.name, str(dv.version))
        with self._lock:
            cached = self._frames.get(key)
        if cached is None:
            cached = self._read(dv)
            with self._lock:
                self._frames[key] = cached
        return cached.copy()

    def _read(self, dv: DatasetVersion) -> pd.DataFrame:
        data = self.blobs.download(dv.uri)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / (dv.source or f"data.{dv.format}")
            path.write_bytes(data)
            frame, _ = read_table(path, dv.source)
        return frame

    # --- writes ---------------------------------------------------------------------

    def register(self, name: str, source: Path, *, actor: str, description: str = "",
                 original_name: str | None = None, tags: Mapping[str, str] | None = None) -> DatasetVersion:
        role = authorize(self.policy, actor, "register_dataset")
        check_name(name)
        source = Path(source)
        original = original_name or source.name
        frame, fmt = _read(source, original)  # InvalidInput before anything is written
        data = source.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        cols = profile(frame)
        tags = {str(k): str(v) for k, v in (tags or {}).items() if k != LABELS_TAG}
        if self.policy.target not in frame.columns:
            tags[LABELS_TAG] = NO_LABELS

        existing = [convert.dataset_version(d) for d in self._data_versions(name)]
        prev, tests = self._tested(frame, existing)
        status = CheckStatus.worst(t.status for t in tests)
        props = convert.dataset_properties(rows=len(frame), fmt=fmt, source=original, sha256=sha,
                                           baseline=prev.version if prev else None, tests_status=status,
                                           created_by=canonical(actor), columns=cols, tests=tests)

        uri = self.blobs.upload(f"{PREFIX}/datasets/{name}/{uuid.uuid4().hex}/{original}", data)
        version = versions.next_number(v.version for v in existing)
        try:
            created = self._put_version(name, version, uri, description, tags, props)
        except BaseException:
            self.blobs.delete(uri)
            raise
        finally:
            self.cache.invalidate("data")
        dv = convert.dataset_version(created)
        with self._lock:
            self._frames[(dv.name, dv.version)] = frame
        if self.audit is not None:
            self.audit(actor, "dataset.register", dv.ref, role=role,
                       after={"rows": len(frame), "tests": status.value, "source": original})
        return dv

    def check(self, name: str, source: Path, *, original_name: str | None = None) -> DatasetCheck:
        """What ``register`` would test, against the same baseline; nothing is uploaded or written."""
        existing = self.versions(name)  # NotFound for an unknown dataset
        source = Path(source)
        original = original_name or source.name
        frame, fmt = _read(source, original)
        prev, tests = self._tested(frame, existing)
        return DatasetCheck(name=name, source=original, format=fmt, rows=len(frame), columns=profile(frame),
                            baseline_version=prev.version if prev else None, tests=tuple(tests))

    def _tested(self, frame: pd.DataFrame, existing: list[DatasetVersion]):
        """(baseline, data tests) of ``frame`` as the next version after ``existing``."""
        prev = baseline_of(existing, self.policy.target)
        baseline = self.load(prev.name, prev.version) if prev else None
        return prev, run_data_tests(frame, baseline, self.policy.data_tests, target=self.policy.target)

    def _put_version(self, name: str, version: int, uri: str, description: str,
                     tags: dict, props: dict) -> Any:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data
        for _ in range(MAX_ATTEMPTS):
            asset = Data(name=name, version=str(version), type=AssetTypes.URI_FILE, path=uri,
                         description=description or None, tags=tags, properties=props)
            try:
                return self.ml.data.create_or_update(asset)
            except Exception as e:
                err = translate(e, f"register dataset {name}:{version}")
                if not isinstance(err, Conflict):
                    raise err from e
                version += 1  # another registration took this number
        raise Conflict(f"could not find a free version number for dataset {name!r}",
                       hint="Many registrations at once; try again.")


def _version(version: Any, what: str) -> versions.Version:
    return versions.parse_version(version, f"{what} version")


def _read(source: Path, original: str) -> tuple[pd.DataFrame, str]:
    if not source.is_file():
        raise InvalidInput(f"{original}: no such file", hint="Choose an existing CSV or Parquet file.")
    return read_table(source, original)


def frame_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()
