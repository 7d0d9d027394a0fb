"""The Monitoring page's queries over a million requests: ours vs DuckDB vs pandas.

    .venv/bin/python bench/bench_telemetry.py                 # 1,000,000 records over 7 days (seeds ~1 min)
    .venv/bin/python bench/bench_telemetry.py --reuse         # keep bench/out/ws-telemetry-1000000
    .venv/bin/python bench/bench_telemetry.py --quick         # CI smoke: 20,000 records, no doc written
    .venv/bin/python bench/bench_telemetry.py --n 300000 --days 3 --repeats 7 --profile

In one run, over the same rows (``bench/telemetry_data.py``, written through
``telemetry_store.append`` in batches of 50,000):

* **ours**: ``LocalTelemetry.series(w)`` + ``LocalTelemetry.stats(w)`` for
  ``w = window("7d")`` (automatic bins: 2 h), the Monitoring page's charts (request
  rate, failure rate, p50/p95/p99 per model version) and its per-version table.
  Median of ``--repeats`` runs, *cold-ish* (a new ``LocalTelemetry`` each time:
  a fresh SQLite connection with an empty page cache; the OS file cache stays
  warm) and *warm* (the same object again). Target: warm median <= 300 ms.
* **DuckDB**: the ``requests`` columns read once from SQLite into DuckDB (load time
  reported apart, not counted), then the same two queries as SQL —
  ``time_bucket`` + ``count(*) FILTER`` + exact ``quantile_disc`` GROUP BY.
* **pandas**: the same frame in memory, ``groupby`` + ``quantile``.

Checks, in the same run: every count (requests, failures, client errors per bin,
endpoint and model; per endpoint, deployment and model) equals DuckDB's exactly, the
total equals the rows written, and our histogram percentiles are within 2.5 % of
DuckDB's exact nearest-rank ones (``quantile_disc``; max relative error printed).
Storage: file size and per table/index (``dbstat``) per million records.

Writes ``bench/out/telemetry-results.json`` and, unless ``--quick`` or ``--no-doc``,
the results with the machine and its load into ``docs/benchmarks-telemetry.md``
(between the ``bench:results`` markers). Exits 1 if the target or a check fails.
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
from services.local.telemetry import LocalLogs, LocalTelemetry  # noqa: E402
from services.local.telemetry_store import TELEMETRY_FILE, open_telemetry  # noqa: E402
from services.telemetry import window  # noqa: E402

OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "benchmarks-telemetry.md"
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
TARGET_MS = 300.0
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

def ours(tel: LocalTelemetry, w):
    return tel.series(w), tel.stats(w)


def time_ours(root: Path, w, repeats: int) -> dict:
    cold, warm, cold_cpu, warm_cpu = [], [], [], []
    for _ in range(repeats):
        tel = LocalTelemetry(root, LocalLogs(root))  # a fresh connection: SQLite's page cache is empty
        t0, c0 = time.perf_counter(), time.process_time()
        ours(tel, w)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)
        tel.db.close()
    tel = LocalTelemetry(root, LocalLogs(root))
    ours(tel, w)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        series, stats = ours(tel, w)
        warm.append(time.perf_counter() - t0)
        warm_cpu.append(time.process_time() - c0)
    parts = {}
    for name, fn in (("series", lambda: tel.series(w)), ("stats", lambda: tel.stats(w)),
                     ("status_mix", lambda: tel.status_mix(w)), ("top_errors", lambda: tel.top_errors(w)),
                     ("slowest", lambda: tel.slowest(w))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        parts[name] = statistics.median(times)
    tel.db.close()
    return {"cold": cold, "warm": warm, "cold_cpu": cold_cpu, "warm_cpu": warm_cpu, "parts": parts,
            "series": series, "stats": stats}


def profile_ours(root: Path, w) -> str:
    tel = LocalTelemetry(root, LocalLogs(root))
    ours(tel, w)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        ours(tel, w)
    prof.disable()
    tel.db.close()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    return buf.getvalue()


# --- baselines --------------------------------------------------------------------

def load_frame(root: Path) -> pd.DataFrame:
    conn = sqlite3.connect(root / TELEMETRY_FILE)
    cur = conn.execute("SELECT ts, endpoint, deployment, model, status, latency_ms FROM requests")
    df = pd.DataFrame(cur.fetchall(), columns=["ts", "endpoint", "deployment", "model", "status", "latency_ms"])
    conn.close()
    df["deployment"] = df["deployment"].fillna("(none)")
    df["model"] = df["model"].fillna("(none)")
    for c in ("endpoint", "deployment", "model"):
        df[c] = df[c].astype("category")
    return df


def load_duckdb(df: pd.DataFrame):
    import duckdb
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.register("frame", df)
    con.execute("CREATE TABLE requests AS SELECT ts, make_timestamp(CAST(round(ts * 1e6) AS BIGINT)) AS t,"
                " CAST(endpoint AS VARCHAR) AS endpoint, CAST(deployment AS VARCHAR) AS deployment,"
                " CAST(model AS VARCHAR) AS model, status, latency_ms FROM frame")
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


def duck_queries(con, w):
    start, end = w.start.timestamp(), w.end.timestamp()
    origin = np.floor(start / w.bin_seconds) * w.bin_seconds
    series = con.execute(DUCK_SERIES, [w.bin_seconds, int(origin * 1e6), start, end]).df()
    stats = con.execute(DUCK_STATS, [start, end]).df()
    return series, stats


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

def compare(our_series: pd.DataFrame, our_stats, duck_series: pd.DataFrame, duck_stats: pd.DataFrame,
            n_written: int) -> dict:
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
    return {"problems": problems, "series_groups": len(m), "stats_groups": len(m2), "total": total,
            "max_rel_err": max_err, "max_rel_err_series": series_err.max(axis=0).tolist(),
            "max_rel_err_stats": stats_err.max(axis=0).tolist(), "mean_rel_err": float(series_err.mean()),
            "max_rel_err_stats_vs_cont": cont_err.max(axis=0).tolist()}


def storage(root: Path, n: int) -> dict:
    path = root / TELEMETRY_FILE
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    try:
        tables = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"))
    except sqlite3.OperationalError:
        tables = {}
    rollup_rows = conn.execute("SELECT COUNT(*) FROM rollup_minute").fetchone()[0]
    conn.close()
    size = sum(p.stat().st_size for p in root.glob(TELEMETRY_FILE + "*"))
    return {"file_bytes": size, "per_million_bytes": size * 1e6 / n, "tables": tables, "rollup_rows": rollup_rows}


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


def report(r: dict) -> str:
    o, d, p = r["ours"], r["duckdb"], r["pandas"]
    ow = statistics.median(o["warm"])
    lines = [
        f"**{r['n']:,} requests over {r['days']:g} days** (seed {r['seed']}), window `{r['window']}` "
        f"({r['bin_seconds']} s bins, {r['check']['series_groups']} series points), "
        f"{r['machine']['cpus']} CPUs, load before/after: `{r['machine']['uptime'].split('load average:')[-1].strip()}`"
        f" / `{r['uptime_after'].split('load average:')[-1].strip()}`",
        "",
        "| Monitoring page queries (series + stats), median of %d | wall | CPU | wall vs ours (warm) |" % r["repeats"],
        "|---|---:|---:|---:|",
        f"| **ours**, warm (rollups + raw edges, SQLite) | **{ms(ow)}** | {ms(med(o['warm_cpu']))} | 1.0 |",
        f"| ours, cold-ish (new connection each run) | {ms(med(o['cold']))} | {ms(med(o['cold_cpu']))} | "
        f"{med(o['cold']) / ow:.2f} |",
        f"| DuckDB {r['machine']['duckdb']} (in memory, exact `quantile_disc`, {r['machine']['cpus']} threads) | "
        f"{ms(med(d['times']))} | {ms(med(d['cpu']))} | {med(d['times']) / ow:.2f} |",
        f"| pandas {r['machine']['pandas']} (in memory, `groupby().quantile`) | {ms(med(p['times']))} | "
        f"{ms(med(p['cpu']))} | {med(p['times']) / ow:.2f} |",
        "",
        f"Target ≤ {TARGET_MS:.0f} ms (warm): **{'PASS' if ow * 1000 <= TARGET_MS else 'FAIL'}**. "
        f"Ranges — ours warm {ms(min(o['warm']))}–{ms(max(o['warm']))}, cold-ish {ms(min(o['cold']))}–"
        f"{ms(max(o['cold']))}, DuckDB {ms(min(d['times']))}–{ms(max(d['times']))}, "
        f"pandas {ms(min(p['times']))}–{ms(max(p['times']))}.",
        "",
        "Not counted above: seeding (generate %s, write through `telemetry_store.append` %s = %s records/s), "
        "loading the rows from SQLite into pandas %s and into DuckDB %s more."
        % (ms(r["gen_s"]), ms(r["write_s"]), f"{r['n'] / r['write_s']:,.0f}" if r["write_s"] else "?",
           ms(r["load_frame_s"]), ms(r["load_duckdb_s"])),
        "",
        "Each query of ours alone (warm, median): " + ", ".join(f"`{k}` {ms(v)}" for k, v in o["parts"].items()) + ".",
        "",
        "| check | result |",
        "|---|---|",
        f"| counts (requests, failures, client errors) per bin/endpoint/model and per endpoint/deployment/model vs DuckDB "
        f"| {'all equal' if not [x for x in r['check']['problems'] if 'differ' in x] else 'DIFFER'} "
        f"({r['check']['series_groups']} + {r['check']['stats_groups']} groups) |",
        f"| total in the window | {r['check']['total']:,} of {r['n']:,} written |",
        "| max relative error of p50 / p95 / p99 vs exact (`quantile_disc`), series | "
        + " / ".join(f"{e:.2%}" for e in r["check"]["max_rel_err_series"]) + " |",
        "| same, per-version stats | " + " / ".join(f"{e:.2%}" for e in r["check"]["max_rel_err_stats"]) + " |",
        "| same, per-version stats vs interpolated (`quantile_cont`) | "
        + " / ".join(f"{e:.2%}" for e in r["check"]["max_rel_err_stats_vs_cont"]) + " |",
        "",
        "| storage | bytes | per million requests |",
        "|---|---:|---:|",
        f"| `telemetry.db` (after checkpoint) | {mb(r['storage']['file_bytes'])} | "
        f"**{mb(r['storage']['per_million_bytes'])}** |",
    ]
    for name, size in r["storage"]["tables"].items():
        lines.append(f"| &nbsp; `{name}` | {mb(size)} | {mb(size * 1e6 / r['n'])} |")
    lines += ["", f"{r['storage']['rollup_rows']:,} rows in `rollup_minute`; "
                  f"{r['machine']['platform']}, Python {r['machine']['python']}, SQLite {r['machine']['sqlite']}, "
                  f"numpy {r['machine']['numpy']}; run {r['at']}."]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else (
        "# Telemetry benchmark\n\nWritten by `bench/bench_telemetry.py`.\n\n" + MARK_START + "\n" + MARK_END + "\n")
    if MARK_START not in doc:
        doc += "\n" + MARK_START + "\n" + MARK_END + "\n"
    head, rest = doc.split(MARK_START, 1)
    tail = rest.split(MARK_END, 1)[1] if MARK_END in rest else "\n"
    DOC.write_text(head + MARK_START + "\n" + text + "\n" + MARK_END + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="records (default 1,000,000)")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20,000 records, no doc: a smoke test")
    ap.add_argument("--reuse", action="store_true", help="keep an already seeded database of the same size")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of our warm queries")
    ap.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(ROOT)}")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.no_doc = 20_000, True
    started = machine()
    root = args.out / f"ws-telemetry-{args.n}"
    print(f"seeding {args.n:,} records over {args.days:g} days into {root} …", flush=True)
    data, gen_s, write_s, reused = seed(root, args.n, args.days, args.seed, args.reuse)
    print(f"  generated in {gen_s:.1f} s, written in {write_s:.1f} s{' (earlier run, reused)' if reused else ''}")
    span = f"{args.days:g}d"
    w = window(span, end=datetime.fromtimestamp(data.end, tz=timezone.utc))

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
    duck_times, duck_cpu = time_it(lambda: duck_queries(con, w), args.repeats)
    duck_series, duck_stats = duck_queries(con, w)
    print("pandas …", flush=True)
    pandas_times, pandas_cpu = time_it(lambda: pandas_queries(df, w), args.repeats)
    con.close()
    del df
    check = compare(o["series"], o["stats"], duck_series, duck_stats, args.n)
    result = {
        "n": args.n, "days": args.days, "seed": args.seed, "repeats": args.repeats, "window": span,
        "bin_seconds": w.bin_seconds, "gen_s": gen_s, "write_s": write_s, "reused": reused,
        "load_frame_s": load_frame_s, "load_duckdb_s": load_duckdb_s,
        "ours": {k: o[k] for k in ("cold", "warm", "cold_cpu", "warm_cpu", "parts")},
        "duckdb": {"times": duck_times, "cpu": duck_cpu}, "pandas": {"times": pandas_times, "cpu": pandas_cpu}, "check": check, "storage": storage(root, args.n),
        "machine": started, "uptime_after": machine()["uptime"],
        "at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    text = report(result)
    print()
    print(text)
    if args.profile:
        print("\ncProfile of 3 warm runs (series + stats), by own time:\n" + profile_ours(root, w))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "telemetry-results.json").write_text(json.dumps(result, indent=1, default=str))
    if not args.no_doc:
        write_doc(text)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    ok = statistics.median(o["warm"]) * 1000 <= TARGET_MS and not check["problems"]
    for problem in check["problems"]:
        print("CHECK FAILED:", problem)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
