"""Output helpers shared by the CLI's command modules."""
from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Iterator

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2
EXIT_TIMEOUT = 3      # waited as long as asked (`--timeout`) and the thing still runs: not canceled
LARGEST = 2**63 - 1   # SQLite's INTEGER, and far beyond any version, id, limit or count


def whole_number(text: str) -> int:
    """An argparse type: a whole number 0 … 2^63−1 (a version, an id, a limit, a count); anything
    else is a usage error (exit 2 naming the option), never an overflow deep in a store."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= LARGEST:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 … {LARGEST})")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, more than 0 and at most a week (a wait's bound)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text} is out of range (more than 0, at most 604800 s: a week)")
    return value


def plain(obj: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON-ready values."""
    if is_dataclass(obj):
        return plain(asdict(obj))
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(plain(v) for v in obj)
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def emit(args, data: Any, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(plain(data), indent=2))
    elif text is not None:
        print(text)


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, Enum):
        return v.value
    return str(v)




# what a terminal acts on instead of showing: C0 controls but newline and tab (ESC starts the
# ANSI sequences that recolour, move the cursor, retitle the window or write hyperlinks), a
# carriage return not ending a line (it overwrites what was printed), DEL, C1 controls, and the
# bidirectional overrides that make text read other than it is
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def terminal_text(text: str) -> str:
    """``text`` safe to print: each control character shown escaped (``\\x1b``), never acted on."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class _SafeStream:
    """A text stream whose writes go through ``terminal_text``; the rest is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_text(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def safe_terminal() -> Iterator[None]:
    """Within it, everything the CLI prints (names, comments, identities, log lines, error messages
    echoing input) reaches the terminal as text: one place, whatever the command."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SafeStream(sys.stdout), _SafeStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
