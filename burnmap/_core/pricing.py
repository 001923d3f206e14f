"""Prices: genai-prices' bundled data, user overrides, and a max-output table.

A :class:`PriceSheet` is a flat, immutable view of one model's rates (USD per million
tokens), built once from genai-prices and cached, so pricing a call is a handful of
``Decimal`` multiplications. Usage is normalised by :mod:`burnmap._core.usage` first; the
arithmetic here is ours, and the tests check it against ``genai_prices.calc_price``.

Long-context tiers follow the providers' "cliff" rule: once the *total* input of a call
(uncached + cache reads + cache writes) passes a threshold, every token of the call is
priced at the tier's rates.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

from burnmap._core.endpoint import template_pattern
from burnmap._core.money import ZERO
from burnmap._core.usage import Usage
from burnmap.errors import UnknownModelError

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "MAX_OUTPUT_TOKENS",
    "PriceBook",
    "PriceSheet",
    "Rate",
    "by_prefix",
    "chat_search_fee",
    "hosted_tool_fee",
    "is_chat_search_model",
    "max_output_for",
    "same_price_base",
]

_V = TypeVar("_V")
MILLION = Decimal(1_000_000)
# The window assumed for a model whose price was registered without one.
DEFAULT_CONTEXT_WINDOW = 131_072
RECENT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Rate:
    """A per-million-token rate, with optional long-context tiers.

    >>> r = Rate(Decimal(3), ((200_000, Decimal(6)),))
    >>> r.at(200_000), r.at(200_001), r.highest
    (Decimal('3'), Decimal('6'), Decimal('6'))
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()
    """(threshold, rate): the rate applies when total input tokens exceed the threshold."""

    def at(self, total_input_tokens: int) -> Decimal:
        rate = self.base
        for threshold, tier_rate in self.tiers:
            if total_input_tokens > threshold:
                rate = tier_rate
        return rate

    @property
    def highest(self) -> Decimal:
        return max([self.base, *(rate for _, rate in self.tiers)])

    def times(self, factor: Decimal) -> Rate:
        return Rate(self.base * factor, tuple((at, rate * factor) for at, rate in self.tiers))


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """Everything needed to price and bound calls to one model."""

    model: str
    provider: str
    input: Rate
    output: Rate
    cache_read: Rate | None = None
    cache_write: Rate | None = None
    cache_write_1h: Rate | None = None
    input_audio: Rate | None = None
    output_audio: Rate | None = None
    web_search: Decimal | None = None
    """USD per search request."""
    per_request: Decimal | None = None
    """USD per call, where a model charges one."""
    context_window: int | None = None
    max_output: int | None = None
    source: str = "genai-prices"
    window_caps: bool = True
    """Whether the window caps the input bound of a request whose length is known. A
    registered price's window taken from the bundled entry does not (the name may serve a
    model with a larger one): it only bounds content of unknown length."""
    search_fee_stated: bool = True
    """Whether ``web_search`` was given for this sheet's model. A registered price's fee
    taken from the bundled entry was not: a tool that costs more a call on the model
    (``web_search_preview``) is still charged its own fee."""
    _flat: tuple[Decimal, ...] | None = field(default=None, init=False, repr=False, compare=False)
    """A sheet without tiers: its rates, worked out once (see :meth:`_rates_at`)."""

    def __post_init__(self) -> None:
        rates = (
            self.input,
            self.output,
            self.cache_read,
            self.cache_write,
            self.cache_write_1h,
            self.input_audio,
            self.output_audio,
        )
        if not any(rate is not None and rate.tiers for rate in rates):
            object.__setattr__(self, "_flat", self._rates_at(0))

    def _rates_at(self, total_in: int) -> tuple[Decimal, ...]:
        """(input, output, cache read, cache write 5m, cache write 1h, input audio, output
        audio, bound input if caching, bound input, bound output) at ``total_in`` input
        tokens, each falling back to the rate a provider bills in its absence."""
        in_rate = self.input.at(total_in)
        out_rate = self.output.at(total_in)
        read = self.cache_read.at(total_in) if self.cache_read else in_rate
        write = self.cache_write.at(total_in) if self.cache_write else in_rate
        write_1h = self.cache_write_1h.at(total_in) if self.cache_write_1h else write
        audio_in = self.input_audio.at(total_in) if self.input_audio else in_rate
        audio_out = self.output_audio.at(total_in) if self.output_audio else out_rate
        # The bound: the highest rate an input token or output token may be billed at.
        bound_plain = max(in_rate, audio_in)
        writes = [rate.at(total_in) for rate in (self.cache_write, self.cache_write_1h) if rate]
        bound_caching = max([bound_plain, *writes])
        bound_out = max(out_rate, audio_out)
        return (
            in_rate,
            out_rate,
            read,
            write,
            write_1h,
            audio_in,
            audio_out,
            bound_caching,
            bound_plain,
            bound_out,
        )

    def times(self, factor: Decimal) -> PriceSheet:
        """This sheet with every token rate multiplied by ``factor`` (fees per search or per
        request are not).

        >>> PriceSheet("m", "anthropic", Rate(Decimal(3)), Rate(Decimal(15))).times(2).output
        Rate(base=Decimal('30'), tiers=())
        """
        factor = Decimal(factor)

        def scaled(rate: Rate | None) -> Rate | None:
            return None if rate is None else rate.times(factor)

        return replace(
            self,
            input=self.input.times(factor),
            output=self.output.times(factor),
            cache_read=scaled(self.cache_read),
            cache_write=scaled(self.cache_write),
            cache_write_1h=scaled(self.cache_write_1h),
            input_audio=scaled(self.input_audio),
            output_audio=scaled(self.output_audio),
        )

    def bound_rates(self, input_tokens: int, *, caching: bool) -> tuple[Decimal, Decimal]:
        """The highest (input, output) rates in force at ``input_tokens`` (tiers apply past
        their thresholds), counting cache-write rates when the call may write the cache.

        >>> sheet = PriceSheet("m", "anthropic", Rate(Decimal(3)), Rate(Decimal(15)),
        ...                    cache_write=Rate(Decimal("3.75")))
        >>> sheet.bound_rates(1000, caching=True), sheet.bound_rates(1000, caching=False)
        ((Decimal('3.75'), Decimal('15')), (Decimal('3'), Decimal('15')))
        """
        rates = self._flat or self._rates_at(input_tokens)
        return (rates[7] if caching else rates[8]), rates[9]

    def cost(self, usage: Usage) -> Decimal:
        """The exact cost of ``usage`` in USD.

        Claude Sonnet 4.5 crosses its 200k tier, so every token is priced at the tier:

        >>> sheet = PriceSheet("m", "anthropic", Rate(Decimal(3), ((200_000, Decimal(6)),)),
        ...                    Rate(Decimal(15), ((200_000, Decimal("22.5")),)))
        >>> sheet.cost(Usage(input_tokens=200_001, output_tokens=1000))
        Decimal('1.222506')
        """
        total_in = usage.total_input_tokens
        in_rate, out_rate, read, write, write_1h, audio_in_rate, audio_out_rate = (
            self._flat or self._rates_at(total_in)
        )[:7]
        audio_in = min(usage.input_audio_tokens, usage.input_tokens)
        audio_out = min(usage.output_audio_tokens, usage.output_tokens)
        cost = (usage.input_tokens - audio_in) * in_rate + (usage.output_tokens - audio_out) * (
            out_rate
        )
        if audio_in:
            cost += audio_in * audio_in_rate
        if audio_out:
            cost += audio_out * audio_out_rate
        if usage.cache_read_tokens:
            cost += usage.cache_read_tokens * read
        if usage.cache_write_tokens:
            cost += usage.cache_write_tokens * write
        if usage.cache_write_1h_tokens:
            cost += usage.cache_write_1h_tokens * write_1h
        cost /= MILLION
        if usage.web_searches and self.web_search:
            cost += usage.web_searches * self.web_search
        if self.per_request:
            cost += self.per_request
        return cost


# Largest output a model can produce in one call, for requests that set no max_tokens.
# genai-prices has no such field. Values are the providers' documented maxima (with any
# opt-in beta raising them), matched by longest prefix of the normalised model id.
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "claude-opus-4-6": 128_000,
    "claude-opus-4-5": 64_000,
    "claude-opus-4-1": 32_000,
    "claude-opus-4-0": 32_000,
    # Opus 4 itself (32k) and any newer 4.x: an unlisted newer model gets the largest.
    "claude-opus-4": 128_000,
    "claude-sonnet-4": 64_000,
    "claude-haiku-4": 64_000,
    "claude-3-7-sonnet": 128_000,
    "claude-3-5-sonnet": 8_192,
    "claude-3-5-haiku": 8_192,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
    "claude": 128_000,
    "gpt-5": 128_000,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-4o": 16_384,
    "chatgpt-4o": 16_384,
    "gpt-4-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-3.5-turbo": 4_096,
    "o1-mini": 65_536,
    "o1": 100_000,
    "o3": 100_000,
    "o4-mini": 100_000,
    "codex-mini": 100_000,
}

# Chat Completions' search models search the web on every call and bill it per call, by
# the request's ``web_search_options.search_context_size`` (low, medium, high); genai-prices
# has no such field. USD per call, from OpenAI's pricing page: the search-preview models at
# $30/$35/$50 (gpt-4o) and $25/$27.50/$30 (gpt-4o-mini) per 1,000 calls, gpt-5-search-api
# at $10 per 1,000 calls (its search content is billed as input tokens, which usage counts).
CHAT_SEARCH_FEES: dict[str, tuple[Decimal, Decimal, Decimal]] = {
    "gpt-4o-search-preview": (Decimal("0.03"), Decimal("0.035"), Decimal("0.05")),
    "gpt-4o-mini-search-preview": (Decimal("0.025"), Decimal("0.0275"), Decimal("0.03")),
    "gpt-5-search-api": (Decimal("0.01"), Decimal("0.01"), Decimal("0.01")),
}
_SEARCH_CONTEXT_SIZES = {"low": 0, "medium": 1, "high": 2}
_SEARCH_MODEL = re.compile(r"-search-(preview|api)\b")


@lru_cache(maxsize=512)
def is_chat_search_model(model: str) -> bool:
    """Whether ``model`` is one of the Chat Completions models that search on every call.

    >>> [is_chat_search_model(m) for m in ("gpt-4o-mini-search-preview-2025-03-11", "gpt-4o")]
    [True, False]
    """
    return _SEARCH_MODEL.search(_normalise(model)) is not None


def chat_search_fee(model: str, context_size: object = None) -> Decimal | None:
    """The per-call search fee of a Chat Completions search model (``None`` if unknown);
    ``context_size``: the request's ``search_context_size`` (``"medium"`` when unset).

    >>> chat_search_fee("gpt-4o-search-preview"), chat_search_fee("gpt-4o-search-preview", "high")
    (Decimal('0.035'), Decimal('0.05'))
    """
    name = _DATE_SUFFIX.sub("", _normalise(model))
    fees = CHAT_SEARCH_FEES.get(name)
    if fees is None:
        return None
    if context_size is None:
        return fees[1]
    # A size OpenAI does not accept is answered 400 (free); bound it at the highest.
    return fees[_SEARCH_CONTEXT_SIZES.get(context_size, 2) if isinstance(context_size, str) else 2]


# OpenAI's fee per call of the Responses web_search tool for models whose genai-prices entry
# has none, USD: the reasoning models' rate, $10 per 1,000 calls ("$10/1K tool calls in
# our o-series reasoning models", o3-pro included, OpenAI's June 2025 API update; the
# pricing page's "web search, all models"), by undated model id. Azure's table lists o3 and
# o4-mini without a fee: their OpenAI entry's fee is taken (PriceBook._openai_search_fee).
OPENAI_WEB_SEARCH_FEES: dict[str, Decimal] = {
    "o3-pro": Decimal("0.01"),
}

# The older Responses tool ``web_search_preview`` costs $25 per 1,000 calls on OpenAI's
# non-reasoning models (the GPT-4o and GPT-4.1 families; the search content tokens are
# free there), and $10 like ``web_search`` on the others (OpenAI's pricing page, built-in
# tools).
WEB_SEARCH_PREVIEW_FEE = Decimal("0.025")
WEB_SEARCH_PREVIEW_MODELS = ("gpt-4o", "gpt-4.1", "chatgpt-4o")


# What the Responses API bills per use of a hosted tool, outside the response's usage,
# USD from OpenAI's pricing page: a file search call ($2.50 per 1,000 calls), a code
# interpreter (or hosted shell) container by its ``memory_limit``, one 20-minute session
# (1 GB, the default, $0.03; billed per minute since June 2026, at least 5, at the same
# rate). Images made by the ``image_generation`` tool have no price here (it depends on
# the image model, size and quality): a request that offers the tool is refused until one
# is registered.
HOSTED_TOOL_FEES: dict[tuple[str, str | None], Decimal] = {
    ("file_search", None): Decimal("0.0025"),
    ("code_interpreter", None): Decimal("0.03"),
    ("code_interpreter", "1g"): Decimal("0.03"),
    ("code_interpreter", "4g"): Decimal("0.12"),
    ("code_interpreter", "16g"): Decimal("0.48"),
    ("code_interpreter", "64g"): Decimal("1.92"),
}


# The hosts OpenAI's own fees per web search apply on: OpenAI, Azure (which resells its
# models at its prices) and gateways (no provider: priced by name, OpenAI's entry).
_OPENAI_HOSTS = frozenset({None, "openai", "azure"})

HOSTED_TOOLS = frozenset({"image_generation", "file_search", "code_interpreter"})


def _tool_key(tool: str, model: str | None, memory_limit: str | None) -> tuple[str, str | None]:
    """A declared hosted-tool fee's key: the tool, and the image model or container size
    it is for (``None``: any)."""
    name = tool.strip().lower()
    if name not in HOSTED_TOOLS:
        hint = (
            " (web searches are priced per model: register(model, ..., web_search=…))"
            if name.startswith("web_search")
            else ""
        )
        raise ValueError(
            f"burnmap prices hosted tools {', '.join(sorted(HOSTED_TOOLS))}, not {tool!r}{hint}"
        )
    if model is not None and name != "image_generation":
        raise ValueError(f"model= is for image_generation's image models, not for {name}")
    if memory_limit is not None and name != "code_interpreter":
        raise ValueError(f"memory_limit= is for code_interpreter's containers, not for {name}")
    option = model if model is not None else memory_limit
    return name, option.strip().lower() if option else None


def hosted_tool_fee(tool: str, option: str | None = None) -> Decimal | None:
    """OpenAI's published fee per use of a hosted tool (``None`` when none is known);
    ``option``: a container's memory limit. A size OpenAI does not offer is answered 400
    (free): it is bounded at the largest.

    >>> hosted_tool_fee("code_interpreter", "4g"), hosted_tool_fee("image_generation")
    (Decimal('0.12'), None)
    """
    fee = HOSTED_TOOL_FEES.get((tool, option))
    if fee is None and tool == "code_interpreter" and option is not None:
        return HOSTED_TOOL_FEES[(tool, "64g")]
    return fee if fee is not None else HOSTED_TOOL_FEES.get((tool, None))


# Audio rates genai-prices lacks (USD per million audio tokens, input and output), by
# longest prefix of the model id: without them audio would be priced at the text rates.
AUDIO_RATES: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o-audio-preview": (Decimal(40), Decimal(80)),
    "gpt-4o-audio-preview-2024-10-01": (Decimal(100), Decimal(200)),
    "gpt-4o-mini-audio-preview": (Decimal(10), Decimal(20)),
}


def _audio_rate(model: str, which: int) -> Rate | None:
    rates = by_prefix(AUDIO_RATES, _normalise(model))
    return None if rates is None else Rate(rates[which])


# Anthropic's fast mode (speed: "fast") bills Claude Opus 4.6 at 6x its standard rates
# ($30/$150 per million); genai-prices lists fast-mode rates for some newer models, which win.
FAST_MODE_FACTOR = Decimal(6)
# Anthropic's data residency: inference pinned to a region (inference_geo other than
# "global") bills 1.1x.
GEO_FACTOR = Decimal("1.1")

# Context windows genai-prices understates. The input bound is capped at the window, so an
# understated one lets a longer (accepted, billed) request past the bound: these win.
CONTEXT_WINDOWS: dict[str, int] = {
    "deepseek-chat": 128_000,  # DeepSeek's models page: 128K since V3.1
    "deepseek-reasoner": 128_000,
}


# Providers whose host serves another provider's models at that provider's prices, beside
# the fallbacks genai-prices declares itself (Azure: OpenAI's, Anthropic's…; Google:
# Anthropic's): Bedrock's Claude ids its table does not list cost what Anthropic charges,
# and Azure (AI Foundry) resells Mistral's models at Mistral's list prices.
HOST_FALLBACKS: dict[str, tuple[str, ...]] = {"aws": ("anthropic",), "azure": ("mistral",)}

# OpenRouter resells a first-party vendor's own models at that vendor's list price: an id
# its genai-prices table lacks is looked up, after the slash, in the table of the vendor
# its prefix names (the genai-prices provider id). Not open-weight models, which third
# parties host and OpenRouter may route to a dearer one than the vendor's own price:
# meta-llama/, deepseek/, qwen/… have no entry here, and OPEN_WEIGHT_MODELS keeps out
# those the vendors below publish (openai/gpt-oss-120b, google/gemma-…, mistralai/mixtral…).
OPENROUTER_VENDORS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "x-ai": "x-ai",
    "mistralai": "mistral",
    "cohere": "cohere",
}
OPEN_WEIGHT_MODELS = re.compile(
    r"^(gpt-oss|(code|med|shield|t5|recurrent)?gemma|mistral-7b|mixtral|mistral-nemo"
    r"|mistral-small|mistral-tiny|open-m|ministral|pixtral-12b|devstral-small"
    r"|magistral-small|codestral-mamba|mathstral)"
)


def _vendor_fallback(provider: str | None, model: str) -> tuple[str, str] | None:
    """The (genai-prices provider, model id) an OpenRouter id is resold at, if any.

    >>> _vendor_fallback("openrouter", "x-ai/grok-4"), _vendor_fallback("openrouter", "gpt-4o")
    (('x-ai', 'grok-4'), None)
    >>> _vendor_fallback("openrouter", "meta-llama/llama-3.3-70b-instruct")
    >>> _vendor_fallback("openrouter", "openai/gpt-oss-120b")
    """
    if provider != "openrouter" or "/" not in model:
        return None
    vendor = OPENROUTER_VENDORS.get(model.split("/", 1)[0].strip().lower())
    name = _normalise(model)
    if vendor is None or not name or OPEN_WEIGHT_MODELS.match(name):
        return None
    return vendor, name


# Anthropic bills a premium above 200k input tokens for the models whose 1M-token window
# (the context-1m beta) came with one: input and cache rates x2, output x1.5. genai-prices
# lists some of them flat (Sonnet 4 everywhere, Sonnet 4.5 on Bedrock): their tiers are
# added here, so a long-context call is bounded and charged at what it costs.
LONG_CONTEXT_THRESHOLD = 200_000
LONG_CONTEXT_MODELS = (
    "claude-sonnet-4-5",
    "claude-sonnet-4-0",
    "claude-sonnet-4-2025",  # dated Sonnet 4: claude-sonnet-4-20250514
    "claude-4-sonnet",  # Vertex's name for it
)
# The same, matched as whole (normalised) ids, where a prefix would also match later models
# that list their own price: OpenRouter's anthropic/claude-sonnet-4 (not claude-sonnet-4-6).
LONG_CONTEXT_IDS = frozenset({"claude-sonnet-4"})
_LONG_INPUT = Decimal(2)
_LONG_OUTPUT = Decimal("1.5")


def _long_context(rate: Rate | None, factor: Decimal) -> Rate | None:
    """``rate`` with the long-context tier, unless it has tiers of its own."""
    if rate is None or rate.tiers:
        return rate
    return Rate(rate.base, ((LONG_CONTEXT_THRESHOLD, rate.base * factor),))


def _context_window(model_id: str, listed: int | None) -> int | None:
    known = CONTEXT_WINDOWS.get(model_id)
    return listed if known is None else max(known, listed or 0)


_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")
_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-v\d+(:\d+)?)$")


def _normalise(model: str) -> str:
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    if "claude" in name:
        name = _DOTTED_VERSION.sub(r"\1-\2", name)  # OpenRouter's "claude-opus-4.6"
    # Bedrock ids: "anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.…"
    if "anthropic." in name:
        name = name.rsplit("anthropic.", 1)[1]
    return name


# OpenRouter's model suffixes. ":online" turns on its web plugin, billed apart (the bound
# adds it): the tokens cost what the model's do. ":nitro", ":floor" and ":exacto" pick
# providers by speed, price or accuracy, whose rates differ from the model's listed ones:
# priced only where genai-prices lists the variant itself, not as the bare model.
SAME_PRICE_SUFFIXES = (":online",)
_ROUTING_SUFFIX = re.compile(r":(nitro|floor|exacto)$")


def same_price_base(model: str) -> str | None:
    """``model`` without a suffix that leaves its token prices as they are, if it has one.

    >>> same_price_base("anthropic/claude-sonnet-4.5:online"), same_price_base("gpt-4o")
    ('anthropic/claude-sonnet-4.5', None)
    """
    if ":" not in model:  # (every lookup asks: most names have no suffix at all)
        return None
    name = model.strip()
    for suffix in SAME_PRICE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def with_suggestions(error: UnknownModelError) -> UnknownModelError:
    """The refusal of an unknown model, naming the known models it may mean (computed only
    for a refusal that reaches a caller: lookups that fall back skip it)."""
    if error.tool or error.search_fee or error.similar or error.tier is not None:
        return error
    similar = similar_models(error.model)
    return UnknownModelError(error.model, error.provider, similar=similar) if similar else error


@lru_cache(maxsize=256)
def similar_models(model: str) -> tuple[str, ...]:
    """Known model ids close to ``model`` (a typo's likely meaning), closest first.

    >>> similar_models("claude-sonet-4-6")[0]
    'claude-sonnet-4-6'
    """
    import difflib

    from genai_prices import data_snapshot

    ids = {m.id for p in data_snapshot.get_snapshot().providers for m in p.models}
    named = _normalise(model)
    close = difflib.get_close_matches(named, sorted(ids), n=5, cutoff=0.8)
    # One spelling per model: claude-sonnet-4-6 and claude-sonnet-4.6 are one.
    return tuple(dict.fromkeys(_DOTTED_VERSION.sub(r"\1-\2", m) for m in close))[:3]


def _same_model_elsewhere(snapshot: Any, provider: str, model: str) -> Any:
    """``model``'s own entry in a table genai-prices falls back to from ``provider``'s,
    if one lists it."""
    for fallback in _declared_fallbacks(snapshot, provider):
        try:
            _, entry = snapshot.find_provider_model(model, None, fallback, None)
        except LookupError:
            continue
        if _undated(entry.id) == _undated(model):
            return entry
    return None


def _declared_fallbacks(snapshot: Any, provider: str) -> list[str]:
    for entry in snapshot.providers:
        if entry.id == provider:
            return list(entry.fallback_model_providers or ())
    return []


def _undated(model: str) -> str:
    """``model`` normalised, without its date and version suffixes: one model's ids agree.

    >>> _undated("us.anthropic.claude-sonnet-4-5-20250929-v1:0"), _undated("Claude-Sonnet-4.5")
    ('claude-sonnet-4-5', 'claude-sonnet-4-5')
    """
    name = _normalise(model)
    while (shorter := _DATE_SUFFIX.sub("", name)) != name:
        name = shorter
    return name


def _override_names(name: str) -> Iterator[str]:
    """The names a registered price may be under, most specific first: the id as given,
    without its date and version suffixes (one after the other, as in Bedrock's
    ``…-20250929-v1:0``), then the same for its normalised form (no provider or route
    prefix).

    >>> list(_override_names("us.anthropic.claude-sonnet-4-5-20250929-v1:0"))[-2:]
    ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5']
    """
    for form in (name, _normalise(name)):
        current = form
        yield current
        while (shorter := _DATE_SUFFIX.sub("", current)) != current:
            current = shorter
            yield current


def max_output_for(model: str) -> int | None:
    """The documented maximum output of ``model``, by longest matching prefix.

    >>> max_output_for("gpt-4o-mini-2024-07-18"), max_output_for("o3-mini")
    (16384, 100000)
    """
    return by_prefix(MAX_OUTPUT_TOKENS, _DATE_SUFFIX.sub("", _normalise(model)))


def by_prefix(table: Mapping[str, _V], name: str) -> _V | None:
    """The entry of ``table`` whose key is the longest prefix of ``name``, if any.

    >>> by_prefix({"gpt-4o": 1, "gpt-4o-mini": 2}, "gpt-4o-mini-2024-07-18")
    2
    """
    best = max((prefix for prefix in table if name.startswith(prefix)), key=len, default=None)
    return None if best is None else table[best]


def _rate(value: Any) -> Rate | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return Rate(value)
    base = getattr(value, "base", None)
    tiers = getattr(value, "tiers", None)
    if isinstance(base, Decimal) and tiers is not None:
        return Rate(base, tuple((int(t.start), Decimal(t.price)) for t in tiers))
    return None


def _per_unit(value: Any, per: int) -> Decimal | None:
    rate = _rate(value)
    return None if rate is None else rate.highest / per


def _utc_now() -> datetime:
    return datetime.now(tz=UTC)


def _period_end(prices: object, now: datetime) -> datetime | None:
    """When the price in force at ``now`` may next change: the earliest start date or
    time-of-day boundary (DeepSeek's peak hours) of the entry's conditional prices after
    ``now``; ``None`` when its price does not depend on the time.

    >>> from genai_prices.types import ConditionalPrice, ModelPrice, TimeOfDateConstraint
    >>> peak = TimeOfDateConstraint(time_of_day(1, tzinfo=UTC), time_of_day(4, tzinfo=UTC))
    >>> prices = [ConditionalPrice(prices=ModelPrice()),
    ...           ConditionalPrice(constraint=peak, prices=ModelPrice())]
    >>> _period_end(prices, datetime(2026, 11, 29, 0, 59, 30, tzinfo=UTC))
    datetime.datetime(2026, 11, 29, 1, 0, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(prices, list):
        return None
    ends: list[datetime] = []
    for conditional in prices:
        constraint = getattr(conditional, "constraint", None)
        start_date = getattr(constraint, "start_date", None)
        if isinstance(start_date, date):
            ends.append(datetime(start_date.year, start_date.month, start_date.day, tzinfo=UTC))
        for name in ("start_time", "end_time"):
            at = getattr(constraint, name, None)
            if isinstance(at, time_of_day):
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                # (A boundary given in another zone: its UTC time of day, on today's date.)
                today = datetime.combine(now.astimezone(UTC).date(), at).astimezone(UTC)
                day = timedelta(days=1)
                ends.extend((today - day, today, today + day, today + 2 * day))
    later = [end for end in ends if end > now]
    return min(later) if later else None


def _specificity(key: str) -> tuple[int, int]:
    """Longer keys first, then those with fewer ``{…}`` wildcards."""
    segments = key.split("/")
    return len(segments), sum(not s.startswith("{") for s in segments)


def _endpoint_key(path: str) -> str:
    key = "/" + path.strip().strip("/")
    if key == "/":
        raise ValueError("an endpoint path is needed, e.g. /v1/images/generations")
    return key


@dataclass
class PriceBook:
    """Resolves (provider, model) to a :class:`PriceSheet`: overrides first, then genai-prices.

    Thread-safe; lookups are cached by the genai-prices price object in force, so
    time-of-day prices (DeepSeek) and dated price changes still apply.
    """

    _overrides: dict[str, PriceSheet] = field(default_factory=dict)
    _endpoints: dict[str, tuple[re.Pattern[str], PriceSheet]] = field(default_factory=dict)
    _tools: dict[tuple[str, str | None], Decimal] = field(default_factory=dict)
    _modified: dict[tuple[int, str, str | None, tuple[str, ...]], tuple[PriceSheet, PriceSheet]] = (
        field(default_factory=dict)
    )
    _models: dict[tuple[str | None, str], Any] = field(default_factory=dict)
    _sheets: dict[tuple[int, str, str, str], PriceSheet] = field(default_factory=dict)
    _recent: dict[tuple[str | None, str], tuple[PriceSheet, float, datetime | None]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _now: Callable[[], datetime] = field(default=_utc_now, repr=False)
    """The clock prices are looked up at (a test's own)."""

    def register(
        self,
        model: str,
        *,
        input: float | Decimal | str,
        output: float | Decimal | str,
        cache_read: float | Decimal | str | None = None,
        cache_write: float | Decimal | str | None = None,
        cache_write_1h: float | Decimal | str | None = None,
        web_search: float | Decimal | str | None = None,
        per_request: float | Decimal | str | None = None,
        context_window: int | None = None,
        max_output: int | None = None,
        provider: str = "custom",
    ) -> PriceSheet:
        from burnmap._core.money import usd

        def opt(value: float | Decimal | str | None) -> Rate | None:
            return None if value is None else Rate(usd(value))

        window_caps = search_fee_stated = True
        bundled = self._bundled(model, provider)
        if bundled is not None:
            # A negotiated rate for a model genai-prices lists under this very id keeps its
            # fee per search (a Chat Completions search model's comes from CHAT_SEARCH_FEES).
            # Limits are taken only where they widen the bound: the name may serve another
            # model (an Azure deployment named "gpt-4" running GPT-4 Turbo, 128k tokens),
            # so a window wider than the default bounds content of unknown length without
            # capping a request's own length, and a maximum output is never taken.
            if web_search is None and not is_chat_search_model(model):
                web_search, search_fee_stated = bundled.web_search, False
            inherited = bundled.context_window
            if context_window is None and inherited and inherited > DEFAULT_CONTEXT_WINDOW:
                context_window, window_caps = inherited, False
        sheet = PriceSheet(
            model=model,
            provider=provider,
            input=Rate(usd(input)),
            output=Rate(usd(output)),
            cache_read=opt(cache_read),
            cache_write=opt(cache_write),
            cache_write_1h=opt(cache_write_1h),
            web_search=None if web_search is None else usd(web_search),
            per_request=None if per_request is None else usd(per_request),
            context_window=context_window,
            max_output=max_output,
            source="override",
            window_caps=window_caps,
            search_fee_stated=search_fee_stated,
        )
        with self._lock:
            self._overrides[model.strip().lower()] = sheet
        return sheet

    def _bundled(self, model: str, provider: str) -> PriceSheet | None:
        """genai-prices' sheet for ``model`` (by ``provider`` if genai-prices knows it, else
        by name), if it lists this very model: its id is ``model``'s, but for a provider
        prefix and date suffixes (genai-prices' name matching would take
        ``claude-3-haiku-custom`` for ``claude-3-haiku``).

        >>> PriceBook()._bundled("claude-3-haiku-custom", "custom") is None
        True
        """
        for known in dict.fromkeys((provider, None)):
            try:
                info = self._model_info(model, known)
            except UnknownModelError:
                continue
            if _undated(info.id) != _undated(model):
                continue
            try:
                return self._sheet(info, info.get_prices(self._now()), known, model)
            except UnknownModelError:
                continue
        return None

    def unregister(self, model: str) -> bool:
        with self._lock:
            return self._overrides.pop(model.strip().lower(), None) is not None

    def register_endpoint(
        self, path: str, *, per_call: float | Decimal | str, provider: str = "custom"
    ) -> PriceSheet:
        """Declare what one call to a paid endpoint burnmap cannot meter may cost (USD).

        ``path`` matches the end of the request path, segment by segment, and ``{id}``
        (any name in braces) matches any one segment: ``"/images/generations"``,
        ``"/v1/images/generations"``, ``"/threads/{id}/runs"``. Each call then reserves
        ``per_call`` and is charged it, marked estimated; ``per_call=0`` lets such calls
        through uncounted.

        >>> book = PriceBook()
        >>> book.register_endpoint("/images/generations", per_call="0.04").per_request
        Decimal('0.04')
        >>> book.endpoint_price("/v1/images/generations").per_request
        Decimal('0.04')
        >>> _ = book.register_endpoint("/threads/{id}/runs", per_call=1)
        >>> book.endpoint_price("/v1/threads/thread_B/runs").per_request
        Decimal('1')
        """
        from burnmap._core.money import usd

        key = _endpoint_key(path)
        sheet = PriceSheet(
            model=key,
            provider=provider,
            input=Rate(Decimal(0)),
            output=Rate(Decimal(0)),
            per_request=usd(per_call),
            source="endpoint",
        )
        with self._lock:
            self._endpoints[key] = (template_pattern(key), sheet)
        return sheet

    def unregister_endpoint(self, path: str) -> bool:
        with self._lock:
            return self._endpoints.pop(_endpoint_key(path), None) is not None

    def endpoint_price(self, path: str) -> PriceSheet | None:
        """The declared price of the endpoint ``path`` calls (the longest match), if any."""
        if not self._endpoints:
            return None
        path = path.rstrip("/")
        with self._lock:
            found = [key for key, (pattern, _) in self._endpoints.items() if pattern.search(path)]
            return self._endpoints[max(found, key=_specificity)][1] if found else None

    def register_tool(
        self,
        tool: str,
        *,
        per_use: float | Decimal | str,
        model: str | None = None,
        memory_limit: str | None = None,
    ) -> Decimal:
        """Declare what one use of a hosted tool costs (USD), billed outside the
        response's usage: ``"image_generation"`` (each image; ``model``: only for that
        image model, else for any), ``"file_search"`` (each search),
        ``"code_interpreter"`` (each container a call creates; ``memory_limit``: only for
        that size, ``"1g"`` to ``"64g"``, else for any). A declared fee wins over
        burnmap's own; ``per_use=0`` makes the tool free.

        >>> book = PriceBook()
        >>> book.register_tool("image_generation", per_use="0.25")
        Decimal('0.25')
        >>> book.tool_fee("image_generation", "gpt-image-2"), book.tool_fee("file_search")
        (Decimal('0.25'), Decimal('0.0025'))
        """
        from burnmap._core.money import usd

        key = _tool_key(tool, model, memory_limit)
        fee = usd(per_use)
        with self._lock:
            self._tools[key] = fee
        return fee

    def unregister_tool(
        self, tool: str, *, model: str | None = None, memory_limit: str | None = None
    ) -> bool:
        """Drop a fee declared with :meth:`register_tool` (the same arguments); ``False``
        when none was."""
        key = _tool_key(tool, model, memory_limit)
        with self._lock:
            return self._tools.pop(key, None) is not None

    def tool_fee(self, tool: str, option: str | None = None) -> Decimal | None:
        """The fee per use of a hosted tool: one declared for ``option`` (an image model,
        a container's memory limit), else one declared for the tool, else OpenAI's
        published fee; ``None`` when none is known."""
        if self._tools:
            key = option.strip().lower() if isinstance(option, str) else None
            with self._lock:
                fee = self._tools.get((tool, key))
                if fee is None:
                    fee = self._tools.get((tool, None))
            if fee is not None:
                return fee
        return hosted_tool_fee(tool, option)

    def highest_tool_fee(self, tool: str) -> Decimal | None:
        """The dearest fee known for a hosted tool, whatever its model or size."""
        with self._lock:
            fees = [fee for (name, _), fee in self._tools.items() if name == tool]
        fees += [fee for (name, _), fee in HOSTED_TOOL_FEES.items() if name == tool]
        return max(fees) if fees else None

    def clear(self) -> None:
        """Drop every registered model, endpoint and hosted-tool price."""
        with self._lock:
            self._overrides.clear()
            self._endpoints.clear()
            self._tools.clear()

    def _override(self, model: str) -> PriceSheet | None:
        if not self._overrides:
            return None
        name = model.strip().lower()
        for candidate in _override_names(name):
            sheet = self._overrides.get(candidate)
            if sheet is not None:
                return sheet
        return None

    def lookup(
        self,
        model: str,
        provider: str | None = None,
        *,
        at: datetime | None = None,
        context: dict[str, str] | None = None,
    ) -> PriceSheet:
        """The sheet for ``model``; raises :class:`UnknownModelError` when none is known."""
        if self._overrides:
            sheet = self._override(model)
            if sheet is not None:
                return sheet
        base = same_price_base(model)
        if base is not None:
            return self.lookup(base, provider, at=at, context=context)
        now = time.monotonic()
        if at is None and not context:
            cached = self._recent.get((provider, model))
            if (
                cached is not None
                and cached[1] > now
                and (cached[2] is None or self._now() < cached[2])
            ):
                return cached[0]
        info = self._model_info(model, provider)
        when = at or self._now()
        prices = info.get_prices(when, context)
        if context:
            # Variant prices are fresh copies each time: not cacheable by identity.
            return self._sheet(info, prices, provider, model)
        # The snapshot keeps its price objects alive, so their id() is a stable key. The
        # name asked for is part of it: aliases of one entry may differ in what burnmap's
        # own tables add (audio rates, maximum output).
        key = (id(prices), info.id, provider or "", model)
        sheet = self._sheets.get(key)
        if sheet is None:
            sheet = self._sheet(info, prices, provider, model)
            with self._lock:
                self._sheets[key] = sheet
        if at is None:
            # A sheet is reused for a minute at most (a refreshed snapshot), and never past
            # the end of its price period: prices change by date or time of day (DeepSeek's
            # peak hours), and a call just past 01:00 UTC is billed at the peak rate.
            until = _period_end(info.prices, when)
            with self._lock:
                self._recent[(provider, model)] = (sheet, now + RECENT_SECONDS, until)
        return sheet

    def _model_info(self, model: str, provider: str | None) -> Any:
        key = (provider, model)
        info = self._models.get(key)
        if info is not None:
            return info
        from genai_prices import data_snapshot

        snapshot = data_snapshot.get_snapshot()
        candidates: Iterable[str | None]
        if provider is None:
            # Unknown hosts (gateways, loopback servers) give no provider: genai-prices then
            # matches providers by model name, which misses some of the big two's models
            # (embeddings), so they are tried last.
            candidates = (None, "openai", "anthropic")
        else:
            # A known host bills at its own prices: a model it does not list is refused, not
            # priced at whichever provider's name matches (Together's DeepSeek-R1 is not
            # DeepSeek's). genai-prices follows its own fallbacks (Azure to OpenAI's table).
            candidates = (provider, *HOST_FALLBACKS.get(provider, ()))
        found: Any = None
        for provider_id in candidates:
            for ref in dict.fromkeys((model, _normalise(model))):
                try:
                    _, found = snapshot.find_provider_model(ref, None, provider_id, None)
                except LookupError:
                    continue
                break
            if found is not None:
                break
        if found is not None and provider is not None and _undated(found.id) != _undated(model):
            # The host's table matched another model by name (Azure prices
            # o4-mini-deep-research as its o4-mini): a table genai-prices falls back to
            # that lists this very model prices it.
            found = _same_model_elsewhere(snapshot, provider, model) or found
        resold = _vendor_fallback(provider, model) if found is None else None
        if resold is not None:
            try:
                _, found = snapshot.find_provider_model(resold[1], None, resold[0], None)
            except LookupError:
                found = None
        routing = _ROUTING_SUFFIX.search(model.lower())
        if found is None or (routing is not None and not found.id.endswith(routing.group())):
            # (A name clause matching "claude-sonnet-4-5:nitro" is not that variant's price.)
            raise UnknownModelError(model, provider)
        with self._lock:
            self._models[key] = found
        return found

    def _sheet(self, info: Any, prices: Any, provider: str | None, model: str) -> PriceSheet:
        input_rate = _rate(prices.input_mtok) or _rate(prices.input_text_mtok)
        output_rate = _rate(prices.output_mtok) or _rate(prices.output_text_mtok) or Rate(ZERO)
        if input_rate is None:
            raise UnknownModelError(model, provider)
        cache_write = _rate(prices.cache_write_mtok) or _rate(prices.cache_write_5m_mtok)
        cache_read = _rate(prices.cache_read_mtok)
        cache_write_1h = _rate(prices.cache_write_1h_mtok)
        named = _normalise(info.id)
        if named in LONG_CONTEXT_IDS or named.startswith(LONG_CONTEXT_MODELS):
            input_rate = _long_context(input_rate, _LONG_INPUT) or input_rate
            output_rate = _long_context(output_rate, _LONG_OUTPUT) or output_rate
            cache_read = _long_context(cache_read, _LONG_INPUT)
            cache_write = _long_context(cache_write, _LONG_INPUT)
            cache_write_1h = _long_context(cache_write_1h, _LONG_INPUT)
        requests = _per_unit(prices.requests_kcount, 1000)
        return PriceSheet(
            model=info.id,
            provider=provider or "",
            input=input_rate,
            output=output_rate,
            cache_read=cache_read,
            cache_write=cache_write,
            cache_write_1h=cache_write_1h,
            input_audio=_rate(prices.input_audio_mtok) or _audio_rate(model, 0),
            output_audio=_rate(prices.output_audio_mtok) or _audio_rate(model, 1),
            web_search=_per_unit(prices.web_searches_kcount, 1000)
            or (self._openai_search_fee(info.id, model) if provider in _OPENAI_HOSTS else None),
            per_request=requests,
            context_window=_context_window(info.id, info.context_window),
            max_output=max_output_for(info.id) or max_output_for(model),
            source="genai-prices",
        )

    def _openai_search_fee(self, entry_id: str, model: str) -> Decimal | None:
        """OpenAI's fee per web search for ``model``, priced by the genai-prices entry
        ``entry_id`` that lists none: that of OpenAI's entry for the same model (Azure's
        o3 and o4-mini), else :data:`OPENAI_WEB_SEARCH_FEES`'s (o3-pro)."""
        named = _undated(entry_id)
        try:
            twin = self._model_info(model, "openai")
        except UnknownModelError:
            twin = None
        if twin is not None and _undated(twin.id) == named:
            # (Not where the two tables name other models: Azure prices
            # o4-mini-deep-research as its o4-mini.)
            fee = _per_unit(twin.get_prices(self._now()).web_searches_kcount, 1000)
            if fee is not None:
                return fee
        return OPENAI_WEB_SEARCH_FEES.get(named)

    def modified(
        self, sheet: PriceSheet, model: str, provider: str | None, modifiers: tuple[str, ...]
    ) -> PriceSheet:
        """``sheet`` (``model``'s) at the rates an Anthropic request's modifiers bill:
        ``"fast"`` (``speed: "fast"``: genai-prices' fast-mode rates, else
        ``FAST_MODE_FACTOR`` times the standard ones) and ``"geo"`` (an ``inference_geo``
        other than global: ``GEO_FACTOR`` times). A registered price is taken as it is."""
        if not modifiers or sheet.source == "override":
            return sheet
        key = (id(sheet), model, provider, modifiers)
        cached = self._modified.get(key)
        if cached is not None and cached[0] is sheet:
            return cached[1]
        changed = self._modify(sheet, model, provider, modifiers)
        with self._lock:
            if len(self._modified) >= 1024:
                self._modified.clear()
            self._modified[key] = (sheet, changed)
        return changed

    def _modify(
        self, sheet: PriceSheet, model: str, provider: str | None, modifiers: tuple[str, ...]
    ) -> PriceSheet:
        if "fast" in modifiers:
            try:
                fast = self.lookup(model, provider, context={"speed": "fast"})
            except UnknownModelError:
                fast = sheet
            has_variant = fast.input != sheet.input or fast.output != sheet.output
            if has_variant:
                sheet = replace(fast, context_window=sheet.context_window)
            else:
                sheet = sheet.times(FAST_MODE_FACTOR)
        if "geo" in modifiers:
            sheet = sheet.times(GEO_FACTOR)
        if "search_preview" in modifiers:
            sheet = replace(sheet, web_search=WEB_SEARCH_PREVIEW_FEE)
        return sheet

    def with_limits(self, sheet: PriceSheet, *, context_window: int) -> PriceSheet:
        """A copy of ``sheet`` with a larger context window (Anthropic's 1M-context beta)."""
        if sheet.context_window is not None and sheet.context_window >= context_window:
            return sheet
        return replace(sheet, context_window=context_window)
