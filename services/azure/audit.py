"""The shared audit trail and the per-endpoint operation lock of an Azure workspace.

Where the trail lives, and why
==============================

Every release transition (deploy, smoke test, approve, reject, promote, rollback,
traffic, key rotation) appends one JSON line to an **append blob** in a container of
the workspace's storage account (``settings.audit_container_url``; by default the
container ``tollgate-audit`` of the workspace's default storage account):
``audit/000000.jsonl``, ``audit/000001.jsonl``… (a new segment when one reaches
Azure's 50,000 blocks per append blob).

* **Append-only, enforced by the service**: an append blob only grows (*Append Block*
  cannot change what is written). Give the container a time-based retention policy
  with ``allowProtectedAppendWrites`` (immutable storage, WORM) and nobody — not the
  console, not an account owner once the policy is locked — can rewrite or delete a
  record until the retention ends; only appends are allowed.
* **Shared and ordered**: every console and every CLI pipeline appends to the same
  blob. One record is one *Append Block*, which is atomic: concurrent writers never
  interleave, and the offset Azure returns (``x-ms-blob-append-offset``) gives each
  record a unique id in commit order (``segment * 10**12 + offset``).
* **Durable and immediate**: written synchronously with the storage account's
  redundancy (ZRS/GRS); a record can be read back the moment the action returns.

Rejected: *custom events in Application Insights* (ingestion takes minutes, sampling
can drop events, retention is capped and the purge API deletes — an audit trail must
not be sampled); *an Azure Table* (entities can be updated and deleted by anyone who
can write, no WORM; and it would need ``azure-data-tables``). ``azure-storage-blob`` is
already installed with ``azure-ai-ml``.

Smoke-test results are audit records too (action ``smoke_test``, the cases in
``after``), so ``ReleaseState.smoke_test_id`` is an audit record id.

Reading: the newest records are read backwards from the end of the newest segment. A
page asks for the trail more than once (the Releases page: its smoke tests and the
trail itself), so ``audit``/``find`` share one read of the trail's tail, kept
``SNAPSHOT_TTL_S`` seconds (records appended through this object clear it at once;
another console's records show within that time). The newest segment is found without
listing the container: the segment appended to last (or ``000000``) is read from its
start, and only when it is full (``MAX_BLOCKS`` blocks, or sealed) are the segments
listed — so a trail under ``CHUNK`` bytes is one ranged GET.

The operation lock
==================

``OperationLocks.hold(name, actor, op)`` takes a **blob lease** on ``locks/NAME`` in
the same container: acquiring a lease is atomic (a second acquirer gets 409
``LeaseAlreadyPresent``), so two consoles cannot start a deploy on one endpoint at the
same time. The lease lasts 60 s and is renewed every 20 s while the operation runs,
so a console that dies mid-operation frees the endpoint within a minute; the blob's
metadata says who holds it for what, for the refusal message. (An endpoint *tag* was
considered: setting a tag is itself a long-running ARM update with no compare-and-set,
so two consoles could both believe they hold it.) Leases and new blobs are allowed
under a container-level WORM policy; if the policy also refuses the lock blob's
metadata, the lock still holds and the refusal just cannot name the holder — give the
locks their own container (``OperationLocks(other_container)``) to keep the names.

Both take a ``ContainerClient`` handed in by the caller (so any caller can supply its
own transport: the tests pass ``ReplayTransport``).
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from ..entities import AuditRecord
from ..errors import BackendUnavailable, Conflict, Forbidden, NotFound, ServiceError
from ..permissions import canonical

PREFIX = "audit/"
LOCKS = "locks/"
SEGMENT_SPAN = 10 ** 12          # record id = segment * SEGMENT_SPAN + byte offset in the segment
CHUNK = 256 * 1024               # bytes read per range request
LEASE_S = 60                     # lease length (Azure allows 15-60 s or infinite)
RENEW_S = 20                     # renewal period while an operation runs
FULL_CODES = ("BlockCountExceedsLimit", "BlobIsSealed", "MaxBlobSizeConditionNotMet")
MAX_BLOCKS = 50_000              # Azure's limit of blocks per append blob: a segment that has them is full
SNAPSHOT_TTL_S = 3.0             # how long one read of the trail's tail answers audit() and find()
SCAN = 5000                      # records find() looks through
STANDARD = ("at", "actor", "role", "action", "target", "before", "after", "comment")


class Entry(NamedTuple):
    """A record of the trail and what else its line carries (``event``: a notification,
    ``rollout``: a canary rollout's state; written in the same append as the record)."""
    record: AuditRecord
    extras: Mapping[str, Any]


def _segment_name(n: int) -> str:
    return f"{PREFIX}{n:06d}.jsonl"


def _segment_number(blob_name: str) -> int | None:
    stem = blob_name[len(PREFIX):].split(".", 1)[0]
    return int(stem) if blob_name.startswith(PREFIX) and stem.isdigit() else None


def _code(e: HttpResponseError) -> str:
    return getattr(e, "error_code", None) or (e.response.headers.get("x-ms-error-code") if e.response else "") or ""


def storage_error(e: AzureError, what: str) -> ServiceError:
    """A storage SDK error as one of ours, with what to do about it."""
    status = getattr(e, "status_code", None)
    if status == 403:
        return Forbidden(f"no permission to {what} in the audit container",
                         hint="Grant the console's identity 'Storage Blob Data Contributor' on the audit container.")
    if status == 404:
        return NotFound(f"the audit container does not exist ({what})",
                        hint="Create the container named by audit_container_url (default tollgate-audit).")
    if status == 429 or (status or 0) >= 500:
        return BackendUnavailable(f"Azure Storage is not answering ({what}): HTTP {status}",
                                  hint="Retried with back-off; try again in a minute.")
    return BackendUnavailable(f"could not {what} in the audit container: {e}")


class BlobAudit:
    """The append-only audit trail in append blobs (see the module docstring)."""

    def __init__(self, container, *, prefix: str = PREFIX, max_blocks: int = MAX_BLOCKS,
                 snapshot_ttl_s: float = SNAPSHOT_TTL_S, clock=time.monotonic):
        self.container = container            # azure.storage.blob.ContainerClient
        self.prefix = prefix
        self.max_blocks, self.snapshot_ttl_s, self.clock = max_blocks, snapshot_ttl_s, clock
        self._current: int | None = None      # the segment appended to last (or found newest)
        self._lock = threading.Lock()
        # (read at, records newest first, the reader of the rest or None when all are read)
        self._snapshot: tuple[float, list[AuditRecord], Iterator[AuditRecord] | None] | None = None

    def clear_cache(self) -> None:
        """Forget the shared read of the tail: the next read asks Azure."""
        with self._lock:
            self._snapshot = None

    # --- writing ----------------------------------------------------------------------

    def record(self, actor: str, action: str, target: str, *, role: str,
               before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
               comment: str = "") -> AuditRecord:
        """Append one record; returns it with its id (the block's position in the trail). ``role`` is
        the one ``authorize`` returned; the actor is stored in its canonical spelling."""
        return self.record_many([dict(actor=actor, action=action, target=target, role=role, before=before,
                                      after=after, comment=comment)])[0]

    def record_many(self, entries: list[Mapping[str, Any]]) -> list[AuditRecord]:
        """Append several records as **one** Append Block — all of them are in the trail or none
        is (the release ledger's unit of work). Each entry has the ``record`` arguments and may
        carry extras (``event``, ``rollout``) kept on its line. Returns the records with their ids."""
        at = datetime.now(timezone.utc)
        entries = [{**e, "actor": canonical(e["actor"])} for e in entries]
        lines = [json.dumps({"at": at.isoformat(), "actor": e["actor"], "role": e.get("role", ""),
                             "action": e["action"], "target": e["target"], "before": e.get("before"),
                             "after": e.get("after"), "comment": e.get("comment") or "",
                             **{k: v for k, v in e.items() if k not in STANDARD}},
                            separators=(",", ":"), default=str).encode() + b"\n" for e in entries]
        data = b"".join(lines)
        with self._lock:
            seg = self._current if self._current is not None else self._last_segment()
            for _ in range(5):
                blob = self.container.get_blob_client(_segment_name(seg))
                try:
                    res = blob.append_block(data, length=len(data))
                except ResourceNotFoundError:
                    self._create(blob)
                    continue
                except HttpResponseError as e:
                    if _code(e) in FULL_CODES or e.status_code == 409 and "limit" in str(e).lower():
                        seg += 1            # this segment is full (or sealed): the next one
                        continue
                    raise storage_error(e, "append an audit record") from e
                except AzureError as e:
                    raise storage_error(e, "append an audit record") from e
                self._current = seg
                self._snapshot = None
                offset = int(res.get("blob_append_offset") or 0)
                out = []
                for e, line in zip(entries, lines):
                    out.append(AuditRecord(seg * SEGMENT_SPAN + offset, at, e["actor"], e.get("role", ""),
                                           e["action"], e["target"], e.get("before"), e.get("after"),
                                           e.get("comment") or ""))
                    offset += len(line)
                return out
        raise BackendUnavailable("could not append to the audit trail (segments kept changing)")

    def _create(self, blob) -> None:
        try:
            blob.create_append_blob(match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            pass                                # another writer created it first
        except HttpResponseError as e:
            if e.status_code not in (409, 412):
                raise storage_error(e, "create the audit blob") from e

    # --- reading ----------------------------------------------------------------------

    def _segments(self) -> list[tuple[int, int]]:
        """(segment number, size in bytes), oldest first."""
        try:
            found = [(_segment_number(b.name), b.size or 0)
                     for b in self.container.list_blobs(name_starts_with=self.prefix)]
        except ResourceNotFoundError:
            return []
        except AzureError as e:
            raise storage_error(e, "list the audit trail") from e
        return sorted((n, s) for n, s in found if n is not None)

    def _last_segment(self) -> int:
        segs = self._segments()
        return segs[-1][0] if segs else 0

    def _read(self, seg: int, start: int, length: int) -> bytes:
        blob = self.container.get_blob_client(_segment_name(seg))
        try:
            return blob.download_blob(offset=start, length=length).readall()
        except ResourceNotFoundError:
            return b""
        except HttpResponseError as e:
            if e.status_code == 416:          # past the end
                return b""
            raise storage_error(e, "read the audit trail") from e
        except AzureError as e:
            raise storage_error(e, "read the audit trail") from e

    def _head(self, seg: int) -> tuple[bytes, int, bool] | None:
        """The first ``CHUNK`` bytes of a segment, its size, and whether it is full (no more
        appends: ``max_blocks`` blocks, or sealed); None if it does not exist. One ranged GET."""
        blob = self.container.get_blob_client(_segment_name(seg))
        try:
            stream = blob.download_blob(offset=0, length=CHUNK)
            data = stream.readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as e:
            if e.status_code == 416:          # an empty segment
                return b"", 0, False
            raise storage_error(e, "read the audit trail") from e
        except AzureError as e:
            raise storage_error(e, "read the audit trail") from e
        props = stream.properties
        blocks = getattr(props, "append_blob_committed_block_count", None)
        sealed = str(getattr(props, "is_append_blob_sealed", "") or "").lower() == "true"
        full = sealed or (blocks is not None and int(blocks) >= self.max_blocks)
        total = str(getattr(props, "content_range", "") or "").rpartition("/")[2]
        return data, int(total) if total.isdigit() else len(data), full

    def _newest_first(self) -> Iterator[Entry]:
        """Every record, newest first, read lazily: the newest segment without a listing when
        it is not full (module docstring), older segments by their listed sizes."""
        seg = self._current if self._current is not None else 0
        head = self._head(seg)
        if head is None or head[2]:           # no such segment, or full: newer ones may exist
            segments = self._segments()
            for n, size in reversed(segments):
                yield from self._records_backwards(n, size)
            if segments:
                self._current = segments[-1][0]
            return
        data, size, _ = head
        yield from self._records_backwards(seg, size, first=data if size <= len(data) else None)
        if seg > 0:                           # older segments (rare: 50,000 records each)
            for n, older in reversed([s for s in self._segments() if s[0] < seg]):
                yield from self._records_backwards(n, older)

    def _tail(self, count: int | None) -> list[Entry]:
        """The newest ``count`` records (all if None), newest first. One pass over the trail is
        shared by every read within ``snapshot_ttl_s`` and extended as far as a read needs."""
        with self._lock:
            snap = self._snapshot
            if snap is None or self.clock() - snap[0] >= self.snapshot_ttl_s:
                snap = self._snapshot = (self.clock(), [], self._newest_first())
            records, more = snap[1], snap[2]
            try:
                while more is not None and (count is None or len(records) < count):
                    try:
                        records.append(next(more))
                    except StopIteration:
                        more = None
                        self._snapshot = (snap[0], records, None)
            except BaseException:
                self._snapshot = None
                raise
            return records[:count] if count is not None else list(records)

    def _records_backwards(self, seg: int, size: int, first: bytes | None = None) -> Iterator[Entry]:
        """The records of one segment, newest first, read in CHUNK-sized ranges from the end
        (``first``: the whole segment, already read)."""
        end, tail = size, b""
        while end > 0:
            start = max(0, end - CHUNK)
            data = (first[start:end] if first is not None else self._read(seg, start, end - start)) + tail
            lines = data.split(b"\n")
            if start > 0:
                tail, lines = lines[0], lines[1:]   # may be cut: kept for the next chunk
                base = start + len(tail) + 1
            else:
                tail, base = b"", 0
            offsets, pos = [], base
            for ln in lines:
                offsets.append(pos)
                pos += len(ln) + 1
            for off, ln in reversed(list(zip(offsets, lines))):
                if ln.strip():
                    yield _entry(seg * SEGMENT_SPAN + off, ln)
            end = start

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        """The trail, newest first (the last ``limit`` records). A read within
        ``SNAPSHOT_TTL_S`` of another that covered as many records sends no request."""
        return [e.record for e in self._tail(limit or None)]

    def find(self, action: str, limit: int = 50, scan: int = SCAN) -> list[AuditRecord]:
        """The newest ``limit`` records of one action among the last ``scan`` records."""
        return [e.record for e in self._tail(scan) if e.record.action == action][:limit]

    def find_extra(self, key: str, scan: int = SCAN) -> list[tuple[AuditRecord, Any]]:
        """(record, extra) of the records among the last ``scan`` whose line carries ``key``, newest first."""
        return [(e.record, e.extras[key]) for e in self._tail(scan) if key in e.extras]

    def get(self, record_id: int) -> AuditRecord:
        """One record by id. ``NotFound`` if there is none there."""
        seg, offset = divmod(int(record_id), SEGMENT_SPAN)
        data, start = b"", offset
        while b"\n" not in data:
            chunk = self._read(seg, start, CHUNK)
            if not chunk:
                break
            data += chunk
            start += len(chunk)
        line = data.split(b"\n", 1)[0]
        if not line.strip():
            raise NotFound(f"audit record {record_id} does not exist")
        try:
            return _parse(int(record_id), line)
        except (ValueError, KeyError) as e:
            raise NotFound(f"audit record {record_id} does not exist") from e


def _parse(record_id: int, line: bytes) -> AuditRecord:
    return _entry(record_id, line).record


def _entry(record_id: int, line: bytes) -> Entry:
    d = json.loads(line)
    return Entry(AuditRecord(record_id, datetime.fromisoformat(d["at"]), d["actor"], d.get("role", ""), d["action"],
                             d["target"], d.get("before"), d.get("after"), d.get("comment") or ""),
                 {k: v for k, v in d.items() if k not in STANDARD})


class OperationLocks:
    """One long-running operation per endpoint at a time, as blob leases (module docstring)."""

    def __init__(self, container, *, lease_s: int = LEASE_S, renew_s: float = RENEW_S):
        self.container = container
        self.lease_s, self.renew_s = lease_s, renew_s

    @contextmanager
    def hold(self, name: str, actor: str, op: str, what: str | None = None) -> Iterator[None]:
        """Hold the lock ``name`` (``what`` it guards, in words) while the block runs;
        ``Conflict`` (saying who holds it, for what, since when) if someone else does.
        Refused, not queued."""
        blob = self.container.get_blob_client(f"{LOCKS}{name}")
        lease = self._acquire(blob, what or name)
        try:
            try:
                blob.set_blob_metadata({"op": op, "by": actor, "since": datetime.now(timezone.utc).isoformat()},
                                       lease=lease)
            except AzureError:
                pass  # only the refusal message of someone else needs it
            stop = threading.Event()
            renewer = threading.Thread(target=self._renew, args=(lease, stop), daemon=True,
                                       name=f"tollgate-lease-{name}")
            renewer.start()
            try:
                yield
            finally:
                stop.set()
                renewer.join(5)
        finally:
            try:
                lease.release()
            except AzureError:
                pass  # it expires by itself within lease_s

    def _acquire(self, blob, name: str):
        for _ in range(2):
            try:
                return blob.acquire_lease(lease_duration=self.lease_s)
            except ResourceNotFoundError:
                try:
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass
                except AzureError as e:
                    raise storage_error(e, f"create the lock {name}") from e
            except HttpResponseError as e:
                if e.status_code == 409:
                    raise Conflict(self._holder(blob, name),
                                   hint="Wait for it to finish; the console shows its progress.") from e
                raise storage_error(e, f"take the lock {name}") from e
            except AzureError as e:
                raise storage_error(e, f"take the lock {name}") from e
        raise BackendUnavailable(f"could not take the lock {name}")

    def _holder(self, blob, name: str) -> str:
        try:
            meta = blob.get_blob_properties().metadata or {}
        except AzureError:
            meta = {}
        if meta.get("by"):
            return f"{meta['by']} is already running '{meta.get('op', 'an operation')}' on {name} (since {meta.get('since', '?')})"
        return f"another operation is already running on {name}"

    def _renew(self, lease, stop: threading.Event) -> None:
        while not stop.wait(self.renew_s):
            try:
                lease.renew()
            except AzureError:
                pass  # the next renewal tries again; the operation's own calls fail if access is gone
