"""What the gateway costs: gateway + inference server vs the inference server alone.

    .venv/bin/python bench/bench_gateway.py [--source /tmp/ws1] [--duration 8] [--rounds 3] [--concurrency 8]
    .venv/bin/python bench/bench_gateway.py --workspace PATH      # a workspace whose production is (or will be) up

In one run, on the same payload (one row of the ten diabetes features) and with the
same load generator, against the production endpoint's serving deployment:

* **direct**: ``POST http://127.0.0.1:<deployment port>/score`` (the port is in the
  deployments table), i.e. the Azure ML inference server alone;
* **gateway**: ``POST <scoring URI>`` with the endpoint key: auth, routing, headers,
  one telemetry record, then the same inference server.

Measured, the two targets alternating round by round so that drift in the machine's
load hits both alike:

* throughput with ``--concurrency`` requests in flight (closed loop, ``--duration`` s
  per round); target: gateway / direct >= 0.85, the ratio being the median over the
  rounds of the gateway round's throughput / the direct round's run next to it;
* latency with one request in flight (p50, p90, p99); target: gateway p50 - direct
  p50 <= 2 ms;
* CPU time per request of the gateway process and of the inference server (user +
  system, from /proc), which is less sensitive to the rest of the machine than wall time.

The load generator is a minimal HTTP/1.1 client on asyncio streams (keep-alive when the
server allows it; the inference server's gunicorn sync worker closes every connection,
so every direct request pays a TCP connect, as the gateway's upstream request does), so
that the client's own CPU use stays small on a 2-core machine. Everything runs on
127.0.0.1 and stops by itself. Writes the figures with the machine context into
``docs/benchmarks-gateway.md`` (between the ``bench:results`` markers) and exits 1 if a
target is missed.

Without ``--workspace`` it uses ``bench/out/ws-gateway``: a copy of ``--source`` (a seeded
workspace), or a fresh demo seeding (about a minute), deploys the champion to production
and stops the endpoints it started when done.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.local.workspace import LocalWorkspace  # noqa: E402
from services.permissions import SYSTEM_ACTOR  # noqa: E402

OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "benchmarks-gateway.md"
PAYLOAD = b'{"data": [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]}'
TARGET_RATIO, TARGET_ADDED_P50_MS = 0.85, 2.0
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


# --- the load generator -----------------------------------------------------------

class Connection:
    """One HTTP/1.1 connection that reconnects when the server closes it."""

    def __init__(self, port: int, request: bytes):
        self.port, self.request = port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, close = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise RuntimeError("the benchmark client needs a Content-Length in every response")
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def raw_request(path: str, port: int, key: str | None) -> bytes:
    headers = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
               f"Content-Length: {len(PAYLOAD)}"]
    if key:
        headers.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + PAYLOAD


@dataclass
class Sample:
    target: str
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_gateway_s: float = 0.0
    cpu_server_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def drive(port: int, request: bytes, concurrency: int, duration_s: float, sample: Sample) -> None:
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        conn = Connection(port, request)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status = await conn.send()
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    conn.close()
                    sample.errors += 1
                    continue
                if status == 200:
                    sample.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    sample.errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.seconds = time.perf_counter() - started


# --- process CPU -------------------------------------------------------------------

def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its live children: gunicorn's worker) from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    if with_children:
        try:
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


# --- setup -------------------------------------------------------------------------

def prepare_workspace(args) -> tuple[LocalWorkspace, bool]:
    """The workspace to measure and whether this run started its endpoints (then it stops them)."""
    if args.workspace:
        ws = LocalWorkspace(Path(args.workspace))
    else:
        path = OUT / "ws-gateway"
        if not (path / "tollgate.db").exists():
            OUT.mkdir(parents=True, exist_ok=True)
            if args.source:
                shutil.copytree(args.source, path, ignore=shutil.ignore_patterns("*.lock", "*.pid", "endpoints",
                                                                                   "telemetry.db*", "logs"))
            else:
                from services.demo import seed_demo
                print("seeding a demo workspace (about a minute)…", flush=True)
                seed_demo(LocalWorkspace(path), progress=lambda m: None, deploy_endpoints=False)
        ws = LocalWorkspace(path)
    was_running = ws.endpoints.supervisor_pid() is not None
    production = ws.endpoints.get(ws.policy.endpoints.production)
    if production.live is None:
        champion = ws.models.champion(ws.policy.model_name)
        print(f"deploying {champion.ref} to production…", flush=True)
        ws.releases.deploy(champion.name, champion.version, ws.policy.endpoints.production, SYSTEM_ACTOR)
    else:
        ws.endpoints.up(SYSTEM_ACTOR)
        ws.endpoints.wait_gateways()
    deadline = time.monotonic() + 120
    while ws.endpoints.get(ws.policy.endpoints.production).live.state != "healthy":
        if time.monotonic() > deadline:
            raise SystemExit("production's serving deployment did not become healthy")
        time.sleep(0.2)
    return ws, not was_running


def server_impl() -> str:
    """What uvicorn's ``auto`` settings pick for the gateway's event loop and HTTP parser."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"loop={loop}, http={http}"


# --- the run ---------------------------------------------------------------------

def measure(args) -> dict:
    ws, started_here = prepare_workspace(args)
    try:
        env = ws.policy.endpoints.production
        ep = ws.endpoints.get(env)
        live = ep.live
        dep = ws.db.one("SELECT port, pid FROM deployments WHERE endpoint = ? AND name = ?", (env, live.name))
        gw = ws.db.one("SELECT port, gateway_pid FROM endpoints WHERE name = ?", (env,))
        key = ws.endpoints.keys(env, SYSTEM_ACTOR)[0]
        targets = {
            "direct": (dep["port"], raw_request("/score", dep["port"], None)),
            "gateway": (gw["port"], raw_request("/score", gw["port"], key)),
        }
        context = {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()],
                   "python": platform.python_version(), "machine": platform.machine(),
                   "gateway_server": server_impl(), "model": live.model_ref, "workspace": str(ws.root),
                   "concurrency": args.concurrency, "duration_s": args.duration, "rounds": args.rounds,
                   "at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        print(f"production {live.model_ref} on {live.name}: inference server 127.0.0.1:{dep['port']}, "
              f"gateway 127.0.0.1:{gw['port']} ({context['gateway_server']}); "
              f"{context['cpus']} CPUs, load average {context['load_before']}", flush=True)

        def run(target: str, concurrency: int, duration: float) -> Sample:
            port, request = targets[target]
            sample = Sample(target, concurrency, duration)
            g0, s0 = cpu_seconds(gw["gateway_pid"]), cpu_seconds(dep["pid"], with_children=True)
            asyncio.run(drive(port, request, concurrency, duration, sample))
            sample.cpu_gateway_s = cpu_seconds(gw["gateway_pid"]) - g0
            sample.cpu_server_s = cpu_seconds(dep["pid"], with_children=True) - s0
            return sample

        for target in targets:  # warm-up: connections, caches, the model's first predictions
            run(target, args.concurrency, 2)
        throughput: dict[str, list[Sample]] = {t: [] for t in targets}
        latency: dict[str, list[Sample]] = {t: [] for t in targets}
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for target in order:
                s = run(target, args.concurrency, args.duration)
                throughput[target].append(s)
                print(f"  round {r + 1} {target:8} c={args.concurrency}: {s.throughput:7.1f} req/s"
                      f"  p50 {s.pct(0.5):6.2f} ms  errors {s.errors}", flush=True)
            for target in order:
                s = run(target, 1, args.duration / 2)
                latency[target].append(s)
                print(f"  round {r + 1} {target:8} c=1: {s.throughput:7.1f} req/s  p50 {s.pct(0.5):6.2f} ms"
                      f"  p90 {s.pct(0.9):6.2f} ms  errors {s.errors}", flush=True)
        context["load_after"] = [round(x, 2) for x in os.getloadavg()]
        return summarize(context, throughput, latency)
    finally:
        if started_here:
            ws.endpoints.down(SYSTEM_ACTOR)
        ws.close()


def summarize(context: dict, throughput: dict[str, list[Sample]], latency: dict[str, list[Sample]]) -> dict:
    def med(xs):
        return statistics.median(xs)

    out = {"context": context, "targets": {}}
    for target in throughput:
        t, l = throughput[target], latency[target]
        n_t, n_l = sum(len(s.latencies_ms) for s in t), sum(len(s.latencies_ms) for s in l)
        merged = Sample(target, 1, 1, [x for s in l for x in s.latencies_ms])
        out["targets"][target] = {
            "throughput_rps": round(med([s.throughput for s in t]), 1),
            "throughput_rounds": [round(s.throughput, 1) for s in t],
            "p50_under_load_ms": round(med([s.pct(0.5) for s in t]), 2),
            "p50_ms": round(merged.pct(0.5), 2), "p90_ms": round(merged.pct(0.9), 2),
            "p99_ms": round(merged.pct(0.99), 2),
            "errors": sum(s.errors for s in t + l),
            "gateway_cpu_ms_per_request": round(1000 * sum(s.cpu_gateway_s for s in t) / max(1, n_t), 3),
            "server_cpu_ms_per_request": round(1000 * sum(s.cpu_server_s for s in t) / max(1, n_t), 3),
            "requests": n_t + n_l,
        }
    d, g = out["targets"]["direct"], out["targets"]["gateway"]
    # rounds are paired (run back to back), so drift in the machine's load cancels out within a pair
    paired = [gs.throughput / ds.throughput for gs, ds in zip(throughput["gateway"], throughput["direct"])]
    out["ratio_rounds"] = [round(r, 3) for r in paired]
    out["ratio"] = round(med(paired), 3)
    out["ratio_of_medians"] = round(g["throughput_rps"] / d["throughput_rps"], 3)
    out["added_p50_ms"] = round(g["p50_ms"] - d["p50_ms"], 2)
    out["pass"] = {"throughput_ratio": out["ratio"] >= TARGET_RATIO,
                   "added_p50": out["added_p50_ms"] <= TARGET_ADDED_P50_MS,
                   "no_errors": d["errors"] == 0 and g["errors"] == 0}
    return out


def report(result: dict, label: str) -> str:
    c, d, g = result["context"], result["targets"]["direct"], result["targets"]["gateway"]
    ok = lambda passed: "PASS" if passed else "FAIL"  # noqa: E731
    lines = [
        f"### {label} — {c['at']}",
        "",
        f"Machine: {c['cpus']} CPUs ({c['machine']}), load average (1, 5, 15 min) {c['load_before']} before, "
        f"{c['load_after']} after; Python {c['python']}; gateway on uvicorn with {c['gateway_server']}. "
        f"Model {c['model']}; {c['rounds']} rounds of {c['duration_s']:g} s per target, alternating.",
        "",
        "| | inference server alone | gateway + inference server | result |",
        "|---|---:|---:|---|",
        f"| throughput, {c['concurrency']} in flight (req/s, median) | {d['throughput_rps']} | {g['throughput_rps']} "
        f"| ratio **{result['ratio']:.2f}** (median of the paired rounds; target ≥ {TARGET_RATIO}) "
        f"{ok(result['pass']['throughput_ratio'])} |",
        f"| throughput per round (req/s) | {', '.join(map(str, d['throughput_rounds']))} "
        f"| {', '.join(map(str, g['throughput_rounds']))} | ratio per round {', '.join(f'{r:.2f}' for r in result['ratio_rounds'])}; "
        f"ratio of the medians {result['ratio_of_medians']:.2f} |",
        f"| latency p50, 1 in flight (ms) | {d['p50_ms']} | {g['p50_ms']} "
        f"| added **{result['added_p50_ms']:+.2f} ms** (target ≤ +{TARGET_ADDED_P50_MS:g}) {ok(result['pass']['added_p50'])} |",
        f"| latency p90 / p99, 1 in flight (ms) | {d['p90_ms']} / {d['p99_ms']} | {g['p90_ms']} / {g['p99_ms']} | |",
        f"| latency p50, {c['concurrency']} in flight (ms) | {d['p50_under_load_ms']} | {g['p50_under_load_ms']} | |",
        f"| CPU per request: inference server (ms) | {d['server_cpu_ms_per_request']} | {g['server_cpu_ms_per_request']} | |",
        f"| CPU per request: gateway (ms) | – | {g['gateway_cpu_ms_per_request']} | |",
        f"| failed requests | {d['errors']} | {g['errors']} | {ok(result['pass']['no_errors'])} |",
        "",
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else (
        "# Gateway benchmark\n\nWritten by `bench/bench_gateway.py`.\n\n" + MARK_START + "\n" + MARK_END + "\n")
    if MARK_START not in doc:
        doc += "\n" + MARK_START + "\n" + MARK_END + "\n"
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOC.write_text(head + MARK_START + "\n" + text + "\n" + MARK_END + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", help="measure this workspace's production endpoint (left running if it was)")
    ap.add_argument("--source", help="copy this seeded workspace into bench/out/ws-gateway instead of seeding one")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per throughput round (default 8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--label", default="Latest run", help="heading of this run in the doc")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks-gateway.md alone")
    args = ap.parse_args(argv)
    result = measure(args)
    text = report(result, args.label)
    print("\n" + text)
    (OUT / "gateway-results.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT / "gateway-results.json").write_text(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(text)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
