"""Server time of the console's pages on a large workspace (target: every page <= 1 s).

    .venv/bin/python bench/bench_pages.py [--reuse] [--repeats 5] [--scale 10] [--workspace PATH]
    make bench

Seeds ``bench/out/ws-large`` with ``bench/seed_large.py`` (10,000 runs, 2,000 model
versions, 50 dataset versions; ``--scale 10``: 100,000 runs and 20,000 versions in
``bench/out/ws-large-x10``; ``--reuse`` keeps an existing one), points
``TOLLGATE_WORKSPACE`` at it, then measures:

* each page's full render in AppTest (the script run on the server; no browser), and
  ``SCENARIOS``, the heaviest states one click away:
  **cold** = a fresh AppTest whose first render of the page follows
  ``st.cache_data.clear()`` and ``st.cache_resource.clear()`` (the workspace is
  reopened, every read goes to SQLite), **warm** = a second ``at.run()`` on the
  same AppTest (cached reads); the median of ``--repeats``;
* the list queries behind the pages, called on the workspace object directly
  (no cache), median of a few calls.

Prints a table with PASS/FAIL against the target, writes it as JSON to
``bench/out/results-x<scale>.json`` (and ``results.json``); at a scale above 1, each
figure's growth against ``results-x1.json`` of an earlier run (at 10x the data, growing
at most linearly means a ratio of at most 10). Exits 1 if a page misses the target or fails to
render. The seeded active runs are attached to a placeholder ``sleep`` process
for the duration, so ``reconcile()`` sees live jobs as in a real workspace.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

logging.disable(logging.WARNING)  # AppTest's "No runtime found" / "missing ScriptRunContext" warnings
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from seed_large import SEED_FILE, attach_active_runs, seed_large  # noqa: E402

OUT = ROOT / "bench" / "out"
# Endpoints and Releases render without endpoints here: the seed starts no processes
PAGES = [("Overview", "pages/overview.py"), ("Runs", "pages/runs.py"),
         ("Models", "pages/models.py"), ("Datasets", "pages/datasets.py"),
         ("Endpoints", "pages/endpoints.py"), ("Releases", "pages/releases.py")]


def choose(key: str, label: str) -> Callable:
    """A setup step: pick the option shown as ``label`` in the selectbox ``key``."""
    def setup(at) -> None:
        box = at.selectbox(key=key)
        box.select_index(list(box.options).index(label))
    return setup


def switch_on(key: str) -> Callable:
    def setup(at) -> None:
        at.toggle(key=key).set_value(True)
    return setup


# the heaviest states a user reaches in one click: (label, page, setup of the widgets)
SCENARIOS = [("Runs · Show: all runs", "pages/runs.py", choose("runs.f.window", "all runs")),
             ("Models · archived versions shown", "pages/models.py", switch_on("models.show_archived"))]
TARGET_S = 1.0
RUN_LIMIT = 500  # a page-sized slice of the runs list
SERVICE_ERROR_ICON = "🚫"  # the icon of ui.widgets.show_error


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = timed(fn)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def clear_caches() -> None:
    import streamlit as st
    st.cache_data.clear()
    st.cache_resource.clear()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (CPU of the whole process: AppTest runs the script in a thread)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def render_page(page: str, repeats: int, setup: Callable | None = None) -> dict:
    """Cold and warm server time of one page's full render (median over ``repeats``).
    ``setup(at)`` sets widgets on the rendered page first (a scenario)."""
    from streamlit.testing.v1 import AppTest

    cold, warm, cold_cpu, warm_cpu, problem, placeholder = [], [], [], [], None, False
    for _ in range(repeats):
        clear_caches()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()  # AppTest needs one run before switch_page
        at.switch_page(page)
        if setup is not None:
            at.run()
            try:
                setup(at)
            except (KeyError, ValueError, IndexError) as e:
                return {"cold_s": 0.0, "warm_s": 0.0, "cold_cpu_s": 0.0, "warm_cpu_s": 0.0, "placeholder": False,
                        "problem": f"the scenario's widget is not on the page ({type(e).__name__}: {e})"}
        clear_caches()
        for walls, cpus in ((cold, cold_cpu), (warm, warm_cpu)):
            wall, cpu = timed(at.run)
            walls.append(wall)
            cpus.append(cpu)
        if at.exception:
            problem = at.exception[0].message.splitlines()[0][:160]
        # a ServiceError the page showed (ui.widgets.show_error); other st.error calls are page content
        errors = [e.value for e in at.error if e.icon == SERVICE_ERROR_ICON]
        if errors and problem is None:
            problem = f"service error: {errors[0].splitlines()[0][:160]}"
        placeholder = any("coming soon" in str(i.value).lower() for i in at.info)
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
            "cold_cpu_s": statistics.median(cold_cpu), "warm_cpu_s": statistics.median(warm_cpu),
            "problem": problem, "placeholder": placeholder}


def profile_page(page: str, top: int, setup: Callable | None = None) -> None:
    """cProfile of one cold and one warm render of ``page`` (the script thread only)."""
    import cProfile
    import pstats

    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
    from streamlit.testing.v1 import AppTest

    profiler = cProfile.Profile()
    original = ScriptRunner._run_script

    def profiled(self, *args, **kwargs):
        profiler.enable()
        try:
            return original(self, *args, **kwargs)
        finally:
            profiler.disable()

    clear_caches()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    if setup is not None:
        at.run()
        setup(at)
    ScriptRunner._run_script = profiled
    try:
        for kind in ("cold", "warm"):
            if kind == "cold":
                clear_caches()
            profiler = cProfile.Profile()
            wall, _ = timed(at.run)
            out = OUT / f"profile-{Path(page).stem}{'-scenario' if setup else ''}-{kind}.prof"
            profiler.dump_stats(out)
            print(f"\n=== {page} {kind}: {wall * 1000:.0f} ms ({out}) ===")
            stats = pstats.Stats(str(out)).strip_dirs()
            stats.sort_stats("cumulative").print_stats(top)
            stats.sort_stats("tottime").print_stats(top)
    finally:
        ScriptRunner._run_script = original


def harness_overhead(repeats: int) -> dict:
    """AppTest's own cost (first and second run) for a script that only writes a title."""
    from streamlit.testing.v1 import AppTest

    cold, warm = [], []
    for _ in range(repeats):
        at = AppTest.from_string("import streamlit as st\nst.title('x')", default_timeout=60)
        t = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm)}


def measure_queries(root: Path, repeats: int) -> list[tuple[str, float, float]]:
    from services.entities import RunFilter
    from services.local.workspace import LocalWorkspace
    from services.run_search import parse_condition
    from ui.runs_view import PAGE_SIZE
    from ui.state import runs_frame

    ws = LocalWorkspace(root)
    model = ws.policy.model_name
    latest = ws.models.get(model).version
    all_runs = ws.jobs.list()
    ridge_under_55 = RunFilter(estimators=("ridge",), metrics=(parse_condition("rmse < 55")[1],), limit=RUN_LIMIT)
    week_ago = datetime.now(timezone.utc) - timedelta(days=7)
    queries: list[tuple[str, Callable[[], object], int]] = [
        ("ws.jobs.list()", lambda: ws.jobs.list(), repeats),
        (f"ws.jobs.list(RunFilter(limit={RUN_LIMIT}))", lambda: ws.jobs.list(RunFilter(limit=RUN_LIMIT)), repeats),
        ("ws.jobs.list(RunFilter(since=7 days ago))", lambda: ws.jobs.list(RunFilter(since=week_ago)), repeats),
        (f"ws.jobs.list(ridge, rmse < 55, limit={RUN_LIMIT})", lambda: ws.jobs.list(ridge_under_55), repeats),
        (f"ws.jobs.list(RunFilter(limit={PAGE_SIZE}, offset=half the runs))",
         lambda: ws.jobs.list(RunFilter(limit=PAGE_SIZE, offset=len(all_runs) // 2)), repeats),
        ("ui.state.runs_frame(all runs)", lambda: runs_frame(all_runs), repeats),
        ("ws.jobs.experiments()", lambda: ws.jobs.experiments(), repeats),
        (f"ws.models.versions({model!r})", lambda: ws.models.versions(model), repeats),
        (f"ws.models.champion({model!r})", lambda: ws.models.champion(model), repeats),
        ("ws.datasets.all_versions()", lambda: ws.datasets.all_versions(), repeats),
        ("ws.releases.audit(limit=50)", lambda: ws.releases.audit(limit=50), repeats),
        (f"ws.evaluation.compare({model!r}, latest)", lambda: ws.evaluation.compare(model, latest), repeats),
    ]
    try:
        return [(label, *median_time(fn, n)) for label, fn, n in queries]
    finally:
        ws.close()


def print_markdown(pages: dict, overhead: dict, queries: list[tuple[str, float, float]]) -> None:
    ms = lambda s: f"{s * 1000:,.0f} ms"  # noqa: E731
    print("\n| page (AppTest full render) | cold | warm | CPU cold / warm | ≤ 1 s |\n|---|---:|---:|---:|---|")
    for label, r in pages.items():
        ok = "error" if r["problem"] else verdict(max(r["cold_s"], r["warm_s"])).lower()
        print(f"| {label} | {ms(r['cold_s'])} | {ms(r['warm_s'])} | "
              f"{r['cold_cpu_s'] * 1000:,.0f} / {r['warm_cpu_s'] * 1000:,.0f} ms | {ok} |")
    print(f"| *AppTest alone (one-line script)* | {ms(overhead['cold_s'])} | {ms(overhead['warm_s'])} | | |")
    print("\n| list query (direct, uncached) | time | CPU | ≤ 1 s |\n|---|---:|---:|---|")
    for label, seconds, cpu in queries:
        print(f"| `{label}` | {ms(seconds)} | {ms(cpu)} | {verdict(seconds).lower()} |")


def print_growth(now: dict, base_path: Path) -> None:
    """Each figure against the same figure at scale 1 (an earlier run's ``results-x1.json``), on CPU time:
    the steadier figure on a shared machine."""
    if not base_path.exists():
        print(f"\n(no {base_path.name}: run with --scale 1 first to see how each figure grows)")
        return
    base = json.loads(base_path.read_text())
    print(f"\n| at scale {now['scale']} vs 1 ({base['workspace']['runs']:,} → {now['workspace']['runs']:,} runs), "
          f"CPU time | scale 1 | scale {now['scale']} | growth |\n|---|---:|---:|---:|")
    rows = [(f"{label}, cold", base["pages"][label]["cold_cpu_s"], r["cold_cpu_s"])
            for label, r in now["pages"].items() if label in base["pages"]]
    rows += [(f"`{label}`", base["queries"][label]["cpu_s"], r["cpu_s"])
             for label, r in now["queries"].items() if label in base["queries"]]
    for label, old, new in rows:
        print(f"| {label} | {old * 1000:,.0f} ms | {new * 1000:,.0f} ms | {new / old if old > 0.0005 else float('nan'):.1f}x |")


def verdict(seconds: float) -> str:
    return "PASS" if seconds <= TARGET_S else "FAIL"


def main(argv: list[str] | None = None) -> int:
    global TARGET_S
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=1, help="x 10,000 runs and x 2,000 model versions (default 1)")
    ap.add_argument("--workspace", type=Path, help="default bench/out/ws-large, or ws-large-x<scale>")
    ap.add_argument("--reuse", action="store_true", help="keep an already seeded workspace")
    ap.add_argument("--repeats", type=int, default=5, help="renders per page (the median is reported)")
    ap.add_argument("--target", type=float, default=TARGET_S, help="seconds a page may take")
    ap.add_argument("--pages", default=",".join(p for _, p in PAGES),
                    help="comma-separated page files to measure")
    ap.add_argument("--markdown", action="store_true", help="also print the tables in Markdown (for docs/benchmarks.md)")
    ap.add_argument("--no-scenarios", action="store_true", help="only the default render of each page")
    ap.add_argument("--profile", metavar="PAGE", help="instead of the table: cProfile one cold and one warm "
                    "render of PAGE (e.g. pages/runs.py, or a scenario's label such as 'Runs · Show: all runs');"
                    " stats go to bench/out/profile-*.prof")
    ap.add_argument("--top", type=int, default=30, help="rows of profile output")
    args = ap.parse_args(argv)
    TARGET_S = args.target
    root = (args.workspace or OUT / ("ws-large" if args.scale == 1 else f"ws-large-x{args.scale}")).resolve()

    if args.reuse and (root / SEED_FILE).exists():
        print(f"reusing {root}")
    else:
        if root.exists():
            import shutil
            shutil.rmtree(root)
        seed_large(root, runs=10_000 * args.scale, models=2_000 * args.scale, say=lambda m: print(f"  seed: {m}"))
    seed = json.loads((root / SEED_FILE).read_text())

    # a live process for the seeded running/queued runs to belong to
    placeholder = subprocess.Popen(["sleep", "3600"], start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        attach_active_runs(root, placeholder.pid)
        os.environ["TOLLGATE_WORKSPACE"] = f"local://{root}"
        os.chdir(ROOT)
        if args.profile:
            OUT.mkdir(parents=True, exist_ok=True)
            page, setup = next(((p, s) for label, p, s in SCENARIOS if label == args.profile), (args.profile, None))
            render_page(page, 1)  # imports out of the way
            profile_page(page, args.top, setup)
            return 0
        return report(root, seed, args)
    finally:
        placeholder.terminate()
        placeholder.wait()


def report(root: Path, seed: dict, args) -> int:
    chosen = [(label, page) for label, page in PAGES if page in args.pages.split(",")]
    print(f"workspace {root}: " + ", ".join(f"{v} {k}" for k, v in seed["counts"].items()))
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; target {TARGET_S:g} s per page; median of {args.repeats}\n")

    render_page(chosen[0][1], 1)  # warm-up: imports and first-run costs out of the figures
    overhead = harness_overhead(args.repeats)
    pages = {label: render_page(page, args.repeats) for label, page in chosen}
    if not args.no_scenarios:
        pages.update({label: render_page(page, args.repeats, setup) for label, page, setup in SCENARIOS
                      if page in args.pages.split(",")})
    queries = measure_queries(root, max(3, args.repeats))

    failed = False
    print(f"{'page (AppTest full render)':42} {'cold':>9} {'warm':>9}  verdict"
          f"{'':12}cpu: cold / warm")
    for label, r in pages.items():
        bad = r["problem"] is not None or max(r["cold_s"], r["warm_s"]) > TARGET_S
        failed |= bad
        note = (f"ERROR: {r['problem']}" if r["problem"] else verdict(max(r["cold_s"], r["warm_s"])))
        if r["placeholder"]:
            note += " (placeholder page)"
        print(f"{label:42} {r['cold_s'] * 1000:7.0f}ms {r['warm_s'] * 1000:7.0f}ms  {note:18} "
              f"{r['cold_cpu_s'] * 1000:5.0f} / {r['warm_cpu_s'] * 1000:.0f} ms")
    print(f"{'(AppTest alone: a one-line script)':42} {overhead['cold_s'] * 1000:7.0f}ms "
          f"{overhead['warm_s'] * 1000:7.0f}ms")
    print(f"\n{'list query (direct, uncached)':52} {'time':>9}  verdict  cpu")
    for label, seconds, cpu in queries:
        print(f"{label:52} {seconds * 1000:7.0f}ms  {verdict(seconds)}     {cpu * 1000:.0f} ms")

    OUT.mkdir(parents=True, exist_ok=True)
    results = json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "python": platform.python_version(), "target_s": TARGET_S,
        "load_average": os.getloadavg(), "scale": args.scale,
        "repeats": args.repeats, "workspace": seed["counts"], "harness_s": overhead,
        "pages": pages, "queries": {label: {"s": s, "cpu_s": cpu} for label, s, cpu in queries},
    }, indent=2)
    (OUT / "results.json").write_text(results)
    (OUT / f"results-x{args.scale}.json").write_text(results)
    if args.markdown:
        print_markdown(pages, overhead, queries)
    if args.scale != 1:
        print_growth(json.loads(results), OUT / "results-x1.json")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"\nnote: load average {load:.1f} on {os.cpu_count()} cores: other processes competed for the CPU,"
              " so wall times are inflated (compare the CPU column)")
    print(f"\n{'FAIL: a page misses the target' if failed else 'PASS: every page within the target'}"
          f" ({OUT / 'results.json'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
