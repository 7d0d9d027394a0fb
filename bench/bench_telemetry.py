"""The Monitoring page's views over millions of requests: ours vs DuckDB (and pandas), by size.

    .venv/bin/python bench/bench_telemetry.py                         # 1,000,000 and 5,000,000 requests over 7 days
    .venv/bin/python bench/bench_telemetry.py --sizes 1000000 --reuse # one size, keep bench/out/ws-telemetry-N
    .venv/bin/python bench/bench_telemetry.py --sizes 1000000,5000000,20000000   # 20M on request (~30 min to seed)
    .venv/bin/python bench/bench_telemetry.py --quick                 # CI smoke: 20,000 records, no doc written
    .venv/bin/python bench/bench_telemetry.py --simulate-days 30 --rps 20         # retention: 30 days at 20 req/s

For each size, in one run, over the same rows (``bench/telemetry_data.py``, written through
``telemetry_store.append`` in batches of 50,000):

* **ours**: each Monitoring view of ``LocalTelemetry`` — ``series``, ``stats``, ``status_mix``,
  ``top_errors``, ``slowest`` — for ``w = window("7d")`` (2 h bins): the median of
  ``--repeats`` *warm* calls (the same object again) and of *cold-ish* ones (a new
  ``LocalTelemetry``: a fresh SQLite connection, empty page cache; the OS file cache stays warm).
  Targets: every view <= 100 ms warm, <= 0.5x DuckDB's time for the same view, and at the
  largest size less than 2x its time at the smallest.
* **DuckDB**: the columns the views need read once from SQLite into an in-memory DuckDB table
  (load time reported apart, not counted), then each view as SQL: ``time_bucket`` +
  ``count(*) FILTER`` + exact ``quantile_disc``, ``GROUP BY`` status, error, ``ORDER BY
  latency_ms DESC LIMIT 10``. **pandas**: series + stats, as before.

Checks, in the same run: every count of series, stats, status mix and top errors equals
DuckDB's; the slowest ten are DuckDB's ten; the window's total equals the rows written;
percentiles within 2.5 % of DuckDB's exact nearest-rank ones. Storage: the file per million
requests (the 7 days are all within the default retention, so nothing is pruned), per table.

``--simulate-days D --rps R``: writes D days of traffic at R requests/s day by day into a
fresh workspace, running the supervisor's retention (``retention.prune``, default
``[telemetry]``) after each day, and prints the file's size day by day: the bound it
stays under, and the 30-day views answered from the aggregates.

Writes ``bench/out/telemetry-results.json`` and, unless ``--quick`` or ``--no-doc``, the
results with the machine and its load into ``docs/benchmarks-telemetry.md`` (between the
``bench:results`` markers). Exits 1 if a target or a check fails.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.telemetry_data import generate, write  # noqa: E402
from services.local.logs import LocalLogs  # noqa: E402
from services.local.telemetry import LocalTelemetry  # noqa: E402
from services.local import retention  # noqa: E402
from services.local.telemetry_store import TELEMETRY_FILE, open_telemetry  # noqa: E402
from services.policy import TelemetryPolicy  # noqa: E402
from services.telemetry import window  # noqa: E402

OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "benchmarks-telemetry.md"
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SIM_START, SIM_END = "<!-- bench:retention:start -->", "<!-- bench:retention:end -->"
TARGET_MS = 100.0                 # each view, warm
DUCK_RATIO = 0.5                  # each view vs DuckDB's
GROWTH = 2.0                      # largest size vs smallest
VIEWS = ("series", "stats", "status_mix", "top_errors", "slowest")
TOLERANCE = 0.025
Q = (0.5, 0.95, 0.99)


# --- seeding ----------------------------------------------------------------------

def seed(root: Path, n: int, days: float, seed_value: int, reuse: bool):
    """The workspace folder with its telemetry.db; (data, seconds to generate, seconds to write)."""
    meta_path = root / "seeded.json"
    meta = {"n": n, "days": days, "seed": seed_value}
    t0 = time.perf_counter()
    data = generate(n, days, seed=seed_value)
    gen_s = time.perf_counter() - t0
    if reuse and meta_path.exists() and json.loads(meta_path.read_text()).get("meta") == meta:
        return data, gen_s, json.loads(meta_path.read_text())["write_s"], True
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    db = open_telemetry(root)
    write_s = write(db, data)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    meta_path.write_text(json.dumps({"meta": meta, "write_s": write_s}))
    return data, gen_s, write_s, False


# --- ours -------------------------------------------------------------------------

def views(tel: LocalTelemetry, w) -> dict:
    return {"series": lambda: tel.series(w), "stats": lambda: tel.stats(w), "status_mix": lambda: tel.status_mix(w),
            "top_errors": lambda: tel.top_errors(w), "slowest": lambda: tel.slowest(w)}


def time_ours(root: Path, w, repeats: int) -> dict:
    """Per view: warm and cold-ish wall times and CPU, and the last answer (for the checks)."""
    out = {}
    for name in VIEWS:
        cold, warm, warm_cpu = [], [], []
        for _ in range(repeats):
            tel = LocalTelemetry(root, LocalLogs(root))  # a fresh connection: SQLite's page cache is empty
            t0 = time.perf_counter()
            views(tel, w)[name]()
            cold.append(time.perf_counter() - t0)
            tel.close()
        tel = LocalTelemetry(root, LocalLogs(root))
        fn = views(tel, w)[name]
        answer = fn()
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            answer = fn()
            warm.append(time.perf_counter() - t0)
            warm_cpu.append(time.process_time() - c0)
        tel.close()
        out[name] = {"cold": cold, "warm": warm, "warm_cpu": warm_cpu, "answer": answer}
    return out


def profile_ours(root: Path, w) -> str:
    tel = LocalTelemetry(root, LocalLogs(root))
    fns = views(tel, w)
    for fn in fns.values():
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        for fn in fns.values():
            fn()
    prof.disable()
    tel.close()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    return buf.getvalue()


# --- baselines --------------------------------------------------------------------

def load_frame(root: Path) -> pd.DataFrame:
    """The columns the views need, as gateways recorded them (series resolved)."""
    conn = sqlite3.connect(root / TELEMETRY_FILE)
    cur = conn.execute("SELECT r.ts, s.endpoint, s.deployment, s.model, r.status, r.latency_ms, r.error"
                       " FROM requests r JOIN series s ON s.id = r.series")
    df = pd.DataFrame(cur.fetchall(), columns=["ts", "endpoint", "deployment", "model", "status", "latency_ms",
                                               "error"])
    conn.close()
    df["deployment"] = df["deployment"].replace("", "(none)")
    df["model"] = df["model"].replace("", "(none)")
    df["error"] = df["error"].fillna("")
    for c in ("endpoint", "deployment", "model", "error"):
        df[c] = df[c].astype("category")
    return df


def load_duckdb(df: pd.DataFrame):
    import duckdb
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.register("frame", df)
    con.execute("CREATE TABLE requests AS SELECT ts, make_timestamp(CAST(round(ts * 1e6) AS BIGINT)) AS t,"
                " CAST(endpoint AS VARCHAR) AS endpoint, CAST(deployment AS VARCHAR) AS deployment,"
                " CAST(model AS VARCHAR) AS model, status, latency_ms, CAST(error AS VARCHAR) AS error FROM frame")
    con.unregister("frame")
    return con


DUCK_SERIES = """
SELECT time_bucket(to_seconds(CAST(? AS BIGINT)), t, make_timestamp(CAST(? AS BIGINT))) AS bin, endpoint, model,
       count(*) AS requests,
       count(*) FILTER (WHERE status >= 500 OR status = 0) AS failures,
       count(*) FILTER (WHERE status >= 400 AND status < 500) AS client_errors,
       quantile_disc(latency_ms, [0.5, 0.95, 0.99]) AS q
FROM requests WHERE ts >= ? AND ts < ? GROUP BY ALL"""
DUCK_STATS = """
SELECT endpoint, deployment, model,
       count(*) AS requests,
       count(*) FILTER (WHERE status >= 500 OR status = 0) AS failures,
       count(*) FILTER (WHERE status >= 400 AND status < 500) AS client_errors,
       quantile_disc(latency_ms, [0.5, 0.95, 0.99]) AS q,
       quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS qc
FROM requests WHERE ts >= ? AND ts < ? GROUP BY ALL"""
DUCK_STATUS = "SELECT status, model, count(*) AS requests FROM requests WHERE ts >= ? AND ts < ? GROUP BY ALL"
DUCK_ERRORS = """
SELECT error, status, count(*) AS requests, min(ts) AS first_ts, max(ts) AS last_ts
FROM requests WHERE ts >= ? AND ts < ? AND (status >= 400 OR status = 0) GROUP BY ALL
ORDER BY requests DESC, last_ts DESC LIMIT 10"""
DUCK_SLOWEST = "SELECT latency_ms FROM requests WHERE ts >= ? AND ts < ? ORDER BY latency_ms DESC LIMIT 10"


def duck_views(con, w) -> dict:
    start, end = w.start.timestamp(), w.end.timestamp()
    origin = np.floor(start / w.bin_seconds) * w.bin_seconds
    return {"series": lambda: con.execute(DUCK_SERIES, [w.bin_seconds, int(origin * 1e6), start, end]).df(),
            "stats": lambda: con.execute(DUCK_STATS, [start, end]).df(),
            "status_mix": lambda: con.execute(DUCK_STATUS, [start, end]).df(),
            "top_errors": lambda: con.execute(DUCK_ERRORS, [start, end]).df(),
            "slowest": lambda: con.execute(DUCK_SLOWEST, [start, end]).df()}


def pandas_queries(df: pd.DataFrame, w):
    start, end = w.start.timestamp(), w.end.timestamp()
    origin = np.floor(start / w.bin_seconds) * w.bin_seconds
    sel = df[(df["ts"] >= start) & (df["ts"] < end)]
    status = sel["status"].to_numpy()
    sel = sel.assign(bin=((sel["ts"].to_numpy() - origin) // w.bin_seconds).astype(np.int64),
                     failure=(status >= 500) | (status == 0), client=(status >= 400) & (status < 500))
    out = []
    for keys in (["bin", "endpoint", "model"], ["endpoint", "deployment", "model"]):
        g = sel.groupby(keys, observed=True, sort=False)
        agg = g.agg(requests=("latency_ms", "size"), failures=("failure", "sum"), client_errors=("client", "sum"))
        q = g["latency_ms"].quantile(list(Q)).unstack()
        out.append(agg.join(q))
    return out


def time_it(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (CPU of every thread of the process) of ``repeats`` warm runs."""
    fn()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


# --- checks -----------------------------------------------------------------------

def compare(o: dict, d: dict, n_written: int) -> dict:
    """``o``: our answers per view, ``d``: DuckDB's."""
    our_series, our_stats, duck_series, duck_stats = o["series"], o["stats"], d["series"], d["stats"]
    problems = []
    # series: per (bin, endpoint, model)
    a = our_series.assign(bin=our_series["bin"].dt.tz_convert(None).astype("datetime64[us]"))
    b = duck_series.assign(bin=pd.to_datetime(duck_series["bin"]).astype("datetime64[us]"))
    m = a.merge(b, on=["bin", "endpoint", "model"], how="outer", suffixes=("", "_duck"), indicator=True)
    if (m["_merge"] != "both").any():
        problems.append(f"series groups differ: {int((m['_merge'] != 'both').sum())} only on one side")
    m = m[m["_merge"] == "both"]
    for c in ("requests", "failures", "client_errors"):
        if not (m[c].astype(np.int64) == m[f"{c}_duck"].astype(np.int64)).all():
            problems.append(f"series {c} differ in {int((m[c] != m[c + '_duck']).sum())} bins")
    exact = np.array(m["q"].tolist(), dtype=float)
    got = m[["p50_ms", "p95_ms", "p99_ms"]].to_numpy(dtype=float)
    series_err = np.abs(got - exact) / exact
    # stats: per (endpoint, deployment, model)
    s = pd.DataFrame([{"endpoint": v.endpoint, "deployment": v.deployment or "(none)",
                       "model": v.model or "(none)", "requests": v.requests, "failures": v.failures,
                       "client_errors": v.client_errors, "p50": v.p50_ms, "p95": v.p95_ms, "p99": v.p99_ms}
                      for v in our_stats])
    m2 = s.merge(duck_stats, on=["endpoint", "deployment", "model"], how="outer", suffixes=("", "_duck"),
                 indicator=True)
    if (m2["_merge"] != "both").any():
        problems.append("stats groups differ")
    m2 = m2[m2["_merge"] == "both"]
    for c in ("requests", "failures", "client_errors"):
        if not (m2[c].astype(np.int64) == m2[f"{c}_duck"].astype(np.int64)).all():
            problems.append(f"stats {c} differ")
    got2 = m2[["p50", "p95", "p99"]].to_numpy(dtype=float)
    stats_err = np.abs(got2 - np.array(m2["q"].tolist(), dtype=float)) / np.array(m2["q"].tolist(), dtype=float)
    cont_err = np.abs(got2 - np.array(m2["qc"].tolist(), dtype=float)) / np.array(m2["qc"].tolist(), dtype=float)
    total = int(our_series["requests"].sum())
    if total != n_written or sum(v.requests for v in our_stats) != n_written:
        problems.append(f"total {total} != {n_written} written")
    max_err = float(max(series_err.max(), stats_err.max()))
    if max_err > TOLERANCE:
        problems.append(f"percentile error {max_err:.2%} > {TOLERANCE:.1%}")
    # status mix, top errors, slowest
    mix = o["status_mix"].groupby(["status", "model"])["requests"].sum().to_dict()
    if mix != d["status_mix"].groupby(["status", "model"])["requests"].sum().to_dict():
        problems.append("status mix differs")
    ours_err = {(g.message if g.message != "(no message)" else "", g.status): g.count for g in o["top_errors"]}
    duck_err = {(r.error, r.status): r.requests for r in d["top_errors"].itertuples()}
    if ours_err != duck_err:
        problems.append(f"top errors differ: {ours_err} vs {duck_err}")
    if [r.latency_ms for r in o["slowest"]] != d["slowest"]["latency_ms"].tolist():
        problems.append("slowest requests differ")
    return {"problems": problems, "series_groups": len(m), "stats_groups": len(m2), "total": total,
            "max_rel_err": max_err, "max_rel_err_series": series_err.max(axis=0).tolist(),
            "max_rel_err_stats": stats_err.max(axis=0).tolist(), "mean_rel_err": float(series_err.mean()),
            "max_rel_err_stats_vs_cont": cont_err.max(axis=0).tolist(), "status_groups": len(mix),
            "error_groups": len(ours_err)}


def storage(root: Path, n: int) -> dict:
    path = root / TELEMETRY_FILE
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    try:
        tables = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"))
    except sqlite3.OperationalError:
        tables = {}
    rollup_rows = dict(conn.execute("SELECT span, COUNT(*) FROM rollup GROUP BY span"))
    conn.close()
    size = sum(p.stat().st_size for p in root.glob(TELEMETRY_FILE + "*"))
    return {"file_bytes": size, "per_million_bytes": size * 1e6 / n, "tables": tables, "rollup_rows": rollup_rows}


# --- one size ---------------------------------------------------------------------

def run_size(n: int, args) -> dict:
    root = args.out / f"ws-telemetry-{n}"
    print(f"seeding {n:,} records over {args.days:g} days into {root} …", flush=True)
    data, gen_s, write_s, reused = seed(root, n, args.days, args.seed, args.reuse)
    print(f"  generated in {gen_s:.1f} s, written in {write_s:.1f} s{' (earlier run, reused)' if reused else ''}")
    span = f"{args.days:g}d"
    w = window(span, end=datetime.fromtimestamp(data.end, tz=timezone.utc))
    del data
    uptime_before = machine()["uptime"]
    print("ours …", flush=True)
    o = time_ours(root, w, args.repeats)
    print("loading into pandas and DuckDB …", flush=True)
    t0 = time.perf_counter()
    df = load_frame(root)
    load_frame_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    con = load_duckdb(df)
    load_duckdb_s = time.perf_counter() - t0
    print("DuckDB …", flush=True)
    duck, duck_answers = {}, {}
    for name, fn in duck_views(con, w).items():
        duck[name] = dict(zip(("times", "cpu"), time_it(fn, args.repeats)))
        duck_answers[name] = fn()
    print("pandas …", flush=True)
    pandas_times, pandas_cpu = time_it(lambda: pandas_queries(df, w), args.repeats)
    con.close()
    del df
    check = compare({k: v["answer"] for k, v in o.items()}, duck_answers, n)
    result = {
        "n": n, "days": args.days, "seed": args.seed, "repeats": args.repeats, "window": span,
        "bin_seconds": w.bin_seconds, "gen_s": gen_s, "write_s": write_s, "reused": reused,
        "load_frame_s": load_frame_s, "load_duckdb_s": load_duckdb_s,
        "ours": {k: {x: v[x] for x in ("cold", "warm", "warm_cpu")} for k, v in o.items()},
        "duckdb": duck, "pandas": {"times": pandas_times, "cpu": pandas_cpu}, "check": check,
        "storage": storage(root, n), "uptime_before": uptime_before, "uptime_after": machine()["uptime"],
    }
    if args.profile:
        print("\ncProfile of 3 warm runs of every view, by own time:\n" + profile_ours(root, w))
    return result


# --- retention over 30 days --------------------------------------------------------

def simulate(args) -> dict:
    """``--simulate-days`` days at ``--rps``, a day at a time, retention after each day."""
    root = args.out / f"ws-telemetry-retention-{args.rps:g}rps"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rules = TelemetryPolicy()
    db = open_telemetry(root)
    per_day = int(args.rps * 86400)
    end0 = time.time() - args.simulate_days * 86400
    days = []
    for d in range(args.simulate_days):
        t0 = time.perf_counter()
        day_end = end0 + (d + 1) * 86400
        write(db, generate(per_day, 1.0, end=day_end, seed=args.seed + d))
        written_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pruned = retention.prune(db, rules, now=day_end, budget_s=3600)
        prune_s = time.perf_counter() - t0
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in root.glob(TELEMETRY_FILE + "*"))
        raw = db.one("SELECT COUNT(*) FROM requests")[0]
        days.append({"day": d + 1, "file_bytes": size, "raw_rows": raw, "write_s": written_s, "prune_s": prune_s,
                     **{f"pruned_{k}": v for k, v in pruned.items()}})
        print(f"  day {d + 1:2d}: {size / 1e9:.2f} GB, {raw:,} raw rows, written in {written_s:.0f} s, "
              f"pruned {pruned['raw_rows']:,} rows in {prune_s:.1f} s", flush=True)
    end = datetime.fromtimestamp(end0 + args.simulate_days * 86400, tz=timezone.utc)
    tel = LocalTelemetry(root, LocalLogs(root))
    w = window("30d", end=end)
    timings = {name: time_it(fn, 3)[0] for name, fn in views(tel, w).items()}
    total = sum(s.requests for s in tel.stats(w))
    tel.close()
    db.close()
    return {"rps": args.rps, "days": days, "views_30d": timings, "requests_30d": total,
            "expected_30d": per_day * min(30, args.simulate_days), "rules": vars(rules) | {"capture": {}},
            "uptime": machine()["uptime"]}


# --- report -----------------------------------------------------------------------

def machine() -> dict:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    import duckdb
    return {"uptime": uptime, "cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "duckdb": duckdb.__version__, "pandas": pd.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def med(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB"


def load_of(uptime: str) -> str:
    return uptime.split("load average:")[-1].strip()


def verdicts(results: list[dict]) -> dict[str, bool]:
    first, last = results[0], results[-1]
    out = {}
    for r in results:
        for v in VIEWS:
            ours = med(r["ours"][v]["warm"])
            out[f"{r['n']:,} {v} <= {TARGET_MS:.0f} ms"] = ours * 1000 <= TARGET_MS
            out[f"{r['n']:,} {v} <= {DUCK_RATIO}x DuckDB"] = ours <= DUCK_RATIO * med(r["duckdb"][v]["times"])
        out[f"{r['n']:,} checks"] = not r["check"]["problems"]
    if len(results) > 1:
        for v in VIEWS:
            out[f"{v} {last['n']:,} vs {first['n']:,} < {GROWTH:g}x"] = \
                med(last["ours"][v]["warm"]) < GROWTH * med(first["ours"][v]["warm"])
    return out


def report(results: list[dict], info: dict) -> str:
    lines = [f"{info['cpus']} CPUs, {info['platform']}, Python {info['python']}, SQLite {info['sqlite']}, "
             f"DuckDB {info['duckdb']}, pandas {info['pandas']}, numpy {info['numpy']}; run {info['at']}.", ""]
    for r in results:
        lines += [f"**{r['n']:,} requests over {r['days']:g} days** (seed {r['seed']}), window `{r['window']}` "
                  f"({r['bin_seconds']} s bins), median of {r['repeats']}; load average before/after: "
                  f"`{load_of(r['uptime_before'])}` / `{load_of(r['uptime_after'])}`", "",
                  "| view | ours warm | CPU | ours cold-ish | DuckDB (in memory, 2 threads) | ours / DuckDB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for v in VIEWS:
            o, d = r["ours"][v], r["duckdb"][v]
            lines.append(f"| `{v}` | **{ms(med(o['warm']))}** | {ms(med(o['warm_cpu']))} | {ms(med(o['cold']))} | "
                         f"{ms(med(d['times']))} | {med(o['warm']) / med(d['times']):.2f} |")
        lines += ["", f"pandas (series + stats, in memory) {ms(med(r['pandas']['times']))}. Not counted: seeding "
                  f"(generate {ms(r['gen_s'])}, write through `telemetry_store.append` {ms(r['write_s'])} = "
                  f"{r['n'] / r['write_s']:,.0f} records/s{', an earlier run' if r['reused'] else ''}), loading into "
                  f"pandas {ms(r['load_frame_s'])} and DuckDB {ms(r['load_duckdb_s'])} more.", "",
                  "| check | result |", "|---|---|",
                  f"| counts of series / stats / status mix / top errors vs DuckDB, slowest ten | "
                  f"{'all equal' if not r['check']['problems'] else '; '.join(r['check']['problems'])} "
                  f"({r['check']['series_groups']} + {r['check']['stats_groups']} + {r['check']['status_groups']} + "
                  f"{r['check']['error_groups']} groups) |",
                  f"| total in the window | {r['check']['total']:,} of {r['n']:,} written |",
                  "| max relative error of p50 / p95 / p99 vs exact (`quantile_disc`), series | "
                  + " / ".join(f"{e:.2%}" for e in r["check"]["max_rel_err_series"]) + " |",
                  "| same, per-version stats | " + " / ".join(f"{e:.2%}" for e in r["check"]["max_rel_err_stats"]) + " |",
                  "", "| storage | bytes | per million requests |", "|---|---:|---:|",
                  f"| `telemetry.db` (after checkpoint) | {mb(r['storage']['file_bytes'])} | "
                  f"**{mb(r['storage']['per_million_bytes'])}** |"]
        lines += [f"| &nbsp; `{name}` | {mb(size)} | {mb(size * 1e6 / r['n'])} |"
                  for name, size in r["storage"]["tables"].items() if size * 1e6 / r["n"] >= 5e4]
        lines += ["", f"Aggregate rows: {', '.join(f'{n:,} per {60 if int(k) == 60 else 3600} s' for k, n in r['storage']['rollup_rows'].items())}.", ""]
    if len(results) > 1:
        first, last = results[0], results[-1]
        lines += [f"How each figure grows from {first['n']:,} to {last['n']:,} requests "
                  f"({last['n'] / first['n']:g}x the rows, the same 7 days):", "",
                  "| view | ours | DuckDB |", "|---|---:|---:|"]
        lines += [f"| `{v}` | {med(last['ours'][v]['warm']) / med(first['ours'][v]['warm']):.2f}x | "
                  f"{med(last['duckdb'][v]['times']) / med(first['duckdb'][v]['times']):.2f}x |" for v in VIEWS]
        lines += [f"| storage per million | {last['storage']['per_million_bytes'] / first['storage']['per_million_bytes']:.2f}x | |",
                  ""]
    failed = [k for k, ok in verdicts(results).items() if not ok]
    lines.append(f"Targets and checks: **{'all PASS' if not failed else 'FAIL: ' + '; '.join(failed)}**.")
    return "\n".join(lines)


def simulation_report(sim: dict) -> str:
    days = sim["days"]
    peak = max(d["file_bytes"] for d in days)
    rules = sim["rules"]
    lines = [f"**{len(days)} days at {sim['rps']:g} requests/s** ({int(sim['rps'] * 86400):,} a day), default "
             f"retention (raw {rules['raw_days']:g} d, per-minute {rules['minute_days']:g} d, hourly "
             f"{rules['hour_days']:g} d), retention run after each day; load average at the end `{load_of(sim['uptime'])}`.",
             "", "| day | `telemetry.db` | raw rows | written in | pruned rows | pruning took |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {d['day']} | {d['file_bytes'] / 1e9:.2f} GB | {d['raw_rows']:,} | {d['write_s']:.0f} s | "
              f"{d['pruned_raw_rows']:,} | {d['prune_s']:.1f} s |"
              for d in days if d["day"] in (1, 2, 7, 8, 9, 14, 21, 28, 29, 30) or d["day"] == len(days)]
    lines += ["", f"Peak file size {peak / 1e9:.2f} GB. The 30-day window, answered from the aggregates (the raw "
              f"rows of all but the last {rules['raw_days']:g}–{rules['raw_days'] + 1:g} days are gone): "
              f"{sim['requests_30d']:,} requests counted of {sim['expected_30d']:,} sent in those 30 days; views "
              + ", ".join(f"`{k}` {ms(med(v))}" for k, v in sim["views_30d"].items()) + "."]
    return "\n".join(lines)


def write_doc(text: str, start: str = MARK_START, end: str = MARK_END) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Telemetry benchmark\n\nWritten by `bench/bench_telemetry.py`.\n"
    if start not in doc:
        doc += "\n" + start + "\n" + end + "\n"
    head, rest = doc.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else "\n"
    DOC.write_text(head + start + "\n" + text + "\n" + end + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000", help="records per run, comma-separated")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20,000 records, no doc: a smoke test")
    ap.add_argument("--reuse", action="store_true", help="keep already seeded databases of the same sizes")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of our warm views")
    ap.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(ROOT)}")
    ap.add_argument("--simulate-days", type=int, help="instead: this many days of traffic with retention")
    ap.add_argument("--rps", type=float, default=20.0, help="requests per second of --simulate-days")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine() | {"at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if args.simulate_days:
        sim = simulate(args)
        text = simulation_report(sim)
        print("\n" + text)
        (args.out / "telemetry-retention.json").write_text(json.dumps(sim, indent=1, default=str))
        if not args.no_doc:
            write_doc(text, SIM_START, SIM_END)
        return 0
    sizes = [20_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    args.no_doc = args.no_doc or args.quick
    results = [run_size(n, args) for n in sizes]
    text = report(results, info)
    print()
    print(text)
    (args.out / "telemetry-results.json").write_text(json.dumps(results, indent=1, default=str))
    if not args.no_doc:
        write_doc(text)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    ok = all(verdicts(results).values())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
