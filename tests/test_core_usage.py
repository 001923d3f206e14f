"""Usage as providers bill it: unreadable counts, stated costs, reasoning outside output."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burnmap._core.bound import CallPlan, plan_call
from burnmap._core.charge import Charge, charge
from burnmap._core.endpoint import identify
from burnmap._core.meter import JSONMeter, Metered, SSEMeter
from burnmap._core.pricing import PriceBook
from burnmap._core.usage import Usage, usage_from
from tests.test_core_sse import split

CHAT = ("api.openai.com", "/v1/chat/completions")
RESPONSES = ("api.openai.com", "/v1/responses")
MESSAGES = ("api.anthropic.com", "/v1/messages")
COMPLETIONS = ("api.openai.com", "/v1/completions")
EMBEDDINGS = ("api.openai.com", "/v1/embeddings")

REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    CHAT: {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi" * 500}]},
    RESPONSES: {"model": "gpt-4o", "input": "hi" * 500},
    MESSAGES: {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi" * 500}],
    },
    COMPLETIONS: {"model": "gpt-3.5-turbo-instruct", "prompt": "hi" * 500},
    EMBEDDINGS: {"model": "text-embedding-3-small", "input": "hi" * 500},
}


def settle(
    where: tuple[str, str],
    response: bytes,
    *,
    stream: bool = False,
    extra: dict[str, Any] | None = None,
    book: PriceBook | None = None,
    chunks: list[int] | None = None,
) -> tuple[CallPlan, Metered, Charge]:
    """Plan a call to ``where``, meter ``response`` as the transport would, and charge it."""
    book = book or PriceBook()
    endpoint = identify("POST", *where)
    request = {**REQUESTS.get(where, {}), **(extra or {})}
    if endpoint.kind != "embeddings":
        request.setdefault(
            "max_tokens" if endpoint.kind != "responses" else "max_output_tokens", 1000
        )
    if stream:
        request["stream"] = True
    plan = plan_call(endpoint, json.dumps(request).encode(), book)
    assert plan is not None
    meter = (
        SSEMeter(endpoint.shape, endpoint.kind)
        if stream
        else JSONMeter(endpoint.shape, endpoint.kind)
    )
    for part in split(response, chunks or []):
        meter.feed(part)
    metered = meter.result()
    return plan, metered, charge(plan, metered, book)


def sse(events: list[dict[str, Any]], named: bool = True) -> bytes:
    out = b""
    for event in events:
        data = json.dumps(event).encode()
        name = event.get("type")
        head = f"event: {name}\n".encode() if named and name else b""
        out += head + b"data: " + data + b"\n\n"
    return out


# --- Unreadable usage: charged the bound, marked estimated, never $0 -------------------

UNREADABLE = [
    {},
    {"total_tokens": 5000},
    {"prompt_tokens": None, "completion_tokens": None, "total_tokens": 5000},
    {"input_tokens": None, "output_tokens": None},
    {"prompt_tokens": "900", "completion_tokens": "100"},
    {"output_tokens": 900},
    {"completion_tokens": 900, "total_tokens": 900},
    {"prompt_tokens": True, "completion_tokens": 3},
    {"input_tokens": None, "cache_read_input_tokens": 900, "output_tokens": 5},
]


def _json_body(where: tuple[str, str], usage: object) -> bytes:
    if where == RESPONSES:
        return json.dumps(
            {"object": "response", "model": "gpt-4o", "output": [], "usage": usage}
        ).encode()
    if where == MESSAGES:
        return json.dumps(
            {"type": "message", "model": "claude-sonnet-4-5", "content": [], "usage": usage}
        ).encode()
    return json.dumps({"object": "x", "model": "gpt-4o", "choices": [], "usage": usage}).encode()


@pytest.mark.parametrize("usage", UNREADABLE)
@pytest.mark.parametrize("where", [CHAT, RESPONSES, MESSAGES, COMPLETIONS])
def test_usage_without_its_counts_is_charged_the_bound(
    where: tuple[str, str], usage: dict[str, Any]
) -> None:
    # Gateways send `usage: {}` or null counts; such a call is not free: it settles at
    # its reservation, as a response without usage does.
    plan, metered, charged = settle(where, _json_body(where, usage))
    _, _, no_usage = settle(where, _json_body(where, None))
    assert metered.usage is None and not metered.complete
    assert charged.estimated and charged.cost == plan.cost == no_usage.cost > 0


@pytest.mark.parametrize("usage", [{}, {"total_tokens": 8}, {"prompt_tokens": None}])
def test_embeddings_usage_without_a_prompt_count_is_charged_the_bound(
    usage: dict[str, Any],
) -> None:
    body = json.dumps(
        {"object": "list", "data": [], "model": "text-embedding-3-small", "usage": usage}
    )
    plan, _, charged = settle(EMBEDDINGS, body.encode())
    assert charged.estimated and charged.cost == plan.cost > 0


def test_embeddings_need_no_output_count() -> None:
    usage = {"prompt_tokens": 8, "total_tokens": 8}
    body = json.dumps(
        {"object": "list", "data": [], "model": "text-embedding-3-small", "usage": usage}
    )
    _, metered, charged = settle(EMBEDDINGS, body.encode())
    assert metered.complete and not charged.estimated
    assert charged.usage == Usage(input_tokens=8)


@pytest.mark.parametrize("usage", UNREADABLE[:4])
def test_stream_with_unreadable_usage_is_charged_as_one_without_usage(
    usage: dict[str, Any],
) -> None:
    chunk = {"object": "chat.completion.chunk", "model": "gpt-4o"}
    text = {**chunk, "choices": [{"index": 0, "delta": {"content": "hello there"}}]}
    stream = (
        b"".join(
            b"data: " + json.dumps(event).encode() + b"\n\n"
            for event in (text, {**chunk, "choices": [], "usage": usage})
        )
        + b"data: [DONE]\n\n"
    )
    plan, metered, charged = settle(CHAT, stream, stream=True)
    # As a stream whose usage never came: the input bound and the output seen.
    assert metered.usage is None and not metered.complete
    assert charged.estimated and charged.usage.input_tokens == plan.input_tokens > 0
    assert 0 < charged.usage.output_tokens <= plan.output_tokens


@pytest.mark.parametrize("usage", UNREADABLE[:4])
def test_anthropic_stream_with_unreadable_usage_is_not_complete(usage: dict[str, Any]) -> None:
    stream = sse(
        [
            {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": usage}},
            {"type": "message_delta", "delta": {}, "usage": {}},
            {"type": "message_stop"},
        ]
    )
    _, metered, charged = settle(MESSAGES, stream, stream=True)
    assert metered.usage is None and not metered.complete and charged.estimated


def test_responses_stream_with_unreadable_usage_is_not_complete() -> None:
    response = {"object": "response", "model": "gpt-4o", "output": [], "usage": {}}
    stream = sse([{"type": "response.completed", "response": response}])
    _, metered, charged = settle(RESPONSES, stream, stream=True)
    assert metered.usage is None and not metered.complete and charged.estimated


def test_anthropic_stream_that_never_reports_its_output_count_is_not_complete() -> None:
    start = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 1200}}
    stream = sse(
        [
            {"type": "message_start", "message": start},
            {"type": "message_delta", "delta": {}, "usage": {"output_tokens": None}},
            {"type": "message_stop"},
        ]
    )
    _, metered, charged = settle(MESSAGES, stream, stream=True)
    # The input it reported is kept; the output is the estimate, as for a cut stream.
    assert not metered.complete and charged.estimated
    assert charged.usage.input_tokens == 1200


# --- Input reported, output not: the input plus the output estimated ------------------

TEXT = "I cannot help with that request, sorry. " * 20  # 800 characters: about 200 tokens


def _answer(where: tuple[str, str], usage: object, text: str | None = TEXT) -> bytes:
    """A non-streamed answer from ``where`` that generated ``text``."""
    if where == RESPONSES:
        content = [{"type": "output_text", "text": text}]
        output = [{"type": "message", "role": "assistant", "content": content}]
        body = {"object": "response", "model": "gpt-4o", "output": output, "usage": usage}
    elif where == MESSAGES:
        blocks = [{"type": "text", "text": text}] if text is not None else []
        body = {"type": "message", "model": "claude-sonnet-4-5", "content": blocks, "usage": usage}
    elif where == COMPLETIONS:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
        body = {"object": "text_completion", "model": "gpt-3.5-turbo-instruct", "choices": [choice]}
        body["usage"] = usage
    else:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"object": "chat.completion", "model": "gpt-4o", "choices": [choice], "usage": usage}
    return json.dumps(body).encode()


WITH_A_TOTAL = [
    (CHAT, {"prompt_tokens": 900, "total_tokens": 900}),  # Gemini's, on a blocked answer
    (COMPLETIONS, {"prompt_tokens": 900, "total_tokens": 900}),  # echo with max_tokens 0
]
WITHOUT_A_TOTAL = [
    (CHAT, {"prompt_tokens": 900, "completion_tokens": None}),
    (RESPONSES, {"input_tokens": 900}),
    (MESSAGES, {"input_tokens": 900}),
]
OUTPUT_KEY = {CHAT: "completion_tokens", COMPLETIONS: "completion_tokens"}


def _read_without_output(where: tuple[str, str], usage: dict[str, Any]) -> tuple[Any, Any]:
    """Settle an answer whose usage has its input (900) but no output count: read, not
    complete, charged its reported input as an estimate."""
    plan, metered, charged = settle(where, _answer(where, usage))
    assert metered.usage is not None and not metered.complete
    assert charged.estimated and charged.usage.input_tokens == 900
    return plan, charged


@pytest.mark.parametrize(("where", "usage"), WITH_A_TOTAL)
def test_usage_without_its_output_count_is_charged_the_input_and_at_least_the_text(
    where: tuple[str, str], usage: dict[str, Any]
) -> None:
    # Not the whole bound (the input is known) and not $0 for the output (it is not): the
    # reported input, plus what the total implies or, more, the text it generated.
    plan, charged = _read_without_output(where, usage)
    assert charged.usage.output_tokens == 200
    counted = {**usage, OUTPUT_KEY.get(where, "output_tokens"): 200}
    _, _, exact = settle(where, _answer(where, counted))
    assert not exact.estimated and 0 < charged.cost == exact.cost < plan.cost


def test_a_total_beyond_the_input_is_output_even_with_no_text() -> None:
    """Gemini's OpenAI-compatible endpoint may spend every token thinking and report no
    completion count: the total says what the hidden output was."""
    usage = {"prompt_tokens": 21, "total_tokens": 521}
    _, _, charged = settle(CHAT, _answer(CHAT, usage, text=None))
    assert charged.estimated and charged.usage.output_tokens == 500


@pytest.mark.parametrize(("where", "usage"), WITHOUT_A_TOTAL)
def test_usage_with_no_output_count_and_no_total_is_charged_the_output_bound(
    where: tuple[str, str], usage: dict[str, Any]
) -> None:
    # The output is not known at all (hidden reasoning may lie behind the text): the
    # reported input, plus the output the call was bounded at.
    plan, charged = _read_without_output(where, usage)
    assert charged.usage.output_tokens == plan.output_tokens
    assert charged.cost <= plan.cost


@pytest.mark.parametrize("where", [CHAT, MESSAGES])
def test_a_blocked_answer_without_an_output_count_is_charged_its_input(
    where: tuple[str, str],
) -> None:
    usage = {"prompt_tokens": 900} if where == CHAT else {"input_tokens": 900}
    usage["total_tokens"] = 900
    plan, _, charged = settle(where, _answer(where, usage, text=None))
    assert charged.estimated and charged.usage.output_tokens == 0
    counted = {**usage, OUTPUT_KEY.get(where, "output_tokens"): 0}
    _, _, exact = settle(where, _answer(where, counted))
    assert 0 < charged.cost == exact.cost < plan.cost


def test_stream_usage_without_its_output_count_is_charged_the_input_and_the_output_seen() -> None:
    chunk = {"object": "chat.completion.chunk", "model": "gpt-4o"}
    text = {**chunk, "choices": [{"index": 0, "delta": {"content": "hello there"}}]}
    usage = {"prompt_tokens": 900, "total_tokens": 900}
    stream = (
        b"".join(
            b"data: " + json.dumps(event).encode() + b"\n\n"
            for event in (text, text, {**chunk, "choices": [], "usage": usage})
        )
        + b"data: [DONE]\n\n"
    )
    for chunks in ([], [1] * len(stream)):
        plan, metered, charged = settle(CHAT, stream, stream=True, chunks=chunks)
        assert not metered.complete and charged.estimated
        assert charged.usage.input_tokens == 900 < plan.input_tokens
        assert 0 < charged.usage.output_tokens == metered.output_tokens_seen


def test_responses_stream_without_an_output_count_is_estimated() -> None:
    response = {"object": "response", "model": "gpt-4o", "output": [], "usage": {"input_tokens": 9}}
    stream = sse([{"type": "response.completed", "response": response}])
    _, metered, charged = settle(RESPONSES, stream, stream=True)
    assert metered.usage is not None and not metered.complete
    assert charged.estimated and charged.usage.input_tokens == 9


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10, "completion_tokens": 5, "input_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": 5, "input_tokens": 10, "output_tokens": None},
        {"prompt_tokens": 10, "completion_tokens": 5, "output_tokens": 0},
    ],
)
def test_chat_usage_is_read_from_its_prompt_and_completion_counts_whatever_else_it_carries(
    usage: dict[str, Any],
) -> None:
    # Gateways add the Responses names beside the Chat ones.
    _, metered, charged = settle(CHAT, _answer(CHAT, usage))
    assert metered.complete and not charged.estimated
    assert (charged.usage.input_tokens, charged.usage.output_tokens) == (10, 5)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_input_read_only_from_the_cache_is_an_input(stream: bool) -> None:
    # A gateway that leaves out a zero input_tokens: the cache counts are the input.
    usage = {"cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200}
    if stream:
        start = {"model": "claude-sonnet-4-5", "usage": usage}
        body = sse(
            [
                {"type": "message_start", "message": start},
                {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}},
                {"type": "message_stop"},
            ]
        )
    else:
        body = _answer(MESSAGES, {**usage, "output_tokens": 5})
    _, metered, charged = settle(MESSAGES, body, stream=stream)
    assert metered.complete and not charged.estimated
    got = charged.usage
    assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (0, 1000, 200)
    assert got.output_tokens == 5


counts = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.integers(0, 10**6))


@settings(deadline=None)
@given(
    st.sampled_from(["anthropic", "openai"]),
    st.sampled_from(["chat", "responses", "messages", "completions", "embeddings"]),
    st.dictionaries(
        st.sampled_from(
            [
                "input_tokens",
                "output_tokens",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "cache_read_input_tokens",
            ]
        ),
        counts,
    ),
)
def test_usage_is_read_only_with_its_input_count_and_complete_only_with_its_output(
    shape: str, kind: str, usage: dict[str, Any]
) -> None:
    def number(key: str) -> bool:
        return type(usage.get(key)) is int

    if shape == "anthropic":
        cached = "input_tokens" not in usage and number("cache_read_input_tokens")
        output = "output_tokens" if number("input_tokens") or cached else None
    elif number("prompt_tokens"):
        output = "completion_tokens"
    else:
        output = "output_tokens" if number("input_tokens") else None
    readable = output is not None
    whole = output is not None and (
        number(output) or (output == "completion_tokens" and kind == "embeddings")
    )
    assert (usage_from(shape, usage) is not None) == readable
    meter = JSONMeter(shape, kind)
    meter.feed(json.dumps({"model": "m", "usage": usage}).encode())
    metered = meter.result()
    assert (metered.usage is not None, metered.complete) == (readable, whole)


# --- OpenRouter BYOK: its fee plus what the provider billed the caller's key -----------

OPENROUTER = ("openrouter.ai", "/api/v1/chat/completions")
REQUESTS[OPENROUTER] = {
    "model": "anthropic/claude-sonnet-4.5",
    "messages": [{"role": "user", "content": "hi"}],
}


def _openrouter(usage: dict[str, Any]) -> bytes:
    counts = {"prompt_tokens": 10_000, "completion_tokens": 1_000, "total_tokens": 11_000}
    return json.dumps(
        {
            "object": "chat.completion",
            "model": "anthropic/claude-sonnet-4.5",
            "choices": [],
            "usage": {**counts, **usage},
        }
    ).encode()


def test_openrouter_byok_is_charged_its_fee_and_the_upstream_cost() -> None:
    # With the caller's own provider key, `cost` is only OpenRouter's fee: the provider
    # billed $0.045 to that key besides.
    usage = {"cost": 0.00225, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.045}}
    _, _, charged = settle(OPENROUTER, _openrouter(usage))
    assert charged.cost == Decimal("0.04725") and not charged.estimated


def test_openrouter_byok_without_the_upstream_cost_is_priced_from_tokens() -> None:
    usage = {"cost": 0.00225, "is_byok": True, "cost_details": {"upstream_inference_cost": None}}
    _, _, charged = settle(OPENROUTER, _openrouter(usage))
    # 10,000 x $3 + 1,000 x $15 per million: what the provider bills, at least.
    assert charged.cost == Decimal("0.045") and charged.usage.cost_reported is None


@pytest.mark.parametrize("upstream", [None, 0, 0.047, 0.0282])
def test_openrouter_without_byok_is_charged_its_stated_cost(upstream: float | None) -> None:
    # On OpenRouter's own credits the upstream figure is a breakdown of `cost` (a live
    # non-BYOK answer had both at $0.00000285): the call is charged `cost`, once.
    details = {"upstream_inference_cost": upstream, "upstream_inference_prompt_cost": upstream}
    usage = {"cost": 0.047, "is_byok": False, "cost_details": details}
    _, _, charged = settle(OPENROUTER, _openrouter(usage))
    assert charged.cost == Decimal("0.047") and not charged.estimated


@pytest.mark.parametrize(
    ("cost", "upstream", "charged_cost"),
    [(0.00225, 0.045, "0.045"), (0.047, 0.047, "0.047"), (0.047, 0.03, "0.047")],
)
def test_openrouter_usage_without_is_byok_is_charged_the_larger_figure_never_the_sum(
    cost: float, upstream: float, charged_cost: str
) -> None:
    # Without `is_byok`, the upstream figure may be the provider's separate bill (BYOK)
    # or a breakdown of `cost`: the larger of the two is what the call cost at least,
    # and the sum would double every non-BYOK call.
    usage = {"cost": cost, "cost_details": {"upstream_inference_cost": upstream}}
    _, _, charged = settle(OPENROUTER, _openrouter(usage))
    assert charged.cost == Decimal(charged_cost) and not charged.estimated


# --- xAI Chat: reasoning tokens are billed beside completion_tokens --------------------

XAI = ("api.x.ai", "/v1/chat/completions")
REQUESTS[XAI] = {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}
GROK_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 50,
    "total_tokens": 3050,
    "completion_tokens_details": {"reasoning_tokens": 2000},
}


def test_xai_chat_reasoning_is_billed_as_output() -> None:
    # xAI's completion_tokens leave the reasoning out (total = prompt + completion +
    # reasoning); genai-prices' x-ai extractor adds the two. grok-4-0709: $3 in, $15 out.
    body = {"object": "chat.completion", "model": "grok-4-0709", "choices": [], "usage": GROK_USAGE}
    plan, _, charged = settle(XAI, json.dumps(body).encode(), extra={"max_tokens": 4000})
    assert charged.usage.output_tokens == 2050
    assert charged.cost == Decimal("0.03375") and not charged.exceeds_bound
    assert plan.cost >= charged.cost


def test_xai_chat_stream_reasoning_is_billed_as_output() -> None:
    chunk = {"object": "chat.completion.chunk", "model": "grok-4-0709"}
    stream = (
        b"".join(
            b"data: " + json.dumps(event).encode() + b"\n\n"
            for event in (
                {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]},
                {**chunk, "choices": [], "usage": GROK_USAGE},
            )
        )
        + b"data: [DONE]\n\n"
    )
    _, _, charged = settle(XAI, stream, stream=True, extra={"max_tokens": 4000})
    assert charged.cost == Decimal("0.03375") and not charged.estimated


def test_openai_chat_reasoning_is_not_counted_twice() -> None:
    usage = {**GROK_USAGE, "completion_tokens": 2050, "total_tokens": 3050}
    body = {"object": "chat.completion", "model": "o3", "choices": [], "usage": usage}
    _, _, charged = settle(CHAT, json.dumps(body).encode(), extra={"model": "o3"})
    assert charged.usage.output_tokens == 2050


def test_xai_responses_output_already_holds_the_reasoning() -> None:
    where = ("api.x.ai", "/v1/responses")
    REQUESTS[where] = {"model": "grok-4", "input": "hi"}
    usage = {
        "input_tokens": 1000,
        "output_tokens": 2050,
        "output_tokens_details": {"reasoning_tokens": 2000},
    }
    body = {"object": "response", "model": "grok-4-0709", "output": [], "usage": usage}
    _, _, charged = settle(where, json.dumps(body).encode())
    assert charged.usage.output_tokens == 2050 and charged.cost == Decimal("0.03375")


# --- A reported service tier with no known price: one warning per model and tier -------


def test_an_unpriced_reported_tier_is_warned_of_once_per_model_and_tier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A gateway that echoes a tier of its own on every response logs it once, not per call.
    def answer(model: str, tier: str) -> bytes:
        usage = {"prompt_tokens": 10, "completion_tokens": 5}
        body = {"object": "chat.completion", "model": model, "choices": [], "usage": usage}
        return json.dumps({**body, "service_tier": tier}).encode()

    with caplog.at_level("WARNING", logger="burnmap.charge"):
        for _ in range(3):
            settle(CHAT, answer("gpt-4o", "gateway-standard"))
        assert len(caplog.records) == 1 and "'gateway-standard'" in caplog.text
        settle(CHAT, answer("gpt-4o", "gateway-bulk"), extra={"model": "gpt-4o"})
        settle(CHAT, answer("gpt-4o-mini", "gateway-standard"), extra={"model": "gpt-4o-mini"})
    assert len(caplog.records) == 3
