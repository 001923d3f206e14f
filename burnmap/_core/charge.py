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

Hosted tools billed outside usage (Responses API): each image and file search the output
lists at its fee, and each container the request asked for (a code interpreter's
``container: auto``, a hosted shell's ``container_auto``); when the output was not seen
whole, the most they could bill (their part of the bound).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from burnmap._core.bound import TIER_RATES, CallPlan, geo_applies
from burnmap._core.meter import Metered
from burnmap._core.pricing import PriceBook, PriceSheet
from burnmap._core.usage import ADVISOR, Usage, as_billed
from burnmap.errors import UnknownModelError

__all__ = ["Charge", "charge"]

_log = logging.getLogger("burnmap.charge")


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class Charge:
    model: str
    usage: Usage
    cost: Decimal
    estimated: bool
    exceeds_bound: bool
    unpriced: str | None = None
    """What the response billed that no price is known for (charged $0), to warn of."""


def _sheet_for(plan: CallPlan, metered: Metered, book: PriceBook) -> PriceSheet:
    """The sheet a call is charged at: the plan's, unless the response names another
    model or reports another tier than the plan's sheet was priced at."""
    sheet = plan.sheet
    if sheet.source == "override":
        return sheet
    model = metered.model or plan.model
    tier = plan.tier
    if plan.endpoint.shape == "openai" and metered.service_tier is not None:
        # Served at the tier the response reports (default, scale…: standard rates).
        reported = metered.service_tier
        if isinstance(reported, str) and reported in TIER_RATES:
            tier = TIER_RATES[reported]
        else:
            # A tier with no known price may cost more than any: never below the plan's.
            _warn_unpriced_tier(model, reported, plan.tier)
    if tier == plan.tier and (model == plan.model or _routed_as(model, plan)):
        return sheet
    context = {"service_tier": tier} if tier is not None else None
    try:
        found = book.lookup(model, plan.endpoint.provider, context=context)
    except UnknownModelError:
        return sheet
    return book.modified(found, model, plan.endpoint.provider, _modifiers_for(plan, found, model))


_TIERS_WARNED: set[tuple[str, str]] = set()
"""The (model, service tier) pairs already warned of: a gateway that echoes a tier of its
own (``"standard"``) on every response would otherwise log on every call."""


def _warn_unpriced_tier(model: str, reported: str, bounded: str | None) -> None:
    key = (model, reported)
    if key in _TIERS_WARNED:
        return
    if len(_TIERS_WARNED) < 1024:  # (a bound on the memory, not on the warnings)
        _TIERS_WARNED.add(key)
    _log.warning(
        "%s was served at service_tier %r, which has no known price: charged at the rates "
        "it was bounded at (%s). Logged once per model and tier.",
        model,
        reported,
        bounded or "standard",
    )


def _modifiers_for(plan: CallPlan, sheet: PriceSheet, model: str) -> tuple[str, ...]:
    """The plan's rate modifiers for another model it ran (a fallback, an advisor): fast
    mode as asked, the regional premium as that model owes it."""
    fast = tuple(m for m in plan.modifiers if m != "geo")
    return (*fast, "geo") if geo_applies(plan.endpoint, sheet, model, plan.geo_pinned) else fast


def _routed_as(model: str, plan: CallPlan) -> bool:
    """Whether a Bedrock response's model is the one the request's routing id names:
    ``claude-sonnet-4-5-20250929`` for ``global.anthropic.claude-sonnet-4-5-20250929-v1:0``
    (looked up alone, it would match another route's price)."""
    if plan.endpoint.provider != "aws":
        return False
    routed = plan.model
    return f".{model}-v" in routed or routed.endswith(f".{model}")


def _other_model_cost(
    book: PriceBook, model: str, plan: CallPlan, usage: Usage, fallback: PriceSheet
) -> Decimal:
    """What a step billed beside the call costs: another model's (an advisor's) at its own
    rates (in the call's region, if pinned), the call's own model's (``""``: a compaction)
    at the call's; at the call's when the other model has no known price."""
    if not model:
        return fallback.cost(usage)
    provider = plan.endpoint.provider
    try:
        sheet = book.lookup(model, provider)
    except UnknownModelError:
        return fallback.cost(usage)
    if geo_applies(plan.endpoint, sheet, model, plan.geo_pinned):
        sheet = book.modified(sheet, model, provider, ("geo",))
    return sheet.cost(usage)


def _hosted_cost(
    plan: CallPlan, usage: Usage, book: PriceBook, estimated: bool
) -> tuple[Decimal, Usage, str | None]:
    """What the call's hosted tools billed outside its usage, the usage with its
    containers counted, and what could not be priced. Tools the request did not show (a
    stored prompt's) are priced at their registered or published fee; images then at the
    dearest fee registered for any image model."""
    hosted = plan.hosted
    if hosted is not None and estimated:
        # The output was not seen whole: what its tools did is not known.
        return hosted.bound, replace(usage, containers=hosted.containers), None
    unpriced = None
    image = hosted.image if hosted is not None else None
    if image is None and usage.images_generated:
        image = book.highest_tool_fee("image_generation")
        if image is None:
            unpriced = f"{usage.images_generated} image(s) from the image_generation tool"
    file_search = hosted.file_search if hosted is not None else None
    if file_search is None and usage.file_searches:
        file_search = book.tool_fee("file_search")
    cost = usage.images_generated * (image or 0) + usage.file_searches * (file_search or 0)
    if hosted is not None and hosted.containers:
        cost += hosted.container or 0
        usage = replace(usage, containers=hosted.containers)
    return Decimal(cost), usage, unpriced


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
    reported = metered.usage
    if reported is not None:
        reported = as_billed(reported, plan.endpoint.provider, plan.endpoint.kind)
    if reported is not None and metered.complete:
        usage = reported
        estimated = False
    elif reported is not None:
        seen = max(reported.output_tokens, metered.output_tokens_seen)
        usage = replace(reported, output_tokens=min(seen, plan.output_tokens))
        estimated = True
    else:
        seen = min(metered.output_tokens_seen, plan.output_tokens)
        usage = Usage(input_tokens=plan.input_tokens, output_tokens=seen)
        estimated = True
    cost = _stated_cost(usage) if not estimated else None
    unpriced = None
    if cost is None:
        sheet = _sheet_for(plan, metered, book)
        cost = sheet.cost(usage)
        for other, part in usage.other_models:
            named = (plan.advisor or "") if other == ADVISOR else other
            cost += _other_model_cost(book, named, plan, part, sheet)
        if plan.search_fee is not None:
            # A Chat Completions search model searched before answering: its fee per call,
            # per choice as bounded.
            cost += plan.search_fee * plan.searches
            usage = replace(usage, web_searches=usage.web_searches + plan.searches)
        if plan.hosted is not None or usage.images_generated or usage.file_searches:
            fees, usage, unpriced = _hosted_cost(plan, usage, book, estimated)
            cost += fees
    return Charge(model, usage, cost, estimated, exceeds_bound=cost > plan.cost, unpriced=unpriced)
