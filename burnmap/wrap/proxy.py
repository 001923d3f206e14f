"""A loopback metering forwarder for ``burnmap wrap --proxy``.

Agents that are not Python (Claude Code is a compiled binary) cannot take burnmap's
transport, but they all honour ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``. The supervisor
points those at a :class:`MeteringProxy`, which forwards every request to the real API
through one ``httpx2.Client`` built on :class:`burnmap.Transport`, inside the wrap's run:
each call is bounded, reserved, metered and settled exactly as in-process, and a call that
could overspend is refused *before* it is forwarded, with HTTP 402 and a provider-shaped
error body (no SDK retries a 402).

Bodies pass through unchanged and unbuffered: each chunk is written to the agent the moment
it arrives from upstream, so streamed events are never held back.

>>> with MeteringProxy(run) as proxy:  # doctest: +SKIP
...     env["ANTHROPIC_BASE_URL"] = proxy.anthropic_base_url
...     env["OPENAI_BASE_URL"] = proxy.openai_base_url
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx2

from burnmap._core.decode import BodyDecoder, DecodeError
from burnmap._loopback import BodyError, LoopbackHandler, LoopbackServer
from burnmap.errors import (
    BudgetExceededError,
    LedgerUnavailableError,
    LoopDetectedError,
    RefusalError,
    UnknownModelError,
    UnmeteredEndpointError,
)
from burnmap.runs import Run
from burnmap.transport import client as budgeted_client

__all__ = [
    "MeteringProxy",
]

log = logging.getLogger("burnmap.wrap.proxy")

_ANTHROPIC_PREFIX = "/anthropic"
_OPENAI_PREFIX = "/openai/v1"

# RFC 9110 7.6.1 hop-by-hop fields, plus what http.client / httpx set themselves.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Not forwarded upstream: httpx sets Host and Content-Length from the request it sends, and
# answers no 100-continue (the handler already sent ours).
_REQUEST_DROP = _HOP_BY_HOP | {"host", "content-length", "expect"}

# The SDKs' own timeouts, so the agent (not the proxy) decides when a call has taken too long.
_TIMEOUT = httpx2.Timeout(600.0, connect=5.0)


@functools.lru_cache(maxsize=64)
def _meterable(encoding: str) -> bool:
    """Whether burnmap can decode a content-coding (br and zstd need optional modules; a
    failed import is not retried on every request)."""
    try:
        BodyDecoder(encoding)
    except DecodeError:
        return False
    return True


def _accept_encoding(value: str) -> str | None:
    """The agent's ``accept-encoding`` narrowed to codings burnmap can meter.

    A body burnmap cannot decode is charged at its bound, so an agent asking for ``br``
    without the brotli module installed gets gzip instead (which it accepts too).

    >>> _accept_encoding("gzip, deflate, compress")
    'gzip, deflate'
    """
    kept = [
        part.strip()
        for part in value.split(",")
        if part.strip() and _meterable(part.split(";")[0].strip().lower())
    ]
    return ", ".join(kept) or None


# Error types per status: (Anthropic's ``error.type``, OpenAI's ``error.type``).
_ERROR_TYPES = {
    402: ("invalid_request_error", "insufficient_quota"),
    404: ("not_found_error", "invalid_request_error"),
}
_SERVER_ERROR_TYPES = ("api_error", "api_error")


def _refusal_code(exc: RefusalError) -> str:
    """The OpenAI-style ``error.code`` naming why burnmap refused the call."""
    for cls, code in (
        (BudgetExceededError, "burnmap_budget_exceeded"),
        (LoopDetectedError, "burnmap_loop_detected"),
        (UnknownModelError, "burnmap_unknown_model"),
        (UnmeteredEndpointError, "burnmap_unmetered_endpoint"),
        (LedgerUnavailableError, "burnmap_ledger_unavailable"),
    ):
        if isinstance(exc, cls):
            return code
    return "burnmap_refused"


def _error_body(shape: str, status: int, message: str, code: str) -> bytes:
    """An error body the agent's SDK parses like the provider's own."""
    anthropic_type, openai_type = _ERROR_TYPES.get(status, _SERVER_ERROR_TYPES)
    body: dict[str, Any]
    if shape == "anthropic":
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    else:
        body = {"error": {"message": message, "type": openai_type, "param": None, "code": code}}
    return json.dumps(body).encode()


class MeteringProxy(LoopbackServer):
    """A loopback HTTP forwarder that budgets every call against ``run``.

    ``anthropic_base_url`` and ``openai_base_url`` are what the agent gets as
    ``ANTHROPIC_BASE_URL`` and ``OPENAI_BASE_URL``; requests under them go to
    ``anthropic_upstream`` and ``openai_upstream`` (plus the rest of the path and the query).
    ``on_refusal`` is called (on a proxy thread, after the agent got its 402) with each
    :class:`burnmap.RefusalError`; ``refused`` counts them.
    """

    _logger = log
    _label = "burnmap proxy"
    _thread_name = "burnmap-proxy"

    def __init__(
        self,
        run: Run,
        *,
        anthropic_upstream: str = "https://api.anthropic.com",
        openai_upstream: str = "https://api.openai.com/v1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port, _Handler)
        self.run = run
        self._upstreams = {
            "anthropic": _upstream(anthropic_upstream, "anthropic_upstream"),
            "openai": _upstream(openai_upstream, "openai_upstream"),
        }
        self.on_refusal: Callable[[RefusalError], None] | None = None
        self._refused = 0
        self._client: httpx2.Client | None = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def anthropic_base_url(self) -> str:
        """The agent's ``ANTHROPIC_BASE_URL`` (the SDKs add ``/v1/messages``)."""
        return self.url + _ANTHROPIC_PREFIX

    @property
    def openai_base_url(self) -> str:
        """The agent's ``OPENAI_BASE_URL`` (ends in ``/v1``, as OpenAI's own does)."""
        return self.url + _OPENAI_PREFIX

    @property
    def refused(self) -> int:
        """How many requests were refused (answered 402, never forwarded)."""
        return self._refused

    # -- lifecycle ---------------------------------------------------------------------
    def _acquire(self) -> None:
        # burnmap.client(): burnmap.Transport over httpx2.HTTPTransport, with the SDKs'
        # pool limits and the HTTPS_PROXY/NO_PROXY routes httpx would have used. Redirects
        # go back to the agent, as they would without the proxy.
        self._client = budgeted_client("httpx2", timeout=_TIMEOUT, follow_redirects=False)

    def _release(self) -> None:
        # Handlers cut by stop() closed their upstream responses and settled what they
        # metered; now the upstream connections can go.
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- used by the handler -----------------------------------------------------------
    def _route(self, target: str) -> tuple[str, str] | None:
        """``(shape, upstream URL)`` for a request target, or ``None`` if it has no route."""
        path, sep, query = target.partition("?")
        for shape, prefix in (("anthropic", _ANTHROPIC_PREFIX), ("openai", _OPENAI_PREFIX)):
            if path == prefix or path.startswith(prefix + "/"):
                return shape, self._upstreams[shape] + path[len(prefix) :] + sep + query
        return None

    def _count_refusal(self) -> None:
        with self._lock:
            self._refused += 1

    def _call_on_refusal(self, exc: RefusalError) -> None:
        callback = self.on_refusal
        if callback is not None:
            try:
                callback(exc)
            except Exception:
                log.exception("burnmap proxy: on_refusal failed")


def _upstream(url: str, name: str) -> str:
    parsed = httpx2.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"MeteringProxy({name}={url!r}): use an http(s) URL with a host")
    return url.rstrip("/")


class _Handler(LoopbackHandler[MeteringProxy]):
    server_version = "burnmap-proxy/1"

    def do_GET(self) -> None:
        self._forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request ---------------------------------------------------------------------------

    def _request_headers(self) -> list[tuple[str, str]]:
        listed = {
            name.strip().lower()
            for value in self.headers.get_all("connection", [])
            for name in value.split(",")
        }
        headers: list[tuple[str, str]] = []
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in _REQUEST_DROP or lower in listed:
                continue
            if lower == "accept-encoding":
                narrowed = _accept_encoding(value)
                if narrowed is not None:
                    headers.append((name, narrowed))
                continue
            headers.append((name, value))
        return headers

    def _forward(self) -> None:
        proxy = self.owner
        try:
            body = self.read_body()
        except BodyError as exc:
            # What is left of the connection cannot be trusted: answer, then close it.
            self.close_connection = True
            message = f"{exc} (the request was not forwarded)"
            self._send_error(exc.status, self._shape(), message, "burnmap_bad_request")
            return
        route = proxy._route(self.path)
        if route is None:
            message = (
                f"burnmap proxy: no route for {self.path.partition('?')[0]!r}. Use "
                f"{proxy.anthropic_base_url} as ANTHROPIC_BASE_URL or {proxy.openai_base_url} "
                "as OPENAI_BASE_URL."
            )
            self._send_error(404, self._shape(), message, "burnmap_no_route")
            return
        shape, url = route
        client = proxy._client
        if client is None:  # stopped while this connection was open
            self.close_connection = True
            return
        request = httpx2.Request(self.command, url, headers=self._request_headers(), content=body)
        try:
            with proxy.run.attach():
                response = client.send(request, stream=True)
        except RefusalError as exc:
            message = str(exc)
            if not message.startswith("burnmap"):
                message = f"burnmap: {message}"
            log.debug("burnmap proxy: refused %s %s", self.command, url)
            proxy._count_refusal()
            self._send_error(402, shape, message, _refusal_code(exc))
            proxy._call_on_refusal(exc)
            return
        except httpx2.TimeoutException as exc:
            message = (
                f"burnmap proxy: the upstream API {url.partition('?')[0]} timed out "
                f"({type(exc).__name__}). Retry, or check the network."
            )
            self._send_error(504, shape, message, "burnmap_upstream_timeout")
            return
        except httpx2.TransportError as exc:
            message = (
                f"burnmap proxy: cannot reach the upstream API {url.partition('?')[0]} "
                f"({type(exc).__name__}: {exc}). Check the network, or the upstream URL "
                "burnmap wrap was given."
            )
            self._send_error(502, shape, message, "burnmap_upstream_unreachable")
            return
        except Exception as exc:
            log.warning("burnmap proxy: forwarding %s failed", url, exc_info=True)
            message = f"burnmap proxy: internal error ({type(exc).__name__}: {exc})."
            self._send_error(500, shape, message, "burnmap_internal_error")
            return
        try:
            self._relay(response)
        finally:
            response.close()

    # -- response ----------------------------------------------------------------------
    def _relay(self, response: httpx2.Response) -> None:
        status = response.status_code
        bodyless = self.command == "HEAD" or status in (204, 304) or status < 200
        listed = {
            name.strip()
            for value in response.headers.get_list("connection")
            for name in value.lower().split(",")
        }
        length: str | None = None
        self.send_response_only(status, response.reason_phrase or None)
        for raw_name, raw_value in response.headers.raw:
            name = raw_name.decode("latin-1")
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower in listed:
                continue
            if lower == "content-length":
                # burnmap.Transport drops it when it rewrites a body; otherwise the bytes
                # pass unchanged and the upstream length still holds.
                length = raw_value.decode("latin-1")
            self.send_header(name, raw_value.decode("latin-1"))
        chunked = not bodyless and length is None and self.request_version != "HTTP/1.0"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not bodyless and length is None:
            self.close_connection = True  # an HTTP/1.0 agent: the end of the body is EOF
        self.end_headers()
        if bodyless:
            return
        expected = int(length) if length is not None and length.isdigit() else None
        received = 0
        write = self.wfile.write
        try:
            chunks = response.iter_raw()
            for chunk in chunks:
                if not chunk:
                    continue
                received += len(chunk)
                data = chunk
                if expected is not None and received >= expected:
                    # The agent has its whole answer once this is written: end the upstream
                    # stream first (nothing more comes), so the call is settled by then.
                    data += b"".join(chunks)
                write(b"%X\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                # Written after the stream ended and the call was settled, for the same reason.
                write(b"0\r\n\r\n")
        except (httpx2.HTTPError, httpx2.StreamError) as exc:
            # Headers are out: cut the body short so the agent sees an incomplete stream.
            log.debug("burnmap proxy: upstream broke mid-body (%s)", exc)
            self.close_connection = True
        except OSError:
            log.debug("burnmap proxy: the agent left mid-body")
            self.close_connection = True

    def _shape(self) -> str:
        """The API a request not routed (yet) speaks, for the shape of its error body."""
        return "anthropic" if "anthropic-version" in self.headers else "openai"

    def _send_error(self, status: int, shape: str, message: str, code: str) -> None:
        data = _error_body(shape, status, message, code)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status < 500:
            # Both SDKs honour x-should-retry (and retry neither 402 nor 404 anyway).
            self.send_header("x-should-retry", "false")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
