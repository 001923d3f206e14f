"""Pricing: our arithmetic agrees with genai-prices; overrides; unknown models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import burnmap
from burnmap._core.pricing import PriceBook, max_output_for
from burnmap._core.usage import Usage
from burnmap.errors import UnknownModelError

MODELS = [
    ("claude-sonnet-4-6", "anthropic"),
    ("claude-sonnet-4-5-20250929", "anthropic"),  # long-context tiers
    ("claude-haiku-4-5", "anthropic"),
    ("claude-opus-4-6", "anthropic"),
    ("gpt-4o-mini-2024-07-18", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-5", "openai"),
    ("o3", "openai"),
]

tokens = st.integers(min_value=0, max_value=400_000)


def genai_usage(u: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=u.total_input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.all_cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
    )


@settings(max_examples=300)
@given(st.sampled_from(MODELS), tokens, tokens, tokens, tokens, tokens)
def test_cost_matches_genai_prices(
    model: tuple[str, str], fresh: int, out: int, read: int, write: int, write_1h: int
) -> None:
    name, provider = model
    usage = Usage(
        input_tokens=fresh,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
    )
    ours = PriceBook().lookup(name, provider).cost(usage)
    theirs = genai_prices.calc_price(genai_usage(usage), name, provider_id=provider).total_price
    assert ours == theirs


def test_anthropic_message_fixture_cost_by_hand() -> None:
    # claude-sonnet-4-6: $3 in, $15 out, $0.30 cache read, $3.75 5m write, $6 1h write,
    # $10 per 1000 web searches.
    usage = Usage(
        input_tokens=1873,
        output_tokens=512,
        cache_read_tokens=10240,
        cache_write_tokens=1500,
        cache_write_1h_tokens=650,
        web_searches=2,
    )
    expected = (
        Decimal(1873) * 3
        + 512 * 15
        + Decimal(10240) * Decimal("0.3")
        + Decimal(1500) * Decimal("3.75")
        + 650 * 6
    ) / 1_000_000 + Decimal("0.02")
    assert burnmap.prices.cost("claude-sonnet-4-6", usage) == expected


def test_long_context_cliff_prices_every_token_at_the_tier() -> None:
    sheet = PriceBook().lookup("claude-sonnet-4-5", "anthropic")
    below = sheet.cost(Usage(input_tokens=200_000, output_tokens=1_000))
    above = sheet.cost(Usage(input_tokens=200_001, output_tokens=1_000))
    assert below == Decimal("0.615")
    assert above == (Decimal(200_001) * 6 + Decimal(1_000) * Decimal("22.5")) / 1_000_000
    # Cache reads count toward the threshold.
    mixed = sheet.cost(Usage(input_tokens=1_000, cache_read_tokens=199_001))
    assert mixed == (Decimal(1_000) * 6 + Decimal(199_001) * Decimal("0.6")) / 1_000_000


@pytest.mark.parametrize(
    ("model", "provider", "base_in", "base_out"),
    [
        # genai-prices lists these flat; Anthropic bills their 1M window's long context.
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", "3.3", "16.5"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", "3", "15"),
        ("anthropic.claude-sonnet-4-20250514-v1:0", "aws", "3", "15"),
        ("claude-sonnet-4-0", "anthropic", "3", "15"),
        ("claude-sonnet-4-20250514", "google", "3", "15"),
        ("anthropic/claude-sonnet-4", "openrouter", "3", "15"),
    ],
)
def test_long_context_premium_where_genai_prices_lists_a_flat_price(
    model: str, provider: str, base_in: str, base_out: str
) -> None:
    """Sonnet 4 and 4.5 with the 1M-token window: above 200k input tokens, input and
    cache at 2x, output at 1.5x, as Anthropic bills them (and as genai-prices itself
    prices claude-sonnet-4-5 on Anthropic's API)."""
    sheet = PriceBook().lookup(model, provider)
    below = Usage(input_tokens=200_000, output_tokens=1_000)
    above = Usage(input_tokens=150_000, cache_read_tokens=50_001, output_tokens=1_000)
    assert sheet.cost(below) == (200_000 * Decimal(base_in) + 1_000 * Decimal(base_out)) / 10**6
    assert (
        sheet.cost(above)
        == (
            150_000 * 2 * Decimal(base_in)
            + 50_001 * 2 * Decimal(base_in) / 10
            + 1_000 * Decimal("1.5") * Decimal(base_out)
        )
        / 10**6
    )
    # Later models keep genai-prices' own (flat) price, also where "claude-sonnet-4" is
    # matched as a whole id.
    assert not PriceBook().lookup("claude-sonnet-4-6", "anthropic").input.tiers
    assert not PriceBook().lookup("anthropic/claude-sonnet-4.6", "openrouter").input.tiers


def test_reasoning_tokens_are_output() -> None:
    sheet = PriceBook().lookup("o3", "openai")
    assert sheet.cost(Usage(output_tokens=1000, reasoning_tokens=900)) == sheet.cost(
        Usage(output_tokens=1000)
    )


def test_audio_tokens_at_audio_rates() -> None:
    # gpt-audio: $2.5 text in, $10 text out, $32 audio in, $64 audio out.
    sheet = PriceBook().lookup("gpt-audio", "openai")
    usage = Usage(
        input_tokens=95, output_tokens=128, input_audio_tokens=74, output_audio_tokens=111
    )
    expected = (Decimal(21) * Decimal("2.5") + 17 * 10 + 74 * 32 + 111 * 64) / 1_000_000
    assert sheet.cost(usage) == expected
    theirs = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=95, output_tokens=128, input_audio_tokens=74, output_audio_tokens=111
        ),
        "gpt-audio",
        provider_id="openai",
    ).total_price
    assert sheet.cost(usage) == theirs


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
    ],
)
def test_dated_and_prefixed_ids_resolve(ref: str, expected: str) -> None:
    provider = "openrouter" if "/" in ref else None
    assert PriceBook().lookup(ref, provider).model == expected


def test_a_misspelt_model_is_refused_with_the_names_it_may_mean() -> None:
    with pytest.raises(UnknownModelError, match="Did you mean 'claude-haiku-4-5'") as info:
        burnmap.prices.lookup("claude-hiaku-4-5")
    assert info.value.similar[0] == "claude-haiku-4-5"
    with pytest.raises(UnknownModelError) as unlike:
        burnmap.prices.lookup("acme-9000")
    assert unlike.value.similar == () and "Did you mean" not in str(unlike.value)


def test_unknown_model_is_refused_never_zero() -> None:
    with pytest.raises(UnknownModelError, match=r"burnmap\.prices\.register\('acme-1'"):
        PriceBook().lookup("acme-1", "openai")


def test_register_overrides_and_unregister_restores() -> None:
    bundled = burnmap.prices.lookup("gpt-4o")
    burnmap.prices.register("gpt-4o", input=1, output=2)
    assert burnmap.prices.lookup("gpt-4o").source == "override"
    assert burnmap.prices.cost("gpt-4o-2024-08-06", Usage(input_tokens=10**6)) == 1
    assert burnmap.prices.unregister("gpt-4o")
    assert burnmap.prices.lookup("gpt-4o") == bundled


@pytest.mark.parametrize(
    "routed",
    [
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:1:inference-profile/global.anthropic.claude-sonnet-4-5-v1:0",
        "claude-sonnet-4-5@20250929",
    ],
)
def test_a_registered_price_covers_the_routed_ids_of_its_model(routed: str) -> None:
    burnmap.prices.register("claude-sonnet-4-5", input=30, output=150)
    assert burnmap.prices.lookup(routed, "aws").input.base == 30


def test_register_unknown_model_with_limits() -> None:
    sheet = burnmap.prices.register(
        "acme-large", input="0.5", output=1.5, cache_read=0.05, max_output=8192
    )
    assert sheet.cost(Usage(input_tokens=10**6, output_tokens=10**6, cache_read_tokens=10**6)) == (
        Decimal("2.05")
    )
    assert burnmap.prices.lookup("ACME-Large").max_output == 8192


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True])
def test_register_rejects_bad_prices(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        burnmap.prices.register("x", input=bad, output=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-6", 128_000),
        ("claude-sonnet-4-5-20250929", 64_000),
        ("gpt-4o-mini-2024-07-18", 16_384),
        ("gpt-4.1-nano", 32_768),
        ("o3-mini", 100_000),
        ("gpt-5.1-codex", 128_000),
        ("totally-unknown", None),
    ],
)
def test_max_output_table(model: str, expected: int | None) -> None:
    assert max_output_for(model) == expected


def test_chat_search_fees_follow_the_context_size() -> None:
    from burnmap._core.pricing import chat_search_fee, is_chat_search_model

    assert chat_search_fee("gpt-4o-mini-search-preview-2025-03-11", "low") == Decimal("0.025")
    assert chat_search_fee("openai/gpt-4o-search-preview") == Decimal("0.035")
    assert chat_search_fee("gpt-4o-search-preview", {"size": "x"}) == Decimal("0.05")
    assert chat_search_fee("gpt-4o-search-preview", "huge") == Decimal("0.05")
    assert chat_search_fee("gpt-4o") is None
    assert is_chat_search_model("gpt-5-search-api")
    assert not is_chat_search_model("gpt-4o-mini")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("deepseek-ai/DeepSeek-R1", "together"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "together"),
        ("openai/gpt-oss-20b", "together"),
        ("accounts/fireworks/models/deepseek-r1", "fireworks"),
        ("gpt-oss-20b", "cerebras"),
    ],
)
def test_a_known_host_never_prices_a_model_at_another_providers_rates(
    model: str, provider: str
) -> None:
    """Together's DeepSeek-R1 is not DeepSeek's: a host that does not list the model is
    refused (as genai-prices refuses it), not priced at whichever provider's name matches."""
    with pytest.raises(LookupError):
        genai_prices.calc_price(
            genai_prices.Usage(input_tokens=1, output_tokens=1), model, provider_id=provider
        )
    with pytest.raises(UnknownModelError, match=r"burnmap\.prices\.register\(") as info:
        PriceBook().lookup(model, provider)
    assert info.value.provider == provider
    # A gateway (no provider known) still prices it by name.
    assert PriceBook().lookup(model).model


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        # genai-prices' own fallbacks: Azure serves OpenAI's and Anthropic's models.
        ("gpt-6-astra", "azure", "gpt-6-astra"),
        ("claude-opus-4-6", "azure", "claude-opus-4-6"),
        # Bedrock's table by route, and Anthropic's prices for the Claude ids it lacks.
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", "regional.anthropic."),
        ("anthropic.claude-3-7-sonnet-v1:0", "aws", "claude-3-7-sonnet"),
        # Vertex's Claude ids, priced as Anthropic's.
        ("claude-haiku-4-5@20251001", "anthropic", "claude-haiku-4-5"),
        ("anthropic/claude-sonnet-4.5", "openrouter", "anthropic/claude-sonnet-4.5"),
    ],
)
def test_a_known_host_falls_back_only_where_it_serves_that_providers_models(
    model: str, provider: str, expected: str
) -> None:
    assert PriceBook().lookup(model, provider).model.startswith(expected)


@pytest.mark.parametrize(
    ("model", "vendor", "name"),
    [
        ("x-ai/grok-4", "x-ai", "grok-4"),
        ("google/gemini-3-pro-preview", "google", "gemini-3-pro-preview"),
        ("openai/text-embedding-3-small", "openai", "text-embedding-3-small"),
    ],
)
def test_openrouter_resells_a_first_party_vendors_model_at_its_list_price(
    model: str, vendor: str, name: str
) -> None:
    """OpenRouter's genai-prices table lags behind it: an id it lacks whose prefix names a
    vendor that sets the price OpenRouter resells at is priced at that vendor's rates."""
    with pytest.raises(LookupError):
        genai_prices.calc_price(
            genai_prices.Usage(input_tokens=1, output_tokens=1), model, provider_id="openrouter"
        )
    sheet, own = PriceBook().lookup(model, "openrouter"), PriceBook().lookup(name, vendor)
    assert (sheet.model, sheet.input, sheet.output) == (own.model, own.input, own.output)


@pytest.mark.parametrize(
    "model",
    [
        # Open-weight models third parties host (OpenRouter may route to a dearer one).
        "deepseek/deepseek-reasoner",
        "mistralai/mixtral-8x7b",
        "mistralai/devstral-small-2507",
        "google/gemma-3-4b",
        # A routing variant at other rates, and an id OpenRouter does not accept.
        "x-ai/grok-4:nitro",
        "gpt-4o",
    ],
)
def test_openrouter_prices_no_open_weight_model_at_its_vendors_rate(model: str) -> None:
    """The vendor's own table lists these (DeepSeek's deepseek-reasoner, Mistral's
    mixtral-8x7b at $0.70): OpenRouter's price is not that, so they stay refused."""
    with pytest.raises(UnknownModelError):
        PriceBook().lookup(model, "openrouter")


@pytest.mark.parametrize(
    "model", ["Mistral-Large-2411", "Codestral-2501", "mistral-medium-2505", "Ministral-3B"]
)
def test_azure_resells_mistrals_models_at_mistrals_list_price(model: str) -> None:
    sheet, own = PriceBook().lookup(model, "azure"), PriceBook().lookup(model, "mistral")
    assert (sheet.model, sheet.input, sheet.output) == (own.model, own.input, own.output)


@pytest.mark.parametrize(
    "host",
    [
        "api.anthropic.com",
        "api.openai.com",
        "openrouter.ai",
        "api.deepseek.com",
        "acme.openai.azure.com",
        "acme.services.ai.azure.com",
        "api.groq.com",
        "api.mistral.ai",
        "api.together.xyz",
        "api.x.ai",
        "api.fireworks.ai",
        "api.cerebras.ai",
        "api.perplexity.ai",
        "api.moonshot.ai",
        "api.moonshot.cn",
        "bedrock-runtime.us-east-1.amazonaws.com",
    ],
)
def test_each_known_host_is_the_provider_genai_prices_names_for_it(host: str) -> None:
    from genai_prices import data_snapshot

    from burnmap._core.endpoint import provider_for_host

    theirs = data_snapshot.get_snapshot().find_provider(None, None, f"https://{host}/v1")
    assert provider_for_host(host) == theirs.id


def test_aliases_of_one_entry_keep_their_own_audio_rates_whatever_was_looked_up_first() -> None:
    """gpt-4o-audio-preview-2024-10-01 shares genai-prices' gpt-4o-audio-preview entry, but
    its audio costs $100/$200 per million, not the alias's $40/$80."""
    usage = Usage(
        input_tokens=1000, input_audio_tokens=1000, output_tokens=1000, output_audio_tokens=1000
    )
    book = PriceBook()
    assert book.lookup("gpt-4o-audio-preview", "openai").cost(usage) == Decimal("0.12")
    snapshot = book.lookup("gpt-4o-audio-preview-2024-10-01", "openai")
    assert snapshot.model == "gpt-4o-audio-preview"
    assert snapshot.cost(usage) == Decimal("0.3")
    assert book.lookup("gpt-4o-audio-preview", "openai").cost(usage) == Decimal("0.12")


def test_a_cached_sheet_never_outlives_its_price_period() -> None:
    """DeepSeek bills deepseek-v4-pro at 2x from 01:00 UTC: a sheet looked up at 00:59:30
    is not reused for a call at 01:00:20 (nor the peak sheet after 04:00)."""
    clock = [datetime(2026, 11, 29, 0, 59, 30, tzinfo=UTC)]
    book = PriceBook(_now=lambda: clock[0])
    usage = Usage(input_tokens=100_000, output_tokens=10_000)

    def theirs() -> Decimal:
        return genai_prices.calc_price(
            genai_usage(usage),
            "deepseek-v4-pro",
            provider_id="deepseek",
            genai_request_timestamp=clock[0],
        ).total_price

    off_peak = book.lookup("deepseek-v4-pro", "deepseek").cost(usage)
    assert off_peak == theirs()
    clock[0] = datetime(2026, 11, 29, 1, 0, 20, tzinfo=UTC)
    peak = book.lookup("deepseek-v4-pro", "deepseek").cost(usage)
    assert peak == theirs() == 2 * off_peak
    clock[0] = datetime(2026, 11, 29, 3, 59, 59, tzinfo=UTC)
    assert book.lookup("deepseek-v4-pro", "deepseek").cost(usage) == peak
    clock[0] = datetime(2026, 11, 29, 4, 0, 0, tzinfo=UTC)
    assert book.lookup("deepseek-v4-pro", "deepseek").cost(usage) == off_peak


def test_a_host_table_matching_another_model_by_name_yields_to_that_models_own_entry() -> None:
    """Azure's table matches o4-mini-deep-research to its o4-mini ($1.10/$4.40); OpenAI's
    table, which genai-prices falls back to from Azure's, lists the model itself at
    $2/$8: that price bounds and charges it. A model Azure lists keeps Azure's entry."""
    book = PriceBook()
    for name in ("o4-mini-deep-research", "o4-mini-deep-research-2025-06-26"):
        sheet = book.lookup(name, "azure")
        assert (sheet.model, sheet.input.base, sheet.output.base) == (
            "o4-mini-deep-research",
            Decimal(2),
            Decimal(8),
        )
    assert book.lookup("o4-mini", "azure").input.base == Decimal("1.1")
