"""Metering: response bytes in, the call's usage out.

A meter is fed the decoded body chunk by chunk as it passes to the caller and never holds
more than one partial SSE line (plus, for a non-streamed JSON body, the body itself, which
the SDK buffers too). Only the few events that carry usage are JSON-parsed; the rest are
recognised by their event name or a byte search, which keeps a 10k-event stream cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from burnmap._core.decode import DecodeError
from burnmap._core.eventstream import EventStreamDecoder
from burnmap._core.sse import SSEDecoder
from burnmap._core.usage import Usage, implied_output, output_reported, usage_from

__all__ = [
    "BedrockStreamMeter",
    "JSONMeter",
    "Metered",
    "SSEMeter",
    "UsageChunkFilter",
    "json_result",
    "quick_json_result",
]

# A non-streamed body larger than this is not buffered for metering (none is, in practice);
# such a call settles at its reservation.
MAX_JSON_BODY = 64 * 1024 * 1024

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')

# Bytes of JSON framing around the text of one delta event, used to estimate the output
# of a stream cut short (about 4 bytes of text per token). An estimate, marked as such.
_DELTA_OVERHEAD = {"anthropic": 80, "openai": 160}


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class Metered:
    """What a meter learned from one response."""

    usage: Usage | None
    """Usage as reported by the provider, ``None`` when none arrived."""
    model: str | None
    complete: bool
    """The response ended normally (final usage seen, or the whole JSON body parsed)."""
    output_tokens_seen: int
    """An estimate of output tokens observed, for streams cut short."""
    service_tier: str | None = None
    """The service tier an OpenAI-shaped response reports (flex and priority are priced
    apart); Anthropic's is informational."""


class _Meter:
    shape: str
    failed = False
    """Set when the response turned out unreadable: the call is charged its bound."""

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def result(self) -> Metered:
        raise NotImplementedError


class JSONMeter(_Meter):
    """Usage from a non-streamed JSON body (Messages, Chat, Responses, Embeddings)."""

    def __init__(self, shape: str, kind: str | None = None) -> None:
        self.shape = shape
        self.kind = kind  # the endpoint's, when known: only Responses need some checks
        self._parts: list[bytes] = []
        self._size = 0
        self._overflow = False

    def feed(self, data: bytes) -> None:
        if self._overflow:
            return
        self._size += len(data)
        if self._size > MAX_JSON_BODY:
            self._overflow = True
            self._parts = []
            return
        self._parts.append(data)

    def result(self) -> Metered:
        if self._overflow:
            return Metered(None, None, False, 0)
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return quick_json_result(self.shape, body, self.kind) or json_result(
            self.shape, body, self.kind
        )


def json_result(shape: str, body: bytes, kind: str | None = None) -> Metered:
    """What a whole JSON response body says: usage, model and service tier. ``kind``: the
    endpoint that answered, when known (an embeddings usage has no output count)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return Metered(None, None, False, 0)
    if not isinstance(obj, dict):
        return Metered(None, None, False, 0)
    if isinstance(obj.get("response"), dict):  # a Responses event body, defensively
        obj = obj["response"]
    responses = shape == "openai" and obj.get("object") == "response"
    usage = _response_usage(obj) if responses else usage_from(shape, obj.get("usage"))
    complete = usage is not None and output_reported(
        shape, obj.get("usage"), "responses" if responses else kind
    )
    seen = 0
    if usage is not None and not complete:
        # Input reported, output not: what the usage's total implies (hidden reasoning
        # included), at least the text generated; else the output bound.
        seen = max(
            implied_output(obj.get("usage")),
            _text_tokens(obj.get("output" if responses else _GENERATED[shape])),
        )
    model = obj.get("model")
    tier = obj.get("service_tier") if shape == "openai" else None
    return Metered(
        usage,
        model if isinstance(model, str) else None,
        complete,
        seen,
        tier if isinstance(tier, str) else None,
    )


# Where a response body holds what was generated: Messages' content blocks; Chat's and
# legacy Completions' choices.
_GENERATED = {"anthropic": "content", "openai": "choices"}
_NOT_TEXT = frozenset({"type", "role", "finish_reason", "stop_reason", "id", "object", "status"})


def _text_tokens(value: object) -> int:
    """An estimate of the tokens in the strings of a response's generated part (about 4
    characters a token), for a usage that reports no output count.

    >>> _text_tokens([{"message": {"role": "assistant", "content": "Hello there, world"}}])
    5
    """
    chars = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(v for k, v in item.items() if k not in _NOT_TEXT)
    return (chars + 3) // 4


_DECODER = json.JSONDecoder()
# Output items of hosted tools billed per use, which a Responses usage object omits.
_BILLED_ITEMS = {
    "web_search_call": "web_searches",
    "file_search_call": "file_searches",
    "image_generation_call": "images_generated",
}
_BILLED_MARKS = tuple(f'"{item}"'.encode() for item in _BILLED_ITEMS)
_RESPONSE_KEY = re.compile(rb'"response"\s*:')
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')
_MODEL_VALUE = re.compile(rb'\s*:\s*"([^"\\]{1,200})"')
_MODEL_BEFORE = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"\s*,\s*\Z')
_ANY_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_SERVICE_TIER_KEY = re.compile(rb'"service_tier"')
_NO_KEYS: dict[str, Any] = {}
_UNSURE = object()


def quick_json_result(shape: str, body: bytes, kind: str | None = None) -> Metered | None:
    """:func:`json_result` without parsing the whole body (the SDK parses it too), for
    the layouts the APIs use; ``None`` when it cannot be sure, and the caller parses.
    ``kind``: the endpoint that answered, when known; only a Responses body (or one from
    an unknown endpoint) can be a wrapped event or count web searches in its output.

    >>> quick_json_result("openai", b'{"model":"gpt-5","usage":{"prompt_tokens":3}}').model
    'gpt-5'
    """
    openai = shape == "openai"
    if (kind is None or kind == "responses") and (
        _RESPONSE_KEY.search(body)
        or (openai and b'_call"' in body and any(item in body for item in _BILLED_MARKS))
    ):
        # A wrapped Responses event, or billed tool calls counted from the output items.
        return None
    found = _quick_usage(body)
    if found is None:
        return None
    usage_obj, trailing, usage_at = found
    if "model" in trailing:
        model = trailing["model"]
    else:
        model = _top_model(body, usage_at)
        if model is _UNSURE:
            return None
    tier = None
    if openai:
        if "service_tier" in trailing:
            tier = trailing["service_tier"]
        elif _SERVICE_TIER_KEY.search(body):
            return None  # named before usage (Responses): only a whole parse can tell where
    usage = usage_from(shape, usage_obj)
    if usage is not None and not output_reported(shape, usage_obj, kind):
        return None  # the output is estimated from the generated text: a whole parse
    return Metered(
        usage,
        model if isinstance(model, str) else None,
        usage is not None,
        0,
        tier if isinstance(tier, str) else None,
    )


_KEY_OPENERS = (ord("{"), ord(","))
_SPACES = (ord(" "), ord("\n"), ord("\t"), ord("\r"))


def _is_key(body: bytes, at: int) -> bool:
    """Whether the quoted string at ``at`` starts an object member (``{`` or ``,`` before
    it), rather than ending inside a string value."""
    if at <= 0:
        return False
    before = body[at - 1]
    if before in _SPACES:
        rest = body[max(at - 64, 0) : at].rstrip()
        before = rest[-1] if rest else 0
    return before in _KEY_OPENERS


def _opens_no_object_before(body: bytes, at: int) -> bool:
    """Whether the member whose key starts at ``at`` is a top-level one because no object
    opens or closes between the body's first ``{`` and it (arrays may).

    >>> _opens_no_object_before(b'{"a":[1],"c":1}', 9), _opens_no_object_before(b'{"a":{"c":1}}', 6)
    (True, False)
    """
    first = body.find(b"{")
    return (
        0 <= first < at
        and not body[:first].strip()
        and body.find(b"{", first + 1, at) < 0
        and body.find(b"}", first, at) < 0
        and _is_key(body, at)
    )


def _quick_usage(body: bytes) -> tuple[dict[str, Any], dict[str, Any], int] | None:
    """The top-level ``usage`` object of a response body, the top-level members that
    follow it, and where its key starts.

    Anthropic and OpenAI put ``usage`` at or near the end, so the last ``"usage":`` key is
    the top-level one. It is taken only when what follows it is exactly the rest of the
    top-level object (``}``, or ``, "key": value… }``): after a nested ``usage`` more
    brackets would close than open. Anything unusual returns ``None``.

    >>> _quick_usage(b'{"id":"x","usage":{"input_tokens":3},"service_tier":"flex"}')
    ({'input_tokens': 3}, {'service_tier': 'flex'}, 10)
    >>> _quick_usage(b'{"a":{"usage":{"input_tokens":3}},"b":1}') is None
    True
    """
    at = body.rfind(b'"usage"')
    key = _USAGE_KEY.match(body, at)
    if key is None or not _is_key(body, at):
        return None
    try:
        tail = body[key.end() :].decode()
        value, end = _DECODER.raw_decode(tail)
        rest = tail[end:].strip()
        if rest == "}":
            trailing = _NO_KEYS
        elif rest.startswith(","):
            trailing, used = _DECODER.raw_decode("{" + rest[1:])
            if used != len(rest):
                return None
        else:
            return None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    return value, trailing, at


def _top_model(body: bytes, usage_at: int) -> object:
    """The top-level ``model`` of a response body whose top-level ``usage`` key starts at
    ``usage_at``: the first ``"model"`` member when no object comes before it (Messages,
    Chat, Responses), or the member just before ``usage`` (Embeddings). ``None`` when the
    body names no model; ``_UNSURE`` when neither rule applies.

    >>> _top_model(b'{"id":"x","model":"gpt-5","usage":{}}', 26)
    'gpt-5'
    >>> _top_model(b'{"data":[{"e":1}],"model":"emb","usage":{}}', 32)
    'emb'
    >>> _top_model(b'{"a":{"model":"m"},"usage":{}}', 19) is _UNSURE
    True
    """
    at = body.find(b'"model"')
    if at < 0:
        return None
    if _opens_no_object_before(body, at):
        match = _MODEL_VALUE.match(body, at + 7)
        return match.group(1).decode() if match else _UNSURE
    match = _MODEL_BEFORE.search(body, max(usage_at - 300, 0), usage_at)
    if match and _is_key(body, match.start()):
        return match.group(1).decode()
    return _UNSURE


def _response_usage(response: dict[str, Any]) -> Usage | None:
    """A Responses-API object's usage, with the hosted tool calls billed per use (web and
    file searches, images) counted from the output items, since the usage object does not
    report them."""
    usage = usage_from("openai", response.get("usage"))
    output = response.get("output")
    if usage is not None and isinstance(output, list):
        counts = dict.fromkeys(_BILLED_ITEMS.values(), 0)
        for item in output:
            kind = item.get("type") if isinstance(item, dict) else None
            field = _BILLED_ITEMS.get(kind) if isinstance(kind, str) else None
            if field is not None:
                counts[field] += 1
        if any(counts.values()):
            usage = replace(
                usage,
                web_searches=counts["web_searches"],
                file_searches=counts["file_searches"],
                images_generated=counts["images_generated"],
            )
    return usage


_DATA_TYPE = re.compile(rb'\s*\{\s*"type"\s*:\s*"([a-z_.]{1,80})"')


def _data_type(data: bytes) -> bytes:
    """The ``type`` member of an event's JSON data: read from its start, where Anthropic
    and OpenAI put it, without parsing the event; parsed whole only when it is elsewhere.

    >>> _data_type(b'{"type": "response.output_text.delta", "delta": "hi"}')
    b'response.output_text.delta'
    >>> _data_type(b'{"usage": {"output_tokens": 3}, "type": "message_delta"}')
    b'message_delta'
    """
    match = _DATA_TYPE.match(data)
    if match is not None:
        return match.group(1)
    if b'"type"' not in data:
        return b""
    obj = _loads(data)
    kind = obj.get("type") if obj else None
    return kind.encode() if isinstance(kind, str) else b""


# The events of a named stream whose data the fast path reads, found after a blank line
# (an event's end; JSON data holds no raw newline) by their `event:` line; or, with no
# group, an event it cannot find there: one without an `event: ` line (or with a comment
# or `id:` line first), or named the default `message`. One C-level pass finds both.
_ANTHROPIC_READ = re.compile(rb"\n\n(?:event: (message_|error)|(?!event: (?!message\n)))")
_RESPONSES_READ = re.compile(
    rb"\n\n(?:event: (response\.[cif])|(?!event: (?!message\n)))"
)  # response.created (the model), completed, incomplete, failed: and their neighbours
_ANTHROPIC_FIRST: tuple[bytes, ...] = (b"event: message_", b"event: error")
_RESPONSES_FIRST: tuple[bytes, ...] = (
    b"event: response.c",
    b"event: response.i",
    b"event: response.f",
)


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class SSEMeter(_Meter):
    """Usage from an SSE stream: Anthropic Messages, OpenAI Chat/Completions, Responses.

    Anthropic sends usage in ``message_start`` and cumulative usage in each
    ``message_delta`` (the last value wins, field by field). OpenAI Chat sends one final
    chunk with ``usage`` when ``stream_options.include_usage`` is set. Responses sends it in
    ``response.completed`` / ``response.incomplete`` / ``response.failed``.
    """

    def __init__(self, shape: str, kind: str) -> None:
        self.shape = shape
        self.kind = kind
        self._sse = SSEDecoder()
        # Anthropic's and Responses' fast path finds events by their `event:` line.
        self._named = shape == "anthropic" or kind == "responses"
        self._fast: bool | None = None  # decided on the first complete events
        self._partial = b""
        self._usage_fields: dict[str, Any] = {}
        self._usage: Usage | None = None
        self._whole = False  # the usage read reports its output count too
        self._model: str | None = None
        self._tier: str | None = None
        self._complete = False
        self._seen = 0
        self._overhead = _DELTA_OVERHEAD.get(shape, 160)

    def feed(self, data: bytes) -> None:
        if self._fast is not False and b"\r" in data:
            self._go_slow()
        if self._fast is False:
            for event in self._sse.feed(data):
                self._on_event(event.event, event.data)
            return
        # Fast path: most events (text deltas) only need counting, which C-level byte
        # searches do over whole runs of complete events; the few events that carry usage
        # are cut out and parsed. Holds at most one partial event.
        buffer = self._partial + data if self._partial else data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._partial = buffer
            return
        self._partial = buffer[end + 2 :]
        region = buffer[: end + 2]
        if self._fast is None:
            mark = b"event: " if self._named else b"data: "
            self._fast = region.startswith(mark) or b"\n" + mark in region
        if self._fast and (self._scan_named(region) if self._named else self._scan(region)):
            return
        # A stream without `event:` lines (a gateway's: data lines only, or every event
        # named the default `message`), or with some events unnamed, is parsed line by
        # line from the first region that shows it, that region included: the same
        # usage whatever the chunking. (The partial event after the region too: it is
        # the SSE decoder's now.)
        self._fast = False
        self._partial = b""
        for event in self._sse.feed(buffer):
            self._on_event(event.event, event.data)

    def _go_slow(self) -> None:
        """Carriage returns or unusual framing: parse every line from here on."""
        self._fast = False
        if self._partial:
            for event in self._sse.feed(self._partial):
                self._on_event(event.event, event.data)
            self._partial = b""

    def _events_at(self, region: bytes, starts: list[int]) -> None:
        for start in starts:
            stop = region.find(b"\n\n", start)
            for event in SSEDecoder().feed(region[start : stop + 2]):
                self._on_event(event.event, event.data)

    def _scan_named(self, region: bytes) -> bool:
        """Meter a region of complete Anthropic or Responses events by their names; False,
        having metered nothing, when it holds an event with no name to find it by."""
        if not region.startswith(b"event: ") or region.startswith(b"event: message\n"):
            return False
        if self.shape == "anthropic":
            finder, first = _ANTHROPIC_READ, _ANTHROPIC_FIRST
        else:
            finder, first = _RESPONSES_READ, _RESPONSES_FIRST
        starts = [0] if region.startswith(first) else []
        for match in finder.finditer(region, 0, len(region) - 2):
            if match.group(1) is None:
                return False
            starts.append(match.start() + 2)
        if self.shape == "anthropic":
            deltas = region.count(b"event: content_block_delta\n")
        else:
            deltas = region.count(b".delta\n")
        self._add_deltas(deltas, len(region))
        self._events_at(region, starts)
        return True

    def _scan(self, region: bytes) -> bool:
        """Meter a region of complete Chat or Completions events."""
        starts: list[int] = []
        deltas = region.count(b"data: ")
        for match in _USAGE_OBJECT.finditer(region):
            line = region.rfind(b"\n", 0, match.start()) + 1
            if not starts or starts[-1] != line:
                starts.append(line)
        done = region.find(b"data: [DONE]")
        if self._model is None:
            found = _ANY_MODEL.search(region)
            if found:
                self._model = found.group(1).decode()
        if starts:
            deltas -= len(starts)
            self._events_at(region, starts)
        if done >= 0:
            deltas -= 1
            self._complete = self._usage is not None and self._whole
        self._add_deltas(deltas, len(region))
        return True

    def _add_deltas(self, deltas: int, size: int) -> None:
        if deltas > 0:
            # One token per delta event plus about 4 bytes of text per further token.
            framing = deltas * (self._overhead + 30)
            self._seen += deltas + max(0, size - framing) // 4

    def _on_event(self, name: bytes, data: bytes) -> None:
        if self.shape != "anthropic" and self.kind != "responses":
            self._chat(data)
            return
        if not name or name == b"message":
            # No `event:` line (the spec's default type): the SDKs take the type from the
            # data's `type` member, and so does the meter.
            name = _data_type(data)
        if self.shape == "anthropic":
            self._anthropic(name, data)
        else:
            self._responses(name, data)

    def _count_delta(self, data: bytes) -> None:
        self._seen += 1 + max(0, len(data) - self._overhead) // 4

    def _anthropic(self, name: bytes, data: bytes) -> None:
        if name == b"content_block_delta":
            self._count_delta(data)
        elif name == b"message_start":
            obj = _loads(data)
            message = obj.get("message") if obj else None
            if isinstance(message, dict):
                model = message.get("model")
                self._model = model if isinstance(model, str) else self._model
                self._merge(message.get("usage"))
        elif name == b"message_delta":
            obj = _loads(data)
            if obj:
                self._merge(obj.get("usage"))
        elif name == b"message_stop":
            self._complete = output_reported("anthropic", self._usage_fields)
            if self._usage is not None and not self._complete:  # ended, output never told
                self._seen = max(self._seen, implied_output(self._usage_fields))

    def _merge(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for key, value in usage.items():
            if value is not None:
                self._usage_fields[key] = value
        # The input count comes first (message_start), the output may come only with
        # message_delta: a stream cut between them is charged its reported input. It is
        # complete only once both counts are read (see message_stop).
        self._usage = usage_from("anthropic", self._usage_fields)
        tier = self._usage_fields.get("service_tier")
        self._tier = tier if isinstance(tier, str) else self._tier

    def _chat(self, data: bytes) -> None:
        if data == b"[DONE]":
            self._complete = self._usage is not None and self._whole
            return
        if _USAGE_OBJECT.search(data):
            obj = _loads(data)
            if obj:
                usage = usage_from("openai", obj.get("usage"))
                if usage is not None:
                    self._usage = usage
                    self._whole = output_reported("openai", obj.get("usage"), self.kind)
                    if not self._whole:  # no output count: see json_result
                        self._seen = max(self._seen, implied_output(obj.get("usage")))
                self._note_model(obj)
            return
        if self._model is None:
            obj = _loads(data)
            if obj:
                self._note_model(obj)
        self._count_delta(data)

    def _note_model(self, obj: dict[str, Any]) -> None:
        model = obj.get("model")
        if isinstance(model, str) and model:
            self._model = model
        tier = obj.get("service_tier")
        if isinstance(tier, str):
            self._tier = tier

    def _responses(self, name: bytes, data: bytes) -> None:
        if name.endswith(b".delta"):
            self._count_delta(data)
            return
        if name in (b"response.completed", b"response.incomplete", b"response.failed"):
            obj = _loads(data)
            response = obj.get("response") if obj else None
            if isinstance(response, dict):
                usage = _response_usage(response)
                if usage is not None:
                    self._usage = usage
                    self._whole = output_reported("openai", response.get("usage"), "responses")
                    if not self._whole:
                        self._seen = max(self._seen, implied_output(response.get("usage")))
                self._note_model(response)
            self._complete = self._usage is not None and self._whole
        elif name == b"response.created" and self._model is None:
            obj = _loads(data)
            response = obj.get("response") if obj else None
            if isinstance(response, dict):
                self._note_model(response)

    def result(self) -> Metered:
        if self._partial:
            # A last event without its blank line, or a stream cut inside an event.
            self._go_slow()
        for event in self._sse.close():
            self._on_event(event.event, event.data)
        return Metered(self._usage, self._model, self._complete, self._seen, self._tier)


_EVENT_TYPE = re.compile(rb'\s*\{\s*"type"\s*:\s*"([a-z_]{1,40})"')


class BedrockStreamMeter(_Meter):
    """Usage from Bedrock's ``invoke-with-response-stream``: AWS event stream frames, each
    ``chunk`` carrying one Anthropic stream event (base64 JSON), metered as the SSE meter
    meters them. A frame that is not one stops metering (``failed``): the call is charged
    its bound.

    >>> from burnmap._core.eventstream import encode_message
    >>> def chunk(event):
    ...     payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    ...     return encode_message({":message-type": "event", ":event-type": "chunk"},
    ...                           payload.encode())
    >>> meter = BedrockStreamMeter()
    >>> meter.feed(chunk({"type": "message_start", "message": {"model": "claude-x",
    ...     "usage": {"input_tokens": 12, "output_tokens": 1}}}))
    >>> meter.feed(chunk({"type": "message_delta", "usage": {"output_tokens": 30}}))
    >>> meter.feed(chunk({"type": "message_stop"}))
    >>> got = meter.result()
    >>> got.usage.input_tokens, got.usage.output_tokens, got.complete
    (12, 30, True)
    """

    def __init__(self) -> None:
        self._frames = EventStreamDecoder()
        self._events = SSEMeter("anthropic", "messages")

    def feed(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            frames = self._frames.feed(data)
        except DecodeError:
            self.failed = True  # nothing it saw is trusted
            return
        for headers, payload in frames:
            if headers.get(":message-type") != "event" or headers.get(":event-type") != "chunk":
                continue  # an exception frame: the stream ends with it, usage as far as seen
            try:
                raw = base64.b64decode(json.loads(payload)["bytes"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue
            # Events open with their type: read it without parsing each delta whole (the
            # SSE meter parses only the few events that carry usage).
            named = _EVENT_TYPE.match(raw)
            if named is not None:
                self._events._anthropic(named.group(1), raw)

    def result(self) -> Metered:
        if self.failed:
            return Metered(None, None, False, 0)
        return self._events.result()


class UsageChunkFilter:
    """Removes what ``stream_options.include_usage`` added to an OpenAI stream.

    When burnmap asked for usage on the caller's behalf, every chunk carries
    ``"usage":null`` and one extra chunk with ``"choices":[]`` and the usage arrives
    before ``[DONE]``. Both are removed, so the caller sees the chunks it would have seen
    without burnmap. Works line by line, holding at most one partial line.

    >>> f = UsageChunkFilter()
    >>> f.feed(b'data: {"choices":[{"x":1}],"usage":null}\\n\\ndata: {"choices":[],"us')
    b'data: {"choices":[{"x":1}]}\\n\\n'
    >>> f.feed(b'age":{"prompt_tokens":1}}\\n\\ndata: [DONE]\\n\\n')
    b'data: [DONE]\\n\\n'
    """

    __slots__ = ("_drop_blank", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._drop_blank = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._partial + data if self._partial else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._partial = buffer
            return b""
        self._partial = buffer[end + 1 :]
        region = buffer[: end + 1]
        if not self._drop_blank:
            # The usual chunk: one C-level replace; lines are split only around the final
            # usage chunk or an unusual layout.
            quick = region.replace(b',"usage":null', b"")
            if b'"usage"' not in quick:
                return quick
        out: list[bytes] = []
        for line in region.splitlines(keepends=True):
            body = line.rstrip(b"\r\n")
            if not body and self._drop_blank:
                self._drop_blank = False
                continue
            self._drop_blank = False
            if body.startswith(b"data:") and b'"usage"' in body:
                if _EMPTY_CHOICES.search(body) and _USAGE_OBJECT.search(body):
                    self._drop_blank = True
                    continue
                out.append(_USAGE_NULL.sub(b"", line))
                continue
            out.append(line)
        return b"".join(out)

    def flush(self) -> bytes:
        tail, self._partial = self._partial, b""
        return tail
