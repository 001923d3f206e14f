"""Standing budgets end to end: the real SDK, the transport, and a shared ledger."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from click.testing import CliRunner

import burnmap
from burnmap import budgets
from burnmap.cli import main
from burnmap.prices import Usage
from burnmap.standin import Script, StandIn
from tests.conftest import ANTHROPIC_STACK, billed

pytestmark = [pytest.mark.sdk, pytest.mark.usefixtures("fresh_budgets")]

CLAUDE = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


def test_user_budget_refuses_across_runs_and_names_its_scope(
    claude: anthropic.Anthropic, server: StandIn, tmp_path: Path
) -> None:
    server.script = Script(output_tokens=800)
    burnmap.configure(ledger=f"sqlite:///{tmp_path / 'spend.db'}")
    burnmap.limit("user:usr_123", "0.05", per="day", tz="Europe/Paris")
    refusal: burnmap.BudgetExceededError | None = None
    for attempt in range(200):
        with burnmap.run(f"summarise-{attempt}", budget=1, user_id="usr_123"):
            try:
                claude.messages.create(model=CLAUDE, max_tokens=1024, messages=HELLO)
            except burnmap.BudgetExceededError as exc:
                refusal = exc
                break
    assert refusal is not None
    assert refusal.scope == "user:usr_123"
    assert refusal.budget == Decimal("0.05")
    assert "resets at" in str(refusal)
    status = burnmap.spent("user:usr_123")
    assert status.spent == billed(server.calls) <= Decimal("0.05")
    assert status.reserved == 0
    assert status.window.startswith("day:") and status.window.endswith("@Europe/Paris")
    # Every call also counted on global and its job.
    assert burnmap.spent("global").spent == status.spent
    assert burnmap.spent("job:summarise-0").spent > 0


def test_a_job_limit_caps_the_runs_nested_in_it(
    claude: anthropic.Anthropic, server: StandIn
) -> None:
    burnmap.limit("job:nightly", "0.001")

    sent = 0

    def steps() -> None:
        nonlocal sent
        for n in range(100):
            with burnmap.run(f"step-{n}"):  # the innermost run names another job
                claude.messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
            sent += 1

    with burnmap.run("nightly"), pytest.raises(burnmap.BudgetExceededError) as refused:
        steps()
    assert refused.value.scope == "job:nightly"
    assert len(server.calls) == sent > 0
    assert burnmap.spent("job:nightly").spent == billed(server.calls) <= Decimal("0.001")


def test_global_limit_applies_outside_runs(claude: anthropic.Anthropic, server: StandIn) -> None:
    server.script = Script(output_tokens=800)
    burnmap.limit("global", "0.02")

    def loop() -> None:
        for _ in range(100):
            claude.messages.create(model=CLAUDE, max_tokens=1024, messages=HELLO)

    with pytest.raises(burnmap.BudgetExceededError) as info:
        loop()
    assert info.value.scope == "global"
    assert burnmap.spent("global").spent == billed(server.calls) <= Decimal("0.02")


def test_unreachable_ledger_fails_closed_and_can_opt_open(
    claude: anthropic.Anthropic, server: StandIn
) -> None:
    burnmap.configure(ledger="redis://127.0.0.1:1/0")
    with burnmap.run("job", budget=1), pytest.raises(burnmap.LedgerUnavailableError) as info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert not isinstance(info.value, anthropic.APIConnectionError)
    assert server.requests == []
    burnmap.configure(ledger="redis://127.0.0.1:1/0", on_unavailable="open")
    with burnmap.run("job", budget=1) as r:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert r.call_count == 1  # the run budget still applied


def test_plain_runs_touch_no_ledger(claude: anthropic.Anthropic) -> None:
    with burnmap.run("job", budget=1):
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert budgets._config.ledger is None


def test_limit_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="per="):
        burnmap.limit("user:x", 1, per="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time zone"):
        burnmap.limit("user:x", 1, per="day", tz="Mars/Olympus")
    with pytest.raises(ValueError, match="scope"):
        burnmap.limit("", 1)


AGENT = textwrap.dedent(
    """
    import sys, anthropic, burnmap
    burnmap.configure(ledger=sys.argv[1])
    client = anthropic.Anthropic(api_key="t", base_url=sys.argv[2],
                                 http_client=burnmap.client(sys.argv[3]))
    calls = 0
    try:
        while True:
            with burnmap.run("worker", user_id="shared"):
                client.messages.create(model="claude-sonnet-4-6", max_tokens=1024,
                                       messages=[{"role": "user", "content": "hi"}])
                calls += 1
    except burnmap.BudgetExceededError as exc:
        print(calls, exc.scope)
    """
)


def test_processes_share_one_sqlite_budget(standin: StandIn, tmp_path: Path) -> None:
    standin.script = Script(output_tokens=500)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    burnmap.configure(ledger=url)
    burnmap.limit("user:shared", "0.10")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGENT, url, standin.anthropic_base_url, ANTHROPIC_STACK],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(out[1] == "user:shared" for out in outputs), outputs
    total_calls = sum(int(out[0]) for out in outputs)
    assert total_calls == len(standin.calls)
    assert burnmap.spent("user:shared").spent == billed(standin.calls) <= Decimal("0.10")


def test_cli_limits_and_spent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    burnmap.configure(ledger=url)
    burnmap.limit("user:u1", 5, per="day")
    burnmap.limit("global", 500, per="month")
    runner = CliRunner()
    result = runner.invoke(main, ["limits", "--ledger", url])
    assert result.exit_code == 0, result.output
    assert "user:u1" in result.output and "$5.00" in result.output
    result = runner.invoke(main, ["spent", "user:u1", "job:none"], env={"BURNMAP_LEDGER": url})
    assert result.exit_code == 0, result.output
    assert "job:none" in result.output
    result = runner.invoke(main, ["limits", "--ledger", "ftp://nope"])
    assert result.exit_code != 0
    assert "memory://" in result.output


def test_status_in_dollars(tmp_path: Path) -> None:
    status = burnmap.limit("user:z", "2.5", per="month")
    assert status.limit == Decimal("2.5")
    assert status.remaining == Decimal("2.5")
    assert json.dumps(str(status.spent)) == '"0"'


@pytest.mark.redis
async def test_async_clients_share_a_redis_user_budget(standin: StandIn, redis_url: str) -> None:
    import asyncio
    import uuid

    standin.script = Script(output_tokens=600)
    burnmap.configure(ledger=f"{redis_url}?prefix={uuid.uuid4().hex[:8]}")
    burnmap.limit("user:async", "0.08", per="day")
    client = anthropic.AsyncAnthropic(
        api_key="test",
        base_url=standin.anthropic_base_url,
        http_client=burnmap.async_client(ANTHROPIC_STACK),  # type: ignore[call-overload]
    )

    async def call(i: int) -> object:
        async with burnmap.run(f"task-{i}", user_id="async"):
            return await client.messages.create(model=CLAUDE, max_tokens=1024, messages=HELLO)

    results = await asyncio.gather(*(call(i) for i in range(30)), return_exceptions=True)
    await client.close()
    await burnmap.budgets.ledger().aclose()
    refused = [r for r in results if isinstance(r, burnmap.BudgetExceededError)]
    assert refused
    assert all(r.scope == "user:async" for r in refused)
    assert len(results) - len(refused) == len(standin.calls)
    status = burnmap.spent("user:async")
    assert status.spent == billed(standin.calls) <= Decimal("0.08")
    assert status.reserved == 0


def test_changing_only_a_policy_keeps_the_ledger_and_its_limits(tmp_path: Path) -> None:
    opened = burnmap.configure(ledger=f"sqlite:///{tmp_path / 'spend.db'}")
    burnmap.limit("global", 5)
    assert burnmap.configure(expired_holds="release", on_unavailable="open") is opened
    assert opened.charge_expired is False  # type: ignore[attr-defined]
    assert [row.scope for row in burnmap.limits()] == ["global"]


@pytest.mark.parametrize(
    ("policy", "fate"), [("charge", "charged in full"), ("release", "released")]
)
def test_a_lost_settlement_is_logged_with_what_happens_to_its_hold(
    policy: str, fate: str, caplog: pytest.LogCaptureFixture
) -> None:
    from burnmap.errors import LedgerUnavailableError
    from burnmap.ledgers.memory import MemoryLedger

    class Down(MemoryLedger):
        def settle(self, hold_id: str, actual: int) -> None:
            raise LedgerUnavailableError(self.url, "connection refused")

    ledger = burnmap.configure(ledger=Down(), expired_holds=policy)  # type: ignore[arg-type]
    hold = budgets.LedgerHold(ledger, "h1", 60.0)
    with caplog.at_level("ERROR", logger="burnmap.budgets"):
        hold.settle(Decimal("0.01"))
    assert (
        f"could not settle hold h1 on memory:// (connection refused); it expires and is {fate}"
        in caplog.text
    )


def test_a_settlement_that_fails_in_any_way_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from burnmap.ledgers.memory import MemoryLedger

    class Broken(MemoryLedger):
        def settle(self, hold_id: str, actual: int) -> None:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")

    hold = budgets.LedgerHold(Broken(), "h2", 60.0)
    with caplog.at_level("ERROR", logger="burnmap.budgets"):
        hold.settle(Decimal("1e30"))
    assert "could not settle hold h2 on memory:// (OverflowError(" in caplog.text


async def test_a_call_cancelled_while_the_ledger_reserves_holds_nothing(tmp_path: Any) -> None:
    import asyncio
    import sqlite3
    import threading
    import time

    import httpx2

    db = tmp_path / "spend.db"
    burnmap.configure(ledger=f"sqlite:///{db}", hold_ttl=60)
    burnmap.limit("global", 10)
    sent: list[Any] = []

    def answer(request: Any) -> Any:
        sent.append(request)
        return httpx2.Response(200, json={})

    def another_process_writing() -> None:
        connection = sqlite3.connect(db, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        time.sleep(0.5)
        connection.execute("COMMIT")
        connection.close()

    transport = burnmap.AsyncTransport(httpx2.MockTransport(answer))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
    async with httpx2.AsyncClient(transport=transport) as client:
        async with burnmap.run("job", budget=1) as r:
            writer = threading.Thread(target=another_process_writing)
            writer.start()
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.post("https://api.anthropic.com/v1/messages", json=body)
            await asyncio.to_thread(writer.join)
            await asyncio.sleep(0.3)  # the ledger takes the hold late, then lets it go
            assert r.reserved == 0
    assert sent == []
    scope = burnmap.spent("global")
    assert (scope.reserved, scope.spent) == (0, 0)


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda: burnmap.limit("\udcff", 1), "text a store can keep"),
        (lambda: burnmap.limit("global", 10**13), "at most"),
        (lambda: burnmap.run("\udcff"), "text a ledger can keep"),
    ],
)
def test_limits_no_store_can_keep_are_refused_up_front(call: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        call()


def test_a_limit_is_never_stored_above_what_was_asked() -> None:
    burnmap.configure(ledger="memory://")
    assert burnmap.limit("job:tiny", "0.0000015").limit == Decimal("0.000001")


def test_first_calls_racing_on_threads_all_wait_for_the_environments_ledger(
    tmp_path: Path,
) -> None:
    """With BURNMAP_LEDGER in the environment (as under burnmap wrap), the first calls of
    many threads at once all reserve on it: none passes while the ledger is opening."""
    probe = f"""
import json, os, threading
os.environ["BURNMAP_LEDGER"] = "sqlite:///{tmp_path}/spend.db"
os.environ["BURNMAP_SCOPES"] = "wrap:t"
import httpx2, burnmap
from burnmap.ledgers import LimitDef
from burnmap.ledgers.sqlite import SQLiteLedger
SQLiteLedger("{tmp_path}/spend.db").set_limit(LimitDef("wrap:t", 10**9, None, "UTC"))
answer = {{"model": "claude-haiku-4-5", "usage": {{"input_tokens": 10, "output_tokens": 10}}}}
client = httpx2.Client(transport=burnmap.Transport(
    httpx2.MockTransport(lambda r: httpx2.Response(200, json=answer))))
body = {{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": []}}
go = threading.Barrier(20)
def call():
    go.wait()
    client.post("https://api.anthropic.com/v1/messages", json=body)
threads = [threading.Thread(target=call) for _ in range(20)]
[t.start() for t in threads]; [t.join() for t in threads]
print(burnmap.spent("wrap:t").spent)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    one = burnmap.prices.cost("claude-haiku-4-5", Usage(input_tokens=10, output_tokens=10))
    assert Decimal(done.stdout.strip()) == 20 * one


@pytest.fixture
def no_paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine has no Europe/Paris zone (no system tzdata, no tzdata wheel), though
    the machine that set the limit had one."""
    import zoneinfo

    from burnmap._core import windows

    real = zoneinfo.ZoneInfo

    def zone(key: str) -> zoneinfo.ZoneInfo:
        if key == "Europe/Paris":
            raise zoneinfo.ZoneInfoNotFoundError(key)
        return real(key)

    windows._zone.cache_clear()
    windows._current.clear()
    monkeypatch.setattr(windows, "ZoneInfo", zone)
    yield
    monkeypatch.undo()
    windows._zone.cache_clear()
    windows._current.clear()


@pytest.mark.parametrize(
    "store", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
)
async def test_a_limit_in_a_zone_this_machine_lacks_refuses_with_the_reason(
    claude: anthropic.Anthropic, server: StandIn, tmp_path: Path, store: str, request: Any
) -> None:
    """The cause reaches the caller as a burnmap error the SDK passes through, not as an
    APIConnectionError after retries; nothing is sent, and a status query says why."""
    import uuid

    url = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'spend.db'}",
        "redis": lambda: f"{request.getfixturevalue('redis_url')}?prefix={uuid.uuid4().hex[:8]}",
    }[store]()
    burnmap.configure(ledger=url)
    burnmap.limit("user:fr", 5, per="day", tz="Europe/Paris")
    request.getfixturevalue("no_paris")
    with burnmap.run("job", user_id="fr"), pytest.raises(burnmap.LedgerUnavailableError) as info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert "'user:fr'" in str(info.value) and "pip install tzdata" in str(info.value)
    client = anthropic.AsyncAnthropic(
        api_key="test",
        base_url=server.anthropic_base_url,
        http_client=burnmap.async_client(ANTHROPIC_STACK),  # type: ignore[call-overload]
    )
    with pytest.raises(burnmap.LedgerUnavailableError, match="tzdata"):
        async with burnmap.run("job", user_id="fr"):
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    await client.close()
    await burnmap.budgets.ledger().aclose()
    assert server.requests == []
    with pytest.raises(burnmap.LedgerError, match="'user:fr' cannot be applied on this machine"):
        burnmap.limits()
    if store != "memory":
        result = CliRunner().invoke(main, ["limits", "--ledger", url])
        assert result.exit_code == 1
        assert "unknown time zone 'Europe/Paris' on this machine" in result.output


def test_a_scope_from_the_environment_no_ledger_can_keep_refuses_with_the_reason(
    claude: anthropic.Anthropic, server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BURNMAP_SCOPES holding a byte that is not UTF-8 (os.environ gives a surrogate)."""
    burnmap.configure(ledger="memory://")
    monkeypatch.setenv("BURNMAP_SCOPES", "wrap:ok,tenant:caf\udce9")
    with pytest.raises(burnmap.LedgerUnavailableError, match="BURNMAP_SCOPES") as info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert "tenant:caf" in str(info.value)
    assert server.requests == []


@pytest.mark.parametrize("in_run", [False, True])
def test_a_ledger_url_in_the_environment_that_cannot_be_read_refuses_every_call(
    claude: anthropic.Anthropic,
    server: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    in_run: bool,
) -> None:
    """A malformed BURNMAP_LEDGER: the call is refused (not sent, not retried by the SDK
    as a connection error), the message says what to fix and hides the password."""
    monkeypatch.setenv("BURNMAP_LEDGER", "redis://:secret@127.0.0.1:abc/0")
    scope = burnmap.run("job", budget=1) if in_run else contextlib.nullcontext()
    with scope, pytest.raises(burnmap.LedgerUnavailableError, match="Fix BURNMAP_LEDGER") as info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert "secret" not in str(info.value)
    assert "Port could not be cast" in str(info.value)
    assert server.requests == []
