"""HTTP requests per page render against the replayed Azure workspace (target: <= 10 cold, 0 warm).

    .venv/bin/python bench/bench_azure_http.py [--workspace azure+replay://real] [--show PAGE] [--json bench/out/azure-http.json]

Renders each page of the console with Streamlit's AppTest on ``azure+replay://`` (the
demo fixtures of ``services/azure/fixtures`` answered through the real ``MLClient``,
``LogsQueryClient``, blob and MLflow clients by ``ReplayTransport``) and counts the
requests the transport answers:

* **cold** — the page's first render after ``st.cache_data.clear()`` and
  ``st.cache_resource.clear()``: a new workspace object, nothing cached anywhere;
* **warm** — a second render of the same AppTest right after (within every cache TTL);
* **expired** — a third render after every read cache expired (Streamlit's, the adapter's
  listings, the endpoints'), the workspace object kept: what a long-running console sends
  when a user comes back to a page (cold also pays the per-process reads: the workspace's
  MLflow URI, the datastore).

Every page is rendered once before the measured renders, so that one-off costs of the
process (first imports, the replay's model files) do not stretch a render past the
caches' TTLs (3 s for endpoints).

What a page shows collapsed is read when it is opened (the Endpoints page's keys and
console logs): not part of a render, so not counted. The Releases page reads the kept
evaluation of the staging candidate (written by its deploy), not the two models and the
dataset (``services.azure.workspace.AzureEvaluator``). ``tests/azure/test_azure_pages.py``
asserts the same budget per page.

``--workspace azure+replay://real`` measures the workspace replayed from the Azure SDK team's
recordings of real Azure (``services/azure/fixtures/real``) instead of the demo.
``--show PAGE`` prints the cold render's requests of that page. Exits 1 when a page
raises, or misses the target. (Replay requests cost no network time; the counts are what
a real workspace would be sent, so each one is a round trip of 50-300 ms there.)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

logging.disable(logging.WARNING)  # AppTest's "No runtime found" warnings, azure-ai-ml's activity log
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST = ["overview", "datasets", "runs", "models", "endpoints", "releases"]
PAGES = FIRST + sorted(p.stem for p in (ROOT / "pages").glob("*.py") if p.stem not in FIRST)
TARGET_COLD, TARGET_WARM = 10, 0


def _pages_via_navigation() -> None:
    """Run pages as the console does: app.py's st.navigation (as tests/conftest.py does)."""
    from streamlit.runtime import pages_manager
    original = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False
    pages_manager.PagesManager.__init__ = init


def measure(page: str, show: bool = False) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from services.azure.replay import ReplayTransport

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(f"pages/{page}.py")
    st.cache_data.clear()
    st.cache_resource.clear()
    ReplayTransport.journal = []
    at.run()
    cold_calls = list(ReplayTransport.journal)
    ReplayTransport.journal = []
    at.run()
    warm_calls = list(ReplayTransport.journal)
    # expired: the server's workspace object stays, every read cache has expired (UI and adapter)
    from ui import state as ui_state
    ws = ui_state._workspace(ui_state.uri())
    st.cache_data.clear()
    ws.cache.invalidate()
    if ws.endpoints is not None and hasattr(ws.endpoints, "clear_cache"):
        ws.endpoints.clear_cache()
    ReplayTransport.journal = []
    at.run()
    expired = len(ReplayTransport.journal)
    ReplayTransport.journal = None
    cold, warm = len(cold_calls), len(warm_calls)
    if show:
        for label, calls in (("cold", cold_calls), ("warm", warm_calls)):
            print(f"  {page} {label}:")
            for c in calls:
                where = c.path.split("/workspaces/", 1)[-1] if "/workspaces/" in c.path else c.path
                print(f"    {c.status} {c.method:6s} {c.host.split('.')[0]:22s} {where[:110]}")
    problem = at.exception[0].message.splitlines()[0][:160] if at.exception else None
    return {"page": page, "cold": cold, "warm": warm, "expired": expired, "problem": problem,
            "ok": problem is None and cold <= TARGET_COLD and warm <= TARGET_WARM}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", help="print the requests of this page's cold render")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "azure-http.json")
    ap.add_argument("--workspace", default="azure+replay://", help="a replayed workspace (azure+replay://…)")
    ap.add_argument("pages", nargs="*", default=PAGES)
    args = ap.parse_args(argv)
    os.environ["TOLLGATE_WORKSPACE"] = args.workspace
    _pages_via_navigation()
    for page in args.pages:  # first imports (scikit-learn, azure-ai-ml's models) and fitted-model files:
        measure(page)        # one-off costs that would stretch a render past the caches' TTLs
    rows = []
    print(f"{'page':16s} {'cold':>5s} {'warm':>5s} {'expired':>8s}  (target <= {TARGET_COLD} cold, {TARGET_WARM} warm)")
    for page in args.pages:
        row = measure(page, show=(page == args.show))
        rows.append(row)
        verdict = "PASS" if row["ok"] else "FAIL"
        print(f"{page:16s} {row['cold']:5d} {row['warm']:5d} {row['expired']:8d}  {verdict}"
              + (f"  {row['problem']}" if row["problem"] else ""), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
