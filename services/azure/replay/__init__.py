"""A replayed Azure ML workspace: answers the real SDKs' HTTP requests in memory.

``ReplayTransport`` is an azure-core ``HttpTransport``. Hand it to ``MLClient(...,
transport=t)``, ``LogsQueryClient(..., transport=t)``, an azure-core
``PipelineClient`` or an azure-storage ``BlobClient`` and every request those
clients make is answered here, never on the network:

* **routes** added with ``add(method, path_regex, handler_or_json, status, headers)``;
  the newest route wins, so a test can override anything. A handler gets a
  ``ReplayRequest`` (method, host, path, query, body, ``json``, the regex match)
  and returns a ``Reply``, a ``(status, body[, headers])`` tuple, a JSON-able value
  (answered 200), or ``None`` (answered 404);
* ARM resources under ``/subscriptions/...`` that no route claims are served by
  ``FakeArmState``: PUT stores, GET reads an item or lists a collection, PATCH
  merges, DELETE removes, so a PUT followed by a GET returns the updated entity.
  Resource types in ``FakeArmState.lro_types`` (online endpoints and deployments,
  computes) answer PUT/PATCH/DELETE as long-running operations: 201/202 with
  ``Azure-AsyncOperation`` and ``Location`` headers and an operation-status route
  that answers ``InProgress`` ``lro_polls`` times, then ``Succeeded``;
* blobs (``*.blob.core.windows.net``) are kept by ``FakeBlobStore``: upload (single
  shot or blocks), download (with ranges), properties, delete, listing;
* the workspace's MLflow REST API (``/api/2.0/mlflow/runs/search``, ``runs/get``,
  ``metrics/get-history``) answers from ``FakeMlflow``; run history (a run's child
  steps, its log files as SAS URLs) from ``FakeRunHistory``; ``/discovery`` with the
  regional API host;
* Log Analytics (``POST .../v1/workspaces/{id}/query``, and each query of a
  ``POST .../v1/$batch``) calls the function given to ``set_logs_handler(fn)``: ``fn(query_text, timespan) -> body`` where body is a
  dict ``{"tables": [...]}`` (add ``"error"`` for a partial result), a ``Reply``
  (e.g. an error status), or a list of tables (see ``logs_table``);
* anything else answers **404** — never 5xx, which azure-core would retry.

Every request is recorded in ``transport.calls`` (``Call``: method, host, path,
query, json body, headers) for assertions and counting. ``fail_next(method,
path_regex, status, body, headers, times=1)`` makes the next matching request(s)
fail (403, 404, 429 with ``Retry-After``, 5xx…) before routing. ``sleep`` does not
sleep (it records the delay in ``transport.sleeps``): azure-core's retry back-off
and LRO polling call the transport's ``sleep``, so tests stay fast.

``FakeCredential`` returns a fixed token: tests never build a real credential chain.
``load_fixtures(transport, folder)`` fills the state from JSON fixtures (the demo
workspace in ``services/azure/fixtures``: see its README).

The package: ``transport`` (the transport), ``http`` (requests, replies, routes), ``arm``
(ARM state), ``blobs``, ``mlflow`` (MLflow REST and run history), ``logs`` (Log
Analytics tables), ``fixtures`` (loading), ``credential``, and the online-endpoint
(``online``) and schedule (``schedules``) replays.
"""
from .arm import FakeArmState
from .blobs import FakeBlobStore
from .credential import FakeCredential
from .fixtures import FIXTURES, load_fixtures
from .http import ARM_HOST, LOGS_HOST, Call, Reply, ReplayRequest, arm_error, not_found
from .logs import logs_table, partial_result
from .mlflow import FakeMlflow, FakeRunHistory
from .transport import ReplayTransport

__all__ = ["ReplayTransport", "FakeCredential", "FakeArmState", "FakeBlobStore", "FakeMlflow", "FakeRunHistory", "Reply",
           "ReplayRequest", "Call", "arm_error", "not_found", "load_fixtures", "logs_table", "partial_result",
           "FIXTURES", "ARM_HOST", "LOGS_HOST"]
