"""Reserve/settle arithmetic over budget accounts.

The invariant every ledger keeps: for each account with a limit,
``spent + reserved <= limit`` after every reservation. A call reserves its worst-case
cost on every account in scope at once (all or none), then settles: the hold is replaced
by the actual cost, which the bound guarantees is no larger. The caller serialises calls
(a lock, one SQL transaction, one Lua script); this module only decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from burnmap._core.money import ZERO

__all__ = [
    "Account",
    "first_refusal",
    "hold",
    "release",
    "settle",
    "spend",
]


@dataclass(slots=True)
class Account:
    """One budget's running totals."""

    scope: str
    limit: Decimal | None
    spent: Decimal = ZERO
    reserved: Decimal = ZERO
    calls: int = 0
    """Settled calls that cost something."""
    holds: int = 0
    """Reservations currently open."""


def first_refusal(accounts: Sequence[Account], amount: Decimal) -> Account | None:
    """The first account that cannot hold ``amount`` more, or ``None`` if all can.

    >>> a = Account("run:a", Decimal("1.00"), spent=Decimal("0.70"))
    >>> first_refusal([a], Decimal("0.30")) is None, first_refusal([a], Decimal("0.31")).scope
    (True, 'run:a')
    """
    for account in accounts:
        if account.limit is not None and account.spent + account.reserved + amount > account.limit:
            return account
    return None


def hold(accounts: Sequence[Account], amount: Decimal) -> None:
    """Reserve ``amount`` on every account (after :func:`first_refusal` said yes)."""
    for account in accounts:
        account.reserved += amount
        account.holds += 1


def spend(accounts: Sequence[Account], actual: Decimal) -> None:
    """Record a cost that held nothing first (a call made elsewhere, seen afterwards)."""
    for account in accounts:
        account.spent += actual
        if actual:
            account.calls += 1


def settle(accounts: Sequence[Account], held: Decimal, actual: Decimal) -> None:
    """Replace a hold by the actual cost.

    >>> a = Account("run:a", Decimal(1)); hold([a], Decimal("0.5"))
    >>> settle([a], Decimal("0.5"), Decimal("0.1")); (a.spent, a.reserved, a.calls)
    (Decimal('0.1'), Decimal('0'), 1)
    """
    for account in accounts:
        account.holds -= 1
        # With no hold left the exact difference is zero: kept as plain 0 (not 0E-8).
        account.reserved = account.reserved - held if account.holds else ZERO
    spend(accounts, actual)


def release(accounts: Sequence[Account], held: Decimal) -> None:
    """Drop a hold without charging anything (an HTTP error, a refusal elsewhere)."""
    settle(accounts, held, ZERO)
