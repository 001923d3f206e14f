"""``burnmap wrap``: supervise an agent program and keep its spend within a budget.

The pieces live in submodules: :mod:`burnmap.wrap.supervisor` (the child process and its
budget), :mod:`burnmap.wrap.proxy` (an opt-in loopback metering forwarder for agents in any
language) and :mod:`burnmap.wrap.otlp` (a loopback receiver for Claude Code's OpenTelemetry
events).
"""

from __future__ import annotations

__all__: list[str] = []
