"""Run scopes: ``with burnmap.run("job", budget=2.00) as r:``.

The run in scope lives in a context variable, so it follows ``asyncio.gather`` and
``create_task`` (which copy the context) and stays separate between threads. A thread
started inside a run joins it with ``with r.attach():``. Runs nest: a call counts against
the innermost run and every enclosing one, and is refused if any of them cannot hold its
worst-case cost. All accounting happens under one process-wide lock, held for a few
microseconds per call and never across I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, NamedTuple

from burnmap._core import ledger
from burnmap._core.limits import check_loop_limit, check_storable
from burnmap._core.loops import (
    DEFAULT_CALL_RATE_LIMIT,
    DEFAULT_CONTEXT_GROWTH_LIMIT,
    DEFAULT_REPEAT_LIMIT,
    LoopGuard,
    LoopVerdict,
)
from burnmap._core.money import ZERO, usd
from burnmap._core.usage import Usage
from burnmap.budgets import (
    LedgerHold,
    areserve_standing,
    on_asyncio,
    reserve_standing,
    standing_active,
)
from burnmap.errors import (
    BudgetExceededError,
    LedgerUnavailableError,
    LoopDetectedError,
    RefusalError,
    sdk_compatible,
)

__all__ = [
    "CallRecord",
    "Reservation",
    "Run",
    "RunReport",
    "Settlement",
    "current_run",
    "run",
]


class _Joined:
    """A run joined with :meth:`Run.attach`: in scope there until the ``with`` ends,
    wherever and whenever the run's own block ended."""

    __slots__ = ("left", "previous", "run")

    def __init__(self, run: Run, previous: Run | _Joined | None) -> None:
        self.run = run
        self.previous = previous
        self.left = False
        """The ``with`` ended while another run entered inside it was still in scope:
        passed over (for ``previous``) wherever it comes back."""


_current: ContextVar[Run | _Joined | None] = ContextVar("burnmap_run", default=None)


# Every run's totals change under this lock. Settlements are never made from a garbage
# collector's finalizer, nor from a signal handler on a thread that holds the lock (the
# transport hands those to a thread of their own): the holder is never interrupted by one
# that needs it. Reentrant only so that the holder can be asked whether it holds it.
_LOCK = threading.RLock()


def runs_lock_held() -> bool:
    """Whether this thread holds the runs' lock (a signal handler running inside it)."""
    return bool(_LOCK._is_owned())  # type: ignore[attr-defined]


def current_run() -> Run | None:
    """The innermost run in scope here, or ``None``."""
    run = _current.get()
    while isinstance(run, _Joined):
        if not run.left:
            return run.run
        run = run.previous
    # A run whose block ended where it could not take itself out of this context (a
    # generator's run, closed on another thread or task, or after a run entered later)
    # is passed over here.
    while run is not None and run._left_elsewhere:
        run = run.parent
    return run


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class CallRecord:
    """One settled call, as the report shows it."""

    model: str
    provider: str
    endpoint: str
    usage: Usage
    cost: Decimal
    reserved: Decimal
    estimated: bool
    """True when the cost is an estimate: a stream cut short, a timeout, a response
    without readable usage, or a declared price per call."""
    streamed: bool
    started_at: float
    duration_seconds: float
    fingerprint: str | None = None
    """Digest of the request's last turns, for repeat detection."""


@dataclass(frozen=True)
class RunReport:
    """What a run cost. Taken at any time; final once the run has exited."""

    job_name: str
    budget: Decimal | None
    total_cost: Decimal
    calls: tuple[CallRecord, ...]
    refused_calls: int
    failed_attempts: int
    stopped_early: bool
    stop_reason: str | None
    started_at: float
    duration_seconds: float
    user_id: str | None = None

    @property
    def call_count(self) -> int:
        return len(self.calls)

    @property
    def budget_remaining(self) -> Decimal | None:
        return None if self.budget is None else self.budget - self.total_cost

    @property
    def cost_by_call(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cumulative = ZERO
        for call in self.calls:
            cumulative += call.cost
            usage = call.usage
            rows.append(
                {
                    "model": call.model,
                    "provider": call.provider,
                    "endpoint": call.endpoint,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.all_cache_write_tokens,
                    "reasoning_tokens": usage.reasoning_tokens,
                    "web_searches": usage.web_searches,
                    "file_searches": usage.file_searches,
                    "images_generated": usage.images_generated,
                    "containers": usage.containers,
                    "cost": call.cost,
                    "cumulative_cost": cumulative,
                    "reserved": call.reserved,
                    "estimated": call.estimated,
                    "streamed": call.streamed,
                    "duration_seconds": round(call.duration_seconds, 6),
                }
            )
        return rows

    @property
    def model_breakdown(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for call in self.calls:
            row = out.setdefault(
                call.model,
                {
                    "calls": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_read_tokens": 0,
                    "cache_write_tokens": 0,
                    "cost": ZERO,
                },
            )
            row["calls"] += 1
            row["input_tokens"] += call.usage.input_tokens
            row["output_tokens"] += call.usage.output_tokens
            row["cache_read_tokens"] += call.usage.cache_read_tokens
            row["cache_write_tokens"] += call.usage.all_cache_write_tokens
            row["cost"] += call.cost
        return out

    def summary(self) -> str:
        """A short plain-text report."""
        budget = "no budget" if self.budget is None else f"budget ${self.budget:.4f}"
        lines = [
            f"burnmap run {self.job_name!r}: ${self.total_cost:.6f} spent, {budget}, "
            f"{self.call_count} call{'s' if self.call_count != 1 else ''} "
            f"in {self.duration_seconds:.2f} s",
        ]
        if self.budget is not None:
            used = (self.total_cost / self.budget * 100) if self.budget else Decimal(100)
            lines.append(f"  remaining ${self.budget_remaining:.6f} ({used:.1f}% used)")
        for model, row in self.model_breakdown.items():
            lines.append(
                f"  {model}: {row['calls']} call{'s' if row['calls'] != 1 else ''}, "
                f"{row['input_tokens']} in / "
                f"{row['output_tokens']} out / {row['cache_read_tokens']} cache read / "
                f"{row['cache_write_tokens']} cache write tokens, ${row['cost']:.6f}"
            )
        if any(call.estimated for call in self.calls):
            lines.append(
                "  (some costs are estimates: a stream cut short, a timeout, a response "
                "without readable usage, or a declared price per call)"
            )
        if self.stopped_early:
            lines.append(f"  stopped early: {self.stop_reason}")
        if self.failed_attempts:
            lines.append(
                f"  {self.failed_attempts} failed attempts (HTTP errors or no connection, "
                "not billed)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def money(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {
            "job_name": self.job_name,
            "user_id": self.user_id,
            "budget": money(self.budget),
            "total_cost": money(self.total_cost),
            "budget_remaining": money(self.budget_remaining),
            "call_count": self.call_count,
            "refused_calls": self.refused_calls,
            "failed_attempts": self.failed_attempts,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "duration_seconds": round(self.duration_seconds, 6),
            "model_breakdown": {
                model: {**row, "cost": money(row["cost"])}
                for model, row in self.model_breakdown.items()
            },
            "cost_by_call": [
                {
                    **row,
                    "cost": money(row["cost"]),
                    "cumulative_cost": money(row["cumulative_cost"]),
                    "reserved": money(row["reserved"]),
                }
                for row in self.cost_by_call
            ],
        }

    def to_json(self, **kwargs: Any) -> str:
        """JSON text; money is written as decimal strings so no cent is lost to floats."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """The report :meth:`to_dict` wrote (extra keys, such as ``burnmap wrap``'s
        ``exit_status``, are ignored). Each call comes back with the figures its row
        holds; cache writes all at the 5-minute TTL, since a row adds both up.

        >>> report = RunReport.from_dict({"job_name": "j", "total_cost": "0.5",
        ...     "cost_by_call": [{"model": "m", "cost": "0.5", "output_tokens": 9}]})
        >>> report.call_count, report.total_cost, report.calls[0].usage.output_tokens
        (1, Decimal('0.5'), 9)

        Raises ``ValueError`` naming what is missing or malformed.
        """
        try:
            rows = data["cost_by_call"]
            if not isinstance(rows, list):
                raise TypeError("cost_by_call is not a list")
            calls = tuple(_call_from_row(row) for row in rows)
            budget = data.get("budget")
            started = data.get("started_at")
            user_id = data.get("user_id")
            stop_reason = data.get("stop_reason")
            if not all(isinstance(v, str | None) for v in (user_id, stop_reason, started)):
                raise TypeError("user_id, stop_reason and started_at are text or null")
            return cls(
                job_name=_field(data, "job_name", str),
                budget=None if budget is None else _money(budget),
                total_cost=_money(data["total_cost"]),
                calls=calls,
                refused_calls=_count(data, "refused_calls"),
                failed_attempts=_count(data, "failed_attempts"),
                stopped_early=_field(data, "stopped_early", bool, False),
                stop_reason=stop_reason,
                started_at=datetime.fromisoformat(started).timestamp() if started else 0.0,
                duration_seconds=_seconds(data),
                user_id=user_id,
            )
        except KeyError as exc:
            raise ValueError(f"not a burnmap run report: no {exc.args[0]!r}") from None
        except (TypeError, ArithmeticError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a burnmap run report: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> RunReport:
        """The report :meth:`to_json` wrote; ``ValueError`` when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a burnmap run report: not a JSON object")
        return cls.from_dict(data)


def _field(data: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = data.get(key, default) if default is not None else data[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is {value!r}, not {kind.__name__}")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if type(value) is not int or value < 0:
        raise TypeError(f"{key} is {value!r}, not a count")
    return value


def _seconds(data: dict[str, Any], key: str = "duration_seconds") -> float:
    value = data.get(key, 0.0)
    if type(value) not in (int, float) or not 0 <= value < 1e12:
        raise TypeError(f"{key} is {value!r}, not a duration")
    return float(value)


def _money(value: object) -> Decimal:
    if not isinstance(value, str | int | float | Decimal) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an amount of dollars")
    amount = usd(value)
    if amount.adjusted() > 30:  # the report printed it; 1e999999 would print a million digits
        raise ValueError(f"{value!r} is not a plausible amount of dollars")
    return amount


def _call_from_row(row: object) -> CallRecord:
    """A call back from its ``cost_by_call`` row."""
    if not isinstance(row, dict):
        raise TypeError(f"a cost_by_call row is {row!r}, not an object")
    usage = Usage(
        input_tokens=_count(row, "input_tokens"),
        output_tokens=_count(row, "output_tokens"),
        cache_read_tokens=_count(row, "cache_read_tokens"),
        cache_write_tokens=_count(row, "cache_write_tokens"),
        reasoning_tokens=_count(row, "reasoning_tokens"),
        web_searches=_count(row, "web_searches"),
        file_searches=_count(row, "file_searches"),
        images_generated=_count(row, "images_generated"),
        containers=_count(row, "containers"),
    )
    cost = _money(row["cost"])
    return CallRecord(
        model=_field(row, "model", str, ""),
        provider=_field(row, "provider", str, ""),
        endpoint=_field(row, "endpoint", str, ""),
        usage=usage,
        cost=cost,
        reserved=_money(row.get("reserved", cost)),
        estimated=_field(row, "estimated", bool, False),
        streamed=_field(row, "streamed", bool, False),
        started_at=0.0,
        duration_seconds=_seconds(row),
    )


@dataclass(eq=False)
class Run:
    """A budget scope. Create it with :func:`run`."""

    job_name: str
    budget: Decimal | None
    user_id: str | None = None
    call_rate_limit: int | None = DEFAULT_CALL_RATE_LIMIT
    context_growth_limit: float | None = DEFAULT_CONTEXT_GROWTH_LIMIT
    repeat_limit: int | None = DEFAULT_REPEAT_LIMIT
    spend_rate_limit: Decimal | None = None
    parent: Run | None = field(default=None, repr=False)
    _account: ledger.Account = field(init=False, repr=False)
    _guard: LoopGuard = field(init=False, repr=False)
    _calls: list[CallRecord] = field(default_factory=list, init=False, repr=False)
    _refused: int = field(default=0, init=False, repr=False)
    _failed: int = field(default=0, init=False, repr=False)
    _stop_reason: str | None = field(default=None, init=False, repr=False)
    _started: float = field(default=0.0, init=False, repr=False)
    _ended: float | None = field(default=None, init=False, repr=False)
    _tokens: list[Token[Run | _Joined | None]] = field(default_factory=list, init=False, repr=False)
    _chain: list[Run] | None = field(default=None, init=False, repr=False)
    _accounts: list[ledger.Account] = field(default_factory=list, init=False, repr=False)
    _guarded: bool = field(default=False, init=False, repr=False)
    """Whether any loop trigger is on (checked on every call)."""
    _repeats: bool = field(default=False, init=False, repr=False)
    """Whether this run or an enclosing one counts repeated requests."""
    _left_elsewhere: bool = field(default=False, init=False, repr=False)
    """Its block ended where it was not the innermost run in scope: in another context
    than the one that entered it, or after a run entered later (see :func:`current_run`)."""

    def __post_init__(self) -> None:
        self._account = ledger.Account(f"run:{self.job_name}", self.budget)
        self._guard = LoopGuard(
            call_rate_limit=self.call_rate_limit,
            context_growth_limit=self.context_growth_limit,
            repeat_limit=self.repeat_limit,
            spend_rate_limit=self.spend_rate_limit,
        )
        self._guarded = self._guard.active

    # -- scope -------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if self._tokens or self._ended is not None:
            raise RuntimeError(
                f"burnmap run {self.job_name!r} was already entered; create a new "
                "burnmap.run(...) for each job (use r.attach() to join it from another thread)"
            )
        self.parent = current_run()
        self._chain = None  # the enclosing runs are known now
        self._started = time.time()
        self._tokens.append(_current.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tokens:
            token = self._tokens.pop()
            if _current.get() is not self:
                # Not the innermost run here: ended in another context (a generator that
                # entered it, closed by the garbage collector or an event loop's finalizer on
                # another thread or task), or after a run entered later that is still live
                # (two generators ending out of order). Whatever is in scope here stays; the
                # context that entered this run passes over it from now on.
                self._left_elsewhere = True
            else:
                try:
                    _current.reset(token)
                except ValueError:  # another context, where this run is current too
                    _current.set(self.parent)
                    self._left_elsewhere = True
        self._ended = time.time()

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @contextmanager
    def attach(self) -> Iterator[Run]:
        """Make this run the one in scope in the current thread or task, for a while.

        ``contextvars`` do not follow new threads; a worker started inside a run joins it::

            def work():
                with r.attach():
                    client.messages.create(...)
        """
        previous = _current.get()
        joined = _Joined(self, previous)
        token = _current.set(joined)
        try:
            yield self
        finally:
            if _current.get() is joined:
                try:
                    _current.reset(token)
                except ValueError:  # left in another context (see __exit__)
                    _current.set(previous)
            else:  # a run entered inside it is still in scope (a generator's)
                joined.left = True

    # -- live figures --------------------------------------------------------------------
    @property
    def spent(self) -> Decimal:
        """Settled spend so far, in USD (inner runs' calls included)."""
        return self._account.spent

    @property
    def reserved(self) -> Decimal:
        """Worst-case cost held by calls in flight."""
        return self._account.reserved

    @property
    def call_count(self) -> int:
        return len(self._calls)

    @property
    def remaining(self) -> Decimal | None:
        return None if self.budget is None else self.budget - self.spent

    @property
    def report(self) -> RunReport:
        with _LOCK:
            calls = tuple(self._calls)
            total = self._account.spent
            refused = self._refused
            failed = self._failed
            reason = self._stop_reason
        end = self._ended if self._ended is not None else time.time()
        return RunReport(
            job_name=self.job_name,
            budget=self.budget,
            total_cost=total,
            calls=calls,
            refused_calls=refused,
            failed_attempts=failed,
            stopped_early=reason is not None,
            stop_reason=reason,
            started_at=self._started,
            duration_seconds=max(end - self._started, 0.0) if self._started else 0.0,
            user_id=self.user_id,
        )

    def record(self, record: CallRecord) -> LoopVerdict | None:
        """Count a call made elsewhere (a wrapped program's) in this run and its parents;
        returns the loop verdict it triggers, if any (the call has happened already)."""
        now = time.monotonic()
        verdict = None
        with _LOCK:
            for r in self.chain():
                if r._guarded:
                    verdict = verdict or r._guard.check(now, record.fingerprint)
                    r._guard.started(now, record.fingerprint)
                    r._guard.settled(
                        now, record.usage.total_input_tokens, record.cost, record.fingerprint
                    )
                r._calls.append(record)
            ledger.spend(self._accounts, record.cost)
        return verdict

    def note_repeat(self, fingerprint: str) -> LoopVerdict | None:
        """Count a request tail seen only after its call was recorded from another report
        (``burnmap wrap``); returns the repeat verdict it triggers, if any."""
        now = time.monotonic()
        verdict = None
        with _LOCK:
            for r in self.chain():
                if r._guard.repeat_limit is not None:
                    verdict = verdict or r._guard.check(now, fingerprint)
                    r._guard.repeated(fingerprint)
        return verdict if verdict is not None and verdict.trigger == "repeat" else None

    def stop(self, reason: str, *, refused: bool = False) -> None:
        """Mark the run as stopped early (``burnmap wrap`` stopping its program);
        ``refused``: a call was refused elsewhere (in the wrapped program)."""
        with _LOCK:
            self._stop_reason = self._stop_reason or reason
            if refused:
                self._refused += 1

    def chain(self) -> list[Run]:
        """This run and every enclosing one, innermost first (do not modify the list)."""
        runs = self._chain
        if runs is None or runs[-1].parent is not None:
            runs = []
            node: Run | None = self
            while node is not None:
                runs.append(node)
                node = node.parent
            # Published last: a thread that sees the chain sees its accounts too.
            self._accounts = [r._account for r in runs]
            self._repeats = any(r.repeat_limit is not None for r in runs)
            self._chain = runs
        return runs

    def needs_fingerprints(self) -> bool:
        """Whether calls in this run must carry their request fingerprint (a repeat limit
        in scope, or an observer such as ``burnmap wrap`` following the calls)."""
        self.chain()
        return self._repeats or bool(_observers)

    # -- reservations --------------------------------------------------------------------
    def reserve(
        self,
        amount: Decimal,
        *,
        model: str,
        fingerprint: str | None = None,
    ) -> Reservation:
        """Hold ``amount`` on this run, every enclosing run and the standing budgets in
        scope, or raise a refusal (holding nothing)."""
        reservation = self._reserve_runs(amount, model=model, fingerprint=fingerprint)
        if standing_active():
            try:
                reservation.ledger_hold = reserve_standing(**self._standing(amount, model))
            except RefusalError as exc:
                self._refused_by_ledger(reservation, exc)
                raise
            except BaseException:  # Ctrl-C: nothing was sent
                reservation.release(failed=False)
                raise
        return reservation

    async def areserve(
        self,
        amount: Decimal,
        *,
        model: str,
        fingerprint: str | None = None,
    ) -> Reservation:
        """The async twin of :meth:`reserve` (the ledger is awaited, not blocked on)."""
        reservation = self._reserve_runs(amount, model=model, fingerprint=fingerprint)
        if standing_active():
            try:
                await _hold_on_ledger(reservation, self._standing(amount, model))
            except RefusalError as exc:
                self._refused_by_ledger(reservation, exc)
                raise
            except BaseException:  # cancelled: nothing was sent
                reservation.release(failed=False)
                raise
        return reservation

    def _standing(self, amount: Decimal, model: str) -> dict[str, Any]:
        runs = self.chain()
        user_id = next((r.user_id for r in runs if r.user_id), None)
        return {
            "scopes": standing_scopes([r.job_name for r in runs], user_id),
            "amount": amount,
            "job_name": self.job_name,
            "model": model,
            "call_count": len(self._calls),
        }

    def _refused_by_ledger(self, reservation: Reservation, exc: RefusalError) -> None:
        reservation.release(failed=False)
        with _LOCK:
            _count_refusal(reservation.runs, _reason(exc))

    def _reserve_runs(self, amount: Decimal, *, model: str, fingerprint: str | None) -> Reservation:
        runs = self.chain()
        accounts = self._accounts
        now = time.monotonic()
        with _LOCK:
            for r in runs:
                if r._guarded:
                    verdict = r._guard.check(now, fingerprint)
                    if verdict is not None:
                        self._refuse_loop(runs, r, verdict)
            refusing = ledger.first_refusal(accounts, amount)
            if refusing is not None:
                self._refuse_budget(runs, accounts, refusing, amount, model)
            for r in runs:
                if r._guarded:
                    # Calls of the run already in flight: a batch fanning out.
                    r._guard.started(now, fingerprint, concurrent=r._account.holds > 0)
            ledger.hold(accounts, amount)
        return Reservation(runs, accounts, amount)

    def _refuse_loop(self, runs: list[Run], r: Run, verdict: LoopVerdict) -> None:
        """Count the refusal on every run in scope and raise it (the lock is held)."""
        _count_refusal(runs, f"loop detected ({verdict.trigger}): {verdict.message}")
        raise sdk_compatible(
            LoopDetectedError(
                f"burnmap: run {r.job_name!r} looks like a runaway loop: "
                f"{verdict.message}. The call was not sent. Raise or disable "
                f"the limit (burnmap.run(..., {verdict.trigger}_limit=None)) if "
                "this is expected.",
                trigger=verdict.trigger,
                job_name=r.job_name,
                call_count=len(r._calls),
            )
        )

    def _refuse_budget(
        self,
        runs: list[Run],
        accounts: list[ledger.Account],
        refusing: ledger.Account,
        amount: Decimal,
        model: str,
    ) -> None:
        owner = runs[accounts.index(refusing)]
        _count_refusal(runs, f"budget {refusing.scope} would be exceeded")
        raise sdk_compatible(
            BudgetExceededError(
                job_name=self.job_name,
                budget=refusing.limit,
                spent_so_far=refusing.spent,
                call_count=len(owner._calls),
                scope=refusing.scope,
                reserved=refusing.reserved,
                needed=amount,
                model=model,
            )
        )


def _count_refusal(runs: list[Run], reason: str) -> None:
    """A call was refused: count it on every run in scope; the first reason stays."""
    for each in runs:
        each._refused += 1
        each._stop_reason = each._stop_reason or reason


def standing_scopes(job_name: str | list[str] | None, user_id: str | None) -> list[str]:
    """The ledger scopes a call counts against: ``global``, ``job:<name>`` of every run in
    scope (nested runs count against their parents' jobs too), ``user:<id>``, plus
    ``BURNMAP_SCOPES`` (comma-separated; ``burnmap wrap`` sets it for its child)."""
    scopes = ["global"]
    names = [job_name] if isinstance(job_name, str) else (job_name or [])
    scopes.extend(f"job:{name}" for name in dict.fromkeys(names) if name)
    if user_id:
        scopes.append(f"user:{user_id}")
    extra = os.environ.get("BURNMAP_SCOPES")
    if extra:
        for scope in (s.strip() for s in extra.split(",")):
            if not scope:
                continue
            try:
                check_storable("BURNMAP_SCOPES scope", scope)
            except ValueError as exc:
                # Raised from inside the SDK's transport: a burnmap error it passes through
                # (any other it would retry as a connection error, hiding the cause).
                from burnmap.budgets import ledger as current_ledger

                raise sdk_compatible(
                    LedgerUnavailableError(current_ledger().url, exc, hint="Fix BURNMAP_SCOPES.")
                ) from None
            scopes.append(scope)
    return scopes


Observer = Callable[[str, dict[str, Any]], None]
_observers: list[Observer] = []


def observe(callback: Observer) -> None:
    """Call ``callback(kind, fields)`` for every settled call (``"call"``) and refusal
    (``"refused"``) in this process. ``burnmap wrap`` uses it to follow a child's spend;
    callbacks must be quick and must not raise."""
    _observers.append(callback)


def _notify(kind: str, fields: dict[str, Any]) -> None:
    for callback in list(_observers):
        try:
            callback(kind, fields)
        except Exception:  # an observer must never break a call
            logging.getLogger("burnmap.runs").exception("burnmap: observer failed")


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "web_searches",
    "file_searches",
    "images_generated",
    "containers",
)


def _record_fields(record: CallRecord) -> dict[str, Any]:
    """A record as JSON-ready fields (what observers get); :func:`record_from_fields`
    reads them back."""
    usage = record.usage
    return {
        "model": record.model,
        "provider": record.provider,
        "endpoint": record.endpoint,
        **{name: getattr(usage, name) for name in _USAGE_FIELDS},
        "cost": str(record.cost),
        "reserved": str(record.reserved),
        "estimated": record.estimated,
        "streamed": record.streamed,
        "started_at": record.started_at,
        "duration_seconds": record.duration_seconds,
        "fingerprint": record.fingerprint,
    }


def record_from_fields(fields: dict[str, Any]) -> CallRecord:
    """The record an observer's fields describe (``burnmap wrap`` gets them from a child
    process as JSON)."""
    counts: dict[str, Any] = {name: int(fields.get(name) or 0) for name in _USAGE_FIELDS}
    return CallRecord(
        model=str(fields.get("model")),
        provider=str(fields.get("provider")),
        endpoint=str(fields.get("endpoint")),
        usage=Usage(**counts),
        cost=Decimal(str(fields.get("cost", "0"))),
        reserved=Decimal(str(fields.get("reserved", "0"))),
        estimated=bool(fields.get("estimated")),
        streamed=bool(fields.get("streamed")),
        started_at=float(fields.get("started_at") or time.time()),
        duration_seconds=float(fields.get("duration_seconds") or 0.0),
        fingerprint=fields.get("fingerprint"),
    )


def observed() -> bool:
    """Whether any observer follows the calls of this process."""
    return bool(_observers)


def notify_refusal(exc: RefusalError) -> None:
    """Tell observers a call was refused (the transport calls this)."""
    if _observers:
        _notify(
            "refused",
            {
                "error": type(exc).__name__,
                "scope": getattr(exc, "scope", None),
                "trigger": getattr(exc, "trigger", None),
                "message": str(exc),
            },
        )


def _reason(exc: RefusalError) -> str:
    scope = getattr(exc, "scope", None)
    if scope:
        return f"budget {scope} would be exceeded"
    if isinstance(exc, LedgerUnavailableError):
        return f"ledger {exc.url} unavailable"
    return type(exc).__name__


def reserve_outside_runs(amount: Decimal, *, model: str) -> Reservation:
    """A call made outside any run, while standing budgets are on: ``global`` applies."""
    reservation = Reservation([], [], amount)
    reservation.ledger_hold = reserve_standing(
        standing_scopes(None, None), amount, job_name=None, model=model, call_count=0
    )
    return reservation


async def areserve_outside_runs(amount: Decimal, *, model: str) -> Reservation:
    """The async twin of :func:`reserve_outside_runs`."""
    reservation = Reservation([], [], amount)
    await _hold_on_ledger(
        reservation,
        {
            "scopes": standing_scopes(None, None),
            "amount": amount,
            "job_name": None,
            "model": model,
            "call_count": 0,
        },
    )
    return reservation


_LATE: set[asyncio.Future[Any]] = set()


async def _hold_on_ledger(reservation: Reservation, request: dict[str, Any]) -> None:
    """Await the ledger's hold for ``reservation``. The ledger may finish taking it after
    the caller is cancelled (a worker thread, a command already sent): it is then
    released as soon as it is taken, so a call that was never sent holds nothing."""
    if not on_asyncio():  # trio: the blocking twin, on a worker thread
        reservation.ledger_hold = await _hold_off_loop(request)
        return
    taking = asyncio.ensure_future(areserve_standing(**request))
    try:
        reservation.ledger_hold = await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(_release_late_hold)
        raise


async def _hold_off_loop(request: dict[str, Any]) -> LedgerHold | None:
    """The ledger's hold, taken on a worker thread (trio). A cancellation (a deadline)
    does not wait for a slow or locked ledger: the call is given up at once, and a hold
    the thread takes after that is let go as soon as it is taken."""
    import anyio  # only under trio; httpx2 needs anyio >= 4.10

    given_up = threading.Lock()
    state: dict[str, Any] = {"abandoned": False, "hold": None}

    def take() -> LedgerHold | None:
        hold = reserve_standing(**request)
        with given_up:
            if not state["abandoned"]:
                state["hold"] = hold
                return hold
        if hold is not None:
            hold.settle(ZERO)
        return None

    try:
        return await anyio.to_thread.run_sync(take, abandon_on_cancel=True)
    except BaseException:
        with given_up:
            state["abandoned"] = True
            taken: LedgerHold | None = state["hold"]
        if taken is not None:  # taken, but its caller was gone before it could have it
            taken.settle_later(ZERO)
        raise


def _release_late_hold(taking: asyncio.Future[LedgerHold | None]) -> None:
    if taking.cancelled() or taking.exception() is not None:
        return
    hold = taking.result()
    if hold is None:
        return
    release = asyncio.ensure_future(hold.asettle(ZERO))
    _LATE.add(release)
    release.add_done_callback(_LATE.discard)


class Settlement(NamedTuple):
    """What a finished call is settled with."""

    model: str
    provider: str
    endpoint: str
    usage: Usage
    cost: Decimal
    estimated: bool
    """True when the cost is an estimate: a stream cut short, a timeout, a response
    without readable usage, or a declared price per call."""
    streamed: bool
    fingerprint: str | None = None


class Reservation:
    """A hold on a chain of runs (and the ledger). Settled or released exactly once."""

    __slots__ = (
        "_renew_at",
        "accounts",
        "amount",
        "done",
        "ledger_hold",
        "runs",
        "started",
        "started_at",
    )

    def __init__(self, runs: list[Run], accounts: list[ledger.Account], amount: Decimal) -> None:
        self.runs = runs
        self.accounts = accounts
        self.amount = amount
        self.started = time.monotonic()
        self.started_at = time.time()
        self.done = False
        self.ledger_hold: LedgerHold | None = None
        self._renew_at = 0.0

    def renewal_due(self) -> bool:
        """Whether a long stream's ledger hold needs renewing now (every third of its TTL);
        the caller then renews it, blocking or awaited."""
        hold = self.ledger_hold
        if hold is None:
            return False
        now = time.monotonic()
        if not self._renew_at:
            self._renew_at = self.started + hold.ttl / 3
        if now < self._renew_at:
            return False
        self._renew_at = now + hold.ttl / 3
        return True

    def settle(self, call: Settlement, *, ledger_too: bool = True) -> bool:
        """Replace the hold by the call's actual cost and record the call; ``False`` when
        it was settled or released already."""
        now = time.monotonic()
        record = CallRecord(
            model=call.model,
            provider=call.provider,
            endpoint=call.endpoint,
            usage=call.usage,
            cost=call.cost,
            reserved=self.amount,
            estimated=call.estimated,
            streamed=call.streamed,
            started_at=self.started_at,
            duration_seconds=now - self.started,
            fingerprint=call.fingerprint,
        )
        cost = call.cost
        with _LOCK:
            if self.done:
                return False
            self.done = True
            ledger.settle(self.accounts, self.amount, cost)
            for r in self.runs:
                r._calls.append(record)
                if r._guarded:
                    r._guard.settled(now, call.usage.total_input_tokens, cost, call.fingerprint)
        if ledger_too and self.ledger_hold is not None:
            self.ledger_hold.settle(cost)
        if _observers:
            _notify("call", _record_fields(record))
        return True

    async def asettle(self, call: Settlement) -> None:
        """The async twin of :meth:`settle` (the ledger is awaited, not blocked on)."""
        if self.settle(call, ledger_too=False) and self.ledger_hold is not None:
            await self.ledger_hold.asettle(call.cost)

    def release(self, *, failed: bool = True, ledger_too: bool = True) -> bool:
        """Drop the hold: the attempt cost nothing (HTTP error, connection failure);
        ``False`` when it was settled or released already."""
        with _LOCK:
            if self.done:
                return False
            self.done = True
            ledger.release(self.accounts, self.amount)
            if failed:
                for r in self.runs:
                    r._failed += 1
        if ledger_too and self.ledger_hold is not None:
            self.ledger_hold.settle(ZERO)
        return True

    async def arelease(self, *, failed: bool = True) -> None:
        """The async twin of :meth:`release`."""
        if self.release(failed=failed, ledger_too=False) and self.ledger_hold is not None:
            await self.ledger_hold.asettle(ZERO)


def run(
    job_name: str,
    budget: float | int | str | Decimal | None = None,
    *,
    user_id: str | None = None,
    call_rate_limit: int | None = DEFAULT_CALL_RATE_LIMIT,
    context_growth_limit: float | None = DEFAULT_CONTEXT_GROWTH_LIMIT,
    repeat_limit: int | None = DEFAULT_REPEAT_LIMIT,
    spend_rate_limit: float | int | str | Decimal | None = None,
) -> Run:
    """A budget scope for the calls made inside it (``with`` or ``async with``).

    ``budget`` is in USD; ``None`` only records spend. Runaway-loop triggers (each
    ``None`` to disable; see ``burnmap._core.loops`` and docs/loops.md):
    ``call_rate_limit`` calls per minute (and a tenth of it in any 3 s),
    ``context_growth_limit`` the per-call input growth factor that, sustained over 4
    calls past 32k tokens, means a runaway context, ``repeat_limit`` how many times the
    same request tail (same tool call, same result) may be sent, and ``spend_rate_limit``
    dollars per minute (off by default).
    """
    if not isinstance(job_name, str) or not job_name:
        raise ValueError("burnmap.run() needs a job name, e.g. burnmap.run('nightly-triage')")
    check_storable("job name", job_name)
    check_storable("user_id", user_id)
    check_loop_limit("call_rate_limit", call_rate_limit, whole=True, least=1)
    check_loop_limit("repeat_limit", repeat_limit, whole=True, least=1)
    check_loop_limit("context_growth_limit", context_growth_limit, whole=False, least=1)
    return Run(
        job_name=job_name,
        budget=None if budget is None else usd(budget),
        user_id=None if user_id is None else str(user_id),  # user:42 and user:"42" are one
        call_rate_limit=None if call_rate_limit is None else int(call_rate_limit),
        context_growth_limit=None if context_growth_limit is None else float(context_growth_limit),
        repeat_limit=None if repeat_limit is None else int(repeat_limit),
        spend_rate_limit=None if spend_rate_limit is None else usd(spend_rate_limit),
    )
