"""Where an Azure ML data asset's data lives, and whether Tollgate can read it.

A data asset version is a ``uri_file``, a ``uri_folder`` or an ``mltable``, at an ``azureml://``
datastore path or at a plain storage URL (``https://``, ``wasbs://``, ``abfss://``…). Tollgate reads
one tabular file (CSV or Parquet) from a blob datastore of the workspace; for anything else it says
why on the version's row instead of failing when the page asks for the data.
"""
from __future__ import annotations

import re

DATASTORE_PATH = re.compile(r"^azureml://(?:[^?#]*/)?datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")
TABULAR = ("csv", "parquet")
READS = "Tollgate reads one CSV or Parquet file (a uri_file) on a datastore of the workspace"


def data_unreadable(kind: str, path: str, fmt: str) -> str:
    """Why the data at ``path`` (an Azure ML data type ``kind``, file format ``fmt``) cannot be
    read by Tollgate; ``""`` when it can."""
    if kind == "uri_folder":
        return f"a uri_folder (a folder of files): {READS}"
    if kind == "mltable":
        return f"an MLTable (a table definition over files): {READS}"
    if kind != "uri_file":
        return f"data of type {kind!r}: {READS}"
    if not DATASTORE_PATH.match(path or ""):
        scheme = (path or "").partition("://")[0] or "a relative path"
        return f"not on a datastore ({scheme}): {READS}"
    if fmt not in TABULAR:
        name = (path or "").rstrip("/").rsplit("/", 1)[-1]
        return f"{name!r} is not a CSV or Parquet file: {READS}"
    return ""
