"""``redis://host:port/db``: the distributed ledger, shared by many machines.

Every operation is one Lua script (shipped in ``lua/``), checking everything before
writing anything, on integer micro-dollars (``HINCRBY``, never floats), with all keys under
one hash tag so a Redis Cluster keeps them in one slot. Time is the store's (``TIME``):
windows are computed by the client (time zones and DST need a zone database) and checked
by the script against the store's clock; on a mismatch the script answers with its time
and the current limits, and the client recomputes once. Scripts are idempotent on the
hold id: after a timeout or a dropped connection the ledger re-sends the same script once,
and a command the store had applied is not applied twice.

Needs ``pip install "burnmap[redis]"`` (redis-py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import weakref
from collections.abc import Generator, Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from burnmap._core.windows import Window, window
from burnmap.errors import LedgerError, LedgerUnavailableError
from burnmap.ledgers.base import (
    DEFAULT_HOLD_TTL,
    KEEP_DONE_SECONDS,
    Ledger,
    LimitDef,
    Refusal,
    ScopeStatus,
    limit_window,
    redacted_url,
    scope_statuses,
)

__all__ = ["MAX_CONNECTIONS", "POOL_WAIT", "RedisLedger"]

MAX_CONNECTIONS = 500
"""Connections a process opens to Redis at most (per event loop for async calls), unless
the URL says ``?max_connections=``. More operations at once wait for one to be free."""
POOL_WAIT = 5.0
"""Seconds an operation waits for a free connection (the socket timeout) before it fails
as unavailable."""


def _script(name: str) -> str:
    return resources.files("burnmap.ledgers").joinpath("lua", name).read_text()


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise LedgerError('the redis ledger needs redis-py: pip install "burnmap[redis]"') from exc
    return redis


class RedisLedger(Ledger):
    def __init__(
        self,
        url: str,
        *,
        charge_expired: bool = True,
        prefix: str | None = None,
        client: Any = None,
    ) -> None:
        redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # prefix= is ours, never redis-py's, even when the argument overrides it.
        self._connect_url, url_prefix = _without_prefix(url)
        parts = urlsplit(self._connect_url)
        if parts.scheme.lower() == "unix" and not parts.path.strip("/"):
            raise LedgerError(
                f"bad ledger URL {redacted_url(url)!r}: a unix:// URL names the server's "
                "socket, as in unix:///run/redis/redis.sock"
            )
        self.prefix = prefix or url_prefix or "{burnmap}"
        if "{" not in self.prefix:
            self.prefix = "{" + self.prefix + "}"
        self.url = redacted_url(self._connect_url)
        self.charge_expired = charge_expired
        self._own_client = client is None
        if client is None:
            try:
                client = redis.Redis(connection_pool=self._pool(redis))
            except ValueError as exc:  # a port or a query value redis-py cannot read
                raise LedgerError(
                    f"bad ledger URL {self.url!r} ({exc}): use redis://[user:password@]host:"
                    "6379/0, rediss://... or unix:///path/to/redis.sock"
                ) from None
        self._client = client
        self._reserve = self._client.register_script(_script("reserve.lua"))
        self._settle = self._client.register_script(_script("settle.lua"))
        self._renew = self._client.register_script(_script("renew.lua"))
        self._limit_cache: dict[str, str] = {}
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, ...]] = (
            weakref.WeakKeyDictionary()
        )

    def _async_parts(self) -> tuple[Any, Any, Any, Any]:
        """redis.asyncio client and scripts for the running event loop (they are bound to it)."""
        loop = asyncio.get_running_loop()
        parts = self._async.get(loop)
        if parts is None:
            import redis.asyncio as aredis

            client = aredis.Redis(connection_pool=self._pool(aredis))
            parts = (
                client,
                client.register_script(_script("reserve.lua")),
                client.register_script(_script("settle.lua")),
                client.register_script(_script("renew.lua")),
            )
            self._async[loop] = parts
        return parts

    def _pool(self, module: Any) -> Any:
        """A connection pool (``module``: redis or redis.asyncio) that makes a burst of
        operations wait for a free connection instead of failing: redis-py's default
        pool raises "Too many connections" past its cap (100 since redis-py 7), which
        would refuse healthy calls. The URL's ``?max_connections=`` (and ``?timeout=``,
        the wait) win over these defaults."""
        return module.BlockingConnectionPool.from_url(
            self._connect_url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    async def _acall(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                return await fn(*args, **kwargs)
            except self._errors as exc:
                if attempt == 2 or not self._transient(exc):
                    raise LedgerUnavailableError(self.url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # One re-send on a connection error or timeout: every script is idempotent on its
        # hold id, so a command the store did apply is not applied twice.
        for attempt in (1, 2):
            try:
                return fn(*args, **kwargs)
            except self._errors as exc:
                if attempt == 2 or not self._transient(exc):
                    raise LedgerUnavailableError(self.url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _transient(self, exc: BaseException) -> bool:
        import redis

        return isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)

    def _now(self) -> float:
        seconds, micros = self._call(self._client.time)
        return float(seconds) + float(micros) / 1_000_000

    # -- limits ------------------------------------------------------------------------
    def set_limit(self, definition: LimitDef) -> None:
        self._call(
            self._client.hset, f"{self.prefix}:limits", definition.scope, definition.to_json()
        )

    def remove_limit(self, scope: str) -> bool:
        return bool(self._call(self._client.hdel, f"{self.prefix}:limits", scope))

    def get_limits(self) -> dict[str, LimitDef]:
        raw = self._call(self._client.hgetall, f"{self.prefix}:limits")
        return {k.decode(): LimitDef.from_json(k.decode(), v) for k, v in raw.items()}

    # -- holds -------------------------------------------------------------------------
    def _args(
        self,
        hold_id: str,
        scopes: list[str],
        amount: int,
        *,
        ttl: float,
        limits: dict[str, str],
        now: float,
    ) -> list[Any]:
        args: list[Any] = [
            hold_id,
            amount,
            ttl,
            int(KEEP_DONE_SECONDS),
            1 if self.charge_expired else 0,
            len(scopes),
        ]
        for scope in scopes:
            text = limits.get(scope, "")
            win = _window(scope, text, now)
            args += [
                scope,
                text,
                win.key,
                repr(win.start),
                "" if win.end is None else repr(win.end),
            ]
        return args

    def _reserving(
        self, hold_id: str, scopes: Sequence[str], amount: int, ttl: float
    ) -> Generator[list[Any], Any, Refusal | None]:
        """The reservation's steps, for a sync or async driver: yields the script's
        arguments, is sent its answer; retried (at most twice) with the store's clock and
        limits when the ones it was sent are stale."""
        names = list(dict.fromkeys(scopes))
        limits = {s: self._limit_cache.get(s, "") for s in names}
        now = time.time()
        for _ in range(3):
            answer = yield self._args(hold_id, names, amount, ttl=ttl, limits=limits, now=now)
            outcome = self._outcome(answer)
            if outcome is None or isinstance(outcome, Refusal):
                return outcome
            now, limits = outcome  # the store's clock and its current limits
        raise LedgerUnavailableError(self.url, "limits kept changing during the reservation")

    def reserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        steps = self._reserving(hold_id, scopes, amount, ttl)
        args = next(steps)
        while True:
            answer = self._call(self._reserve, keys=[self.prefix], args=args)
            try:
                args = steps.send(answer)
            except StopIteration as done:
                refusal: Refusal | None = done.value
                return refusal

    async def areserve(
        self,
        hold_id: str,
        scopes: Sequence[str],
        amount: int,
        *,
        ttl: float = DEFAULT_HOLD_TTL,
    ) -> Refusal | None:
        if not self._own_client:  # a caller's (e.g. Cluster) client has no async twin here
            return await super().areserve(hold_id, scopes, amount, ttl=ttl)
        _, reserve, _, _ = self._async_parts()
        steps = self._reserving(hold_id, scopes, amount, ttl)
        args = next(steps)
        while True:
            answer = await self._acall(reserve, keys=[self.prefix], args=args)
            try:
                args = steps.send(answer)
            except StopIteration as done:
                refusal: Refusal | None = done.value
                return refusal

    async def asettle(self, hold_id: str, actual: int) -> None:
        if not self._own_client:
            return await super().asettle(hold_id, actual)
        _, _, settle, _ = self._async_parts()
        await self._acall(
            settle, keys=[self.prefix], args=[hold_id, actual, int(KEEP_DONE_SECONDS)]
        )

    async def arenew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        if not self._own_client:
            return await super().arenew(hold_id, ttl=ttl)
        _, _, _, renew = self._async_parts()
        await self._acall(renew, keys=[self.prefix], args=[hold_id, ttl])

    def _outcome(self, answer: Any) -> Refusal | tuple[float, dict[str, str]] | None:
        """None (held), a refusal, or (store time, current limits) to retry with."""
        kind = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        if kind == "ok":
            return None
        if kind == "refused":
            return Refusal.from_json(answer[1])
        current = json.loads(answer[2])
        limits = current if isinstance(current, dict) else {}
        self._limit_cache.update(limits)
        return float(answer[1]), limits

    def settle(self, hold_id: str, actual: int) -> None:
        self._call(self._settle, keys=[self.prefix], args=[hold_id, actual, int(KEEP_DONE_SECONDS)])

    def renew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        self._call(self._renew, keys=[self.prefix], args=[hold_id, ttl])

    def reap(self) -> int:
        # The reservation script reaps first (up to 200 holds a call); with no hold id it
        # only reaps. Repeat until a call finds fewer.
        total = 0
        while True:
            count = self._reap_batch()
            total += count
            if count < 200:
                return total

    def _reap_batch(self) -> int:
        answer = self._call(
            self._reserve,
            keys=[self.prefix],
            args=["", 0, 0, int(KEEP_DONE_SECONDS), 1 if self.charge_expired else 0, 0],
        )
        return int(answer[1])

    def status(
        self, scopes: Sequence[str] | None = None, *, reap: bool = True
    ) -> list[ScopeStatus]:
        if reap:
            self.reap()
        limits = self.get_limits()
        names = list(limits) if scopes is None else list(scopes)

        def totals(scope: str, key: str) -> tuple[int, int]:
            spent, reserved = self._call(
                self._client.hmget, f"{self.prefix}:t:{scope}|{key}", ["s", "r"]
            )
            return int(spent or 0), int(reserved or 0)

        return scope_statuses(names, limits, self._now(), totals)

    def close(self) -> None:
        if self._own_client:  # a client passed in stays its owner's to close
            self._client.close()
            self._client.connection_pool.disconnect()
        self._async.clear()

    async def aclose(self) -> None:
        """Close the async connections of the running event loop (before it closes)."""
        parts = self._async.pop(asyncio.get_running_loop(), None)
        if parts is not None:
            await parts[0].aclose()
            await parts[0].connection_pool.disconnect()


def _without_prefix(url: str) -> tuple[str, str | None]:
    """The URL without its ``prefix=`` parameter, and that parameter's (first) value.

    Only that parameter is cut out; the rest of the URL is kept as written. Splitting it
    and joining it again with ``urllib`` turned ``unix:///run/redis.sock`` into
    ``unix:/run/redis.sock``, which redis-py rejects (``unix`` has no netloc for urllib).

    >>> _without_prefix("unix:///run/redis.sock?db=2&prefix=app")
    ('unix:///run/redis.sock?db=2', 'app')
    """
    base, _, query = url.partition("?")
    kept: list[str] = []
    prefix: str | None = None
    for field in query.split("&") if query else []:
        name, _, value = field.partition("=")
        if unquote_plus(name) == "prefix":
            prefix = unquote_plus(value) if prefix is None else prefix
        else:
            kept.append(field)
    # redis-py reads the other query parameters (db=, ssl_cert_reqs=...): keep them.
    return (f"{base}?{'&'.join(kept)}" if kept else base), prefix


def _window(scope: str, limit_json: str, now: float) -> Window:
    if not limit_json:
        return window(None, "UTC", now)
    definition = _parsed_limit(limit_json)
    return limit_window(scope, definition.per, definition.tz, now)


@functools.lru_cache(maxsize=1024)
def _parsed_limit(limit_json: str) -> LimitDef:
    """A limit as the store holds it, parsed once (each reservation sends every scope's)."""
    return LimitDef.from_json("", limit_json)
