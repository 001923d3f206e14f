"""Where a non-streamed call's overhead goes: inside the transport, or in the SDK's own work.

Run with ``.venv/bin/python benchmarks/split.py`` (not part of ``make bench``, not run by
the tests). The same ``anthropic.Anthropic(...).messages.create`` call as ``run.py``'s
first row, on four transports around the same ``httpx2.MockTransport``:

- **bare**: the mock alone;
- **floor**: ``run.FloorTransport`` (parse the request, read the usage from the response);
- **burnmap**: ``burnmap.Transport``;
- **shadow**: the mock alone answers the SDK, but before it does, the same request is sent
  through ``burnmap.Transport`` (another mock) and its response read and closed. The SDK
  gets exactly what it gets from **bare**; burnmap's work still runs on every call.

A timing layer around each transport splits each call's CPU time into **inside** (the
transport's ``handle_request`` and the reading of the stream it returns) and **outside**
(everything else: the SDK building the request and parsing the response, httpx2's client).
If burnmap cost only its own time, **outside** would be the same in every row. The rounds
are interleaved as in ``run.py`` (its ``interleaved_many``): totals are medians across rounds,
the time inside a mean over them, in µs per call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
from _table import format_table
from run import UNREACHED, WIRE, FloorTransport, interleaved_many, json_handler

import burnmap

ROUNDS = 20
CALLS_PER_ROUND = 100
WARMUP = 200
_clock = time.process_time


class _Inside:
    """Accumulated CPU seconds spent inside one transport."""

    def __init__(self) -> None:
        self.seconds = 0.0


class _TimedStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, inside: _Inside) -> None:
        self._inner = inner
        self._inside = inside

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            start = _clock()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                self._inside.seconds += _clock() - start
            yield chunk

    def close(self) -> None:
        start = _clock()
        try:
            self._inner.close()
        finally:
            self._inside.seconds += _clock() - start


class _Timed(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner
        self.inside = _Inside()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        start = _clock()
        response = self._inner.handle_request(request)
        self.inside.seconds += _clock() - start
        response.stream = _TimedStream(response.stream, self.inside)
        return response


class _Shadow(httpx2.BaseTransport):
    """Runs burnmap on a copy of each request, then answers from the bare mock."""

    def __init__(self, inner: httpx2.BaseTransport, shadowed: httpx2.BaseTransport) -> None:
        self._inner = inner
        self._burnmap = burnmap.Transport(shadowed)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        copy = httpx2.Request(
            request.method, request.url, headers=request.headers, content=request.read()
        )
        shadow = self._burnmap.handle_request(copy)
        shadow.read()
        shadow.close()
        return self._inner.handle_request(request)


def main() -> int:
    body = (WIRE / "anthropic" / "messages.response.json").read_bytes()
    request = json.loads((WIRE / "anthropic" / "messages.request.json").read_text())
    handler = json_handler(body)

    def mock() -> httpx2.MockTransport:
        return httpx2.MockTransport(handler)

    transports = {
        "bare": _Timed(mock()),
        "floor": _Timed(FloorTransport(mock())),
        "burnmap": _Timed(burnmap.Transport(mock())),
        "shadow": _Timed(_Shadow(mock(), mock())),
    }
    calls: dict[str, Callable[[], object]] = {}
    for name, transport in transports.items():
        client = anthropic.Anthropic(api_key="x", http_client=httpx2.Client(transport=transport))
        calls[name] = lambda client=client: client.messages.create(**request)

    with burnmap.run("split", budget=1e9, call_rate_limit=UNREACHED, repeat_limit=UNREACHED):
        for _ in range(WARMUP):
            for fn in calls.values():
                fn()
        for transport in transports.values():
            transport.inside.seconds = 0.0
        totals, _ = interleaved_many(calls, rounds=ROUNDS, repeat=CALLS_PER_ROUND, warmup=0)
    measured = ROUNDS * CALLS_PER_ROUND
    total = {name: totals[name] * 1e6 for name in calls}
    inside = {name: transports[name].inside.seconds / measured * 1e6 for name in calls}
    outside = {name: total[name] - inside[name] for name in calls}
    rows = [
        (
            name,
            f"{total[name]:.1f}",
            f"{total[name] - total['bare']:+.1f}",
            f"{inside[name]:.1f}",
            f"{outside[name]:.1f}",
            f"{outside[name] - outside['bare']:+.1f}",
        )
        for name in calls
    ]
    print("anthropic messages.create through four transports (µs of CPU per call)")
    header = ("transport", "total", "vs bare", "inside", "outside", "outside vs bare")
    print(format_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
