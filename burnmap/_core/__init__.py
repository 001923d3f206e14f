"""The pure core of burnmap: no I/O and no httpx import.

Bytes, dicts and ``Decimal`` go in, values come out. The transports in
``burnmap.transport`` only move bytes and drive these functions.
"""

__all__: list[str] = []
