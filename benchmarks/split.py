"""Where a non-streamed call's overhead goes: inside the transport, or in the SDK's own work.

Run with ``.venv/bin/python benchmarks/split.py`` (not part of ``make bench``, not run by
the tests). The same ``anthropic.Anthropic(...).messages.create`` call as ``run.py``'s
first row, on five transports around the same ``httpx2.MockTransport``:

- **bare**: the mock alone;
- **floor**: ``run.FloorTransport`` (parse the request, read the usage from the response);
- **burnmap**: ``burnmap.Transport``;
- **shadow**: the mock alone answers the SDK, but before it does, the same request is sent
  through ``burnmap.Transport`` (another mock) and its response read and closed. The SDK
  gets exactly what it gets from **bare**; burnmap's work still runs on every call;
- **sketch**: ``_Sketch``, the steps a budget transport takes, each reduced to its least
  (see its docstring for what it leaves out): how close to the floor a budget transport
  written in Python can come.

A timing layer around each transport splits each call's CPU time into **inside** (the
transport's ``handle_request`` and the reading of the stream it returns) and **outside**
(everything else: the SDK building the request and parsing the response, httpx2's client).
If burnmap cost only its own time, **outside** would be the same in every row. The rounds
are interleaved as in ``run.py`` (its ``interleaved_many``): totals are medians across rounds,
the time inside a mean over them, in µs per call.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
from _table import format_table
from run import UNREACHED, WIRE, FloorStream, FloorTransport, interleaved_many, json_handler

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


class _SketchStream(FloorStream):
    def __init__(self, inner: Any, transport: _Sketch, hold: int, model: str) -> None:
        super().__init__(inner)
        self._transport = transport
        self._hold = hold
        self._model = model

    def __iter__(self) -> Iterator[bytes]:
        yield from super().__iter__()
        usage = self.usage
        rates = _SKETCH_RATES[self._model]
        writes = usage.get("cache_creation") or {}
        cost = int(
            usage.get("input_tokens", 0) * rates[0]
            + usage.get("output_tokens", 0) * rates[1]
            + writes.get("ephemeral_5m_input_tokens", 0) * rates[2]
            + writes.get("ephemeral_1h_input_tokens", 0) * rates[3]
            + usage.get("cache_read_input_tokens", 0) * rates[4]
        )
        self._transport.settle(self._hold, cost, (self._model, usage, cost, self._hold))


# USD per million tokens of claude-sonnet-4-6: input, output, 5m write, 1h write, read,
# and its context window.
_SKETCH_RATES = {"claude-sonnet-4-6": (3.0, 15.0, 3.75, 6.0, 0.3, 200_000)}


class _Sketch(httpx2.BaseTransport):
    """Each step of a budget transport reduced to its least, in one class: parse the
    request; bound it (body bytes x 1.1, or the window with tools; max_tokens) at float
    rates; digest it for a repeat check; reserve under a lock; forward; read the usage
    from the response's tail; price it; settle and keep a record. Left out, compared with
    burnmap: exact (Decimal) money, validation and clear errors, media, server tools and
    tiers, the loop triggers' windows, nested runs and standing budgets, encodings,
    streams, both HTTP stacks, and guarding the response against a meter that fails."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._spent = 0
        self._held = 0
        self._limit = 10**18
        self._seen: dict[str, int] = {}
        self.records: list[tuple[Any, ...]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        asked = json.loads(body)
        model = asked["model"]
        rates = _SKETCH_RATES[model]
        window = rates[5]
        tokens = window if asked.get("tools") else min(len(body) * 11 // 10 + 1064, window)
        hold = int(tokens * max(rates[0], rates[2], rates[3]) + asked["max_tokens"] * rates[1])
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        with self._lock:
            if self._spent + self._held + hold > self._limit:
                raise RuntimeError("over budget")
            self._held += hold
            self._seen[digest] = self._seen.get(digest, 0) + 1
        response = self._inner.handle_request(request)
        response.stream = _SketchStream(response.stream, self, hold, model)
        return response

    def settle(self, hold: int, cost: int, record: tuple[Any, ...]) -> None:
        with self._lock:
            self._held -= hold
            self._spent += cost
            self.records.append(record)


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
        "sketch": _Timed(_Sketch(mock())),
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
    print("anthropic messages.create through five transports (µs of CPU per call)")
    header = ("transport", "total", "vs bare", "inside", "outside", "outside vs bare")
    print(format_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
