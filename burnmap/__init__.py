"""burnmap: budget enforcement for LLM agents.

Pass ``burnmap.client()`` as an SDK's ``http_client`` and scope calls with
``burnmap.run("job", budget=2.00)``: every call is bounded from above before it is sent,
reserved against every budget in scope, and refused with :class:`BudgetExceededError`
if it could overspend.
"""

from __future__ import annotations

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
)
from burnmap.run import CallRecord, Run, RunReport, current_run, run
from burnmap.transport import AsyncTransport, Transport, async_client, client

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
