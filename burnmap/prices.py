"""Prices: look them up, register your own, override the bundled ones.

Prices come from genai-prices' bundled data (offline; updated only when you upgrade it).
A registered price wins over the bundled one, for that model name and its dated ids::

    burnmap.prices.register("my-finetune", input=3.00, output=15.00)   # USD per 1M tokens
    burnmap.prices.lookup("claude-sonnet-4-6").cost(Usage(input_tokens=1000))

Paid endpoints whose responses carry no usage burnmap can price (images, audio, batches,
fine-tuning, Assistants runs…) are refused with a budget in scope until their cost per
call is declared::

    burnmap.prices.register_endpoint("/v1/images/generations", per_call=0.25)

Hosted tools the Responses API bills per use, outside the response's usage, have a fee per
use: file searches and code interpreter containers at OpenAI's published prices, images
from the ``image_generation`` tool only once declared (a request offering it is refused
until then)::

    burnmap.prices.register_tool("image_generation", per_use=0.25)
"""

from __future__ import annotations

from decimal import Decimal

from burnmap._core.pricing import PriceBook, PriceSheet, max_output_for, with_suggestions
from burnmap._core.usage import Usage
from burnmap.errors import UnknownModelError

__all__ = [
    "PriceBook",
    "PriceSheet",
    "Usage",
    "clear",
    "cost",
    "default_book",
    "lookup",
    "max_output_for",
    "register",
    "register_endpoint",
    "register_tool",
    "unregister",
    "unregister_endpoint",
    "unregister_tool",
]

default_book = PriceBook()
"""The process-wide price book the transports use unless given their own."""

register = default_book.register
unregister = default_book.unregister
register_endpoint = default_book.register_endpoint
unregister_endpoint = default_book.unregister_endpoint
register_tool = default_book.register_tool
unregister_tool = default_book.unregister_tool
clear = default_book.clear


def lookup(model: str, provider: str | None = None) -> PriceSheet:
    """The price sheet for ``model`` (raises ``UnknownModelError`` when none is known,
    naming the known models it may mean)."""
    try:
        return default_book.lookup(model, provider)
    except UnknownModelError as exc:
        raise with_suggestions(exc) from None


def cost(model: str, usage: Usage, provider: str | None = None) -> Decimal:
    """What ``usage`` of ``model`` costs, in USD."""
    return default_book.lookup(model, provider).cost(usage)
