"""burnmap's overhead, measured as ratios against a bare baseline in the same run.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/run.py``); never run by the tests.
Nothing touches the network: every request is answered by ``httpx2.MockTransport``, so the
numbers show burnmap's CPU cost with nothing to hide it. Each comparison is between the
same client built twice, once on the bare mock transport and once on
``burnmap.Transport(mock)``, with all calls inside one ``burnmap.run("bench", budget=1e9)``.
Its loop triggers all do their work on every call (the request digest, the call-rate
window) with limits set out of reach, since the benchmark sends one request over and over.

What is measured:

1. **Non-streamed SDK calls.** ``anthropic.Anthropic(...).messages.create`` and
   ``openai.OpenAI(...).chat.completions.create``, sending the wire fixtures' request
   bodies and answered with their canned responses (``tests/fixtures/wire/*/``). Time
   per call and the ratio burnmap/bare (target <= 1.05x). A third client, measured in
   the same rounds, is a reference with no target: ``FloorTransport`` does only what any
   budget transport must (parse the request body, wrap the response stream, read the
   usage object from the response) and nothing burnmap adds to it.
2. **Stream throughput.** A 10,000-event Anthropic Messages stream (message_start,
   10k text deltas, message_delta with usage, message_stop) and a 10,000-chunk OpenAI Chat
   stream, served in 1-4 KB chunks. They are read at the byte level
   (``client.stream(...)`` + ``iter_bytes()``) and through the SDK (``stream=True``,
   iterating events). The OpenAI request does not ask for ``include_usage``: burnmap adds
   it, the mock honours it (``"usage":null`` on every chunk plus a final usage chunk, as
   OpenAI does) and burnmap filters both out again, so the caller gets the bytes the bare
   client gets (checked). Ratio of throughput burnmap/bare (target >= 0.95x).
3. **Memory.** Peak ``tracemalloc`` memory while 10k and 100k events are read at the
   byte level, bare and through burnmap (the stream bodies are built before tracing
   starts, so only what reading holds counts). Flat means burnmap's 100k peak is within
   1.5x of its 10k peak.

How: the two variants run interleaved in rounds (alternating which goes first), after a
warm-up; the reported figure is the median across rounds, and the ratio is the median of
the per-round ratios. Time is this process's CPU time (``time.process_time``): with no
real I/O it equals wall time on an idle machine, and other load on a shared machine does
not count. After warm-up the heap is frozen (``gc.freeze()``) so that a full
collection of the SDKs' import-time objects, landing in one round, does not decide a
result. Only ratios are judged; absolute times depend on the machine. The script always
exits 0: it prints PASS/FAIL per target.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
from _table import format_table

import burnmap

ROOT = Path(__file__).resolve().parent.parent
WIRE = ROOT / "tests" / "fixtures" / "wire"

# Non-streamed calls: rounds x calls per round, per variant, after a warm-up.
CALL_WARMUP = 200
CALL_ROUNDS = 20
CALLS_PER_ROUND = 100
# Streams.
STREAM_EVENTS = 10_000
BYTE_ROUNDS = 25
SDK_ROUNDS = 9
# Large enough to bound the longest stream here (the mock reports one token per event).
MAX_TOKENS = 128_000
MEMORY_EVENTS = (10_000, 100_000)
CHUNK_BYTES = (1024, 4096)

# Loop-trigger limits the benchmark never reaches (the triggers still run on every call).
UNREACHED = 10**9

CALL_TARGET = 1.05
STREAM_TARGET = 0.95
MEMORY_TARGET = 1.5

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_MODEL = "gpt-5.4-mini"
JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream"}

Handler = Callable[[httpx2.Request], httpx2.Response]


# -- canned responses -------------------------------------------------------------------
def anthropic_stream(events: int) -> bytes:
    """An Anthropic Messages SSE body with ``events`` text deltas."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 14,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    }
    parts = [
        b"event: message_start\ndata: %s\n\n" % _compact(start),
        b"event: content_block_start\ndata: "
        b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
    ]
    parts.extend(
        b"event: content_block_delta\ndata: "
        b'{"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":" token%d"}}\n\n' % i
        for i in range(events)
    )
    parts += [
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
        b"event: message_delta\ndata: "
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":{"output_tokens":%d}}\n\n' % events,
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    return b"".join(parts)


def openai_stream(chunks: int, *, include_usage: bool) -> bytes:
    """An OpenAI Chat SSE body; with ``include_usage``, shaped as OpenAI sends it then."""
    head = (
        b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1777660200,'
        b'"model":"gpt-5.4-mini-2026-03-17","system_fingerprint":null,"choices":'
    )
    tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
    parts = [
        b"data: " + head + b'[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"finish_reason":null}]' + tail
    ]
    parts.extend(
        b"data: " + head + b'[{"index":0,"delta":{"content":" token%d"},'
        b'"finish_reason":null}]' % i + tail
        for i in range(chunks)
    )
    parts.append(b"data: " + head + b'[{"index":0,"delta":{},"finish_reason":"stop"}]' + tail)
    if include_usage:
        usage = b'{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}' % (
            chunks,
            chunks + 12,
        )
        parts.append(b"data: " + head + b'[],"usage":' + usage + b"}\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def cut(body: bytes, seed: int = 1) -> list[tuple[int, int]]:
    """Chunk boundaries of 1-4 KB, as a network read loop would see them."""
    rng = random.Random(seed)
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < len(body):
        end = min(start + rng.randint(*CHUNK_BYTES), len(body))
        bounds.append((start, end))
        start = end
    return bounds


def chunks(body: bytes, bounds: list[tuple[int, int]]) -> Iterator[bytes]:
    for start, end in bounds:
        yield body[start:end]


# The streamed requests, as SDK keyword arguments (OpenAI's without include_usage).
ANTHROPIC_STREAM: dict[str, Any] = {
    "model": ANTHROPIC_MODEL,
    "max_tokens": MAX_TOKENS,
    "stream": True,
    "messages": [{"role": "user", "content": "Count."}],
}
OPENAI_STREAM: dict[str, Any] = {
    "model": OPENAI_MODEL,
    "max_completion_tokens": MAX_TOKENS,
    "stream": True,
    "messages": [{"role": "user", "content": "Count."}],
}


def stream_requests() -> tuple[bytes, bytes]:
    """The Anthropic and OpenAI streamed request bodies."""
    return _compact(ANTHROPIC_STREAM), _compact(OPENAI_STREAM)


def json_handler(body: bytes) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        # An unread body, as a network transport returns it (content= would pre-read it).
        return httpx2.Response(200, headers=JSON_HEADERS, stream=httpx2.ByteStream(body))

    return handle


def anthropic_stream_handler(body: bytes) -> Handler:
    bounds = cut(body)

    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=SSE_HEADERS, content=chunks(body, bounds))

    return handle


def openai_stream_handler(events: int) -> Handler:
    """Serves the usage-less stream, or the usage-bearing one when the request asks."""
    plain = openai_stream(events, include_usage=False)
    with_usage = openai_stream(events, include_usage=True)
    plain_bounds, usage_bounds = cut(plain), cut(with_usage)

    def handle(request: httpx2.Request) -> httpx2.Response:
        options = json.loads(request.content).get("stream_options") or {}
        if options.get("include_usage") is True:
            return httpx2.Response(
                200, headers=SSE_HEADERS, content=chunks(with_usage, usage_bounds)
            )
        return httpx2.Response(200, headers=SSE_HEADERS, content=chunks(plain, plain_bounds))

    return handle


def http_pair(handler: Handler) -> tuple[httpx2.Client, httpx2.Client]:
    """(bare, burnmap) clients over the same handler."""
    bare = httpx2.Client(transport=httpx2.MockTransport(handler))
    metered = httpx2.Client(transport=burnmap.Transport(httpx2.MockTransport(handler)))
    return bare, metered


# -- measuring --------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    cells: tuple[str, ...]
    """The measured figures, formatted for the table."""
    ratio: float
    target: str
    passed: bool | None
    """``None`` for a stress figure that has no target."""


def interleaved(
    bare: Callable[[], object],
    metered: Callable[[], object],
    *,
    rounds: int,
    repeat: int,
    warmup: int,
) -> tuple[float, float, float]:
    """Median seconds per call of each variant, and the median per-round ratio."""
    times, ratios = interleaved_many(
        {"bare": bare, "burnmap": metered}, rounds=rounds, repeat=repeat, warmup=warmup
    )
    return times["bare"], times["burnmap"], ratios["burnmap"]


def interleaved_many(
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int,
    repeat: int,
    warmup: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each variant, and each one's median per-round ratio to
    the first (the baseline). The order of the variants rotates from round to round."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    try:
        for index in range(rounds):
            shift = index % len(order)
            for name, fn in order[shift:] + order[:shift]:
                start = time.process_time()
                for _ in range(repeat):
                    fn()
                times[name].append((time.process_time() - start) / repeat)
    finally:
        gc.unfreeze()
    base = times[order[0][0]]
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        name: statistics.median(m / b for b, m in zip(base, values, strict=True))
        for name, values in times.items()
    }
    return medians, ratios


class FloorStream(httpx2.SyncByteStream):
    """Passes the body on and reads the top-level usage object from its tail."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        parts = []
        for chunk in self._inner:
            parts.append(chunk)
            yield chunk
        body = b"".join(parts)
        usage, _ = _USAGE_DECODER.raw_decode(body[body.rfind(b'"usage"') + 8 :].decode().lstrip())
        self.usage: dict[str, Any] = usage
        self.tokens = usage.get("output_tokens") or usage.get("completion_tokens")

    def close(self) -> None:
        self._inner.close()


class FloorTransport(httpx2.BaseTransport):
    """The least a budget transport must do per call, as a reference: parse the request
    body (its model and max_tokens bound the cost), pass the response through a stream
    wrapper and read the usage object from its tail. No pricing, no reservation, no
    records: whatever burnmap costs beyond this row is its own logic."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.read())
        self.asked = (body.get("model"), body.get("max_tokens"))
        response = self._inner.handle_request(request)
        response.stream = FloorStream(response.stream)
        return response


_USAGE_DECODER = json.JSONDecoder()


def bench_calls() -> list[Result]:
    results = []
    a_body = (WIRE / "anthropic" / "messages.response.json").read_bytes()
    a_request = json.loads((WIRE / "anthropic" / "messages.request.json").read_text())
    o_body = (WIRE / "openai" / "chat.response.json").read_bytes()
    o_request = json.loads((WIRE / "openai" / "chat.request.json").read_text())

    def clients(make: Callable[[httpx2.Client], Any], body: bytes) -> tuple[Any, Any, Any]:
        handler = json_handler(body)
        bare, metered = http_pair(handler)
        floor = httpx2.Client(transport=FloorTransport(httpx2.MockTransport(handler)))
        return make(bare), make(metered), make(floor)

    a_clients = clients(lambda c: anthropic.Anthropic(api_key="x", http_client=c), a_body)
    o_clients = clients(lambda c: openai.OpenAI(api_key="x", http_client=c), o_body)

    def a_call(client: anthropic.Anthropic) -> Callable[[], object]:
        return lambda: client.messages.create(**a_request)

    def o_call(client: openai.OpenAI) -> Callable[[], object]:
        return lambda: client.chat.completions.create(**o_request)

    cases: list[tuple[str, tuple[Callable[[], object], ...]]] = [
        ("anthropic messages.create", tuple(a_call(c) for c in a_clients)),
        ("openai chat.completions.create", tuple(o_call(c) for c in o_clients)),
    ]
    floors = []
    for name, (bare, metered, floor) in cases:
        times, ratios = interleaved_many(
            {"bare": bare, "burnmap": metered, "floor": floor},
            rounds=CALL_ROUNDS,
            repeat=CALLS_PER_ROUND,
            warmup=CALL_WARMUP,
        )
        results.append(
            Result(
                f"call: {name} [us/call]",
                (f"{times['bare'] * 1e6:,.1f}", f"{times['burnmap'] * 1e6:,.1f}"),
                ratios["burnmap"],
                f"<= {CALL_TARGET:.2f}x",
                ratios["burnmap"] <= CALL_TARGET,
            )
        )
        floors.append(
            Result(
                f"call floor: {name} [us/call] (reference)",
                (f"{times['bare'] * 1e6:,.1f}", f"{times['floor'] * 1e6:,.1f}"),
                ratios["floor"],
                "-",
                None,
            )
        )
    return results + floors


def read_bytes(client: httpx2.Client, url: str, body: bytes) -> bytes:
    with client.stream("POST", url, content=body, headers=JSON_HEADERS) as response:
        return b"".join(response.iter_bytes())


def bench_streams() -> list[Result]:
    a_handler = anthropic_stream_handler(anthropic_stream(STREAM_EVENTS))
    o_handler = openai_stream_handler(STREAM_EVENTS)
    a_http = http_pair(a_handler)
    o_http = http_pair(o_handler)
    a_sdk = [anthropic.Anthropic(api_key="x", http_client=c) for c in http_pair(a_handler)]
    o_sdk = [openai.OpenAI(api_key="x", http_client=c) for c in http_pair(o_handler)]

    a_request, o_request = stream_requests()

    # The caller must see exactly what it would see without burnmap.
    for label, (plain, budgeted), url, request in (
        ("anthropic", a_http, ANTHROPIC_URL, a_request),
        ("openai", o_http, OPENAI_URL, o_request),
    ):
        if read_bytes(plain, url, request) != read_bytes(budgeted, url, request):
            print(f"WARNING: the {label} stream read through burnmap differs from the bare one")

    def byte_reader(client: httpx2.Client, url: str, request: bytes) -> Callable[[], object]:
        return lambda: read_bytes(client, url, request)

    def events(create: Callable[..., Any], request: dict[str, Any]) -> Callable[[], object]:
        """Iterate one streamed SDK call to its end."""
        return lambda: sum(1 for _ in create(**request))

    cases: list[tuple[str, Callable[[], object], Callable[[], object], int, int]] = [
        (
            "stream bytes: anthropic",
            byte_reader(a_http[0], ANTHROPIC_URL, a_request),
            byte_reader(a_http[1], ANTHROPIC_URL, a_request),
            BYTE_ROUNDS,
            3,
        ),
        (
            "stream SDK: anthropic",
            events(a_sdk[0].messages.create, ANTHROPIC_STREAM),
            events(a_sdk[1].messages.create, ANTHROPIC_STREAM),
            SDK_ROUNDS,
            1,
        ),
        (
            "stream bytes: openai (+usage filter)",
            byte_reader(o_http[0], OPENAI_URL, o_request),
            byte_reader(o_http[1], OPENAI_URL, o_request),
            BYTE_ROUNDS,
            3,
        ),
        (
            "stream SDK: openai (+usage filter)",
            events(o_sdk[0].chat.completions.create, OPENAI_STREAM),
            events(o_sdk[1].chat.completions.create, OPENAI_STREAM),
            SDK_ROUNDS,
            1,
        ),
    ]
    results = []
    for name, bare, metered, rounds, warmup in cases:
        b, m, time_ratio = interleaved(bare, metered, rounds=rounds, repeat=1, warmup=warmup)
        ratio = 1 / time_ratio  # throughput ratio burnmap/bare
        # The byte-level rows read bytes the mock hands over for free: a stress figure.
        stress = name.startswith("stream bytes")
        results.append(
            Result(
                f"{name} [k events/s]" + (" (stress)" if stress else ""),
                (f"{STREAM_EVENTS / b / 1e3:,.1f}", f"{STREAM_EVENTS / m / 1e3:,.1f}"),
                ratio,
                "-" if stress else f">= {STREAM_TARGET:.2f}x",
                None if stress else ratio >= STREAM_TARGET,
            )
        )
    return results


def peak_memory(client: httpx2.Client, url: str, request: bytes) -> int:
    """Peak traced bytes while reading one stream through ``client`` chunk by chunk."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with client.stream("POST", url, content=request, headers=JSON_HEADERS) as response:
            for _ in response.iter_bytes():
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_memory() -> list[Result]:
    results = []
    a_request, o_request = stream_requests()
    makers: list[tuple[str, Callable[[int], Handler], str, bytes]] = [
        (
            "memory: anthropic stream bytes",
            lambda n: anthropic_stream_handler(anthropic_stream(n)),
            ANTHROPIC_URL,
            a_request,
        ),
        (
            "memory: openai stream bytes (+usage filter)",
            openai_stream_handler,
            OPENAI_URL,
            o_request,
        ),
    ]
    for label, make, url, request in makers:
        peaks: dict[tuple[str, int], int] = {}
        for events in MEMORY_EVENTS:
            handler = make(events)  # the body is built before tracing starts
            for variant, client in zip(("bare", "burnmap"), http_pair(handler), strict=True):
                peak_memory(client, url, request)  # warm-up: first-use caches
                peaks[variant, events] = peak_memory(client, url, request)
                client.close()
        small, large = MEMORY_EVENTS
        ratio = peaks["burnmap", large] / peaks["burnmap", small]
        results.append(
            Result(
                label,
                tuple(f"{peaks[key] / 1024:,.1f}" for key in sorted(peaks)),
                ratio,
                f"<= {MEMORY_TARGET:.2f}x",
                ratio <= MEMORY_TARGET,
            )
        )
    return results


# -- report -----------------------------------------------------------------------------
def table(header: tuple[str, ...], results: list[Result]) -> str:
    return format_table(header, [(r.name, *r.cells, f"{r.ratio:.3f}x", r.target) for r in results])


def environment() -> str:
    versions: dict[str, Any] = {
        "python": platform.python_version(),
        "anthropic": anthropic.__version__,
        "openai": openai.__version__,
        "httpx2": httpx2.__version__,
        "burnmap": burnmap.__version__,
    }
    described = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"{os.cpu_count()} cores, {platform.machine()}; {described}"


def main() -> int:
    started = time.perf_counter()
    print(f"burnmap benchmarks ({environment()})")
    print("bare = the same client on httpx2.MockTransport alone; all calls in a burnmap.run")
    with burnmap.run("bench", budget=1e9, call_rate_limit=UNREACHED, repeat_limit=UNREACHED):
        speed = bench_calls() + bench_streams()
        memory = bench_memory()
    print()
    print(table(("measurement", "bare", "burnmap", "ratio", "target"), speed))
    print()
    small, large = (f"{n // 1000}k" for n in MEMORY_EVENTS)
    header = (
        "peak traced memory [KiB]",
        f"bare {small}",
        f"bare {large}",
        f"burnmap {small}",
        f"burnmap {large}",
        f"burnmap {large}/{small}",
        "target",
    )
    print(table(header, memory))
    print()
    for r in speed + memory:
        if r.passed is None:
            continue
        verdict = "PASS" if r.passed else "FAIL"
        print(f"{verdict}  {r.name}: {r.ratio:.3f}x (target {r.target})")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
