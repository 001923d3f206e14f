"""Content-encoding decoding for metering.

A transport sees response bodies as they travel, still compressed. The meter decodes a
copy itself (gzip, deflate, and br/zstd where their modules are installed); the caller
still receives the original bytes, which its HTTP client decodes as usual.
"""

from __future__ import annotations

import zlib
from typing import Protocol

__all__ = [
    "BodyDecoder",
    "DecodeError",
]


class DecodeError(Exception):
    """The body could not be decoded (unsupported or corrupt encoding)."""


class _Step(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)
        self._undecided = wbits == zlib.MAX_WBITS
        """"deflate" is raw DEFLATE on some servers, zlib-wrapped on others: the first two
        bytes (a zlib header, or not) decide, and are held until both have arrived."""
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        if self._undecided:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            self._undecided = False
            try:
                return self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            return self._obj.decompress(data)
        except zlib.error as exc:
            raise DecodeError(f"corrupt compressed body: {exc}") from exc

    def flush(self) -> bytes:
        try:
            if self._head:  # a body of one byte
                return self._obj.decompress(self._head) + self._obj.flush()
            return self._obj.flush()
        except zlib.error as exc:  # pragma: no cover - zlib rarely fails at flush
            raise DecodeError(f"corrupt compressed body: {exc}") from exc


class _Brotli:
    def __init__(self) -> None:
        try:
            import brotli  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            try:
                import brotlicffi as brotli  # type: ignore[import-not-found, no-redef, unused-ignore]
            except ImportError as exc:
                raise DecodeError("br-encoded body and no brotli module installed") from exc
        decompressor = brotli.Decompressor()
        # brotli names it process(), brotlicffi decompress().
        self._process = getattr(decompressor, "process", None) or decompressor.decompress

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._process(data)
        except Exception as exc:
            raise DecodeError(f"corrupt br body: {exc}") from exc
        return bytes(out)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise DecodeError("zstd-encoded body and no zstandard module installed") from exc
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.decompress(data))
        except Exception as exc:
            raise DecodeError(f"corrupt zstd body: {exc}") from exc

    def flush(self) -> bytes:
        return b""


def _step(name: str) -> _Step | None:
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return _Zlib(zlib.MAX_WBITS | 16)
    if name == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if name == "br":
        return _Brotli()
    if name == "zstd":
        return _Zstd()
    raise DecodeError(f"unsupported content-encoding {name!r}")


class BodyDecoder:
    """Decodes a body encoded with ``content-encoding`` (several codings apply in order).

    >>> import gzip
    >>> d = BodyDecoder("gzip")
    >>> blob = gzip.compress(b"hello")
    >>> d.feed(blob[:5]) + d.feed(blob[5:]) + d.flush()
    b'hello'
    """

    __slots__ = ("_steps",)

    def __init__(self, content_encoding: str | None) -> None:
        if not content_encoding:
            self._steps: list[_Step] = []
            return
        names = [part.strip().lower() for part in content_encoding.split(",")]
        # Codings are listed in the order they were applied: undo them last to first.
        steps = [_step(name) for name in reversed(names)]
        self._steps = [step for step in steps if step is not None]

    def feed(self, data: bytes) -> bytes:
        for step in self._steps:
            data = step.feed(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for step in self._steps:
            data = step.feed(data) + step.flush() if data else step.flush()
        return data
