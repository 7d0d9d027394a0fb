"""ARM resources kept in memory: PUT stores, GET reads or lists, PATCH merges, DELETE removes; LROs."""
from __future__ import annotations

import copy
import re
import threading
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

from .http import ARM_HOST, ReplayRequest, Reply, _now, arm_error, not_found


def _deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_PROVIDER = re.compile(r"^(?P<scope>/subscriptions/[^/]+/resourcegroups/[^/]+/providers/[^/]+)(?P<rest>(/[^/]+)+)$",
                       re.IGNORECASE)


class FakeArmState:
    """ARM resources in memory, keyed by their id (case-insensitively, as ARM does).

    A path whose part after ``providers/NAMESPACE`` has an even number of segments is an
    item (``workspaces/w/models/m``), odd is a collection (``workspaces/w/models``).
    Version resources (``.../versions/N``) are immutable apart from tags, description,
    properties and ``isArchived``: a PUT that changes anything else answers 409, as
    Azure ML does; their container is created on the first PUT and keeps
    ``latestVersion`` / ``nextVersion``.
    """

    lro_types = {"onlineendpoints", "onlinedeployments", "computes", "batchendpoints", "batchdeployments"}
    MUTABLE_VERSION_FIELDS = {"tags", "description", "properties", "isArchived", "stage", "provisioningState"}
    # what the service fills in on a PUT when the request leaves it out (by resource type, lower case)
    defaults: dict[str, dict] = {
        "microsoft.machinelearningservices/workspaces/models/versions": {"flavors": {}, "isArchived": False,
                                                                         "tags": {}, "properties": {}},
        "microsoft.machinelearningservices/workspaces/data/versions": {"isArchived": False, "tags": {},
                                                                       "properties": {}},
        "microsoft.machinelearningservices/workspaces/jobs": {"status": "NotStarted", "tags": {},
                                                              "properties": {}},
    }

    def __init__(self, location: str = "westeurope", subscription: str = "00000000-0000-0000-0000-000000000000"):
        self.location, self.subscription = location, subscription
        self.resources: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}
        self.lro_polls = 0          # InProgress answers before an operation succeeds
        self.page_size: int | None = None
        self.lock = threading.RLock()

    # -- direct access (fixtures, handlers) -----------------------------------------------

    @staticmethod
    def key(path: str) -> str:
        return path.rstrip("/").lower()

    def get(self, path: str) -> dict | None:
        with self.lock:
            res = self.resources.get(self.key(path))
            return copy.deepcopy(res) if res is not None else None

    def put_raw(self, path: str, resource: dict) -> dict:
        """Store ``resource`` as is (with ``id``/``name`` filled in)."""
        resource = copy.deepcopy(resource)
        resource.setdefault("id", path.rstrip("/"))
        resource.setdefault("name", path.rstrip("/").rsplit("/", 1)[-1])
        with self.lock:
            self.resources[self.key(path)] = resource
        return copy.deepcopy(resource)

    def children(self, collection: str) -> list[dict]:
        prefix = self.key(collection) + "/"
        with self.lock:
            items = [(k, v) for k, v in self.resources.items()
                     if k.startswith(prefix) and "/" not in k[len(prefix):]]
        return [copy.deepcopy(v) for _, v in sorted(items, key=lambda kv: kv[0])]

    def delete(self, path: str) -> bool:
        key = self.key(path)
        with self.lock:
            if key not in self.resources:
                return False
            for k in [k for k in self.resources if k == key or k.startswith(key + "/")]:
                del self.resources[k]
        return True

    @staticmethod
    def is_item(path: str) -> bool | None:
        m = _PROVIDER.match(path.rstrip("/"))
        if not m:
            return None
        return len(m["rest"].strip("/").split("/")) % 2 == 0

    @staticmethod
    def type_of(path: str) -> str:
        m = _PROVIDER.match(path.rstrip("/"))
        segs = m["rest"].strip("/").split("/") if m else []
        types = segs[0::2]
        ns = m["scope"].rsplit("/", 1)[-1] if m else ""
        return "/".join([ns, *types])

    # -- operations (LRO) -----------------------------------------------------------------

    def new_operation(self, final: str = "Succeeded", error: dict | None = None) -> str:
        op = uuid.uuid4().hex
        with self.lock:
            self.operations[op] = {"remaining": self.lro_polls, "status": final, "error": error}
        return op

    def op_url(self, op: str, kind: str = "Status") -> str:
        return (f"https://{ARM_HOST}/subscriptions/{self.subscription}/providers/Microsoft.MachineLearningServices"
                f"/locations/{self.location}/mfeOperations{kind}/{op}?api-version=2024-04-01")

    def operation(self, op: str, kind: str) -> Reply:
        with self.lock:
            state = self.operations.get(op)
            if state is None:
                return not_found(f"operation {op}")
            if state["remaining"] > 0:
                state["remaining"] -= 1
                status = "InProgress"
            else:
                status = state["status"]
        if kind == "Results":
            return Reply(202, None, headers={"Location": self.op_url(op, "Results"), "Retry-After": "0"}) \
                if status == "InProgress" else Reply(200, None)
        body = {"id": op, "name": op, "status": status, "startTime": _now()}
        if status != "InProgress":
            body["endTime"] = _now()
        if state.get("error") and status != "InProgress":
            body["error"] = state["error"]
        return Reply(200, body, headers={"Retry-After": "0"})

    def _lro_headers(self, op: str) -> dict:
        return {"Azure-AsyncOperation": self.op_url(op, "Status"), "Location": self.op_url(op, "Results"),
                "Retry-After": "0"}

    def _is_lro(self, path: str) -> bool:
        return self.type_of(path).rsplit("/", 1)[-1].lower() in self.lro_types

    # -- HTTP ------------------------------------------------------------------------------

    def handle(self, req: ReplayRequest) -> Reply:
        item = self.is_item(req.path)
        if item is None:
            return not_found(req.path)
        if req.method == "GET":
            return self._get(req, item)
        if not item:
            return not_found(req.path)
        if req.method == "PUT":
            return self._put(req)
        if req.method == "PATCH":
            return self._patch(req)
        if req.method == "DELETE":
            return self._delete(req)
        return not_found(f"{req.method} {req.path}")

    def _get(self, req: ReplayRequest, item: bool) -> Reply:
        if item:
            res = self.get(req.path)
            return Reply(200, res) if res is not None else not_found(req.path.rsplit("/", 2)[-2] + " "
                                                                     + req.path.rsplit("/", 1)[-1])
        parent = req.path.rstrip("/").rsplit("/", 1)[0]
        if self.is_item(parent) and self.get(parent) is None and parent.count("/") > 8:
            return not_found(parent.rsplit("/", 1)[-1])
        items = self.children(req.path)
        view = (req.query.get("listViewType") or "ActiveOnly").lower()
        if view == "activeonly":
            items = [i for i in items if not i.get("properties", {}).get("isArchived")]
        elif view == "archivedonly":
            items = [i for i in items if i.get("properties", {}).get("isArchived")]
        items = _filter_query(items, req.query)
        skip = int(req.query.get("$skip", "0") or 0)
        page = self.page_size or int(req.query.get("$top", "0") or 0) or None
        body: dict[str, Any] = {"value": items[skip:skip + page] if page else items[skip:]}
        if page and skip + page < len(items):
            parts = urlsplit(req.url)
            q = {k: v for k, v in req.query.items() if k != "$skip"}
            q["$skip"] = str(skip + page)
            body["nextLink"] = (f"https://{parts.netloc}{quote(req.path)}?"
                                + "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items()))
        return Reply(200, body)

    def _put(self, req: ReplayRequest) -> Reply:
        body = req.json
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "a JSON object is required")
        path = req.path.rstrip("/")
        parent = path.rsplit("/", 2)[0]
        if parent.count("/") > 8 and self.is_item(parent) and self.get(parent) is None:
            if parent.rsplit("/", 1)[0].lower().endswith(("/models", "/data", "/components", "/environments",
                                                          "/codes")):
                self.put_raw(parent, {"properties": {"latestVersion": None, "nextVersion": "1",
                                                     "isArchived": False, "description": None, "tags": {}},
                                      "type": self.type_of(parent), "systemData": _system_data(req)})
            else:
                return not_found(parent.rsplit("/", 1)[-1])
        with self.lock:
            existing = self.get(path)
            if existing is not None and path.rsplit("/", 2)[-2].lower() == "versions":
                changed = {k for k in set(body.get("properties", {})) | set(existing.get("properties", {}))
                           if k not in self.MUTABLE_VERSION_FIELDS
                           and body.get("properties", {}).get(k) != existing.get("properties", {}).get(k)
                           and body.get("properties", {}).get(k) is not None}
                if changed:
                    return arm_error(409, "UserError",
                                     f"A version {path.rsplit('/', 1)[-1]} of this asset already exists; "
                                     f"only tags, description, properties and isArchived can be updated "
                                     f"({', '.join(sorted(changed))} differ).")
            resource = _deep_merge(existing or {}, {}) if existing else {}
            resource.update({k: v for k, v in body.items() if k not in ("id", "name", "type", "systemData")})
            resource["id"] = existing["id"] if existing else path
            resource["name"] = path.rsplit("/", 1)[-1]
            resource["type"] = self.type_of(path)
            resource["systemData"] = (existing or {}).get("systemData") or _system_data(req)
            resource["systemData"]["lastModifiedAt"] = _now()
            props = resource.setdefault("properties", {})
            for k, v in self.defaults.get(resource["type"].lower(), {}).items():
                if props.get(k) is None:
                    props[k] = copy.deepcopy(v)
            lro = self._is_lro(path)
            if "provisioningState" in props or lro:
                props["provisioningState"] = "Succeeded"
            self.put_raw(path, resource)
            if path.rsplit("/", 2)[-2].lower() == "versions":
                self._bump_container(parent, path.rsplit("/", 1)[-1])
        if lro:
            op = self.new_operation()
            shown = copy.deepcopy(resource)
            shown["properties"]["provisioningState"] = "Updating" if existing else "Creating"
            return Reply(200 if existing else 201, shown, headers=self._lro_headers(op))
        return Reply(200 if existing else 201, resource)

    def _bump_container(self, container: str, version: str) -> None:
        c = self.get(container)
        if c is None:
            return
        props = c.setdefault("properties", {})
        versions = [v["name"] for v in self.children(container + "/versions")]
        numeric = [int(v) for v in versions if v.isdigit()]
        props["latestVersion"] = str(max(numeric)) if numeric else version
        props["nextVersion"] = str(max(numeric) + 1) if numeric else None
        self.put_raw(container, c)

    def _patch(self, req: ReplayRequest) -> Reply:
        with self.lock:
            existing = self.get(req.path)
            if existing is None:
                return not_found(req.path.rsplit("/", 1)[-1])
            merged = _deep_merge(existing, req.json or {})
            self.put_raw(req.path, merged)
        if self._is_lro(req.path):
            op = self.new_operation()
            return Reply(202, None, headers=self._lro_headers(op))
        return Reply(200, merged)

    def _delete(self, req: ReplayRequest) -> Reply:
        found = self.delete(req.path)
        if self._is_lro(req.path) and found:
            op = self.new_operation()
            return Reply(202, None, headers=self._lro_headers(op))
        return Reply(200 if found else 204, None)


def _filter_query(items: list[dict], query: dict[str, str]) -> list[dict]:
    """The list filters of Azure ML collections that matter here: ``tags`` and ``properties``
    (``key`` or ``key=value``, comma separated), ``jobType``."""
    for param in ("tags", "properties"):
        spec = query.get(param)
        if not spec:
            continue
        for cond in spec.split(","):
            k, _, v = cond.partition("=")
            items = [i for i in items if k in (i.get("properties", {}).get(param) or {})
                     and (not v or str(i["properties"][param][k]) == v)]
    if query.get("jobType"):
        items = [i for i in items if i.get("properties", {}).get("jobType") == query["jobType"]]
    return items


def _system_data(req: ReplayRequest) -> dict:
    return {"createdAt": _now(), "createdBy": "replay-user@contoso.com", "createdByType": "User",
            "lastModifiedAt": _now(), "lastModifiedBy": "replay-user@contoso.com", "lastModifiedByType": "User"}


