"""Runaway-loop detection, decided from the calls a run has made (pure; times passed in).

Three runaway shapes, each a trigger reported as ``LoopDetectedError.trigger``:

- ``call_rate``: hammering. More than ``call_rate_limit`` calls in a minute, or (for limits
  of 20 and more) a tenth of that in any 3 seconds, one after another: a burst no agent
  that reads its replies sustains (calls started while others are in flight, a batch
  fanning out with ``asyncio.gather``, do not count toward the burst).
- ``context_growth``: input growing geometrically. Each of the last ``GROWTH_STEPS``
  settled calls read at least ``context_growth_limit`` times the input of the one before,
  and the last read at least ``GROWTH_FLOOR`` tokens (early turns of any agent grow fast
  from tiny contexts; a coding agent's context grows by its tool results, so its growth
  ratio falls as the context grows).
- ``repeat``: stuck. The same request tail (model, the last assistant turn and the last
  user turn: the same tool call answered by the same result) sent ``repeat_limit`` times.
  A stuck agent's history grows every turn, so whole requests never repeat; their tail
  does. Volatile ids (tool-use ids, call ids) and cache markers are ignored.

And an optional ``spend_rate``: more than ``spend_rate_limit`` dollars in any minute.
The defaults never fire on the healthy traces in ``tests/fixtures/traces`` (see
``docs/loops.md`` for the table).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any

__all__ = [
    "DEFAULT_CALL_RATE_LIMIT",
    "DEFAULT_CONTEXT_GROWTH_LIMIT",
    "DEFAULT_REPEAT_LIMIT",
    "GROWTH_FLOOR",
    "GROWTH_STEPS",
    "LoopGuard",
    "LoopVerdict",
    "request_fingerprint",
]

DEFAULT_CALL_RATE_LIMIT = 600
"""Calls per minute."""
DEFAULT_CONTEXT_GROWTH_LIMIT = 1.5
"""Input growth factor per call, sustained over ``GROWTH_STEPS`` calls."""
DEFAULT_REPEAT_LIMIT = 5
"""Identical request tails allowed in a run; the next one is refused."""
# Measured on tests/fixtures/traces (docs/loops.md): with 3 steps past 8k tokens, 10% of
# generated batch jobs of independent documents tripped the trigger; 4 steps past 32k
# tripped none of 1,000, and still stops a context doubling every turn after 5 calls.
GROWTH_STEPS = 4
GROWTH_FLOOR = 32_000
RATE_WINDOW = 60.0
BURST_WINDOW = 3.0

_VOLATILE = frozenset({"id", "tool_use_id", "tool_call_id", "call_id", "cache_control"})


@dataclass(frozen=True, slots=True)
class LoopVerdict:
    trigger: str
    message: str


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


_TOOL_TURN = re.compile(rb'"tool_result"|"role"\s*:\s*"tool"|"function_call_output"')


def request_fingerprint(obj: dict[str, Any], body: bytes | None = None) -> str | None:
    """A digest of a request's model and last two turns, volatile ids left out.

    Given the raw ``body``, a request that is not answering a tool call is digested whole
    (cheap, and what a retry loop re-sends byte for byte); tool loops are digested by their
    last two turns, since their history grows every turn.

    >>> a = {"model": "m", "messages": [{"role": "user", "content": "go"},
    ...      {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
    ...       "name": "bash", "input": {"command": "ls"}}]},
    ...      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
    ...       "content": "a.py"}]}]}
    >>> b = json.loads(json.dumps(a).replace("toolu_1", "toolu_2"))
    >>> b["messages"].insert(0, {"role": "user", "content": "earlier turns differ"})
    >>> request_fingerprint(a) == request_fingerprint(b)
    True
    """
    if body is not None and not _TOOL_TURN.search(body):
        return hashlib.blake2b(body, digest_size=12).hexdigest()
    turns = obj.get("messages")
    if turns is None:
        turns = obj.get("input")
    if isinstance(turns, str):
        tail: Any = turns
    elif isinstance(turns, list) and turns:
        tail = _strip(turns[-2:])
    else:
        return None
    text = json.dumps([obj.get("model"), tail], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class LoopGuard:
    """The three triggers (and spend rate) for one run. ``None`` disables a trigger.

    >>> g = LoopGuard(call_rate_limit=2, context_growth_limit=None, repeat_limit=None)
    >>> g.check(0.0) is None
    True
    >>> g.started(0.0); g.started(30.0)
    >>> g.check(45.0).trigger
    'call_rate'
    """

    call_rate_limit: int | None = DEFAULT_CALL_RATE_LIMIT
    context_growth_limit: float | None = DEFAULT_CONTEXT_GROWTH_LIMIT
    repeat_limit: int | None = DEFAULT_REPEAT_LIMIT
    spend_rate_limit: Decimal | None = None
    _times: deque[float] = field(default_factory=deque)
    _burst: deque[float] = field(default_factory=deque)
    _inputs: deque[int] = field(default_factory=deque)
    _repeats: Counter[str] = field(default_factory=Counter)
    _spend: deque[tuple[float, Decimal]] = field(default_factory=deque)

    @property
    def active(self) -> bool:
        return (
            self.call_rate_limit is not None
            or self.context_growth_limit is not None
            or self.repeat_limit is not None
            or self.spend_rate_limit is not None
        )

    def check(self, now: float, fingerprint: str | None = None) -> LoopVerdict | None:
        """Whether the next call (at ``now``, with ``fingerprint``) must be refused."""
        limit = self.call_rate_limit
        if limit is not None:
            times = self._times
            while times and now - times[0] >= RATE_WINDOW:
                times.popleft()
            if len(times) >= limit:
                return LoopVerdict(
                    "call_rate",
                    f"{len(times)} calls in the last minute reached call_rate_limit={limit}",
                )
            burst = limit // 10
            recent = self._burst
            while recent and now - recent[0] >= BURST_WINDOW:
                recent.popleft()
            if burst >= 2 and len(recent) >= burst:
                return LoopVerdict(
                    "call_rate",
                    f"{len(recent)} calls in {BURST_WINDOW:g} s: a burst over a tenth of "
                    f"call_rate_limit={limit} per minute",
                )
        growth = self.context_growth_limit
        inputs = self._inputs
        if growth is not None and len(inputs) > GROWTH_STEPS and inputs[-1] >= GROWTH_FLOOR:
            sizes = list(inputs)[-(GROWTH_STEPS + 1) :]
            if all(a > 0 and b >= a * growth for a, b in pairwise(sizes)):
                return LoopVerdict(
                    "context_growth",
                    f"input grew {sizes[-1] / sizes[0]:.1f}x over the last {GROWTH_STEPS} "
                    f"calls ({' -> '.join(str(s) for s in sizes)} tokens), at least "
                    f"{growth:g}x each (context_growth_limit)",
                )
        if self.repeat_limit is not None and fingerprint is not None:
            seen = self._repeats[fingerprint]
            if seen >= self.repeat_limit:
                return LoopVerdict(
                    "repeat",
                    f"the same request (same tool call and result) was sent {seen} times "
                    f"(repeat_limit={self.repeat_limit}): the agent looks stuck",
                )
        if self.spend_rate_limit is not None:
            spend = self._spend
            while spend and now - spend[0][0] >= RATE_WINDOW:
                spend.popleft()
            total = sum((cost for _, cost in spend), Decimal(0))
            if total >= self.spend_rate_limit:
                return LoopVerdict(
                    "spend_rate",
                    f"${total:.4f} spent in the last minute reached "
                    f"spend_rate_limit=${self.spend_rate_limit}",
                )
        return None

    def started(
        self, now: float, fingerprint: str | None = None, *, concurrent: bool = False
    ) -> None:
        """A call was let through at ``now``. ``concurrent``: other calls of the run were
        in flight (a batch fanning out, which the burst rule does not count: a runaway
        loop hammers one call after another)."""
        if self.call_rate_limit is not None:
            self._times.append(now)
            if not concurrent:
                self._burst.append(now)

    def repeated(self, fingerprint: str) -> None:
        """An answered request with this tail (counted toward ``repeat_limit``)."""
        if self.repeat_limit is not None:
            self._repeats[fingerprint] += 1

    def settled(
        self, now: float, input_tokens: int, cost: Decimal, fingerprint: str | None = None
    ) -> None:
        """A call finished, having read ``input_tokens`` (all input, cached included).
        Only answered calls count as repeats: an SDK retrying a failed attempt is not stuck."""
        if fingerprint is not None:
            self.repeated(fingerprint)
        if self.context_growth_limit is not None:
            self._inputs.append(input_tokens)
            if len(self._inputs) > GROWTH_STEPS + 1:
                self._inputs.popleft()
        if self.spend_rate_limit is not None and cost:
            self._spend.append((now, cost))
