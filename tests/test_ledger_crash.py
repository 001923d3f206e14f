"""Crash tests for the shared ledgers: real processes, real SIGKILLs, real stores.

Eight worker processes (``spawn``) of four threads each reserve on three scopes
(``global``, ``user:uN``, ``job:jN``) against limits well below what they ask for, then
settle with an actual cost at most the hold (sometimes 0). A worker appends ``hold_id
actual`` to its own acknowledgement file, and fsyncs it, only after ``settle`` returned.
The parent SIGKILLs random workers at random moments (starting replacements) for
``CHAOS_SECONDS``; the Redis test also SIGKILLs ``redis-server`` twice and restarts it on
the same port and directory (the AOF replays). Afterwards, once every hold has outlived its
TTL and ``reap()`` ran:

- no budget is over its limit and nothing is still reserved, in every window;
- every scope's spent equals the sum charged by the holds made on it (nothing half-applied);
- every acknowledged settle is in the store, settled, with the acknowledged amount.

Each test prints a ``ledger-crash`` summary line (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from burnmap.errors import LedgerUnavailableError
from burnmap.ledgers import LimitDef, open_ledger
from tests.conftest import RedisServer

pytestmark = pytest.mark.crash

WORKERS = 8
THREADS = 4
HOLD_TTL = 1.5
CHAOS_SECONDS = 10.0
# Micro-dollars. Each op asks for 1k..200k; the limits are a small fraction of demand.
MIN_AMOUNT = 1_000
MAX_AMOUNT = 200_000
USERS = 4
JOBS = 8
# Limits are lifetime (per day for users) and fill up during the run: about 750 calls fit
# (an allowed call is charged 40k on average), then mostly refusals (small asks still
# fit). The three kinds hold about as much in all (8 jobs x 3.6M, 4 users x 7.5M, global
# 30M), so which one refuses first varies. A slow disk (CI once served 100 SQLite
# reserves/s) still fills them within the chaos seconds, and the chaos goes on until a
# refusal was seen.
GLOBAL_LIMIT = 30_000_000
USER_LIMIT = 7_500_000  # per day, Europe/Paris: the windowed path
JOB_LIMIT = 3_600_000
REFUSAL_WAIT = 30.0  # at most this long past CHAOS_SECONDS for the first refusal
SLOW_CALLS = 0.01  # share of calls that outlive their hold: settle after expiry
ZERO_ACTUAL = 0.2

# Per (slot, thread) counters in shared memory, each written by one thread only (no lock
# a SIGKILL could leave taken).
MAX_SLOTS = 256
RESERVES, REFUSED, ACKED, UNAVAILABLE, SETTLE_ERRORS = range(5)
FIELDS = 5

Hold = tuple[str, int, list[tuple[str, str]], str]
"""A hold as stored: state, charged, its (scope, window) entries, the scope that refused."""


def _limits() -> list[LimitDef]:
    return [
        LimitDef("global", GLOBAL_LIMIT, None, "UTC"),
        *(LimitDef(f"user:u{i}", USER_LIMIT, "day", "Europe/Paris") for i in range(USERS)),
        *(LimitDef(f"job:j{i}", JOB_LIMIT, None, "UTC") for i in range(JOBS)),
    ]


# -- the worker (runs in spawned processes) ---------------------------------------------
def _worker(
    url: str, slot: int, ack_path: str, counters: Any, stop: Any, hard_deadline: float
) -> None:
    ledger = open_ledger(url)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ack_lock = threading.Lock()
    threads = [
        threading.Thread(
            target=_ops,
            args=(ledger, slot, index, fd, ack_lock, counters, stop, hard_deadline),
        )
        for index in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.close(fd)
    ledger.close()


def _ops(
    ledger: Any,
    slot: int,
    index: int,
    fd: int,
    ack_lock: threading.Lock,
    counters: Any,
    stop: Any,
    hard_deadline: float,
) -> None:
    rng = random.Random(f"{os.getpid()}-{slot}-{index}")
    base = (slot * THREADS + index) * FIELDS
    n = 0
    while not stop.value and time.time() < hard_deadline:
        n += 1
        hold_id = f"s{slot}t{index}n{n}"
        scopes = ["global", f"user:u{rng.randrange(USERS)}", f"job:j{rng.randrange(JOBS)}"]
        amount = rng.randint(MIN_AMOUNT, MAX_AMOUNT)
        try:
            refusal = ledger.reserve(hold_id, scopes, amount, ttl=HOLD_TTL)
        except LedgerUnavailableError:
            counters[base + UNAVAILABLE] += 1  # fail closed: the call is not made
            time.sleep(0.05)
            continue
        counters[base + RESERVES] += 1
        if refusal is not None:
            counters[base + REFUSED] += 1
            continue
        # The "call".
        time.sleep(HOLD_TTL + 0.3 if rng.random() < SLOW_CALLS else rng.random() * 0.005)
        actual = 0 if rng.random() < ZERO_ACTUAL else rng.randint(0, amount)
        for _ in range(3):
            try:
                ledger.settle(hold_id, actual)
            except LedgerUnavailableError:
                counters[base + SETTLE_ERRORS] += 1
                time.sleep(0.2)
                continue
            with ack_lock:
                os.write(fd, f"{hold_id} {actual}\n".encode())
                os.fsync(fd)
            counters[base + ACKED] += 1
            break


# -- the parent: workers, kills, replacements --------------------------------------------
@dataclass
class Chaos:
    url: str
    directory: Path
    seed: int
    ctx: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    procs: dict[int, BaseProcess] = field(default_factory=dict)
    kills: int = 0
    started: int = 0
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counters = self.ctx.RawArray("q", MAX_SLOTS * THREADS * FIELDS)
        self.stop = self.ctx.RawValue("i", 0)
        self.hard_deadline = time.time() + 90.0  # a safety net: workers stop by themselves
        self.rng = random.Random(self.seed)

    def ack_path(self, slot: int) -> Path:
        return self.directory / f"ack-{slot:03d}.log"

    def spawn(self) -> None:
        slot = self.started
        assert slot < MAX_SLOTS
        self.started += 1
        proc = self.ctx.Process(
            target=_worker,
            args=(
                self.url,
                slot,
                str(self.ack_path(slot)),
                self.counters,
                self.stop,
                self.hard_deadline,
            ),
            daemon=True,
        )
        proc.start()
        self.procs[slot] = proc

    def reserves(self, slot: int) -> int:
        base = slot * THREADS * FIELDS
        return sum(self.counters[base + t * FIELDS + RESERVES] for t in range(THREADS))

    def total(self, which: int) -> int:
        return sum(self.counters[i] for i in range(which, len(self.counters), FIELDS))

    def kill_one(self) -> None:
        alive = [s for s, p in self.procs.items() if p.is_alive()]
        if not alive:
            return
        busy = [s for s in alive if self.reserves(s) > 0]
        slot = self.rng.choice(busy or alive)
        proc = self.procs.pop(slot)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        self.kills += 1

    def run(self, server_crashes: Sequence[tuple[float, Callable[[], None]]] = ()) -> float:
        """Start the workers, kill and replace them for CHAOS_SECONDS; returns run time."""
        began = time.monotonic()
        try:
            for _ in range(WORKERS):
                self.spawn()
            # Chaos starts once every first worker is under way (spawn is slow on 2 cores).
            ready_by = time.monotonic() + 15
            while time.monotonic() < ready_by and not all(
                self.reserves(s) > 0 for s in range(WORKERS)
            ):
                time.sleep(0.05)
            chaos_start = time.monotonic()
            pending = sorted(server_crashes, key=lambda item: item[0])
            while (elapsed := time.monotonic() - chaos_start) < CHAOS_SECONDS or (
                (pending or self.total(REFUSED) == 0) and elapsed < CHAOS_SECONDS + REFUSAL_WAIT
            ):
                time.sleep(self.rng.uniform(0.2, 0.9))
                if pending and time.monotonic() - chaos_start >= pending[0][0]:
                    pending.pop(0)[1]()
                    continue
                self.kill_one()
                self.spawn()
            self.stop.value = 1
            join_by = time.monotonic() + 20
            for proc in self.procs.values():
                proc.join(max(0.0, join_by - time.monotonic()))
            return time.monotonic() - began
        finally:
            self.stop.value = 1
            for proc in self.procs.values():
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.join(10)

    def acknowledged(self) -> dict[str, int]:
        acks: dict[str, int] = {}
        for path in sorted(self.directory.glob("ack-*.log")):
            # Only newline-terminated lines: a torn last line is not an acknowledgement.
            for line in path.read_text().split("\n")[:-1]:
                parts = line.split()
                if len(parts) == 2:
                    acks[parts[0]] = int(parts[1])
        return acks

    def summary(self, store: str, holds: dict[str, Hold], seconds: float, extra: str = "") -> str:
        reserves = self.total(RESERVES)
        refused = self.total(REFUSED)
        states = Counter(state for state, *_ in holds.values())
        refused_by = Counter(scope.split(":")[0] for *_, scope in holds.values() if scope)
        return (
            f"ledger-crash {store}: {reserves} reserves answered ({reserves / seconds:.0f}/s), "
            f"{refused} refused ({100 * refused / max(reserves, 1):.0f}%: "
            f"{dict(sorted(refused_by.items()))}), "
            f"{self.total(ACKED)} settles acknowledged, {self.total(UNAVAILABLE)} reserves "
            f"unavailable, {self.total(SETTLE_ERRORS)} settle errors; "
            f"{self.kills} workers SIGKILLed, {self.started} started{extra}; holds by state "
            f"{dict(sorted(states.items()))}; {seconds:.1f} s"
        )


def _check(
    limits: dict[str, LimitDef],
    totals: dict[tuple[str, str], tuple[int, int]],
    holds: dict[str, Hold],
    acks: dict[str, int],
) -> Counter[str]:
    """The invariants, on the raw rows of a store; returns the holds counted by state."""
    states = Counter(state for state, *_ in holds.values())
    assert states["held"] == 0, "holds still open after TTL + reap"
    charged: Counter[tuple[str, str]] = Counter()
    for state, amount, entries, _ in holds.values():
        if state in ("settled", "expired"):
            for scope, key in entries:
                charged[scope, key] += amount
    assert set(limits) <= {scope for scope, _ in totals}
    for (scope, key), (spent, reserved) in totals.items():
        assert reserved == 0, (scope, key, spent, reserved)
        assert 0 <= spent <= limits[scope].limit, (scope, key, spent, limits[scope].limit)
        assert spent == charged[scope, key], (scope, key, spent, charged[scope, key])
    missing = {h: a for h, a in acks.items() if h not in holds}
    wrong = {
        h: (a, holds[h][:2])
        for h, a in acks.items()
        if h in holds and (holds[h][0] != "settled" or holds[h][1] != a)
    }
    assert not missing, f"{len(missing)} acknowledged settles lost: {list(missing.items())[:5]}"
    assert not wrong, f"{len(wrong)} acknowledged settles differ: {list(wrong.items())[:5]}"
    return states


def _check_status(url: str) -> None:
    """The same through the API: every limited scope within its limit, nothing reserved."""
    ledger = open_ledger(url)
    try:
        rows = ledger.status()
        assert {row.scope for row in rows} == {d.scope for d in _limits()}
        for row in rows:
            assert row.limit is not None
            assert row.reserved == 0, row
            assert 0 <= row.spent <= row.limit, row
    finally:
        ledger.close()


# -- SQLite -----------------------------------------------------------------------------
def _sqlite_rows(
    path: Path,
) -> tuple[
    dict[str, LimitDef],
    dict[tuple[str, str], tuple[int, int]],
    dict[str, Hold],
]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        limits = {
            s: LimitDef(s, lim, per, tz)
            for s, lim, per, tz in conn.execute("SELECT scope, limit_micros, per, tz FROM limits")
        }
        totals = {
            (s, w): (sp, r)
            for s, w, sp, r in conn.execute("SELECT scope, window, spent, reserved FROM totals")
        }
        holds: dict[str, Hold] = {
            h: (st, c, [(e[0], e[1]) for e in json.loads(en)], json.loads(rf)[0] if rf else "")
            for h, st, c, en, rf in conn.execute(
                "SELECT id, state, charged, entries, refusal FROM holds"
            )
        }
    return limits, totals, holds


def test_sqlite_ledger_survives_sigkills(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    url = f"sqlite:///{path}"
    ledger = open_ledger(url)
    for definition in _limits():
        ledger.set_limit(definition)
    ledger.close()

    chaos = Chaos(url, tmp_path, seed=random.randrange(2**32))
    seconds = chaos.run()
    time.sleep(HOLD_TTL + 0.5)
    ledger = open_ledger(url)
    reaped = ledger.reap()
    ledger.close()

    limits, totals, holds = _sqlite_rows(path)
    acks = chaos.acknowledged()
    states = _check(limits, totals, holds, acks)
    _check_status(url)
    print()
    print(chaos.summary("sqlite", holds, seconds, f", {reaped} reaped at the end"))
    assert chaos.kills >= 5
    assert acks
    assert states["refused"] > 0


# -- Redis ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), durable=True)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def _redis_rows(
    url: str,
) -> tuple[
    dict[str, LimitDef],
    dict[tuple[str, str], tuple[int, int]],
    dict[str, Hold],
]:
    import redis

    ledger = open_ledger(url)
    limits = ledger.get_limits()
    ledger.close()
    client = redis.Redis.from_url(url)
    try:
        prefix = "{burnmap}"

        def read(pattern: str) -> list[tuple[str, dict[bytes, bytes]]]:
            keys = [k.decode() for k in client.scan_iter(match=pattern, count=1000)]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return list(zip(keys, pipe.execute(), strict=True))

        totals: dict[tuple[str, str], tuple[int, int]] = {}
        for key, row in read(f"{prefix}:t:*"):
            scope, window = key[len(prefix) + 3 :].rsplit("|", 1)
            totals[scope, window] = (int(row.get(b"s", 0)), int(row.get(b"r", 0)))
        holds: dict[str, Hold] = {}
        for key, row in read(f"{prefix}:h:*"):
            hold_id = key[len(prefix) + 3 :]
            if hold_id.startswith("reap-"):
                continue  # reap()'s own empty reservation
            entries = [(e[0], e[1]) for e in json.loads(row.get(b"e", b"[]"))]
            refused_by = json.loads(row[b"rf"])[0] if b"rf" in row else ""
            holds[hold_id] = (row[b"st"].decode(), int(row.get(b"c", 0)), entries, refused_by)
    finally:
        client.close()
    return limits, totals, holds


def test_redis_ledger_survives_sigkills_and_server_restarts(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    ledger = open_ledger(url)
    for definition in _limits():
        ledger.set_limit(definition)
    ledger.close()

    chaos = Chaos(url, tmp_path, seed=random.randrange(2**32))
    seconds = chaos.run(
        [
            (3.0, redis_server.crash_and_restart),
            (7.0, lambda: redis_server.crash_and_restart(1.0)),
        ]
    )
    time.sleep(HOLD_TTL + 0.5)
    ledger = open_ledger(url)
    ledger.reap()
    ledger.close()

    limits, totals, holds = _redis_rows(url)
    acks = chaos.acknowledged()
    states = _check(limits, totals, holds, acks)
    _check_status(url)
    print()
    print(
        chaos.summary("redis", holds, seconds, f", redis-server SIGKILLed {redis_server.crashes}x")
    )
    assert redis_server.crashes == 2
    assert chaos.kills >= 5
    assert acks
    assert chaos.total(UNAVAILABLE) > 0  # the outages were seen, and refused
    assert states["refused"] > 0
