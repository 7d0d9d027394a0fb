"""The model registry on Azure ML: model versions, tags, description, archive, aliases.

* a version's evaluation metrics, estimator, run and dataset lineage are in its
  ``properties`` (``convert.model_properties``); its files (``model.pkl``,
  ``model.json``, ``metrics.json``) under its ``modelUri`` on the blob datastore;
* aliases (``champion``, ``staging``…) are tags of the model *container*
  (``tollgate.alias.NAME = VERSION``): one PUT moves one, every console user sees it;
* archive / restore use ``ml_client.models.archive`` / ``restore``. Tags and
  description are changed by GET + PUT of the version's REST object with its
  ``isArchived`` kept as it is — ``ml_client.models.create_or_update`` would send
  ``isArchived: false`` and so un-archive the version;
* a listing is one request for the containers plus two per model name (all
  versions, archived versions); ``load`` keeps fitted models in memory (versions
  are immutable).
"""
from __future__ import annotations

import copy
import io
import threading
from typing import Any, Callable, Mapping

import joblib

from .. import versions
from ..entities import ModelVersion
from ..errors import InvalidInput, NotFound
from ..naming import check_name
from ..permissions import authorize
from ..policy import Policy
from ..provenance import check_tags
from ..release_rules import check_archive
from ..telemetry import mark, warning_of
from . import convert, paging
from .datasets import BlobStore, ReadCache, _version
from .errors import azure_call
from .release_tags import stage_of

ALIAS_CHAMPION = "champion"


class AzureModels:
    """``ModelRegistry`` over Azure ML models (see the module docstring)."""

    def __init__(self, ml_client: Any, blobs: BlobStore, policy: Policy, audit: Callable[..., None] | None = None,
                 cache: ReadCache | None = None, serving: Callable[[str, int], list[str]] | None = None):
        self.ml, self.blobs, self.policy, self.audit = ml_client, blobs, policy, audit
        self.serving = serving    # (name, version) -> the endpoints whose traffic it takes
        self.cache = cache or ReadCache()
        self._loaded: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    # --- REST objects (the SDK's own generated operations, as its archive() uses them) ----

    @property
    def _ops(self):
        return self.ml.models

    # reads are kept a few seconds in ``self.cache`` (REST objects are deep-copied out, since
    # writes modify the object they read); every write clears the models' entries

    def _containers(self) -> list[Any]:
        ops = self._ops

        def load():
            with azure_call("list the registered models"):
                return list(ops._model_container_operation.list(workspace_name=ops._workspace_name,
                                                                cls=lambda objs: objs, **ops._scope_kwargs))
        return copy.deepcopy(self.cache.get(("models", "containers"), load))

    def _container(self, name: str) -> Any | None:
        listed = self.cache.peek(("models", "containers"))
        if listed is not None:  # a fresh listing of the containers has it (or says it does not exist)
            found = next((c for c in listed if c.name == name), None)
            if found is not None:
                return copy.deepcopy(found)
        ops = self._ops

        def load():
            try:
                with azure_call(f"read model {name!r}"):
                    return ops._model_container_operation.get(name=name, workspace_name=ops._workspace_name,
                                                              **ops._scope_kwargs)
            except NotFound:
                return None
        return copy.deepcopy(self.cache.get(("models", "container", name), load))

    def _versions_rest(self, name: str) -> list[Any]:
        ops = self._ops

        def load():
            try:
                with azure_call(f"list the versions of model {name!r}"):
                    return list(ops._model_versions_operation.list(name=name, workspace_name=ops._workspace_name,
                                                                   list_view_type="All", cls=lambda objs: objs,
                                                                   **ops._scope_kwargs))
            except NotFound:
                return []
        return copy.deepcopy(self.cache.get(("models", "versions", name), load))

    def _version_rest(self, name: str, version: int) -> Any:
        listed = self.cache.peek(("models", "versions", name))
        if listed is not None:  # a fresh listing has it: no request
            found = next((r for r in listed if versions.same(r.name, version)), None)
            if found is not None:
                return copy.deepcopy(found)
        ops = self._ops
        with azure_call(f"read model {name}:{version}"):
            return ops._model_versions_operation.get(name=name, version=str(version),
                                                     workspace_name=ops._workspace_name, **ops._scope_kwargs)

    def _put_version_rest(self, name: str, version: int, rest: Any, what: str) -> None:
        ops = self._ops
        try:
            with azure_call(what):
                ops._model_versions_operation.create_or_update(name=name, version=str(version),
                                                               workspace_name=ops._workspace_name,
                                                               body=rest, **ops._scope_kwargs)
        finally:
            self.cache.invalidate("models")

    @staticmethod
    def _to_entity(rest: Any, aliases: dict[int, tuple[str, ...]]) -> ModelVersion:
        from azure.ai.ml.entities import Model
        model = Model._from_rest_object(rest)
        return convert.model_version(model, aliases.get(convert.version_of(model.version), ()),
                                     archived=bool(getattr(rest.properties, "is_archived", False)))

    @staticmethod
    def _container_tags(container: Any) -> dict[str, str]:
        return dict(getattr(getattr(container, "properties", None), "tags", None) or {})

    # --- reads ----------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(c.name for c in self._containers())

    def _unknown(self, name: str) -> NotFound:
        return NotFound(f"model {name!r} is not registered",
                        hint=f"Registered models: {', '.join(self.names()) or 'none'}.")

    def versions(self, name: str | None = None, *, include_archived: bool = True) -> list[ModelVersion]:
        if name is None:
            containers = self._containers()
        else:
            container = self._container(name)
            if container is None:
                raise self._unknown(name)
            containers = [container]
        out: list[ModelVersion] = []
        warnings = []
        for c in sorted(containers, key=lambda c: c.name):
            items = self._entities(c)
            warnings.append(warning_of(items))
            out.extend(versions.newest_first(items))
        if not include_archived:
            out = [m for m in out if not m.archived]
        return mark(out, "; ".join(w for w in warnings if w))

    def _entities(self, container: Any) -> list[ModelVersion]:
        """The versions of one model; one the SDK cannot read is left out and named (a ``PartialList``)."""
        aliases = convert.aliases_of(self._container_tags(container))
        one = paging.converting(lambda rest: self._to_entity(rest, aliases), f"model {container.name} version")
        return paging.read_listing((one(r) for r in self._versions_rest(container.name)),
                                   f"the versions of model {container.name}")

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """One version, from the (briefly cached) listing of the model's versions: a page that
        shows a model and its champion sends one request for both."""
        if version is not None:
            version = _version(version, "model")
        container = self._container(name)
        if container is None:
            raise self._unknown(name)
        items = self._entities(container)
        if not items:
            raise self._unknown(name)
        if version is None:
            return versions.newest_first(items)[0]
        found = next((m for m in items if versions.same(m.version, version)), None)
        if found is None:
            raise NotFound(f"model {name}:{version} does not exist",
                           hint=f"Versions of {name}: {versions.describe(m.version for m in items)}.")
        return found

    def champion(self, name: str) -> ModelVersion | None:
        container = self._container(name)
        if container is None:
            return None
        tagged = str(self._container_tags(container).get(convert.ALIAS_TAG + ALIAS_CHAMPION) or "").strip()
        version = convert.version_of(tagged) if tagged else None
        if version is None:
            return None
        try:
            return self.get(name, version)
        except NotFound:
            return None

    def load(self, name: str, version: int) -> Any:
        key = (name, str(version))
        with self._lock:
            if key in self._loaded:  # versions are immutable: no request for a model already loaded
                return self._loaded[key]
        mv = self.get(name, version)
        key = (mv.name, str(mv.version))
        uri = mv.uri.rstrip("/") + "/model.pkl"
        try:
            data = self.blobs.download(uri)
        except NotFound:
            raise InvalidInput(f"model {mv.ref} has no model.pkl at {uri}",
                               hint="Re-register the model from its run, or archive this version.") from None
        try:
            model = joblib.load(io.BytesIO(data))
        except Exception as e:  # a corrupt artifact must not take the page down
            raise InvalidInput(f"model {mv.ref} could not be loaded from {uri}: {e}",
                               hint="Re-register the model from its run, or archive this version.") from e
        with self._lock:
            self._loaded[key] = model
        return model

    # --- writes ---------------------------------------------------------------------

    def _record(self, actor: str, action: str, target: str, role: str, before=None, after=None) -> None:
        if self.audit is not None:
            self.audit(actor, action, target, role=role, before=before, after=after)

    def set_alias(self, name: str, alias: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "set_alias")
        check_name(alias, "alias")
        mv = self.get(name, version)
        old = self.move_alias(mv, alias)
        self._record(actor, "model.alias", f"{name}@{alias}", role,
                     before={"version": old} if old is not None else None, after={"version": mv.version})
        return self.get(name, mv.version)

    def move_alias(self, mv: ModelVersion, alias: str) -> int | None:
        """Point ``alias`` at ``mv`` (a container tag) and return where it pointed; no audit record
        (the caller records it: ``set_alias``, or the release ledger in its unit of work)."""
        ops = self._ops
        container = self._container(mv.name)
        tags = self._container_tags(container)
        key = convert.ALIAS_TAG + alias
        old = convert.version_of(tags[key]) if str(tags.get(key) or "").strip() else None
        tags[key] = str(mv.version)
        container.properties.tags = tags
        try:
            with azure_call(f"move alias {alias!r} of model {mv.name}"):
                ops._model_container_operation.create_or_update(name=mv.name, workspace_name=ops._workspace_name,
                                                                body=container, **ops._scope_kwargs)
            if mv.archived:  # an alias brings a version back
                with azure_call(f"restore model {mv.ref}"):
                    ops.restore(mv.name, version=str(mv.version))
        finally:
            self.cache.invalidate("models")
        return old

    def set_tags(self, name: str, version: int, tags: Mapping[str, str | None], actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "edit_model")
        check_tags(tags)  # one rule on both backends, though here the provenance is in immutable properties
        mv = self.get(name, version)
        for key in tags:
            if not key or len(key) > 128:
                raise InvalidInput(f"invalid tag key {key!r}")
        new = self.write_tags(mv, tags)
        self._record(actor, "model.tags", mv.ref, role, before=dict(mv.tags), after=new)
        return self.get(name, mv.version)

    def write_tags(self, mv: ModelVersion, tags: Mapping[str, str | None]) -> dict[str, str]:
        """Set tags (``None`` removes one) on the version and return them all; no audit record (the
        caller records it: ``set_tags``, or the release ledger for release-stage tags)."""
        rest = self._version_rest(mv.name, mv.version)
        new = dict(rest.properties.tags or {})
        for key, value in tags.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = str(value)
        rest.properties.tags = new
        self._put_version_rest(mv.name, mv.version, rest, f"tag model {mv.ref}")
        return new

    def set_description(self, name: str, version: int, description: str, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "edit_model")
        mv = self.get(name, version)
        rest = self._version_rest(name, mv.version)
        rest.properties.description = description
        self._put_version_rest(name, mv.version, rest, f"describe model {mv.ref}")
        self._record(actor, "model.description", mv.ref, role,
                     before={"description": mv.description}, after={"description": description})
        return self.get(name, mv.version)

    def archive(self, name: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "archive_model")
        mv = self.get(name, version)
        serving = self.serving(mv.name, mv.version) if self.serving is not None else []
        check_archive(mv, stage_of(mv), serving)   # not the champion, nor a version staged or serving
        return self._set_archived(mv, True, actor, role)

    def restore(self, name: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "archive_model")
        return self._set_archived(self.get(name, version), False, actor, role)

    def _set_archived(self, mv: ModelVersion, archived: bool, actor: str, role: str) -> ModelVersion:
        if mv.archived == archived:
            return mv  # idempotent
        try:
            with azure_call(f"{'archive' if archived else 'restore'} model {mv.ref}"):
                (self._ops.archive if archived else self._ops.restore)(mv.name, version=str(mv.version))
        finally:
            self.cache.invalidate("models")
        self._record(actor, "model.archive" if archived else "model.restore", mv.ref, role)
        return self.get(mv.name, mv.version)
