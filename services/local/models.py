"""Local model registry: versions under ``<workspace>/models/NAME/VERSION/``."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import joblib

from ..entities import ModelVersion, Stage
from ..errors import InvalidInput, NotFound
from ..naming import check_name
from ..permissions import authorize, canonical
from ..policy import Policy
from ..provenance import PREFIX, check_tags, split_tags
from ..release_rules import check_archive
from . import audit
from .db import Database, utcnow

ALIAS_CHAMPION = "champion"
VERSION_COLUMNS = ("name, version, created_at, created_by, description, estimator, metrics_json, run_id, dataset,"
                   " dataset_version, path, tags_json, archived")


class LocalModels:
    def __init__(self, db: Database, root: Path, policy: Policy):
        self.db, self.root, self.policy = db, Path(root), policy
        self._prefix = f"{self.root}{os.sep}"  # + the stored relative path: the version's folder

    # --- reads ----------------------------------------------------------------

    def _aliases(self, name: str | None = None) -> dict[tuple[str, int], tuple[str, ...]]:
        rows = (self.db.query("SELECT * FROM model_aliases WHERE name = ?", (name,)) if name
                else self.db.query("SELECT * FROM model_aliases"))
        out: dict[tuple[str, int], list[str]] = {}
        for r in rows:
            out.setdefault((r["name"], r["version"]), []).append(r["alias"])
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def _to_version(self, row: tuple, aliases) -> ModelVersion:
        """One version from a ``VERSION_COLUMNS`` tuple (no ``sqlite3.Row`` lookups, no ``Path``
        arithmetic per row: listing 20,000 versions spent half its time there)."""
        (name, version, created_at, created_by, description, estimator, metrics, run_id, dataset,
         dataset_version, path, tags, archived) = row
        tags, origin = split_tags(json.loads(tags)) if tags != "{}" else ({}, None)
        return ModelVersion(
            name=name, version=version, created_at=datetime.fromisoformat(created_at), created_by=created_by,
            description=description, estimator=estimator, metrics=json.loads(metrics), run_id=run_id,
            dataset=dataset, dataset_version=dataset_version, tags=tags,
            aliases=aliases.get((name, version), ()), archived=bool(archived), uri=self._prefix + path,
            provenance=origin,
        )

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        cursor = self.db.conn.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, params).fetchall()

    def names(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT DISTINCT name FROM models ORDER BY name")]

    def versions(self, name: str | None = None, *, include_archived: bool = True) -> list[ModelVersion]:
        where, params = [], []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if not include_archived:
            where.append("archived = 0")
        sql = f"SELECT {VERSION_COLUMNS} FROM models" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._rows(sql + " ORDER BY name, version DESC", tuple(params))
        if name is not None and not rows and name not in self.names():
            raise NotFound(f"model {name!r} is not registered",
                           hint=f"Registered models: {', '.join(self.names()) or 'none'}.")
        aliases = self._aliases(name)
        return [self._to_version(r, aliases) for r in rows]

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        if version is None:
            rows = self._rows(f"SELECT {VERSION_COLUMNS} FROM models WHERE name = ? ORDER BY version DESC LIMIT 1",
                              (name,))
        else:
            try:
                version = int(version)
            except (TypeError, ValueError):
                raise InvalidInput(f"model version must be a whole number, got {version!r}") from None
            rows = self._rows(f"SELECT {VERSION_COLUMNS} FROM models WHERE name = ? AND version = ?", (name, version))
        if not rows:
            if name not in self.names():
                raise NotFound(f"model {name!r} is not registered",
                               hint=f"Registered models: {', '.join(self.names()) or 'none'}.")
            latest = self.db.one("SELECT MAX(version) FROM models WHERE name = ?", (name,))[0]
            raise NotFound(f"model {name}:{version} does not exist", hint=f"Versions of {name} go from 1 to {latest}.")
        return self._to_version(rows[0], self._aliases(name))

    def champion(self, name: str) -> ModelVersion | None:
        row = self.db.one("SELECT version FROM model_aliases WHERE name = ? AND alias = ?", (name, ALIAS_CHAMPION))
        return self.get(name, row[0]) if row else None

    def load(self, name: str, version: int) -> Any:
        mv = self.get(name, version)
        path = Path(mv.uri) / "model.pkl"
        try:
            return joblib.load(path)
        except Exception as e:  # a corrupt or missing artifact must not take the page down
            raise InvalidInput(f"model {mv.ref} could not be loaded from {path}: {e}",
                               hint="Re-register the model from its run, or archive this version.") from e

    def features(self, name: str, version: int) -> list[str]:
        return json.loads((Path(self.get(name, version).uri) / "model.json").read_text())["features"]

    # --- writes ---------------------------------------------------------------

    def register(self, name: str, artifacts: Path, *, estimator: str, metrics: Mapping[str, float],
                 run_id: str | None, dataset: str | None, dataset_version: int | None,
                 created_by: str, description: str = "", tags: Mapping[str, str] | None = None,
                 conn=None) -> int:
        """Copy ``artifacts`` into the registry as the next version; returns the version.
        Pass ``conn`` to take part in the caller's transaction. ``created_by`` is the actor: the
        runner registers a run's model as the run's submitter."""
        role = authorize(self.policy, created_by, "register_model")
        check_name(name, "model")
        staging = self.root / "models" / name / f".incoming-{uuid.uuid4().hex}"
        shutil.copytree(artifacts, staging)
        final = None
        try:
            def insert(c):
                nonlocal final
                version = (c.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name = ?",
                                     (name,)).fetchone()[0]) + 1
                final = self.root / "models" / name / str(version)
                shutil.rmtree(final, ignore_errors=True)  # left by a process killed before its commit; no row owns it
                staging.rename(final)
                c.execute("INSERT INTO models (name, version, created_at, created_by, description, estimator,"
                          " metrics_json, run_id, dataset, dataset_version, path, tags_json)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (name, version, utcnow(), canonical(created_by), description, estimator, json.dumps(dict(metrics)),
                           run_id, dataset, dataset_version, str(final.relative_to(self.root)), json.dumps(dict(tags or {}))))
                audit.record(c, created_by, "model.register", f"{name}:{version}", role=role,
                             after={"run": run_id, "metrics": dict(metrics)})
                return version
            if conn is not None:
                return insert(conn)
            with self.db.write() as c:
                return insert(c)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            raise

    def set_alias(self, name: str, alias: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "set_alias")
        check_name(alias, "alias")
        self.get(name, version)
        with self.db.write() as c:
            old = c.execute("SELECT version FROM model_aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
            c.execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?)"
                      " ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version", (name, alias, int(version)))
            c.execute("UPDATE models SET archived = 0 WHERE name = ? AND version = ?", (name, int(version)))
            audit.record(c, actor, "model.alias", f"{name}@{alias}", role=role,
                         before={"version": old[0]} if old else None, after={"version": int(version)})
        return self.get(name, version)

    def set_tags(self, name: str, version: int, tags: Mapping[str, str | None], actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "edit_model")
        check_tags(tags)
        mv = self.get(name, version)
        new = dict(mv.tags)
        for key, value in tags.items():
            if not key or len(key) > 128:
                raise InvalidInput(f"invalid tag key {key!r}")
            if value is None:
                new.pop(key, None)
            else:
                new[key] = str(value)
        with self.db.write() as c:
            raw = json.loads(c.execute("SELECT tags_json FROM models WHERE name = ? AND version = ?",
                                       (name, mv.version)).fetchone()[0])
            stored = {**new, **{k: v for k, v in raw.items() if k.startswith(PREFIX)}}  # the provenance stays
            c.execute("UPDATE models SET tags_json = ? WHERE name = ? AND version = ?",
                      (json.dumps(stored), name, mv.version))
            audit.record(c, actor, "model.tags", mv.ref, role=role, before=dict(mv.tags), after=new)
        return self.get(name, version)

    def set_description(self, name: str, version: int, description: str, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "edit_model")
        mv = self.get(name, version)
        with self.db.write() as c:
            c.execute("UPDATE models SET description = ? WHERE name = ? AND version = ?",
                      (description, name, mv.version))
            audit.record(c, actor, "model.description", mv.ref, role=role,
                         before={"description": mv.description}, after={"description": description})
        return self.get(name, version)

    def archive(self, name: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "archive_model")
        mv = self.get(name, version)
        row = self.db.one("SELECT stage FROM releases WHERE model_name = ? AND model_version = ?", (name, mv.version))
        serving = [r["endpoint"] for r in self.db.query(
            "SELECT DISTINCT endpoint FROM deployments WHERE model_name = ? AND model_version = ? AND traffic > 0"
            " AND desired = 'running' ORDER BY endpoint", (name, mv.version))]
        check_archive(mv, Stage(row["stage"]) if row else Stage.REGISTERED, serving)   # not champion, staged, serving
        return self._set_archived(mv, True, actor, role)

    def restore(self, name: str, version: int, actor: str) -> ModelVersion:
        role = authorize(self.policy, actor, "archive_model")
        return self._set_archived(self.get(name, version), False, actor, role)

    def _set_archived(self, mv: ModelVersion, archived: bool, actor: str, role: str) -> ModelVersion:
        if mv.archived == archived:
            return mv  # idempotent
        with self.db.write() as c:
            c.execute("UPDATE models SET archived = ? WHERE name = ? AND version = ?",
                      (int(archived), mv.name, mv.version))
            audit.record(c, actor, "model.archive" if archived else "model.restore", mv.ref, role=role)
        return self.get(mv.name, mv.version)
