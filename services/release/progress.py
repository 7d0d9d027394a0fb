"""Progress of a long release operation, in typed steps with a time each.

``Progress(listener)`` hands each step to ``listener`` (a ``ProgressStep``) when it starts
(``running``), while it runs when the backend says something (``detail``: Azure's
provisioning status), and when it ends (``done`` or ``failed``, with its seconds). The
console shows them live (``ui.progress``); the CLI prints them (``cli.output``).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Iterator

from ..entities import ProgressStep
from .ports import Say

Listener = Callable[[ProgressStep], None]


class Progress:
    def __init__(self, listener: Listener | None = None, clock: Callable[[], float] = time.monotonic):
        self.listener, self.clock = listener, clock
        self.steps: list[ProgressStep] = []   # as they ended

    def _tell(self, step: ProgressStep) -> None:
        if self.listener is not None:
            self.listener(step)

    @contextmanager
    def step(self, key: str, label: str) -> Iterator[Say]:
        """``with progress.step("healthy", "deployment green answers") as say: ...`` — ``say(text)``
        reports what the step is doing meanwhile."""
        started, began = datetime.now(timezone.utc), self.clock()
        running = ProgressStep(key, label, "running", started)
        self._tell(running)

        said: list[str] = []

        def say(detail: str) -> None:           # told when it changes, not on every poll
            if not said or said[-1] != detail:
                said.append(detail)
                self._tell(replace(running, detail=detail, seconds=self.clock() - began))
        try:
            yield say
        except BaseException:
            ended = replace(running, state="failed", seconds=self.clock() - began)
            self.steps.append(ended)
            self._tell(ended)
            raise
        ended = replace(running, state="done", seconds=self.clock() - began)
        self.steps.append(ended)
        self._tell(ended)

    def note(self, key: str, label: str) -> None:
        """A step that takes no time of its own (e.g. "blue stays warm for rollback")."""
        with self.step(key, label):
            pass


def step_text(step: ProgressStep) -> str:
    """One line for a terminal: ``✓ deployment green created at 0 % (1.2 s)``."""
    mark = {"done": "✓", "failed": "✗"}.get(step.state, "…")
    took = f" ({step.seconds:.1f} s)" if step.seconds is not None and step.state != "running" else ""
    detail = f": {step.detail}" if step.detail and step.state == "running" else ""
    return f"{mark} {step.label}{detail}{took}"


__all__ = ["Progress", "Listener", "step_text"]
