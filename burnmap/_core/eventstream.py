"""AWS event stream framing (``application/vnd.amazon.eventstream``), as Bedrock streams.

Each message is a 12-byte prelude (total length, headers length, CRC-32 of those 8 bytes),
headers, a payload and a CRC-32 of everything before it. Bedrock's
``invoke-with-response-stream`` sends one ``chunk`` event per Anthropic stream event, its
payload ``{"bytes": "<base64 of the event's JSON>"}``.

>>> frame = encode_message({":message-type": "event", ":event-type": "chunk"}, b'{"bytes":""}')
>>> decoder = EventStreamDecoder()
>>> decoder.feed(frame[:5]), decoder.feed(frame[5:])
([], [({':message-type': 'event', ':event-type': 'chunk'}, b'{"bytes":""}')])
"""

from __future__ import annotations

import struct
import zlib

from burnmap._core.decode import DecodeError

__all__ = ["EventStreamDecoder", "encode_message"]

MAX_MESSAGE = 16 * 1024 * 1024
"""A frame larger than this is taken for garbage rather than buffered (AWS caps at 16 MiB)."""

_PRELUDE = struct.Struct(">III")
# Header value types (the AWS event stream spec) and the bytes each fixed-size one takes.
_STRING, _BYTES = 7, 6
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamDecoder:
    """Frames from bytes fed in any chunking; holds at most one partial message."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, str], bytes]]:
        """The whole messages completed by ``data``: (string headers, payload) each.
        Raises ``DecodeError`` on a frame that is not one (bad length or checksum)."""
        buffer = self._buffer
        buffer += data
        messages = []
        while len(buffer) >= _PRELUDE.size:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer)
            if zlib.crc32(buffer[:8]) != prelude_crc:
                raise DecodeError("not an AWS event stream (prelude checksum mismatch)")
            if not 16 <= total <= MAX_MESSAGE or headers_length > total - 16:
                raise DecodeError(f"AWS event stream frame of impossible size {total}")
            if len(buffer) < total:
                break
            message = bytes(buffer[:total])
            del buffer[:total]
            if zlib.crc32(message[:-4]) != int.from_bytes(message[-4:], "big"):
                raise DecodeError("AWS event stream message checksum mismatch")
            end = 12 + headers_length
            messages.append((_headers(message[12:end]), message[end:-4]))
        return messages

    @property
    def pending(self) -> int:
        """Bytes of a message not complete yet (non-zero at the end: a cut stream)."""
        return len(self._buffer)


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = raw[at]
            at += 1
            if kind in (_STRING, _BYTES):
                length = int.from_bytes(raw[at : at + 2], "big")
                value = raw[at + 2 : at + 2 + length]
                at += 2 + length
                if kind == _STRING:
                    headers[name] = value.decode()
            elif kind in _FIXED:
                at += _FIXED[kind]
            else:
                raise DecodeError(f"AWS event stream header of unknown type {kind}")
    except (IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(f"malformed AWS event stream headers ({exc})") from None
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers: what Bedrock sends (and what tests serve)."""
    raw = b"".join(
        bytes([len(name.encode())])
        + name.encode()
        + bytes([_STRING])
        + len(value.encode()).to_bytes(2, "big")
        + value.encode()
        for name, value in headers.items()
    )
    total = 16 + len(raw) + len(payload)
    prelude = struct.pack(">II", total, len(raw))
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    body = prelude + raw + payload
    return body + zlib.crc32(body).to_bytes(4, "big")
