"""Spend ledgers, chosen by URL: ``memory://``, ``sqlite:///path.db``, ``redis://host:6379/0``.

One factory, :func:`open_ledger`, serves the library, the CLI and ``BURNMAP_LEDGER`` alike.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from burnmap.errors import LedgerError
from burnmap.ledgers.base import Ledger, LimitDef, Refusal, ScopeStatus, redacted_url
from burnmap.ledgers.memory import MemoryLedger

__all__ = ["Ledger", "LimitDef", "MemoryLedger", "Refusal", "ScopeStatus", "open_ledger"]


def open_ledger(url: str, *, charge_expired: bool = True) -> Ledger:
    """A ledger for ``url``.

    >>> open_ledger("memory://").url
    'memory://'
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise LedgerError(f"bad ledger URL {redacted_url(url)!r}: {exc}") from None
    if scheme == "memory":
        return MemoryLedger(charge_expired=charge_expired)
    if scheme == "sqlite":
        from burnmap.ledgers.sqlite import SQLiteLedger

        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        path, _, query = path.partition("?")
        if not path:
            raise LedgerError("sqlite ledger URL needs a file: sqlite:///spend.db")
        # ?create=false: the file must exist already (burnmap wrap's children use it).
        create = parse_qs(query).get("create", ["true"])[-1].lower() not in ("false", "0", "no")
        return SQLiteLedger(path, charge_expired=charge_expired, create=create)
    if scheme in ("redis", "rediss", "unix"):
        from burnmap.ledgers.redis import RedisLedger

        return RedisLedger(url, charge_expired=charge_expired)
    raise LedgerError(
        f"unknown ledger URL {redacted_url(url)!r}: use memory://, sqlite:///path.db or "
        "redis://host:6379/0"
    )
