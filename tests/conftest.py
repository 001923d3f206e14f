"""Shared fixtures: wire captures, and a fresh price book per test."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _clean_prices() -> Iterator[None]:
    yield
    burnmap.prices.clear()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a random loopback port, for this test session."""
    import os
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run must install it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
