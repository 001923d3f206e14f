"""An incremental Server-Sent Events decoder that holds at most one partial line.

Bytes arrive in arbitrary chunks (a chunk may end inside a line, inside a ``\\r\\n``, or
inside a multi-byte UTF-8 character); events come out as soon as their terminating blank
line arrives. Field values stay ``bytes``: the meter only decodes the few events that
carry usage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SSEDecoder",
    "SSEEvent",
]


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class SSEEvent:
    event: bytes
    """The ``event:`` field, ``b""`` when absent (the spec's default type "message")."""
    data: bytes
    """``data:`` lines joined by ``\\n``."""


class SSEDecoder:
    """Feed bytes, get complete events.

    >>> d = SSEDecoder()
    >>> d.feed(b"event: ping\\ndata: {}\\n\\ndata: a")
    [SSEEvent(event=b'ping', data=b'{}')]
    >>> d.feed(b"\\ndata: b\\r\\n\\r\\n")
    [SSEEvent(event=b'', data=b'a\\nb')]
    """

    __slots__ = ("_after_cr", "_data", "_event", "_has_data", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._after_cr = False
        self._event = b""
        self._data: list[bytes] = []
        self._has_data = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._after_cr:
            # The previous chunk ended with CR, already taken as a line end: a LF right
            # after it is the second half of that CRLF.
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._partial + chunk if self._partial else chunk
        if b"\r" in buffer:
            self._after_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._has_data:
                    events.append(SSEEvent(self._event, b"\n".join(self._data)))
                self._event = b""
                self._data = []
                self._has_data = False
                continue
            name, sep, value = line.partition(b":")
            if not name:
                continue  # a comment line
            if sep and value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._has_data = True
            elif name == b"event":
                self._event = value
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still dispatched.

        (The spec says to discard it; providers' last event is always terminated, and a
        stream cut inside an event is better metered than ignored.)
        """
        events = self.feed(b"\n\n") if self._partial or self._has_data else []
        self._partial = b""
        self._after_cr = False
        return events

    @property
    def buffered(self) -> int:
        """Bytes held back: the partial line plus the current event's data."""
        return len(self._partial) + sum(len(part) for part in self._data)
