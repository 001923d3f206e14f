"""Bad input loses nothing: the transport under random requests and responses.

Each example sends one request through ``burnmap.Transport`` (sync or async, httpx or
httpx2) inside a run, and the same request through a bare client over the same mock
answer. Requests are mostly valid, sometimes not (a malformed or non-object body, an
unknown model, a nonsensical ``max_tokens``); answers vary in status, content type,
encoding (gzip, deflate, a wrong ``content-encoding``), completeness (truncated, garbage,
empty) and chunking; the caller reads all, part or none of the body. Whatever happens:

- a refused call never reaches the mock, and it is refused with burnmap's own error;
- otherwise the caller gets exactly what the bare client gets: the same bytes, or the same
  error (burnmap adds none of its own), except where burnmap rewrites an OpenAI stream to
  filter the usage chunk it asked for;
- once the response is closed nothing is still held, spend stays within the budget, and an
  HTTP error response costs nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import types
import zlib
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import burnmap

ENDPOINTS = {
    "messages": ("https://api.anthropic.com/v1/messages", "claude-sonnet-4-6"),
    "chat": ("https://api.openai.com/v1/chat/completions", "gpt-4o-mini"),
    "responses": ("https://api.openai.com/v1/responses", "gpt-4o-mini"),
    "embeddings": ("https://api.openai.com/v1/embeddings", "text-embedding-3-small"),
    "completions": ("https://api.openai.com/v1/completions", "gpt-3.5-turbo-instruct"),
}
REFUSALS = (burnmap.RefusalError,)
HTTP_ERRORS = (httpx.HTTPError, httpx2.HTTPError, httpx.StreamError, httpx2.StreamError)
RUN: dict[str, Any] = {"call_rate_limit": None, "repeat_limit": None}
# BURNMAP_FUZZ_EXAMPLES=5000 for a longer hunt than make test's.
FUZZ = settings(
    max_examples=int(os.environ.get("BURNMAP_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Chunks(httpx.SyncByteStream, httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        pass


class AsyncChunks(httpx.AsyncByteStream, httpx2.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        pass


def _json_reply(kind: str, model: str, i: int, o: int) -> bytes:
    if kind == "messages":
        reply: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "model": model,
            "content": [],
            "usage": {"input_tokens": i, "output_tokens": o},
        }
    elif kind == "responses":
        reply = {
            "id": "resp_1",
            "object": "response",
            "model": model,
            "output": [],
            "usage": {"input_tokens": i, "output_tokens": o, "total_tokens": i + o},
        }
    else:
        reply = {
            "id": "x_1",
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o},
        }
    return json.dumps(reply).encode()


def _sse_reply(kind: str, model: str, i: int, o: int) -> bytes:
    def event(name: str | None, data: Any) -> bytes:
        head = f"event: {name}\n" if name else ""
        return f"{head}data: {json.dumps(data)}\n\n".encode()

    if kind == "messages":
        return b"".join(
            [
                event(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {"id": "m", "model": model, "usage": {"input_tokens": i}},
                    },
                ),
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"text": "hi"}},
                ),
                event("message_delta", {"type": "message_delta", "usage": {"output_tokens": o}}),
                event("message_stop", {"type": "message_stop"}),
            ]
        )
    if kind == "responses":
        done = {"id": "r", "model": model, "usage": {"input_tokens": i, "output_tokens": o}}
        return event(
            "response.created", {"type": "response.created", "response": {"model": model}}
        ) + event("response.completed", {"type": "response.completed", "response": done})
    # Chat and completions, as OpenAI sends them when include_usage was asked for.
    delta = {"id": "c", "model": model, "choices": [{"index": 0, "text": "hi"}], "usage": None}
    usage = {"id": "c", "model": model, "choices": [], "usage": {"prompt_tokens": i}}
    usage["usage"]["completion_tokens"] = o
    return event(None, delta) + event(None, usage) + b"data: [DONE]\n\n"


@st.composite
def exchanges(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(ENDPOINTS)))
    url, model = ENDPOINTS[kind]
    body: dict[str, Any] = {
        "model": draw(st.sampled_from([model] * 8 + ["no-such-model-anywhere", 5, None])),
        "messages": [{"role": "user", "content": "hi"}],
        "input": "hi",
        "prompt": "hi",
    }
    limit = draw(st.sampled_from([None] + [100] * 5 + [0, -5, "ten", 10**9, 1.5]))
    if limit is not None:
        body["max_tokens"] = body["max_output_tokens"] = limit
    stream = draw(st.booleans())
    if stream:
        body["stream"] = True
    request = draw(
        st.sampled_from([json.dumps(body).encode()] * 12 + [b"{not json", b"[1, 2]", b""])
    )

    # Usage a provider could report for this request: within its bound (a reply past the
    # bound is charged what it reports, and may overshoot a budget; test_transport covers it).
    most = min(limit, 4096) if type(limit) is int and limit > 0 else 100
    reply = (_sse_reply if stream else _json_reply)(
        kind, model, draw(st.integers(0, 50)), draw(st.integers(0, most))
    )
    shape = draw(st.sampled_from(["whole"] * 3 + ["truncated", "garbage", "empty"]))
    if shape == "truncated":
        reply = reply[: draw(st.integers(0, len(reply) - 1))]
    elif shape == "garbage":
        reply = draw(st.binary(max_size=200))
    elif shape == "empty":
        reply = b""
    encoding = draw(st.sampled_from(["", "", "gzip", "deflate", "x-unknown", "gzip?", "deflate?"]))
    if encoding == "gzip":
        reply = gzip.compress(reply)
    elif encoding == "deflate":
        reply = zlib.compress(reply)
    if encoding in ("gzip", "deflate") and draw(st.booleans()):
        reply = reply[: len(reply) // 2]  # a compressed body cut in the middle
    # "gzip?" and "deflate?": the header claims an encoding the body is not in.
    cuts = sorted(draw(st.lists(st.integers(0, len(reply)), max_size=5)))
    chunks = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)], strict=True)]

    content_type = draw(
        st.sampled_from(["the right one"] * 3 + ["text/html", "application/octet-stream"])
    )
    if content_type == "the right one":
        content_type = "text/event-stream" if stream else "application/json"
    headers = {"content-type": content_type}
    if encoding:
        headers["content-encoding"] = encoding.rstrip("?")
    return {
        "kind": kind,
        "url": url,
        "request": request,
        "stream": stream,
        "status": draw(st.sampled_from([200] * 4 + [400, 429, 500, 529])),
        "headers": headers,
        "chunks": chunks,
        "read": draw(st.sampled_from(["all", "all", "part", "none"])),
        "budget": draw(st.sampled_from([Decimal("0.0001"), Decimal(1), Decimal(1000)])),
    }


def _rewritten(case: dict[str, Any]) -> bool:
    """Whether burnmap asked for usage and filters it out: the bytes differ from bare."""
    return case["stream"] and case["kind"] in ("chat", "completions")


def _check(case: dict[str, Any], run: burnmap.Run, sent: int, mine: Any, bare: Any) -> None:
    refused = isinstance(mine, REFUSALS)
    if refused:
        assert sent == 0, "a refused call reached the network"
    else:
        assert sent == 1
        if case["read"] == "all" and not _rewritten(case):
            if isinstance(bare, Exception):
                assert type(mine) is type(bare), (mine, bare)
            else:
                assert mine == bare
    if isinstance(mine, Exception) and not refused:
        assert isinstance(mine, HTTP_ERRORS), f"{type(mine).__name__}: {mine}"
    assert run.reserved == 0, "a hold outlived its response"
    assert 0 <= run.spent <= case["budget"]
    if case["status"] >= 400:
        assert run.spent == 0, "an HTTP error was billed"


def _read(response: Any, how: str) -> bytes:
    if how == "all":
        return b"".join(response.iter_bytes())
    if how == "part":
        for _ in response.iter_raw():
            break
    return b""


async def _aread(response: Any, how: str) -> bytes:
    if how == "all":
        return b"".join([chunk async for chunk in response.aiter_bytes()])
    if how == "part":
        async for _ in response.aiter_raw():
            break
    return b""


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
@FUZZ
@given(case=exchanges())
def test_sync_transport_loses_nothing(lib: types.ModuleType, case: dict[str, Any]) -> None:
    sent = 0

    def answer(request: Any) -> Any:
        nonlocal sent
        sent += 1
        return lib.Response(case["status"], headers=case["headers"], stream=Chunks(case["chunks"]))

    def fetch(client: Any) -> Any:
        try:
            with client.stream("POST", case["url"], content=case["request"]) as response:
                return _read(response, case["read"])
        except Exception as exc:  # compared with the bare client, not hidden
            return exc

    logging.disable(logging.WARNING)
    try:
        metered = lib.Client(transport=burnmap.Transport(lib.MockTransport(answer)))
        with burnmap.run("fuzz", budget=case["budget"], **RUN) as run:
            mine = fetch(metered)
        sent_by_burnmap = sent
        bare = fetch(lib.Client(transport=lib.MockTransport(answer)))
    finally:
        logging.disable(logging.NOTSET)
    _check(case, run, sent_by_burnmap, mine, bare)


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
@FUZZ
@given(case=exchanges())
def test_async_transport_loses_nothing(lib: types.ModuleType, case: dict[str, Any]) -> None:
    sent = 0

    def answer(request: Any) -> Any:
        nonlocal sent
        sent += 1
        chunks = AsyncChunks(case["chunks"])
        return lib.Response(case["status"], headers=case["headers"], stream=chunks)

    async def fetch(client: Any) -> Any:
        try:
            async with client.stream("POST", case["url"], content=case["request"]) as response:
                return await _aread(response, case["read"])
        except Exception as exc:  # compared with the bare client, not hidden
            return exc

    async def main() -> tuple[burnmap.Run, int, Any, Any]:
        metered = lib.AsyncClient(transport=burnmap.AsyncTransport(lib.MockTransport(answer)))
        async with burnmap.run("fuzz", budget=case["budget"], **RUN) as run:
            mine = await fetch(metered)
        sent_by_burnmap = sent
        bare = await fetch(lib.AsyncClient(transport=lib.MockTransport(answer)))
        return run, sent_by_burnmap, mine, bare

    logging.disable(logging.WARNING)
    try:
        run, sent_by_burnmap, mine, bare = asyncio.run(main())
    finally:
        logging.disable(logging.NOTSET)
    _check(case, run, sent_by_burnmap, mine, bare)
