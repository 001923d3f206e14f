"""The fast way into ``burnmap wrap``: parse its options without click, start the program.

``burnmap wrap`` must add as little as possible before the program it supervises starts,
so the ``burnmap`` entry point sends ``wrap`` here first. This parser reads the same
options as the click command in :mod:`burnmap.cli`; anything it does not recognise (a
typo, ``--help``) is handed to click, which explains it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["execute", "main", "parse"]

_VALUED = {
    "--budget": "budget",
    "--job": "job",
    "--grace": "grace",
    "--report-json": "report_json",
    "--call-rate-limit": "call_rate_limit",
    "--context-growth-limit": "context_growth_limit",
    "--repeat-limit": "repeat_limit",
}
_FLAGS = {"--proxy": ("proxy", True), "--meter": ("meter", True), "--no-meter": ("meter", False)}


class UsageError(ValueError):
    """Options the fast parser cannot take: click handles (and explains) them."""


def parse(argv: list[str]) -> dict[str, Any]:
    """The wrap options and command in ``argv`` (the words after ``wrap``).

    >>> parse(["--budget", "5", "--", "python", "a.py", "--budget", "1"])["command"]
    ['python', 'a.py', '--budget', '1']
    """
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        name, has_value, value = word.partition("=")
        if name in _VALUED:
            if not has_value:
                index += 1
                if index >= len(argv):
                    raise UsageError(word)
                value = argv[index]
            values[_VALUED[name]] = value
        elif name in _FLAGS and not has_value:
            key, flag = _FLAGS[name]
            values[key] = flag
        else:
            raise UsageError(word)
        index += 1
    values["command"] = argv[index:]
    if not values["command"]:
        raise UsageError("no command")
    return values


def execute(values: dict[str, Any]) -> int:
    """Check the options, run the supervisor; the exit status to use."""
    from burnmap._core.money import usd
    from burnmap.wrap.supervisor import EXIT_NOT_FOUND, Supervisor, WrapOptions

    def fail(option: str, message: str) -> int:
        print(
            "Usage: burnmap wrap [OPTIONS] COMMAND...\nTry 'burnmap wrap --help' for help.\n\n"
            f"Error: Invalid value for '{option}': {message}",
            file=sys.stderr,
        )
        return 2

    budget = values.get("budget")
    limit = None
    if budget is not None:
        try:
            limit = usd(budget)
        except (ArithmeticError, ValueError, TypeError):
            return fail("--budget", f"{budget!r} is not an amount of dollars (e.g. --budget 5.00)")
    try:
        grace = float(values.get("grace", 5.0))
        loops = {
            name: (number or None)
            for name, kind in (
                ("call_rate_limit", int),
                ("context_growth_limit", float),
                ("repeat_limit", int),
            )
            if (number := _number(values.get(name), kind)) is not None
        }
    except ValueError as exc:
        return fail("--" + str(exc).replace("_", "-"), "not a number")
    if grace < 0:
        return fail("--grace", "must be >= 0 seconds")
    command: list[str] = values["command"]
    report = values.get("report_json")
    options = WrapOptions(
        command=command,
        budget=limit,
        job=values.get("job") or Path(command[0]).name,
        grace=grace,
        report_json=Path(report) if report else None,
        proxy=bool(values.get("proxy")),
        loop_limits=loops,
        meter=values.get("meter"),
    )
    try:
        return Supervisor(options).execute()
    except FileNotFoundError:
        print(f"burnmap wrap: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _number(value: object, kind: type[int] | type[float]) -> int | float | None:
    if value is None:
        return None
    try:
        return kind(str(value))
    except ValueError:
        raise ValueError(str(value)) from None


def main(argv: list[str]) -> int | None:
    """Run ``burnmap wrap`` from ``argv`` (after ``wrap``); ``None``: let click do it."""
    try:
        values = parse(argv)
    except UsageError:
        return None
    return execute(values)
