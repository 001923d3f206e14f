"""Calls cut short by cancellation (asyncio tasks, anyio cancel scopes, trio): what they
cost reaches every budget, once, and a call that was never sent costs nothing."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
import trio

import burnmap
from burnmap.ledgers.sqlite import SQLiteLedger
from burnmap.standin import StandIn
from tests.conftest import ANTHROPIC_STACK, billed, eventually

pytestmark = [pytest.mark.sdk, pytest.mark.usefixtures("fresh_budgets")]

ASK: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": "hi"}],
}
ANSWER = {
    "id": "msg",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 20, "output_tokens": 100},
}
COST = Decimal("0.00052")  # 20 in at $1/M + 100 out at $5/M
URL = "https://api.anthropic.com/v1/messages"


@pytest.fixture
def silent_provider() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback 'provider' that reads each request and never answers (still generating)."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            received.append(conn.recv(65536))
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", received
    server.close()
    for conn in held:
        conn.close()


async def test_a_settlement_cancelled_while_it_waits_for_the_ledger_still_reaches_it(
    tmp_path: Path,
) -> None:
    """The provider answered; the caller's deadline fires while the SQLite settlement waits
    for a worker thread. The call's cost reaches the ledger anyway: its hold neither lingers
    until it expires (charged in full) nor is dropped (with expired_holds="release")."""
    burnmap.configure(ledger=f"sqlite:///{tmp_path}/spend.db", expired_holds="release")
    burnmap.limit("user:u", "1.00")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    busy = threading.Event()

    async def api(request: httpx2.Request) -> httpx2.Response:
        # Meanwhile the loop's only worker thread is busy with other work.
        loop.run_in_executor(None, busy.wait)
        return httpx2.Response(200, json=ANSWER)

    client = httpx2.AsyncClient(transport=burnmap.AsyncTransport(httpx2.MockTransport(api)))

    async def call() -> None:
        async with burnmap.run("job", user_id="u"):
            response = await client.post(URL, json=ASK)
            await response.aread()  # read: the settlement starts here, and waits

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call(), 0.2)
    status = burnmap.spent("user:u")
    busy.set()
    await client.aclose()
    assert (status.spent, status.reserved) == (COST, 0)


def test_trio_a_call_cancelled_after_it_was_sent_is_charged_its_bound(
    silent_provider: tuple[str, list[bytes]],
) -> None:
    """Under trio, as under asyncio, a deadline on a call the provider already received
    does not make it free: it is charged its reservation."""
    url, received = silent_provider

    async def main() -> burnmap.Run:
        client = anthropic.AsyncAnthropic(
            api_key="x",
            base_url=url,
            http_client=burnmap.async_client(ANTHROPIC_STACK),
            max_retries=0,
        )
        async with burnmap.run("trio-job", budget=1) as r:
            with trio.move_on_after(0.3):
                await client.messages.create(**ASK)
        await client.close()
        return r

    r = trio.run(main)
    assert received
    assert r.call_count == 1
    assert r.spent == r.report.calls[0].reserved > 0
    assert r.report.failed_attempts == 0


def test_trio_standing_budgets_reserve_and_settle(tmp_path: Path, standin: StandIn) -> None:
    """Standing budgets work under trio (the ledger's blocking calls are used there)."""
    burnmap.configure(ledger=f"sqlite:///{tmp_path}/spend.db")
    burnmap.limit("user:u", "1.00")

    async def main() -> burnmap.Run:
        client = anthropic.AsyncAnthropic(
            api_key="x",
            base_url=standin.anthropic_base_url,
            http_client=burnmap.async_client(ANTHROPIC_STACK),
        )
        async with burnmap.run("trio-job", user_id="u") as r:
            for _ in range(2):
                await client.messages.create(**ASK)
        await client.close()
        return r

    r = trio.run(main)
    status = burnmap.spent("user:u")
    assert r.call_count == 2 and len(standin.requests) == 2
    assert status.spent == r.spent == billed(standin.calls)
    assert status.reserved == 0


async def test_an_anyio_cancel_scope_cutting_a_stream_settles_the_ledger_with_what_was_read(
    tmp_path: Path, standin: StandIn
) -> None:
    """Starlette, FastAPI and MCP cancel through anyio scopes, which cancel every await
    inside them again: the ledger is still settled with what the stream delivered."""
    burnmap.configure(ledger=f"sqlite:///{tmp_path}/spend.db")
    burnmap.limit("user:u", "1.00")
    standin.script = standin.script.__class__(
        output_tokens=400, events=200, stream_chunk_delay=0.01
    )
    client = anthropic.AsyncAnthropic(
        api_key="x",
        base_url=standin.anthropic_base_url,
        http_client=burnmap.async_client(ANTHROPIC_STACK),
    )
    async with burnmap.run("chat", user_id="u") as r:
        with anyio.move_on_after(0.3):
            async with client.messages.stream(**{**ASK, "model": "claude-sonnet-4-6"}) as stream:
                async for _ in stream.text_stream:
                    pass
    await client.close()
    status = burnmap.spent("user:u")
    assert r.call_count == 1
    assert (status.spent, status.reserved) == (r.spent, 0)
    assert r.spent < r.report.calls[0].reserved  # what was read, not the bound


async def test_a_cancelled_settlement_waiting_for_a_locked_ledger_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    """Another process holds the SQLite write lock as the answer comes, and the caller's
    deadline fires while the settlement waits for it: the caller gets control back at once
    (the loop is not held up until the lock is free), and the cost lands once it is."""
    db = tmp_path / "spend.db"
    burnmap.configure(ledger=SQLiteLedger(db, busy_timeout=10))
    burnmap.limit("user:u", "1.00")
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)

    async def api(request: httpx2.Request) -> httpx2.Response:
        other.execute("BEGIN IMMEDIATE")  # another process starts writing
        return httpx2.Response(200, json=ANSWER)

    client = httpx2.AsyncClient(transport=burnmap.AsyncTransport(httpx2.MockTransport(api)))

    async def call() -> None:
        async with burnmap.run("job", user_id="u"):
            response = await client.post(URL, json=ASK)
            await response.aread()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call(), 0.2)
    # Back while the ledger is still locked (were the loop held up until the lock is
    # free, the settlement would give up after the busy timeout, and be lost).
    other.execute("COMMIT")
    assert eventually(lambda: burnmap.spent("user:u").spent == COST, timeout=10)
    assert burnmap.spent("user:u").reserved == 0
    other.close()
    await client.aclose()


def test_trio_ledger_steps_leave_the_event_loop_free(tmp_path: Path, standin: StandIn) -> None:
    """Under trio the ledger's blocking steps run on a worker thread: while a reservation
    waits for a locked SQLite file, the loop's other tasks go on (here, the one that frees
    the lock: were the loop held up, the call would wait for the busy timeout and fail)."""
    db = tmp_path / "spend.db"
    burnmap.configure(ledger=SQLiteLedger(db, busy_timeout=10))
    burnmap.limit("user:u", "1.00")
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    async def main() -> burnmap.Run:
        client = anthropic.AsyncAnthropic(
            api_key="x",
            base_url=standin.anthropic_base_url,
            http_client=burnmap.async_client(ANTHROPIC_STACK),
        )
        async with trio.open_nursery() as nursery, burnmap.run("trio-job", user_id="u") as r:

            async def free_the_lock() -> None:
                await trio.sleep(0.2)
                other.execute("COMMIT")

            nursery.start_soon(free_the_lock)
            await client.messages.create(**ASK)
        await client.close()
        return r

    r = trio.run(main)
    other.close()
    assert r.call_count == 1
    assert burnmap.spent("user:u").spent == r.spent == billed(standin.calls)


def test_trio_a_deadline_does_not_wait_for_a_locked_ledger(
    tmp_path: Path, standin: StandIn
) -> None:
    """Under trio, a call whose reservation waits for a locked SQLite file is given up at
    its deadline (not once the ledger answers): nothing is sent, and the hold the ledger
    takes later is let go at once."""
    db = tmp_path / "spend.db"
    burnmap.configure(ledger=SQLiteLedger(db, busy_timeout=10))
    burnmap.limit("user:u", "1.00")
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    locked_throughout: list[bool] = []

    async def main() -> None:
        client = anthropic.AsyncAnthropic(
            api_key="x",
            base_url=standin.anthropic_base_url,
            http_client=burnmap.async_client(ANTHROPIC_STACK),
            max_retries=0,
        )
        async with burnmap.run("trio-job", user_id="u"):
            with trio.move_on_after(0.3):
                await client.messages.create(**ASK)
        locked_throughout.append(other.in_transaction)  # still locked: not waited for
        await client.close()

    trio.run(main)
    other.execute("COMMIT")
    other.close()
    assert locked_throughout == [True]
    assert standin.requests == []
    assert eventually(lambda: burnmap.spent("user:u").reserved == 0, timeout=10)
    assert burnmap.spent("user:u").spent == 0
