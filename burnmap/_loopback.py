"""Scaffolding shared by burnmap's loopback HTTP servers (stand-in, proxy, OTLP receiver).

`LoopbackServer` serves a `ThreadingHTTPServer` on a daemon thread: start and stop, the
context manager, ``url``, and the open connections `stop` cuts (idle keep-alive ones too).
`LoopbackHandler` is the request handler base: HTTP/1.1, TCP_NODELAY, connection tracking
and debug-level logging. Standard library only: `burnmap.standin` must import without httpx.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

__all__ = [
    "BodyError",
    "LoopbackHandler",
    "LoopbackServer",
]


class BodyError(ValueError):
    """A request body that cannot be read: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class LoopbackServer:
    """A loopback HTTP server on a daemon thread; subclasses name it and give the handler.

    Use it as a context manager, or call `start` and `stop`. Subclasses set ``_logger``,
    ``_label`` (what log lines call it) and ``_thread_name``; ``_acquire`` and ``_release``
    open and close what the handlers need around the server's life.
    """

    _logger: ClassVar[logging.Logger]
    _label: ClassVar[str]
    _thread_name: ClassVar[str]
    _join_seconds: ClassVar[float] = 1.0

    def __init__(self, host: str, port: int, handler: type[LoopbackHandler[Any]]) -> None:
        self._host = host
        self._port = port
        self._handler = handler
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}

    @property
    def url(self) -> str:
        """``http://host:port`` with no trailing slash (available once started)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() or use `with`")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> Self:
        """Bind, serve on a daemon thread, and return self."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._stopping.clear()
        self._acquire()
        try:
            server = _Server((self._host, self._port), self._handler, self)
        except BaseException:
            self._release()
            raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self._thread_name}:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        self._logger.debug("%s listening on %s", self._label, self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections (idle keep-alive ones too) and wait briefly."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            # Wakes handlers idling on a keep-alive connection; streaming ones fail their
            # next write.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        deadline = time.monotonic() + self._join_seconds
        for each in (thread, *connections.values()):
            if each is not None:
                each.join(timeout=max(deadline - time.monotonic(), 0.0))
        self._release()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _acquire(self) -> None:
        """Called by `start` before binding."""

    def _release(self) -> None:
        """Called by `stop` once the handlers are done, and by `start` if binding failed."""

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)


OwnerT = TypeVar("OwnerT", bound=LoopbackServer)


class LoopbackHandler(BaseHTTPRequestHandler, Generic[OwnerT]):
    """A request handler for a `LoopbackServer`, which it reaches as ``owner``."""

    protocol_version = "HTTP/1.1"
    sys_version = ""

    @property
    def owner(self) -> OwnerT:
        return cast(OwnerT, cast(_Server, self.server).owner)

    def setup(self) -> None:
        super().setup()
        # Headers, body and each SSE event are separate writes; with Nagle's algorithm and
        # the client's delayed ACK every reply would stall ~40 ms on a keep-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, add=False)

    def read_body(self, max_bytes: int | None = None) -> bytes:
        """The request body, by content-length or chunked; raises :class:`BodyError`."""
        length = self.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():  # int() takes "-1", "+5", "1_0"
                raise BodyError(400, f"burnmap: invalid content-length {length[:40]!r}")
            size = int(length)
            if max_bytes is not None and size > max_bytes:
                raise BodyError(413, f"burnmap: body larger than {max_bytes} bytes")
            return self.rfile.read(size)
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return b""
        parts: list[bytes] = []
        total = 0
        while size := self._chunk_size():
            total += size
            if max_bytes is not None and total > max_bytes:
                raise BodyError(413, f"burnmap: body larger than {max_bytes} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def _chunk_size(self) -> int:
        line = self.rfile.readline()
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise BodyError(400, f"burnmap: invalid chunk size {line[:40]!r}") from None
        if size < 0:
            raise BodyError(400, f"burnmap: invalid chunk size {line[:40]!r}")
        return size

    def log_message(self, format: str, *args: Any) -> None:
        owner = self.owner
        owner._logger.debug("%s %s " + format, owner._label, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[LoopbackHandler[Any]],
        owner: LoopbackServer,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds in sandboxes; loopback needs no name.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-stream is routine; keep stderr quiet.
        owner = self.owner
        owner._logger.debug(
            "%s: connection error from %s", owner._label, client_address, exc_info=True
        )
