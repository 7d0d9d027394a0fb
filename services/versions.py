"""Asset versions as Azure ML keeps them: text.

Tollgate numbers the versions it registers (1, 2, 3…), but Azure ML accepts any text as a data or
model version (``"foo"``, ``"2024-01-01"``), and other tools use that. A version is therefore an
``int`` when its text is a whole number and the text itself otherwise — so that the numbered
versions keep their arithmetic and numeric order, and no text is ever turned into a number.

Ordering (``order_key``): whole numbers in numeric order, then the rest by creation time (Azure's
own "latest" is the newest by creation time, which for Tollgate's versions is the same thing).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, TypeVar, Union

from .errors import InvalidInput

Version = Union[int, str]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_NUMBER = 2**63 - 1   # what SQLite stores as an integer
T = TypeVar("T")


def parse_version(value: Any, what: str = "version") -> Version:
    """``"3"`` → ``3``; ``"foo"`` → ``"foo"``; an ``int`` stays; empty or ``None`` → ``InvalidInput``."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a whole number or a version name, got {value!r}")
    number = value if isinstance(value, int) else None
    if number is None:
        text = "" if value is None else str(value).strip()
        if not text:
            raise InvalidInput(f"{what} is empty", hint="Give a version number (e.g. 3) or the version's name.")
        if not text.isdigit():
            return text
        number = int(text)
    if not 0 <= number <= MAX_NUMBER:
        raise InvalidInput(f"{what} {number} is out of range (0 … {MAX_NUMBER})")
    return number


def order_key(version: Version, created_at: datetime | None = None) -> tuple:
    """Ascending: whole numbers in numeric order, then the text versions by creation time."""
    if isinstance(version, int):
        return (0, version, _EPOCH, "")
    return (1, 0, created_at or _EPOCH, str(version))


def newest_first(items: Iterable[T]) -> list[T]:
    """Entities with ``version`` and ``created_at``, the latest first (``order_key`` reversed)."""
    return sorted(items, key=lambda x: order_key(x.version, x.created_at), reverse=True)


def same(a: Any, b: Any) -> bool:
    """Whether two versions name the same one (``3`` and ``"3"`` do)."""
    return a is not None and b is not None and str(a) == str(b)


def next_number(versions: Iterable[Version]) -> int:
    """The next whole-number version after the numbered ones (text versions take no number)."""
    return max((v for v in versions if isinstance(v, int)), default=0) + 1


def describe(versions: Iterable[Version]) -> str:
    """``"1 to 5"``, ``"1, 3, 4"``, ``"1 to 3, foo"``: the versions that exist, for a hint."""
    numbers = sorted(v for v in versions if isinstance(v, int))
    texts = sorted(str(v) for v in versions if not isinstance(v, int))
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        parts = [f"{numbers[0]} to {numbers[-1]}"]
    else:
        parts = [str(n) for n in numbers]
    return ", ".join(parts + texts) or "none"
