"""AWS event stream framing (Bedrock streams) and the Bedrock stream meter."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burnmap._core.decode import DecodeError
from burnmap._core.eventstream import EventStreamDecoder, encode_message
from burnmap._core.meter import BedrockStreamMeter

_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
_headers = st.dictionaries(_names, st.text(max_size=20), max_size=4)
_messages = st.lists(st.tuples(_headers, st.binary(max_size=300)), max_size=6)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(_messages, st.lists(st.integers(min_value=0), max_size=8))
def test_messages_come_back_whatever_the_chunking(
    messages: list[tuple[dict[str, str], bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_message(h, p) for h, p in messages)
    decoder = EventStreamDecoder()
    got = [m for chunk in _split(wire, cuts) for m in decoder.feed(chunk)]
    assert got == messages
    assert decoder.pending == 0


@given(_messages.filter(bool), st.data())
def test_any_changed_byte_is_caught(
    messages: list[tuple[dict[str, str], bytes]], data: st.DataObject
) -> None:
    wire = bytearray(b"".join(encode_message(h, p) for h, p in messages))
    at = data.draw(st.integers(0, len(wire) - 1))
    wire[at] ^= data.draw(st.integers(1, 255))
    decoder = EventStreamDecoder()
    try:
        got = decoder.feed(bytes(wire))
    except DecodeError:
        return
    # A changed length can only leave the stream waiting for bytes that never come.
    assert got != messages and decoder.pending > 0


def test_garbage_is_not_buffered_without_end() -> None:
    with pytest.raises(DecodeError, match="checksum"):
        EventStreamDecoder().feed(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")


def _chunk(event: dict[str, Any], message_type: str = "event") -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    headers = {":message-type": message_type, ":event-type": "chunk"}
    return encode_message(headers, payload.encode())


STREAM = b"".join(
    [
        _chunk(
            {
                "type": "message_start",
                "message": {
                    "model": "claude-sonnet-4-5",
                    "usage": {"input_tokens": 40, "cache_read_input_tokens": 900},
                },
            }
        ),
        *(
            _chunk({"type": "content_block_delta", "index": 0, "delta": {"text": "word " * 3}})
            for _ in range(20)
        ),
        _chunk({"type": "message_delta", "usage": {"output_tokens": 77}}),
        _chunk({"type": "message_stop"}),
    ]
)


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_bedrock_meter_reads_usage_whatever_the_chunking(cuts: list[int]) -> None:
    meter = BedrockStreamMeter()
    for chunk in _split(STREAM, cuts):
        meter.feed(chunk)
    got = meter.result()
    assert got.usage is not None and got.complete
    assert (got.usage.input_tokens, got.usage.cache_read_tokens, got.usage.output_tokens) == (
        40,
        900,
        77,
    )
    assert got.model == "claude-sonnet-4-5"


def test_bedrock_meter_on_a_cut_stream_counts_what_passed() -> None:
    meter = BedrockStreamMeter()
    meter.feed(STREAM[: len(STREAM) * 2 // 3])
    got = meter.result()
    assert got.usage is not None and not got.complete
    assert got.usage.input_tokens == 40
    assert got.output_tokens_seen > 0


def test_bedrock_meter_gives_up_on_what_is_not_an_event_stream() -> None:
    meter = BedrockStreamMeter()
    meter.feed(STREAM[:100])
    meter.feed(b"\x00" * 64)  # a corrupted frame: nothing the meter read is trusted
    meter.feed(STREAM[100:])
    assert meter.failed  # the transport charges the call its bound
    got = meter.result()
    assert (got.usage, got.complete) == (None, False)


def test_bedrock_exception_frames_end_the_stream_without_usage_invented() -> None:
    meter = BedrockStreamMeter()
    meter.feed(
        STREAM[: STREAM.index(_chunk({"type": "message_delta", "usage": {"output_tokens": 77}}))]
    )
    meter.feed(encode_message({":message-type": "exception", ":exception-type": "x"}, b"{}"))
    got = meter.result()
    assert got.usage is not None and got.usage.output_tokens == 0 and not got.complete
