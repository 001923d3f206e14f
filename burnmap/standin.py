"""A local stand-in LLM server that speaks the Anthropic and OpenAI HTTP wire formats.

`StandIn` listens on loopback and answers the endpoints burnmap meters with bodies shaped
exactly like the providers' own (see ``../shared/fixtures/wire``): JSON replies, real SSE
streams, provider error bodies, gzip. The real ``anthropic`` and ``openai`` SDKs parse its
output, so ``make demo`` and the tests exercise the whole path without a network or a key.

Every request is kept in `StandIn.requests`; every request answered with 200 on a billed
endpoint is kept in `StandIn.calls` as a `BilledCall` with the usage the "provider" charged.
Token counts in `BilledCall` use one convention for both providers: ``input_tokens`` are the
*uncached* input tokens (Anthropic's own ``input_tokens``); OpenAI reports
``input_tokens + cache_read_tokens + cache_write_tokens`` as its ``prompt_tokens``.

>>> with StandIn() as server:  # doctest: +SKIP
...     client = anthropic.Anthropic(api_key="x", base_url=server.anthropic_base_url)
...     client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[...])
...     server.calls[0].output_tokens

Run it in the foreground with ``python -m burnmap.standin --port 8765``; it prints its URL.
"""

from __future__ import annotations

import argparse
import array
import base64
import gzip
import json
import logging
import secrets
import signal
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple

from burnmap._core.usage import Usage
from burnmap._loopback import LoopbackHandler, LoopbackServer

__all__ = [
    "BilledCall",
    "RecordedRequest",
    "Script",
    "StandIn",
    "main",
]

_log = logging.getLogger("burnmap.standin")

_CHARS_PER_TOKEN = 4
# Legacy completions default to 16 output tokens when `max_tokens` is absent.
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
_EMBEDDING_DEFAULT_DIMENSIONS = 8


@dataclass(frozen=True)
class Script:
    """Behaviour knobs for a `StandIn`; swap the whole object to change behaviour mid-run.

    Token semantics: ``input_tokens`` are uncached input tokens (Anthropic's ``input_tokens``);
    OpenAI bodies report ``input_tokens + cache_read_tokens + cache_write_tokens`` as the
    prompt total with the cached share in ``cached_tokens``.
    """

    reply_text: str = "Hello from the stand-in."
    output_tokens: int | None = None
    input_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_use: dict[str, Any] | None = None
    fail_first: int = 0
    # None means the provider's usual overload status: 529 for Anthropic, 500 for OpenAI.
    fail_status: int | None = None
    gzip: bool = False
    truncate_stream_after_events: int | None = None
    stream_chunk_delay: float = 0.0
    events: int | None = None

    def __post_init__(self) -> None:
        for name in ("cache_read_tokens", "cache_write_tokens", "fail_first"):
            if getattr(self, name) < 0:
                raise ValueError(f"Script.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("output_tokens", "input_tokens", "truncate_stream_after_events"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Script.{name} must be None or >= 0, got {value}")
        if self.events is not None and self.events < 1:
            raise ValueError(f"Script.events must be None or >= 1, got {self.events}")
        if self.stream_chunk_delay < 0:
            raise ValueError("Script.stream_chunk_delay must be >= 0 seconds")
        if self.fail_status is not None and not 400 <= self.fail_status <= 599:
            raise ValueError(
                f"Script.fail_status must be an HTTP error status, got {self.fail_status}"
            )
        if self.tool_use is not None and not isinstance(self.tool_use.get("name"), str):
            raise ValueError('Script.tool_use needs a "name" (and optionally an "input" dict)')


@dataclass(frozen=True)
class BilledCall:
    """One request the stand-in answered with 200 and charged for.

    ``input_tokens`` excludes cache reads and writes for both providers (see module docs).
    ``completed`` is False when the stream ended early: cut on purpose by
    ``Script.truncate_stream_after_events`` or dropped by the client; output tokens are then
    those sent before the cut.
    """

    provider: str
    endpoint: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    streamed: bool
    completed: bool

    @property
    def total_input_tokens(self) -> int:
        """All input tokens: OpenAI's ``prompt_tokens`` / ``input_tokens`` figure."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def usage(self) -> Usage:
        """What was billed, as burnmap counts usage (price it with ``burnmap.prices``)."""
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received: header names lower-cased, body parsed as JSON or None."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


class StandIn(LoopbackServer):
    """A loopback HTTP server that answers like the Anthropic and OpenAI APIs.

    Use it as a context manager, or call `start` and `stop`. ``anthropic_base_url`` and
    ``openai_base_url`` go straight into the SDK clients' ``base_url``.
    """

    _logger = _log
    _label = "stand-in"
    _thread_name = "burnmap-standin"
    _join_seconds = 2.0

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, script: Script | None = None
    ) -> None:
        super().__init__(host, port, _Handler)
        self._script = script if script is not None else Script()
        self._failures_served = 0
        self.calls: list[BilledCall] = []
        self.requests: list[RecordedRequest] = []

    @property
    def script(self) -> Script:
        """The behaviour in force; assigning a new one restarts its ``fail_first`` count."""
        return self._script

    @script.setter
    def script(self, script: Script) -> None:
        with self._lock:
            self._script = script
            self._failures_served = 0

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)`` (the SDK adds ``/v1/...``)."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)`` (ends in ``/v1``)."""
        return self.url + "/v1"

    # Internal hooks used by the request handler.

    def _take_failure(self, script: Script) -> bool:
        """True if this request must fail (the first ``script.fail_first`` billed requests)."""
        with self._lock:
            if script is self._script and self._failures_served < script.fail_first:
                self._failures_served += 1
                return True
            return False

    def _record_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_call(self, call: BilledCall) -> None:
        with self._lock:
            self.calls.append(call)


# --- what to generate -------------------------------------------------------------------


def _tokens(text: str) -> int:
    """Stand-in tokenizer: one token per four characters, at least one.

    >>> _tokens(""), _tokens("abcd"), _tokens("abcde")
    (1, 1, 2)
    """
    return max(1, -(-len(text) // _CHARS_PER_TOKEN))


def _split(text: str, parts: int) -> list[str]:
    """Split text into `parts` nearly equal pieces (some empty if text is short).

    >>> _split("abcdefg", 3)
    ['ab', 'cd', 'efg']
    """
    size = len(text)
    return [text[size * i // parts : size * (i + 1) // parts] for i in range(parts)]


class _Generation(NamedTuple):
    text: str
    tool: dict[str, Any] | None
    tool_json: str
    pieces: list[str]
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    hit_limit: bool

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


def _generate(
    script: Script, body_size: int, limit: int | None, *, tools: bool = True
) -> _Generation:
    tool = script.tool_use if tools else None
    tool_json = json.dumps(tool.get("input", {})) if tool is not None else ""
    text = "" if tool is not None else script.reply_text
    hit_limit = False
    if script.output_tokens is not None:
        output = script.output_tokens
    elif tool is not None:
        # Tool calls are never cut at max_tokens: a half JSON input has no parsed form.
        output = _tokens(tool_json)
    else:
        output = _tokens(text)
        if limit is not None and output > limit:
            output, hit_limit = max(1, limit), True
            text = text[: output * _CHARS_PER_TOKEN]
    streamed = tool_json if tool is not None else text
    events = script.events if script.events is not None else _tokens(streamed)
    input_tokens = (
        script.input_tokens
        if script.input_tokens is not None
        else max(1, body_size // _CHARS_PER_TOKEN)
    )
    return _Generation(
        text=text,
        tool=tool,
        tool_json=tool_json,
        pieces=_split(streamed, events),
        input_tokens=input_tokens,
        output_tokens=output,
        cache_read_tokens=script.cache_read_tokens,
        cache_write_tokens=script.cache_write_tokens,
        hit_limit=hit_limit,
    )


def _new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class _Frame(NamedTuple):
    """One SSE event on the wire and how many delta events have been sent once it is."""

    data: bytes
    deltas: int


def _sse(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {data}\n\n".encode()


# --- Anthropic ----------------------------------------------------------------------------


def _anthropic_usage(gen: _Generation, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": gen.input_tokens,
        "cache_creation_input_tokens": gen.cache_write_tokens,
        "cache_read_input_tokens": gen.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": gen.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _anthropic_stop_reason(gen: _Generation) -> str:
    if gen.tool is not None:
        return "tool_use"
    return "max_tokens" if gen.hit_limit else "end_turn"


def _anthropic_message(gen: _Generation, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]]
    if gen.tool is not None:
        content = [
            {
                "type": "tool_use",
                "id": _new_id("toolu_"),
                "name": gen.tool["name"],
                "input": gen.tool.get("input", {}),
            }
        ]
    else:
        content = [{"type": "text", "text": gen.text}]
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop_reason(gen),
        "stop_sequence": None,
        "usage": _anthropic_usage(gen, gen.output_tokens),
    }


def _anthropic_stream(gen: _Generation, model: str) -> list[_Frame]:
    start = _anthropic_message(gen, model)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(gen, 1))
    frames = [_Frame(_sse("message_start", _dumps({"type": "message_start", "message": start})), 0)]
    if gen.tool is not None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": _new_id("toolu_"),
            "name": gen.tool["name"],
            "input": {},
        }
    else:
        block = {"type": "text", "text": ""}
    frames.append(
        _Frame(
            _sse(
                "content_block_start",
                _dumps({"type": "content_block_start", "index": 0, "content_block": block}),
            ),
            0,
        )
    )
    frames.append(_Frame(_sse("ping", '{"type": "ping"}'), 0))
    for n, piece in enumerate(gen.pieces, start=1):
        if gen.tool is not None:
            delta = {"type": "input_json_delta", "partial_json": piece}
        else:
            delta = {"type": "text_delta", "text": piece}
        event = {"type": "content_block_delta", "index": 0, "delta": delta}
        frames.append(_Frame(_sse("content_block_delta", _dumps(event)), n))
    done = len(gen.pieces)
    frames.append(
        _Frame(_sse("content_block_stop", _dumps({"type": "content_block_stop", "index": 0})), done)
    )
    # message_delta usage is cumulative (last value wins), repeating the input fields.
    usage = {
        "input_tokens": gen.input_tokens,
        "cache_creation_input_tokens": gen.cache_write_tokens,
        "cache_read_input_tokens": gen.cache_read_tokens,
        "output_tokens": gen.output_tokens,
    }
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _anthropic_stop_reason(gen), "stop_sequence": None},
        "usage": usage,
    }
    frames.append(_Frame(_sse("message_delta", _dumps(message_delta)), done))
    frames.append(_Frame(_sse("message_stop", '{"type":"message_stop"}'), done))
    return frames


# --- OpenAI chat / completions --------------------------------------------------------------


def _chat_usage(gen: _Generation) -> dict[str, Any]:
    prompt_details: dict[str, Any] = {"cached_tokens": gen.cache_read_tokens, "audio_tokens": 0}
    if gen.cache_write_tokens:
        prompt_details["cache_write_tokens"] = gen.cache_write_tokens
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.output_tokens,
        "total_tokens": gen.prompt_tokens + gen.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_finish_reason(gen: _Generation) -> str:
    if gen.tool is not None:
        return "tool_calls"
    return "length" if gen.hit_limit else "stop"


def _chat_completion(gen: _Generation, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": gen.text,
        "refusal": None,
        "annotations": [],
    }
    if gen.tool is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": _new_id("call_"),
                "type": "function",
                "function": {"name": gen.tool["name"], "arguments": gen.tool_json},
            }
        ]
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _chat_finish_reason(gen),
            }
        ],
        "usage": _chat_usage(gen),
        "service_tier": "default",
        "system_fingerprint": None,
    }


def _chat_stream(gen: _Generation, model: str, include_usage: bool) -> list[_Frame]:
    head: dict[str, Any] = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None, deltas: int) -> _Frame:
        body = dict(
            head, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        if include_usage:
            # With include_usage every chunk carries "usage": null until the final one.
            body["usage"] = None
        return _Frame(_sse(None, _dumps(body)), deltas)

    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if gen.tool is not None:
        first["content"] = None
        first["tool_calls"] = [
            {
                "index": 0,
                "id": _new_id("call_"),
                "type": "function",
                "function": {"name": gen.tool["name"], "arguments": ""},
            }
        ]
    frames = [chunk(first, None, 0)]
    for n, piece in enumerate(gen.pieces, start=1):
        if gen.tool is not None:
            delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        else:
            delta = {"content": piece}
        frames.append(chunk(delta, None, n))
    done = len(gen.pieces)
    frames.append(chunk({}, _chat_finish_reason(gen), done))
    if include_usage:
        frames.append(
            _Frame(_sse(None, _dumps(dict(head, choices=[], usage=_chat_usage(gen)))), done)
        )
    frames.append(_Frame(_sse(None, "[DONE]"), done))
    return frames


def _completion_usage(gen: _Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.output_tokens,
        "total_tokens": gen.prompt_tokens + gen.output_tokens,
    }


def _completion(gen: _Generation, model: str) -> dict[str, Any]:
    return {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "text": gen.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": "length" if gen.hit_limit else "stop",
            }
        ],
        "usage": _completion_usage(gen),
    }


def _completion_stream(gen: _Generation, model: str, include_usage: bool) -> list[_Frame]:
    head: dict[str, Any] = {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    frames: list[_Frame] = []
    last = len(gen.pieces)
    for n, piece in enumerate(gen.pieces, start=1):
        finish = ("length" if gen.hit_limit else "stop") if n == last else None
        body = dict(
            head, choices=[{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}]
        )
        if include_usage:
            body["usage"] = None
        frames.append(_Frame(_sse(None, _dumps(body)), n))
    if include_usage:
        frames.append(
            _Frame(_sse(None, _dumps(dict(head, choices=[], usage=_completion_usage(gen)))), last)
        )
    frames.append(_Frame(_sse(None, "[DONE]"), last))
    return frames


def _embeddings(body: dict[str, Any], gen: _Generation, model: str) -> dict[str, Any]:
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    dims = body.get("dimensions")
    size = dims if isinstance(dims, int) and dims > 0 else _EMBEDDING_DEFAULT_DIMENSIONS
    data = []
    for index, item in enumerate(inputs):
        # Deterministic per input, so equal texts get equal vectors.
        seed = json.dumps(item).encode()
        digest = b"".join(
            zlib.crc32(seed + bytes([i % 256])).to_bytes(4, "little") for i in range(size)
        )
        vector = [round((b - 127.5) / 127.5, 6) for b in digest[:size]]
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(array.array("f", vector).tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": gen.prompt_tokens, "total_tokens": gen.prompt_tokens},
    }


# --- OpenAI Responses -----------------------------------------------------------------------


def _responses_usage(gen: _Generation) -> dict[str, Any]:
    return {
        "input_tokens": gen.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": gen.cache_read_tokens,
            "cache_write_tokens": gen.cache_write_tokens,
        },
        "output_tokens": gen.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": gen.prompt_tokens + gen.output_tokens,
    }


class _ResponseParts(NamedTuple):
    head: dict[str, Any]
    item_in_progress: dict[str, Any]
    item_done: dict[str, Any]
    status: str


def _response_parts(body: dict[str, Any], gen: _Generation, model: str) -> _ResponseParts:
    status = "incomplete" if gen.hit_limit else "completed"
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    head: dict[str, Any] = {
        "id": _new_id("resp_", 24),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": effort, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    if gen.tool is not None:
        base = {
            "id": _new_id("fc_", 24),
            "type": "function_call",
            "call_id": _new_id("call_"),
            "name": gen.tool["name"],
        }
        item_in_progress = dict(base, arguments="", status="in_progress")
        item_done = dict(base, arguments=gen.tool_json, status="completed")
    else:
        base = {"id": _new_id("msg_", 24), "type": "message", "role": "assistant"}
        item_in_progress = dict(base, status="in_progress", content=[])
        item_done = dict(base, status=status, content=[_output_text(gen.text)])
    return _ResponseParts(head, item_in_progress, item_done, status)


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _finished_response(parts: _ResponseParts, gen: _Generation) -> dict[str, Any]:
    details = {"reason": "max_output_tokens"} if parts.status == "incomplete" else None
    return dict(
        parts.head,
        status=parts.status,
        incomplete_details=details,
        output=[parts.item_done],
        usage=_responses_usage(gen),
    )


def _responses_stream(parts: _ResponseParts, gen: _Generation) -> list[_Frame]:
    frames: list[_Frame] = []
    item_id = parts.item_done["id"]

    def add(event: dict[str, Any], deltas: int) -> None:
        event = dict(event, sequence_number=len(frames))
        frames.append(_Frame(_sse(event["type"], _dumps(event)), deltas))

    add({"type": "response.created", "response": parts.head}, 0)
    add({"type": "response.in_progress", "response": parts.head}, 0)
    add(
        {"type": "response.output_item.added", "output_index": 0, "item": parts.item_in_progress}, 0
    )
    at = {"item_id": item_id, "output_index": 0}
    if gen.tool is not None:
        for n, piece in enumerate(gen.pieces, start=1):
            add(dict(at, type="response.function_call_arguments.delta", delta=piece), n)
        done = len(gen.pieces)
        add(
            dict(
                at,
                type="response.function_call_arguments.done",
                arguments=gen.tool_json,
                name=gen.tool["name"],
            ),
            done,
        )
    else:
        at["content_index"] = 0
        add(dict(at, type="response.content_part.added", part=_output_text("")), 0)
        for n, piece in enumerate(gen.pieces, start=1):
            add(dict(at, type="response.output_text.delta", delta=piece, logprobs=[]), n)
        done = len(gen.pieces)
        add(dict(at, type="response.output_text.done", text=gen.text, logprobs=[]), done)
        add(dict(at, type="response.content_part.done", part=_output_text(gen.text)), done)
    add({"type": "response.output_item.done", "output_index": 0, "item": parts.item_done}, done)
    add({"type": f"response.{parts.status}", "response": _finished_response(parts, gen)}, done)
    return frames


# --- errors and listings --------------------------------------------------------------------

_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit (stand-in)."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", None, "Not found"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (stand-in)."),
    500: ("server_error", None, "The server had an error while processing your request."),
}


def _error_body(provider: str, status: int, message: str | None, request_id: str) -> dict[str, Any]:
    if provider == "anthropic":
        kind, default = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "")
        )
        error = {"type": kind, "message": message or default or f"HTTP {status}"}
        return {"type": "error", "error": error, "request_id": request_id}
    kind2, code, default2 = _OPENAI_ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}"),
    )
    return {"error": {"message": message or default2, "type": kind2, "param": None, "code": code}}


_MODELS = {
    "anthropic": ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1"],
    "openai": ["gpt-5.4", "gpt-5.4-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct"],
}


def _models_body(provider: str) -> dict[str, Any]:
    rows: list[dict[str, Any]]
    if provider == "anthropic":
        rows = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in _MODELS["anthropic"]
        ]
        return {
            "data": rows,
            "has_more": False,
            "first_id": rows[0]["id"],
            "last_id": rows[-1]["id"],
        }
    rows = [
        {"id": m, "object": "model", "created": 1735689600, "owned_by": "system"}
        for m in _MODELS["openai"]
    ]
    return {"object": "list", "data": rows}


class _Route(NamedTuple):
    provider: str
    endpoint: str
    method: str
    required: tuple[str, ...]


_ROUTES = {
    "/v1/messages": _Route("anthropic", "messages", "POST", ("model", "max_tokens", "messages")),
    "/v1/messages/count_tokens": _Route("anthropic", "count_tokens", "POST", ("model", "messages")),
    "/v1/chat/completions": _Route("openai", "chat", "POST", ("model", "messages")),
    "/v1/responses": _Route("openai", "responses", "POST", ("model",)),
    "/v1/embeddings": _Route("openai", "embeddings", "POST", ("model", "input")),
    "/v1/completions": _Route("openai", "completions", "POST", ("model", "prompt")),
    "/v1/models": _Route("openai", "models", "GET", ()),
}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- HTTP -----------------------------------------------------------------------------------


class _Handler(LoopbackHandler[StandIn]):
    server_version = "burnmap-standin/1"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _dispatch(self) -> None:
        standin = self.owner
        script = standin.script
        path, _, query = self.path.partition("?")
        raw = self.read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        standin._record_request(RecordedRequest(self.command, path, query, headers, body))
        request_id = _new_id("req_")

        route = _ROUTES.get(path.rstrip("/"))
        if route is None:
            provider = (
                "anthropic"
                if "anthropic-version" in headers or path.startswith("/v1/messages")
                else "openai"
            )
            message = f"Unknown path {path!r}: the stand-in serves {', '.join(sorted(_ROUTES))}."
            self._send_json(
                404, _error_body(provider, 404, message, request_id), request_id, script
            )
            return
        provider = route.provider
        if route.endpoint == "models":
            provider = "anthropic" if "anthropic-version" in headers else "openai"
        if self.command != route.method:
            message = f"{self.command} is not allowed on {path}; use {route.method}."
            self._send_json(
                405, _error_body(provider, 405, message, request_id), request_id, script
            )
            return
        if route.endpoint == "models":
            self._send_json(200, _models_body(provider), request_id, script)
            return
        if not isinstance(body, dict):
            message = "The request body is not a JSON object."
            self._send_json(
                400, _error_body(provider, 400, message, request_id), request_id, script
            )
            return
        missing = [name for name in route.required if name not in body]
        if missing:
            message = f"{missing[0]}: Field required"
            self._send_json(
                400, _error_body(provider, 400, message, request_id), request_id, script
            )
            return
        if route.endpoint == "count_tokens":
            count = (
                script.input_tokens
                if script.input_tokens is not None
                else max(1, len(raw) // _CHARS_PER_TOKEN)
            )
            self._send_json(200, {"input_tokens": count}, request_id, script)
            return
        if standin._take_failure(script):
            status = script.fail_status or (529 if provider == "anthropic" else 500)
            extra = {"retry-after": "0", "retry-after-ms": "1", "x-should-retry": "true"}
            self._send_json(
                status, _error_body(provider, status, None, request_id), request_id, script, extra
            )
            return
        self._answer(route, body, len(raw), script, request_id)

    def _answer(
        self, route: _Route, body: dict[str, Any], size: int, script: Script, request_id: str
    ) -> None:
        model = str(body["model"])
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        endpoint = route.endpoint
        limit: int | None
        if endpoint == "messages":
            limit = _int_or_none(body.get("max_tokens"))
        elif endpoint == "chat":
            limit = _int_or_none(body.get("max_completion_tokens"))
            limit = limit if limit is not None else _int_or_none(body.get("max_tokens"))
        elif endpoint == "responses":
            limit = _int_or_none(body.get("max_output_tokens"))
        elif endpoint == "completions":
            limit = _int_or_none(body.get("max_tokens"))
            limit = limit if limit is not None else _COMPLETIONS_DEFAULT_MAX_TOKENS
        else:
            limit = None
        gen = _generate(script, size, limit, tools=endpoint in ("messages", "chat", "responses"))
        if endpoint == "embeddings":
            gen = gen._replace(output_tokens=0)
            stream = False

        def call(output_tokens: int, completed: bool) -> BilledCall:
            return BilledCall(
                provider=route.provider,
                endpoint=endpoint,
                model=model,
                input_tokens=gen.input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=gen.cache_read_tokens,
                cache_write_tokens=gen.cache_write_tokens,
                streamed=stream,
                completed=completed,
            )

        if not stream:
            reply: dict[str, Any]
            if endpoint == "messages":
                reply = _anthropic_message(gen, model)
            elif endpoint == "chat":
                reply = _chat_completion(gen, model)
            elif endpoint == "responses":
                reply = _finished_response(_response_parts(body, gen, model), gen)
            elif endpoint == "completions":
                reply = _completion(gen, model)
            else:
                reply = _embeddings(body, gen, model)
            # Recorded before the reply leaves, so a caller never sees a reply before its call.
            self.owner._record_call(call(gen.output_tokens, True))
            self._send_json(200, reply, request_id, script)
            return

        if endpoint == "messages":
            frames = _anthropic_stream(gen, model)
        elif endpoint == "chat":
            frames = _chat_stream(gen, model, include_usage)
        elif endpoint == "responses":
            frames = _responses_stream(_response_parts(body, gen, model), gen)
        else:
            frames = _completion_stream(gen, model, include_usage)
        self._send_stream(frames, gen, script, request_id, call)

    def _start_response(self, status: int, request_id: str, headers: dict[str, str]) -> None:
        reason = "Overloaded" if status == 529 else None
        self.send_response(status, reason)
        self.send_header("request-id", request_id)
        self.send_header("x-request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(
        self,
        status: int,
        obj: dict[str, Any],
        request_id: str,
        script: Script,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(obj).encode()
        headers = {"content-type": "application/json"}
        if script.gzip:
            data = gzip.compress(data)
            headers["content-encoding"] = "gzip"
        headers["content-length"] = str(len(data))
        headers.update(extra or {})
        self._start_response(status, request_id, headers)
        self.wfile.write(data)
        self.wfile.flush()

    def _send_stream(
        self,
        frames: list[_Frame],
        gen: _Generation,
        script: Script,
        request_id: str,
        call: Callable[[int, bool], BilledCall],
    ) -> None:
        total = len(gen.pieces)

        def observed(sent: int) -> int:
            deltas = frames[sent - 1].deltas if sent else 0
            return gen.output_tokens * deltas // total

        cut = script.truncate_stream_after_events
        cut = cut if cut is not None and cut < len(frames) else None
        # Bill once generation is over: before the frame with the last delta, which comes
        # before any a client could learn of the end from (a finish reason, final usage,
        # end-of-stream), whichever of them carries it.
        settle_at = next(i for i, frame in enumerate(frames) if frame.deltas == total)
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        compressor = None
        if script.gzip:
            headers["content-encoding"] = "gzip"
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._start_response(200, request_id, headers)
        stopping = self.owner._stopping
        billed = False
        sent = 0
        try:
            for index, frame in enumerate(frames):
                if index == cut:
                    break
                if cut is None and index == settle_at:
                    self.owner._record_call(call(gen.output_tokens, True))
                    billed = True
                data = frame.data
                if compressor is not None:
                    # A sync flush per event keeps gzip from holding events back.
                    data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
                self._write_chunk(data)
                sent += 1
                if (
                    script.stream_chunk_delay
                    and index + 1 < len(frames)
                    and stopping.wait(script.stream_chunk_delay)
                ):
                    break
            if cut is None and sent == len(frames):
                tail = compressor.flush() if compressor is not None else b""
                self._write_chunk(tail)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
        except OSError:
            _log.debug("stand-in client left mid-stream after %d events", sent)
        finally:
            if not billed:
                self.owner._record_call(call(observed(sent), False))
        # Cut short: no terminating chunk, so the client sees the body end mid-message.
        self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()


# --- command line -----------------------------------------------------------------------------


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a stand-in in the foreground until Ctrl-C or SIGTERM; print its URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m burnmap.standin",
        description="Serve stand-in Anthropic and OpenAI endpoints on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--reply-text", default=Script.reply_text)
    parser.add_argument("--input-tokens", type=int, default=None)
    parser.add_argument("--output-tokens", type=int, default=None)
    parser.add_argument("--cache-read-tokens", type=int, default=0)
    parser.add_argument("--cache-write-tokens", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args(argv)
    script = Script(
        reply_text=args.reply_text,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        cache_read_tokens=args.cache_read_tokens,
        cache_write_tokens=args.cache_write_tokens,
        fail_first=args.fail_first,
        gzip=args.gzip,
        stream_chunk_delay=args.delay,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)
    with StandIn(host=args.host, port=args.port, script=script) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
