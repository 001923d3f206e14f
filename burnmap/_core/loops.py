"""Runaway-loop triggers, decided from the calls a run has made (pure; times passed in)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = [
    "LoopGuard",
    "LoopVerdict",
]


@dataclass(frozen=True, slots=True)
class LoopVerdict:
    trigger: str
    message: str


@dataclass(slots=True)
class LoopGuard:
    """``call_rate_limit``: most calls allowed in any ``window`` seconds.
    ``context_growth_limit``: the factor by which input may grow over ``growth_calls``
    consecutive calls, each growing, before the run is taken as a runaway.

    >>> g = LoopGuard(call_rate_limit=2, window=60.0)
    >>> g.check(0.0) is None; g.record(0.0, 10)
    True
    >>> g.check(1.0) is None; g.record(1.0, 10)
    True
    >>> g.check(2.0).trigger
    'call_rate'
    """

    call_rate_limit: int | None = None
    context_growth_limit: float | None = None
    window: float = 60.0
    growth_calls: int = 4
    _times: deque[float] = field(default_factory=deque)
    _inputs: deque[int] = field(default_factory=deque)

    @property
    def active(self) -> bool:
        return self.call_rate_limit is not None or self.context_growth_limit is not None

    def check(self, now: float) -> LoopVerdict | None:
        if self.call_rate_limit is not None:
            while self._times and now - self._times[0] >= self.window:
                self._times.popleft()
            if len(self._times) >= self.call_rate_limit:
                return LoopVerdict(
                    "call_rate",
                    f"{len(self._times)} calls in the last {self.window:g} s reached "
                    f"call_rate_limit={self.call_rate_limit}",
                )
        if self.context_growth_limit is not None and len(self._inputs) >= self.growth_calls:
            sizes = list(self._inputs)
            growing = all(b > a for a, b in pairwise(sizes))
            if growing and sizes[0] > 0 and sizes[-1] / sizes[0] >= self.context_growth_limit:
                return LoopVerdict(
                    "context_growth",
                    f"input grew {sizes[-1] / sizes[0]:.1f}x over the last {len(sizes)} calls "
                    f"(context_growth_limit={self.context_growth_limit:g})",
                )
        return None

    def record(self, now: float, input_tokens: int) -> None:
        if self.call_rate_limit is not None:
            self._times.append(now)
        if self.context_growth_limit is not None:
            self._inputs.append(input_tokens)
            while len(self._inputs) > self.growth_calls:
                self._inputs.popleft()
