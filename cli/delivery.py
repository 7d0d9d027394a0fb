"""Continuous-delivery commands: schedules, triggers, canary."""
from __future__ import annotations


def register(add) -> None:
    """Add this module's subcommands (``add(name, func, help)`` returns the subparser)."""
