"""burnmap: budget enforcement for LLM agents.

Pass ``burnmap.client()`` as an SDK's ``http_client`` and scope calls with
``burnmap.run("job", budget=2.00)``: every call is bounded from above before it is sent,
reserved against every budget in scope, and refused with :class:`BudgetExceededError`
if it could overspend.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~9 ms to import; mypy reads this as True

if TYPE_CHECKING:
    from typing import Any

    from burnmap import prices
    from burnmap._core.usage import Usage
    from burnmap.budgets import BudgetStatus, configure, limit, limits, remove_limit, spent
    from burnmap.errors import (
        BudgetExceededError,
        BurnmapError,
        LedgerError,
        LedgerUnavailableError,
        LoopDetectedError,
        RefusalError,
        UnknownModelError,
        UnmeteredEndpointError,
    )
    from burnmap.runs import CallRecord, Run, RunReport, current_run, run
    from burnmap.transport import AsyncTransport, Transport, async_client, client

# Where each public name lives. Nothing is imported until it is used: the transports pull
# in httpx and httpx2 (~100 ms), prices genai-prices' tables, and ``burnmap wrap`` must
# start its program without paying for any of it.
_HOME = {
    "AsyncTransport": "burnmap.transport",
    "BudgetExceededError": "burnmap.errors",
    "BudgetStatus": "burnmap.budgets",
    "BurnmapError": "burnmap.errors",
    "CallRecord": "burnmap.runs",
    "LedgerError": "burnmap.errors",
    "LedgerUnavailableError": "burnmap.errors",
    "LoopDetectedError": "burnmap.errors",
    "RefusalError": "burnmap.errors",
    "Run": "burnmap.runs",
    "RunReport": "burnmap.runs",
    "Transport": "burnmap.transport",
    "UnknownModelError": "burnmap.errors",
    "UnmeteredEndpointError": "burnmap.errors",
    "Usage": "burnmap._core.usage",
    "async_client": "burnmap.transport",
    "client": "burnmap.transport",
    "configure": "burnmap.budgets",
    "current_run": "burnmap.runs",
    "limit": "burnmap.budgets",
    "limits": "burnmap.budgets",
    "remove_limit": "burnmap.budgets",
    "run": "burnmap.runs",
    "spent": "burnmap.budgets",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "prices":
        value: Any = importlib.import_module("burnmap.prices")
    elif name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    else:
        raise AttributeError(f"module 'burnmap' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


__version__ = "0.3.0.dev0"

__all__ = [
    "AsyncTransport",
    "BudgetExceededError",
    "BudgetStatus",
    "BurnmapError",
    "CallRecord",
    "LedgerError",
    "LedgerUnavailableError",
    "LoopDetectedError",
    "RefusalError",
    "Run",
    "RunReport",
    "Transport",
    "UnknownModelError",
    "UnmeteredEndpointError",
    "Usage",
    "__version__",
    "async_client",
    "client",
    "configure",
    "current_run",
    "limit",
    "limits",
    "prices",
    "remove_limit",
    "run",
    "spent",
]
