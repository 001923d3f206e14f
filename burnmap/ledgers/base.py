"""The ledger contract every store keeps (memory, SQLite, Redis).

Standing budgets (``burnmap.limit("user:usr_123", 5.00, per="day")``) live in a ledger,
shared by every process that opens the same URL. Money is integer micro-dollars. Every
operation is atomic and idempotent on a client-generated hold id:

- ``reserve`` reaps expired holds, then checks every limited scope of the call against
  ``spent + reserved + amount <= limit`` in its current window, and either holds the amount
  on every scope (limited or not: spend is recorded everywhere) or holds nothing and
  reports the first scope that refused. Re-sending the same id returns the first answer.
- ``settle`` replaces a hold by the actual cost, in the windows the hold was made in. A
  settle after the hold expired corrects what expiry charged. Re-sending is a no-op.
- ``renew`` pushes a hold's expiry back (long streams).

A hold whose process died expires after its TTL; by default it is charged in full (the
provider may have billed the call), or released with ``expired_holds="release"``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from burnmap._core.windows import Window, window
from burnmap.errors import LedgerError

__all__ = [
    "DEFAULT_HOLD_TTL",
    "KEEP_DONE_SECONDS",
    "Ledger",
    "LimitDef",
    "Refusal",
    "ScopeStatus",
    "entries_for",
    "limit_window",
    "redacted_url",
    "scope_statuses",
]

DEFAULT_HOLD_TTL = 600.0
"""Seconds a hold lives without a settle or renewal (the SDKs' default timeout)."""
KEEP_DONE_SECONDS = 86_400.0
"""How long settled and expired holds are remembered, for idempotent re-sends."""


@dataclass(frozen=True, slots=True)
class LimitDef:
    scope: str
    limit: int
    """Micro-dollars."""
    per: str | None
    tz: str

    def to_json(self) -> str:
        return json.dumps({"limit": self.limit, "per": self.per, "tz": self.tz})

    @classmethod
    def from_json(cls, scope: str, text: str | bytes) -> LimitDef:
        data = json.loads(text)
        return cls(scope, int(data["limit"]), data.get("per"), data.get("tz") or "UTC")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first scope that could not hold it."""

    scope: str
    limit: int
    spent: int
    reserved: int
    window: str
    resets_at: float | None

    def to_json(self) -> str:
        """As the stores keep it: ``[scope, limit, spent, reserved, window, resets_at]``."""
        return json.dumps(
            [self.scope, self.limit, self.spent, self.reserved, self.window, self.resets_at]
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Refusal:
        """From :meth:`to_json`'s form (Lua sends numbers as floats, no reset as ``""``)."""
        scope, limit, spent, reserved, key, resets = json.loads(text)
        return cls(
            scope,
            int(limit),
            int(spent),
            int(reserved),
            key,
            float(resets) if resets not in ("", None) else None,
        )


@dataclass(frozen=True, slots=True)
class ScopeStatus:
    scope: str
    limit: int | None
    per: str | None
    tz: str
    window: str
    spent: int
    reserved: int
    resets_at: float | None


def redacted_url(url: str) -> str:
    """The URL without its password, for messages, logs and the CLI.

    >>> redacted_url("redis://app:s3cret@cache:6379/0")
    'redis://app:***@cache:6379/0'
    >>> redacted_url("redis://:s3cret@[::1/0")  # (not a URL urllib can read)
    'redis://:***@[::1/0'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url, count=1)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def limit_window(scope: str, per: str | None, tz: str, now: float) -> Window:
    """The current window of ``scope``'s budget; a :class:`LedgerError` naming the scope
    when this machine cannot compute it (a limit set elsewhere in a zone unknown here)."""
    try:
        return window(per, tz, now)
    except ValueError as exc:
        raise LedgerError(
            f"the standing budget on {scope!r} cannot be applied on this machine: {exc}"
        ) from None


def scope_statuses(
    names: Sequence[str],
    limits: dict[str, LimitDef],
    now: float,
    totals: Callable[[str, str], tuple[int, int]],
) -> list[ScopeStatus]:
    """The status of each scope in its current window; ``totals(scope, window)`` reads a
    store's (spent, reserved)."""
    out: list[ScopeStatus] = []
    for scope in names:
        definition = limits.get(scope)
        per = definition.per if definition else None
        tz = definition.tz if definition else "UTC"
        win = limit_window(scope, per, tz, now)
        spent, reserved = totals(scope, win.key)
        limit = definition.limit if definition else None
        out.append(ScopeStatus(scope, limit, per, tz, win.key, spent, reserved, win.end))
    return out


def entries_for(
    scopes: Sequence[str], limits: dict[str, LimitDef], now: float
) -> list[tuple[str, Window, LimitDef | None]]:
    """Each scope of a call with its current window (lifetime where it has no limit)."""
    out: list[tuple[str, Window, LimitDef | None]] = []
    for scope in dict.fromkeys(scopes):
        definition = limits.get(scope)
        if definition is None:
            out.append((scope, window(None, "UTC", now), None))
        else:
            win = limit_window(scope, definition.per, definition.tz, now)
            out.append((scope, win, definition))
    return out


class Ledger(ABC):
    """A store of standing budgets, spend and holds."""

    url: str = ""

    @abstractmethod
    def set_limit(self, definition: LimitDef) -> None: ...

    @abstractmethod
    def remove_limit(self, scope: str) -> bool: ...

    @abstractmethod
    def get_limits(self) -> dict[str, LimitDef]: ...

    @abstractmethod
    def reserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        """Hold ``amount`` on every scope, or return the refusal (holding nothing)."""

    @abstractmethod
    def settle(self, hold_id: str, actual: int) -> None: ...

    @abstractmethod
    def renew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None: ...

    @abstractmethod
    def status(
        self, scopes: Sequence[str] | None = None, *, reap: bool = True
    ) -> list[ScopeStatus]:
        """Limit, spend and holds of ``scopes`` (all scopes with a limit when ``None``).

        ``reap``: expire overdue holds first, by this ledger's ``charge_expired``. With
        ``False`` the ledger is only read (the CLI, which does not know the fleet's
        ``expired_holds``): an expired hold nobody has reaped yet counts as reserved."""

    # Async twins: a thread by default, so a blocking store never stalls the event loop;
    # stores with a native async client (Redis) or no I/O (memory) override them.
    async def areserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        import asyncio

        return await asyncio.to_thread(self.reserve, hold_id, scopes, amount, ttl=ttl)

    async def asettle(self, hold_id: str, actual: int) -> None:
        import asyncio

        await asyncio.to_thread(self.settle, hold_id, actual)

    async def arenew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        import asyncio

        await asyncio.to_thread(self.renew, hold_id, ttl=ttl)

    def reap(self) -> int:
        """Expire overdue holds now (``reserve`` also does); returns how many."""
        return 0

    def held_here(self) -> bool:
        """Whether this thread is inside the ledger's own lock (a signal handler that
        interrupted it, say), where a settlement must not wait for that lock. Ledgers
        without a process-local lock hold none."""
        return False

    def _fork_safe(self) -> None:
        """Give a forked child a fresh process lock: the parent's may have been held by a
        thread that does not exist in the child, which would wait for it forever. Stores
        with a process lock call this once they have one."""
        key = id(self)
        _LOCKED[key] = weakref.ref(self, lambda _: _LOCKED.pop(key, None))

    def close(self) -> None:  # noqa: B027 - a no-op by default, as in hishel's storages
        """Release connections."""

    async def aclose(self) -> None:  # noqa: B027
        """Release the async connections of the running event loop."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Ledgers with a process lock, by id: re-locked in a forked child (``os.register_at_fork``).
_LOCKED: dict[int, weakref.ref[Ledger]] = {}


def _relock_in_child() -> None:
    for ref in list(_LOCKED.values()):
        ledger = ref()
        if ledger is not None:
            ledger._lock = threading.RLock()  # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_relock_in_child)
