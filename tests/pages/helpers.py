"""What the page tests share: open a page as someone, act, read what it says."""
from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui import state

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, actor: str | None = None, query: dict | None = None) -> AppTest:
    """The console (app.py) switched to ``page``, acting as ``actor`` (default: the picker's ``local-user``)."""
    at = AppTest.from_file(APP, default_timeout=60)
    if actor:
        at.session_state[state.ACTOR] = actor
    at.run()
    at.query_params.update(query or {})
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def act(target) -> AppTest:
    """Run the app after an interaction (``target``: the AppTest or the widget just changed)."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, *kinds: str) -> str:
    """The text of the elements of these kinds (default: every kind that carries a message)."""
    kinds = kinds or ("markdown", "caption", "info", "success", "warning", "error")
    return as_read("\n".join(str(e.value) for kind in kinds for e in getattr(at, kind)))


def as_read(markdown: str) -> str:
    """What a reader sees of people's text in an element: its markdown escapes taken out
    (``ui.widgets.escaped`` puts a backslash before each markup character)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def arrange_stages(root: Path, stages: dict[int, str], deployed_by: str = "qa@contoso.com",
                   model: str = "diabetes-regressor") -> None:
    """Release stages in a local workspace's ledger as deploys and smoke tests would leave them, without
    processes (a deploy starts real servers: ~20 s each)."""
    db = sqlite3.connect(root / "tollgate.db")
    now = datetime.now(timezone.utc).isoformat()
    db.executemany("INSERT INTO releases (model_name, model_version, stage, deployed_by, updated_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT(model_name, model_version) DO UPDATE SET stage = excluded.stage",
                   [(model, v, stage, deployed_by, now) for v, stage in stages.items()])
    db.commit()
    db.close()
