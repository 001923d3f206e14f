"""The budget transport: the one interception point, for httpx and httpx2 alike.

``Transport`` / ``AsyncTransport`` wrap an inner transport (the real network by default).
For each request inside a run they: identify the endpoint, bound its cost, reserve that
on every budget in scope (or raise before sending), forward, meter the response as it
passes, and settle. Every decision is made by ``burnmap._core``; this module moves bytes.

The classes subclass both libraries' base transports, and the response stream wrappers
subclass the byte-stream classes of whichever library made the request.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import queue
import threading
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, overload

import httpx
import httpx2

from burnmap._core.bound import CallPlan, plan_call
from burnmap._core.charge import Charge, charge
from burnmap._core.decode import BodyDecoder, DecodeError
from burnmap._core.endpoint import Endpoint, identify
from burnmap._core.meter import BedrockStreamMeter, JSONMeter, SSEMeter, UsageChunkFilter
from burnmap._core.pricing import PriceBook, with_suggestions
from burnmap.budgets import ledger_lock_held, standing_active
from burnmap.errors import RefusalError, UnknownModelError, sdk_compatible
from burnmap.prices import default_book
from burnmap.runs import (
    Reservation,
    Run,
    Settlement,
    areserve_outside_runs,
    current_run,
    notify_refusal,
    observed,
    reserve_outside_runs,
    runs_lock_held,
)

__all__ = [
    "AsyncTransport",
    "Transport",
    "async_client",
    "client",
]

log = logging.getLogger("burnmap.transport")


def _library(obj: Any) -> types.ModuleType:
    """httpx2 or httpx: the library an object (or class) comes from."""
    kind = obj if isinstance(obj, type) else type(obj)
    return httpx2 if kind.__module__.startswith("httpx2") else httpx


# The decoder of an unencoded body: it has no state, so one serves every response.
_IDENTITY = BodyDecoder(None)


class _Metering:
    """Drives one response through decoder → (filter) → meter, and settles once."""

    __slots__ = (
        "_book",
        "_decoder",
        "_done",
        "_filter",
        "_meter",
        "_plan",
        "_request",
        "reservation",
    )

    def __init__(
        self,
        book: PriceBook,
        plan: CallPlan,
        reservation: Reservation,
        content_encoding: bytes,
        content_type: bytes,
        *,
        request: Any,
    ) -> None:
        self._book = book
        self._plan = plan
        self._request = request
        self.reservation = reservation
        self._done = False
        streaming = b"text/event-stream" in content_type
        self._meter: JSONMeter | SSEMeter | BedrockStreamMeter
        if streaming:
            self._meter = SSEMeter(plan.endpoint.shape, plan.endpoint.kind)
        elif b"vnd.amazon.eventstream" in content_type:
            streaming = True
            self._meter = BedrockStreamMeter()
        else:
            self._meter = JSONMeter(plan.endpoint.shape, plan.endpoint.kind)
        self._filter = UsageChunkFilter() if plan.inject_usage and streaming else None
        self._decoder: BodyDecoder | None = None
        if plan.endpoint.kind == "unmetered":
            pass  # charged its declared price: nothing to read
        elif not (streaming or b"json" in content_type):
            log.warning(
                "burnmap: unexpected content-type %r from %s; charging the call's bound",
                content_type.decode("latin-1"),
                plan.endpoint.kind,
            )
        elif not content_encoding:
            self._decoder = _IDENTITY
        else:
            try:
                self._decoder = BodyDecoder(content_encoding.decode("latin-1"))
            except DecodeError as exc:
                log.warning("burnmap: cannot meter this response (%s); charging its bound", exc)

    @property
    def rewrites(self) -> bool:
        """True when the caller gets decoded, filtered bytes instead of the raw ones."""
        return self._filter is not None

    def feed(self, chunk: bytes) -> bytes:
        """Meter a raw chunk; returns what to pass on. Raises ``DecodeError`` only when
        the caller depends on burnmap's decoding (a rewritten stream)."""
        if self._decoder is None:
            return chunk
        try:
            data = self._decoder.feed(chunk)
        except DecodeError as exc:
            self._decoder = None
            if self._filter is not None:
                raise
            log.warning("burnmap: cannot meter this response (%s); charging its bound", exc)
            return chunk
        if data:
            self._meter_feed(data)
            if self._filter is not None:
                return self._filter.feed(data)
        return b"" if self._filter is not None else chunk

    def _meter_feed(self, data: bytes) -> None:
        """The meter never breaks the caller's response: whatever it cannot read (absurd
        numbers, nesting past the recursion limit…) makes the call cost its bound."""
        if self._meter.failed:
            return
        try:
            self._meter.feed(data)
        except Exception as exc:
            self._unreadable(exc)

    def _unreadable(self, exc: Exception) -> None:
        self._meter.failed = True
        log.warning(
            "burnmap: cannot meter this response (%s: %s); charging its bound",
            type(exc).__name__,
            exc,
        )

    def tail(self) -> bytes:
        if self._decoder is None:
            return b""
        try:
            data = self._decoder.flush()
        except DecodeError:
            self._decoder = None
            if self._filter is not None:
                raise
            return b""
        if data:
            self._meter_feed(data)
        if self._filter is not None:
            return (self._filter.feed(data) if data else b"") + self._filter.flush()
        return b""

    def _settlement(self) -> Settlement | None:
        """What to settle, once: ``None`` when already done."""
        if self._done:
            return None
        self._done = True
        plan = self._plan
        metered = None
        if self._decoder is not None and not self._meter.failed:
            try:
                metered = self._meter.result()
            except Exception as exc:
                self._unreadable(exc)
        result = charge(plan, metered, self._book)
        explained = False
        tier = metered.service_tier if plan.tier_unasked and metered is not None else None
        if tier == "priority" or (tier is not None and _PRIORITY_PROJECTS):
            # The project's default tier: learned (or forgotten), and then the reason a
            # call costs more. (Most answers say "default", with nothing to forget.)
            explained = _learn_default_tier(self._request, plan.model, tier)
        if result.unpriced is not None:
            log.warning(
                "burnmap: a %s call billed %s, whose price is not known: charged $0 for it. "
                "Declare one (burnmap.prices.register_tool) and keep hosted tools in the "
                "request's own tools, where burnmap can bound them.",
                result.model,
                result.unpriced,
            )
        if result.exceeds_bound and not explained:
            log.warning(
                "burnmap: a %s call cost $%s, more than its bound $%s; please report this",
                result.model,
                result.cost,
                plan.cost,
            )
        return _settlement(plan, result)

    @property
    def done(self) -> bool:
        return self._done

    def finish(self) -> None:
        settlement = self._settlement()
        if settlement is not None:
            self.reservation.settle(settlement)

    async def afinish(self) -> None:
        settlement = self._settlement()
        if settlement is not None:
            await self.reservation.asettle(settlement)


class _SyncMeteredStream:
    """Yields each chunk the moment it arrives; settles at the end or on close."""

    decoding_error: type[Exception] = httpx2.DecodingError

    def __init__(self, inner: Any, metering: _Metering) -> None:
        self._inner = inner
        self._metering = metering

    def __iter__(self) -> Iterator[bytes]:
        metering = self._metering
        reservation = metering.reservation
        abandoned = False
        try:
            for chunk in self._inner:
                if reservation.ledger_hold is not None and reservation.renewal_due():
                    reservation.ledger_hold.renew()
                out = metering.feed(chunk)
                if out:
                    yield out
            tail = metering.tail()
            if tail:
                yield tail
        except DecodeError as exc:
            raise self.decoding_error(str(exc)) from exc
        except GeneratorExit:
            abandoned = True  # settled here, or later if here could deadlock
            _finish_here_or_later(metering)
            raise
        finally:
            if not abandoned:
                metering.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            _finish_here_or_later(self._metering)

    def __del__(self) -> None:
        # A response dropped without being read or closed: settled with what was seen.
        metering = getattr(self, "_metering", None)
        if metering is not None:
            _finish_here_or_later(metering)


# The thread the cyclic garbage collector is running on, if any. It frees abandoned
# responses (closing their half-read streams) at any allocation, on whatever thread it
# interrupts, which may hold a lock the settlement needs (the runs' lock, a ledger's):
# settling there could deadlock. (So could a signal handler closing a stream while its
# thread holds the runs' lock.)
_collecting_on = 0


def _gc_phase(phase: str, info: dict[str, int]) -> None:
    global _collecting_on
    _collecting_on = threading.get_ident() if phase == "start" else 0


gc.callbacks.append(_gc_phase)


def _finish_here_or_later(metering: _Metering) -> None:
    """Settle now, or, where that could deadlock (inside a garbage collection, or with
    the runs' lock or the ledger's held by this thread), hand over to the finisher
    thread."""
    risky = (
        (_collecting_on and _collecting_on == threading.get_ident())
        or runs_lock_held()
        or ledger_lock_held()
    )
    if not (risky and _FINISHER.hand_over(metering)):
        metering.finish()


class _Finisher:
    """Settles, on a thread of its own, the responses the garbage collector abandons.

    Handing over is a ``SimpleQueue.put``, safe inside a collection; the thread, started
    from normal code before any response exists, settles. What is still queued at exit is
    settled then."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Metering] = queue.SimpleQueue()
        self._running = False
        self._settled = threading.Condition()  # (an RLock: a collection may run inside)
        self._owed = 0  # handed over, not yet settled
        self.closed = False

    def ensure_running(self) -> None:
        if not self._running:
            self._running = True
            threading.Thread(target=self._run, name="burnmap-finisher", daemon=True).start()

    def forked(self) -> None:
        """In a forked child: the thread did not come along."""
        self._running = False

    def hand_over(self, metering: _Metering) -> bool:
        """Queue ``metering`` for the thread; ``False`` once the process is exiting (the
        thread may not run again: the caller settles it)."""
        if self.closed:
            return False
        if not metering.done:
            with self._settled:
                self._owed += 1
            self._queue.put(metering)
        return True

    def pending(self) -> bool:
        return not self._queue.empty()

    def _run(self) -> None:
        while True:
            self._settle(self._queue.get())

    def _settle(self, metering: _Metering) -> None:
        try:
            metering.finish()
        except Exception:  # pragma: no cover - finish() logs and never raises
            log.exception("burnmap: could not settle an abandoned response")
        finally:
            with self._settled:
                self._owed -= 1
                self._settled.notify_all()

    def drain(self) -> None:
        """Settle what is queued, here and now (the next call, or at exit)."""
        while True:
            try:
                metering = self._queue.get_nowait()
            except queue.Empty:
                return
            self._settle(metering)

    def close(self) -> None:
        """At exit: let the thread finish what it holds, settle the rest here, and have
        what is abandoned from now on (the last collections) settled where it is."""
        self.closed = True
        if self._running:  # the thread runs in this process: let it finish
            with self._settled:  # everything handed over, its current one included
                self._settled.wait_for(lambda: self._owed <= 0, timeout=5)
        self.drain()


_FINISHER = _Finisher()
atexit.register(_FINISHER.close)
os.register_at_fork(after_in_child=_FINISHER.forked)


class _AsyncMeteredStream:
    decoding_error: type[Exception] = httpx2.DecodingError

    def __init__(self, inner: Any, metering: _Metering) -> None:
        self._inner = inner
        self._metering = metering

    async def __aiter__(self) -> AsyncIterator[bytes]:
        metering = self._metering
        reservation = metering.reservation
        try:
            async for chunk in self._inner:
                if reservation.ledger_hold is not None and reservation.renewal_due():
                    await reservation.ledger_hold.arenew()
                out = metering.feed(chunk)
                if out:
                    yield out
            tail = metering.tail()
            if tail:
                yield tail
        except DecodeError as exc:
            raise self.decoding_error(str(exc)) from exc
        finally:
            await metering.afinish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await self._metering.afinish()

    def __del__(self) -> None:
        # Dropped unread and unclosed: settled with what was seen (the ledger
        # synchronously, since nothing can be awaited here).
        metering = getattr(self, "_metering", None)
        if metering is not None:
            _finish_here_or_later(metering)


class _HttpxSync(_SyncMeteredStream, httpx.SyncByteStream):
    decoding_error = httpx.DecodingError


class _Httpx2Sync(_SyncMeteredStream, httpx2.SyncByteStream):
    pass


class _HttpxAsync(_AsyncMeteredStream, httpx.AsyncByteStream):
    decoding_error = httpx.DecodingError


class _Httpx2Async(_AsyncMeteredStream, httpx2.AsyncByteStream):
    pass


class _Streams(dict[tuple[type, bool], type]):
    """The stream wrapper class for (response class, sync?), by the library it comes from."""

    def __missing__(self, key: tuple[type, bool]) -> type:
        response_type, sync = key
        if _library(response_type) is httpx2:
            cls: type = _Httpx2Sync if sync else _Httpx2Async
        else:
            cls = _HttpxSync if sync else _HttpxAsync
        self[key] = cls
        return cls


_STREAMS = _Streams()


def _header_items(headers: Any) -> list[tuple[bytes, bytes, bytes]]:
    """(raw name, lower-case name, value) of each header. Read from the headers' own list
    where it exists: ``Headers.get`` re-detects their encoding on every call."""
    items: list[tuple[bytes, bytes, bytes]] | None = getattr(headers, "_list", None)
    if items is None:  # pragma: no cover - an httpx without the raw list
        items = [(key, key.lower(), value) for key, value in headers.raw]
    return items


def _anthropic_beta(request: Any) -> str:
    """The request's ``anthropic-beta`` header values."""
    return ",".join(
        value.decode("latin-1")
        for _, name, value in _header_items(request.headers)
        if name == b"anthropic-beta"
    )


# OpenAI projects seen to serve a model at priority rates when the request named no
# service tier (a project whose default tier is priority): by host, then by a hash of the
# credentials that pick the project, the models it serves so. Later such requests for
# them are bounded at priority rates, in every client of the process, until that model is
# served at another tier (a model the project cannot serve at priority stays apart).
_PRIORITY_PROJECTS: dict[str, dict[int, set[str]]] = {}
_PROJECT_HEADERS = (b"authorization", b"api-key", b"openai-project", b"openai-organization")


def _project(request: Any) -> int:
    """A hash of the headers that choose a request's project (no credential is kept)."""
    return hash(
        tuple(
            value for _, name, value in _header_items(request.headers) if name in _PROJECT_HEADERS
        )
    )


def _learn_default_tier(request: Any, model: str, tier: str) -> bool:
    """Note the tier a project served a request that named none at; ``True`` when it
    just learned that the project serves ``model`` at priority by default (the call may
    have cost more than its bound, and the log says why)."""
    host = request.url.host
    projects = _PRIORITY_PROJECTS.get(host)
    if tier != "priority":
        learned = projects.get(_project(request)) if projects else None
        if learned:
            learned.discard(model)  # served at its own tier now
        return False
    models = _PRIORITY_PROJECTS.setdefault(host, {}).setdefault(_project(request), set())
    if model in models:
        return False
    models.add(model)
    log.warning(
        "burnmap: %s served %s at priority rates to a request that named no service tier "
        "(its project's default tier): it was charged at those rates, which may be more "
        "than its bound, and the project's later such calls to %s are bounded at them. Set "
        "service_tier on requests to such a project.",
        host,
        model,
        model,
    )
    return True


def _priority_models(request: Any) -> frozenset[str]:
    """The models a request's project was seen to serve at priority by default."""
    projects = _PRIORITY_PROJECTS.get(request.url.host)
    if not projects:
        return frozenset()
    return frozenset(projects.get(_project(request), ()))


class _Engine:
    """What both transports share: deciding, and wrapping the response."""

    _MAX_ENDPOINTS = 1024

    def __init__(self, book: PriceBook | None) -> None:
        self._book = book or default_book
        self._endpoints: dict[tuple[str, str, str], Endpoint | None] = {}

    def identify(self, request: Any) -> Endpoint | None:
        """The endpoint of a request to budget, ``None`` when it passes untouched."""
        url = request.url
        key = (request.method, url.host, url.path)
        endpoints = self._endpoints
        try:
            return endpoints[key]
        except KeyError:
            pass
        endpoint = identify(*key)
        if len(endpoints) >= self._MAX_ENDPOINTS:
            endpoints.clear()
        endpoints[key] = endpoint
        return endpoint

    def plan(
        self, request: Any, endpoint: Endpoint, body: bytes, run: Run | None
    ) -> CallPlan | None:
        """Bound a call's cost (raises a refusal the SDKs pass through unchanged); ``None``
        for a request that is not a model call after all."""
        try:
            return plan_call(
                endpoint,
                body,
                self._book,
                anthropic_beta=_anthropic_beta(request) if endpoint.shape == "anthropic" else "",
                fingerprint=observed() if run is None else run.needs_fingerprints(),
                priority_models=_priority_models(request)
                if _PRIORITY_PROJECTS and endpoint.shape == "openai"
                else None,
            )
        except RefusalError as exc:
            if isinstance(exc, UnknownModelError):
                exc = with_suggestions(exc)
            raise sdk_compatible(exc) from None

    @staticmethod
    def outgoing(request: Any, plan: CallPlan) -> Any:
        """The request to send: rebuilt when burnmap changed its body."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "burnmap: reserved $%s for %s %s (<=%d in, <=%d out)",
                plan.cost,
                plan.endpoint.kind,
                plan.model,
                plan.input_tokens,
                plan.output_tokens,
            )
        if plan.body is None:
            return request
        headers = request.headers.copy()
        headers["content-length"] = str(len(plan.body))
        return type(request)(
            request.method,
            request.url,
            headers=headers,
            content=plan.body,
            extensions=request.extensions,
        )

    def wrap(
        self, plan: CallPlan, reservation: Reservation, response: Any, request: Any, *, sync: bool
    ) -> Any:
        """Meter a successful response as it is read (error responses never get here)."""
        content_type = b""
        content_encoding = b""
        for _, name, value in _header_items(response.headers):
            if name == b"content-type":
                content_type = value.lower()
            elif name == b"content-encoding":
                content_encoding = value
        metering = _Metering(
            self._book, plan, reservation, content_encoding, content_type, request=request
        )
        _FINISHER.ensure_running()
        cls = _STREAMS[type(response), sync]
        if metering.rewrites:
            # The caller now gets decoded, filtered bytes.
            response.headers.pop("content-encoding", None)
            response.headers.pop("content-length", None)
        if not response.is_stream_consumed:
            # The usual case (a network response, not read yet): swap its stream.
            response.stream = cls(response.stream, metering)
            return response
        # An in-memory response (mock transports) was read when it was built: serve its
        # raw bytes again through the meter in a fresh response.
        return type(response)(
            status_code=response.status_code,
            headers=response.headers,
            stream=cls(response.stream, metering),
            extensions=response.extensions,
        )


# The request went out and no answer came back: the provider may have run (and billed)
# the call, so it is charged at its bound. Failures before sending cost nothing.
_SENT_FAILURES = (httpx.ReadTimeout, httpx2.ReadTimeout, httpx.ReadError, httpx2.ReadError)
# The network transports whose connections report, through the "trace" extension,
# whether a request's headers started going out.
_TRACED = (
    httpx.HTTPTransport,
    httpx.AsyncHTTPTransport,
    httpx2.HTTPTransport,
    httpx2.AsyncHTTPTransport,
)


class _Sending:
    """A request's ``trace`` extension that notes when it starts going out (and passes
    every event on to the caller's own ``trace``, if any)."""

    __slots__ = ("chained", "started")

    def __init__(self, chained: Any) -> None:
        self.chained = chained
        self.started = False

    def note(self, name: str, info: dict[str, Any]) -> None:
        if self.started or not name.endswith("send_request_headers.started"):
            return
        sent = info.get("request")
        # (An HTTPS proxy's CONNECT goes out first, with the same extensions.)
        if getattr(sent, "method", None) not in (b"CONNECT", "CONNECT"):
            self.started = True


class _SyncSending(_Sending):
    __slots__ = ()

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.note(name, info)
        if self.chained is not None:
            self.chained(name, info)


class _AsyncSending(_Sending):
    __slots__ = ()

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.note(name, info)
        if self.chained is not None:
            await self.chained(name, info)


def _watch_sending(request: Any, inner: Any, kind: type[_Sending]) -> _Sending | None:
    """Have ``request`` report when it starts going out, where ``inner`` can tell."""
    if not isinstance(inner, _TRACED):
        return None
    chained = request.extensions.get("trace")
    if isinstance(chained, _Sending):  # a retry of a request already watched
        chained = chained.chained
    sending = kind(chained)
    request.extensions = {**request.extensions, "trace": sending}
    return sending


def _maybe_billed(exc: BaseException, sending: _Sending | None) -> bool:
    if isinstance(exc, _SENT_FAILURES):
        return True
    # Interrupted (a task cancelled, a deadline, a trio or anyio cancel scope, Ctrl-C: any
    # BaseException that is not an Exception): billed if it went out, since an undercount
    # could let spend pass a budget; an inner transport that cannot tell (a mock, a custom
    # one) may have sent it.
    return not isinstance(exc, Exception) and (sending is None or sending.started)


def _settlement(plan: CallPlan, result: Charge) -> Settlement:
    return Settlement(
        result.model,
        plan.sheet.provider or plan.endpoint.shape,
        plan.endpoint.template or plan.endpoint.kind,  # an unmetered one: its template
        result.usage,
        result.cost,
        result.estimated,
        plan.stream,
        plan.fingerprint,
    )


def _bound_settlement(plan: CallPlan) -> Settlement:
    """A call that may have run but gave no answer: charged at its bound, as unreadable."""
    return _settlement(plan, charge(plan, None, default_book))


def _standing_active() -> bool:
    """Whether calls outside runs reserve on the ledger; a ledger the environment names
    but that cannot be opened refuses the call (a refusal the SDKs pass through), and
    observers hear of it, as of one that fails later."""
    try:
        return standing_active()
    except RefusalError as exc:
        notify_refusal(exc)
        raise


# What an inner transport is, by the base classes of either library it derives from.
_SYNC_BASES = (httpx2.BaseTransport, httpx.BaseTransport)
_ASYNC_BASES = (httpx2.AsyncBaseTransport, httpx.AsyncBaseTransport)
_HTTPX_BASES = (httpx.BaseTransport, httpx.AsyncBaseTransport)
_HTTPX2_BASES = (httpx2.BaseTransport, httpx2.AsyncBaseTransport)


def _transport_library(inner: Any) -> str | None:
    """The library a transport (or a subclass of one) belongs to; ``None`` for one of
    both (burnmap's own) or neither (duck-typed)."""
    first, second = isinstance(inner, _HTTPX_BASES), isinstance(inner, _HTTPX2_BASES)
    return None if first == second else ("httpx" if first else "httpx2")


def _same_library(inner: Any, request: Any) -> None:
    """An httpx transport under an httpx2 client (or the reverse) fails deep inside the
    client: say so plainly on the first request."""
    theirs = _transport_library(inner)
    ours = "httpx2" if isinstance(request, httpx2.Request) else "httpx"
    if theirs is not None and theirs != ours:
        raise TypeError(
            f"burnmap: the inner transport {type(inner).__name__} is an {theirs} transport "
            f"but the client is an {ours} client; the two must come from the same library: "
            f"wrap an {ours} transport instead, or use burnmap.client(...), which builds a "
            "matching pair (see docs/httpx.md)"
        )


class _Wrapping:
    """What both transports do with their inner transport: refuse one of the other kind
    when built, make the network one (or check the given one's library) on the first
    request."""

    _kind = "a sync"
    _wrong: tuple[type, ...] = _ASYNC_BASES
    _right: tuple[type, ...] = _SYNC_BASES
    _other = "burnmap.AsyncTransport(...) with an async client"

    def __init__(self, inner: Any = None, *, prices: PriceBook | None = None) -> None:
        if isinstance(inner, self._wrong) and not isinstance(inner, self._right):
            raise TypeError(
                f"burnmap.{type(self).__name__} wraps {self._kind} transport, and "
                f"{type(inner).__name__} is not one: use {self._other}"
            )
        self._inner = inner
        self._checked = False  # the inner transport is made or checked on the first request
        self._engine = _Engine(prices)

    def _network(self, library: types.ModuleType) -> Any:
        return library.HTTPTransport()

    def _inner_for(self, request: Any) -> Any:
        if self._inner is None:
            self._inner = self._network(_library(request))
        else:
            _same_library(self._inner, request)
        self._checked = True
        return self._inner


class Transport(_Wrapping, httpx2.BaseTransport, httpx.BaseTransport):
    """A budget-enforcing transport around ``inner`` (an httpx or httpx2 transport).

    Without ``inner``, a real network transport of the library that sends the first
    request is created (``httpx2.HTTPTransport()`` or ``httpx.HTTPTransport()``).
    """

    def handle_request(self, request: Any) -> Any:
        inner = self._inner if self._checked else self._inner_for(request)
        if _FINISHER.pending():  # abandoned responses: settled before the next call
            _FINISHER.drain()
        run = current_run()
        if run is None and not _standing_active():
            return inner.handle_request(request)
        endpoint = self._engine.identify(request)
        if endpoint is None:
            return inner.handle_request(request)
        try:
            plan = self._engine.plan(request, endpoint, request.read(), run)
            if plan is None:
                return inner.handle_request(request)
            if run is None:
                reservation = reserve_outside_runs(plan.cost, model=plan.model)
            else:
                reservation = run.reserve(plan.cost, model=plan.model, fingerprint=plan.fingerprint)
        except RefusalError as exc:
            notify_refusal(exc)
            raise
        outgoing = self._engine.outgoing(request, plan)
        sending = _watch_sending(outgoing, inner, _SyncSending)
        try:
            response = inner.handle_request(outgoing)
        except BaseException as exc:
            if _maybe_billed(exc, sending):
                reservation.settle(_bound_settlement(plan))
            else:
                reservation.release()
            raise
        if not 200 <= response.status_code < 300:
            # Errors and redirects are not billed: drop the hold now, pass the body untouched.
            reservation.release(failed=response.status_code >= 400)
            return response
        return self._engine.wrap(plan, reservation, response, request, sync=True)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class AsyncTransport(_Wrapping, httpx2.AsyncBaseTransport, httpx.AsyncBaseTransport):
    """The async twin of :class:`Transport`."""

    _kind = "an async"
    _wrong = _SYNC_BASES
    _right = _ASYNC_BASES
    _other = "burnmap.Transport(...) with a sync client"

    def _network(self, library: types.ModuleType) -> Any:
        return library.AsyncHTTPTransport()

    async def handle_async_request(self, request: Any) -> Any:
        inner = self._inner if self._checked else self._inner_for(request)
        if _FINISHER.pending():
            _FINISHER.drain()
        run = current_run()
        if run is None and not _standing_active():
            return await inner.handle_async_request(request)
        endpoint = self._engine.identify(request)
        if endpoint is None:
            return await inner.handle_async_request(request)
        try:
            plan = self._engine.plan(request, endpoint, await request.aread(), run)
            if plan is None:
                return await inner.handle_async_request(request)
            if run is None:
                reservation = await areserve_outside_runs(plan.cost, model=plan.model)
            else:
                reservation = await run.areserve(
                    plan.cost, model=plan.model, fingerprint=plan.fingerprint
                )
        except RefusalError as exc:
            notify_refusal(exc)
            raise
        outgoing = self._engine.outgoing(request, plan)
        sending = _watch_sending(outgoing, inner, _AsyncSending)
        try:
            response = await inner.handle_async_request(outgoing)
        except BaseException as exc:
            if _maybe_billed(exc, sending):
                await reservation.asettle(_bound_settlement(plan))
            else:
                await reservation.arelease()
            raise
        if not 200 <= response.status_code < 300:
            await reservation.arelease(failed=response.status_code >= 400)
            return response
        return self._engine.wrap(plan, reservation, response, request, sync=False)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


# Transport options go to the inner transport: given `transport=`, httpx ignores them.
_TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "http1", "http2", "limits", "proxy")

# The SDKs' own defaults, so a burnmap client behaves like the one it replaces.
_DEFAULT_TIMEOUT = (600.0, 5.0)
_DEFAULT_MAX_CONNECTIONS = 1000
_DEFAULT_MAX_KEEPALIVE = 100


def _client_parts(lib: types.ModuleType, kwargs: dict[str, Any]) -> dict[str, Any]:
    transport_kwargs = {k: kwargs.pop(k) for k in _TRANSPORT_OPTIONS if k in kwargs}
    transport_kwargs.setdefault(
        "limits",
        lib.Limits(
            max_connections=_DEFAULT_MAX_CONNECTIONS,
            max_keepalive_connections=_DEFAULT_MAX_KEEPALIVE,
        ),
    )
    if "mounts" in kwargs or "transport" in kwargs:
        raise TypeError(
            "burnmap.client() builds its own transport; to wrap yours, use "
            "httpx2.Client(transport=burnmap.Transport(your_transport))"
        )
    kwargs.setdefault("timeout", lib.Timeout(_DEFAULT_TIMEOUT[0], connect=_DEFAULT_TIMEOUT[1]))
    kwargs.setdefault("follow_redirects", True)
    return transport_kwargs


def _env_proxies(lib: types.ModuleType, kwargs: dict[str, Any], transport: dict[str, Any]) -> Any:
    """httpx honours HTTPS_PROXY/NO_PROXY only when it builds the transports itself: give
    it budgeted ones for each proxy route, as it would have mounted."""
    if "proxy" in transport or not transport.get("trust_env", kwargs.get("trust_env", True)):
        return {}
    try:
        routes: dict[str, str | None] = lib._utils.get_environment_proxies()
    except AttributeError:  # pragma: no cover - a future httpx without the helper
        return {}
    return routes


@overload
def client(stack: Literal["httpx2"] = "httpx2", **kwargs: Any) -> httpx2.Client: ...
@overload
def client(stack: Literal["httpx"], **kwargs: Any) -> httpx.Client: ...
def client(stack: str = "httpx2", **kwargs: Any) -> httpx2.Client | httpx.Client:
    """An HTTP client whose every call is budgeted: pass it as an SDK's ``http_client``.

    ``stack="httpx2"`` (the default) suits anthropic >= 1.0 and openai >= 3.0;
    ``stack="httpx"`` returns an ``httpx.Client`` for older SDKs and httpx-based
    frameworks. Other keyword arguments are httpx's (``timeout``, ``headers``,
    ``verify``, ``proxy``, ``limits``…), with the SDKs' defaults where unset.
    Proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) apply as in httpx.
    """
    lib = _stack(stack)
    return _build(lib, lib.Client, lib.HTTPTransport, Transport, kwargs)  # type: ignore[no-any-return]


@overload
def async_client(stack: Literal["httpx2"] = "httpx2", **kwargs: Any) -> httpx2.AsyncClient: ...
@overload
def async_client(stack: Literal["httpx"], **kwargs: Any) -> httpx.AsyncClient: ...
def async_client(stack: str = "httpx2", **kwargs: Any) -> httpx2.AsyncClient | httpx.AsyncClient:
    """The async twin of :func:`client`, for ``AsyncAnthropic`` / ``AsyncOpenAI``."""
    lib = _stack(stack)
    return _build(lib, lib.AsyncClient, lib.AsyncHTTPTransport, AsyncTransport, kwargs)  # type: ignore[no-any-return]


def _build(
    lib: types.ModuleType, client_cls: Any, network: Any, budgeted: Any, kwargs: dict[str, Any]
) -> Any:
    """A client whose transport, and every transport it mounts for an environment proxy,
    is budgeted."""
    prices = kwargs.pop("prices", None)
    options = _client_parts(lib, kwargs)
    mounts = {
        route: budgeted(network(**options, **({"proxy": url} if url else {})), prices=prices)
        for route, url in _env_proxies(lib, kwargs, options).items()
    }
    inner = budgeted(network(**options), prices=prices)
    return client_cls(transport=inner, mounts=mounts, **kwargs)


def _stack(stack: str) -> types.ModuleType:
    if stack == "httpx2":
        return httpx2
    if stack == "httpx":
        return httpx
    raise ValueError(
        f"stack={stack!r}: use 'httpx2' (anthropic>=1.0, openai>=3.0) or 'httpx' "
        "(older SDKs and httpx-based frameworks)"
    )
