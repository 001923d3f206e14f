"""A loopback OTLP/HTTP JSON receiver for Claude Code's OpenTelemetry events.

Claude Code reports each API call as a ``claude_code.api_request`` log record (model,
tokens, ``cost_usd``) when telemetry is on. ``burnmap wrap`` points its logs exporter at an
:class:`OTLPReceiver` (see :func:`otel_env`) and hands every logs export to a callback.
Only the JSON encoding is accepted: decoding protobuf would need the OpenTelemetry proto
package, and Claude Code speaks ``http/json`` when asked to.

>>> with OTLPReceiver(on_logs=print) as receiver:  # doctest: +SKIP
...     env.update(otel_env(receiver.endpoint, os.environ))
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from burnmap._loopback import BodyError, LoopbackHandler, LoopbackServer

__all__ = [
    "OTLPReceiver",
    "otel_env",
]

log = logging.getLogger("burnmap.wrap.otlp")

_LOGS = "/v1/logs"
_IGNORED = ("/v1/metrics", "/v1/traces")
# An export batch is small; this only stops a runaway body from filling memory.
_MAX_BODY = 64 * 1024 * 1024
# google.rpc.Code values, which OTLP/HTTP error bodies (a Status message) carry.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_INTERNAL = 13


def otel_env(endpoint: str, existing: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that make Claude Code export its events to ``endpoint``.

    ``existing`` is the environment the program would otherwise get. If the user already
    set ``CLAUDE_CODE_ENABLE_TELEMETRY`` or any ``OTEL_*`` variable, their telemetry setup
    wins: this returns ``{}`` (nothing is overridden, and the caller must follow the
    program's spend from other sources). Settings made in Claude Code's ``settings.json``
    ``env`` block are not visible here and take precedence over these variables.

    >>> env = otel_env("http://127.0.0.1:4318", {})
    >>> env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    'http://127.0.0.1:4318/v1/logs'
    >>> otel_env("http://127.0.0.1:4318", {"OTEL_METRICS_EXPORTER": "otlp"})
    {}
    """
    if any(name.startswith("OTEL_") or name == "CLAUDE_CODE_ENABLE_TELEMETRY" for name in existing):
        return {}
    base = endpoint.rstrip("/")
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json",
        # The signal endpoint is used as given; the generic one gets /v1/logs appended.
        "OTEL_EXPORTER_OTLP_ENDPOINT": base,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": base + _LOGS,
        # Claude Code batches events for 5 s by default; the supervisor wants them soon.
        "OTEL_LOGS_EXPORT_INTERVAL": "250",
    }


class OTLPReceiver(LoopbackServer):
    """A loopback server for OTLP/HTTP JSON exports.

    ``on_logs(payload)`` gets each ``POST /v1/logs`` body as a dict (an
    ``ExportLogsServiceRequest``: ``{"resourceLogs": [...]}``). Calls are serialized, one at
    a time, on a server thread. Metrics and traces exports are accepted and dropped.
    """

    _logger = log
    _label = "OTLP receiver"
    _thread_name = "burnmap-otlp"

    def __init__(
        self, on_logs: Callable[[dict[str, Any]], None], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port, _Handler)
        self.on_logs = on_logs
        self._deliver = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``http://host:port``, the OTLP base endpoint (available once started)."""
        return self.url


class _Handler(LoopbackHandler[OTLPReceiver]):
    server_version = "burnmap-otlp/1"

    def do_POST(self) -> None:
        path = self.path.partition("?")[0].rstrip("/")
        try:
            body = self.read_body(_MAX_BODY)
        except BodyError as exc:
            self._send(exc.status, {"code": _INVALID_ARGUMENT, "message": str(exc)})
            self.close_connection = True
            return
        if path in _IGNORED:
            self._send(200, {})
            return
        if path != _LOGS:
            self._send(404, {"code": _NOT_FOUND, "message": f"burnmap: no OTLP signal at {path!r}"})
            return
        try:
            payload = self._decode(body)
        except BodyError as exc:
            self._send(exc.status, {"code": _INVALID_ARGUMENT, "message": str(exc)})
            return
        receiver = self.owner
        try:
            with receiver._deliver:
                receiver.on_logs(payload)
        except Exception as exc:
            log.exception("burnmap: handling an OTLP logs export failed")
            # 500 is not retried by OTLP exporters (only 429/502/503/504 are).
            self._send(500, {"code": _INTERNAL, "message": f"burnmap: {type(exc).__name__}"})
            return
        self._send(200, {"partialSuccess": {}})

    def do_GET(self) -> None:
        with contextlib.suppress(BodyError):
            self.read_body(_MAX_BODY)
        self._send(405, {"code": _INVALID_ARGUMENT, "message": "burnmap: OTLP/HTTP takes POST"})

    do_PUT = do_PATCH = do_DELETE = do_GET

    def _decode(self, body: bytes) -> dict[str, Any]:
        content_type = self.headers.get("content-type", "").lower()
        if "protobuf" in content_type:
            raise BodyError(
                415,
                "burnmap: this OTLP receiver accepts JSON only; set "
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/json (or OTEL_EXPORTER_OTLP_LOGS_PROTOCOL)",
            )
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
            try:
                body = inflate.decompress(body, _MAX_BODY)
            except zlib.error as exc:
                raise BodyError(400, f"burnmap: corrupt gzip body ({exc})") from None
            if inflate.unconsumed_tail:
                raise BodyError(413, f"burnmap: export larger than {_MAX_BODY} bytes")
        elif encoding not in ("", "identity"):
            raise BodyError(
                415, f"burnmap: unsupported content-encoding {encoding!r} (use gzip or none)"
            )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise BodyError(400, f"burnmap: the body is not JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise BodyError(400, "burnmap: an OTLP logs export is a JSON object")
        return payload

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
