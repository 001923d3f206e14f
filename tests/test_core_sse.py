"""The SSE decoder: any chunking of a stream yields the same events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from burnmap._core.sse import SSEDecoder, SSEEvent
from tests.conftest import wire

STREAMS = [
    wire("anthropic/messages_stream.sse"),
    wire("anthropic/messages_stream_tools.sse"),
    wire("openai/chat_stream_usage.sse"),
    wire("openai/responses_stream.sse"),
    wire("providers/azure_chat_stream_usage.sse"),
]


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, last = [], 0
    for p in points:
        parts.append(data[last:p])
        last = p
    parts.append(data[last:])
    return parts


@given(st.sampled_from(STREAMS), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_yields_the_same_events(stream: bytes, cuts: list[int]) -> None:
    assert decode(split(stream, cuts)) == decode([stream])


@given(
    st.sampled_from(STREAMS),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_line_endings_are_equivalent(stream: bytes, eol: bytes, cuts: list[int]) -> None:
    converted = stream.replace(b"\n", eol)
    assert decode(split(converted, cuts)) == decode([stream])


def test_fields_comments_and_multiline_data() -> None:
    events = decode([b": keepalive\nevent: x\ndata: a\ndata:b\nid: 7\nretry: 5\n\n"])
    assert events == [SSEEvent(b"x", b"a\nb")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode([b"event: ping\n\n"]) == []


def test_unterminated_last_event_is_still_seen_at_close() -> None:
    assert decode([b"data: [DONE]"]) == [SSEEvent(b"", b"[DONE]")]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_bytes_never_raise_and_chunking_is_invisible(
    data: bytes, cuts: list[int]
) -> None:
    assert decode(split(data, cuts)) == decode([data])


def test_holds_at_most_one_partial_line() -> None:
    decoder = SSEDecoder()
    for _ in range(10_000):
        decoder.feed(b'event: content_block_delta\ndata: {"x": 1}\n\n')
    decoder.feed(b"data: partial")
    assert decoder.buffered == len(b"data: partial")
