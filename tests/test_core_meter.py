"""Meters: usage from every wire format, whatever the chunking or compression."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burnmap._core.decode import BodyDecoder, DecodeError
from burnmap._core.meter import (
    JSONMeter,
    Metered,
    SSEMeter,
    UsageChunkFilter,
    json_result,
    quick_json_result,
)
from burnmap._core.sse import SSEDecoder
from burnmap._core.usage import Usage
from tests.conftest import wire
from tests.test_core_sse import split


def meter_stream(shape: str, kind: str, chunks: list[bytes]) -> Metered:
    meter = SSEMeter(shape, kind)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.result()


SSE_CASES = [
    (
        "anthropic/messages_stream.sse",
        "anthropic",
        "messages",
        Usage(input_tokens=14, output_tokens=23),
    ),
    (
        "anthropic/messages_stream_tools.sse",
        "anthropic",
        "messages",
        Usage(
            input_tokens=3120,
            output_tokens=187,
            cache_read_tokens=9876,
            reasoning_tokens=61,
            web_searches=1,
        ),
    ),
    (
        "openai/chat_stream_usage.sse",
        "openai",
        "chat",
        Usage(input_tokens=13, output_tokens=84, reasoning_tokens=64),
    ),
    (
        "providers/azure_chat_stream_usage.sse",
        "openai",
        "chat",
        Usage(input_tokens=9, output_tokens=2),
    ),
]


@pytest.mark.parametrize(("name", "shape", "kind", "expected"), SSE_CASES)
def test_stream_usage(name: str, shape: str, kind: str, expected: Usage) -> None:
    result = meter_stream(shape, kind, [wire(name)])
    assert result.complete
    assert result.usage == expected


def test_responses_stream_usage_from_completed_event() -> None:
    data = wire("openai/responses_stream.sse")
    completed = next(e for e in SSEDecoder().feed(data) if e.event == b"response.completed")
    raw = json.loads(completed.data)["response"]["usage"]
    result = meter_stream("openai", "responses", [data])
    assert result.complete
    assert result.usage is not None
    assert result.usage.output_tokens == raw["output_tokens"]
    assert result.usage.total_input_tokens == raw["input_tokens"]


@given(
    st.sampled_from(SSE_CASES),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_chunking_meters_the_same(case: tuple[str, str, str, Usage], cuts: list[int]) -> None:
    name, shape, kind, expected = case
    assert meter_stream(shape, kind, split(wire(name), cuts)).usage == expected


@given(
    st.sampled_from(SSE_CASES),
    st.sampled_from([b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_other_line_endings_meter_the_same(
    case: tuple[str, str, str, Usage], eol: bytes, cuts: list[int]
) -> None:
    name, shape, kind, expected = case
    data = wire(name).replace(b"\n", eol)
    assert meter_stream(shape, kind, split(data, cuts)).usage == expected


def test_compact_framing_without_spaces_meters_the_same() -> None:
    data = (
        wire("anthropic/messages_stream.sse")
        .replace(b"event: ", b"event:")
        .replace(b"data: ", b"data:")
    )
    assert meter_stream("anthropic", "messages", [data]).usage == SSE_CASES[0][3]


def test_stream_without_usage_is_incomplete_with_an_output_estimate() -> None:
    result = meter_stream("openai", "chat", [wire("openai/chat_stream_no_usage.sse")])
    assert result.usage is None
    assert not result.complete
    assert result.output_tokens_seen > 0


def test_anthropic_stream_cut_after_message_start_keeps_the_input() -> None:
    data = wire("anthropic/messages_stream.sse")
    cut = data[: data.index(b"event: message_delta")]
    result = meter_stream("anthropic", "messages", [cut])
    assert not result.complete
    assert result.usage is not None
    assert result.usage.input_tokens == 14
    assert result.output_tokens_seen >= 1


def test_anthropic_error_event_after_200_is_not_complete() -> None:
    result = meter_stream("anthropic", "messages", [wire("anthropic/messages_stream_error.sse")])
    assert not result.complete


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        (
            "anthropic/messages.response.json",
            "anthropic",
            Usage(
                input_tokens=1873,
                output_tokens=512,
                cache_read_tokens=10240,
                cache_write_tokens=1500,
                cache_write_1h_tokens=650,
                web_searches=2,
            ),
        ),
        (
            "openai/chat.response.json",
            "openai",
            Usage(
                input_tokens=270, output_tokens=202, cache_read_tokens=2048, reasoning_tokens=192
            ),
        ),
        (
            "openai/responses.response.json",
            "openai",
            Usage(input_tokens=256, output_tokens=91, cache_read_tokens=1280, reasoning_tokens=64),
        ),
        ("openai/embeddings.response.json", "openai", Usage(input_tokens=6)),
        (
            "openai/chat_audio.response.json",
            "openai",
            Usage(
                input_tokens=95, output_tokens=128, input_audio_tokens=74, output_audio_tokens=111
            ),
        ),
        (
            "providers/deepseek_chat.response.json",
            "openai",
            Usage(input_tokens=58, output_tokens=11, cache_read_tokens=1152),
        ),
        (
            "providers/openrouter_chat.response.json",
            "openai",
            Usage(
                input_tokens=94, output_tokens=2, cache_write_tokens=100, cost_reported="0.000612"
            ),
        ),
    ],
)
def test_json_usage(name: str, shape: str, expected: Usage) -> None:
    meter = JSONMeter(shape)
    data = wire(name)
    for i in range(0, len(data), 7):
        meter.feed(data[i : i + 7])
    result = meter.result()
    assert result.complete
    assert result.usage == expected


def test_json_meter_on_garbage_reports_nothing() -> None:
    meter = JSONMeter("openai")
    meter.feed(b"<html>gateway error</html>")
    assert meter.result() == Metered(None, None, False, 0)


@pytest.mark.parametrize(
    "compress",
    [
        gzip.compress,
        zlib.compress,
        lambda data: zlib.compress(data)[2:-4],  # raw deflate, as some servers send it
    ],
)
def test_decoder_undoes_compression_in_any_chunking(compress: object) -> None:
    data = wire("anthropic/messages_stream.sse")
    blob = compress(data)  # type: ignore[operator]
    encoding = "gzip" if blob[:2] == b"\x1f\x8b" else "deflate"
    decoder = BodyDecoder(encoding)
    out = b"".join(decoder.feed(blob[i : i + 5]) for i in range(0, len(blob), 5))
    assert out + decoder.flush() == data


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20))
def test_deflate_of_either_kind_decodes_whatever_its_first_chunks(sizes: list[int]) -> None:
    """Raw and zlib-wrapped deflate are told apart by their first two bytes, even when
    they arrive one at a time."""
    data = wire("anthropic/messages_stream.sse")
    for blob in (zlib.compress(data), zlib.compress(data)[2:-4]):
        decoder = BodyDecoder("deflate")
        out, at = [], 0
        for size in sizes:
            out.append(decoder.feed(blob[at : at + size]))
            at += size
        out.append(decoder.feed(blob[at:]))
        assert b"".join(out) + decoder.flush() == data


def test_unknown_encoding_is_reported() -> None:
    with pytest.raises(DecodeError, match="unsupported content-encoding"):
        BodyDecoder("compress")


def test_corrupt_gzip_is_reported() -> None:
    decoder = BodyDecoder("gzip")
    with pytest.raises(DecodeError):
        decoder.feed(b"\x1f\x8b\x08\x00garbage-garbage-garbage")


def filtered(chunks: list[bytes]) -> bytes:
    f = UsageChunkFilter()
    return b"".join(f.feed(c) for c in chunks) + f.flush()


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_usage_filter_restores_the_stream_the_caller_asked_for(cuts: list[int]) -> None:
    with_usage = wire("openai/chat_stream_usage.sse")
    out = filtered(split(with_usage, cuts))
    events = SSEDecoder().feed(out)
    assert all(b'"usage"' not in e.data for e in events)
    assert events[-1].data == b"[DONE]"
    assert len(events) == len(SSEDecoder().feed(with_usage)) - 1
    expected = SSEDecoder().feed(wire("openai/chat_stream_no_usage.sse"))

    # The two captures differ only in ids and obfuscation padding: compare the choices.
    def choices(evs: list[object]) -> list[object]:
        return [
            json.loads(e.data)["choices"]  # type: ignore[attr-defined]
            for e in evs
            if e.data != b"[DONE]"  # type: ignore[attr-defined]
        ]

    assert choices(events) == choices(expected)  # type: ignore[arg-type]


def test_usage_filter_keeps_azure_prompt_filter_chunk() -> None:
    data = wire("providers/azure_chat_stream_usage.sse")
    events = SSEDecoder().feed(filtered([data]))
    assert json.loads(events[0].data)["prompt_filter_results"]
    assert all(b'"usage":{' not in e.data for e in events)


# -- the quick JSON path agrees with a whole parse ---------------------------------------
_KEYS = st.sampled_from(
    ["usage", "model", "service_tier", "id", "choices", "data", "output", "reasoning", "x"]
)
_TEXT = st.text(alphabet=st.sampled_from('ab{}[]",:\\ model"usage'), max_size=12)
_SCALARS = st.none() | st.booleans() | st.integers(-5, 10**6) | _TEXT
_TIERS = st.sampled_from(["default", "flex", "priority", "scale"]) | _SCALARS
_USAGE = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**6),
        "prompt_tokens": st.integers(0, 10**6),
        "completion_tokens": st.integers(0, 10**6),
        "cache_read_input_tokens": st.integers(0, 10**6),
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 99)}),
    },
)
_VALUES = st.recursive(
    _SCALARS | _USAGE,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_KEYS | _TEXT, inner | _TIERS, max_size=4)
    ),
    max_leaves=12,
)


def _with_usage(members: dict[str, object], usage: object, position: int) -> dict[str, object]:
    """``members`` with a top-level ``usage`` member at ``position``."""
    items = [(k, v) for k, v in members.items() if k != "usage"]
    items.insert(min(position, len(items)), ("usage", usage))
    return dict(items)


_MEMBERS = st.dictionaries(
    _KEYS | _TEXT,
    _VALUES | _USAGE | st.sampled_from(["gpt-5", "claude-sonnet-4-6", "emb-3"]) | _TIERS,
    max_size=7,
)
_BODIES = _MEMBERS | st.builds(_with_usage, _MEMBERS, _USAGE, st.integers(0, 7))


@given(_BODIES, st.sampled_from(["anthropic", "openai"]), st.sampled_from([None, 2]))
def test_quick_json_path_agrees_with_a_whole_parse(
    obj: dict[str, object], shape: str, indent: int | None
) -> None:
    """Whatever the layout, reading the usage, model and tier from the body's tail gives
    what parsing the whole body gives, or declines (and the whole body is parsed)."""
    body = json.dumps(obj, indent=indent).encode()
    quick = quick_json_result(shape, body)
    if quick is not None:
        assert quick == json_result(shape, body)


@pytest.mark.parametrize(
    ("name", "quick"),
    [
        ("anthropic/messages.response.json", True),
        ("openai/chat.response.json", True),
        ("openai/embeddings.response.json", True),
        ("openai/chat_audio.response.json", True),
        ("providers/deepseek_chat.response.json", True),
        ("providers/openrouter_chat.response.json", True),
        # Responses name their service tier long before usage: parsed whole.
        ("openai/responses.response.json", False),
    ],
)
def test_quick_json_path_reads_the_apis_layouts(name: str, quick: bool) -> None:
    body = wire(name)
    shape = "anthropic" if name.startswith("anthropic") else "openai"
    result = quick_json_result(shape, body)
    assert (result is not None) is quick
    assert _metered(shape, body) == json_result(shape, body)


def _metered(shape: str, body: bytes) -> Metered:
    meter = JSONMeter(shape)
    meter.feed(body)
    return meter.result()


def test_responses_stream_counts_the_hosted_tool_calls_billed_per_use() -> None:
    response = {
        "object": "response",
        "model": "gpt-5",
        "output": [
            {"type": "image_generation_call", "status": "completed", "result": "iVBO"},
            {"type": "file_search_call", "status": "completed"},
            {"type": "web_search_call", "status": "completed"},
            {"type": "web_search_call", "status": "completed"},
            {"type": ["odd"]},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    event = json.dumps({"type": "response.completed", "response": response})
    data = f"event: response.completed\ndata: {event}\n\n".encode()
    result = meter_stream("openai", "responses", [data])
    assert result.complete and result.usage is not None
    usage = result.usage
    assert (usage.images_generated, usage.file_searches, usage.web_searches) == (1, 1, 2)
    whole = json.dumps(response).encode()
    assert json_result("openai", whole).usage == usage
    assert quick_json_result("openai", whole) is None  # counted by a whole parse


def _without_event_lines(data: bytes, named: bytes | None = None) -> bytes:
    """The same stream as a gateway may send it: data lines only (``named``: every event
    named that instead, as the spec's default ``message``)."""
    lines = [line for line in data.split(b"\n") if not line.startswith(b"event:")]
    stream = b"\n".join(lines)
    if named is not None:
        stream = stream.replace(b"data: ", b"event: " + named + b"\ndata: ")
    return stream


NAMED_CASES = [
    ("anthropic/messages_stream.sse", "anthropic", "messages"),
    ("anthropic/messages_stream_tools.sse", "anthropic", "messages"),
    ("openai/responses_stream.sse", "openai", "responses"),
]


@given(
    st.sampled_from(NAMED_CASES),
    st.sampled_from([None, b"message"]),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_streams_without_event_lines_meter_as_with_them(
    case: tuple[str, str, str], named: bytes | None, eol: bytes, cuts: list[int]
) -> None:
    # Gateways and proxies often drop the `event:` lines; the SDKs read the type from
    # the data, so these streams work for the caller and must be billed the same.
    name, shape, kind = case
    data = wire(name)
    expected = meter_stream(shape, kind, [data])
    assert expected.complete and expected.usage is not None
    bare = _without_event_lines(data, named).replace(b"\n", eol)
    got = meter_stream(shape, kind, split(bare, cuts))
    assert (got.usage, got.model, got.complete) == (
        expected.usage,
        expected.model,
        expected.complete,
    )


@pytest.mark.parametrize(("name", "shape", "kind"), NAMED_CASES)
def test_stream_without_event_lines_cut_short_counts_its_output(
    name: str, shape: str, kind: str
) -> None:
    data = wire(name)
    last_delta = data.rindex(b'delta"')
    cut = _without_event_lines(data[: data.index(b"\n\n", last_delta) + 2])
    got = meter_stream(shape, kind, [cut])
    assert not got.complete
    assert got.output_tokens_seen > 0


def test_data_only_stream_whose_text_mentions_an_event_line_still_meters() -> None:
    # A text delta holding "event: " must not make the meter look for event lines.
    data = wire("anthropic/messages_stream.sse").replace(b'"text":"', b'"text":"\\nevent: x ', 1)
    bare = _without_event_lines(data)
    assert b"event: " in bare
    assert meter_stream("anthropic", "messages", [bare]).usage == SSE_CASES[0][3]


def _mixed(data: bytes, forms: list[str]) -> bytes:
    """The same stream with each event in one of ``forms`` (cycled): as sent (``named``),
    without its ``event:`` line (``bare``), named the default ``message``, or with an
    ``id:`` line or a comment first."""
    events = []
    for i, event in enumerate(data.split(b"\n\n")):
        form = forms[i % len(forms)]
        lines = event.split(b"\n")
        if form == "bare":
            lines = [line for line in lines if not line.startswith(b"event:")]
        elif form == "message":
            lines = [b"event: message" if line.startswith(b"event:") else line for line in lines]
        elif form in ("id", "comment") and event:
            lines.insert(0, b"id: 7" if form == "id" else b": keep-alive")
        events.append(b"\n".join(lines))
    return b"\n\n".join(events)


@given(
    st.sampled_from(NAMED_CASES),
    st.lists(
        st.sampled_from(["named", "bare", "message", "id", "comment"]), min_size=1, max_size=12
    ),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_streams_mixing_named_and_unnamed_events_meter_the_same_in_any_chunking(
    case: tuple[str, str, str], forms: list[str], eol: bytes, cuts: list[int]
) -> None:
    # A gateway may pass some events with their `event:` line and others without: the
    # usage must not depend on which came first or on where the chunks were cut.
    name, shape, kind = case
    data = wire(name)
    expected = meter_stream(shape, kind, [data])
    mixed = _mixed(data, forms).replace(b"\n", eol)
    for chunks in (split(mixed, cuts), [mixed]):
        got = meter_stream(shape, kind, chunks)
        assert (got.usage, got.model, got.complete) == (
            expected.usage,
            expected.model,
            expected.complete,
        )


def _event(name: str | None, obj: dict[str, object]) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(obj).encode() + b"\n\n"


@pytest.mark.parametrize("first_named", [False, True])
def test_mixed_stream_read_whole_or_event_by_event_meters_its_usage(first_named: bool) -> None:
    # Unnamed first and named after: read whole, the input was lost. Named first and
    # unnamed after: charged the 1 output token of message_start for 321.
    usage = {"input_tokens": 1200, "output_tokens": 1}
    start = {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": usage}}
    text = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hi"},
    }
    delta = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 321}}
    rest = [text] * 50 + [delta, {"type": "message_stop"}]
    first = "message_start" if first_named else None
    data = _event(first, start) + b"".join(
        _event(None if first_named else str(event["type"]), event) for event in rest
    )
    per_event = [event + b"\n\n" for event in data.split(b"\n\n") if event]
    for chunks in ([data], per_event):
        got = meter_stream("anthropic", "messages", chunks)
        assert got.usage == Usage(input_tokens=1200, output_tokens=321) and got.complete
