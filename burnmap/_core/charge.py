"""What a finished call is charged: the settlement decision, from what the meter saw.

- Usage reported and the response complete: its exact cost, priced for the model the
  response names (a dated id may cost more than the alias asked for) unless the caller
  registered a price for the requested name; at the service tier the response reports.
  A provider-stated cost (OpenRouter's ``usage.cost``) wins.
- A stream cut short after its usage header (Anthropic ``message_start``): the reported
  input, and the larger of the reported and the observed output. Marked estimated.
- A stream with no usage at all: the input bound (the provider bills all input it read)
  and the observed output. Marked estimated.
- Nothing readable (a body that is not JSON, an unknown content type or encoding, a JSON
  body without usage): the whole reservation. Marked estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from burnmap._core.bound import CallPlan
from burnmap._core.meter import Metered
from burnmap._core.pricing import PriceBook, PriceSheet
from burnmap._core.usage import ADVISOR, Usage
from burnmap.errors import UnknownModelError

__all__ = ["Charge", "charge"]

# genai-prices has per-tier price variants for OpenAI's flex and priority processing.
_PRICED_TIERS = frozenset({"flex", "priority"})


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class Charge:
    model: str
    usage: Usage
    cost: Decimal
    estimated: bool
    exceeds_bound: bool


def _sheet_for(plan: CallPlan, metered: Metered, book: PriceBook) -> PriceSheet:
    sheet = plan.sheet
    if sheet.source == "override":
        return sheet
    model = metered.model or plan.model
    tier = metered.service_tier if plan.endpoint.shape == "openai" else None
    context = {"service_tier": tier} if tier in _PRICED_TIERS else None
    if model == plan.model and context is None:
        return sheet
    try:
        found = book.lookup(model, plan.endpoint.provider, context=context)
    except UnknownModelError:
        return sheet
    return book.modified(found, model, plan.endpoint.provider, plan.modifiers)


def _other_model_cost(
    book: PriceBook, model: str, provider: str | None, usage: Usage, fallback: PriceSheet
) -> Decimal:
    """What a step billed beside the call costs: another model's (an advisor's) at its own
    rates, the call's own model's (``""``: a compaction) at the call's; at the call's when
    the other model has no known price."""
    if not model:
        return fallback.cost(usage)
    try:
        return book.lookup(model, provider).cost(usage)
    except UnknownModelError:
        return fallback.cost(usage)


def _stated_cost(usage: Usage) -> Decimal | None:
    if usage.cost_reported is None:
        return None
    try:
        cost = Decimal(usage.cost_reported)
    except InvalidOperation:
        return None
    # No call costs a billion dollars: such a figure is not one to charge.
    return cost if cost.is_finite() and 0 <= cost < 10**9 else None


def charge(plan: CallPlan, metered: Metered | None, book: PriceBook) -> Charge:
    """The charge for a call planned as ``plan`` whose response metered as ``metered``."""
    if metered is None or (metered.usage is None and not plan.stream):
        usage = Usage(input_tokens=plan.input_tokens, output_tokens=plan.output_tokens)
        return Charge(plan.model, usage, plan.cost, estimated=True, exceeds_bound=False)
    model = metered.model or plan.model
    if metered.usage is not None and metered.complete:
        usage = metered.usage
        estimated = False
    elif metered.usage is not None:
        seen = max(metered.usage.output_tokens, metered.output_tokens_seen)
        usage = replace(metered.usage, output_tokens=min(seen, plan.output_tokens))
        estimated = True
    else:
        seen = min(metered.output_tokens_seen, plan.output_tokens)
        usage = Usage(input_tokens=plan.input_tokens, output_tokens=seen)
        estimated = True
    cost = _stated_cost(usage) if not estimated else None
    if cost is None:
        sheet = _sheet_for(plan, metered, book)
        cost = sheet.cost(usage)
        for other, part in usage.other_models:
            named = (plan.advisor or "") if other == ADVISOR else other
            cost += _other_model_cost(book, named, plan.endpoint.provider, part, sheet)
        if plan.search_fee is not None:
            # A Chat Completions search model searched before answering: its fee per call.
            cost += plan.search_fee
            usage = replace(usage, web_searches=usage.web_searches + 1)
    return Charge(model, usage, cost, estimated, exceeds_bound=cost > plan.cost)
