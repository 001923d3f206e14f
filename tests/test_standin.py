"""The stand-in server driven by the real anthropic and openai SDKs over loopback.

Every test checks that what the SDK parsed is what the stand-in says it billed, so the
stand-in can serve as the ground truth for burnmap's own metering tests.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from burnmap.standin import BilledCall, Script, StandIn

pytestmark = pytest.mark.sdk

Claude = anthropic.Anthropic
CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-5.4-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
REPO = Path(__file__).resolve().parent.parent
Json = dict[str, Any]


def _cut_stream_errors() -> tuple[type[BaseException], ...]:
    """What a caller sees when the connection drops mid-stream, on either httpx stack."""
    errors: list[type[BaseException]] = [anthropic.APIConnectionError, openai.APIConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).RemoteProtocolError)
        except ImportError:
            continue
    return tuple(errors)


# One client per SDK for the module: building one loads a TLS context (~40 ms each).
@pytest.fixture(scope="module")
def claude(server: StandIn) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test-key", base_url=server.anthropic_base_url) as client:
        yield client


@pytest.fixture(scope="module")
def gpt(server: StandIn) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test-key", base_url=server.openai_base_url) as client:
        yield client


def only_call(standin: StandIn) -> BilledCall:
    assert len(standin.calls) == 1, standin.calls
    return standin.calls[0]


def assert_anthropic_usage(usage: Any, call: BilledCall) -> None:
    assert call.provider == "anthropic"
    assert usage.input_tokens == call.input_tokens
    assert usage.output_tokens == call.output_tokens
    assert usage.cache_read_input_tokens == call.cache_read_tokens
    assert usage.cache_creation_input_tokens == call.cache_write_tokens


def assert_chat_usage(usage: Any, call: BilledCall) -> None:
    assert call.provider == "openai"
    # OpenAI's prompt_tokens include the cached ones; the stand-in records them apart.
    assert usage.prompt_tokens == call.total_input_tokens
    assert usage.prompt_tokens_details.cached_tokens == call.cache_read_tokens
    assert usage.completion_tokens == call.output_tokens
    assert usage.total_tokens == call.total_input_tokens + call.output_tokens


def assert_responses_usage(usage: Any, call: BilledCall) -> None:
    assert usage.input_tokens == call.total_input_tokens
    assert usage.input_tokens_details.cached_tokens == call.cache_read_tokens
    assert usage.output_tokens == call.output_tokens
    assert usage.total_tokens == call.total_input_tokens + call.output_tokens


def post_raw(standin: StandIn, path: str, body: Json) -> tuple[int, dict[str, str], bytes]:
    """POST without an SDK, to see the wire itself (http.client undoes chunking, not gzip)."""
    host, port = standin.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def sse_data(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


def drain(stream: Iterable[Any]) -> list[Any]:
    return list(stream)


# --- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_create_matches_billed_call(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(cache_read_tokens=1200, cache_write_tokens=300)
    message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES)

    call = only_call(standin)
    assert_anthropic_usage(message.usage, call)
    assert message.id.startswith("msg_")
    assert message.model == CLAUDE
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the stand-in."
    assert (call.endpoint, call.model) == ("messages", CLAUDE)
    assert (call.streamed, call.completed) == (False, True)
    assert call.output_tokens == 6  # 24 characters, four to a token
    request = standin.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["anthropic-version"]  # header names arrive lower-cased
    assert request.body["max_tokens"] == 256


def test_anthropic_raw_stream_events_and_usage(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(reply_text="Ledger lines grow thin.", events=3, cache_read_tokens=50)
    with claude.messages.create(
        model=CLAUDE, max_tokens=9, messages=MESSAGES, stream=True
    ) as stream:
        events = list(stream)

    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    call = only_call(standin)
    assert start.message.usage.input_tokens == call.input_tokens
    assert start.message.usage.cache_read_input_tokens == call.cache_read_tokens
    assert start.message.usage.output_tokens == 1
    assert delta.usage.output_tokens == call.output_tokens
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "Ledger lines grow thin."
    assert (call.streamed, call.completed) == (True, True)


def test_anthropic_stream_helper_final_message(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(cache_write_tokens=64)
    with claude.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Hello from the stand-in."
    assert_anthropic_usage(final.usage, only_call(standin))


def test_anthropic_tool_use_reply(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(tool_use={"name": "get_weather", "input": {"city": "Paris"}})
    message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES)
    with claude.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:
        streamed = stream.get_final_message()

    for reply, call in zip((message, streamed), standin.calls, strict=True):
        assert reply.stop_reason == "tool_use"
        block = reply.content[0]
        assert block.type == "tool_use"
        assert (block.name, block.input) == ("get_weather", {"city": "Paris"})
        assert_anthropic_usage(reply.usage, call)


def test_anthropic_output_is_capped_at_max_tokens(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(reply_text="x" * 400)
    message = claude.messages.create(model=CLAUDE, max_tokens=10, messages=MESSAGES)

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 10 == only_call(standin).output_tokens
    assert message.content[0].type == "text"
    assert len(message.content[0].text) == 40


def test_count_tokens_is_not_billed(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(input_tokens=42, fail_first=1)
    count = claude.messages.count_tokens(model=CLAUDE, messages=MESSAGES)

    assert count.input_tokens == 42
    assert standin.calls == []
    assert standin.requests[-1].path == "/v1/messages/count_tokens"


def test_async_anthropic_stream(standin: StandIn) -> None:
    async def run() -> Any:
        async with (
            anthropic.AsyncAnthropic(api_key="k", base_url=standin.anthropic_base_url) as c,
            c.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as s,
        ):
            return await s.get_final_message()

    final = asyncio.run(run())
    assert_anthropic_usage(final.usage, only_call(standin))


# --- OpenAI --------------------------------------------------------------------------------------


def test_openai_chat_create_matches_billed_call(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(cache_read_tokens=2048, input_tokens=270, output_tokens=202)
    completion = gpt.chat.completions.create(model=GPT, messages=MESSAGES)

    call = only_call(standin)
    assert_chat_usage(completion.usage, call)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2318
    assert completion.choices[0].message.content == "Hello from the stand-in."
    assert completion.choices[0].finish_reason == "stop"
    assert (call.endpoint, call.input_tokens, call.output_tokens) == ("chat", 270, 202)


def test_openai_chat_stream_with_include_usage(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(cache_read_tokens=8)
    with gpt.chat.completions.create(
        model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = list(stream)

    *body, last = chunks
    assert all(chunk.usage is None for chunk in body)
    assert last.choices == []
    assert_chat_usage(last.usage, only_call(standin))
    assert "".join(c.choices[0].delta.content or "" for c in body) == "Hello from the stand-in."
    assert body[-1].choices[0].finish_reason == "stop"


def test_openai_chat_stream_without_include_usage_is_still_billed(
    standin: StandIn, gpt: openai.OpenAI
) -> None:
    with gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)

    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    call = only_call(standin)
    assert (call.streamed, call.completed, call.output_tokens) == (True, True, 6)


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_wire_matches_openai(standin: StandIn, include_usage: bool) -> None:
    body: dict[str, Any] = {"model": GPT, "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    status, headers, raw = post_raw(standin, "/v1/chat/completions", body)

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-request-id"] == headers["request-id"]
    *chunks, done = sse_data(raw)
    assert done == "[DONE]"
    parsed = [json.loads(chunk) for chunk in chunks]
    # Exactly OpenAI's behaviour: "usage": null on every chunk only when usage was asked for.
    assert all(("usage" in chunk) is include_usage for chunk in parsed)
    assert (parsed[-1]["choices"] == []) is include_usage


def test_openai_chat_tool_call(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(tool_use={"name": "lookup", "input": {"q": "ecb"}})
    completion = gpt.chat.completions.create(model=GPT, messages=MESSAGES)
    with gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    function = choice.message.tool_calls[0].function  # type: ignore[union-attr]
    assert (function.name, json.loads(function.arguments)) == ("lookup", {"q": "ecb"})
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function is not None
    )
    assert json.loads(arguments) == {"q": "ecb"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_responses_create_and_stream(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(cache_read_tokens=1280, cache_write_tokens=16)
    response = gpt.responses.create(model="gpt-5.4", input="Why budgets?")
    with gpt.responses.create(model="gpt-5.4", input="Why budgets?", stream=True) as stream:
        events = list(stream)

    assert response.output_text == "Hello from the stand-in."
    assert response.status == "completed"
    assert response.usage is not None
    assert_responses_usage(response.usage, standin.calls[0])
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage is not None
    assert_responses_usage(final.response.usage, standin.calls[1])
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.response.output_text == "Hello from the stand-in."
    assert [c.endpoint for c in standin.calls] == ["responses", "responses"]


def test_openai_responses_stream_helper(standin: StandIn, gpt: openai.OpenAI) -> None:
    with gpt.responses.stream(model="gpt-5.4", input="hi") as stream:
        final = stream.get_final_response()

    assert final.usage is not None
    assert_responses_usage(final.usage, only_call(standin))


def test_openai_responses_cut_at_max_output_tokens(standin: StandIn, gpt: openai.OpenAI) -> None:
    with gpt.responses.create(
        model="gpt-5.4", input="hi", max_output_tokens=2, stream=True
    ) as stream:
        last = list(stream)[-1]

    # Like the real API: a capped response ends with response.incomplete, not .completed.
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None
    assert last.response.usage.output_tokens == 2
    assert_responses_usage(last.response.usage, only_call(standin))


def test_openai_embeddings(standin: StandIn, gpt: openai.OpenAI) -> None:
    result = gpt.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=4)

    assert [len(item.embedding) for item in result.data] == [4, 4]
    call = only_call(standin)
    assert result.usage.prompt_tokens == call.input_tokens
    assert (call.endpoint, call.output_tokens, call.streamed) == ("embeddings", 0, False)


def test_openai_legacy_completions(standin: StandIn, gpt: openai.OpenAI) -> None:
    completion = gpt.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this")
    with gpt.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say this",
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)

    assert completion.choices[0].text == "Hello from the stand-in."
    assert completion.usage is not None
    assert completion.usage.completion_tokens == standin.calls[0].output_tokens
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == standin.calls[1].total_input_tokens
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the stand-in."


def test_stream_is_billed_before_its_finish_reason_leaves(
    standin: StandIn, gpt: openai.OpenAI
) -> None:
    # The last legacy completion chunk carries both text and finish_reason: a caller that
    # stops reading there must find the call billed already.
    standin.script = Script(stream_chunk_delay=0.05)
    with gpt.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say", stream=True) as s:
        for chunk in s:
            if chunk.choices[0].finish_reason is not None:
                assert [call.completed for call in standin.calls] == [True]
                break
        else:
            pytest.fail("no chunk carried a finish_reason")


def test_model_listings_are_free(standin: StandIn, gpt: openai.OpenAI, claude: Claude) -> None:
    assert any(model.id == GPT for model in gpt.models.list())
    assert any(model.id == CLAUDE for model in claude.models.list())
    assert standin.calls == []


# --- failures, gzip, truncation ----------------------------------------------------------------


def test_anthropic_fail_first_is_retried(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(fail_first=2)
    message = claude.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    assert_anthropic_usage(message.usage, only_call(standin))
    retries = [r.headers.get("x-stainless-retry-count") for r in standin.requests]
    assert retries == ["0", "1", "2"]


def test_openai_fail_first_is_retried(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(fail_first=1, fail_status=429)
    completion = gpt.chat.completions.create(model=GPT, messages=MESSAGES)

    assert_chat_usage(completion.usage, only_call(standin))
    assert len(standin.requests) == 2


def test_errors_carry_provider_bodies(standin: StandIn, claude: Claude, gpt: openai.OpenAI) -> None:
    standin.script = Script(fail_first=6)
    with pytest.raises(anthropic.APIStatusError) as claude_error:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as gpt_error:
        gpt.chat.completions.create(model=GPT, messages=MESSAGES)

    assert claude_error.value.status_code == 529
    assert claude_error.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert claude_error.value.response.headers["x-should-retry"] == "true"
    assert gpt_error.value.status_code == 500
    assert gpt_error.value.body["type"] == "server_error"  # type: ignore[index]
    assert gpt_error.value.response.headers["retry-after"] == "0"
    assert standin.calls == []
    assert len(standin.requests) == 6  # three tries each


def test_unknown_path_is_a_provider_404(standin: StandIn) -> None:
    status, _, raw = post_raw(standin, "/v1/nope", {"model": GPT})

    assert status == 404
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert standin.calls == []


def test_gzip_bodies(standin: StandIn, claude: Claude, gpt: openai.OpenAI) -> None:
    standin.script = Script(gzip=True)
    status, headers, raw = post_raw(
        standin, "/v1/messages", {"model": CLAUDE, "max_tokens": 9, "messages": MESSAGES}
    )
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert json.loads(gzip.decompress(raw))["type"] == "message"

    message = claude.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    with gpt.chat.completions.create(
        model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as chat:
        last = list(chat)[-1]

    _, *calls = standin.calls
    assert_anthropic_usage(message.usage, calls[0])
    assert_anthropic_usage(final.usage, calls[1])
    assert_chat_usage(last.usage, calls[2])


def test_truncated_anthropic_stream(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(reply_text="x" * 40, truncate_stream_after_events=5)

    def read() -> list[Any]:
        with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
            return drain(stream)

    with pytest.raises(_cut_stream_errors()):
        read()
    call = only_call(standin)
    # message_start, content_block_start, ping, then 2 of 10 deltas: 2 of 10 output tokens.
    assert (call.completed, call.output_tokens, call.input_tokens > 0) == (False, 2, True)
    # The pool recovers: the next request on the same client works.
    standin.script = Script()
    assert claude.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES).content


def test_truncated_openai_stream_has_no_usage(standin: StandIn, gpt: openai.OpenAI) -> None:
    standin.script = Script(truncate_stream_after_events=3)
    seen: list[Any] = []

    def read() -> None:
        with gpt.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ) as stream:
            seen.extend(stream)

    with pytest.raises(_cut_stream_errors()):
        read()
    assert len(seen) == 3
    assert all(chunk.usage is None for chunk in seen)
    call = only_call(standin)
    assert (call.completed, call.output_tokens) == (False, 2)  # 2 of 6 deltas sent


def test_events_are_flushed_as_produced(standin: StandIn, claude: Claude) -> None:
    standin.script = Script(events=4, stream_chunk_delay=0.02)
    arrivals: list[float] = []
    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic())

    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] >= 0.05  # three delays apart, not one burst


# --- server life cycle -------------------------------------------------------------------------


def test_concurrent_requests_are_all_billed(standin: StandIn, gpt: openai.OpenAI) -> None:
    def ask(_: int) -> int:
        completion = gpt.chat.completions.create(model=GPT, messages=MESSAGES)
        assert completion.usage is not None
        return completion.usage.completion_tokens

    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(ask, range(16)))

    assert outputs == [6] * 16
    assert len(standin.calls) == 16


def test_stop_is_fast_and_closes_kept_alive_connections() -> None:
    with (
        StandIn() as standin,
        anthropic.Anthropic(
            api_key="k", base_url=standin.anthropic_base_url, max_retries=0
        ) as client,
    ):
        client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        started = time.monotonic()
        standin.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
    assert len(standin.calls) == 1


def test_url_needs_a_running_server() -> None:
    standin = StandIn(port=0)
    with pytest.raises(RuntimeError, match="start"):
        _ = standin.url
    with standin:
        assert standin.openai_base_url == standin.url + "/v1"
        assert standin.anthropic_base_url == standin.url
        assert not standin.url.endswith("/")


def test_script_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="fail_status"):
        Script(fail_status=200)


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")
def test_module_runs_in_the_foreground() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with subprocess.Popen(
        [sys.executable, "-m", "burnmap.standin", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        try:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("GET", "/v1/models")
                assert conn.getresponse().status == 200
            finally:
                conn.close()
        finally:
            process.terminate()
            process.wait(timeout=5)
            process.stdout.close()
    assert url.startswith("http://127.0.0.1:")
    assert process.returncode == 0
