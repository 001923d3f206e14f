"""The pre-call bound: never below what the call can cost."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burnmap._core.bound import (
    BASE_OVERHEAD_TOKENS,
    IMAGE_TOKENS,
    RequestNotUnderstoodError,
    plan_call,
)
from burnmap._core.charge import charge
from burnmap._core.endpoint import Endpoint, identify
from burnmap._core.meter import JSONMeter
from burnmap._core.pricing import PriceBook
from burnmap._core.usage import Usage
from burnmap.errors import UnknownModelError, UnmeteredEndpointError
from tests.conftest import wire

ANTHROPIC = Endpoint("anthropic", "messages", "anthropic")
CHAT = Endpoint("openai", "chat", "openai")
RESPONSES = Endpoint("openai", "responses", "openai")
BOOK = PriceBook()


def body(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode()


@settings(max_examples=200)
@given(st.lists(st.text(), min_size=1, max_size=5), st.booleans())
def test_input_bound_covers_every_utf8_byte(texts: list[str], ensure_ascii: bool) -> None:
    # Byte-level BPE never yields more tokens than UTF-8 bytes: the bound must cover them.
    messages = [{"role": "user", "content": t} for t in texts]
    raw = json.dumps({"model": "gpt-4o", "messages": messages}, ensure_ascii=ensure_ascii).encode()
    plan = plan_call(CHAT, raw, BOOK)
    assert plan.input_tokens >= sum(len(t.encode()) for t in texts)


usage_parts = st.integers(min_value=0, max_value=10**6)


@settings(max_examples=300)
@given(
    st.sampled_from(
        [
            (ANTHROPIC, "claude-sonnet-4-5"),
            (ANTHROPIC, "claude-sonnet-4-6"),
            (ANTHROPIC, "claude-opus-4-6"),
            (CHAT, "gpt-4o-mini"),
            (RESPONSES, "o3"),
        ]
    ),
    st.integers(min_value=1, max_value=400_000),
    st.integers(min_value=1, max_value=64_000),
    st.tuples(usage_parts, usage_parts, usage_parts, usage_parts),
    st.booleans(),
)
def test_bound_cost_covers_any_usage_within_the_bound(
    target: tuple[Endpoint, str],
    prompt_bytes: int,
    max_tokens: int,
    split: tuple[int, int, int, int],
    cache_control: bool,
) -> None:
    endpoint, model = target
    content: dict[str, object] = {"type": "text", "text": "a" * prompt_bytes}
    if cache_control:
        content["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    key = "max_output_tokens" if endpoint.kind == "responses" else "max_tokens"
    obj = {
        "model": model,
        key: max_tokens,
        ("input" if endpoint.kind == "responses" else "messages"): [
            {"role": "user", "content": [content]}
        ],
    }
    plan = plan_call(endpoint, body(obj), BOOK)
    sheet = plan.sheet
    # Split the bounded input any way between fresh, cache reads and cache writes.
    weights = [w + 1 for w in split]
    total = sum(weights)
    parts = [plan.input_tokens * w // total for w in weights]
    usage = Usage(
        input_tokens=parts[0] + (plan.input_tokens - sum(parts)),
        cache_read_tokens=parts[1],
        cache_write_tokens=parts[2] if endpoint.shape == "anthropic" and cache_control else 0,
        cache_write_1h_tokens=parts[3] if endpoint.shape == "anthropic" and cache_control else 0,
        output_tokens=plan.output_tokens,
    )
    if not (endpoint.shape == "anthropic" and cache_control):
        usage = Usage(
            input_tokens=usage.input_tokens + parts[2] + parts[3],
            cache_read_tokens=usage.cache_read_tokens,
            output_tokens=usage.output_tokens,
        )
    assert usage.total_input_tokens == plan.input_tokens
    assert sheet.cost(usage) <= plan.cost


def test_bound_example_numbers() -> None:
    obj = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    raw = body(obj)
    plan = plan_call(ANTHROPIC, raw, BOOK)
    assert plan.output_tokens == 1024
    assert plan.input_tokens == -(-len(raw) * 11 // 10) + 64
    assert plan.cost == (plan.input_tokens * 3 + 1024 * 15) / Decimal(1_000_000)


def test_images_count_at_their_cap_not_their_bytes() -> None:
    image = base64.b64encode(b"\x89PNG" + b"\0" * 600_000).decode()
    obj = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": image},
                    },
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    }
    plan = plan_call(ANTHROPIC, body(obj), BOOK)
    assert IMAGE_TOKENS < plan.input_tokens < IMAGE_TOKENS + 1_000
    openai_obj = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                ],
            }
        ],
    }
    assert plan_call(CHAT, body(openai_obj), BOOK).input_tokens < IMAGE_TOKENS + 1_000


def test_pdf_pages_are_counted() -> None:
    pdf = (
        b"%PDF-1.4\n"
        + b"1 0 obj << /Type /Page >> endobj\n" * 3
        + b"<< /Type /Pages >>"
        + (b"x" * 10_000)
    )
    obj = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": base64.b64encode(pdf).decode(),
                        },
                    }
                ],
            }
        ],
    }
    plan = plan_call(ANTHROPIC, body(obj), BOOK)
    assert 3 * 8_000 <= plan.input_tokens < 3 * 8_000 + 1_000


def test_input_bound_is_capped_by_the_context_window() -> None:
    obj = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * 1_000_000}],
    }
    assert plan_call(CHAT, body(obj), BOOK).input_tokens == 128_000


def test_server_tools_bound_input_at_the_window_and_searches() -> None:
    obj = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        "messages": [{"role": "user", "content": "news?"}],
    }
    plan = plan_call(ANTHROPIC, body(obj), BOOK)
    assert plan.input_tokens == 1_000_000
    assert plan.cost == (Decimal(1_000_000) * 3 + 100 * 15) / 1_000_000 + Decimal("0.03")


def test_output_defaults_to_model_maximum_and_multiplies_by_n() -> None:
    obj = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "n": 3}
    assert plan_call(CHAT, body(obj), BOOK).output_tokens == 3 * 16_384
    obj["max_completion_tokens"] = 50
    assert plan_call(CHAT, body(obj), BOOK).output_tokens == 150


def test_context_1m_beta_raises_the_window() -> None:
    obj = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * 600_000}],
    }
    plain = plan_call(ANTHROPIC, body(obj), BOOK)
    beta = plan_call(ANTHROPIC, body(obj), BOOK, anthropic_beta="context-1m-2025-08-07")
    assert plain.input_tokens == 200_000
    assert beta.input_tokens > 600_000
    assert beta.cost > plain.cost  # and priced at the long-context tier


def test_include_usage_is_added_only_when_missing() -> None:
    request = json.loads(wire("openai/chat_stream_usage.request.json"))
    request.pop("stream_options", None)
    plan = plan_call(CHAT, body(request), BOOK)
    assert plan.inject_usage
    assert plan.body is not None
    assert json.loads(plan.body)["stream_options"] == {"include_usage": True}
    request["stream_options"] = {"include_usage": True}
    plan = plan_call(CHAT, body(request), BOOK)
    assert not plan.inject_usage
    assert plan.body is None


def test_fixture_requests_plan() -> None:
    for name, endpoint in [
        ("anthropic/messages.request.json", ANTHROPIC),
        ("anthropic/messages_stream_tools.request.json", ANTHROPIC),
        ("openai/chat.request.json", CHAT),
        ("openai/responses.request.json", RESPONSES),
        ("openai/embeddings.request.json", Endpoint("openai", "embeddings", "openai")),
        ("openai/completions.request.json", Endpoint("openai", "completions", "openai")),
    ]:
        plan = plan_call(endpoint, wire(name), BOOK)
        assert plan.cost > 0, name


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"messages": []}', "names no model"),
    ],
)
def test_unreadable_requests_are_refused_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(RequestNotUnderstoodError, match=message):
        plan_call(CHAT, raw, BOOK)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(UnknownModelError):
        plan_call(CHAT, body({"model": "my-own-llm", "messages": []}), BOOK)


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("POST", "api.anthropic.com", "/v1/messages", ("anthropic", "messages", "anthropic")),
        ("POST", "127.0.0.1", "/v1/messages", ("anthropic", "messages", None)),
        ("POST", "api.openai.com", "/v1/chat/completions", ("openai", "chat", "openai")),
        ("POST", "gw.corp", "/llm/v1/responses", ("openai", "responses", None)),
        ("POST", "openrouter.ai", "/api/v1/chat/completions", ("openai", "chat", "openrouter")),
        ("POST", "api.deepseek.com", "/chat/completions", ("openai", "chat", "deepseek")),
        ("POST", "api.openai.com", "/v1/embeddings", ("openai", "embeddings", "openai")),
        ("POST", "api.openai.com", "/v1/completions", ("openai", "completions", "openai")),
        ("POST", "api.anthropic.com", "/v1/messages/count_tokens", None),
        ("POST", "api.anthropic.com", "/v1/messages/batches/msgbatch_1/cancel", None),
        (
            "POST",
            "us-east5-aiplatform.googleapis.com",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict",
            None,
        ),
        ("GET", "api.openai.com", "/v1/models", None),
        ("POST", "api.openai.com", "/v1/responses/input_tokens", None),
        ("POST", "api.openai.com", "/v1/files", None),
        ("POST", "api.openai.com", "/v1/moderations", None),
        ("POST", "api.openai.com", "/v1/threads/thread_1/runs/run_1/cancel", None),
        # Paid, but with no usage burnmap can price: declared per call, or refused.
        (
            "POST",
            "api.anthropic.com",
            "/v1/messages/batches",
            ("anthropic", "unmetered", "anthropic"),
        ),
        ("POST", "api.openai.com", "/v1/batches", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/images/generations", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/images/edits", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/audio/speech", ("openai", "unmetered", "openai")),
        ("POST", "gw.corp", "/v1/audio/transcriptions", ("openai", "unmetered", None)),
        ("POST", "api.openai.com", "/v1/fine_tuning/jobs", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/threads/runs", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/threads/t_1/runs", ("openai", "unmetered", "openai")),
        (
            "POST",
            "api.openai.com",
            "/v1/threads/t_1/runs/run_1/submit_tool_outputs",
            ("openai", "unmetered", "openai"),
        ),
        ("POST", "api.openai.com", "/v1/videos", ("openai", "unmetered", "openai")),
        (
            "POST",
            "api.openai.com",
            "/v1/realtime/client_secrets",
            ("openai", "unmetered", "openai"),
        ),
        ("GET", "api.openai.com", "/v1/images/generations", None),
        ("POST", "api.openai.com", "/v1/responses/compact", ("openai", "responses", "openai")),
        ("POST", "api.openai.com", "/v1/videos/edits", ("openai", "unmetered", "openai")),
        ("POST", "api.openai.com", "/v1/realtime/calls", ("openai", "unmetered", "openai")),
        (
            "POST",
            "api.openai.com",
            "/v1/fine_tuning/alpha/graders/run",
            ("openai", "unmetered", "openai"),
        ),
        (
            "POST",
            "api.openai.com",
            "/v1/agents/sessions/s_1/events",
            ("openai", "unmetered", "openai"),
        ),
        (
            "POST",
            "api.anthropic.com",
            "/v1/sessions/sesn_1/events",
            ("anthropic", "unmetered", "anthropic"),
        ),
        ("POST", "api.anthropic.com", "/v1/dreams", ("anthropic", "unmetered", "anthropic")),
        # …but another service's sessions and events are its own business.
        ("POST", "analytics.example", "/v1/sessions/s_1/events", None),
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream",
            ("anthropic", "messages", "aws"),
        ),
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse",
            ("openai", "unmetered", "aws"),
        ),
        # Inference-profile ARNs arrive with their slashes decoded.
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile"
            "/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
            ("anthropic", "messages", "aws"),
        ),
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile"
            "/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream",
            ("openai", "unmetered", "aws"),
        ),
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile"
            "/a1b2c3/invoke-with-response-stream",
            ("anthropic", "messages", "aws"),
        ),
        (
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/meta.llama3-70b-instruct-v1:0/invoke",
            ("openai", "unmetered", "aws"),
        ),
    ],
)
def test_identify(
    method: str, host: str, path: str, expected: tuple[str, str, str | None] | None
) -> None:
    endpoint = identify(method, host, path)
    got = None if endpoint is None else (endpoint.shape, endpoint.kind, endpoint.provider)
    assert got == expected


def test_claude_on_bedrock_behind_a_proxy_prefix_is_metered() -> None:
    endpoint = identify(
        "POST", "litellm.corp", "/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
    )
    assert endpoint is not None
    assert (endpoint.kind, endpoint.model_in_url) == (
        "messages",
        "anthropic.claude-3-haiku-20240307-v1:0",
    )


def test_a_bedrock_inference_profile_is_priced_as_its_model() -> None:
    endpoint = identify(
        "POST",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile"
        "/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
    )
    assert endpoint is not None
    plan = plan_call(endpoint, body({"max_tokens": 64, "messages": []}), BOOK)
    assert plan.model == "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert plan.sheet.input.base > 0
    opaque = identify(
        "POST",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3/invoke",
    )
    assert opaque is not None
    with pytest.raises(UnknownModelError, match="'a1b2c3'"):  # register its price first
        plan_call(opaque, body({"max_tokens": 64, "messages": []}), BOOK)


def test_azure_deployment_in_url() -> None:
    endpoint = identify(
        "POST", "acme.openai.azure.com", "/openai/deployments/prod-4o/chat/completions"
    )
    assert endpoint is not None
    plan = plan_call(
        endpoint, body({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}), BOOK
    )
    assert plan.model == "gpt-4o"
    with pytest.raises(UnknownModelError, match="prod-4o"):
        plan_call(endpoint, body({"messages": []}), BOOK)


@pytest.mark.parametrize(
    ("endpoint", "obj"),
    [
        (
            CHAT,
            {
                "model": "gpt-4o",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}
                        ]
                        * 20,
                    }
                ],
            },
        ),
        (
            ANTHROPIC,
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://e.org/a.png"},
                            }
                        ]
                        * 20,
                    }
                ],
            },
        ),
        (
            RESPONSES,
            {
                "model": "o3",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "https://example.org/a.png"}
                        ]
                        * 20,
                    }
                ],
            },
        ),
    ],
)
def test_images_by_url_count_at_their_cap(endpoint: Endpoint, obj: dict[str, object]) -> None:
    assert plan_call(endpoint, body(obj), BOOK).input_tokens >= 20 * IMAGE_TOKENS


@pytest.mark.parametrize(
    ("endpoint", "obj"),
    [
        (
            ANTHROPIC,
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "url", "url": "https://e.org/a.pdf"},
                            }
                        ],
                    }
                ],
            },
        ),
        (
            ANTHROPIC,
            {
                "model": "claude-sonnet-4-6",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
                        ],
                    }
                ],
            },
        ),
        (
            RESPONSES,
            {
                "model": "o3",
                "input": [
                    {"role": "user", "content": [{"type": "input_file", "file_id": "file-abc"}]}
                ],
            },
        ),
        (
            CHAT,
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}
                ],
            },
        ),
        (RESPONSES, {"model": "o3", "input": "and then?", "previous_response_id": "resp_1"}),
        (RESPONSES, {"model": "o3", "input": "and then?", "conversation": "conv_1"}),
        (RESPONSES, {"model": "o3", "prompt": {"id": "pmpt_1", "version": "2"}}),
        (
            RESPONSES,
            {"model": "o3", "input": [{"type": "item_reference", "id": "msg_1"}, "go on"]},
        ),
        (  # Anthropic's server-held thread: only the new turn is sent
            ANTHROPIC,
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 10,
                "thread": {"type": "continue", "previous_message_id": "msg_1"},
                "messages": [{"role": "user", "content": "fix the test"}],
            },
        ),
        (  # the MCP connector: remote tool results, declared outside "tools"
            ANTHROPIC,
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 10,
                "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
                "messages": [{"role": "user", "content": "look it up"}],
            },
        ),
        (  # Azure "On Your Data": retrieved chunks are billed as prompt tokens
            CHAT,
            {
                "model": "gpt-4o",
                "data_sources": [{"type": "azure_search", "parameters": {"index_name": "i"}}],
                "messages": [{"role": "user", "content": "what does the policy say?"}],
            },
        ),
    ],
)
def test_content_by_reference_bounds_input_at_the_window(
    endpoint: Endpoint, obj: dict[str, object]
) -> None:
    plan = plan_call(endpoint, body(obj), BOOK)
    assert plan.input_tokens == plan.sheet.context_window


def test_a_legacy_completion_prompt_is_text_not_a_stored_prompt() -> None:
    completions = Endpoint("openai", "completions", "openai")
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this", "max_tokens": 16}
    plan = plan_call(completions, body(request), BOOK)
    assert plan.input_tokens == len(body(request)) + BASE_OVERHEAD_TOKENS
    assert plan.input_tokens < 200 < plan.sheet.context_window  # was bounded at the window
    # A batch of prompts generates for each one, n times.
    for prompt, outputs in (
        (["a", "b", "c"], 3 * 2 * 16),
        ([[1, 2], [3]], 2 * 2 * 16),
        ([1, 2, 3], 1 * 2 * 16),
    ):
        batch = plan_call(completions, body({**request, "prompt": prompt, "n": 2}), BOOK)
        assert batch.output_tokens == outputs


def test_unmetered_endpoints_are_refused_until_declared_then_charged_per_call() -> None:
    images = identify("POST", "api.openai.com", "/v1/images/generations")
    assert images is not None
    request = body({"model": "gpt-image-1", "prompt": "a cat"})
    book = PriceBook()
    with pytest.raises(UnmeteredEndpointError, match="register_endpoint") as info:
        plan_call(images, request, book)
    assert (info.value.path, info.value.what) == ("/v1/images/generations", "image generation")
    book.register_endpoint("images/generations/", per_call="0.19")
    plan = plan_call(images, request, book)
    assert (plan.model, plan.cost, plan.stream, plan.body) == (
        "gpt-image-1",
        Decimal("0.19"),
        False,
        None,
    )
    # A multipart body (an audio upload) is not JSON: the path names the call.
    audio = identify("POST", "api.openai.com", "/v1/audio/transcriptions")
    assert audio is not None
    book.register_endpoint("/v1/audio", per_call=0)  # too short to match: suffixes only
    with pytest.raises(UnmeteredEndpointError):
        plan_call(audio, b"--boundary\r\nContent-Disposition: form-data", book)
    book.register_endpoint("/audio/transcriptions", per_call=0)
    plan = plan_call(audio, b"--boundary\r\nContent-Disposition: form-data", book)
    assert (plan.model, plan.cost) == ("/audio/transcriptions", 0)
    assert book.unregister_endpoint("/audio/transcriptions")
    with pytest.raises(ValueError, match="endpoint path"):
        book.register_endpoint("/", per_call=1)


def test_an_endpoint_with_ids_is_declared_by_its_template() -> None:
    book = PriceBook()
    run_a = identify("POST", "api.openai.com", "/v1/threads/thread_A/runs")
    run_b = identify("POST", "api.openai.com", "/v1/threads/thread_B/runs")
    assert run_a is not None and run_b is not None
    with pytest.raises(UnmeteredEndpointError) as info:
        plan_call(run_a, body({"assistant_id": "asst_1"}), book)
    assert info.value.template == "/threads/{id}/runs"
    assert "register_endpoint('/threads/{id}/runs', per_call=0.25)" in str(info.value)
    book.register_endpoint(info.value.template, per_call="0.5")
    assert plan_call(run_b, body({"assistant_id": "asst_1"}), book).cost == Decimal("0.5")
    evals = identify("POST", "api.openai.com", "/v1/evals/eval_1/runs")
    assert evals is not None
    with pytest.raises(UnmeteredEndpointError):  # another template: not declared
        plan_call(evals, body({}), book)


def test_the_template_a_refusal_names_is_the_one_that_works() -> None:
    arn = "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0"
    paths = [
        ("bedrock-runtime.us-east-1.amazonaws.com", f"/model/{arn}/invoke"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "/model/meta.llama3-8b-instruct-v1:0/invoke"),
        ("api.openai.com", "/v1/threads/thread_A/runs/run_1/submit_tool_outputs"),
        ("api.openai.com", "/v1/videos/video_1/remix"),
        ("generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro:generateContent"),
    ]
    for host, path in paths:
        endpoint = identify("POST", host, path)
        assert endpoint is not None
        book = PriceBook()
        with pytest.raises(UnmeteredEndpointError) as info:
            plan_call(endpoint, body({}), book)
        book.register_endpoint(info.value.template, per_call="0.3")
        assert plan_call(endpoint, body({}), book).cost == Decimal("0.3"), path


def test_the_most_specific_declaration_wins_whatever_the_order() -> None:
    run = identify("POST", "api.openai.com", "/v1/threads/thread_VIP/runs")
    assert run is not None
    keys = ("/threads/{id}/runs", "/threads/thread_VIP/runs")
    for order in (keys, keys[::-1]):
        book = PriceBook()
        for key in order:
            book.register_endpoint(key, per_call=5 if "VIP" in key else 1)
        assert plan_call(run, body({}), book).cost == 5


@pytest.mark.parametrize(
    ("host", "path", "unmetered"),
    [
        ("www.googleapis.com", "/upload/youtube/v3/videos", False),
        ("api.vimeo.com", "/me/videos", False),
        ("api.example.com", "/api/batches", False),
        ("example.com", "/api/model/foo/invoke", False),
        ("ws.api.video", "/videos", False),  # api.video's "create a video object"
        ("api.editframe.com", "/v2/videos", False),
        ("router.huggingface.co", "/together/v1/images/generations", True),
        ("gw.corp", "/api/v1/audio/speech", True),
        ("gw.corp", "/v2/threads/thread_1/runs", True),
        ("litellm.corp", "/bedrock/model/my-alias/invoke", True),
        ("gw.corp", "/v1/images/generations", True),  # an OpenAI-compatible gateway
        ("127.0.0.1", "/openai/deployments/dalle/images/generations", True),
        ("apim.contoso.com", "/aoai/openai/deployments/dalle3/images/generations", True),
        ("generativelanguage.googleapis.com", "/v1beta/openai/images/generations", True),
        ("localhost", "/images/generations", True),  # a proxy serving the API at its root
        ("api.openai.com", "/videos", True),  # a known provider: whatever the path
        (
            "us-east5-aiplatform.googleapis.com",
            "/v1/projects/p/locations/l/publishers/mistralai/models/mistral-large@001:rawPredict",
            True,
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            True,
        ),
    ],
)
def test_only_llm_api_shaped_paths_are_taken_for_paid_endpoints(
    host: str, path: str, unmetered: bool
) -> None:
    endpoint = identify("POST", host, path)
    assert (endpoint is not None and endpoint.kind == "unmetered") is unmetered


def test_openai_assistants_thread_messages_are_free() -> None:
    assert identify("POST", "api.openai.com", "/v1/threads/thread_1/messages") is None


def test_reasoning_items_passed_back_by_id_count_at_their_calls_maximum_output() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    obj = {"model": "o3", "input": [reasoning, reasoning, {"role": "user", "content": "go"}]}
    plan = plan_call(RESPONSES, body(obj), BOOK)
    assert plan.input_tokens >= 2 * 100_000  # o3's maximum output, each
    carried = {**reasoning, "encrypted_content": "gAAAA" + "x" * 100}
    obj["input"] = [carried, {"role": "user", "content": "go"}]
    assert plan_call(RESPONSES, body(obj), BOOK).input_tokens < 1_000


def _image_url(data: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": data}}


def test_every_image_counts_at_its_cap_however_small_and_gpt_4o_minis_cap_is_its_own() -> None:
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    content = [{"type": "text", "text": "colours?"}] + [_image_url(gif)] * 3
    obj = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    assert plan_call(CHAT, body(obj), BOOK).input_tokens >= 3 * IMAGE_TOKENS
    # gpt-4o-mini bills 2,833 + 5,667 a tile for an image, past its context window.
    obj["model"] = "gpt-4o-mini"
    content[1:] = [_image_url("https://example.org/cat.png")] * 10
    assert plan_call(CHAT, body(obj), BOOK).input_tokens >= 10 * (2_833 + 8 * 5_667)
    obj["model"] = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    assert plan_call(CHAT, body(obj), BOOK).input_tokens >= 10 * (2_833 + 8 * 5_667)
    claude_small = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/gif", "data": gif.split(",")[1]},
    }
    claude = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [claude_small]}],
    }
    assert plan_call(ANTHROPIC, body(claude), BOOK).input_tokens >= IMAGE_TOKENS


def _pdf_with_compressed_pages(pages: int) -> bytes:
    import zlib

    objects = b" ".join(b"<< /Type /Page /Parent 2 0 R >>" for _ in range(pages))
    stream = zlib.compress(objects)
    return (
        b"%PDF-1.5\n1 0 obj << /Type /ObjStm /N "
        + str(pages).encode()
        + b" /Filter /FlateDecode >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\n%%EOF"
    )


def test_pdf_pages_in_compressed_object_streams_are_counted_or_bound_at_the_window() -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": ""},
    }
    obj = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [document]}],
    }
    document["source"]["data"] = base64.b64encode(_pdf_with_compressed_pages(12)).decode()  # type: ignore[index]
    assert plan_call(ANTHROPIC, body(obj), BOOK).input_tokens >= 12 * 8_000
    unreadable = b"%PDF-1.5\n" + b"\x00garbage" * 200
    document["source"]["data"] = base64.b64encode(unreadable).decode()  # type: ignore[index]
    plan = plan_call(ANTHROPIC, body(obj), BOOK)
    assert plan.input_tokens == plan.sheet.context_window


def test_max_tokens_zero_prewarms_the_cache_and_generates_nothing() -> None:
    obj = {
        "model": "claude-opus-4-6",
        "max_tokens": 0,
        "messages": [{"role": "user", "content": "a long prompt to cache"}],
    }
    assert plan_call(ANTHROPIC, body(obj), BOOK).output_tokens == 0


def test_bedrock_betas_in_the_body_raise_the_window() -> None:
    endpoint = identify(
        "POST",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
    )
    assert endpoint is not None
    obj = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["context-1m-2025-08-07"],
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * 1_500_000}],
    }
    assert plan_call(endpoint, body(obj), BOOK).input_tokens == 1_000_000


def test_service_tier_fast_is_bounded_at_priority_rates() -> None:
    obj = {"model": "gpt-5", "input": "hi", "max_output_tokens": 1000}
    standard = plan_call(RESPONSES, body(obj), BOOK).cost
    assert plan_call(RESPONSES, body({**obj, "service_tier": "fast"}), BOOK).cost > standard


@pytest.mark.parametrize("tier", ["auto", "default", "scale", "flex", "priority", "fast"])
def test_a_known_service_tier_is_bounded_as_before(tier: str) -> None:
    obj = {"model": "gpt-5.6-sol", "input": "x", "max_output_tokens": 8000}
    assert plan_call(RESPONSES, body({**obj, "service_tier": tier}), BOOK).cost > 0


@pytest.mark.parametrize("tier", ["ultrafast", "performance", 3, ["priority"]])
def test_a_service_tier_with_no_known_price_is_refused_unless_registered(tier: object) -> None:
    """OpenAI's ultrafast costs at least what priority does, and genai-prices has no price
    for it: bounding it at standard rates would reserve half of what it bills."""
    obj = {"model": "gpt-5.6-sol", "input": "x", "service_tier": tier, "max_output_tokens": 8000}
    with pytest.raises(
        UnknownModelError, match=r"(?s)service_tier .*prices\.register\('gpt-5.6-sol'"
    ) as info:
        plan_call(RESPONSES, body(obj), BOOK)
    assert info.value.tier == str(tier)
    book = PriceBook()
    book.register("gpt-5.6-sol", input=16, output=80)
    assert plan_call(RESPONSES, body(obj), book).sheet.input.base == 16


def test_a_reported_tier_with_no_known_price_is_charged_at_the_plans_tier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    obj = {"model": "gpt-5.6-sol", "input": "x", "service_tier": "priority"}
    plan = plan_call(RESPONSES, body({**obj, "max_output_tokens": 8000}), BOOK)
    answer = {
        "id": "r",
        "object": "response",
        "model": "gpt-5.6-sol",
        "service_tier": "ultrafast",
        "output": [],
        "usage": {"input_tokens": 10_000, "output_tokens": 5_000},
    }
    with caplog.at_level("WARNING", logger="burnmap.charge"):
        result = charge(plan, json_result("openai", json.dumps(answer).encode()), BOOK)
    # Priority: 10,000 x $8 + 5,000 x $40, not standard's $4/$20.
    assert result.cost == Decimal("0.28")
    assert "'ultrafast'" in caplog.text
    answer["service_tier"] = "default"
    standard = charge(plan, json_result("openai", json.dumps(answer).encode()), BOOK)
    assert standard.cost == Decimal("0.14")


def test_dotted_and_newer_claude_names_get_their_maximum_output() -> None:
    from burnmap._core.pricing import max_output_for

    assert max_output_for("anthropic/claude-opus-4.6") == 128_000
    assert max_output_for("claude-opus-4-7") == 128_000  # unlisted: the largest, not Opus 4's
    assert max_output_for("claude-opus-4-1-20250805") == 32_000


def test_deepseeks_context_window_is_its_documented_128k() -> None:
    assert BOOK.lookup("deepseek-chat", "deepseek").context_window == 128_000


def test_fast_mode_and_a_pinned_region_are_bounded_and_charged_at_their_rates() -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    ask = {"model": "claude-opus-4-6", "max_tokens": 1000, "messages": []}
    standard = plan_call(ANTHROPIC, body(ask), BOOK)
    fast = plan_call(ANTHROPIC, body({**ask, "speed": "fast"}), BOOK)
    pinned = plan_call(ANTHROPIC, body({**ask, "inference_geo": "us"}), BOOK)
    assert standard is not None and fast is not None and pinned is not None
    rates = standard.sheet.input.base, standard.sheet.output.base
    assert (fast.sheet.input.base, fast.sheet.output.base) == (rates[0] * 6, rates[1] * 6)
    assert pinned.sheet.output.base == rates[1] * Decimal("1.1")
    assert fast.cost > 5 * standard.cost  # Opus 4.6 fast mode: $30/$150 per million
    answer = json.dumps(
        {"model": "claude-opus-4-6-20260205", "usage": {"input_tokens": 10, "output_tokens": 10}}
    ).encode()
    assert charge(fast, json_result("anthropic", answer), BOOK).cost == (
        Decimal(10 * 30 + 10 * 150) / 10**6
    )
    # A model genai-prices lists fast-mode rates for is charged those.
    newer = plan_call(ANTHROPIC, body({**ask, "model": "claude-opus-5", "speed": "fast"}), BOOK)
    base = plan_call(ANTHROPIC, body({**ask, "model": "claude-opus-5"}), BOOK)
    assert newer is not None and base is not None
    assert newer.sheet.output.base == base.sheet.output.base * 2


def test_compaction_and_advisor_iterations_are_charged_and_bounded() -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-6"}
    ask = {
        "model": "claude-haiku-4-5",
        "max_tokens": 1000,
        "tools": [{**advisor, "max_uses": 2, "max_tokens": 500}],
        "messages": [{"role": "user", "content": "plan the migration"}],
    }
    plan = plan_call(ANTHROPIC, body(ask), BOOK)
    assert plan is not None
    opus = BOOK.lookup("claude-opus-4-6", "anthropic")
    window = opus.context_window or 0
    in_rate, out_rate = opus.bound_rates(window, caching=True)
    assert plan.cost >= 2 * (window * in_rate + 500 * out_rate) / 10**6
    iterations = [
        {"type": "message", "input_tokens": 100, "output_tokens": 50},
        {
            "type": "advisor_message",
            "model": "claude-opus-4-6",
            "input_tokens": 1000,
            "output_tokens": 200,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        {
            "type": "compaction",
            "input_tokens": 5000,
            "output_tokens": 300,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    ]
    answer = {
        "model": "claude-haiku-4-5",
        "usage": {"input_tokens": 100, "output_tokens": 50, "iterations": iterations},
    }
    result = charge(plan, json_result("anthropic", json.dumps(answer).encode()), BOOK)
    haiku = BOOK.lookup("claude-haiku-4-5", "anthropic")
    expected = haiku.cost(Usage(input_tokens=5_100, output_tokens=350)) + opus.cost(
        Usage(input_tokens=1_000, output_tokens=200)
    )
    assert result.cost == expected and not result.exceeds_bound
    del iterations[1]["model"]  # an advisor step naming no model: the request's advisor
    unnamed = charge(plan, json_result("anthropic", json.dumps(answer).encode()), BOOK)
    assert unnamed.cost == expected


def test_server_side_fallbacks_bound_every_attempt() -> None:
    ask = {"model": "claude-sonnet-4-6", "max_tokens": 1000, "messages": []}
    alone = plan_call(ANTHROPIC, body(ask), BOOK)
    chained = plan_call(
        ANTHROPIC,
        body({**ask, "fallbacks": [{"model": "claude-opus-4-6", "max_tokens": 16_000}]}),
        BOOK,
    )
    assert alone is not None and chained is not None
    opus = BOOK.lookup("claude-opus-4-6", "anthropic")
    assert chained.cost - alone.cost >= 16_000 * opus.output.base / 10**6


def test_openrouter_fallback_models_and_web_plugin_are_bounded() -> None:
    router = identify("POST", "openrouter.ai", "/api/v1/chat/completions")
    assert router is not None
    ask = {"model": "openai/gpt-4o-mini", "max_tokens": 4000, "messages": []}
    alone = plan_call(router, body(ask), BOOK)
    routed = plan_call(router, body({**ask, "models": [ask["model"], "openai/gpt-4o"]}), BOOK)
    searching = plan_call(
        router, body({**ask, "plugins": [{"id": "web", "max_results": 10}]}), BOOK
    )
    assert alone is not None and routed is not None and searching is not None
    gpt_4o = BOOK.lookup("openai/gpt-4o", "openrouter")
    assert routed.cost >= 4000 * gpt_4o.output.base / 10**6 > alone.cost
    assert searching.cost >= Decimal("0.04") and searching.input_tokens > 100_000


def test_audio_preview_models_are_priced_at_their_audio_rates() -> None:
    sheet = BOOK.lookup("gpt-4o-mini-audio-preview-2024-12-17", "openai")
    audio = Usage(
        input_tokens=100, input_audio_tokens=100, output_tokens=10, output_audio_tokens=10
    )
    assert sheet.cost(audio) == (100 * Decimal(10) + 10 * Decimal(20)) / 10**6


def test_a_stated_cost_object_is_read() -> None:
    from burnmap._core.usage import openai_usage

    stated = {"prompt_tokens": 1, "completion_tokens": 1, "cost": {"total_cost": 0.41}}
    assert openai_usage(stated).cost_reported == "0.41"


def test_pdf_page_counting_reads_page_trees_and_gives_up_past_its_inflation_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zlib

    from burnmap._core import bound

    tree = b"%PDF-1.7\n1 0 obj <</Type /Pages /Count 61 /Kids [2 0 R]>>\nendobj\n"
    assert bound.pdf_pages(tree + b"2 0 obj <</Type /Page>>\nendobj\n") == 61
    objects = zlib.compress(b"<</Type /Page>> " * 3 + b"\0" * 10_000)
    pdf = b"%PDF-1.7\n4 0 obj <</Type /ObjStm /N 3>>\nstream\n" + objects + b"\nendstream"
    assert bound.pdf_pages(pdf) == 3
    monkeypatch.setattr(bound, "_PDF_INFLATE_LIMIT", 1_000)
    monkeypatch.setattr(bound, "_PDF_CACHE", {})
    assert bound.pdf_pages(pdf) == 0  # too much to inflate: the window bounds it


def test_compaction_is_bounded_as_a_step_of_its_own() -> None:
    ask = {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": []}
    plain = plan_call(ANTHROPIC, body(ask), BOOK)
    edits = {"edits": [{"type": "compact_20260112"}]}
    compacting = plan_call(ANTHROPIC, body({**ask, "context_management": edits}), BOOK)
    assert plain is not None and compacting is not None
    sheet = compacting.sheet
    window = sheet.context_window or 0
    assert compacting.cost - plain.cost >= window * sheet.input.base / 10**6


# -- hosted tools the Responses API bills outside usage --------------------------------------

_ASK = {"model": "gpt-5", "input": "draw", "max_output_tokens": 100}


def test_image_generation_is_refused_until_a_fee_per_image_is_declared() -> None:
    book = PriceBook()
    offered = {**_ASK, "tools": [{"type": "image_generation", "model": "gpt-image-2"}]}
    with pytest.raises(UnknownModelError, match="register_tool") as info:
        plan_call(RESPONSES, body(offered), book)
    assert (info.value.tool, info.value.model) == ("image_generation", "gpt-image-2")
    book.register_tool("image_generation", per_use="0.30", model="GPT-Image-2")
    plain = plan_call(RESPONSES, body({**_ASK, "tools": [{"type": "web_fetch_x"}]}), book)
    plan = plan_call(RESPONSES, body(offered), book)
    assert plan is not None and plain is not None and plan.hosted is not None
    assert plan.hosted.image == Decimal("0.30")
    # Twenty images unless max_tool_calls caps the tool calls.
    assert plan.cost - plain.cost == 20 * Decimal("0.30")
    capped = plan_call(RESPONSES, body({**offered, "max_tool_calls": 2}), book)
    assert capped is not None and capped.cost - plain.cost == 2 * Decimal("0.30")
    # Declared for one image model only: another is still refused.
    other = {**_ASK, "tools": [{"type": "image_generation"}]}
    with pytest.raises(UnknownModelError, match="default image model"):
        plan_call(RESPONSES, body(other), book)


def test_containers_and_file_searches_are_bounded_at_openais_fees() -> None:
    def fees(tools: list[dict[str, object]], **more: object) -> object:
        plan = plan_call(RESPONSES, body({**_ASK, "tools": tools, **more}), PriceBook())
        assert plan is not None
        return plan.hosted

    auto = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}
    assert fees([auto]).container == fees([auto]).bound == Decimal("0.12")  # type: ignore[attr-defined]
    # A container passed by id already exists: no container is created.
    assert fees([{"type": "code_interpreter", "container": "cntr_1"}]) is None
    # A hosted shell's own container costs the same; a local shell runs on the caller's.
    hosted = {"type": "shell", "environment": {"type": "container_auto", "memory_limit": "16g"}}
    assert fees([hosted]).container == Decimal("0.48")  # type: ignore[attr-defined]
    assert fees([{"type": "shell", "environment": {"type": "local"}}]) is None
    searches = fees([{"type": "file_search", "vector_store_ids": ["vs_1"]}], max_tool_calls=3)
    assert searches.bound == 3 * Decimal("0.0025")  # type: ignore[attr-defined]
    # A size OpenAI does not list is bounded at the largest.
    odd = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "8g"}}
    assert fees([odd]).container == Decimal("1.92")  # type: ignore[attr-defined]


def test_responses_web_searches_are_bounded_at_max_tool_calls() -> None:
    ask = {**_ASK, "tools": [{"type": "web_search"}]}
    twenty = plan_call(RESPONSES, body(ask), BOOK)
    two = plan_call(RESPONSES, body({**ask, "max_tool_calls": 2}), BOOK)
    fifty = plan_call(RESPONSES, body({**ask, "max_tool_calls": 50}), BOOK)
    assert twenty is not None and two is not None and fifty is not None
    fee = twenty.sheet.web_search or Decimal(0)
    assert fee > 0
    assert twenty.cost - two.cost == 18 * fee and fifty.cost - twenty.cost == 30 * fee


@pytest.mark.parametrize("model", ["gpt-5.3-codex", "gpt-5.1-codex-mini", "o1"])
def test_a_web_search_tool_with_no_known_fee_is_refused_not_charged_zero(model: str) -> None:
    """genai-prices has no fee per search for these models: their web_search_call items
    would be charged $0. The refusal says how to register one."""
    ask = {"model": model, "input": "look it up", "tools": [{"type": "web_search"}]}
    with pytest.raises(UnknownModelError, match=r"web_search=") as info:
        plan_call(RESPONSES, body(ask), BOOK)
    assert info.value.search_fee
    # No search allowed (max_tool_calls 0): nothing to price.
    assert plan_call(RESPONSES, body({**ask, "max_tool_calls": 0}), BOOK) is not None
    book = PriceBook()
    book.register(model, input=1.5, output=6, web_search="0.01")
    plan = plan_call(RESPONSES, body(ask), book)
    assert plan is not None and plan.sheet.web_search == Decimal("0.01")


@pytest.mark.parametrize(
    ("model", "host"),
    [
        ("o3-pro", "api.openai.com"),
        ("o3-pro-2025-06-10", "api.openai.com"),
        ("o3-pro", "127.0.0.1"),
        # Azure's table lists these without a fee: OpenAI's entry for the model has one.
        ("o3", "acme.openai.azure.com"),
        ("o4-mini", "acme.openai.azure.com"),
        ("o3-pro", "acme.openai.azure.com"),
    ],
)
def test_openai_models_genai_prices_lists_without_a_search_fee_pay_openais(
    model: str, host: str
) -> None:
    """OpenAI bills o3-pro's web searches at its reasoning models' $10 per 1,000 calls, as
    Azure does o3's and o4-mini's: five searches are reserved at $0.01 each, not refused."""
    endpoint = identify(
        "POST", host, "/openai/v1/responses" if "azure" in host else "/v1/responses"
    )
    assert endpoint is not None
    ask = {"model": model, "input": "look it up", "tools": [{"type": "web_search"}]}
    five = plan_call(endpoint, body({**ask, "max_tool_calls": 5}), BOOK)
    none = plan_call(endpoint, body({**ask, "max_tool_calls": 0}), BOOK)
    assert five is not None and none is not None
    assert five.sheet.web_search == Decimal("0.01")
    assert five.cost - none.cost == 5 * Decimal("0.01")


def test_azure_prices_o4_mini_deep_research_as_itself_with_its_search_fee() -> None:
    """Azure's table would price o4-mini-deep-research as its o4-mini ($1.10/$4.40):
    OpenAI's entry for the model itself ($2/$8) prices it, and its search fee with it."""
    endpoint = identify("POST", "acme.openai.azure.com", "/openai/v1/responses")
    assert endpoint is not None
    ask = {"model": "o4-mini-deep-research", "input": "q", "tools": [{"type": "web_search"}]}
    plan = plan_call(endpoint, body(ask), BOOK)
    assert plan is not None
    assert (plan.sheet.input.base, plan.sheet.output.base) == (Decimal(2), Decimal(8))
    assert plan.sheet.web_search == Decimal("0.01")


def test_a_negotiated_rate_keeps_the_bundled_search_fee_and_a_wider_window() -> None:
    """register('claude-sonnet-4-6', input=2.40, output=12.00) restates the token rates
    only: its searches still cost $0.01 each, and content of unknown length is still
    bounded at its 1M-token window (not the 131,072-token default)."""
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    book = PriceBook()
    sheet = book.register("claude-sonnet-4-6", input="2.40", output="12.00")
    assert (sheet.web_search, sheet.context_window, sheet.max_output) == (
        Decimal("0.01"),
        1_000_000,
        None,  # a maximum output would narrow the bound of a request with no max_tokens
    )
    ask = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
    }
    plan = plan_call(ANTHROPIC, body(ask), book)
    assert plan is not None and plan.input_tokens == 1_000_000
    usage = {
        "input_tokens": 20_000,
        "output_tokens": 1000,
        "server_tool_use": {"web_search_requests": 5},
    }
    answer = {"type": "message", "model": "claude-sonnet-4-6", "content": [], "usage": usage}
    result = charge(plan, json_result("anthropic", json.dumps(answer).encode()), book)
    assert result.cost == Decimal("0.110")  # 20,000 x $2.40 + 1,000 x $12, + 5 x $0.01
    # Each can still be given.
    own = book.register(
        "claude-sonnet-4-6", input=1, output=2, web_search=0, context_window=200_000, max_output=8
    )
    assert (own.web_search, own.context_window, own.max_output) == (0, 200_000, 8)
    # A Chat Completions search model's fee per call stays OpenAI's, by context size.
    search = book.register("gpt-4o-mini-search-preview", input="0.15", output="0.60")
    assert search.web_search is None
    ask = {"model": "gpt-4o-mini-search-preview", "messages": [], "max_tokens": 10}
    found = plan_call(CHAT, body(ask), book)
    assert found is not None and found.search_fee == Decimal("0.0275")


AZURE_CHAT = identify("POST", "acme.openai.azure.com", "/openai/deployments/gpt-4/chat/completions")


@pytest.mark.parametrize("name", ["gpt-4", "gpt-35-turbo-16k", "claude-3-haiku-custom"])
def test_a_registered_name_takes_no_limit_that_narrows_its_bound(name: str) -> None:
    """A registered name may serve another model than the bundled entry of that name (an
    Azure deployment named "gpt-4" running GPT-4 Turbo, 128k tokens): its bound is the
    one a name genai-prices does not know gets, never capped at the bundled window (8,192
    tokens for gpt-4) or maximum output."""
    book = PriceBook()
    sheet = book.register(name, input=10, output=30)
    assert (sheet.context_window, sheet.max_output) == (None, None)
    unlisted = "q" * len(name)  # a name genai-prices does not know, as long
    book.register(unlisted, input=10, output=30)
    prompt = [{"role": "user", "content": "lorem ipsum " * 30_000}]
    plans = [
        plan_call(CHAT, body({"model": model, "max_tokens": 1000, "messages": prompt}), book)
        for model in (name, unlisted)
    ]
    assert plans[0] is not None and plans[1] is not None
    assert (plans[0].input_tokens, plans[0].cost) == (plans[1].input_tokens, plans[1].cost)
    assert plans[0].input_tokens > 300_000
    unasked = [
        plan_call(CHAT, body({"model": model, "messages": prompt}), book)
        for model in (name, unlisted)
    ]
    assert unasked[0] is not None and unasked[1] is not None
    assert unasked[0].output_tokens == unasked[1].output_tokens == 131_072


def test_a_registered_azure_deployment_is_charged_within_its_bound() -> None:
    """The review's case: register("gpt-4", ...) for a deployment running GPT-4 Turbo, a
    60k-token prompt: the bound (about $3.63) covers the $0.615 the call costs, so a $0.50
    budget refuses the call instead of letting spend pass it."""
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    book = PriceBook()
    book.register("gpt-4", input=10, output=30)
    ask = {"max_tokens": 1000, "messages": [{"role": "user", "content": "lorem ipsum " * 30_000}]}
    plan = plan_call(AZURE_CHAT, body(ask), book)
    assert plan is not None and plan.cost > Decimal("0.50")
    usage = {"prompt_tokens": 60_000, "completion_tokens": 500, "total_tokens": 60_500}
    answer = {"object": "chat.completion", "model": "gpt-4-turbo-2024-04-09", "usage": usage}
    result = charge(plan, json_result("openai", json.dumps(answer).encode()), book)
    assert result.cost == Decimal("0.615") and not result.exceeds_bound


def test_an_inherited_window_bounds_unknown_content_but_caps_no_request() -> None:
    """A window a registered price took from the bundled entry is the input bound of
    content of unknown length (a server tool's), and no cap on a request's own length: the
    name may serve a model with a larger window. A window given to register() caps it."""
    book = PriceBook()
    book.register("claude-sonnet-4-6", input=3, output=15)
    long_ask = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x" * 1_200_000}],
    }
    plan = plan_call(ANTHROPIC, body(long_ask), book)
    assert plan is not None and plan.input_tokens > 1_200_000
    book.register("claude-sonnet-4-6", input=3, output=15, context_window=1_000_000)
    capped = plan_call(ANTHROPIC, body(long_ask), book)
    assert capped is not None and capped.input_tokens == 1_000_000


def test_a_registered_name_takes_the_search_fee_only_from_its_own_entry() -> None:
    """claude-sonnet-4-5-acme is matched by name to claude-sonnet-4-5, which may not be
    this model: it takes no fee per search (nor window) from it, so a web-search tool is
    refused until one is given. A dated id of a listed model is that model."""
    book = PriceBook()
    acme = book.register("claude-sonnet-4-5-acme", input=1, output=2)
    assert (acme.web_search, acme.context_window) == (None, None)
    assert book.register("claude-sonnet-4-5-20250929", input=1, output=2).web_search == Decimal(
        "0.01"
    )
    ask = {
        "model": "claude-sonnet-4-5-acme",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    }
    with pytest.raises(UnknownModelError) as info:
        plan_call(ANTHROPIC, body(ask), book)
    assert info.value.search_fee


def test_a_search_model_asked_for_n_choices_is_charged_the_fees_it_was_bounded() -> None:
    """One search fee per choice is reserved; the charge counts as many, not one."""
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    ask = {"model": "gpt-4o-search-preview", "messages": [], "max_tokens": 100, "n": 3}
    plan = plan_call(CHAT, body(ask), BOOK)
    assert plan is not None and plan.search_fee == Decimal("0.035") and plan.searches == 3
    usage = {"prompt_tokens": 50, "completion_tokens": 300, "total_tokens": 350}
    answer = {"object": "chat.completion", "model": "gpt-4o-search-preview", "usage": usage}
    result = charge(plan, json_result("openai", json.dumps(answer).encode()), BOOK)
    tokens = plan.sheet.cost(Usage(input_tokens=50, output_tokens=300))
    assert result.cost == tokens + 3 * Decimal("0.035") <= plan.cost
    assert result.usage.web_searches == 3


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("anthropic/claude-sonnet-4.5", "/api/v1/chat/completions"),
        ("openai/gpt-4o", "/api/v1/chat/completions"),
        # OpenRouter's Anthropic-shaped endpoint adds the same plugin.
        ("anthropic/claude-sonnet-4.5", "/api/v1/messages"),
    ],
)
def test_openrouters_online_suffix_is_bounded_as_its_web_plugin(model: str, path: str) -> None:
    """ ":online" is OpenRouter's web plugin: the model's token prices, plus the plugin's
    results fee, with the input at the window (the results join the prompt)."""
    openrouter = identify("POST", "openrouter.ai", path)
    assert openrouter is not None
    ask = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
    plain = plan_call(openrouter, body(ask), BOOK)
    online = plan_call(openrouter, body({**ask, "model": f"{model}:online"}), BOOK)
    plugin = plan_call(openrouter, body({**ask, "plugins": [{"id": "web"}]}), BOOK)
    both = plan_call(
        openrouter, body({**ask, "model": f"{model}:online", "plugins": [{"id": "web"}]}), BOOK
    )
    assert plain is not None and online is not None and plugin is not None and both is not None
    assert online.sheet == plain.sheet
    assert online.input_tokens == plain.sheet.context_window
    assert online.cost == plugin.cost == both.cost > plain.cost


@pytest.mark.parametrize("suffix", [":nitro", ":floor", ":exacto"])
@pytest.mark.parametrize("host", ["openrouter.ai", "gw.corp"])
def test_openrouters_routing_variants_are_refused_until_priced(suffix: str, host: str) -> None:
    """ ":nitro" and ":floor" pick other providers at other rates: not the bare model's."""
    endpoint = identify("POST", host, "/api/v1/chat/completions")
    assert endpoint is not None
    ask = {"model": f"anthropic/claude-sonnet-4.5{suffix}", "messages": [], "max_tokens": 10}
    with pytest.raises(UnknownModelError):
        plan_call(endpoint, body(ask), BOOK)
    book = PriceBook()
    book.register(f"anthropic/claude-sonnet-4.5{suffix}", input=3, output=15)
    assert plan_call(endpoint, body(ask), book) is not None


def test_tools_made_available_by_input_items_are_bounded_too() -> None:
    offered = {
        **_ASK,
        "input": [
            {"role": "developer", "type": "additional_tools", "tools": [{"type": "function"}]},
            {"type": "tool_search_output", "tools": [{"type": "image_generation"}]},
            {"role": "user", "content": "draw"},
        ],
    }
    with pytest.raises(UnknownModelError, match="image_generation"):
        plan_call(RESPONSES, body(offered), PriceBook())
    auto = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "64g"}}
    offered["input"][1]["tools"] = [auto]  # type: ignore[index]
    plan = plan_call(RESPONSES, body(offered), PriceBook())
    assert plan is not None and plan.hosted is not None
    assert plan.hosted.container == Decimal("1.92")
    assert plan.input_tokens == plan.sheet.context_window  # it reads what it runs


def test_register_tool_knows_its_tools_and_container_sizes() -> None:
    book = PriceBook()
    with pytest.raises(ValueError, match="register\\(model"):
        book.register_tool("web_search", per_use=1)
    with pytest.raises(ValueError, match="image_generation"):
        book.register_tool("image-generation", per_use=1)
    book.register_tool("code_interpreter", per_use="0.05", memory_limit="1g")
    with pytest.raises(ValueError, match="model= is for image_generation"):
        book.register_tool("file_search", per_use=1, model="x")
    # No container given is an auto container, and no memory_limit is the 1 GB default.
    plan = plan_call(RESPONSES, body({**_ASK, "tools": [{"type": "code_interpreter"}]}), book)
    assert plan is not None and plan.hosted is not None
    assert (plan.hosted.container, plan.hosted.containers) == (Decimal("0.05"), 1)


def test_hosted_tool_fees_are_charged_from_the_output_items() -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    book = PriceBook()
    book.register_tool("image_generation", per_use="0.25")
    tools = [
        {"type": "image_generation"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]
    plan = plan_call(RESPONSES, body({**_ASK, "tools": tools}), book)
    assert plan is not None
    tokens = {"input_tokens": 10, "output_tokens": 10}
    output = [{"type": "image_generation_call", "result": "iVBO"}] * 2 + [
        {"type": "file_search_call", "queries": ["q"]}
    ] * 3
    answer = {"object": "response", "model": "gpt-5", "output": output, "usage": tokens}
    result = charge(plan, json_result("openai", json.dumps(answer).encode()), book)
    usage = result.usage
    assert (usage.images_generated, usage.file_searches, usage.containers) == (2, 3, 1)
    token_cost = plan.sheet.cost(Usage(input_tokens=10, output_tokens=10))
    expected = token_cost + 2 * Decimal("0.25") + 3 * Decimal("0.0025") + Decimal("0.03")
    assert result.cost == expected and not result.estimated
    assert result.cost <= plan.cost
    # No usage seen: what the tools did is unknown, so their whole bound is charged.
    cut = charge(plan, json_result("openai", json.dumps({"object": "response"}).encode()), book)
    assert cut.cost == plan.cost

    # Two containers (a code interpreter and a hosted shell) are two.
    shell = {"type": "shell", "environment": {"type": "container_auto"}}
    both = plan_call(RESPONSES, body({**_ASK, "tools": [tools[2], shell]}), book)
    assert both is not None
    twice = charge(both, json_result("openai", json.dumps(answer).encode()), book)
    assert twice.usage.containers == 2


def test_images_a_request_did_not_show_are_charged_the_dearest_fee_or_flagged() -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    book = PriceBook()
    plan = plan_call(RESPONSES, body({**_ASK, "prompt": {"id": "pmpt_1"}}), book)
    assert plan is not None and plan.hosted is None
    output = [{"type": "image_generation_call", "result": "iVBO"}] * 2
    usage = {"input_tokens": 0, "output_tokens": 0}
    answer = json.dumps({"object": "response", "output": output, "usage": usage}).encode()
    unpriced = charge(plan, json_result("openai", answer), book)
    assert unpriced.unpriced == "2 image(s) from the image_generation tool"
    book.register_tool("image_generation", per_use="0.10", model="gpt-image-2")
    book.register_tool("image_generation", per_use="0.40", model="gpt-image-2.6-sunburst")
    priced = charge(plan, json_result("openai", answer), book)
    assert priced.unpriced is None and priced.cost == unpriced.cost + 2 * Decimal("0.40")


@pytest.mark.parametrize(
    ("host", "path", "factor"),
    [
        # Vertex: a region, or a multi-region, costs 10% more than global for Claude 4.5+.
        ("us-east5-aiplatform.googleapis.com", "locations/us-east5", "1.1"),
        ("aiplatform.googleapis.com", "locations/us", "1.1"),
        ("aiplatform.googleapis.com", "locations/global", "1"),
    ],
)
def test_regional_vertex_endpoints_cost_ten_percent_more(host: str, path: str, factor: str) -> None:
    url = f"/v1/projects/p/{path}/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    endpoint = identify("POST", host, url)
    assert endpoint is not None
    ask = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 10, "messages": []}
    plan = plan_call(endpoint, body(ask), BOOK)
    assert plan is not None
    assert plan.sheet.input.base == 3 * Decimal(factor)
    # An older model has one price everywhere.
    older = identify(
        "POST", host, url.replace("claude-sonnet-4-5@20250929", "claude-sonnet-4@2025")
    )
    assert older is not None
    assert plan_call(older, body(ask), BOOK).sheet.input.base == 3  # type: ignore[union-attr]


def test_bedrock_regional_ids_are_priced_once_from_genai_prices() -> None:
    ask = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": []}
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    rates = {}
    for prefix in ("us.", "global."):
        endpoint = identify(
            "POST", host, f"/model/{prefix}anthropic.claude-haiku-4-5-20251001-v1:0/invoke"
        )
        assert endpoint is not None
        plan = plan_call(endpoint, body(ask), BOOK)
        assert plan is not None
        rates[prefix] = plan.sheet.input.base
    assert rates == {"us.": Decimal("1.1"), "global.": Decimal(1)}  # not 1.21


def test_bedrock_routes_keep_their_price_when_the_response_names_the_bare_model() -> None:
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    ask = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": []}
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    answer = json.dumps(
        {"model": "claude-haiku-4-5-20251001", "usage": {"input_tokens": 1000, "output_tokens": 0}}
    ).encode()
    costs = {}
    for prefix in ("global.", "us."):
        path = f"/model/{prefix}anthropic.claude-haiku-4-5-20251001-v1:0/invoke"
        endpoint = identify("POST", host, path)
        assert endpoint is not None
        plan = plan_call(endpoint, body(ask), BOOK)
        assert plan is not None
        costs[prefix] = charge(plan, json_result("anthropic", answer), BOOK).cost
    assert costs == {"global.": Decimal("0.001"), "us.": Decimal("0.0011")}
    # An id genai-prices' Bedrock table does not know is priced at Anthropic's rates, plus
    # the regional premium where it is regional.
    unlisted = identify("POST", host, "/model/us.anthropic.claude-haiku-4-5-v9:0/invoke")
    assert unlisted is not None
    plan = plan_call(unlisted, body(ask), BOOK)
    assert plan is not None and plan.sheet.input.base == Decimal("1.1")


def test_a_regional_vertex_call_bounds_its_fallbacks_and_advisors_regionally_too() -> None:
    url = "/v1/projects/p/locations/{}/publishers/anthropic/models/claude-haiku-4-5:rawPredict"
    ask = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 10,
        "messages": [],
        "fallbacks": [{"model": "claude-opus-4-6", "max_tokens": 100}],
        "tools": [{"type": "advisor_20260301", "model": "claude-opus-4-6", "max_uses": 1}],
    }
    plans = {}
    for location in ("global", "us-east5"):
        endpoint = identify("POST", "aiplatform.googleapis.com", url.format(location))
        assert endpoint is not None
        plans[location] = plan_call(endpoint, body(ask), BOOK)
    regional, world = plans["us-east5"], plans["global"]
    assert regional is not None and world is not None
    assert regional.cost == world.cost * Decimal("1.1")


def test_on_a_regional_endpoint_each_model_is_charged_its_own_premium() -> None:
    """Vertex in a region bills Claude 4.5+ 10% more, older models not: a fallback that
    served, or an advisor step, is charged by its own model's rule, not the request's."""
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    url = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/{}:rawPredict"
    ask = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 100, "messages": []}

    def charged(main: str, answer: dict[str, object]) -> Decimal:
        endpoint = identify("POST", "us-east5-aiplatform.googleapis.com", url.format(main))
        assert endpoint is not None
        plan = plan_call(endpoint, body(ask), BOOK)
        assert plan is not None
        return charge(plan, json_result("anthropic", json.dumps(answer).encode()), BOOK).cost

    million = {"input_tokens": 1_000_000, "output_tokens": 0}
    # A claude-sonnet-4 request a claude-opus-4-6 fallback served: Opus 4.6's $5, +10%.
    served = charged("claude-sonnet-4@20250514", {"model": "claude-opus-4-6", "usage": million})
    assert served == Decimal("5.5")
    # A claude-sonnet-4-5 request whose claude-opus-4-1 advisor read a million tokens:
    # Sonnet 4.5's own step +10%, the older advisor's at its $15.
    step = {"type": "advisor_message", "model": "claude-opus-4-1", **million}
    usage = {"input_tokens": 0, "output_tokens": 0, "iterations": [step]}
    advised = charged("claude-sonnet-4-5@20250929", {"model": "claude-sonnet-4-5", "usage": usage})
    assert advised == Decimal(15)


_HOSTED_TOOLS = st.lists(
    st.sampled_from(
        [
            {"type": "image_generation"},
            {"type": "image_generation", "model": "gpt-image-2"},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {"type": "code_interpreter"},
            {"type": "code_interpreter", "container": "cntr_1"},
            {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "16g"}},
            {"type": "shell", "environment": {"type": "container_auto", "memory_limit": "4g"}},
            {"type": "web_search"},
            {"type": "function", "name": "f", "parameters": {}},
        ]
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    _HOSTED_TOOLS,
    st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=0, max_value=30),
)
def test_hosted_tool_charges_never_pass_their_bound(
    tools: list[dict[str, object]],
    max_tool_calls: int | None,
    images: int,
    searches: int,
    web: int,
) -> None:
    """Whatever hosted tools a Responses request offers and whatever the output lists
    within what the request allows, the charge is at most the reservation."""
    from burnmap._core.charge import charge
    from burnmap._core.meter import json_result

    book = PriceBook()
    book.register_tool("image_generation", per_use="0.19")
    book.register_tool("image_generation", per_use="0.3", model="gpt-image-2")
    ask: dict[str, object] = {"model": "gpt-5", "input": "go", "max_output_tokens": 500}
    ask["tools"] = tools
    if max_tool_calls is not None:
        ask["max_tool_calls"] = max_tool_calls
    plan = plan_call(RESPONSES, body(ask), book)
    assert plan is not None
    allowed = max_tool_calls if max_tool_calls is not None else 20
    offered = {str(tool["type"]) for tool in tools}
    output = (
        [{"type": "image_generation_call"}]
        * (min(images, allowed) * ("image_generation" in offered))
        + [{"type": "file_search_call"}] * (min(searches, allowed) * ("file_search" in offered))
        + [{"type": "web_search_call"}] * (min(web, allowed) * ("web_search" in offered))
    )
    usage = {"input_tokens": 1000, "output_tokens": 500}
    answer = {"object": "response", "model": "gpt-5", "output": output, "usage": usage}
    result = charge(plan, json_result("openai", json.dumps(answer).encode()), book)
    assert result.cost <= plan.cost
    assert not result.exceeds_bound and result.unpriced is None


@pytest.mark.parametrize(
    ("model", "tool", "fee"),
    [
        ("gpt-4.1", "web_search_preview", "0.025"),  # non-reasoning: $25 per 1,000 calls
        ("gpt-4o-mini", "web_search_preview_2025_03_11", "0.025"),
        ("gpt-4.1", "web_search", "0.01"),
        ("gpt-5", "web_search_preview", "0.01"),  # reasoning models: $10, as web_search
    ],
)
def test_the_web_search_preview_tool_costs_more_on_non_reasoning_models(
    model: str, tool: str, fee: str
) -> None:
    """OpenAI bills the older web_search_preview tool $25 per 1,000 calls on GPT-4o and
    GPT-4.1 models (and $10 elsewhere): bounded and charged at that fee, also when the
    response names a dated model."""
    ask = {"model": model, "input": "look it up", "tools": [{"type": tool}], "max_tool_calls": 3}
    plan = plan_call(RESPONSES, body(ask), BOOK)
    assert plan is not None and plan.sheet.web_search == Decimal(fee)
    reply = {
        "object": "response",
        "model": f"{model}-2025-04-14",
        "output": [{"type": "web_search_call", "id": f"ws{i}"} for i in range(2)],
        "usage": {"input_tokens": 100, "output_tokens": 10},
    }
    meter = JSONMeter("openai", "responses")
    meter.feed(body(reply))
    result = charge(plan, meter.result(), BOOK)
    tokens = BOOK.lookup(model, "openai").cost(Usage(input_tokens=100, output_tokens=10))
    assert result.cost == tokens + 2 * Decimal(fee)
    assert result.cost <= plan.cost


def test_a_registered_gpt_4_1_price_still_pays_the_preview_tools_fee() -> None:
    """register('gpt-4.1', input=..., output=...) restates the token rates only: its
    web_search_preview calls still cost $0.025 each; a fee the user states wins."""
    ask = {"model": "gpt-4.1", "input": "q", "tools": [{"type": "web_search_preview"}]}
    book = PriceBook()
    book.register("gpt-4.1", input=1.6, output=6.4)
    plan = plan_call(RESPONSES, body(ask), book)
    assert plan is not None and plan.sheet.web_search == Decimal("0.025")
    book.register("gpt-4.1", input=1.6, output=6.4, web_search="0.02")
    plan = plan_call(RESPONSES, body(ask), book)
    assert plan is not None and plan.sheet.web_search == Decimal("0.02")
