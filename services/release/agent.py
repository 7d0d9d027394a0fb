"""What advances canary rollouts and delivers notifications where no supervisor does (Azure).

Locally the endpoints' supervisor does both, in threads (``services.local.supervisor``). An
Azure workspace has no process of Tollgate's own that is always up, and a rollout lasts
from minutes to an hour, so two things drive it there:

* ``tollgate.py canary start --wait`` — the pipeline step (or person) that starts a canary
  usually waits for its outcome anyway; while it waits it ticks (``tick``) every second;
* ``tollgate.py agent`` — a small long-running process (a container, the console's VM) for
  rollouts started from the console, and for notifications: it ticks every ``interval_s``.
  ``agent --once`` is one tick, for a scheduler that runs it every minute.

Running more than one is safe: a decision is applied under the endpoint's lock after the
rollout is read again (``Rollouts.apply_canary``), and deliveries are claimed before they
are sent (``services.notify.deliver_due``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .. import canary as cn
from ..errors import ServiceError


@dataclass(frozen=True)
class Tick:
    decisions: tuple[tuple[cn.Rollout, cn.Decision], ...]   # applied to running rollouts
    attempts: int                                            # webhook deliveries attempted


def tick(ws, now: datetime | None = None) -> Tick:
    """Advance every running rollout whose step is due; deliver the notifications that are due."""
    decisions = tuple(cn.advance_rollouts(ws, now))
    return Tick(decisions, ws.notifications.deliver_due())


def run(ws, *, interval_s: float = 5.0, stop: threading.Event | None = None,
        say: Callable[[str], None] = print) -> None:
    """Tick every ``interval_s`` until ``stop`` is set; a failed tick is reported and tried again."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            done = tick(ws)
            for rollout, decision in done.decisions:
                say(f"canary {rollout.endpoint} {rollout.model_ref} {rollout.step_label}: {decision.action} "
                    f"({decision.reason})")
        except ServiceError as e:
            say(f"tick failed: {e}")
        stop.wait(interval_s)


__all__ = ["Tick", "tick", "run"]
