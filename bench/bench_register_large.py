"""Registering a large CSV: peak memory and how long the workspace's write lock is held.

Writes a ``--mb`` MB CSV (default 200) of the diabetes columns (the demo's features and
target, normally distributed around their real means), registers a 5,000-row sample of
the same population as version 1 (the baseline), then registers the large file as
version 2 through ``ws.datasets.register`` — profile, data tests against the baseline,
Parquet copy — each in a fresh child process so that its peak RSS is its own.

Measured in the child: wall time, peak RSS (``VmHWM``), and every write transaction
(``Database.write``: from ``BEGIN IMMEDIATE`` granted to ``COMMIT``), longest and total.
The peer, in the same run: a child that only does ``pandas.read_csv`` of the same file
(the memory floor of anything that holds the whole table).

    .venv/bin/python bench/bench_register_large.py [--mb 200] [--code DIR]

``--code DIR`` imports Tollgate from another checkout (e.g. an export of an older
commit) to compare before and after on the same file. Writes ``bench/out/register_large.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# name, mean, std, decimals: the demo dataset's columns (sklearn's diabetes, unscaled)
COLUMNS = [("age", 48.5, 13.1, 0), ("sex", 1.47, 0.5, 0), ("bmi", 26.4, 4.4, 1), ("bp", 94.6, 13.8, 2),
           ("s1", 189.1, 34.6, 0), ("s2", 115.4, 30.4, 1), ("s3", 49.8, 12.9, 1), ("s4", 4.07, 1.29, 2),
           ("s5", 4.64, 0.52, 4), ("s6", 91.3, 11.5, 0), ("target", 152.1, 77.1, 0)]

CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from contextlib import contextmanager
    from pathlib import Path

    def peak_rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    mode, root, csv = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    started = time.perf_counter()
    if mode == "read_csv":
        import pandas as pd
        frame = pd.read_csv(csv)
        out = {"rows": len(frame)}
    else:
        from services.local import db as dbmod
        from services.local.workspace import LocalWorkspace
        holds = []
        original = dbmod.Database.write

        @contextmanager
        def timed_write(self):
            with original(self) as conn:
                granted = time.perf_counter()
                try:
                    yield conn
                finally:
                    holds.append(time.perf_counter() - granted)
        dbmod.Database.write = timed_write
        ws = LocalWorkspace(root)
        holds.clear()  # only the registration's transactions
        dv = ws.datasets.register(csv.stem.split("-")[0], csv, actor="tollgate-system")  # the bench sets up data
        out = {"rows": dv.rows, "version": dv.version, "tests": dv.tests_status.value,
               "lock_max_s": max(holds), "lock_total_s": sum(holds), "transactions": len(holds)}
        ws.close()
    out.update(seconds=time.perf_counter() - started, peak_rss_mb=peak_rss_mb())
    print(json.dumps(out))
""")


def write_csv(path: Path, target_mb: float, seed: int) -> int:
    """Rows of the diabetes columns until the file holds ``target_mb`` MB; returns the row count."""
    rng = np.random.default_rng(seed)
    rows, chunk = 0, 100_000
    with open(path, "w") as f:
        f.write(",".join(c[0] for c in COLUMNS) + "\n")
        while f.tell() < target_mb * 1_000_000:
            block = np.column_stack([np.round(rng.normal(m, s, chunk), d) for _, m, s, d in COLUMNS])
            np.savetxt(f, block, delimiter=",", fmt="%g")
            rows += chunk
    return rows


def child(code: Path, mode: str, root: Path, csv: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(code), mode, str(root), str(csv)],
                          capture_output=True, text=True, cwd=code)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--code", type=Path, default=ROOT, help="the Tollgate checkout to import")
    args = ap.parse_args(argv)
    work = OUT / "register-large"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    big, small = work / "diabetes-large.csv", work / "diabetes-sample.csv"
    rows = write_csv(big, args.mb, seed=1)
    pd_rows = write_csv(small, 0.4, seed=2)
    print(f"{big.name}: {big.stat().st_size / 1e6:.0f} MB, {rows:,} rows; baseline {pd_rows:,} rows; "
          f"code {args.code}; load average {os.getloadavg()[0]:.2f}")

    root = work / "ws"
    base = child(args.code, "register", root, small)
    assert base["version"] == 1, base
    peer = child(args.code, "read_csv", root, big)
    result = child(args.code, "register", root, big)
    assert result["version"] == 2 and result["rows"] == rows, result

    print(f"  pandas.read_csv (peer)   {peer['seconds']:6.1f} s   peak RSS {peer['peak_rss_mb']:7.0f} MB")
    print(f"  register as version 2    {result['seconds']:6.1f} s   peak RSS {result['peak_rss_mb']:7.0f} MB "
          f"({result['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x the peer)   data tests {result['tests']}")
    print(f"  write lock held          {result['lock_max_s']:6.3f} s longest, {result['lock_total_s']:.3f} s in "
          f"{result['transactions']} transactions ({result['lock_total_s'] / result['seconds']:.1%} of the registration)")
    (OUT / "register_large.json").write_text(json.dumps(
        {"mb": args.mb, "rows": rows, "code": str(args.code), "peer": peer, "register": result,
         "load_average": os.getloadavg()[0], "at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
