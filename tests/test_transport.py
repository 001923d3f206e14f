"""The transport over both HTTP stacks, driven with in-memory inner transports."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import types
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

import burnmap
from burnmap._core.bound import plan_call
from burnmap._core.endpoint import identify
from burnmap._core.eventstream import encode_message
from burnmap._core.sse import SSEDecoder
from tests.conftest import eventually, wire

# Budget races send identical requests as fast as a mock answers: not a runaway loop.
NO_LOOPS: dict[str, Any] = {"call_rate_limit": None, "repeat_limit": None}
LIBS = [pytest.param(httpx, id="httpx"), pytest.param(httpx2, id="httpx2")]
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
WIRE_STREAM = Path(__file__).parent / "fixtures" / "wire" / "anthropic" / "messages_stream.sse"
CHAT_URL = "https://api.openai.com/v1/chat/completions"


def message_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def anthropic_json(input_tokens: int = 10, output_tokens: int = 20) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal(input_tokens) * 3 + Decimal(output_tokens) * 15) / 1_000_000


class Recorder:
    """An inner-transport handler that records what reached the 'network'."""

    def __init__(self, respond: Callable[[Any], Any]) -> None:
        self.respond = respond
        self.requests: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        with self.lock:
            self.requests.append(request)
        return self.respond(request)


def sync_client(lib: types.ModuleType, handler: Callable[[Any], Any]) -> Any:
    return lib.Client(transport=burnmap.Transport(lib.MockTransport(handler)))


class Chunked(httpx.SyncByteStream, httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("lib", LIBS)
def test_outside_a_run_requests_pass_untouched(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json()))
    with sync_client(lib, rec) as client:
        response = client.post(ANTHROPIC_URL, json=message_body(model="unknown-model"))
    assert response.status_code == 200
    assert len(rec.requests) == 1


@pytest.mark.parametrize("lib", LIBS)
def test_json_call_is_settled_to_its_exact_cost(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json(10, 20)))
    with sync_client(lib, rec) as client, burnmap.run("job", budget=1) as r:
        response = client.post(ANTHROPIC_URL, json=message_body())
        assert response.json()["usage"]["output_tokens"] == 20
    assert r.spent == cost(10, 20)
    assert r.reserved == 0
    assert r.call_count == 1
    row = r.report.cost_by_call[0]
    assert row["model"] == "claude-sonnet-4-6"
    assert (row["input_tokens"], row["output_tokens"]) == (10, 20)
    assert row["cost"] == row["cumulative_cost"] == cost(10, 20)


@pytest.mark.parametrize("lib", LIBS)
def test_refused_call_never_reaches_the_network(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json()))
    with sync_client(lib, rec) as client, burnmap.run("tiny", budget="0.001") as r:
        with pytest.raises(burnmap.BudgetExceededError) as info:
            client.post(ANTHROPIC_URL, json=message_body(max_tokens=1000))
    assert rec.requests == []
    err = info.value
    assert err.scope == "run:tiny"
    assert err.job_name == "tiny"
    assert err.budget == Decimal("0.001")
    assert err.spent_so_far == 0
    assert err.call_count == 0
    assert "was not sent" in str(err)
    assert r.report.stopped_early
    assert r.report.refused_calls == 1


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("status", [400, 429, 500, 529])
def test_http_errors_are_free(lib: types.ModuleType, status: int) -> None:
    rec = Recorder(lambda r: lib.Response(status, json={"type": "error"}))
    with sync_client(lib, rec) as client, burnmap.run("job", budget=1) as r:
        assert client.post(ANTHROPIC_URL, json=message_body()).status_code == status
    assert (r.spent, r.reserved, r.call_count) == (0, 0, 0)
    assert r.report.failed_attempts == 1


@pytest.mark.parametrize("lib", LIBS)
def test_connection_errors_release_the_hold(lib: types.ModuleType) -> None:
    def boom(request: Any) -> Any:
        raise lib.ConnectError("refused")

    with sync_client(lib, boom) as client, burnmap.run("job", budget=1) as r:
        with pytest.raises(lib.ConnectError):
            client.post(ANTHROPIC_URL, json=message_body())
    assert (r.spent, r.reserved) == (0, 0)


@pytest.mark.parametrize("lib", LIBS)
def test_a_call_sent_but_unanswered_is_charged_its_bound(lib: types.ModuleType) -> None:
    def timeout(request: Any) -> Any:
        raise lib.ReadTimeout("no answer")

    with sync_client(lib, timeout) as client, burnmap.run("job", budget=1) as r:
        with pytest.raises(lib.ReadTimeout):
            client.post(ANTHROPIC_URL, json=message_body())
    assert r.reserved == 0
    assert r.report.calls[0].estimated
    assert r.spent == plan_cost(message_body())


@pytest.mark.parametrize("lib", LIBS)
def test_free_endpoints_are_never_charged_or_refused(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json={"input_tokens": 5}))
    with sync_client(lib, rec) as client, burnmap.run("job", budget=0) as r:
        client.post(ANTHROPIC_URL + "/count_tokens", json=message_body(model="unknown"))
        client.get("https://api.openai.com/v1/models")
    assert len(rec.requests) == 2
    assert r.call_count == 0


@pytest.mark.parametrize("lib", LIBS)
def test_a_declared_endpoint_is_charged_per_call_and_passes_its_bytes(
    lib: types.ModuleType,
) -> None:
    speech = "https://api.openai.com/v1/audio/speech"
    audio = bytes(range(256)) * 64
    statuses = iter([200, 500, 200])
    rec = Recorder(
        lambda r: lib.Response(
            next(statuses), headers={"content-type": "audio/mpeg"}, stream=Chunked([audio])
        )
    )
    request = {"model": "gpt-4o-mini-tts", "input": "hello", "voice": "alloy"}
    with sync_client(lib, rec) as client:
        client.post(speech, json=request)  # outside any run or standing budget: untouched
        with burnmap.run("tts", budget=1) as r, pytest.raises(burnmap.UnmeteredEndpointError):
            client.post(speech, json=request)
        assert len(rec.requests) == 1
        burnmap.prices.register_endpoint("/audio/speech", per_call="0.015")
        try:
            with burnmap.run("tts", budget=1) as r:
                assert client.post(speech, json=request).status_code == 500  # free
                assert client.post(speech, json=request).content == audio
        finally:
            burnmap.prices.unregister_endpoint("/audio/speech")
    assert (r.spent, r.reserved, r.call_count) == (Decimal("0.015"), 0, 1)
    assert r.report.failed_attempts == 1
    assert r.report.cost_by_call[0]["model"] == "gpt-4o-mini-tts"


@pytest.mark.parametrize("lib", LIBS)
def test_other_services_messages_and_responses_pass_untouched(lib: types.ModuleType) -> None:
    """Under a run (or burnmap wrap), an agent's own tools still reach chat services and
    surveys: on a host that is not an LLM provider, only a body that reads like a model
    call is taken for one."""
    rec = Recorder(lambda r: lib.Response(201, json={"id": "1"}))
    tool_calls = [
        ("https://graph.microsoft.com/v1.0/chats/19:a@thread.v2/messages", {"body": {"x": 1}}),
        ("https://discord.com/api/v10/channels/1/messages", {"content": "deployed"}),
        ("https://api.surveymonkey.com/v3/surveys/42/responses", {"pages": []}),
    ]
    with sync_client(lib, rec) as client, burnmap.run("agent", budget=1) as r:
        for url, body in tool_calls:
            assert client.post(url, json=body).status_code == 201
        assert client.post(tool_calls[0][0], content=b"plain text").status_code == 201
        with pytest.raises(burnmap.RefusalError, match="names no model"):
            client.post("https://gw.corp/v1/messages", json={"messages": []})
    assert len(rec.requests) == 4 and r.call_count == 0


@pytest.mark.parametrize("lib", LIBS)
def test_unknown_model_is_refused_before_sending(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json()))
    with sync_client(lib, rec) as client, burnmap.run("job", budget=100):
        with pytest.raises(burnmap.UnknownModelError, match=r"burnmap\.prices\.register"):
            client.post(ANTHROPIC_URL, json=message_body(model="claude-nonexistent-9"))
    assert rec.requests == []


@pytest.mark.parametrize("lib", LIBS)
def test_gzip_json_and_sse_bodies_are_metered(lib: types.ModuleType) -> None:
    def respond(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            return lib.Response(
                200,
                headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
                content=gzip.compress(wire("anthropic/messages_stream.sse")),
            )
        return lib.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=gzip.compress(json.dumps(anthropic_json(7, 9)).encode()),
        )

    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        assert client.post(ANTHROPIC_URL, json=message_body()).json()["usage"]["input_tokens"] == 7
        with client.stream("POST", ANTHROPIC_URL, json=message_body(stream=True)) as response:
            text = response.read()
    assert text == wire("anthropic/messages_stream.sse")
    assert r.spent == cost(7, 9) + cost(14, 23)


@pytest.mark.parametrize("lib", LIBS)
def test_corrupt_gzip_settles_at_the_bound_and_loses_nothing(lib: types.ModuleType) -> None:
    def respond(request: Any) -> Any:
        return lib.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            stream=Chunked([b"\x1f\x8b\x08\x00not-really-gzip"]),
        )

    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        with pytest.raises(lib.DecodingError):
            client.post(ANTHROPIC_URL, json=message_body())
    assert r.reserved == 0
    assert r.report.calls[0].estimated
    assert r.spent == r.report.calls[0].reserved


def _bedrock_frame(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    headers = {":message-type": "event", ":event-type": "chunk"}
    return encode_message(headers, payload.encode())


@pytest.mark.parametrize("lib", LIBS)
def test_a_corrupt_bedrock_frame_charges_the_bound_and_the_caller_reads_on(
    lib: types.ModuleType,
) -> None:
    url = (
        "https://bedrock-runtime.us-east-1.amazonaws.com"
        "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream"
    )
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 20}}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"text": "word " * 50}}
    bad = bytearray(_bedrock_frame(delta))
    bad[-1] ^= 0xFF  # its checksum no longer matches
    frames = [
        _bedrock_frame(start),
        *[_bedrock_frame(delta)] * 80,
        bytes(bad),
        _bedrock_frame({"type": "message_delta", "usage": {"output_tokens": 4000}}),
        _bedrock_frame({"type": "message_stop"}),
    ]
    headers = {"content-type": "application/vnd.amazon.eventstream"}
    with sync_client(
        lib, lambda r: lib.Response(200, headers=headers, stream=Chunked(frames))
    ) as c:
        with burnmap.run("bedrock", budget=1) as r:
            body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4096, "messages": []}
            got = c.post(url, json=body).content
    assert got == b"".join(frames)  # what the provider sent, corrupt frame included
    call = r.report.calls[0]
    assert (call.estimated, r.spent) == (True, call.reserved)  # the bound, not 20 tokens in


@pytest.mark.parametrize(
    "poison",
    [
        b'"output_tokens": 1e400',  # read as inf
        b'"output_tokens": 10000000000000000000',  # more than SQLite can store, priced
        b'"output_tokens": ' + b"[" * 100_000 + b"]" * 100_000,  # past the recursion limit
    ],
    ids=["infinite", "huge", "deep"],
)
@pytest.mark.parametrize("lib", LIBS)
def test_usage_the_meter_cannot_read_never_breaks_the_response(
    lib: types.ModuleType, poison: bytes
) -> None:
    data = (
        b'event: message_start\ndata: {"type": "message_start", "message": {"usage": '
        b'{"input_tokens": 20}}}\n\n'
        b'event: message_delta\ndata: {"type": "message_delta", "usage": {' + poison + b"}}\n\n"
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    )
    headers = {"content-type": "text/event-stream"}
    with sync_client(
        lib, lambda r: lib.Response(200, headers=headers, stream=Chunked([data]))
    ) as c:
        with burnmap.run("poison", budget=1) as r:
            got = c.post(ANTHROPIC_URL, json=message_body(stream=True)).content
    assert got == data
    call = r.report.calls[0]
    assert (r.reserved, r.spent, call.estimated) == (0, call.reserved, True)  # the bound


def sse_chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("lib", LIBS)
def test_stream_chunks_are_forwarded_as_they_arrive(lib: types.ModuleType) -> None:
    data = wire("anthropic/messages_stream.sse")
    chunks = sse_chunks(data, 37)
    upstream = Chunked(chunks)

    def respond(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, stream=upstream)

    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        with client.stream("POST", ANTHROPIC_URL, json=message_body(stream=True)) as response:
            seen = list(response.iter_raw())
            # Settled the moment the last byte passed, before the stream is closed.
            assert r.spent == cost(14, 23)
    assert seen == chunks
    assert upstream.closed


@pytest.mark.parametrize("lib", LIBS)
def test_stream_closed_early_is_charged_what_was_observed(lib: types.ModuleType) -> None:
    data = wire("anthropic/messages_stream.sse")
    cut = data.index(b"event: content_block_delta")
    upstream = Chunked([data[:cut], data[cut:]])

    def respond(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, stream=upstream)

    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        with client.stream("POST", ANTHROPIC_URL, json=message_body(stream=True)) as response:
            next(response.iter_raw())
    assert upstream.closed
    assert r.reserved == 0
    call = r.report.calls[0]
    assert call.estimated
    assert call.usage.input_tokens == 14
    assert 0 < r.spent < plan_cost(message_body(stream=True))


@pytest.mark.parametrize("lib", LIBS)
def test_a_stream_dropped_before_it_is_read_is_settled(lib: types.ModuleType) -> None:
    import gc

    data = wire("anthropic/messages_stream.sse")

    def respond(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        request = client.build_request("POST", ANTHROPIC_URL, json=message_body(stream=True))
        response = client.send(request, stream=True)
        assert r.reserved > 0
        del response
        gc.collect()
        assert eventually(lambda: r.reserved == 0, timeout=5)
    assert r.call_count == 1 and r.report.calls[0].estimated


@pytest.mark.parametrize("lib", LIBS)
def test_a_stream_the_garbage_collector_closes_under_a_held_lock_does_not_deadlock(
    lib: types.ModuleType,
) -> None:
    """The collector closes a half-read stream at any allocation, on whatever thread it
    interrupts, maybe one that holds the runs' or a ledger's lock: its settlement must
    not wait for that lock there."""
    import gc

    from burnmap.budgets import ledger
    from burnmap.runs import _LOCK

    burnmap.configure(ledger="memory://")
    data = wire("anthropic/messages_stream.sse")

    def respond(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    finished = threading.Event()
    try:
        with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:

            def drop_a_stream_while_locked() -> None:
                with r.attach():
                    request = client.build_request(
                        "POST", ANTHROPIC_URL, json=message_body(stream=True)
                    )
                    response = client.send(request, stream=True)
                    chunks = response.iter_raw()
                    next(chunks)
                    cycle: list[Any] = [response, chunks]
                    cycle.append(cycle)  # only the collector frees it, as with SDK streams
                    del response, chunks, cycle
                    with _LOCK, ledger()._lock:  # type: ignore[attr-defined]
                        gc.collect()
                finished.set()

            worker = threading.Thread(target=drop_a_stream_while_locked, daemon=True)
            worker.start()
            worker.join(5)
            assert finished.is_set(), "deadlocked"
            assert eventually(lambda: r.reserved == 0, timeout=5)
        assert burnmap.spent("global").reserved == 0
    finally:
        burnmap.budgets._config = burnmap.budgets._Config()


@pytest.mark.parametrize("lib", LIBS)
def test_a_redirect_is_free(lib: types.ModuleType) -> None:
    def respond(request: Any) -> Any:
        if request.url.path == "/old/v1/messages":
            return lib.Response(307, headers={"location": ANTHROPIC_URL})
        return lib.Response(200, json=anthropic_json())

    transport = burnmap.Transport(lib.MockTransport(respond))
    with lib.Client(transport=transport, follow_redirects=True) as client:
        with burnmap.run("job", budget="0.008") as r:  # room for one bound, not two
            reply = client.post("https://api.anthropic.com/old/v1/messages", json=message_body())
    assert reply.status_code == 200
    assert (r.call_count, r.spent, r.report.failed_attempts) == (1, cost(10, 20), 0)


@pytest.mark.parametrize("lib", LIBS)
async def test_a_call_cancelled_while_it_waits_is_charged_its_bound(lib: types.ModuleType) -> None:
    sent = []

    async def never_answers(request: Any) -> Any:
        sent.append(request)
        await asyncio.sleep(60)

    transport = burnmap.AsyncTransport(lib.MockTransport(never_answers))
    async with lib.AsyncClient(transport=transport) as client:
        async with burnmap.run("job", budget=1) as r:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.post(ANTHROPIC_URL, json=message_body())
    assert len(sent) == 1 and r.reserved == 0
    assert r.spent == plan_cost(message_body()) and r.report.calls[0].estimated


async def test_over_a_network_only_a_cancelled_call_that_went_out_is_charged() -> None:
    """A call cancelled while it waits for a pooled connection never left the process:
    free. One cancelled after its request went out may be billed: its bound."""
    received: list[bytes] = []
    answered = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        await answered.wait()  # until the test is over
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/messages"
    one_connection = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=1))
    try:
        async with httpx2.AsyncClient(transport=burnmap.AsyncTransport(one_connection)) as client:
            async with burnmap.run("job", budget=1) as r:
                first = asyncio.create_task(client.post(url, json=message_body()))
                while not received:
                    await asyncio.sleep(0.01)
                with pytest.raises(TimeoutError):  # waits for the only connection
                    async with asyncio.timeout(0.1):
                        await client.post(url, json=message_body())
                assert (r.call_count, r.spent, r.report.failed_attempts) == (0, 0, 1)
                first.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await first
        assert len(received) == 1 and r.reserved == 0
        assert r.call_count == 1 and r.report.calls[0].estimated
        assert r.spent == plan_cost(message_body())
    finally:
        answered.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("lock", ["runs", "memory ledger", "sqlite ledger"])
def test_a_stream_closed_on_a_thread_holding_a_burnmap_lock_is_settled_after(
    lib: types.ModuleType, lock: str, tmp_path: Any
) -> None:
    """A signal handler may close a stream while its thread holds the runs' lock or the
    ledger's: the settlement must not wait for that lock there."""
    from burnmap.budgets import ledger
    from burnmap.runs import _LOCK

    data = wire("anthropic/messages_stream.sse")

    def respond(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    if lock != "runs":
        url = "memory://" if lock == "memory ledger" else f"sqlite:///{tmp_path / 'l.db'}"
        burnmap.configure(ledger=url)
    held_lock = _LOCK if lock == "runs" else ledger()._lock  # type: ignore[attr-defined]
    try:
        with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
            with client.stream("POST", ANTHROPIC_URL, json=message_body(stream=True)) as response:
                chunks = response.iter_raw()
                next(chunks)
                with held_lock:
                    response.close()
                    del chunks
                    held = r.call_count
            assert held == 0  # not settled under the lock…
            assert eventually(lambda: r.reserved == 0, timeout=5)  # …but right after
        assert r.call_count == 1
    finally:
        if burnmap.budgets._config.ledger is not None:
            burnmap.budgets._config.ledger.close()
        burnmap.budgets._config = burnmap.budgets._Config()


def test_an_https_proxys_connect_is_not_the_request_going_out() -> None:
    from burnmap.transport import _SyncSending

    sending = _SyncSending(None)
    sending("connection.connect_tcp.started", {})
    sending(
        "http11.send_request_headers.started", {"request": httpx2.Request("CONNECT", "http://p")}
    )
    assert not sending.started
    sending("http11.send_request_headers.started", {"request": httpx2.Request("POST", "http://a")})
    assert sending.started


def test_streams_abandoned_until_exit_are_settled(tmp_path: Any) -> None:
    import subprocess
    import sys

    ledger_url = f"sqlite:///{tmp_path / 'spend.db'}"
    program = f"""
import gc, httpx2, burnmap
data = open({str(WIRE_STREAM)!r}, "rb").read()
def respond(request):
    return httpx2.Response(200, headers={{"content-type": "text/event-stream"}}, content=data)
burnmap.configure(ledger={ledger_url!r})
client = httpx2.Client(transport=burnmap.Transport(httpx2.MockTransport(respond)))
run = burnmap.run("job", budget=1).__enter__()
body = {{"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [], "stream": True}}
kept = []
for last in (False, True):
    response = client.send(client.build_request("POST", {ANTHROPIC_URL!r}, json=body), stream=True)
    chunks = response.iter_raw()
    next(chunks)
    cycle = [response, chunks]
    cycle.append(cycle)  # freed by a collection only
    if last:
        kept.append(cycle)  # still there at exit
    del response, chunks, cycle
gc.collect()
"""
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)
    burnmap.configure(ledger=ledger_url)
    try:
        scope = burnmap.spent("global")
        assert scope.reserved == 0 and scope.spent > 0
    finally:
        burnmap.budgets._config.ledger.close()  # type: ignore[union-attr]
        burnmap.budgets._config = burnmap.budgets._Config()


def plan_cost(body: dict[str, Any]) -> Decimal:
    """The bound of a request body exactly as an httpx client serialises it."""
    endpoint = identify("POST", "api.anthropic.com", "/v1/messages")
    assert endpoint is not None
    content = httpx2.Request("POST", ANTHROPIC_URL, json=body).content
    assert content == httpx.Request("POST", ANTHROPIC_URL, json=body).content
    return plan_call(endpoint, content, burnmap.prices.default_book).cost


@pytest.mark.parametrize("lib", LIBS)
def test_openai_stream_gets_usage_injected_and_hidden(lib: types.ModuleType) -> None:
    asked: list[dict[str, Any]] = []

    def respond(request: Any) -> Any:
        body = json.loads(request.content)
        asked.append(body)
        name = (
            "openai/chat_stream_usage.sse"
            if body.get("stream_options", {}).get("include_usage")
            else "openai/chat_stream_no_usage.sse"
        )
        return lib.Response(
            200,
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
            content=gzip.compress(wire(name)),
        )

    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        with client.stream("POST", CHAT_URL, json=request) as response:
            body = response.read()
    assert asked[0]["stream_options"] == {"include_usage": True}
    events = SSEDecoder().feed(body)
    assert all(b'"usage"' not in e.data for e in events)
    assert events[-1].data == b"[DONE]"
    assert len(events) == len(SSEDecoder().feed(wire("openai/chat_stream_no_usage.sse")))
    # Priced from the model the response names (gpt-5.4-mini), exactly.
    usage = r.report.calls[0].usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (13, 84, 64)
    assert not r.report.calls[0].estimated


@pytest.mark.parametrize("lib", LIBS)
def test_caller_who_asked_for_usage_sees_it(lib: types.ModuleType) -> None:
    def respond(request: Any) -> Any:
        return lib.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=wire("openai/chat_stream_usage.sse"),
        )

    request = {
        "model": "gpt-4o-mini",
        "messages": [],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with sync_client(lib, respond) as client, burnmap.run("job", budget=1):
        with client.stream("POST", CHAT_URL, json=request) as response:
            assert response.read() == wire("openai/chat_stream_usage.sse")


@pytest.mark.parametrize("lib", LIBS)
def test_nested_runs_charge_every_enclosing_run(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json(10, 20)))
    with sync_client(lib, rec) as client, burnmap.run("outer", budget=1) as outer:
        client.post(ANTHROPIC_URL, json=message_body())
        with burnmap.run("inner", budget="0.5") as inner:
            client.post(ANTHROPIC_URL, json=message_body())
        with burnmap.run("tight", budget="0.0001") as tight:
            with pytest.raises(burnmap.BudgetExceededError) as info:
                client.post(ANTHROPIC_URL, json=message_body())
    assert info.value.scope == "run:tight"
    assert outer.spent == 2 * cost(10, 20)
    assert inner.spent == cost(10, 20)
    assert tight.spent == 0
    assert outer.call_count == 2


@pytest.mark.parametrize("lib", LIBS)
def test_outer_budget_refuses_inside_a_generous_inner_run(lib: types.ModuleType) -> None:
    rec = Recorder(lambda r: lib.Response(200, json=anthropic_json()))
    with sync_client(lib, rec) as client, burnmap.run("outer", budget="0.001"):
        with burnmap.run("inner", budget=100):
            with pytest.raises(burnmap.BudgetExceededError) as info:
                client.post(ANTHROPIC_URL, json=message_body())
    assert info.value.scope == "run:outer"
    assert info.value.job_name == "inner"


@pytest.mark.parametrize("lib", LIBS)
def test_stream_read_after_the_run_exits_still_counts(lib: types.ModuleType) -> None:
    def respond(request: Any) -> Any:
        return lib.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=wire("anthropic/messages_stream.sse"),
        )

    with sync_client(lib, respond) as client:
        with burnmap.run("job", budget=1) as r:
            response = client.send(
                client.build_request("POST", ANTHROPIC_URL, json=message_body(stream=True)),
                stream=True,
            )
        assert r.spent == 0
        response.read()
        response.close()
    assert r.spent == cost(14, 23)


def exact_cost_responder(lib: types.ModuleType) -> Callable[[Any], Any]:
    """Bills every call exactly its bound: the worst case for the budget."""

    def respond(request: Any) -> Any:
        endpoint = identify("POST", "api.anthropic.com", "/v1/messages")
        assert endpoint is not None
        plan = plan_call(endpoint, request.content, burnmap.prices.default_book)
        return lib.Response(200, json=anthropic_json(plan.input_tokens, plan.output_tokens))

    return respond


@pytest.mark.parametrize("lib", LIBS)
def test_16_threads_sharing_one_run_never_overspend(lib: types.ModuleType) -> None:
    rec = Recorder(exact_cost_responder(lib))
    one = plan_cost(message_body())
    budget = one * 37 + one / 2  # room for exactly 37 calls
    refused = []
    with sync_client(lib, rec) as client, burnmap.run("threads", budget=budget, **NO_LOOPS) as r:

        def worker() -> None:
            with r.attach():
                for _ in range(5):
                    try:
                        client.post(ANTHROPIC_URL, json=message_body())
                    except burnmap.BudgetExceededError:
                        refused.append(1)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert r.spent <= budget
    assert r.spent == 37 * one
    assert len(rec.requests) == 37
    assert len(refused) == 16 * 5 - 37
    assert r.reserved == 0


def async_client(lib: types.ModuleType, handler: Callable[[Any], Any]) -> Any:
    return lib.AsyncClient(transport=burnmap.AsyncTransport(lib.MockTransport(handler)))


@pytest.mark.parametrize("lib", LIBS)
async def test_20_calls_under_gather_never_overspend(lib: types.ModuleType) -> None:
    inner = exact_cost_responder(lib)
    sent: list[int] = []

    async def respond(request: Any) -> Any:
        await request.aread()
        sent.append(1)
        await asyncio.sleep(0.01)  # all 20 are in flight together
        return inner(request)

    one = plan_cost(message_body())
    budget = one * 7 + one / 3
    async with (
        async_client(lib, respond) as client,
        burnmap.run("gather", budget=budget, **NO_LOOPS) as r,
    ):
        results = await asyncio.gather(
            *(client.post(ANTHROPIC_URL, json=message_body()) for _ in range(20)),
            return_exceptions=True,
        )
    refused = [x for x in results if isinstance(x, burnmap.BudgetExceededError)]
    assert len(refused) == 13
    assert len(sent) == 7
    assert r.spent == 7 * one <= budget
    assert r.reserved == 0


@pytest.mark.parametrize("lib", LIBS)
async def test_async_stream_and_tasks_inherit_the_run(lib: types.ModuleType) -> None:
    class AsyncChunks(httpx.AsyncByteStream, httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in sse_chunks(wire("anthropic/messages_stream.sse"), 50):
                yield chunk

    def respond(request: Any) -> Any:
        return lib.Response(
            200, headers={"content-type": "text/event-stream"}, stream=AsyncChunks()
        )

    async with async_client(lib, respond) as client, burnmap.run("async", budget=1) as r:

        async def call() -> bytes:
            async with client.stream(
                "POST", ANTHROPIC_URL, json=message_body(stream=True)
            ) as response:
                return await response.aread()

        task = asyncio.create_task(call())
        body = await task
    assert body == wire("anthropic/messages_stream.sse")
    assert r.spent == cost(14, 23)


def test_default_inner_transport_follows_the_request_library() -> None:
    transport = burnmap.Transport()
    assert transport._inner is None
    transport._inner_for(httpx.Request("GET", "http://127.0.0.1/"))
    assert isinstance(transport._inner, httpx.HTTPTransport)
    transport.close()


def test_client_factories() -> None:
    with burnmap.client() as c2, burnmap.client("httpx") as c1:
        assert isinstance(c2, httpx2.Client)
        assert isinstance(c1, httpx.Client)
        assert c2.timeout.read == 600
    with pytest.raises(ValueError, match="stack="):
        burnmap.client("requests")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="own transport"):
        burnmap.client(transport=httpx2.MockTransport(lambda r: httpx2.Response(200)))


async def test_async_client_factories() -> None:
    async with burnmap.async_client() as c2, burnmap.async_client("httpx") as c1:
        assert isinstance(c2, httpx2.AsyncClient)
        assert isinstance(c1, httpx.AsyncClient)


def test_environment_proxies_get_budgeted_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    with burnmap.client() as c:
        mounted = [t for t in c._mounts.values() if t is not None]
        assert mounted
        assert all(isinstance(t, burnmap.Transport) for t in mounted)
    with burnmap.client(proxy="http://127.0.0.1:9") as c:
        assert not c._mounts


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/html", b"<html>proxy page</html>"), ("application/json", b'{"id": "no usage"}')],
)
def test_unreadable_success_is_charged_its_whole_bound(
    lib: types.ModuleType, content_type: str, body: bytes
) -> None:
    rec = Recorder(
        lambda r: lib.Response(200, headers={"content-type": content_type}, content=body)
    )
    with sync_client(lib, rec) as client, burnmap.run("job", budget=1) as r:
        client.post(ANTHROPIC_URL, json=message_body())
    call = r.report.calls[0]
    assert call.estimated
    assert r.spent == call.reserved == plan_cost(message_body())


@pytest.mark.parametrize("lib", LIBS)
def test_corrupt_gzip_on_a_rewritten_stream_raises_a_decoding_error(
    lib: types.ModuleType,
) -> None:
    def respond(request: Any) -> Any:
        return lib.Response(
            200,
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
            stream=Chunked([b"\x1f\x8b\x08\x00not-really-gzip"]),
        )

    request = {"model": "gpt-4o-mini", "messages": [], "stream": True}
    with sync_client(lib, respond) as client, burnmap.run("job", budget=1) as r:
        with pytest.raises(lib.DecodingError):
            with client.stream("POST", CHAT_URL, json=request) as response:
                response.read()
    assert r.reserved == 0
    assert r.report.calls[0].estimated


@pytest.mark.parametrize("lib", LIBS)
def test_provider_stated_cost_wins(lib: types.ModuleType) -> None:
    body = json.loads(wire("providers/openrouter_chat.response.json"))
    rec = Recorder(lambda r: lib.Response(200, json=body))
    request = {"model": "anthropic/claude-sonnet-4.5", "messages": [], "max_tokens": 10}
    with sync_client(lib, rec) as client, burnmap.run("job", budget=1) as r:
        client.post("https://openrouter.ai/api/v1/chat/completions", json=request)
    assert r.spent == Decimal("0.000612")


@pytest.mark.parametrize("lib", LIBS)
def test_registered_price_is_kept_whatever_model_the_response_names(
    lib: types.ModuleType,
) -> None:
    burnmap.prices.register("prod-4o", input=100, output=100)
    reply = json.loads(wire("openai/chat.response.json"))  # names gpt-5.4-mini
    rec = Recorder(lambda r: lib.Response(200, json=reply))
    url = "https://acme.openai.azure.com/openai/deployments/prod-4o/chat/completions"
    with sync_client(lib, rec) as client, burnmap.run("job", budget=10) as r:
        client.post(url, json={"messages": [], "max_tokens": 300})
    usage = r.report.calls[0].usage
    assert r.spent == Decimal(usage.total_input_tokens + usage.output_tokens) * 100 / 10**6


@pytest.mark.parametrize("lib", LIBS)
def test_openai_web_searches_and_priority_tier_are_priced(lib: types.ModuleType) -> None:
    reply = json.loads(wire("openai/responses.response.json"))
    reply["output"] = [{"type": "web_search_call", "id": "ws_1", "status": "completed"}] * 2 + (
        reply["output"]
    )
    reply["service_tier"] = "priority"
    reply["model"] = "gpt-5"
    rec = Recorder(lambda r: lib.Response(200, json=reply))
    request = {
        "model": "gpt-5",
        "input": "hi",
        "max_output_tokens": 200,
        "service_tier": "priority",
        "tools": [{"type": "web_search"}],
    }
    with sync_client(lib, rec) as client, burnmap.run("job", budget=10) as r:
        client.post("https://api.openai.com/v1/responses", json=request)
    call = r.report.calls[0]
    assert call.usage.web_searches == 2
    standard = burnmap.prices.lookup("gpt-5", "openai").cost(call.usage)
    assert r.spent > standard  # priority rates
    assert r.spent <= call.reserved


@pytest.mark.parametrize("lib", LIBS)
def test_a_project_that_defaults_to_priority_is_bounded_at_priority_once_seen(
    lib: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """A request naming no tier is served at its project's default tier: once a project
    (host and key) serves a model at priority, its later requests for that model reserve
    at priority rates; other keys' and other models' do not; a call served at the default
    tier is charged at standard rates and makes that model forgotten."""
    reply = json.loads(wire("openai/chat.response.json"))
    served = iter(["priority", "default", "priority", "default", "priority", "default", "default"])

    def respond(request: Any) -> Any:
        model = json.loads(request.content)["model"]
        return lib.Response(200, json={**reply, "model": model, "service_tier": next(served)})

    def ask(model: str) -> dict[str, Any]:
        # Long enough for the fixture's usage (2,318 tokens in, 202 out) to be in bounds.
        return {
            "model": model,
            "messages": [{"role": "user", "content": "x" * 3000}],
            "max_completion_tokens": 300,
        }

    url = "https://api.openai.com/v1/chat/completions"
    mine, theirs = {"authorization": "Bearer A"}, {"authorization": "Bearer B"}
    run = burnmap.run("job", budget=10, repeat_limit=None)
    with sync_client(lib, Recorder(respond)) as client, run as r:
        client.post(url, json=ask("gpt-5"), headers=mine)  # priority: learned
        client.post(url, json=ask("gpt-4o-mini"), headers=mine)  # default: gpt-5 kept
        client.post(url, json=ask("gpt-5"), headers=mine)  # priority, bounded so
        client.post(url, json=ask("gpt-5"), headers=mine)  # default: charged so, forgotten
        client.post(url, json=ask("gpt-5"), headers=theirs)  # another project: priority
        client.post(url, json=ask("gpt-5"), headers=mine)  # bounded at standard again
        client.post(url, json=ask("gpt-5"), headers=theirs)  # theirs: bounded at priority
    first, mini, third, fourth, other, sixth, seventh = r.report.calls
    assert caplog.text.count("at priority rates to a request that named no service") == 2
    assert "please report this" not in caplog.text
    standard = burnmap.prices.lookup("gpt-5", "openai").cost(first.usage)
    assert first.cost == third.cost == other.cost > standard
    assert fourth.cost == sixth.cost == seventh.cost == standard
    assert third.reserved == fourth.reserved == seventh.reserved > first.reserved
    assert first.reserved == other.reserved == sixth.reserved
    assert mini.cost == burnmap.prices.lookup("gpt-4o-mini", "openai").cost(mini.usage)


@pytest.mark.parametrize("lib", LIBS)
def test_images_from_a_stored_prompts_tool_are_never_silently_free(
    lib: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored prompt may bring the image tool, which the request does not show: its
    images are charged the dearest image fee registered, and with none the log says so."""
    reply = json.loads(wire("openai/responses.response.json"))
    reply["output"] = [{"type": "image_generation_call", "id": "ig_1", "result": "aGk="}]
    rec = Recorder(lambda r: lib.Response(200, json=reply))
    request = {"model": "gpt-5", "prompt": {"id": "pmpt_1"}, "max_output_tokens": 200}
    with sync_client(lib, rec) as client, burnmap.run("job", budget=10) as r:
        client.post("https://api.openai.com/v1/responses", json=request)
        burnmap.prices.register_tool("image_generation", per_use="0.2")
        client.post("https://api.openai.com/v1/responses", json=request)
    assert "1 image(s) from the image_generation tool" in caplog.text
    first, second = r.report.calls
    assert second.cost - first.cost == Decimal("0.2")
    assert first.usage.images_generated == second.usage.images_generated == 1


@pytest.mark.parametrize("lib", LIBS)
def test_failed_attempts_are_not_repeats(lib: types.ModuleType) -> None:
    attempts = iter([529] * 7 + [200] * 3)

    def respond(request: Any) -> Any:
        status = next(attempts)
        if status != 200:
            return lib.Response(status, json={"type": "error"})
        return lib.Response(200, json=anthropic_json())

    with sync_client(lib, Recorder(respond)) as client, burnmap.run("retries", budget=1) as r:
        for _ in range(10):  # the same request: 7 overloaded, then answered 3 times
            client.post(ANTHROPIC_URL, json=message_body())
    assert r.call_count == 3
    assert r.report.failed_attempts == 7


def test_mismatched_transports_are_named_not_left_to_an_assertion() -> None:
    """An async inner transport in burnmap.Transport (or the reverse) is refused when
    built; an httpx transport under an httpx2 client on its first request."""
    with pytest.raises(TypeError, match=r"use burnmap\.AsyncTransport"):
        burnmap.Transport(httpx2.AsyncHTTPTransport())
    with pytest.raises(TypeError, match=r"use burnmap\.Transport"):
        burnmap.AsyncTransport(httpx.HTTPTransport())

    class Signing(httpx.MockTransport):  # a user's own transport, from another module
        pass

    for inner in (httpx.MockTransport, Signing):
        mixed = burnmap.Transport(inner(lambda r: httpx.Response(200, json={})))
        with (
            httpx2.Client(transport=mixed) as client,
            pytest.raises(TypeError, match="same library"),
        ):
            client.get("https://example.com/")


@pytest.mark.parametrize("lib", LIBS)
def test_a_background_response_is_charged_its_bound(lib: types.ModuleType) -> None:
    """A Responses call with background: true is answered before it runs, with no usage:
    what it will cost is unknown, so its whole reservation is charged, marked estimated."""
    queued = {"id": "resp_1", "object": "response", "status": "queued", "usage": None}
    rec = Recorder(lambda r: lib.Response(200, json={**queued, "model": "gpt-5"}))
    ask = {"model": "gpt-5", "input": "hi", "background": True, "max_output_tokens": 1000}
    with sync_client(lib, rec) as client, burnmap.run("job", budget=10) as r:
        client.post("https://api.openai.com/v1/responses", json=ask)
        client.get("https://api.openai.com/v1/responses/resp_1")  # polling: free
    (call,) = r.report.calls
    assert call.cost == call.reserved > 0 and call.estimated


@pytest.mark.parametrize("lib", LIBS)
def test_a_cut_stream_charged_past_its_bound_is_logged(
    lib: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream cut short whose reported input already passes the bound (the bound rested
    on an estimate that did not hold): charged what was reported, and the log says so."""
    start = {
        "type": "message_start",
        "message": {**anthropic_json(), "usage": {"input_tokens": 500_000, "output_tokens": 1}},
    }
    body = b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
    rec = Recorder(
        lambda r: lib.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    with sync_client(lib, rec) as client, burnmap.run("job", budget=10) as r:
        client.post(ANTHROPIC_URL, json=message_body(stream=True))
    call = r.report.calls[0]
    assert call.estimated and call.cost > call.reserved
    assert "more than its bound" in caplog.text
