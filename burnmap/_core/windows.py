"""Budget windows: which day or month a moment falls in, in a given time zone.

A window is named, never reset: ``day:2026-11-28@Europe/Paris`` is a new key each day, so
no job has to run at midnight, and a reservation settles into the window it was made in.
Days follow the zone's calendar, so a DST change makes a 23- or 25-hour day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["PERIODS", "Window", "check_period", "window"]

PERIODS = (None, "day", "month")


@dataclass(frozen=True, slots=True)
class Window:
    key: str
    start: float
    """Unix time the window opens (0 for a lifetime budget)."""
    end: float | None
    """Unix time the next window opens; ``None`` for a lifetime budget."""

    def contains(self, moment: float) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)


@lru_cache(maxsize=64)
def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {tz!r} on this machine: use an IANA name such as 'UTC' or "
            "'Europe/Paris'. A zone must exist on every machine that shares the ledger: "
            "where Python finds no zone database (Windows, slim containers), pip install tzdata"
        ) from exc


def check_period(per: str | None, tz: str) -> None:
    """Raise ``ValueError`` with a hint for a period or zone burnmap does not know."""
    if per not in PERIODS:
        raise ValueError(f"per={per!r}: use 'day', 'month' or None (a lifetime budget)")
    _zone(tz)


def _midnight(day: date, zone: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


_LIFETIME = Window("all", 0.0, None)
_current: dict[tuple[str, str], Window] = {}


def window(per: str | None, tz: str, moment: float) -> Window:
    """The window of a ``per`` budget that ``moment`` (Unix time) falls in.

    >>> w = window("day", "Europe/Paris", datetime(2026, 3, 29, 12, tzinfo=UTC).timestamp())
    >>> w.key, (w.end - w.start) / 3600
    ('day:2026-03-29@Europe/Paris', 23.0)
    >>> window("month", "UTC", 0).key
    'month:1970-01@UTC'
    """
    if per is None:
        return _LIFETIME
    recent = _current.get((per, tz))
    if recent is not None and recent.contains(moment):
        return recent
    found = _compute(per, tz, moment)
    _current[(per, tz)] = found
    return found


def _compute(per: str, tz: str, moment: float) -> Window:
    zone = _zone(tz)
    local = datetime.fromtimestamp(moment, UTC).astimezone(zone)
    if per == "day":
        day = local.date()
        return Window(
            f"day:{day.isoformat()}@{tz}",
            _midnight(day, zone),
            _midnight(day + timedelta(days=1), zone),
        )
    if per == "month":
        first = local.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Window(
            f"month:{first.year:04d}-{first.month:02d}@{tz}",
            _midnight(first, zone),
            _midnight(following, zone),
        )
    raise ValueError(f"per={per!r}: use 'day', 'month' or None (a lifetime budget)")
