"""Checks of what runs and standing budgets are given (loop limits, names), importable
without the rest of burnmap (``burnmap wrap`` checks its flags before anything else
loads)."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["check_loop_limit", "check_storable"]


def check_loop_limit(name: str, value: object, *, whole: bool, least: int) -> None:
    """A loop trigger's limit is a number past which calls are refused (a count is a whole
    number, at least ``least``; a factor is more than ``least``), or ``None`` (off):
    anything else would refuse every call, or none, without saying why.

    >>> check_loop_limit("repeat_limit", 0, whole=True, least=1)
    Traceback (most recent call last):
    ...
    ValueError: repeat_limit must be at least 1, or None to turn it off; got 0
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        kind = "a whole number" if whole else "a number"
        raise TypeError(f"{name} is {kind} or None (off), not {value!r}")
    if value != value:  # NaN  # noqa: PLR0124
        raise ValueError(f"{name} must be a number, or None to turn it off; got {value!r}")
    if whole and (value in (float("inf"), float("-inf")) or value != int(value)):
        raise ValueError(
            f"{name} is a whole number of calls, or None to turn it off; got {value!r}"
        )
    if value < least if whole else value <= least:
        bound = f"at least {least}" if whole else f"more than {least}"
        raise ValueError(f"{name} must be {bound}, or None to turn it off; got {value!r}")


def check_storable(what: str, text: object) -> None:
    """A name a ledger keeps (a scope, a job name, a user id) must be encodable text:
    SQLite and Redis store UTF-8, and a lone surrogate would fail there, mid-call.

    >>> check_storable("job name", "\\udcff")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a job name is text a ledger can keep, not '\\udcff' (...)
    """
    try:
        str(text).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"a {what} is text a ledger can keep, not {text!r} (UTF-8 is the only text a "
            "store can keep)"
        ) from None
