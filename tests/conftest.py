"""Shared fixtures: wire captures, and a fresh price book per test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest

import burnmap
from burnmap.standin import BilledCall, Script, StandIn

FIXTURES = Path(__file__).parent / "fixtures"
WIRE = FIXTURES / "wire"


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def call_cost(call: BilledCall) -> Decimal:
    """What the stand-in charged for one call, priced with burnmap's price sheets."""
    return burnmap.prices.cost(call.model, call.usage)


def billed(calls: Iterable[BilledCall]) -> Decimal:
    """What the stand-in charged for ``calls``."""
    return sum((call_cost(call) for call in calls), Decimal(0))


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    """A loopback stand-in LLM server, one per test module."""
    with StandIn() as standin:
        yield standin


@pytest.fixture
def standin(server: StandIn) -> StandIn:
    """The module's stand-in, with a default script and no calls recorded yet."""
    server.script = Script()
    server.calls.clear()
    server.requests.clear()
    return server


# The HTTP stack of the installed anthropic SDK (httpx2 from 1.0 on).
ANTHROPIC_STACK = "httpx2" if int(anthropic.__version__.split(".")[0]) >= 1 else "httpx"


@pytest.fixture
def claude(standin: StandIn) -> Iterator[anthropic.Anthropic]:
    """The real anthropic SDK on a burnmap client, talking to the stand-in."""
    client = anthropic.Anthropic(
        api_key="test",
        base_url=standin.anthropic_base_url,
        http_client=burnmap.client(ANTHROPIC_STACK),  # type: ignore[call-overload]
        max_retries=2,
    )
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_prices() -> Iterator[None]:
    yield
    burnmap.prices.clear()
    from burnmap import transport

    transport._PRIORITY_PROJECTS.clear()  # what a test's project taught the process


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """The redis-server to start; a missing one skips (and fails in CI, which installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run must install it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis")
    return binary


class RedisServer:
    """A real redis-server on a free loopback port; ``durable``: AOF, fsync on every write."""

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.durable = durable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0

    def start(self) -> None:
        """Start it and wait until it answers (raises if it does not within 20 s)."""
        assert self.proc is None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *(persistence if self.durable else ["--appendonly", "no"]),
                *("--dir", str(self.directory), "--daemonize", "no"),
                *("--logfile", str(self.directory / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:  # refused, or LOADING while the AOF replays
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def crash_and_restart(self, down: float = 0.5) -> None:
        self.kill()
        self.crashes += 1
        time.sleep(down)
        self.start()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a random loopback port, for this test session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), durable=False)
    try:
        server.start()
        yield server.url
    finally:
        server.kill()


def eventually(predicate: Callable[[], object], timeout: float = 2.0) -> bool:
    """Whether ``predicate`` comes true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def fresh_budgets() -> Iterator[None]:
    """No ledger configured and no standing limit, before and after the test."""
    from burnmap import budgets

    budgets._config = budgets._Config()
    yield
    if budgets._config.ledger is not None:
        budgets._config.ledger.close()
    budgets._config = budgets._Config()
