"""burnmap under the real anthropic and openai SDKs, against a loopback stand-in server.

These tests run twice in ``make test``: with the newest SDKs (built on httpx2) and with the
httpx generation (anthropic < 1.0, openai < 3.0) in a second venv. Every test checks
burnmap's figures against what the stand-in billed.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pydantic
import pytest

import burnmap
from burnmap._core.eventstream import encode_message
from burnmap.prices import Usage
from burnmap.standin import Script, StandIn
from tests.conftest import ANTHROPIC_STACK, billed, wire

pytestmark = pytest.mark.sdk

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o-mini"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
OPENAI_STACK = "httpx2" if int(openai.__version__.split(".")[0]) >= 3 else "httpx"


@pytest.fixture
def gpt(standin: StandIn) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        api_key="test",
        base_url=standin.openai_base_url,
        http_client=burnmap.client(OPENAI_STACK),  # type: ignore[call-overload]
        max_retries=2,
    )
    yield client
    client.close()


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_create_is_billed_exactly(claude: anthropic.Anthropic, standin: StandIn) -> None:
    standin.script = Script(cache_read_tokens=300, cache_write_tokens=50)
    with burnmap.run("anthropic", budget=1) as r:
        message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
    assert message.usage.cache_read_input_tokens == 300
    assert r.spent == billed(standin.calls) > 0
    assert r.call_count == 1
    row = r.report.cost_by_call[0]
    assert row["input_tokens"] == message.usage.input_tokens
    assert row["output_tokens"] == message.usage.output_tokens
    assert row["cache_read_tokens"] == 300
    assert row["cache_write_tokens"] == 50


def test_anthropic_streams_are_billed_exactly(
    claude: anthropic.Anthropic, standin: StandIn
) -> None:
    standin.script = Script(reply_text="streamed " * 50)
    with burnmap.run("streams", budget=1) as r:
        events = list(
            claude.messages.create(model=CLAUDE, max_tokens=512, messages=HELLO, stream=True)
        )
        with claude.messages.stream(model=CLAUDE, max_tokens=512, messages=HELLO) as stream:
            final = stream.get_final_message()
        beta = claude.beta.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert events[-1].type == "message_stop"
    assert final.usage.output_tokens > 0
    assert beta.usage.output_tokens > 0
    assert len(standin.calls) == 3
    assert r.spent == billed(standin.calls)
    assert [c["streamed"] for c in r.report.cost_by_call] == [True, True, False]


def _claude_reply(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """A Messages API reply, as a mock provider sends it."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def _bedrock_chunk(event: dict[str, Any]) -> bytes:
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abc"}
    headers = {":event-type": "chunk", ":content-type": "application/json"}
    return encode_message({**headers, ":message-type": "event"}, json.dumps(payload).encode())


def test_bedrock_invoke_and_its_event_stream_are_billed_exactly() -> None:
    pytest.importorskip("botocore")  # AnthropicBedrock signs its requests with it
    lib = importlib.import_module(ANTHROPIC_STACK)
    model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    usage = {"input_tokens": 1200, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE}
    events = [
        {"type": "message_start", "message": {**message, "content": [], "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 250},
        },
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 1200}},
    ]
    whole = _claude_reply(1200, 250)
    paths: list[str] = []

    def answer(request: Any) -> Any:
        paths.append(request.url.path)
        if request.url.path.endswith("/invoke"):
            return lib.Response(200, json=whole)
        frames = [_bedrock_chunk(event) for event in events]
        stream = lib.ByteStream(b"".join(frames))
        return lib.Response(
            200, headers={"content-type": "application/vnd.amazon.eventstream"}, stream=stream
        )

    client = anthropic.AnthropicBedrock(
        aws_access_key="AKIDEXAMPLE",
        aws_secret_key="secret",
        aws_region="us-east-1",
        http_client=lib.Client(transport=burnmap.Transport(lib.MockTransport(answer))),
    )
    with burnmap.run("bedrock", budget=1) as r:
        reply = client.messages.create(model=model, max_tokens=1024, messages=HELLO)
        with client.messages.stream(model=model, max_tokens=1024, messages=HELLO) as stream:
            final = stream.get_final_message()
    assert reply.usage.output_tokens == final.usage.output_tokens == 250
    assert [path.rsplit("/", 1)[1] for path in paths] == ["invoke", "invoke-with-response-stream"]
    one = burnmap.prices.cost(model, Usage(input_tokens=1200, output_tokens=250), "aws")
    assert r.spent == 2 * one
    assert [row["estimated"] for row in r.report.cost_by_call] == [False, False]
    assert [row["streamed"] for row in r.report.cost_by_call] == [False, True]


@pytest.mark.parametrize(("region", "premium"), [("us-east5", "1.1"), ("global", "1")])
def test_vertex_calls_are_billed_and_its_token_counting_is_free(region: str, premium: str) -> None:
    """Billed at Anthropic's rates on Vertex's global endpoint, 10% more on a regional one
    (Claude 4.5 and later); token counting is free."""
    lib = importlib.import_module(ANTHROPIC_STACK)
    reply = _claude_reply(900, 40)
    paths: list[str] = []

    def answer(request: Any) -> Any:
        paths.append(request.url.path.rsplit("/", 1)[1])
        if "count-tokens" in request.url.path:
            return lib.Response(200, json={"input_tokens": 12})
        return lib.Response(200, json=reply)

    client = anthropic.AnthropicVertex(
        region=region,
        project_id="my-project",
        access_token="token",
        http_client=lib.Client(transport=burnmap.Transport(lib.MockTransport(answer))),
    )
    with burnmap.run("vertex", budget=1) as r:
        client.messages.count_tokens(model=CLAUDE, messages=HELLO)
        client.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
    assert paths == ["count-tokens:rawPredict", f"{CLAUDE}:rawPredict"]
    assert r.call_count == 1
    usage = Usage(input_tokens=900, output_tokens=40)
    assert r.spent == burnmap.prices.cost(CLAUDE, usage) * Decimal(premium)
    assert r.report.calls[0].reserved >= r.spent


def test_count_tokens_is_free(claude: anthropic.Anthropic, standin: StandIn) -> None:
    with burnmap.run("free", budget=0) as r:
        count = claude.messages.count_tokens(model=CLAUDE, messages=HELLO)
    assert count.input_tokens > 0
    assert r.call_count == 0


def test_refusal_reaches_the_caller_unchanged_and_unsent(
    claude: anthropic.Anthropic, standin: StandIn
) -> None:
    with burnmap.run("tight", budget="0.001"), pytest.raises(burnmap.BudgetExceededError) as info:
        claude.messages.create(model=CLAUDE, max_tokens=4096, messages=HELLO)
    assert not isinstance(info.value, anthropic.APIConnectionError)
    assert isinstance(info.value, anthropic.AnthropicError)  # so the SDK leaves it alone
    assert info.value.scope == "run:tight"
    assert standin.requests == []  # never sent, never retried


def test_unknown_model_is_refused_unchanged(claude: anthropic.Anthropic, standin: StandIn) -> None:
    with burnmap.run("unknown", budget=10), pytest.raises(burnmap.UnknownModelError):
        claude.messages.create(model="claude-imaginary-9", max_tokens=64, messages=HELLO)
    assert standin.requests == []


def test_overloaded_retries_are_free_and_the_success_billed_once(
    claude: anthropic.Anthropic, standin: StandIn
) -> None:
    standin.script = Script(fail_first=2)
    with burnmap.run("retries", budget=1) as r:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert len(standin.requests) == 3
    assert r.call_count == 1
    assert r.report.failed_attempts == 2
    assert r.spent == billed(standin.calls)
    assert r.reserved == 0


def test_gzip_responses(claude: anthropic.Anthropic, standin: StandIn) -> None:
    standin.script = Script(gzip=True, reply_text="zipped " * 40)
    with burnmap.run("gzip", budget=1) as r:
        claude.messages.create(model=CLAUDE, max_tokens=512, messages=HELLO)
        with claude.messages.stream(model=CLAUDE, max_tokens=512, messages=HELLO) as stream:
            text = stream.get_final_text()
    assert text.startswith("zipped")
    assert r.spent == billed(standin.calls)
    assert not any(c.estimated for c in r.report.calls)


def test_truncated_stream_is_charged_what_was_observed(
    claude: anthropic.Anthropic, standin: StandIn
) -> None:
    standin.script = Script(reply_text="word " * 200, truncate_stream_after_events=6)
    with burnmap.run("cut", budget=1) as r:
        with pytest.raises(Exception):  # noqa: B017 - the SDK's or httpx's error
            with claude.messages.stream(model=CLAUDE, max_tokens=1024, messages=HELLO) as s:
                s.get_final_message()
    assert r.reserved == 0
    call = r.report.calls[-1]
    assert call.estimated
    billed_call = standin.calls[-1]
    assert call.usage.input_tokens == billed_call.input_tokens
    assert call.usage.output_tokens >= billed_call.output_tokens


def test_agent_loop_stops_before_the_budget(claude: anthropic.Anthropic, standin: StandIn) -> None:
    standin.script = Script(tool_use={"name": "bash", "input": {"command": "ls"}})
    history: list[Any] = list(HELLO)
    budget = Decimal("0.05")

    def agent() -> None:
        for turn in range(1000):
            reply = claude.messages.create(model=CLAUDE, max_tokens=1024, messages=history)
            history.append({"role": "assistant", "content": reply.content})
            history.append({"role": "user", "content": f"turn {turn}: " + "again " * 100})

    with burnmap.run("runaway", budget=budget) as r, pytest.raises(burnmap.BudgetExceededError):
        agent()
    assert 0 < r.spent <= budget
    assert r.spent == billed(standin.calls)
    assert len(standin.requests) == r.call_count


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_chat_create_and_parse(gpt: openai.OpenAI, standin: StandIn) -> None:
    class Answer(pydantic.BaseModel):
        answer: int

    standin.script = Script(reply_text='{"answer": 42}', cache_read_tokens=64)
    with burnmap.run("chat", budget=1) as r:
        completion = gpt.chat.completions.create(model=GPT, messages=HELLO)
        parsed = gpt.chat.completions.parse(model=GPT, messages=HELLO, response_format=Answer)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 64
    assert parsed.choices[0].message.parsed == Answer(answer=42)
    assert r.spent == billed(standin.calls)


def test_openai_stream_without_usage_is_exact_and_unchanged(
    gpt: openai.OpenAI, standin: StandIn
) -> None:
    standin.script = Script(reply_text="tokens " * 30)
    with burnmap.run("chat-stream", budget=1) as r:
        chunks = list(gpt.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    # burnmap asked for usage on the caller's behalf, and hid it again.
    assert standin.requests[0].body["stream_options"] == {"include_usage": True}
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "tokens " * 30
    assert r.spent == billed(standin.calls)
    assert not r.report.calls[0].estimated


def test_openai_stream_helper_and_caller_usage(gpt: openai.OpenAI, standin: StandIn) -> None:
    with burnmap.run("chat-stream-helper", budget=1) as r:
        with gpt.chat.completions.stream(model=GPT, messages=HELLO) as stream:
            final = stream.get_final_completion()
        chunks = list(
            gpt.chat.completions.create(
                model=GPT, messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
    assert final.choices[0].message.content
    assert chunks[-1].usage is not None  # the caller asked: the caller sees it
    assert r.spent == billed(standin.calls)


def test_openai_responses_embeddings_completions(gpt: openai.OpenAI, standin: StandIn) -> None:
    with burnmap.run("openai-endpoints", budget=1) as r:
        response = gpt.responses.create(model=GPT, input="hello")
        streamed = list(gpt.responses.create(model=GPT, input="hello", stream=True))
        embedding = gpt.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        legacy = gpt.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", max_tokens=8)
    assert response.usage is not None
    assert streamed[-1].type == "response.completed"
    assert embedding.usage.prompt_tokens > 0
    assert legacy.usage is not None
    assert r.call_count == 4
    assert r.spent == billed(standin.calls)
    assert [c["endpoint"] for c in r.report.cost_by_call] == [
        "responses",
        "responses",
        "embeddings",
        "completions",
    ]


def test_openai_refusal_is_not_retried(gpt: openai.OpenAI, standin: StandIn) -> None:
    with burnmap.run("tight", budget="0.0001"), pytest.raises(burnmap.BudgetExceededError) as info:
        gpt.chat.completions.create(model=GPT, messages=HELLO)
    assert isinstance(info.value, openai.OpenAIError)
    assert standin.requests == []


def test_paid_endpoints_burnmap_cannot_meter_are_refused_until_priced(
    gpt: openai.OpenAI, claude: anthropic.Anthropic, standin: StandIn
) -> None:
    batch = [{"custom_id": "a", "params": {"model": CLAUDE, "max_tokens": 8, "messages": HELLO}}]
    with burnmap.run("media", budget=1):
        with pytest.raises(burnmap.UnmeteredEndpointError, match="register_endpoint") as info:
            gpt.images.generate(model="gpt-image-1", prompt="a cat")
        assert isinstance(info.value, openai.OpenAIError)  # not wrapped, not retried
        with pytest.raises(burnmap.UnmeteredEndpointError, match="batch"):
            claude.messages.batches.create(requests=batch)  # type: ignore[arg-type]
    assert standin.requests == []

    # Declared: reserved and charged per call, against a mock that answers like OpenAI.
    image = {"created": 1, "data": [{"b64_json": "aGk="}], "usage": {"input_tokens": 9}}
    mocked, sent = openai_answering(image)
    burnmap.prices.register_endpoint("/v1/images/generations", per_call="0.04")
    try:
        with burnmap.run("media", budget="0.1") as r:
            for _ in range(2):
                mocked.images.generate(model="gpt-image-1", prompt="a cat")
            with pytest.raises(burnmap.BudgetExceededError):  # a third would pass $0.10
                mocked.images.generate(model="gpt-image-1", prompt="a cat")
    finally:
        burnmap.prices.unregister_endpoint("/v1/images/generations")
    assert len(sent) == 2
    assert r.spent == Decimal("0.08")
    row = r.report.cost_by_call[0]
    assert (row["model"], row["endpoint"], row["estimated"]) == (
        "gpt-image-1",
        "/images/generations",
        True,
    )


def openai_answering(answer: dict[str, Any]) -> tuple[openai.OpenAI, list[Any]]:
    """The real openai SDK on a burnmap client whose mock answers every request with
    ``answer``, and the list of requests that reached it."""
    lib = importlib.import_module(OPENAI_STACK)
    sent: list[Any] = []

    def respond(request: Any) -> Any:
        sent.append(request)
        return lib.Response(200, json=answer)

    transport = burnmap.Transport(lib.MockTransport(respond))
    return openai.OpenAI(api_key="test", http_client=lib.Client(transport=transport)), sent


def test_a_price_registered_under_an_azure_deployment_name_keeps_the_budget() -> None:
    """An Azure deployment named "gpt-4" runs GPT-4 Turbo (128k tokens), at a negotiated
    rate registered under the deployment's name. A 60k-token prompt costs $0.615: the
    bound is not capped at the bundled gpt-4's 8,192-token window, so a $0.50 budget
    refuses the call unsent instead of letting spend pass it."""
    lib = importlib.import_module(OPENAI_STACK)
    usage = {"prompt_tokens": 60_000, "completion_tokens": 500, "total_tokens": 60_500}
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4-turbo-2024-04-09",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    sent: list[Any] = []

    def respond(request: Any) -> Any:
        sent.append(request)
        return lib.Response(200, json=answer)

    client = openai.AzureOpenAI(
        api_key="test",
        api_version="2024-10-21",
        azure_endpoint="https://acme.openai.azure.com",
        http_client=lib.Client(transport=burnmap.Transport(lib.MockTransport(respond))),
        max_retries=0,
    )
    burnmap.prices.register("gpt-4", input=10, output=30)
    prompt: list[Any] = [{"role": "user", "content": "lorem ipsum " * 30_000}]
    with burnmap.run("azure", budget="0.50") as r:
        with pytest.raises(burnmap.BudgetExceededError):
            client.chat.completions.create(model="gpt-4", max_tokens=1000, messages=prompt)
    assert sent == [] and r.spent == 0
    with burnmap.run("azure", budget=4) as r:
        client.chat.completions.create(model="gpt-4", max_tokens=1000, messages=prompt)
    assert r.spent == Decimal("0.615") <= r.report.calls[0].reserved


def test_chat_search_models_are_charged_their_fee_per_call() -> None:
    """A Chat Completions search model bills a search on every call, beside its tokens, and
    its usage does not say so: burnmap reserves and charges OpenAI's fee per call."""
    reply = json.loads(wire("openai/chat.response.json"))
    reply["model"] = "gpt-4o-search-preview-2025-03-11"
    mocked, sent = openai_answering(reply)
    tokens = burnmap.prices.lookup("gpt-4o-search-preview").cost(
        Usage(input_tokens=270, cache_read_tokens=2048, output_tokens=202)
    )
    with burnmap.run("search", budget=1) as r:
        mocked.chat.completions.create(
            model="gpt-4o-search-preview",
            web_search_options={"search_context_size": "high"},
            messages=HELLO,
        )
        mocked.chat.completions.create(model="gpt-4o-search-preview", messages=HELLO)
        with pytest.raises(burnmap.UnknownModelError, match="web_search=") as info:
            mocked.chat.completions.create(model="gpt-9-search-preview", messages=HELLO)
        assert isinstance(info.value, openai.OpenAIError)  # not wrapped, not retried
    assert len(sent) == 2
    high, medium = r.report.calls
    assert high.cost == tokens + Decimal("0.05") and medium.cost == tokens + Decimal("0.035")
    assert high.usage.web_searches == medium.usage.web_searches == 1
    assert high.reserved >= high.cost


def test_responses_hosted_tools_are_reserved_and_charged_per_use() -> None:
    """Images from the image_generation tool, file searches and code interpreter containers
    are billed outside a response's usage: an image tool with no declared fee is refused
    unsent; declared, each use is reserved up to max_tool_calls and charged as listed."""
    reply = json.loads(wire("openai/responses.response.json"))
    reply["model"] = "gpt-5"
    reply["output"] = [
        {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "aGk="},
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]},
        *reply["output"],
    ]
    mocked, sent = openai_answering(reply)
    tools: list[Any] = [
        {"type": "image_generation", "quality": "high"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]
    with burnmap.run("tools", budget=5) as r:
        with pytest.raises(burnmap.UnknownModelError, match="register_tool") as info:
            mocked.responses.create(model="gpt-5", input="draw", tools=tools)
        assert isinstance(info.value, openai.OpenAIError)  # not wrapped, not retried
        assert sent == []
        burnmap.prices.register_tool("image_generation", per_use="0.25")
        mocked.responses.create(model="gpt-5", input="draw", tools=tools, max_tool_calls=4)
    call = r.report.calls[0]
    usage = call.usage
    assert (usage.images_generated, usage.file_searches, usage.containers) == (1, 1, 1)
    tokens = burnmap.prices.lookup("gpt-5", "openai").cost(
        Usage(
            **{
                k: getattr(usage, k)
                for k in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")
            }
        )
    )
    assert call.cost == tokens + Decimal("0.25") + Decimal("0.0025") + Decimal("0.03")
    # Reserved: four calls of the dearest tools and the container, beside the tokens.
    assert call.reserved >= 4 * (Decimal("0.25") + Decimal("0.0025")) + Decimal("0.03")
    assert r.report.cost_by_call[0]["images_generated"] == 1


# -- async and concurrency -------------------------------------------------------------------


async def test_async_clients_under_gather_never_overspend(standin: StandIn) -> None:
    aclaude = anthropic.AsyncAnthropic(
        api_key="test",
        base_url=standin.anthropic_base_url,
        http_client=burnmap.async_client(ANTHROPIC_STACK),  # type: ignore[call-overload]
    )
    agpt = openai.AsyncOpenAI(
        api_key="test",
        base_url=standin.openai_base_url,
        http_client=burnmap.async_client(OPENAI_STACK),  # type: ignore[call-overload]
    )
    budget = Decimal("0.05")
    async with burnmap.run("gather", budget=budget, repeat_limit=None) as r:
        calls: list[Any] = []
        for i in range(20):
            if i % 2:
                calls.append(aclaude.messages.create(model=CLAUDE, max_tokens=1024, messages=HELLO))
            else:
                calls.append(gpt_stream(agpt))
        results = await asyncio.gather(*calls, return_exceptions=True)
    await aclaude.close()
    await agpt.close()
    errors = [x for x in results if isinstance(x, BaseException)]
    assert all(isinstance(e, burnmap.BudgetExceededError) for e in errors), errors
    assert r.spent <= budget
    assert r.spent == billed(standin.calls)
    assert r.call_count == 20 - len(errors) == len(standin.calls)


async def gpt_stream(client: openai.AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(
        model=GPT, messages=HELLO, stream=True, max_tokens=1024
    )
    return "".join([c.choices[0].delta.content or "" async for c in stream])


def test_threads_share_one_run(claude: anthropic.Anthropic, standin: StandIn) -> None:
    budget = Decimal("0.08")
    refused: list[BaseException] = []
    with burnmap.run("threads", budget=budget, call_rate_limit=None, repeat_limit=None) as r:

        def work() -> None:
            with r.attach():
                for _ in range(4):
                    try:
                        claude.messages.create(model=CLAUDE, max_tokens=1024, messages=HELLO)
                    except burnmap.BudgetExceededError as exc:
                        refused.append(exc)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert refused
    assert r.spent <= budget
    assert r.spent == billed(standin.calls)
    assert r.call_count + len(refused) == 64
