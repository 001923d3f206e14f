"""One contract, every ledger: memory, SQLite and a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from burnmap.errors import LedgerError, LedgerUnavailableError
from burnmap.ledgers import Ledger, LimitDef, open_ledger
from burnmap.ledgers.memory import MemoryLedger
from tests.conftest import redis_binary

BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def make_ledger(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **kw: bool) -> Ledger:
    if kind == "memory":
        return open_ledger("memory://", **kw)
    if kind == "sqlite":
        return open_ledger(f"sqlite:///{tmp_path / 'spend.db'}", **kw)
    url = request.getfixturevalue("redis_url")
    prefix = uuid.uuid4().hex[:8]
    return open_ledger(f"{url}?prefix={prefix}", **kw)


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    store = make_ledger(request.param, tmp_path, request)
    yield store
    store.close()


def hold() -> str:
    return uuid.uuid4().hex


def totals(store: Ledger, scope: str) -> tuple[int, int]:
    row = store.status([scope])[0]
    return row.spent, row.reserved


def test_reserve_settle_and_refuse(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("user:a", 1_000, None, "UTC"))
    first = hold()
    assert ledger.reserve(first, ["global", "user:a"], 700) is None
    assert totals(ledger, "user:a") == (0, 700)
    refusal = ledger.reserve(hold(), ["global", "user:a"], 301)
    assert refusal is not None
    assert (refusal.scope, refusal.limit, refusal.spent, refusal.reserved) == (
        "user:a",
        1000,
        0,
        700,
    )
    # All or nothing: the refused call held nothing on "global" either.
    assert totals(ledger, "global") == (0, 700)
    ledger.settle(first, 250)
    assert totals(ledger, "user:a") == (250, 0)
    assert ledger.reserve(hold(), ["user:a"], 750) is None


def test_first_refusing_scope_is_named(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("global", 10_000, "month", "UTC"))
    ledger.set_limit(LimitDef("user:b", 100, "day", "Europe/Paris"))
    refusal = ledger.reserve(hold(), ["global", "job:x", "user:b"], 500)
    assert refusal is not None
    assert refusal.scope == "user:b"
    assert refusal.window.startswith("day:") and refusal.window.endswith("@Europe/Paris")
    assert refusal.resets_at is not None and refusal.resets_at > time.time()


def test_operations_are_idempotent(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("s", 1_000, None, "UTC"))
    same = hold()
    assert ledger.reserve(same, ["s"], 600) is None
    assert ledger.reserve(same, ["s"], 600) is None  # a re-send holds nothing more
    assert totals(ledger, "s") == (0, 600)
    ledger.settle(same, 100)
    ledger.settle(same, 100)
    assert totals(ledger, "s") == (100, 0)
    refused = hold()
    first = ledger.reserve(refused, ["s"], 5_000)
    assert first is not None
    assert ledger.reserve(refused, ["s"], 5_000) == first


def test_changing_a_limit_applies_to_the_next_reservation(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("s", 100, None, "UTC"))
    assert ledger.reserve(hold(), ["s"], 150) is not None
    ledger.set_limit(LimitDef("s", 200, None, "UTC"))
    assert ledger.reserve(hold(), ["s"], 150) is None
    assert ledger.get_limits()["s"].limit == 200
    assert ledger.remove_limit("s")
    assert ledger.reserve(hold(), ["s"], 10**9) is None


def test_scopes_without_limits_record_spend(ledger: Ledger) -> None:
    h = hold()
    assert ledger.reserve(h, ["job:nightly"], 42) is None
    ledger.settle(h, 40)
    row = ledger.status(["job:nightly"])[0]
    assert (row.limit, row.spent, row.window) == (None, 40, "all")


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("charge", [True, False])
def test_expired_holds_are_charged_or_released_and_late_settles_correct(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, charge: bool
) -> None:
    store = make_ledger(kind, tmp_path, request, charge_expired=charge)
    try:
        store.set_limit(LimitDef("s", 1_000, None, "UTC"))
        dead = hold()
        assert store.reserve(dead, ["s"], 800, ttl=0.2) is None
        time.sleep(0.3)
        assert store.reserve(hold(), ["other"], 1) is None  # any reservation reaps
        assert totals(store, "s") == ((800 if charge else 0), 0)
        store.settle(dead, 300)  # its process was alive after all: correct the record
        assert totals(store, "s") == (300, 0)
    finally:
        store.close()


def test_renewed_holds_do_not_expire(ledger: Ledger) -> None:
    long = hold()
    assert ledger.reserve(long, ["s"], 10, ttl=0.4) is None
    for _ in range(4):
        time.sleep(0.15)
        ledger.renew(long, ttl=0.4)
    ledger.reserve(hold(), ["x"], 1)
    assert totals(ledger, "s") == (0, 10)


def test_threads_never_overspend(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("shared", 10_000, None, "UTC"))
    accepted: list[int] = []

    def work() -> None:
        for i in range(40):
            h = hold()
            if ledger.reserve(h, ["global", "shared"], 97 + i % 7) is None:
                ledger.settle(h, 97 + i % 7)
                accepted.append(97 + i % 7)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent, reserved = totals(ledger, "shared")
    assert spent == sum(accepted) <= 10_000
    assert reserved == 0
    assert spent > 10_000 - 110  # refusals only once it was (nearly) full


def test_day_windows_follow_the_zone_and_a_reservation_settles_where_made(
    tmp_path: Path,
) -> None:
    now = [1_774_742_400.0]  # 2026-03-29 00:00 UTC: the DST night in Paris
    for store in (
        MemoryLedger(clock=lambda: now[0]),
        open_ledger(f"sqlite:///{tmp_path / 'w.db'}"),
    ):
        if not isinstance(store, MemoryLedger):
            store.clock = lambda: now[0]  # type: ignore[attr-defined]
        store.set_limit(LimitDef("user:p", 100, "day", "Europe/Paris"))
        h = hold()
        assert store.reserve(h, ["user:p"], 100) is None
        assert store.reserve(hold(), ["user:p"], 1) is not None
        now[0] += 23 * 3600  # Paris midnight after a 23-hour day
        assert store.reserve(hold(), ["user:p"], 100) is None  # a new window
        store.settle(h, 60)  # settles into yesterday's window
        row = store.status(["user:p"])[0]
        assert row.window == "day:2026-03-30@Europe/Paris"
        assert (row.spent, row.reserved) == (0, 100)
        now[0] = 1_774_742_400.0
        store.close()


def test_unreachable_stores_fail_with_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LedgerUnavailableError, match="unavailable"):
        open_ledger(f"sqlite:///{blocker}/spend.db")
    store = open_ledger("redis://127.0.0.1:1/0")
    with pytest.raises(LedgerUnavailableError, match="configure"):
        store.reserve(hold(), ["s"], 1)


def test_bad_urls_say_what_to_use() -> None:
    with pytest.raises(LedgerError, match=r"memory://, sqlite:///path\.db or redis://"):
        open_ledger("postgres://db/spend")
    with pytest.raises(LedgerError, match=r"'postgres://app:\*\*\*@db/spend'"):
        open_ledger("postgres://app:s3cret@db/spend")  # never the password


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@127.0.0.1:abc/0",
        "redis://:pw@127.0.0.1:99999/0",
        "redis://:pw@127.0.0.1:6379/0?socket_timeout=abc",
        "redis://:pw@[::1/0",
        "unix://",
        "unix:///?db=1",
    ],
)
def test_malformed_ledger_urls_are_a_ledger_error_that_names_them(url: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(LedgerError, match="bad ledger URL") as info:
        open_ledger(url)
    assert "pw" not in str(info.value)


class LedgerModel(RuleBasedStateMachine):
    """Random reserve/settle/renew/limit changes, checked against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.store: Ledger = MemoryLedger()
        self.limits: dict[str, int] = {}
        self.open: dict[str, tuple[list[str], int]] = {}
        self.spent: dict[str, int] = {}

    @initialize(kind=st.sampled_from(["memory", "sqlite"]))
    def setup(self, kind: str) -> None:
        if kind == "sqlite":
            import tempfile

            self.tmp = tempfile.TemporaryDirectory()
            self.store = open_ledger(f"sqlite:///{self.tmp.name}/m.db")

    @rule(scope=st.sampled_from(["a", "b", "global"]), amount=st.integers(0, 2_000))
    def set_limit(self, scope: str, amount: int) -> None:
        self.store.set_limit(LimitDef(scope, amount, None, "UTC"))
        self.limits[scope] = amount

    @rule(
        scopes=st.lists(st.sampled_from(["a", "b", "global"]), min_size=1, max_size=3, unique=True),
        amount=st.integers(0, 900),
    )
    def reserve(self, scopes: list[str], amount: int) -> None:
        h = hold()
        fits = all(
            self.spent.get(s, 0) + self.reserved(s) + amount <= self.limits[s]
            for s in scopes
            if s in self.limits
        )
        refusal = self.store.reserve(h, scopes, amount)
        assert (refusal is None) == fits
        if fits:
            self.open[h] = (scopes, amount)

    def reserved(self, scope: str) -> int:
        return sum(a for scopes, a in self.open.values() if scope in scopes)

    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        if not self.open:
            return
        h = list(self.open)[data.draw(st.integers(0, len(self.open) - 1))]
        scopes, amount = self.open.pop(h)
        actual = data.draw(st.integers(0, amount))
        self.store.settle(h, actual)
        for s in scopes:
            self.spent[s] = self.spent.get(s, 0) + actual

    @invariant()
    def agrees_with_the_model(self) -> None:
        for row in self.store.status(["a", "b", "global"]):
            assert row.spent == self.spent.get(row.scope, 0)
            assert row.reserved == self.reserved(row.scope)

    def teardown(self) -> None:
        self.store.close()
        if hasattr(self, "tmp"):
            self.tmp.cleanup()


TestLedgerModel = LedgerModel.TestCase
TestLedgerModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


async def test_async_twins_keep_the_same_contract(ledger: Ledger) -> None:
    ledger.set_limit(LimitDef("a", 1_000, None, "UTC"))
    first = hold()
    assert await ledger.areserve(first, ["a", "global"], 600) is None
    refusal = await ledger.areserve(hold(), ["a"], 500)
    assert refusal is not None
    assert refusal.scope == "a"
    await ledger.arenew(first, ttl=60)
    await ledger.asettle(first, 200)
    await ledger.asettle(first, 200)
    assert totals(ledger, "a") == (200, 0)
    await ledger.aclose()


async def test_async_reservations_race_without_overspending(ledger: Ledger) -> None:
    import asyncio

    ledger.set_limit(LimitDef("race", 5_000, None, "UTC"))

    async def one(i: int) -> int:
        h = hold()
        if await ledger.areserve(h, ["race"], 300) is None:
            await asyncio.sleep(0.001 * (i % 5))
            await ledger.asettle(h, 300)
            return 300
        return 0

    spent = sum(await asyncio.gather(*(one(i) for i in range(60))))
    await ledger.aclose()
    assert spent == totals(ledger, "race")[0] <= 5_000
    assert spent == 4_800


@pytest.mark.redis
def test_a_prefix_given_twice_is_the_arguments_and_never_reaches_redis(redis_url: str) -> None:
    from burnmap.ledgers.redis import RedisLedger

    prefix = uuid.uuid4().hex[:8]
    store = RedisLedger(f"{redis_url}?prefix=from-url", prefix=prefix)
    assert store.prefix == "{" + prefix + "}"
    store.set_limit(LimitDef("user:p", 1_000, None, "UTC"))
    assert store.reserve(hold(), ["user:p"], 600) is None
    store.close()


@pytest.mark.redis
def test_a_callers_redis_client_serves_async_calls_too(redis_url: str) -> None:
    import asyncio

    import redis

    from burnmap.ledgers.redis import RedisLedger

    client = redis.Redis.from_url(redis_url)
    store = RedisLedger(redis_url, client=client, prefix=uuid.uuid4().hex[:8])
    store.set_limit(LimitDef("user:c", 1_000, None, "UTC"))
    assert store.reserve(hold(), ["user:c"], 600) is None
    assert asyncio.run(store.areserve(hold(), ["user:c"], 600)) is not None  # refused
    store.close()
    client.close()


def test_a_late_settle_corrects_an_expired_hold_after_finished_ones_are_forgotten() -> None:
    """The memory ledger forgets finished holds after keep_done, but an expired one is
    kept a day: a call that settles later still corrects what expiry charged."""
    now = [1_000.0]
    store = MemoryLedger(clock=lambda: now[0], keep_done=300.0)
    store.set_limit(LimitDef("s", 1_000_000, None, "UTC"))
    dead = hold()
    assert store.reserve(dead, ["s"], 800_000, ttl=600) is None
    now[0] += 601
    store.reap()  # expired: charged in full
    now[0] += 400  # finished holds older than 5 minutes are forgotten by now
    store.reap()
    store.settle(dead, 700_000)
    assert totals(store, "s") == (700_000, 0)
    assert store.reserve(hold(), ["s"], 900_000) is not None  # $0.70 spent: refused


def test_a_failed_commit_never_leaves_the_write_lock_held(tmp_path: Path) -> None:
    """A COMMIT that fails (or is interrupted) is rolled back: the next transaction of
    this process and another process's both go ahead."""
    import sqlite3

    import burnmap.ledgers.sqlite as sqlite_module

    failing = [False]

    class Connection(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            if sql == "COMMIT" and failing[0]:
                failing[0] = False
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)  # type: ignore[arg-type]

    real = sqlite3.connect
    path = tmp_path / "spend.db"
    sqlite_module.sqlite3.connect = (  # type: ignore[assignment]
        lambda *a, **k: real(*a, factory=Connection, **k)  # type: ignore[misc]
    )
    try:
        store = sqlite_module.SQLiteLedger(path, busy_timeout=2)
        store.set_limit(LimitDef("u", 1_000_000, None, "UTC"))
        failing[0] = True
        with pytest.raises(LedgerUnavailableError, match="disk I/O error"):
            store.reserve(hold(), ["u"], 10)
        assert store.reserve(hold(), ["u"], 10) is None
    finally:
        sqlite_module.sqlite3.connect = real
    other = sqlite_module.SQLiteLedger(path, busy_timeout=2)
    assert other.reserve(hold(), ["u"], 10) is None
    assert totals(other, "u") == (0, 20)


def test_threads_queued_behind_a_stuck_lock_give_up_together(tmp_path: Path) -> None:
    """busy_timeout bounds the whole wait, the thread lock's included: six threads queued
    behind another process's write lock all fail after about busy_timeout, not six."""
    import sqlite3

    from burnmap.ledgers.sqlite import SQLiteLedger

    path = tmp_path / "spend.db"
    store = SQLiteLedger(path, busy_timeout=0.5)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waited: list[float] = []

    def call() -> None:
        start = time.monotonic()
        with pytest.raises(LedgerUnavailableError):
            store.reserve(hold(), ["global"], 1)
        waited.append(time.monotonic() - start)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blocker.execute("ROLLBACK")
    assert len(waited) == 6 and max(waited) < 2.0  # one after another: 3 s


def test_a_sqlite_file_deleted_under_a_process_fails_closed(tmp_path: Path) -> None:
    """Deleting (or replacing) the ledger file while processes use it would split the
    ledger in two: the process says so instead of writing to a file nobody else sees."""
    from burnmap.ledgers.sqlite import SQLiteLedger

    store = SQLiteLedger(tmp_path / "spend.db")
    store.set_limit(LimitDef("u", 1_000_000, None, "UTC"))
    assert store.reserve(hold(), ["u"], 10) is None
    for path in tmp_path.iterdir():
        path.unlink()
    store._file_checked = 0.0  # (it looks once a second at most)
    with pytest.raises(LedgerUnavailableError, match="deleted or replaced"):
        store.reserve(hold(), ["u"], 10)


def test_a_ledger_that_must_exist_refuses_rather_than_starting_afresh(tmp_path: Path) -> None:
    """burnmap wrap's children open its ledger with ?create=false: once wrap is gone (and
    its folder with it), a process it left behind is refused, not given a new ledger with
    no limits."""
    missing = tmp_path / "gone" / "ledger.db"
    with pytest.raises(LedgerUnavailableError):
        open_ledger(f"sqlite:///{missing}?create=false")
    assert not missing.parent.exists()
    open_ledger(f"sqlite:///{missing}").close()  # (the supervisor creates it)
    store = open_ledger(f"sqlite:///{missing}?create=false")
    assert store.reserve(hold(), ["global"], 1) is None
    store.close()


def test_a_relative_sqlite_path_is_fixed_when_the_ledger_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///spend.db is relative to the directory the ledger was opened in: a process
    that changes directory afterwards (and the workers it forks, which reconnect) keeps
    using that file, not a new one with no limits."""
    (tmp_path / "start").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "start")
    store = open_ledger("sqlite:///spend.db")
    assert store.url == f"sqlite:///{tmp_path / 'start' / 'spend.db'}"
    store.set_limit(LimitDef("global", 100, None, "UTC"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    store.close()  # as a forked child does, the next operation opens a new connection
    assert store.reserve(hold(), ["global"], 101) is not None  # the same file, its limit
    assert not (tmp_path / "elsewhere" / "spend.db").exists()
    store.close()


@pytest.fixture
def redis_socket() -> Iterator[str]:
    """A real redis-server listening on a Unix socket only; yields the socket's path."""
    import subprocess
    import tempfile

    import redis

    binary = redis_binary()
    # A short directory: a socket path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="bm-redis-") as directory:
        path = f"{directory}/redis.sock"
        proc = subprocess.Popen(
            [
                binary,
                *("--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"),
                *("--dir", directory, "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(unix_socket_path=path, socket_connect_timeout=1)
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.ping():
                        break
                except (redis.RedisError, OSError):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                time.sleep(0.02)
            client.close()
            yield path
        finally:
            proc.kill()
            proc.wait(10)


@pytest.mark.redis
def test_a_unix_socket_url_reaches_redis_with_its_database_and_prefix(redis_socket: str) -> None:
    """unix:///path.sock (the documented form), with ?db= and burnmap's own ?prefix=."""
    import asyncio

    import redis

    store = open_ledger(f"unix://{redis_socket}?db=3&prefix=sock")
    assert store.url == f"unix://{redis_socket}?db=3"
    store.set_limit(LimitDef("user:u", 1_000, None, "UTC"))
    assert store.reserve(hold(), ["user:u"], 600) is None

    async def refused_async() -> bool:
        refusal = await store.areserve(hold(), ["user:u"], 600)
        await store.aclose()
        return refusal is not None

    assert asyncio.run(refused_async())
    store.close()
    raw = redis.Redis(unix_socket_path=redis_socket, db=3)
    assert raw.hexists("{sock}:limits", "user:u")  # in database 3, under the prefix
    raw.close()


def test_only_the_prefix_parameter_is_taken_out_of_a_redis_url() -> None:
    from burnmap.ledgers.redis import _without_prefix

    assert _without_prefix("unix:///run/redis.sock") == ("unix:///run/redis.sock", None)
    assert _without_prefix("unix:///r.sock?prefix=a%20b&db=2&prefix=c") == (
        "unix:///r.sock?db=2",
        "a b",
    )
    assert _without_prefix("rediss://:p%40ss@h:6380/1?ssl_cert_reqs=none&prefix=x") == (
        "rediss://:p%40ss@h:6380/1?ssl_cert_reqs=none",
        "x",
    )


@pytest.mark.redis
@pytest.mark.parametrize(("query", "burst"), [("", 150), ("&max_connections=4", 40)])
def test_a_burst_of_redis_operations_waits_for_connections_instead_of_failing(
    redis_url: str, query: str, burst: int
) -> None:
    """More operations at once than the pool's connections (redis-py caps its default pool
    at 100; the URL may set fewer) wait their turn: none is refused as unavailable."""
    import asyncio

    store = open_ledger(f"{redis_url}?prefix={uuid.uuid4().hex[:8]}{query}")
    store.set_limit(LimitDef("global", 10**9, None, "UTC"))

    async def tasks() -> list[object]:
        answers = await asyncio.gather(
            *(store.areserve(hold(), ["global"], 1) for _ in range(burst)),
            return_exceptions=True,
        )
        await store.aclose()
        return answers

    assert asyncio.run(tasks()) == [None] * burst
    start = threading.Barrier(burst)
    answers: list[object] = []

    def thread() -> None:
        start.wait()
        try:
            answers.append(store.reserve(hold(), ["global"], 1))
        except LedgerUnavailableError as exc:
            answers.append(exc)

    threads = [threading.Thread(target=thread) for _ in range(burst)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert answers == [None] * burst
    assert totals(store, "global") == (0, 2 * burst)
    store.close()


def test_a_sqlite_status_reads_without_the_write_lock(tmp_path: Path) -> None:
    """Listing spend (burnmap limits, burnmap.spent) is a read: it answers while another
    process holds the write lock, so a listing of many limits holds up no reservation on
    the host. Each scope is shown in its current window only."""
    import sqlite3

    from burnmap.ledgers.sqlite import SQLiteLedger

    path = tmp_path / "spend.db"
    store = SQLiteLedger(path, busy_timeout=0.5)
    store.set_limit(LimitDef("user:day", 1_000, "day", "Europe/Paris"))
    store.set_limit(LimitDef("user:month", 2_000, "month", "UTC"))
    store.set_limit(LimitDef("user:life", 3_000, None, "UTC"))
    for scope, amount in (("user:day", 10), ("user:month", 20), ("user:life", 30)):
        h = hold()
        assert store.reserve(h, [scope, "job:free"], amount * 2) is None
        store.settle(h, amount)
    assert store.reserve(hold(), ["user:day"], 5) is None  # in flight
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("INSERT INTO totals VALUES ('user:day', 'day:2001-01-01@Europe/Paris', 999, 9)")
    old.execute("BEGIN IMMEDIATE")  # another process is writing, for longer than busy_timeout
    try:
        rows = {row.scope: (row.spent, row.reserved) for row in store.status(None)}
        named = store.status(["user:month", "job:free", "user:none"])
    finally:
        old.execute("ROLLBACK")
        old.close()
    assert rows == {"user:day": (10, 5), "user:month": (20, 0), "user:life": (30, 0)}
    assert [(row.scope, row.spent, row.limit) for row in named] == [
        ("user:month", 20, 2_000),
        ("job:free", 60, None),
        ("user:none", 0, None),
    ]
    store.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_status_that_must_not_reap_only_reads(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """status(reap=False) (the CLI's) leaves an expired hold for the fleet to reap with
    its own expired_holds; it counts as reserved meanwhile."""
    store = make_ledger(kind, tmp_path, request, charge_expired=True)
    try:
        store.set_limit(LimitDef("s", 1_000, None, "UTC"))
        assert store.reserve(hold(), ["s"], 800, ttl=0.05) is None
        time.sleep(0.2)
        assert [(r.spent, r.reserved) for r in store.status(["s"], reap=False)] == [(0, 800)]
        assert [(r.spent, r.reserved) for r in store.status(None, reap=False)] == [(0, 800)]
        assert totals(store, "s") == (800, 0)  # a status that reaps charges it
    finally:
        store.close()
