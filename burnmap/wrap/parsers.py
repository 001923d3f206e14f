"""What known agent programs say about their LLM spend, as :class:`AgentCall` values.

Pure parsing: text and dicts in, values out; no I/O, threads or clocks. Every parser returns
``[]`` for anything it does not recognise (garbage, truncated JSON, wrong types) and never
raises. Counts follow :mod:`burnmap._core.usage`: ``input_tokens`` is the *uncached* input
(OpenAI-style counts, which include cached tokens, are converted) and ``output_tokens``
includes reasoning/thinking tokens, which are billed as output.

Three kinds of record come out, and a consumer combines them differently:

- **a call** (``final=False``) reports one LLM request. Formats that repeat a request's usage
  (Claude Code stream-json, transcripts, Gemini session files) repeat its ``request_id``:
  :class:`Dedup` keeps the first report of each id, :class:`LatestUsage` merges repeated
  *snapshots* of one id (use it for stream-json, where later snapshots carry more output).
- **a run total** (``final=True``): Claude Code's ``result``, Codex's ``turn.completed``
  (cumulative since the thread started), Gemini's ``--output-format json|stream-json``
  stats. It covers every call the same source reported before it, so the latest total of a
  source replaces that source's running sum; several final records from one event (one per
  model) together form the total.
- **an estimate** (``estimated=True``): rounded or provisional figures (aider's ``2.4k``,
  stream-json usage before the message ended) and everything :class:`JsonScanner` finds.

Ids are the provider's message id where the format has one (``msg_…`` for Claude stream
and transcript, ``resp_…`` for Codex rollouts); Claude Code's OpenTelemetry record only
carries the request id (``req_…``), so it does not de-duplicate against the stream or the
transcript: follow one source per agent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

from burnmap._core.usage import MAX_COUNT, anthropic_usage

log = logging.getLogger("burnmap.wrap.parsers")

__all__ = [
    "AgentCall",
    "AiderStdout",
    "ClaudeTranscript",
    "CodexRollout",
    "Dedup",
    "JsonScanner",
    "LatestUsage",
    "aider_analytics_line",
    "aider_line",
    "claude_json_result",
    "claude_otel_events",
    "claude_stream_line",
    "claude_transcript_line",
    "codex_line",
    "codex_otel_events",
    "codex_rollout_line",
    "gemini_json",
    "gemini_session",
    "gemini_stream_line",
]


@dataclass(slots=True)
class AgentCall:
    """One LLM request an agent made (or, with ``final=True``, a run's total)."""

    source: str
    """``claude-otel``, ``claude-stream``, ``claude-transcript``, ``codex``, ``gemini``,
    ``aider`` or ``scan``."""
    request_id: str | None
    """De-duplication key: the provider's message/response/request id when known."""
    model: str | None
    input_tokens: int
    """Uncached input (Anthropic convention)."""
    output_tokens: int
    """Everything generated, reasoning/thinking included."""
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    """Cache writes at the 5-minute TTL (or the TTL the agent does not tell)."""
    cache_write_1h_tokens: int = 0
    """Cache writes at the 1-hour TTL, priced higher (Anthropic's ``cache_creation``)."""
    cost_usd: Decimal | None = None
    """The cost the agent itself stated, when it states one."""
    estimated: bool = False
    """Rounded, provisional or guessed figures (and everything found by scanning)."""
    final: bool = False
    """A run-total record: it replaces the running sum of its source."""
    fingerprint: str | None = None
    """Digest of the turns that led to this request (the tool call it answers and its
    result), for the repeat trigger; known for Claude Code transcripts."""


class _Counts(NamedTuple):
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0


# --- small, total helpers: they turn whatever JSON held into a value or None -------------

_PICO: Final = Decimal("1e-12")
_MAX_ID_LEN: Final = 512


def _count(value: object) -> int | None:
    """A token count: an int, a finite float, or a digit string (OTLP sends int64 as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 20:
            return int(text)
    return None


def _n(value: object) -> int:
    counted = _count(value)
    return 0 if counted is None else counted


def _money(value: object) -> Decimal | None:
    """A stated cost in dollars, exactly as written (floats lose only binary noise)."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            amount = Decimal(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                return None
            # repr is the shortest text that round-trips; below a picodollar is float noise
            # (aider logs 0.006005000000000001 for 0.006005).
            amount = Decimal(repr(value))
            exponent = amount.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -12:
                amount = amount.quantize(_PICO).normalize()
        elif isinstance(value, str):
            amount = Decimal(value.strip())
        else:
            return None
        if not amount.is_finite() or amount < 0 or amount > 10**9:
            return None
    except (InvalidOperation, ValueError, ArithmeticError):
        return None
    return amount


def _str(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= _MAX_ID_LEN:
        return value
    return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _load(text: object) -> Any:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def _json_object(line: object) -> dict[str, Any] | None:
    """One JSONL line as a dict, or None (cheap rejection of lines that are not objects)."""
    if isinstance(line, bytes | bytearray):
        line = bytes(line).decode("utf-8", "replace")
    if not isinstance(line, str):
        return None
    text = line.strip()
    if not text.startswith("{"):
        return None
    data = _load(text)
    return data if isinstance(data, dict) else None


def _call(
    source: str,
    request_id: str | None,
    model: str | None,
    counts: _Counts,
    *,
    cost: Decimal | None = None,
    estimated: bool = False,
    final: bool = False,
) -> AgentCall:
    return AgentCall(
        source=source,
        request_id=request_id,
        model=model,
        input_tokens=counts.input,
        output_tokens=counts.output,
        cache_read_tokens=counts.cache_read,
        cache_write_tokens=counts.cache_write,
        cache_write_1h_tokens=counts.cache_write_1h,
        cost_usd=cost,
        estimated=estimated,
        final=final,
    )


def _clamped(usage: Mapping[str, Any]) -> dict[str, Any]:
    """``usage`` with every number past ``MAX_COUNT`` (or not finite) made ``MAX_COUNT``."""

    def clamp(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clamp(v) for k, v in value.items()}
        if type(value) in (int, float) and not value <= MAX_COUNT:
            return MAX_COUNT
        return value

    return {key: clamp(value) for key, value in usage.items()}


def _any_count(usage: Mapping[str, Any], *keys: str) -> bool:
    return any(_count(usage.get(key)) is not None for key in keys)


def _anthropic_counts(usage: Mapping[str, Any]) -> _Counts | None:
    """Anthropic ``usage`` (read as the transport reads it, 1-hour cache writes apart)."""
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    if not _any_count(usage, *keys, "cache_creation_input_tokens"):
        return None
    try:
        read = anthropic_usage(dict(usage))
    except ValueError:
        # A count no call can have (past 10**9, infinite): counted at the most a call can
        # use, as the other readers here count huge values, so the budget errs high.
        log.warning("burnmap wrap: implausible usage %s; counted at its limit", dict(usage))
        read = anthropic_usage(_clamped(usage))
    return _Counts(
        read.input_tokens,
        read.output_tokens,
        read.cache_read_tokens,
        read.cache_write_tokens,
        read.cache_write_1h_tokens,
    )


def _included_input(total: int, cached: int, written: int) -> _Counts:
    """Split an OpenAI-style input count, which includes its cached and cache-written parts."""
    cached = min(cached, total)
    written = min(written, total - cached)
    return _Counts(total - cached - written, 0, cached, written)


def _usage_counts(usage: Mapping[str, Any]) -> _Counts | None:
    """Any provider's usage object, recognised by its field names (for scanning)."""
    if _any_count(usage, "prompt_tokens", "completion_tokens"):
        # OpenAI chat/completions, LangChain ``token_usage``, DeepSeek, OpenRouter.
        details = _dict(usage.get("prompt_tokens_details"))
        cached = _count(details.get("cached_tokens")) or _n(usage.get("prompt_cache_hit_tokens"))
        split = _included_input(
            _n(usage.get("prompt_tokens")), cached, _n(details.get("cache_write_tokens"))
        )
        return split._replace(output=_n(usage.get("completion_tokens")))
    if _any_count(usage, "promptTokenCount", "candidatesTokenCount"):
        # Gemini ``usageMetadata``: thoughts are billed as output, tool-use prompts as input.
        split = _included_input(
            _n(usage.get("promptTokenCount")), _n(usage.get("cachedContentTokenCount")), 0
        )
        return split._replace(
            input=split.input + _n(usage.get("toolUsePromptTokenCount")),
            output=_n(usage.get("candidatesTokenCount")) + _n(usage.get("thoughtsTokenCount")),
        )
    if not _any_count(
        usage, "input_tokens", "output_tokens", "cache_read_input_tokens", "cached_input_tokens"
    ):
        return None
    output = _n(usage.get("output_tokens"))
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return _anthropic_counts(usage)
    total = _n(usage.get("input_tokens"))
    openai_details = _dict(usage.get("input_tokens_details"))
    langchain_details = _dict(usage.get("input_token_details"))
    if openai_details:  # OpenAI Responses, openai-agents: input includes cached
        split = _included_input(
            total,
            _n(openai_details.get("cached_tokens")),
            _n(openai_details.get("cache_write_tokens")),
        )
    elif langchain_details:  # LangChain ``usage_metadata``: input includes cache reads/writes
        split = _included_input(
            total,
            _n(langchain_details.get("cache_read")),
            _n(langchain_details.get("cache_creation")),
        )
    elif "cached_input_tokens" in usage:  # Codex
        return _codex_counts(usage)
    else:
        split = _Counts(total, 0)
    return split._replace(output=output)


# --- Claude Code -----------------------------------------------------------------------


def _otlp_records(payload: object) -> Iterator[dict[str, Any]]:
    """Log records of an OTLP/HTTP JSON logs export, a ``scopeLogs`` entry, or one record."""
    body = _dict(payload)
    if "resourceLogs" in body:
        for item in _list(body.get("resourceLogs")):
            resource = _dict(item)
            scopes = _list(resource.get("scopeLogs")) or _list(
                resource.get("instrumentationLibraryLogs")  # OTLP before 0.15
            )
            for scope in scopes:
                yield from (r for r in _list(_dict(scope).get("logRecords")) if isinstance(r, dict))
    elif "logRecords" in body:
        yield from (r for r in _list(body.get("logRecords")) if isinstance(r, dict))
    elif "attributes" in body:
        yield body


def _otlp_value(value: object) -> object:
    any_value = _dict(value)
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in any_value:
            return any_value[kind]
    return None


def _otlp_attributes(record: Mapping[str, Any]) -> dict[str, object]:
    attributes: dict[str, object] = {}
    for item in _list(record.get("attributes")):
        key = _dict(item).get("key")
        if isinstance(key, str):
            attributes[key] = _otlp_value(_dict(item).get("value"))
    return attributes


def claude_otel_events(payload: Mapping[str, Any]) -> list[AgentCall]:
    """Calls in Claude Code's OpenTelemetry logs export (OTLP/HTTP JSON).

    ``payload`` is an ``ExportLogsServiceRequest`` body
    (``resourceLogs[].scopeLogs[].logRecords[]``); a bare log record is accepted too. Only
    ``claude_code.api_request`` records count (body, or ``event.name`` ``api_request``);
    their attributes carry ``model``, ``input_tokens`` (uncached), ``output_tokens``,
    ``cache_read_tokens``, ``cache_creation_tokens``, ``cost_usd`` (a double; falls back to
    ``cost_usd_micros``) and ``request_id`` (``req_…``, the de-duplication key).

    Pitfalls: OTLP JSON encodes int64 as a *string* (``{"intValue": "4096"}``), and older
    Claude Code versions send every attribute as ``stringValue``; both are read as numbers.

    >>> record = {"body": {"stringValue": "claude_code.api_request"}, "attributes": [
    ...     {"key": "input_tokens", "value": {"intValue": "4"}},
    ...     {"key": "output_tokens", "value": {"stringValue": "57"}},
    ...     {"key": "cost_usd", "value": {"doubleValue": 0.013092}}]}
    >>> [(c.input_tokens, c.output_tokens, c.cost_usd) for c in claude_otel_events(record)]
    [(4, 57, Decimal('0.013092'))]
    """
    calls: list[AgentCall] = []
    for record in _otlp_records(payload):
        attributes = _otlp_attributes(record)
        names = {_otlp_value(record.get("body")), record.get("eventName")}
        names.add(attributes.get("event.name"))
        if not names & {"claude_code.api_request", "api_request"}:
            continue
        if not _any_count(attributes, "input_tokens", "output_tokens", "cache_read_tokens"):
            continue
        cost = _money(attributes.get("cost_usd"))
        micros = _count(attributes.get("cost_usd_micros"))
        if cost is None and micros is not None:
            cost = Decimal(micros).scaleb(-6)
        counts = _Counts(
            _n(attributes.get("input_tokens")),
            _n(attributes.get("output_tokens")),
            _n(attributes.get("cache_read_tokens")),
            _n(attributes.get("cache_creation_tokens")),
        )
        request_id = _str(attributes.get("request_id"))
        calls.append(
            _call("claude-otel", request_id, _str(attributes.get("model")), counts, cost=cost)
        )
    return calls


def _claude_message(
    message: Mapping[str, Any],
    source: str,
    fallback_id: str | None = None,
    *,
    prefer_fallback: bool = False,
) -> list[AgentCall]:
    """An Anthropic message object: its usage is provisional until it has a stop reason."""
    counts = _anthropic_counts(_dict(message.get("usage")))
    model = _str(message.get("model"))
    # Claude Code writes its own error notices as assistant messages of model "<synthetic>".
    if counts is None or model == "<synthetic>":
        return []
    if prefer_fallback:
        request_id = fallback_id or _str(message.get("id"))
    else:
        request_id = _str(message.get("id")) or fallback_id
    provisional = message.get("stop_reason") is None
    return [_call(source, request_id, model, counts, estimated=provisional)]


def _claude_totals(record: Mapping[str, Any], source: str, cost_key: str) -> list[AgentCall]:
    """A run-total record: per-model ``modelUsage`` when present, else ``usage``."""
    total_cost = _money(record.get(cost_key))
    calls: list[AgentCall] = []
    for model, value in _dict(record.get("modelUsage")).items():
        entry = _dict(value)
        if not _any_count(entry, "inputTokens", "outputTokens", "cacheReadInputTokens"):
            continue
        counts = _Counts(
            _n(entry.get("inputTokens")),
            _n(entry.get("outputTokens")),
            _n(entry.get("cacheReadInputTokens")),
            _n(entry.get("cacheCreationInputTokens")),
        )
        cost = _money(entry.get("costUSD"))
        calls.append(_call(source, None, _str(model), counts, cost=cost, final=True))
    if len(calls) == 1 and total_cost is not None:
        calls[0].cost_usd = total_cost
    if calls:
        return calls
    usage = _anthropic_counts(_dict(record.get("usage")))
    if usage is None and total_cost is None:
        return []
    return [_call(source, None, None, usage or _Counts(0, 0), cost=total_cost, final=True)]


def claude_stream_line(line: str) -> list[AgentCall]:
    """One line of ``claude -p --output-format stream-json`` (with or without
    ``--include-partial-messages``).

    - ``assistant`` events carry the message's usage **as it stood when a content block
      finished**: one message (one ``message.id``) yields several events that repeat the same
      usage, with a placeholder ``output_tokens: 1`` while ``stop_reason`` is null. Each
      becomes a snapshot keyed by the message id and marked ``estimated`` — never sum them;
      merge them with :class:`LatestUsage` (or keep the first with :class:`Dedup`).
    - ``stream_event`` lines (partial messages) add ``message_start`` (the same snapshot)
      and ``message_delta`` (the message's final cumulative ``output_tokens``, keyed by
      ``api_message_id``), so the merged snapshots add up to the true totals.
    - the ``result`` event has the run's true totals: ``modelUsage`` per model with
      ``costUSD``, ``total_cost_usd`` → ``final=True`` calls. Its ``usage`` is all zeros when
      the run stopped at ``--max-budget-usd`` (``error_max_budget_usd``), so ``modelUsage``
      is preferred.

    >>> event = ('{"type":"assistant","message":{"id":"msg_1","model":"claude-sonnet-4-5",'
    ...     '"stop_reason":null,"usage":{"input_tokens":4,"cache_read_input_tokens":14500,'
    ...     '"cache_creation_input_tokens":2100,"output_tokens":1}}}')
    >>> [(c.request_id, c.output_tokens, c.estimated) for c in claude_stream_line(event)]
    [('msg_1', 1, True)]
    >>> end = '{"type":"result","total_cost_usd":0.025509,"usage":{"output_tokens":69}}'
    >>> [(c.output_tokens, c.cost_usd, c.final) for c in claude_stream_line(end)]
    [(69, Decimal('0.025509'), True)]
    """
    event = _json_object(line)
    if event is None:
        return []
    kind = event.get("type")
    if kind == "assistant":
        return _claude_message(_dict(event.get("message")), "claude-stream")
    if kind == "result":
        return _claude_totals(event, "claude-stream", "total_cost_usd")
    if kind != "stream_event":
        return []
    inner = _dict(event.get("event"))
    if inner.get("type") == "message_start":
        return _claude_message(_dict(inner.get("message")), "claude-stream")
    if inner.get("type") == "message_delta":
        message_id = _str(event.get("api_message_id"))
        counts = _anthropic_counts(_dict(inner.get("usage")))
        if message_id is None or counts is None:
            return []
        provisional = _dict(inner.get("delta")).get("stop_reason") is None
        return [_call("claude-stream", message_id, None, counts, estimated=provisional)]
    return []


def claude_json_result(text: str) -> list[AgentCall]:
    """The output of ``claude -p --output-format json``: one ``result`` object → ``final``.

    With ``--verbose`` the output is a JSON array of every stream-json event; its last
    ``result`` is used. Figures as in :func:`claude_stream_line`'s ``result``.
    """
    data = _load(text.strip() if isinstance(text, str) else text)
    if isinstance(data, list):
        results = [e for e in data if isinstance(e, dict) and e.get("type") == "result"]
        data = results[-1] if results else None
    if not isinstance(data, dict) or data.get("type") != "result":
        return []
    return _claude_totals(data, "claude-stream", "total_cost_usd")


def claude_transcript_line(line: str) -> list[AgentCall]:
    """One line of a Claude Code session transcript (``~/.claude/projects/…/<session>.jsonl``).

    ``assistant`` lines carry ``message.usage`` with the message's final counts, but Claude
    Code writes one line **per content block**, so a message with text and a tool call
    appears twice with the same ``message.id`` (and ``requestId``) and the same usage: pass
    the calls through :class:`Dedup`. Subagent (``isSidechain``) messages count too. A
    ``cost-state`` line holds the session's totals and cost → ``final=True`` calls.
    """
    record = _json_object(line)
    return [] if record is None else _transcript_record(record)


def _transcript_record(record: Mapping[str, Any]) -> list[AgentCall]:
    """:func:`claude_transcript_line` for a line already parsed."""
    if record.get("type") == "assistant":
        # The request id (req_...) is also what the OpenTelemetry events carry: keying on it
        # lets the two sources de-duplicate each other.
        request_id = _str(record.get("requestId"))
        return _claude_message(
            _dict(record.get("message")), "claude-transcript", request_id, prefer_fallback=True
        )
    if record.get("type") == "cost-state":
        return _claude_totals(record, "claude-transcript", "totalCostUSD")
    return []


# --- Codex ---------------------------------------------------------------------------------


def _codex_raw(usage: object) -> tuple[int, int, int, int] | None:
    """Codex token usage as (input incl. cached, cached, cache-written, output) or None."""
    fields = _dict(usage)
    if not _any_count(fields, "input_tokens", "output_tokens", "cached_input_tokens"):
        return None
    return (
        _n(fields.get("input_tokens")),
        _n(fields.get("cached_input_tokens")),
        _n(fields.get("cache_write_input_tokens")),
        _n(fields.get("output_tokens")),
    )


def _codex_split(raw: tuple[int, int, int, int]) -> _Counts:
    total, cached, written, output = raw
    # OpenAI convention: input_tokens includes the cached part (and, we assume, the newer
    # cache_write_input_tokens); output_tokens already includes reasoning_output_tokens.
    return _included_input(total, cached, written)._replace(output=output)


def _codex_counts(usage: Mapping[str, Any]) -> _Counts | None:
    raw = _codex_raw(usage)
    return None if raw is None else _codex_split(raw)


def codex_line(line: str) -> list[AgentCall]:
    """One line of ``codex exec --json``: ``turn.completed`` → a ``final`` call.

    ``usage`` is ``input_tokens`` (includes ``cached_input_tokens``), ``output_tokens``
    (includes ``reasoning_output_tokens``): converted to uncached input plus cache reads.
    Codex never states a cost, and names no model in these events. The usage is the
    thread's total since it started (codex fills it from its running total), not the
    turn's share, hence ``final=True``: a later ``turn.completed`` replaces an earlier one.

    >>> line = ('{"type":"turn.completed","usage":{"input_tokens":10801,'
    ...     '"cached_input_tokens":9344,"output_tokens":110,"reasoning_output_tokens":64}}')
    >>> [(c.input_tokens, c.cache_read_tokens, c.output_tokens) for c in codex_line(line)]
    [(1457, 9344, 110)]
    """
    event = _json_object(line)
    if event is None or event.get("type") != "turn.completed":
        return []
    counts = _codex_counts(_dict(event.get("usage")))
    if counts is None:
        return []
    return [_call("codex", None, None, counts, final=True)]


def codex_rollout_line(line: str) -> list[AgentCall]:
    """What one line of a Codex rollout file (``~/.codex/sessions/…/rollout-*.jsonl``) says,
    **without context**. To total a file, feed it to :class:`CodexRollout` instead.

    Codex records each model response up to three times: a ``token_usage_record`` (newer
    versions: per-response ``usage`` with its ``response_id``), an ``event_msg`` /
    ``token_count`` (``last_token_usage`` for the response, ``total_token_usage``
    cumulative), and again ``token_count`` events re-emitted with unchanged totals (on
    rate-limit refreshes). This function returns each line's per-response reading — the
    record's ``usage`` keyed by ``response_id``, or a ``token_count``'s
    ``last_token_usage`` with no id — so summing its output over a file over-counts; never
    use ``total_token_usage`` as a call (it is the running total).
    """
    record = _json_object(line)
    if record is None:
        return []
    payload = _dict(record.get("payload"))
    if record.get("type") == "token_usage_record":
        counts = _codex_counts(_dict(payload.get("usage")))
        request_id = _str(payload.get("response_id"))
    elif record.get("type") == "event_msg" and payload.get("type") == "token_count":
        counts = _codex_counts(_dict(_dict(payload.get("info")).get("last_token_usage")))
        request_id = None
    else:
        return []
    return [] if counts is None else [_call("codex", request_id, None, counts)]


class CodexRollout:
    """Reads a Codex rollout file line by line into one call per model response.

    - the model comes from the latest ``turn_context`` line;
    - ``token_usage_record`` lines (one per response, with its ``response_id``) are used
      when the file has them; otherwise ``token_count`` events are;
    - a ``token_count`` whose cumulative ``total_token_usage`` did not move is a re-emit
      and is skipped; when it moved, the call is the *delta* of the totals (which equals
      ``last_token_usage`` unless an event was missed); when it dropped (a resumed or
      compacted session) or there is no previous total, ``last_token_usage`` is used.

    >>> rollout = CodexRollout()
    >>> count = ('{"type":"event_msg","payload":{"type":"token_count","info":{'
    ...     '"total_token_usage":{"input_tokens":5321,"cached_input_tokens":4096,'
    ...     '"output_tokens":87},"last_token_usage":{"input_tokens":5321,'
    ...     '"cached_input_tokens":4096,"output_tokens":87}}}}')
    >>> [(c.input_tokens, c.cache_read_tokens, c.output_tokens) for c in rollout.feed(count)]
    [(1225, 4096, 87)]
    >>> rollout.feed(count)  # re-emitted with the same running total
    []
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self._previous_total: tuple[int, int, int, int] | None = None
        self._using: str | None = None  # "token_usage_record" or "token_count"

    def feed(self, line: str) -> list[AgentCall]:
        """The calls this line adds (usually none)."""
        record = _json_object(line)
        if record is None:
            return []
        kind = record.get("type")
        payload = _dict(record.get("payload"))
        if kind == "turn_context":
            self.model = _str(payload.get("model")) or self.model
            return []
        if kind == "token_usage_record":
            counts = _codex_counts(_dict(payload.get("usage")))
            if counts is None or self._using == "token_count":
                return []
            self._using = kind
            return [_call("codex", _str(payload.get("response_id")), self.model, counts)]
        if kind == "event_msg" and payload.get("type") == "token_count":
            return self._token_count(_dict(payload.get("info")))
        return []

    def _token_count(self, info: Mapping[str, Any]) -> list[AgentCall]:
        total = _codex_raw(info.get("total_token_usage"))
        reading = _codex_raw(info.get("last_token_usage"))
        previous = self._previous_total
        if total is not None:
            self._previous_total = total
        if self._using == "token_usage_record":
            return []
        if total is not None and previous is not None:
            if total == previous:
                return []
            if all(now >= before for now, before in zip(total, previous, strict=True)):
                reading = (
                    total[0] - previous[0],
                    total[1] - previous[1],
                    total[2] - previous[2],
                    total[3] - previous[3],
                )
        elif reading is None:
            reading = total
        if reading is None or not any(reading):
            return []
        self._using = "token_count"
        return [_call("codex", None, self.model, _codex_split(reading))]


def codex_otel_events(payload: Mapping[str, Any]) -> list[AgentCall]:
    """Calls in Codex's OpenTelemetry logs export: ``codex.sse_event`` records whose
    ``event.kind`` is ``response.completed`` carry ``input_token_count`` (includes
    ``cached_token_count``), ``output_token_count`` (includes ``reasoning_token_count``) and
    ``model``; counts come as ``stringValue`` or string ``intValue``. No cost, no response id.
    """
    calls: list[AgentCall] = []
    for record in _otlp_records(payload):
        attributes = _otlp_attributes(record)
        if attributes.get("event.name") != "codex.sse_event":
            continue
        if attributes.get("event.kind") != "response.completed":
            continue
        if not _any_count(attributes, "input_token_count", "output_token_count"):
            continue
        split = _included_input(
            _n(attributes.get("input_token_count")),
            _n(attributes.get("cached_token_count")),
            _n(attributes.get("cache_write_token_count")),
        )
        counts = split._replace(output=_n(attributes.get("output_token_count")))
        calls.append(_call("codex", None, _str(attributes.get("model")), counts))
    return calls


# --- Gemini CLI ----------------------------------------------------------------------------


def gemini_session(record: str | Mapping[str, Any]) -> list[AgentCall]:
    """Gemini CLI's chat session file (``~/.gemini/tmp/<project>/chats/…``): a JSONL line, a
    parsed line, or a whole older-style ``{"messages": [...]}`` file.

    Messages of ``type: "gemini"`` carry ``tokens``: ``input`` (the prompt, *including*
    ``cached``), ``output`` (candidates, *excluding* ``thoughts``), ``thoughts`` (billed as
    output), ``tool`` (tool-use prompt, billed as input). The same message ``id`` is
    written again when its tool calls complete: pass the calls through :class:`Dedup`.

    >>> line = ('{"id":"m1","type":"gemini","model":"gemini-2.5-pro","tokens":{"input":8123,'
    ...     '"output":18,"cached":4096,"thoughts":89,"tool":0,"total":8230}}')
    >>> [(c.input_tokens, c.cache_read_tokens, c.output_tokens) for c in gemini_session(line)]
    [(4027, 4096, 107)]
    """
    data = record if isinstance(record, Mapping) else _load(record)
    if isinstance(data, Mapping) and isinstance(data.get("messages"), list):
        messages: list[Any] = data["messages"]
    elif isinstance(data, list):
        messages = data
    else:
        messages = [data]
    calls: list[AgentCall] = []
    for message in messages:
        if not isinstance(message, Mapping) or message.get("type") != "gemini":
            continue
        tokens = _dict(message.get("tokens"))
        if not _any_count(tokens, "input", "output", "cached", "thoughts"):
            continue
        split = _included_input(_n(tokens.get("input")), _n(tokens.get("cached")), 0)
        counts = split._replace(
            input=split.input + _n(tokens.get("tool")),
            output=_n(tokens.get("output")) + _n(tokens.get("thoughts")),
        )
        model = _str(message.get("model"))
        calls.append(_call("gemini", _str(message.get("id")), model, counts))
    return calls


def gemini_json(text: str) -> list[AgentCall]:
    """The output of ``gemini -p … --output-format json``: ``final`` calls per model.

    ``stats.models[<model>].tokens`` has ``prompt`` (includes ``cached``), ``input`` (the
    uncached part — unlike the session file, where ``input`` is the whole prompt),
    ``candidates``, ``thoughts`` and ``tool``; output is candidates + thoughts.

    >>> out = ('{"stats":{"models":{"gemini-2.5-pro":{"tokens":{"input":4153,"prompt":16313,'
    ...     '"candidates":25,"cached":12160,"thoughts":89,"tool":0}}}}}')
    >>> [(c.input_tokens, c.cache_read_tokens, c.output_tokens) for c in gemini_json(out)]
    [(4153, 12160, 114)]
    """
    data = _load(text.strip() if isinstance(text, str) else text)
    calls: list[AgentCall] = []
    for model, entry in _dict(_dict(_dict(data).get("stats")).get("models")).items():
        tokens = _dict(_dict(entry).get("tokens"))
        if not _any_count(tokens, "prompt", "input", "candidates", "thoughts"):
            continue
        cached = _n(tokens.get("cached"))
        prompt = _count(tokens.get("prompt"))
        if prompt is None:
            uncached = _n(tokens.get("input"))
        else:
            cached = min(cached, prompt)
            uncached = prompt - cached
        counts = _Counts(
            uncached + _n(tokens.get("tool")),
            _n(tokens.get("candidates")) + _n(tokens.get("thoughts")),
            cached,
        )
        calls.append(_call("gemini", None, _str(model), counts, final=True))
    return calls


def gemini_stream_line(line: str) -> list[AgentCall]:
    """One line of ``gemini -p … --output-format stream-json``: the ``result`` event's
    ``stats`` → ``final`` calls (per model when ``stats.models`` is there).

    Pitfall: ``output_tokens`` there leaves out the thought tokens, which are billed as
    output, and the stats name no thoughts field; they are what ``total_tokens`` has beyond
    ``input_tokens`` (the prompt, including ``cached``) + ``output_tokens``, and are added
    to the output. (Tool-use prompt tokens, if any, fall in the same gap and are then
    priced as output: an upper bound.)

    >>> end = ('{"type":"result","stats":{"total_tokens":16427,"input_tokens":16313,'
    ...     '"output_tokens":25,"cached":12160}}')
    >>> [(c.input_tokens, c.cache_read_tokens, c.output_tokens) for c in gemini_stream_line(end)]
    [(4153, 12160, 114)]
    """
    event = _json_object(line)
    if event is None or event.get("type") != "result":
        return []
    stats = _dict(event.get("stats"))
    models = _dict(stats.get("models"))
    entries: list[tuple[str | None, Any]] = list(models.items()) if models else [(None, stats)]
    calls: list[AgentCall] = []
    for model, entry in entries:
        fields = _dict(entry)
        if not _any_count(fields, "input_tokens", "output_tokens", "total_tokens"):
            continue
        prompt = _n(fields.get("input_tokens"))
        output = _n(fields.get("output_tokens"))
        total = _count(fields.get("total_tokens"))
        hidden = max(0, total - prompt - output) if total is not None else 0
        split = _included_input(prompt, _n(fields.get("cached")), 0)
        counts = split._replace(output=output + hidden)
        calls.append(_call("gemini", None, _str(model), counts, final=True))
    return calls


# --- aider ---------------------------------------------------------------------------------

_ANSI: Final = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_AMOUNT: Final = r"\d{1,15}(?:\.\d{1,6})?[kKmM]?"
_AIDER_TOKENS: Final = re.compile(
    rf"Tokens: (?P<sent>{_AMOUNT}) sent"
    rf"(?:, (?P<write>{_AMOUNT}) cache write)?"
    rf"(?:, (?P<hit>{_AMOUNT}) cache hit)?"
    rf", (?P<received>{_AMOUNT}) received\."
)
_AIDER_COST: Final = re.compile(
    r"Cost: \$(?P<message>\d{1,15}(?:\.\d{1,12})?) message, \$\d{1,15}(?:\.\d{1,12})? session"
)
_MAX_BLANK_LINES: Final = 2


def _aider_amount(text: str | None) -> tuple[int, bool]:
    """``2.4k`` → (2400, rounded). aider prints counts of 1,000+ as ``{n/1000:.1f}k`` below
    10k and ``{round(n/1000)}k`` above, so these are within 50 and 500 of the truth."""
    if not text:
        return 0, False
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower())
    if scale is None:
        return int(Decimal(text)), False
    return int(Decimal(text[:-1]) * scale), True


def aider_line(line: str) -> list[AgentCall]:
    """aider's usage report after each reply, on one line or two.

    ``Tokens: 2.4k sent, 4 received. Cost: $0.0060 message, $0.0060 session.`` — or, when
    the model reports cache use, ``Tokens: 19k sent, 2.1k cache write, 14k cache hit, 12
    received.`` with the ``Cost:`` part on the **next** line (pass both lines joined by
    ``\\n``, or feed stdout to :class:`AiderStdout`). ANSI colours are ignored.

    - ``sent`` includes cache hits, and aider 0.86 adds the cache writes to it a second time
      (litellm's prompt count already holds them): uncached input = sent - hit - 2 * write.
    - counts of 1,000 or more are rounded (``k``): the call is then ``estimated``; so it is
      when the cost has fewer than two significant digits (aider shows $0.01 and up to the
      cent: ``$0.01`` may be $0.0149). The ``message`` cost is kept as printed.
    - no model name and no id in the line.

    >>> [(c.input_tokens, c.output_tokens, c.cost_usd, c.estimated) for c in aider_line(
    ...     "Tokens: 2.4k sent, 4 received. Cost: $0.0060 message, $0.0060 session.")]
    [(2400, 4, Decimal('0.0060'), True)]
    """
    if not isinstance(line, str):
        return []
    text = _ANSI.sub("", line)
    tokens = _AIDER_TOKENS.search(text)
    if tokens is None:
        return []
    sent, sent_rounded = _aider_amount(tokens["sent"])
    written, written_rounded = _aider_amount(tokens["write"])
    hit, hit_rounded = _aider_amount(tokens["hit"])
    received, received_rounded = _aider_amount(tokens["received"])
    rounded = sent_rounded or written_rounded or hit_rounded or received_rounded
    cost = None
    stated = _AIDER_COST.search(text, tokens.end())
    if stated is not None and text.count("\n", tokens.end(), stated.start()) <= 1:
        cost = Decimal(stated["message"])
        rounded = rounded or (cost > 0 and len(cost.as_tuple().digits) < 2)
    counts = _Counts(max(0, sent - hit - 2 * written), received, hit, written)
    return [_call("aider", None, None, counts, cost=cost, estimated=rounded)]


class AiderStdout:
    """Feeds aider's stdout line by line, joining the two-line form of its usage report.

    A ``Tokens:`` line without a cost is held until the next non-blank line: if that is the
    ``Cost:`` line the two are parsed together, otherwise the tokens are reported without a
    cost. Call :meth:`flush` at the end of the output.
    """

    def __init__(self) -> None:
        self._pending: str | None = None
        self._blank_lines = 0

    def feed(self, line: str) -> list[AgentCall]:
        """The calls completed by this line."""
        text = _ANSI.sub("", line) if isinstance(line, str) else ""
        calls: list[AgentCall] = []
        if self._pending is not None:
            if not text.strip() and self._blank_lines < _MAX_BLANK_LINES:
                self._blank_lines += 1
                return []
            pending, self._pending = self._pending, None
            if _AIDER_COST.search(text) and not _AIDER_TOKENS.search(text):
                return aider_line(pending + "\n" + text)
            calls.extend(aider_line(pending))
        tokens = _AIDER_TOKENS.search(text)
        if tokens is not None:
            if _AIDER_COST.search(text, tokens.end()):
                calls.extend(aider_line(text))
            else:
                self._pending = tokens.group(0)
                self._blank_lines = 0
        return calls

    def flush(self) -> list[AgentCall]:
        """A usage report still waiting for its cost line, reported without a cost."""
        pending, self._pending = self._pending, None
        return aider_line(pending) if pending is not None else []


def aider_analytics_line(line: str) -> list[AgentCall]:
    """One line of aider's ``--analytics-log`` JSONL: ``message_send`` events.

    ``properties`` has ``main_model``, ``prompt_tokens`` (exact, but cache reads and writes
    are inside it and not split out), ``completion_tokens`` and ``cost`` (a float, read
    exactly as logged minus float noise). aider's counts are its local estimate when the
    provider's stream sent no usage; the line does not say which.
    """
    event = _json_object(line)
    if event is None or event.get("event") != "message_send":
        return []
    properties = _dict(event.get("properties"))
    if not _any_count(properties, "prompt_tokens", "completion_tokens"):
        return []
    counts = _Counts(_n(properties.get("prompt_tokens")), _n(properties.get("completion_tokens")))
    cost = _money(properties.get("cost"))
    return [_call("aider", None, _str(properties.get("main_model")), counts, cost=cost)]


# --- generic scanning ---------------------------------------------------------------------

_OBJECT_START: Final = re.compile(r'\{(?=\s*(?:"|\}|$))')
_STRUCTURE: Final = re.compile(r'[{}"]')
_IN_STRING: Final = re.compile(r'["\\]')
# How a line inside a pretty-printed JSON object can begin.
_JSON_LINE_START: Final = frozenset('"{}[]-0123456789tfn,:')
_COUNT_KEYS: Final = (
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "promptTokenCount",
    "candidatesTokenCount",
)
_ID_KEYS: Final = ("id", "response_id", "responseId", "request_id", "requestId", "message_id")
_MODEL_KEYS: Final = ("model", "model_name", "modelVersion", "model_id")
# Running totals beside a per-request usage (Codex's total_token_usage, thread_token_usage…).
_CUMULATIVE: Final = re.compile(r"^(?:total|thread|turn|cumulative|session)_")
_MAX_NODES: Final = 200_000


class _Found(NamedTuple):
    depth: int
    counts: _Counts
    request_id: str | None
    model: str | None
    parent_type: object


def _looks_like_usage(value: Mapping[str, Any]) -> bool:
    return _any_count(value, *_COUNT_KEYS)


def _find_usages(document: object) -> list[_Found]:
    """Usage objects in a JSON document, outermost only.

    An aggregate sits above the calls it sums (LangChain's ``llm_output.token_usage`` over
    each generation's ``response_metadata.token_usage`` and ``usage_metadata``), so only the
    usage objects nearest the root are kept.
    """
    found: list[_Found] = []
    if isinstance(document, dict) and _looks_like_usage(document):
        counts = _usage_counts(document)
        return [] if counts is None else [_Found(0, counts, None, None, None)]
    stack: list[tuple[object, int]] = [(document, 0)]
    visited = 0
    while stack and visited < _MAX_NODES:
        node, depth = stack.pop()
        visited += 1
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node if isinstance(item, dict | list))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if not isinstance(value, dict | list):
                continue
            if isinstance(value, dict) and _looks_like_usage(value):
                counts = _usage_counts(value)
                if counts is not None and not _CUMULATIVE.match(str(key)):
                    request_id = next((i for k in _ID_KEYS if (i := _str(node.get(k)))), None)
                    model = next((m for k in _MODEL_KEYS if (m := _str(node.get(k)))), None)
                    found.append(_Found(depth + 1, counts, request_id, model, node.get("type")))
                continue
            stack.append((value, depth + 1))
    if not found:
        return []
    outermost = min(f.depth for f in found)
    return [f for f in found if f.depth == outermost]


class JsonScanner:
    """Last-resort scanning of a program's output for usage objects, fed line by line.

    Finds JSON objects anywhere in a line (after a log prefix, ``data:``…) and across lines
    (pretty-printed JSON, joined by brace balance, string-aware), then the usage objects in
    them by field names: Anthropic (``input_tokens`` + ``cache_*_input_tokens``), OpenAI
    (``prompt_tokens`` / ``input_tokens`` + ``*_details.cached_tokens``), LangChain
    (``token_usage``, ``usage_metadata``), Gemini (``usageMetadata``), Codex. Each becomes a
    call with ``estimated=True``, keyed by the id beside it (``id``, ``responseId``…) and
    de-duplicated on that id. An Anthropic ``message_delta`` after a ``message_start`` adds
    only the output that grew.

    Never raises, and stays bounded:

    - an object must open with ``{"`` / ``{}`` or end its line with ``{``, so prose braces
      and Python dict reprs (``{'a': 1}``) do not start one;
    - a candidate spanning lines ends when a line cannot continue JSON (it starts with a
      letter other than ``t``/``f``/``n``, or a JSON string would cross the line end); the
      lines after a false start are then scanned again (once), so a stray ``{`` cannot hide
      the JSON that follows it;
    - a candidate is given up after ``max_chars`` characters or ``max_lines`` lines, and at
      most ``max_ids`` ids are remembered.

    >>> scanner = JsonScanner()
    >>> lines = ["[llm/end] Exiting LLM run with output:", "{", '  "llm_output": {',
    ...     '    "token_usage": {"prompt_tokens": 812, "completion_tokens": 41},',
    ...     '    "id": "chatcmpl-7"', "  }", "}"]
    >>> [(c.request_id, c.input_tokens, c.output_tokens) for l in lines for c in scanner.feed(l)]
    [('chatcmpl-7', 812, 41)]
    """

    def __init__(
        self, *, max_chars: int = 1_000_000, max_lines: int = 2_000, max_ids: int = 10_000
    ) -> None:
        self._max_chars = max_chars
        self._max_lines = max_lines
        self._ids = Dedup(max_ids)
        self._parts: list[str] = []
        self._chars = 0
        self._depth = 0
        self._in_string = False
        self._rescanning = False
        # The Anthropic message whose stream is open: id, model, counts so far.
        self._message: tuple[str, str | None, _Counts] | None = None

    @property
    def buffered_chars(self) -> int:
        """Characters held for a JSON candidate that spans lines (bounded by ``max_chars``)."""
        return self._chars

    def feed(self, line: str) -> list[AgentCall]:
        """The calls completed by this line of output."""
        if isinstance(line, bytes | bytearray):
            line = bytes(line).decode("utf-8", "replace")
        if not isinstance(line, str):
            return []
        calls: list[AgentCall] = []
        for piece in line.removesuffix("\n").split("\n"):
            calls.extend(self._feed_line(piece.removesuffix("\r")))
        return calls

    def _reset(self) -> None:
        self._parts = []
        self._chars = 0
        self._depth = 0
        self._in_string = False

    def _rescan(self, lines: list[str]) -> list[AgentCall]:
        """Scan again the lines after a false start (not recursively: bounded work)."""
        self._reset()
        if self._rescanning:
            return []
        self._rescanning = True
        try:
            return [call for line in lines for call in self._feed_line(line)]
        finally:
            self._rescanning = False

    def _feed_line(self, text: str) -> list[AgentCall]:
        calls: list[AgentCall] = []
        position = 0
        if self._parts:
            head = text.lstrip()[:1]
            if head and head not in _JSON_LINE_START:
                calls.extend(self._rescan(self._parts[1:]))
                if self._parts:  # the rescan left a candidate open: this line ends it too
                    self._reset()
                return calls + self._feed_line(text)
            end = self._scan(text, 0)
            if end is None:
                self._chars += len(text) + 1
                if self._chars > self._max_chars or len(self._parts) >= self._max_lines:
                    self._reset()  # too big to be worth it
                elif self._in_string:  # a JSON string cannot cross a line end
                    calls.extend(self._rescan([*self._parts[1:], text]))
                else:
                    self._parts.append(text)
                return calls
            lines = [*self._parts[1:], text]
            candidate = "\n".join([*self._parts, text[:end]])
            self._reset()
            found, parsed = self._document(candidate)
            if not parsed:
                return calls + self._rescan(lines)
            calls.extend(found)
            position = end
        while position < len(text):
            start = _OBJECT_START.search(text, position)
            if start is None:
                break
            self._depth = 0
            self._in_string = False
            end = self._scan(text, start.start())
            if end is None:
                rest = text[start.start() :]
                if self._in_string or len(rest) > self._max_chars:
                    self._reset()
                else:
                    self._parts = [rest]
                    self._chars = len(rest)
                break
            calls.extend(self._document(text[start.start() : end])[0])
            position = end
        return calls

    def _scan(self, text: str, position: int) -> int | None:
        """Advance the brace/string state over ``text``; the index after the closing brace
        of the object, or None if it is still open at the end of the line."""
        depth, in_string, length = self._depth, self._in_string, len(text)
        while position < length:
            if in_string:
                special = _IN_STRING.search(text, position)
                if special is None:
                    break
                position = special.end() + (1 if special.group() == "\\" else 0)
                in_string = special.group() == "\\"
                continue
            structural = _STRUCTURE.search(text, position)
            if structural is None:
                break
            position = structural.end()
            char = structural.group()
            if char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            else:
                depth -= 1
                if depth <= 0:
                    self._depth, self._in_string = 0, False
                    return position
        self._depth, self._in_string = depth, in_string
        return None

    def _document(self, text: str) -> tuple[list[AgentCall], bool]:
        """The calls in one JSON candidate, and whether it was JSON at all."""
        if len(text) > self._max_chars:
            return [], True
        document = _load(text)
        if not isinstance(document, dict | list):
            return [], False
        calls: list[AgentCall] = []
        for found in _find_usages(document):
            counts, model = found.counts, found.model
            if found.parent_type == "message_delta" and found.request_id is None:
                growth = self._message_growth(counts)
                if growth is None:
                    continue
                counts, model = growth
            elif found.request_id is not None:
                if not self._ids.first(found.request_id):
                    continue
                if found.parent_type == "message":  # Anthropic message_start
                    self._message = (found.request_id, model, counts)
            calls.append(_call("scan", found.request_id, model, counts, estimated=True))
        return calls, True

    def _message_growth(self, counts: _Counts) -> tuple[_Counts, str | None] | None:
        """An Anthropic ``message_delta`` has cumulative counts: what grew since the
        ``message_start`` (or the previous delta) of the same stream, and its model."""
        if self._message is None:
            return counts, None
        message_id, model, before = self._message
        after = _Counts(*(max(now, then) for now, then in zip(counts, before, strict=True)))
        self._message = (message_id, model, after)
        growth = _Counts(*(now - then for now, then in zip(after, before, strict=True)))
        return (growth, model) if any(growth) else None


# --- combining sources -----------------------------------------------------------------------


class Dedup:
    """Remembers request ids across sources: :meth:`add` is False for one seen before.

    Calls without an id are always new. At most ``max_ids`` ids are kept (oldest forgotten).

    >>> seen = Dedup()
    >>> call = AgentCall("claude-transcript", "msg_1", None, 4, 57)
    >>> seen.add(call), seen.add(call), seen.add(AgentCall("aider", None, None, 1, 1))
    (True, False, True)
    """

    def __init__(self, max_ids: int = 1_000_000) -> None:
        self._max_ids = max_ids
        self._seen: dict[str, None] = {}

    def add(self, call: AgentCall) -> bool:
        """True if ``call`` is the first report of its request (or has no id)."""
        return call.request_id is None or self.first(call.request_id)

    def first(self, request_id: str) -> bool:
        """True the first time ``request_id`` is seen."""
        if request_id in self._seen:
            return False
        self._seen[request_id] = None
        if len(self._seen) > self._max_ids:
            del self._seen[next(iter(self._seen))]
        return True


class LatestUsage:
    """The latest usage of each request, for formats that report it as growing snapshots.

    Counts of one request only grow, so snapshots merge field by field (the larger wins);
    :meth:`update` returns what grew, ready to be added to a running sum. A merged snapshot
    is ``estimated`` only while every snapshot of it was. Calls without an id and ``final``
    calls pass through unchanged.

    >>> latest = LatestUsage()
    >>> start = AgentCall("claude-stream", "msg_1", "claude-sonnet-4-5", 4, 1, 14500, 2100,
    ...                   estimated=True)
    >>> delta = AgentCall("claude-stream", "msg_1", None, 0, 57)
    >>> latest.update(start).output_tokens, latest.update(start), latest.update(delta).output_tokens
    (1, None, 56)
    >>> [(c.input_tokens, c.output_tokens, c.estimated) for c in latest.calls()]
    [(4, 57, False)]
    """

    def __init__(self) -> None:
        self._latest: dict[str, AgentCall] = {}

    def update(self, call: AgentCall) -> AgentCall | None:
        """Merge ``call`` into its request; the growth (None if nothing grew)."""
        if call.request_id is None or call.final:
            return call
        before = self._latest.get(call.request_id)
        if before is None:
            self._latest[call.request_id] = _copy(call)
            return _copy(call)
        after = AgentCall(
            source=before.source,
            request_id=call.request_id,
            model=call.model or before.model,
            input_tokens=max(before.input_tokens, call.input_tokens),
            output_tokens=max(before.output_tokens, call.output_tokens),
            cache_read_tokens=max(before.cache_read_tokens, call.cache_read_tokens),
            cache_write_tokens=max(before.cache_write_tokens, call.cache_write_tokens),
            cache_write_1h_tokens=max(before.cache_write_1h_tokens, call.cache_write_1h_tokens),
            cost_usd=_larger(before.cost_usd, call.cost_usd),
            estimated=before.estimated and call.estimated,
        )
        self._latest[call.request_id] = after
        cost = None
        if before.cost_usd is not None and after.cost_usd is not None:
            cost = after.cost_usd - before.cost_usd
        growth = AgentCall(
            source=call.source,
            request_id=call.request_id,
            model=after.model,
            input_tokens=after.input_tokens - before.input_tokens,
            output_tokens=after.output_tokens - before.output_tokens,
            cache_read_tokens=after.cache_read_tokens - before.cache_read_tokens,
            cache_write_tokens=after.cache_write_tokens - before.cache_write_tokens,
            cache_write_1h_tokens=after.cache_write_1h_tokens - before.cache_write_1h_tokens,
            cost_usd=cost or None,
            estimated=after.estimated,
        )
        tokens = (growth.input_tokens, growth.output_tokens)
        caches = (growth.cache_read_tokens, growth.cache_write_tokens, growth.cache_write_1h_tokens)
        if not any(tokens) and not any(caches) and growth.cost_usd is None:
            return None
        return growth

    def calls(self) -> list[AgentCall]:
        """The merged snapshot of every request seen, in first-seen order."""
        return [_copy(call) for call in self._latest.values()]


def _copy(call: AgentCall) -> AgentCall:
    return replace(call)


def _larger(first: Decimal | None, second: Decimal | None) -> Decimal | None:
    if first is None:
        return second
    if second is None:
        return first
    return max(first, second)


class ClaudeTranscript:
    """Reads a Claude Code session transcript line by line, like
    :func:`claude_transcript_line`, and also gives each reply the fingerprint of the turns
    its request ended with: the previous reply's tool calls and the results that answered
    them. A stuck agent repeats both; a busy one does not (see ``burnmap._core.loops``).
    """

    def __init__(self) -> None:
        self._tool_calls: list[Any] = []
        self._tail: str | None = None

    def feed(self, line: str) -> list[AgentCall]:
        record = _json_object(line)
        if record is None:
            return []
        message = _dict(record.get("message"))
        blocks = [b for b in _list(message.get("content")) if isinstance(b, dict)]
        calls = _transcript_record(record)
        if record.get("type") == "assistant":
            for call in calls:
                call.fingerprint = self._tail
            uses = [[b.get("name"), b.get("input")] for b in blocks if b.get("type") == "tool_use"]
            if uses:
                self._tool_calls = uses
            return calls
        if record.get("type") == "user":
            results = [b.get("content") for b in blocks if b.get("type") == "tool_result"]
            if results and self._tool_calls:
                text = json.dumps([self._tool_calls, results], sort_keys=True, default=str)
                self._tail = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
            elif not results:
                self._tail = None  # a new prompt from the user: not a tool loop
        return calls
