"""``sqlite:///path.db``: the embedded ledger, shared by every process on one host.

WAL journal, ``synchronous=FULL`` (an acknowledged settle survives a power cut), one
``BEGIN IMMEDIATE`` transaction per operation (check and write under one write lock), and
a busy timeout so concurrent processes queue instead of failing.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from burnmap.errors import LedgerUnavailableError
from burnmap.ledgers.base import (
    DEFAULT_HOLD_TTL,
    KEEP_DONE_SECONDS,
    Ledger,
    LimitDef,
    Refusal,
    ScopeStatus,
    entries_for,
    limit_window,
    scope_statuses,
)

__all__ = ["SQLiteLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limits (
    scope TEXT PRIMARY KEY,
    limit_micros INTEGER NOT NULL,
    per TEXT,
    tz TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, window)
);
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    expires REAL NOT NULL,
    entries TEXT NOT NULL,
    state TEXT NOT NULL,
    charged INTEGER NOT NULL DEFAULT 0,
    refusal TEXT,
    done_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS holds_open ON holds (state, expires);
CREATE INDEX IF NOT EXISTS holds_done ON holds (done_at);
"""


class SQLiteLedger(Ledger):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        charge_expired: bool = True,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        # Resolved now, once: a process that changes directory later, or forks workers
        # after it did, must keep using this file, not one relative to its new directory.
        self.path = Path(path).absolute()
        self.url = f"sqlite:///{self.path}"
        self.create = create
        """``False``: the file must exist (``burnmap wrap``'s children: a ledger gone with
        its supervisor must refuse calls, not start afresh with no limits)."""
        self.charge_expired = charge_expired
        self.busy_timeout = busy_timeout
        self.clock = clock
        # Reentrant only so that its holder can be recognised (held_here).
        self._lock = threading.RLock()
        self._fork_safe()
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._file_checked = 0.0
        self._pid = 0
        with self._lock:
            try:
                self._connect().executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A forked child must not share its parent's connection: open its own.
        try:
            if self.create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Waiting for the write lock is ours (see _begin), not SQLite's: its busy handler
            # sleeps up to 100 ms between tries, which starved some processes for seconds.
            conn = sqlite3.connect(
                self.path if self.create else f"file:{quote(str(self.path))}?mode=rw",
                timeout=0.05,
                isolation_level=None,
                check_same_thread=False,
                uri=not self.create,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise self._unavailable(exc) from exc
        self._conn = conn
        self._pid = os.getpid()
        self._file = self._identity()
        return conn

    def _unavailable(self, exc: BaseException) -> LedgerUnavailableError:
        """The error for a failed operation, with the likely cause when SQLite's is vague:
        "unable to open database file" or "attempt to write a readonly database" most
        often mean that this user may not write the file, or its directory (SQLite creates
        spend.db-wal and spend.db-shm next to the file, even to read it)."""
        where = self.path.parent
        try:
            if where.is_dir() and not os.access(where, os.W_OK):
                return LedgerUnavailableError(
                    self.url,
                    f"{exc}: directory not writable: this user cannot write to {where}, "
                    f"where SQLite keeps {self.path.name}-wal and {self.path.name}-shm",
                )
            if self.path.exists() and not os.access(self.path, os.W_OK):
                return LedgerUnavailableError(
                    self.url, f"{exc}: file not writable: this user cannot write to {self.path}"
                )
        except OSError:  # (a directory above that this user may not even look into)
            pass
        return LedgerUnavailableError(self.url, exc)

    def _identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def _check_file(self) -> None:
        """The database file must still be the one connected to: deleted or replaced
        while this process runs, it would split the ledger in two (this process writing
        to the old file, new ones to a new file with no limits). Looked at once a second
        at most (a stat per operation cost a tenth of the throughput)."""
        now = time.monotonic()
        if now < self._file_checked + 1.0:
            return
        self._file_checked = now
        if self._identity() != self._file:
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            raise LedgerUnavailableError(
                self.url,
                "its file was deleted or replaced while this process was using it; restart "
                "the processes that share it (limits set on the old file must be set again)",
            )

    def _acquire(self) -> None:
        """Take this process's lock on the file, or give up after ``busy_timeout``."""
        if not self._lock.acquire(timeout=max(self.busy_timeout, 0.0)):
            raise LedgerUnavailableError(
                self.url, f"another thread held the ledger for {self.busy_timeout:g} s"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # One deadline for the thread lock and the database's write lock together: threads
        # queued behind a stuck lock give up after busy_timeout, not one after another.
        deadline = time.monotonic() + self.busy_timeout
        self._acquire()
        try:
            conn = self._connect()
            self._check_file()
            try:
                self._begin(conn, deadline)
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    self._abandon(conn)
                    raise
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        finally:
            self._lock.release()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot, without the write lock (in WAL
        mode readers neither wait for the writer nor hold it up)."""
        self._acquire()
        try:
            conn = self._connect()
            self._check_file()
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    self._abandon(conn)  # (a read transaction has nothing to commit)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        finally:
            self._lock.release()

    def _abandon(self, conn: sqlite3.Connection) -> None:
        """Undo a transaction that failed or was interrupted (a COMMIT too): a connection
        left inside one would keep the write lock of every process on the host. One that
        cannot roll back is closed, and the next transaction opens another."""
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except BaseException:
            self._conn = None
            with suppress(Exception):
                conn.close()

    def _begin(self, conn: sqlite3.Connection, deadline: float) -> None:
        """Take the write lock, retrying every ~0.5 ms (with jitter) until ``deadline``."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # (never left so, but never built upon either)
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.0002 + random.random() * 0.0006)

    # -- limits ------------------------------------------------------------------------
    def set_limit(self, definition: LimitDef) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO limits (scope, limit_micros, per, tz) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET limit_micros = excluded.limit_micros, "
                "per = excluded.per, tz = excluded.tz",
                (definition.scope, definition.limit, definition.per, definition.tz),
            )

    def remove_limit(self, scope: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM limits WHERE scope = ?", (scope,)).rowcount > 0

    def _limits(
        self, conn: sqlite3.Connection, scopes: Sequence[str] | None
    ) -> dict[str, LimitDef]:
        if scopes is None:
            rows = conn.execute("SELECT scope, limit_micros, per, tz FROM limits").fetchall()
        else:
            marks = ",".join("?" * len(scopes))
            rows = conn.execute(
                f"SELECT scope, limit_micros, per, tz FROM limits WHERE scope IN ({marks})",
                tuple(scopes),
            ).fetchall()
        return {row[0]: LimitDef(row[0], row[1], row[2], row[3]) for row in rows}

    def get_limits(self) -> dict[str, LimitDef]:
        with self._transaction() as conn:
            return self._limits(conn, None)

    # -- holds -------------------------------------------------------------------------
    def _reap(self, conn: sqlite3.Connection, now: float) -> int:
        rows = conn.execute(
            "SELECT id, amount, entries FROM holds WHERE state = 'held' AND expires <= ?",
            (now,),
        ).fetchall()
        for hold_id, amount, entries in rows:
            charged = amount if self.charge_expired else 0
            for scope, key in json.loads(entries):
                conn.execute(
                    "UPDATE totals SET reserved = reserved - ?, spent = spent + ? "
                    "WHERE scope = ? AND window = ?",
                    (amount, charged, scope, key),
                )
            conn.execute(
                "UPDATE holds SET state = 'expired', charged = ?, done_at = ? WHERE id = ?",
                (charged, now, hold_id),
            )
        if random.random() < 1 / 256:
            conn.execute(
                "DELETE FROM holds WHERE state != 'held' AND done_at < ?",
                (now - KEEP_DONE_SECONDS,),
            )
        return len(rows)

    def reap(self) -> int:
        with self._transaction() as conn:
            return self._reap(conn, self.clock())

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
        with self._transaction() as conn:
            now = self.clock()
            self._reap(conn, now)
            known = conn.execute(
                "SELECT state, refusal FROM holds WHERE id = ?", (hold_id,)
            ).fetchone()
            if known is not None:
                return Refusal.from_json(known[1]) if known[0] == "refused" else None
            entries = entries_for(scopes, self._limits(conn, scopes), now)
            for scope, win, definition in entries:
                if definition is None:
                    continue
                row = conn.execute(
                    "SELECT spent, reserved FROM totals WHERE scope = ? AND window = ?",
                    (scope, win.key),
                ).fetchone()
                spent, reserved = row if row is not None else (0, 0)
                if spent + reserved + amount > definition.limit:
                    refusal = Refusal(scope, definition.limit, spent, reserved, win.key, win.end)
                    conn.execute(
                        "INSERT INTO holds (id, amount, expires, entries, state, refusal, "
                        "done_at) VALUES (?, 0, 0, '[]', 'refused', ?, ?)",
                        (hold_id, refusal.to_json(), now),
                    )
                    return refusal
            keys = [(scope, win.key) for scope, win, _ in entries]
            conn.executemany(
                "INSERT INTO totals (scope, window, reserved) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, window) DO UPDATE SET reserved = reserved + excluded.reserved",
                [(scope, key, amount) for scope, key in keys],
            )
            conn.execute(
                "INSERT INTO holds (id, amount, expires, entries, state) "
                "VALUES (?, ?, ?, ?, 'held')",
                (hold_id, amount, now + ttl, json.dumps(keys)),
            )
            return None

    def settle(self, hold_id: str, actual: int) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state, amount, charged, entries FROM holds WHERE id = ?", (hold_id,)
            ).fetchone()
            if row is None or row[0] in ("settled", "refused"):
                return
            state, amount, charged, entries = row
            for scope, key in json.loads(entries):
                if state == "held":
                    conn.execute(
                        "UPDATE totals SET reserved = reserved - ?, spent = spent + ? "
                        "WHERE scope = ? AND window = ?",
                        (amount, actual, scope, key),
                    )
                else:  # expired: correct what expiry charged
                    conn.execute(
                        "UPDATE totals SET spent = spent + ? WHERE scope = ? AND window = ?",
                        (actual - charged, scope, key),
                    )
            conn.execute(
                "UPDATE holds SET state = 'settled', charged = ?, done_at = ? WHERE id = ?",
                (actual, self.clock(), hold_id),
            )

    def renew(self, hold_id: str, *, ttl: float = DEFAULT_HOLD_TTL) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE holds SET expires = ? WHERE id = ? AND state = 'held'",
                (self.clock() + ttl, hold_id),
            )

    def status(
        self, scopes: Sequence[str] | None = None, *, reap: bool = True
    ) -> list[ScopeStatus]:
        # Reaping writes, so it takes the write lock of every process on the host: only
        # when a hold is overdue, and only for the reaping. The listing itself is read in
        # a read transaction, which holds up no reservation however many limits there are.
        if reap:
            with self._reading() as conn:
                overdue = conn.execute(
                    "SELECT 1 FROM holds WHERE state = 'held' AND expires <= ? LIMIT 1",
                    (self.clock(),),
                ).fetchone()
            if overdue is not None:
                self.reap()
        with self._reading() as conn:
            now = self.clock()
            limits = self._limits(conn, scopes)
            names = list(limits) if scopes is None else list(scopes)
            found = self._current_totals(conn, scopes, names, limits, now)

        def totals(scope: str, key: str) -> tuple[int, int]:
            return found.get((scope, key), (0, 0))

        return scope_statuses(names, limits, now, totals)

    def _current_totals(
        self,
        conn: sqlite3.Connection,
        scopes: Sequence[str] | None,
        names: list[str],
        limits: dict[str, LimitDef],
        now: float,
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(spent, reserved) by (scope, window), read in one query, in the current windows
        (few distinct keys: one per period and zone, and ``all``) of ``names``."""
        current = {limit_window(d.scope, d.per, d.tz, now).key for d in limits.values()}
        keys = sorted(current | {"all"})
        in_keys = ",".join("?" * len(keys))
        if scopes is None:
            rows = conn.execute(
                "SELECT t.scope, t.window, t.spent, t.reserved FROM totals t "
                f"JOIN limits l ON l.scope = t.scope WHERE t.window IN ({in_keys})",
                keys,
            ).fetchall()
        else:
            in_names = ",".join("?" * len(names))
            rows = conn.execute(
                "SELECT scope, window, spent, reserved FROM totals "
                f"WHERE scope IN ({in_names}) AND window IN ({in_keys})",
                [*names, *keys],
            ).fetchall()
        return {(row[0], row[1]): (int(row[2]), int(row[3])) for row in rows}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
