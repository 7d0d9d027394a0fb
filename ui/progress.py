"""Long release operations run in a worker thread while the page shows their steps live.

The workflow reports typed steps (``ProgressStep``: deployment created → healthy → smoke test
→ traffic shifted → previous kept warm) through a listener; the worker thread only puts them
in a queue, and the page's thread writes them into an ``st.status``: each finished step as a
line with its time, the running one (and what the backend says about it) in the label.
"""
from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from services.entities import ProgressStep
from services.release import step_text

from .widgets import code, escaped

T = TypeVar("T")
POLL_S = 0.2


def run_with_steps(work: Callable[[Callable[[ProgressStep], None]], T], status, title: str) -> T:
    """Run ``work(listener)`` (a deploy, promote, canary start: 10–60 s) and show its steps in
    ``status`` as they happen. Returns what ``work`` returns; raises what it raises."""
    steps: queue.Queue[ProgressStep] = queue.Queue()
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work, steps.put)
    pool.shutdown(wait=False)
    started, running = time.monotonic(), None
    while True:
        done = future.done()
        while True:
            try:
                step = steps.get_nowait()
            except queue.Empty:
                break
            if step.state == "running":
                running = step
            else:
                status.write(step_line(step))
                running = None
        if done:
            return future.result()
        now = escaped(f" — {running.label}" + (f": {running.detail}" if running.detail else "")) if running else ""
        status.update(label=f"{title}… {time.monotonic() - started:.0f} s{now}", expanded=True)
        time.sleep(POLL_S)


def step_line(step: ProgressStep) -> str:
    """A finished step for the page: the CLI's line, in a code span so that no text is read as markdown."""
    return code(step_text(step))
