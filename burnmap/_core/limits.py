"""Checks of the loop triggers' limits, importable without the rest of burnmap (``burnmap
wrap`` checks its flags before anything else loads)."""

from __future__ import annotations

__all__ = ["check_loop_limit"]


def check_loop_limit(name: str, value: object, *, whole: bool, least: int) -> None:
    """A loop trigger's limit is a number past which calls are refused, or ``None`` (off);
    anything else would refuse every call, or none, without saying why."""
    if value is None:
        return
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if whole else "a number"
        raise TypeError(f"{name} is {kind} or None (off), not {value!r}")
    if not (value >= least if whole else value > least) or value != value:  # noqa: PLR0124
        bound = f"at least {least}" if whole else f"more than {least}"
        raise ValueError(f"{name} must be {bound}, or None to turn it off; got {value!r}")
