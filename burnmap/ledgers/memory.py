"""``memory://``: the default ledger, for one process."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from burnmap.ledgers.base import (
    DEFAULT_HOLD_TTL,
    Ledger,
    LimitDef,
    Refusal,
    ScopeStatus,
    entries_for,
    scope_statuses,
)

__all__ = ["MemoryLedger"]


class _Hold:
    """An open hold. Finished ones keep only an int (or a small tuple): millions of them
    must not weigh on the garbage collector."""

    __slots__ = ("amount", "entries", "expires")

    def __init__(self, amount: int, expires: float, entries: tuple[tuple[str, str], ...]):
        self.amount = amount
        self.expires = expires
        self.entries = entries


@dataclass
class MemoryLedger(Ledger):
    """Dicts under a lock. ``clock`` is injectable for tests."""

    url: str = "memory://"
    charge_expired: bool = True
    clock: Callable[[], float] = time.time
    keep_done: float = 300.0
    """Seconds a finished hold is remembered. Stores shared over a network keep them a day
    (a client may re-send after a timeout); in one process five minutes is plenty, and
    millions of remembered holds would only slow the garbage collector."""
    keep_expired: float = 86_400.0
    """Seconds an expired hold is remembered, so that its call's late settlement still
    corrects what expiry charged (or released): a day, as the shared stores keep them."""
    _limits: dict[str, LimitDef] = field(default_factory=dict)
    _totals: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _holds: dict[str, _Hold] = field(default_factory=dict)
    _settled: dict[str, int] = field(default_factory=dict)
    _expired: dict[str, tuple[tuple[tuple[str, str], ...], int]] = field(default_factory=dict)
    _refused: dict[str, Refusal] = field(default_factory=dict)
    _expiry: list[tuple[float, str]] = field(default_factory=list)
    _done: deque[tuple[float, str]] = field(default_factory=deque)
    _expired_done: deque[tuple[float, str]] = field(default_factory=deque)
    # Reentrant only so that its holder can be recognised (held_here).
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._fork_safe()

    def set_limit(self, definition: LimitDef) -> None:
        with self._lock:
            self._limits[definition.scope] = definition

    def remove_limit(self, scope: str) -> bool:
        with self._lock:
            return self._limits.pop(scope, None) is not None

    def get_limits(self) -> dict[str, LimitDef]:
        with self._lock:
            return dict(self._limits)

    def _reap(self, now: float) -> int:
        reaped = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires, hold_id = heapq.heappop(heap)
            hold = self._holds.get(hold_id)
            if hold is None or hold.expires != expires:
                continue  # settled, or renewed (a later heap entry stands for it)
            del self._holds[hold_id]
            charged = hold.amount if self.charge_expired else 0
            for key in hold.entries:
                totals = self._totals[key]
                totals[1] -= hold.amount
                totals[0] += charged
            self._expired[hold_id] = (hold.entries, charged)
            self._expired_done.append((now, hold_id))
            reaped += 1
        stale = now - self.keep_done
        done = self._done
        while done and done[0][0] < stale:
            _, hold_id = done.popleft()
            self._settled.pop(hold_id, None)
            self._refused.pop(hold_id, None)
        stale = now - self.keep_expired
        expired = self._expired_done
        while expired and expired[0][0] < stale:
            self._expired.pop(expired.popleft()[1], None)
        return reaped

    def reap(self) -> int:
        with self._lock:
            return self._reap(self.clock())

    def held_here(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def reserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        with self._lock:
            now = self.clock()
            if (self._expiry and self._expiry[0][0] <= now) or (
                self._done and self._done[0][0] < now - self.keep_done
            ):
                self._reap(now)
            if hold_id in self._holds or hold_id in self._settled or hold_id in self._expired:
                return None  # a re-send: its first answer
            if hold_id in self._refused:
                return self._refused[hold_id]
            all_totals = self._totals
            keys: list[tuple[str, str]] = []
            for scope, win, definition in entries_for(scopes, self._limits, now):
                key = (scope, win.key)
                if definition is not None:
                    spent, reserved = all_totals.get(key, (0, 0))
                    if spent + reserved + amount > definition.limit:
                        refusal = Refusal(
                            scope, definition.limit, spent, reserved, win.key, win.end
                        )
                        self._refused[hold_id] = refusal
                        self._done.append((now, hold_id))
                        return refusal
                keys.append(key)
            for key in keys:
                totals = all_totals.get(key)
                if totals is None:
                    all_totals[key] = [0, amount]
                else:
                    totals[1] += amount
            expires = now + ttl
            self._holds[hold_id] = _Hold(amount, expires, tuple(keys))
            heapq.heappush(self._expiry, (expires, hold_id))
            return None

    def settle(self, hold_id: str, actual: int) -> None:
        with self._lock:
            hold = self._holds.pop(hold_id, None)
            if hold is not None:
                for key in hold.entries:
                    totals = self._totals[key]
                    totals[1] -= hold.amount
                    totals[0] += actual
            else:
                expired = self._expired.pop(hold_id, None)
                if expired is None:
                    return  # unknown, refused, or settled already
                entries, charged = expired  # correct what expiry charged
                for key in entries:
                    self._totals[key][0] += actual - charged
            self._settled[hold_id] = actual
            self._done.append((self.clock(), hold_id))

    def renew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        with self._lock:
            hold = self._holds.get(hold_id)
            if hold is None:
                return
            hold.expires = self.clock() + ttl
            heapq.heappush(self._expiry, (hold.expires, hold_id))

    async def areserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        return self.reserve(hold_id, scopes, amount, ttl=ttl)

    async def asettle(self, hold_id: str, actual: int) -> None:
        self.settle(hold_id, actual)

    async def arenew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        self.renew(hold_id, ttl=ttl)

    def status(
        self, scopes: Sequence[str] | None = None, *, reap: bool = True
    ) -> list[ScopeStatus]:
        with self._lock:
            now = self.clock()
            if reap:
                self._reap(now)
            names = list(self._limits) if scopes is None else list(scopes)

            def totals(scope: str, key: str) -> tuple[int, int]:
                spent, reserved = self._totals.get((scope, key), (0, 0))
                return spent, reserved

            return scope_statuses(names, self._limits, now, totals)
