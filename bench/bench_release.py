"""Release timings on the local workspace: deploy to staging, approve, promote, roll back.

Seeds the demo workspace into ``bench/out/ws-release`` (or reuses it with ``--reuse``),
starts its endpoints, then runs ``--rounds`` release cycles of one candidate through the
public services only (``ws.releases``), timing each call:

    deploy (blue/green to staging: new inference server, health probe, smoke test, shift)
    approve (ML lead) -> promote (QA, blue/green to production) -> rollback (QA)

Each round leaves production as it found it (the rollback), so rounds are alike. Prints
each figure per round and the median; writes ``bench/out/release.json``. Wall times depend
on the load: the load average is printed with them.

    .venv/bin/python bench/bench_release.py [--reuse] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.demo import seed_demo  # noqa: E402
from services.local.workspace import LocalWorkspace  # noqa: E402
from services.permissions import SYSTEM_ACTOR  # noqa: E402

OUT = ROOT / "bench" / "out"
QA, LEAD = "qa@contoso.com", "lead@contoso.com"
STEPS = ("deploy", "approve", "promote", "rollback")


def seeded(path: Path, reuse: bool) -> LocalWorkspace:
    if not reuse or not (path / ".seeded").exists():
        if path.exists():
            LocalWorkspace(path).endpoints.down(SYSTEM_ACTOR)
        shutil.rmtree(path, ignore_errors=True)
        ws = LocalWorkspace(path)
        seed_demo(ws, progress=lambda m: print("  seed:", m), deploy_endpoints=True)
        (path / ".seeded").touch()
        return ws
    return LocalWorkspace(path)


def timed(fn, *args, **kwargs) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reuse", action="store_true", help="reuse bench/out/ws-release when it is seeded")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ws = seeded(OUT / "ws-release", args.reuse)
    try:
        ws.endpoints.up(SYSTEM_ACTOR)
        ws.endpoints.wait_gateways()
        name = ws.policy.model_name
        staging, prod = ws.policy.endpoints.staging, ws.policy.endpoints.production
        champion = ws.models.champion(name)
        candidate = ws.endpoints.get(staging).live
        assert champion and candidate, "the seeded demo has a champion in production and a candidate in staging"
        version = candidate.model_version
        print(f"candidate {name}:{version}, champion {champion.ref}, load average {os.getloadavg()[0]:.2f}")
        rounds: list[dict[str, float]] = []
        for i in range(args.rounds):
            row = {
                "deploy": timed(ws.releases.deploy, name, version, staging, QA),
                "approve": timed(ws.releases.approve, name, version, LEAD, comment="bench"),
                "promote": timed(ws.releases.promote, name, version, QA, comment="bench"),
                "rollback": timed(ws.releases.rollback, prod, QA, comment="bench"),
            }
            rounds.append(row)
            print(f"round {i + 1}: " + "  ".join(f"{k} {v:6.2f} s" for k, v in row.items()))
        median = {k: statistics.median(r[k] for r in rounds) for k in STEPS}
        print("median:  " + "  ".join(f"{k} {v:6.2f} s" for k, v in median.items())
              + f"   (load average {os.getloadavg()[0]:.2f})")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "release.json").write_text(json.dumps({"rounds": rounds, "median": median}, indent=2))
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
