"""Names of things people create (datasets, models, aliases): one rule for every backend, so a
name accepted by the local workspace is accepted by the Azure one, and the other way round.
"""
from __future__ import annotations

import re

from .errors import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "dataset") -> str:
    """``name`` if it is a valid asset name; ``InvalidInput`` saying the rule otherwise."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(f"invalid {what} name {name!r}",
                           hint="Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    return name


__all__ = ["NAME_RE", "check_name"]
