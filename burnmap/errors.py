"""Errors burnmap raises.

A refusal (budget, loop, unknown price) is raised from inside the HTTP transport, before the
request leaves the process. The SDKs treat exceptions raised by a transport specially:
anthropic >= 1.0 wraps any ``Exception`` that is not an ``AnthropicError`` into
``APIConnectionError`` and retries it; openai < 3 does the same for non-``OpenAIError``
exceptions. So at raise time :func:`sdk_compatible` re-classes the error into a subclass
that also derives from the base error of every SDK already imported in the process. The
caller's ``except burnmap.BudgetExceededError`` still catches it, and the SDK neither
wraps nor retries it. Importing burnmap never imports an SDK.
"""

from __future__ import annotations

import sys
import threading
from decimal import Decimal
from typing import Any

__all__ = [
    "BudgetExceededError",
    "BurnmapError",
    "LedgerError",
    "LedgerUnavailableError",
    "LoopDetectedError",
    "RefusalError",
    "UnknownModelError",
    "UnmeteredEndpointError",
    "sdk_compatible",
]


class BurnmapError(Exception):
    """Base class of every error burnmap raises."""


class RefusalError(BurnmapError):
    """A call was refused before it was sent: nothing left the process, nothing was billed."""


def _money(value: Decimal | None) -> str:
    return "unlimited" if value is None else f"${value:.6f}".rstrip("0").rstrip(".")


class BudgetExceededError(RefusalError):
    """The next call could cost more than what is left of a budget.

    Attributes: ``job_name`` (the innermost run's name), ``budget`` (the limit that
    refused), ``spent_so_far`` (settled spend in that scope), ``call_count`` (calls made in
    that scope), ``scope`` (which budget refused: ``"run:<name>"``, ``"user:<id>"`` …),
    ``reserved`` (what other in-flight calls hold), ``needed`` (this call's worst case).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        job_name: str | None = None,
        budget: Decimal | None = None,
        spent_so_far: Decimal = Decimal(0),
        call_count: int = 0,
        scope: str = "",
        reserved: Decimal = Decimal(0),
        needed: Decimal = Decimal(0),
        model: str | None = None,
        resets: str | None = None,
    ) -> None:
        self.job_name = job_name
        self.budget = budget
        self.spent_so_far = spent_so_far
        self.call_count = call_count
        self.scope = scope
        self.reserved = reserved
        self.needed = needed
        self.model = model
        self.resets = resets
        if message is None:
            message = (
                f"burnmap: budget {scope or job_name!r} would be exceeded: spent "
                f"{_money(spent_so_far)} of {_money(budget)}"
                + (f" ({_money(reserved)} held by calls in flight)" if reserved else "")
                + f"; the next call{f' to {model}' if model else ''} could cost up to "
                f"{_money(needed)}. The call was not sent."
                + (f" The budget resets {resets}." if resets else "")
                + " Raise the budget, lower max_tokens, or stop the job here."
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (BudgetExceededError, self.args), self.__dict__)


class LoopDetectedError(RefusalError):
    """The run looks like a runaway loop; the next call was not sent.

    ``trigger`` names the rule that fired (``"call_rate"``, ``"context_growth"``, …).
    """

    def __init__(
        self,
        message: str,
        *,
        trigger: str,
        job_name: str | None = None,
        call_count: int = 0,
    ) -> None:
        self.trigger = trigger
        self.job_name = job_name
        self.call_count = call_count
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (LoopDetectedError, self.args), self.__dict__)


class UnknownModelError(RefusalError):
    """No price is known for the model, so the call cannot be bounded; it was not sent.
    ``search_fee``: the model's token prices are known, but not its fee per web search (a
    Chat Completions search model's, charged per call, or that of a web-search tool the
    request offers). ``tool``: the request offers a hosted tool (the
    Responses API's ``image_generation``) whose fee per use is not known; ``model`` is then
    the tool's model (``""``: the provider's default). ``tier``: the request asks for a
    service tier whose rates are not known."""

    def __init__(
        self,
        model: str,
        provider: str | None = None,
        *,
        search_fee: bool = False,
        tool: str | None = None,
        similar: tuple[str, ...] = (),
        tier: str | None = None,
    ) -> None:
        self.model = model
        self.provider = provider
        self.search_fee = search_fee
        self.tool = tool
        self.similar = tuple(similar)
        self.tier = tier
        where = f" (provider {provider!r})" if provider else ""
        if tier is not None:
            message = (
                f"burnmap: the request asks for service_tier {tier!r}, and no price is known "
                f"for model {model!r}{where} at that tier, so this call cannot be budgeted and "
                "was not sent. Ask for a tier burnmap prices (default, flex, priority), or "
                "register the model's rates at that tier (USD per million tokens; a registered "
                "price is used whatever the tier):\n"
                f"    burnmap.prices.register({model!r}, input=3.00, output=15.00)"
            )
        elif tool:
            named = f"image model {model!r}" if model else "its default image model"
            which = f", model={model!r}" if model else ""
            message = (
                f"burnmap: this request offers the {tool} tool ({named}), which is billed "
                "per use outside the response's usage, and no fee per use is known, so this "
                "call cannot be budgeted and was not sent. Declare the most one use may cost "
                "(USD; for images, at the largest size and quality you allow):\n"
                f"    burnmap.prices.register_tool({tool!r}, per_use=0.25{which})"
            )
        elif search_fee:
            message = (
                f"burnmap: model {model!r}{where} bills each web search it runs (a search "
                "model searches on every Chat Completions call; a web-search tool the "
                "request offers, as the model decides), but its fee per search is not known, "
                "so this call cannot be budgeted and was not sent. Register the model with "
                "its fee (USD per search; token rates in USD per million):\n"
                f"    burnmap.prices.register({model!r}, input=2.50, output=10.00, "
                "web_search=0.035)"
            )
        else:
            guess = (
                f" Did you mean {' or '.join(repr(name) for name in self.similar)}?"
                if self.similar
                else ""
            )
            message = (
                f"burnmap: no price is known for model {model!r}{where}, so this call cannot "
                f"be budgeted and was not sent.{guess} If the name is right, register its "
                "price (USD per million tokens) first:\n"
                f"    burnmap.prices.register({model!r}, input=3.00, output=15.00)\n"
                "or run `burnmap prices MODEL` to see which names are known."
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unknown,
            (self.model, self.provider, self.search_fee, self.tool, self.similar, self.tier),
            {},
        )


class UnmeteredEndpointError(RefusalError):
    """A paid endpoint whose cost burnmap cannot read (images, audio, batches…) was called
    with a budget in scope and no declared price, so it was not sent."""

    def __init__(self, path: str, what: str = "", template: str = "") -> None:
        self.path = path
        self.what = what
        self.template = template or path
        kind = f" ({what})" if what else ""
        super().__init__(
            f"burnmap: POST {path}{kind} costs money but reports no usage burnmap can price, "
            "so with a budget in scope it was not sent. Declare what one call may cost "
            "(USD); it is reserved and charged per call:\n"
            f"    burnmap.prices.register_endpoint({self.template!r}, per_call=0.25)\n"
            "or per_call=0 to let it through uncounted."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnmeteredEndpointError, (self.path, self.what, self.template), {})


class LedgerError(BurnmapError):
    """A problem with the spend ledger (its URL, its configuration, its store)."""


class LedgerUnavailableError(LedgerError, RefusalError):
    """The ledger could not be reached, so the call was not sent (burnmap fails closed)."""

    def __init__(self, url: str, cause: BaseException | str, hint: str | None = None) -> None:
        self.url = url
        self.cause = str(cause)
        self.hint = hint
        """What to do, where it is not the store's being down."""
        advice = hint or (
            "Check the store is running and reachable, or opt in to calling without it: "
            'burnmap.configure(on_unavailable="open").'
        )
        super().__init__(
            f"burnmap: the spend ledger {url} is unavailable ({cause}), so the call was not "
            f"sent. {advice}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (LedgerUnavailableError, (self.url, self.cause, self.hint), {})


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    err = cls.__new__(cls)
    err.args = args
    return err


def _rebuild_unknown(  # noqa: PLR0917 - pickle passes the attributes in order
    model: str,
    provider: str | None,
    search_fee: bool = False,
    tool: str | None = None,
    similar: tuple[str, ...] = (),
    tier: str | None = None,
) -> UnknownModelError:
    return UnknownModelError(
        model, provider, search_fee=search_fee, tool=tool, similar=similar, tier=tier
    )


# SDK packages whose transports wrap foreign exceptions, and their base error class.
_SDK_BASES = (("anthropic", "AnthropicError"), ("openai", "OpenAIError"))
_mixed_cache: dict[tuple[type[BaseException], ...], type[RefusalError]] = {}
_mixed_lock = threading.Lock()


def _loaded_sdk_bases() -> tuple[type[BaseException], ...]:
    bases: list[type[BaseException]] = []
    for module_name, class_name in _SDK_BASES:
        module = sys.modules.get(module_name)
        base = getattr(module, class_name, None) if module is not None else None
        if isinstance(base, type) and issubclass(base, BaseException):
            bases.append(base)
    return tuple(bases)


def sdk_compatible(error: RefusalError) -> RefusalError:
    """Re-class ``error`` so that every imported SDK propagates it unchanged.

    >>> err = sdk_compatible(UnknownModelError("m"))
    >>> isinstance(err, UnknownModelError)
    True
    """
    sdk_bases = _loaded_sdk_bases()
    if not sdk_bases:
        return error
    cls = type(error)
    key = (cls, *sdk_bases)
    mixed = _mixed_cache.get(key)
    if mixed is None:
        with _mixed_lock:
            mixed = _mixed_cache.get(key)
            if mixed is None:
                mixed = type(cls.__name__, (cls, *sdk_bases), {"__module__": cls.__module__})
                assert issubclass(mixed, RefusalError)
                _mixed_cache[key] = mixed
    error.__class__ = mixed
    return error
