"""Token usage, normalised across providers.

Providers count differently, and this module is where their counts become one shape:

- Anthropic ``input_tokens`` *excludes* cache reads and writes; writes are split into 5-minute
  and 1-hour TTLs (``cache_creation``), which are priced differently.
- OpenAI ``prompt_tokens`` / ``input_tokens`` *include* ``cached_tokens``; newer models also
  report ``cache_write_tokens`` (inside the prompt count too). ``completion_tokens`` include
  reasoning tokens, which are billed as output; xAI's leave them out (see
  :func:`as_billed`).
- A usage object without its input count (``{}``, only ``total_tokens``, nulls) cannot
  be priced: :func:`usage_from` reads it as no usage, so the call is charged its bound
  rather than $0. One with its input but no output count is read, and
  :func:`output_reported` says the output is still to be estimated.

In :class:`Usage`, ``input_tokens`` is always the *uncached* input, so the four input
counts add up to everything the provider read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any, TypeGuard

__all__ = [
    "REASONING_OUTSIDE_OUTPUT",
    "UNKNOWN_OUTPUT",
    "Usage",
    "anthropic_usage",
    "as_billed",
    "implied_output",
    "openai_usage",
    "output_reported",
    "usage_from",
]


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class Usage:
    """What one call consumed. Every count is disjoint from the others except where noted."""

    input_tokens: int = 0
    """Input read at the base rate (no cache involved)."""
    output_tokens: int = 0
    """Everything generated, reasoning/thinking included."""
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    """Cache writes at the default (5-minute) TTL."""
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    """Part of ``output_tokens``: informational."""
    input_audio_tokens: int = 0
    """Part of ``input_tokens``, priced at the audio rate where the model has one."""
    output_audio_tokens: int = 0
    """Part of ``output_tokens``, priced at the audio rate where the model has one."""
    web_searches: int = 0
    file_searches: int = 0
    """Hosted file searches (OpenAI's Responses API bills each one)."""
    images_generated: int = 0
    """Images made by the Responses API's ``image_generation`` tool (billed per image)."""
    containers: int = 0
    """Containers (code interpreter, hosted shell) the call was charged for."""
    cost_reported: str | None = None
    """A cost the provider stated itself (OpenRouter's ``usage.cost``, plus the upstream
    provider's bill for a call ``is_byok`` marks BYOK), as text."""
    other_models: tuple[tuple[str, Usage], ...] = ()
    """Sampling steps billed beside the call's own counts, each priced on its own: another
    model's (Anthropic's advisor tool), or ``""`` for the call's model (a compaction)."""

    @property
    def total_input_tokens(self) -> int:
        """Everything read: the count long-context tiers are decided on."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
        )

    @property
    def all_cache_write_tokens(self) -> int:
        return self.cache_write_tokens + self.cache_write_1h_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        values: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "cost_reported":
                continue
            values[f.name] = getattr(self, f.name) + getattr(other, f.name)
        return Usage(**values)


MAX_COUNT = 10**9
"""More tokens than any call can use: a count above it is not a count a provider meant."""


def _int(value: object) -> int:
    """A token count; 0 when absent or not a number. Raises ``ValueError`` on a number no
    call can have used (past ``MAX_COUNT``, infinite), so the caller charges the bound
    rather than a count it cannot trust."""
    kind = type(value)
    if kind is int or kind is float:
        if not value <= MAX_COUNT:  # type: ignore[operator]  # also catches nan
            raise ValueError(f"implausible token count {value!r}")
        return int(value) if value > 0 else 0  # type: ignore[operator, call-overload]
    return 0


def _is_count(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a number a provider reports a token count as (not a bool,
    a string or null)."""
    kind = type(value)
    return kind is int or kind is float


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def anthropic_usage(usage: dict[str, Any]) -> Usage:
    """Anthropic's ``usage`` object (Messages, stream events, Bedrock, Vertex).

    >>> anthropic_usage({"input_tokens": 10, "cache_read_input_tokens": 90,
    ...     "cache_creation_input_tokens": 50,
    ...     "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
    ...     "output_tokens": 7}).total_input_tokens
    150
    """
    get = usage.get
    write_total = _int(get("cache_creation_input_tokens"))
    creation = get("cache_creation")
    if isinstance(creation, dict) and creation:
        write_1h = _int(creation.get("ephemeral_1h_input_tokens"))
        # The split is authoritative when present; any remainder is billed at the 5m rate.
        write_5m = max(_int(creation.get("ephemeral_5m_input_tokens")), write_total - write_1h)
    else:
        write_1h = 0
        write_5m = write_total
    server_tools = get("server_tool_use")
    details = get("output_tokens_details")
    usage_now = Usage(
        input_tokens=_int(get("input_tokens")),
        output_tokens=_int(get("output_tokens")),
        cache_read_tokens=_int(get("cache_read_input_tokens")),
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=_int(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
        web_searches=_int(server_tools.get("web_search_requests"))
        if isinstance(server_tools, dict)
        else 0,
    )
    iterations = get("iterations")
    return _with_iterations(usage_now, iterations) if iterations else usage_now


ADVISOR = "advisor:"
"""The model of an advisor step whose usage names none: the request's advisor."""


def _with_iterations(usage: Usage, iterations: object) -> Usage:
    """Add what Anthropic's per-iteration usage reports outside the top-level counts, as
    steps priced on their own: a ``compaction`` (summarising a closed context, by the
    call's model) and an ``advisor_message`` (another model's)."""
    if not isinstance(iterations, list):
        return usage
    others: list[tuple[str, Usage]] = []
    for item in iterations:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind not in ("compaction", "advisor_message"):
            continue  # ("message" steps are in the top-level counts already)
        part = anthropic_usage({k: v for k, v in item.items() if k != "iterations"})
        if kind == "compaction":
            # A sampling step of its own (its own long-context tier), by the call's model.
            others.append(("", part))
        else:
            model = item.get("model")
            # (Without a model: the advisor the request named, see charge.)
            others.append((model if isinstance(model, str) and model else ADVISOR, part))
    if others:
        usage = replace(usage, other_models=usage.other_models + tuple(others))
    return usage


def openai_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI's ``usage`` (Chat/Completions/Embeddings use prompt_*; Responses input_*).

    >>> u = openai_usage({"prompt_tokens": 2318, "completion_tokens": 202,
    ...     "prompt_tokens_details": {"cached_tokens": 2048}})
    >>> (u.input_tokens, u.cache_read_tokens, u.output_tokens)
    (270, 2048, 202)
    """
    if _is_count(usage.get("prompt_tokens")) or not (
        "input_tokens" in usage or "output_tokens" in usage
    ):
        # (The prompt/completion pair wins over Responses keys a gateway adds beside it.)
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        in_details = _dict(usage.get("prompt_tokens_details"))
        out_details = _dict(usage.get("completion_tokens_details"))
    else:
        prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("output_tokens"))
        in_details = _dict(usage.get("input_tokens_details"))
        out_details = _dict(usage.get("output_tokens_details"))
    cached = _int(in_details.get("cached_tokens"))
    if not cached:
        # DeepSeek reports its cache hits beside the OpenAI fields.
        cached = _int(usage.get("prompt_cache_hit_tokens"))
    written = _int(in_details.get("cache_write_tokens"))
    cached = min(cached, prompt)
    written = min(written, prompt - cached)
    reasoning = out_details.get("reasoning_tokens")
    if reasoning is None:
        # xAI's gRPC shape, Databricks, Modal and Perplexity report it beside the counts.
        reasoning = usage.get("reasoning_tokens")
    return Usage(
        input_tokens=prompt - cached - written,
        output_tokens=completion,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=_int(reasoning),
        input_audio_tokens=_int(in_details.get("audio_tokens")),
        output_audio_tokens=_int(out_details.get("audio_tokens")),
        cost_reported=_stated_cost(usage),
    )


def _stated_cost(usage: dict[str, Any]) -> str | None:
    """The cost a usage object states, as text; ``None`` when it states none or only part.

    OpenRouter's ``cost`` is what OpenRouter charged. With OpenRouter's own credits
    (``is_byok`` false) that is the whole bill: ``cost_details.upstream_inference_cost``
    is then a breakdown of it, the same figure (seen live: both 0.00000285), not a second
    bill. With the caller's own provider key (``is_byok`` true) ``cost`` is only
    OpenRouter's fee: the provider billed the upstream figure to that key besides, so the
    call cost both. A BYOK usage without the upstream figure states no usable cost, and
    the call is priced from its tokens. A usage that does not say (no ``is_byok``) but
    states both is charged the larger: never the sum, which would double a non-BYOK call.

    >>> _stated_cost({"cost": 0.00225, "is_byok": True,
    ...     "cost_details": {"upstream_inference_cost": 0.045}})
    '0.04725'
    >>> _stated_cost({"cost": 0.0018, "is_byok": False,
    ...     "cost_details": {"upstream_inference_cost": 0.0018}})
    '0.0018'
    >>> _stated_cost({"cost": 0.00225, "cost_details": {"upstream_inference_cost": 0.045}})
    '0.045'
    >>> _stated_cost({"cost": 0.00225, "is_byok": True}) is None
    True
    """
    cost = usage.get("cost")
    if isinstance(cost, dict):  # Perplexity: {"total_cost": …, "input_tokens_cost": …}
        cost = cost.get("total_cost")
    if not _is_count(cost):
        return None
    byok = usage.get("is_byok")
    if byok is False:
        return str(cost)
    upstream = _dict(usage.get("cost_details")).get("upstream_inference_cost")
    if not (_is_count(upstream) and upstream > 0):
        return None if byok is True else str(cost)
    stated, upstream_cost = Decimal(str(cost)), Decimal(str(upstream))
    if byok is True:
        return str(stated + upstream_cost)
    return str(max(stated, upstream_cost))


REASONING_OUTSIDE_OUTPUT = frozenset({"x-ai"})
"""Providers whose Chat Completions ``completion_tokens`` leave out the reasoning tokens
(``completion_tokens_details.reasoning_tokens``; ``total_tokens`` is prompt + completion +
reasoning). genai-prices' usage extractors add reasoning to the output for these alone."""


def as_billed(usage: Usage, provider: str | None, kind: str) -> Usage:
    """``usage`` as ``provider`` bills it from endpoint ``kind``: for xAI's Chat and legacy
    Completions, the reasoning tokens join the output (its Responses ``output_tokens``
    already hold them).

    >>> as_billed(Usage(output_tokens=50, reasoning_tokens=2000), "x-ai", "chat").output_tokens
    2050
    >>> as_billed(Usage(output_tokens=50, reasoning_tokens=20), "openai", "chat").output_tokens
    50
    """
    if (
        usage.reasoning_tokens
        and provider in REASONING_OUTSIDE_OUTPUT
        and kind in ("chat", "completions")
    ):
        return replace(usage, output_tokens=usage.output_tokens + usage.reasoning_tokens)
    return usage


_ANTHROPIC_INPUT = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _output_key(shape: str, usage: dict[str, Any]) -> str | None:
    """The key of ``usage``'s output count when it reports its input, else ``None``.

    Anthropic's input is known from ``input_tokens``, or when that is left out (a
    gateway may drop a 0 when the cache read everything) from its cache counts. OpenAI's prompt/
    completion pair is read whenever ``prompt_tokens`` is a count, whatever other keys
    the usage carries (a gateway may add ``input_tokens`` beside it); the Responses pair
    otherwise."""
    if shape == "anthropic":
        if _is_count(usage.get("input_tokens")) or (
            "input_tokens" not in usage
            and any(_is_count(usage.get(key)) for key in _ANTHROPIC_INPUT)
        ):
            return "output_tokens"
        return None
    if _is_count(usage.get("prompt_tokens")):
        return "completion_tokens"
    return "output_tokens" if _is_count(usage.get("input_tokens")) else None


UNKNOWN_OUTPUT = 2**62
"""An output count no usage states: charged as the call's output bound (it is capped
there), so a call whose output is not known costs what it was bounded at."""


def implied_output(usage: object) -> int:
    """The output a usage without an output count implies: its ``total_tokens`` less its
    input, where it states both (hidden reasoning included: Gemini's OpenAI-compatible
    endpoint may spend every token thinking and report no ``completion_tokens``), else
    :data:`UNKNOWN_OUTPUT`.

    >>> implied_output({"prompt_tokens": 10, "total_tokens": 2010})
    2000
    >>> implied_output({"input_tokens": 10}) == UNKNOWN_OUTPUT
    True
    """
    if isinstance(usage, dict):
        total = usage.get("total_tokens")
        prompt = usage.get("prompt_tokens")
        if not _is_count(prompt):
            prompt = usage.get("input_tokens")
        if _is_count(total) and _is_count(prompt) and total >= prompt:
            return int(total - prompt)
    return UNKNOWN_OUTPUT


def output_reported(shape: str, usage: object, kind: str | None = None) -> bool:
    """Whether ``usage`` reports both counts a price needs, input and output: a call whose
    usage :func:`usage_from` reads but that leaves out the output count (Gemini's
    OpenAI-compatible endpoint on a blocked answer, a legacy Completions ``echo`` with
    ``max_tokens: 0``) is charged its reported input plus the output metered or
    estimated, marked estimated. Embeddings generate nothing: their prompt count is
    enough (also from an endpoint of unknown ``kind``).

    >>> output_reported("openai", {"prompt_tokens": 10, "total_tokens": 10}, "chat")
    False
    >>> output_reported("openai", {"prompt_tokens": 8, "total_tokens": 8}, "embeddings")
    True
    """
    if not isinstance(usage, dict):
        return False
    key = _output_key(shape, usage)
    if key is None:
        return False
    if _is_count(usage.get(key)):
        return True
    return key == "completion_tokens" and kind in ("embeddings", None)


def usage_from(shape: str, usage: object) -> Usage | None:
    """The usage object of an API response in ``shape`` (``"anthropic"`` or ``"openai"``);
    ``None`` when it is absent or does not
    report its input (``{}``, only ``total_tokens``, null or non-numeric counts), so the
    call is charged its bound, never $0. A usage that reports its input but not its
    output is read with 0 output tokens: :func:`output_reported` tells it apart.

    >>> usage_from("openai", {"prompt_tokens": None, "completion_tokens": None,
    ...     "total_tokens": 5000}) is None
    True
    >>> usage_from("openai", {"prompt_tokens": 8, "total_tokens": 8}).input_tokens
    8
    """
    if not isinstance(usage, dict) or _output_key(shape, usage) is None:
        return None
    return anthropic_usage(usage) if shape == "anthropic" else openai_usage(usage)
