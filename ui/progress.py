"""Long release operations run in a worker thread while the page says what the endpoint does."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

from services.entities import Deployment
from services.errors import ServiceError

T = TypeVar("T")


def run_watching_endpoint(ws, env: str, status, work: Callable[[], T],
                          describe: Callable[[Deployment], str], title: str | None = None) -> T:
    """Run ``work`` (a deploy, promote, canary start: 10–25 s) and write each change of the
    endpoint's deployments (starting → healthy, traffic shifting) into ``status`` (an ``st.status``),
    so the wait is not a frozen screen. Returns what ``work`` returns; raises what it raises."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    started, last = time.monotonic(), None
    while True:
        try:
            return future.result(timeout=0.5)
        except FutureTimeout:
            pass
        try:
            ep = ws.endpoints.get(env)
            now = " · ".join(f"{describe(d)} {d.state}, {d.traffic} %" for d in ep.deployments if d.state != "stopped")
        except ServiceError:
            now = None
        if now and now != last:
            status.write(f"{time.monotonic() - started:.0f} s — {env}: {now}")
            last = now
        if title:
            status.update(label=f"{title}… {time.monotonic() - started:.0f} s", expanded=True)
