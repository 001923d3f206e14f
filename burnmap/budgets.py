"""Standing budgets: limits that hold across runs, processes and machines.

::

    burnmap.configure(ledger="sqlite:////var/lib/app/spend.db")  # or BURNMAP_LEDGER=...
    burnmap.limit("user:usr_123", 5.00, per="day", tz="Europe/Paris")
    burnmap.limit("global", 500.00, per="month")
    with burnmap.run("summarise", budget=0.10, user_id="usr_123"):
        client.messages.create(...)   # reserves on the run, user:usr_123, job:summarise, global

Each call reserves, in one atomic ledger step, on ``global``, ``job:<name>`` of every run in
scope and ``user:<user_id>`` (the nearest run's). Scopes with a limit are checked; spend is
recorded on all of them, so ``burnmap.spent("job:nightly")`` answers even without a limit.
Nothing is written to a ledger until a limit is set or a ledger configured: plain runs stay
in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, TypeVar

from burnmap._core.limits import check_storable
from burnmap._core.money import MICRO, from_micros, to_micros, usd
from burnmap._core.windows import check_period
from burnmap.errors import (
    BudgetExceededError,
    LedgerError,
    LedgerUnavailableError,
    RefusalError,
    sdk_compatible,
)
from burnmap.ledgers import Ledger, LimitDef, Refusal, ScopeStatus, open_ledger
from burnmap.ledgers.base import redacted_url

__all__ = [
    "BudgetStatus",
    "LedgerHold",
    "areserve_standing",
    "configure",
    "ledger",
    "limit",
    "limits",
    "remove_limit",
    "reserve_standing",
    "spent",
    "standing_active",
]

log = logging.getLogger("burnmap.budgets")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A scope's standing budget in its current window."""

    scope: str
    limit: Decimal | None
    per: str | None
    tz: str
    window: str
    spent: Decimal
    reserved: Decimal
    resets_at: datetime | None

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved


class _Config:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ledger: Ledger | None = None
        self.explicit = False
        self.on_unavailable: Literal["closed", "open"] = "closed"
        self.hold_ttl = 600.0
        self.charge_expired = True
        self.warned_open = False
        self.env_checked = False


_config = _Config()


def configure(
    *,
    ledger: str | Ledger | None = None,
    on_unavailable: Literal["closed", "open"] = "closed",
    hold_ttl: float = 600.0,
    expired_holds: Literal["charge", "release"] = "charge",
) -> Ledger:
    """Choose where standing budgets live, and how failures are handled.

    ``ledger``: a URL (``memory://``, ``sqlite:///spend.db``, ``redis://host:6379/0``) or a
    ledger object; default ``BURNMAP_LEDGER`` or ``memory://``. ``on_unavailable``:
    ``"closed"`` (no call without the ledger) or ``"open"`` (calls go ahead unbudgeted by
    the ledger; run budgets still apply). ``hold_ttl``: seconds a reservation outlives a
    process that died holding it. ``expired_holds``: ``"charge"`` an expired hold in full
    (the provider may have billed it) or ``"release"`` it.
    """
    if on_unavailable not in ("closed", "open"):
        raise ValueError('on_unavailable must be "closed" or "open"')
    if expired_holds not in ("charge", "release"):
        raise ValueError('expired_holds must be "charge" or "release"')
    if hold_ttl <= 0:
        raise ValueError("hold_ttl must be a positive number of seconds")
    charge = expired_holds == "charge"
    if ledger is None and _config.ledger is not None:
        opened = _config.ledger  # changing only the policies keeps the ledger and its limits
    else:
        url = ledger if ledger is not None else os.environ.get("BURNMAP_LEDGER", "memory://")
        opened = open_ledger(url) if isinstance(url, str) else url
    if hasattr(opened, "charge_expired"):
        opened.charge_expired = charge  # the ledger in use follows expired_holds
    with _config.lock:
        previous = _config.ledger
        _config.ledger = opened
        _config.explicit = _config.explicit or ledger is not None or "BURNMAP_LEDGER" in os.environ
        _config.on_unavailable = on_unavailable
        _config.hold_ttl = hold_ttl
        _config.charge_expired = charge
        _config.warned_open = False
    if previous is not None and previous is not opened:
        previous.close()
    return opened


def ledger() -> Ledger:
    """The ledger in use (opened from ``BURNMAP_LEDGER`` or ``memory://`` on first use)."""
    current = _config.ledger
    if current is None:
        env = os.environ.get("BURNMAP_LEDGER")
        current = configure(ledger=env) if env else configure()
    return current


def ledger_lock_held() -> bool:
    """Whether this thread is inside the configured ledger's lock (a signal handler that
    interrupted it, say): a settlement must not wait for that lock here."""
    return _config.ledger is not None and _config.ledger.held_here()


_ENV_LOCK = threading.Lock()


def standing_active() -> bool:
    """Whether calls reserve on the ledger: a ledger was configured or a limit set."""
    if _config.explicit:
        return True
    if _config.env_checked:
        return False
    # The environment is read once, not on every call, and calls made meanwhile on other
    # threads wait for its ledger to open: none may pass unbudgeted before it is.
    with _ENV_LOCK:
        if not _config.env_checked:
            env_url = os.environ.get("BURNMAP_LEDGER")
            if _config.ledger is None and env_url:
                try:
                    ledger()
                except LedgerError as exc:
                    # Unreachable, or a URL that cannot be read: every call is refused
                    # (not sent), as a burnmap error the SDKs pass through.
                    refusal = exc
                    if not isinstance(refusal, RefusalError):
                        refusal = LedgerUnavailableError(
                            redacted_url(env_url), exc, hint="Fix BURNMAP_LEDGER."
                        )
                    raise sdk_compatible(refusal) from None
            _config.env_checked = True
    return _config.explicit


# Stores count micro-dollars in 64-bit integers: a billion dollars leaves them room.
MAX_LIMIT = Decimal(10**9)


def limit(
    scope: str,
    budget: float | int | str | Decimal,
    *,
    per: Literal["day", "month"] | None = None,
    tz: str = "UTC",
) -> BudgetStatus:
    """Set (or change) a standing budget; it applies from the next reservation on.

    Scopes are ``"global"``, ``"user:<id>"``, ``"job:<name>"``, or any string your runs
    name. ``per="day"`` / ``"month"`` budgets start afresh each calendar day / month in
    ``tz``; ``per=None`` is a lifetime budget.
    """
    if not isinstance(scope, str) or not scope:
        raise ValueError("a budget scope is a non-empty string, e.g. 'user:usr_123' or 'global'")
    check_storable("budget scope", scope)
    check_period(per, tz)
    dollars = usd(budget)
    if dollars > MAX_LIMIT:
        raise ValueError(f"a standing budget is at most ${MAX_LIMIT:,}, not ${dollars:,}")
    # Rounded down to whole micro-dollars (what the stores count in): never more than asked.
    amount = int(dollars / MICRO)
    target = ledger()
    target.set_limit(LimitDef(scope, amount, per, tz))
    with _config.lock:
        _config.explicit = True
    return spent(scope)


def remove_limit(scope: str) -> bool:
    """Drop a standing budget (its recorded spend stays)."""
    return ledger().remove_limit(scope)


def _status(row: ScopeStatus) -> BudgetStatus:
    return BudgetStatus(
        scope=row.scope,
        limit=None if row.limit is None else from_micros(row.limit),
        per=row.per,
        tz=row.tz,
        window=row.window,
        spent=from_micros(row.spent),
        reserved=from_micros(row.reserved),
        resets_at=None if row.resets_at is None else datetime.fromtimestamp(row.resets_at, UTC),
    )


def limits() -> list[BudgetStatus]:
    """Every standing budget with its spend in the current window."""
    return [_status(row) for row in ledger().status(None)]


def spent(scope: str) -> BudgetStatus:
    """A scope's limit (if any), spend and holds in its current window."""
    return _status(ledger().status([scope])[0])


_T = TypeVar("_T")


def on_asyncio() -> bool:
    """Whether asyncio runs this coroutine. Under trio (the SDKs run on either, through
    anyio) the ledgers' async methods, built on asyncio, cannot be awaited: their blocking
    twins run on a worker thread instead (:func:`off_loop`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def off_loop(step: Callable[[], _T]) -> _T:
    """Run a blocking ledger step on a worker thread, from trio, whole: a cancellation
    waits for it (a hold is taken or settled, never half). anyio comes with httpx and
    httpx2, which are built on it."""
    import anyio  # only under trio

    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(step)
    return result


@dataclass(slots=True)
class LedgerHold:
    """A reservation held on the ledger, settled with the call."""

    ledger: Ledger
    hold_id: str
    ttl: float

    # A settlement runs as the caller reads the response: whatever goes wrong with it is
    # logged, never raised into the response (the hold expires, charged in full by default).
    def settle(self, cost: Decimal) -> None:
        try:
            self.ledger.settle(self.hold_id, to_micros(cost))
        except Exception as exc:
            self._unsettled(exc)

    def settle_later(self, cost: Decimal) -> None:
        """:meth:`settle` on a thread of its own, for a caller that cannot wait (a
        cancelled task): the event loop is not held up while the ledger is busy."""
        threading.Thread(target=self.settle, args=(cost,), name="burnmap-settle").start()

    async def asettle(self, cost: Decimal) -> None:
        if not on_asyncio():
            await off_loop(lambda: self.settle(cost))
            return
        try:
            await self.ledger.asettle(self.hold_id, to_micros(cost))
        except Exception as exc:
            self._unsettled(exc)
        except BaseException:
            # Cancelled while settling (a deadline, a cancel scope, Ctrl-C), maybe before
            # the ledger heard of it: the call happened, so the settlement is finished
            # elsewhere. (A hold settled twice is settled once.)
            self.settle_later(cost)
            raise

    def _unsettled(self, exc: Exception) -> None:
        fate = "charged in full" if getattr(self.ledger, "charge_expired", True) else "released"
        cause = exc.cause if isinstance(exc, LedgerUnavailableError) else repr(exc)
        log.error(
            "burnmap: could not settle hold %s on %s (%s); it expires and is %s",
            self.hold_id,
            getattr(self.ledger, "url", "the ledger"),
            cause,
            fate,
        )

    def renew(self) -> None:
        try:
            self.ledger.renew(self.hold_id, ttl=self.ttl)
        except LedgerUnavailableError as exc:
            log.warning("burnmap: could not renew %s (%s)", self.hold_id, exc)

    async def arenew(self) -> None:
        if not on_asyncio():
            await off_loop(self.renew)
            return
        try:
            await self.ledger.arenew(self.hold_id, ttl=self.ttl)
        except LedgerUnavailableError as exc:
            log.warning("burnmap: could not renew %s (%s)", self.hold_id, exc)


def _resets(refusal: Refusal) -> str | None:
    if refusal.resets_at is None:
        return None
    return f"at {datetime.fromtimestamp(refusal.resets_at, UTC):%Y-%m-%d %H:%M} UTC"


def _held(
    target: Ledger,
    hold_id: str,
    amount: Decimal,
    outcome: Refusal | LedgerUnavailableError | None,
    *,
    job_name: str | None,
    model: str | None,
    call_count: int,
) -> LedgerHold | None:
    """The hold, or the refusal to raise, from a ledger's answer."""
    if isinstance(outcome, LedgerUnavailableError):
        if _config.on_unavailable == "open":
            if not _config.warned_open:
                _config.warned_open = True
                log.warning("burnmap: ledger unavailable, calls proceed (on_unavailable=open)")
            return None
        raise sdk_compatible(outcome)
    if outcome is not None:
        raise sdk_compatible(
            BudgetExceededError(
                job_name=job_name,
                budget=from_micros(outcome.limit),
                spent_so_far=from_micros(outcome.spent),
                call_count=call_count,
                scope=outcome.scope,
                reserved=from_micros(outcome.reserved),
                needed=amount,
                model=model,
                resets=_resets(outcome),
            )
        )
    return LedgerHold(target, hold_id, _config.hold_ttl)


def _not_reservable(target: Ledger, exc: Exception) -> RefusalError:
    """A reservation that failed for another reason than the store (a limit's time zone
    unknown on this machine, say): refused, as a burnmap error the SDKs pass through. An
    SDK would wrap any other exception as a connection error, retry it, and hide its
    cause. Refused even with on_unavailable="open": the store is there, and this
    machine would spend past every budget it cannot compute."""
    cause = str(exc) if isinstance(exc, LedgerError) else f"{type(exc).__name__}: {exc}"
    hint = "The store is reachable, but this machine cannot compute the budgets in scope."
    return sdk_compatible(LedgerUnavailableError(target.url, cause, hint))


def reserve_standing(
    scopes: list[str],
    amount: Decimal,
    *,
    job_name: str | None,
    model: str | None,
    call_count: int,
) -> LedgerHold | None:
    """Reserve ``amount`` on the ledger for every scope; raise a refusal if one says no."""
    target = ledger()
    hold_id = uuid.uuid4().hex
    outcome: Refusal | LedgerUnavailableError | None
    try:
        outcome = target.reserve(hold_id, scopes, to_micros(amount), ttl=_config.hold_ttl)
    except LedgerUnavailableError as exc:
        outcome = exc
    except Exception as exc:
        raise _not_reservable(target, exc) from exc
    return _held(
        target, hold_id, amount, outcome, job_name=job_name, model=model, call_count=call_count
    )


async def areserve_standing(
    scopes: list[str],
    amount: Decimal,
    *,
    job_name: str | None,
    model: str | None,
    call_count: int,
) -> LedgerHold | None:
    """The async twin of :func:`reserve_standing`."""
    target = ledger()
    hold_id = uuid.uuid4().hex
    outcome: Refusal | LedgerUnavailableError | None
    try:
        outcome = await target.areserve(hold_id, scopes, to_micros(amount), ttl=_config.hold_ttl)
    except LedgerUnavailableError as exc:
        outcome = exc
    except Exception as exc:
        raise _not_reservable(target, exc) from exc
    return _held(
        target, hold_id, amount, outcome, job_name=job_name, model=model, call_count=call_count
    )
